package inject

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata")

var testConfig = Config{Image: "example/weft-proxy:test", TrustDomain: "cluster.local"}

// TestGolden runs InjectYAML over every testdata/*.yaml input and compares
// with the .golden file next to it (go test -run TestGolden -update
// rewrites them).
func TestGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no inputs: %v", err)
	}
	for _, in := range inputs {
		t.Run(filepath.Base(in), func(t *testing.T) {
			f, err := os.Open(in)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			var out, skips bytes.Buffer
			if err := InjectYAML(f, &out, testConfig, func(what, why string) {
				skips.WriteString("# skipped " + what + ": " + why + "\n")
			}); err != nil {
				t.Fatal(err)
			}
			got := append(skips.Bytes(), out.Bytes()...)
			golden := strings.TrimSuffix(in, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("output differs from %s (run with -update after checking):\n%s", golden, got)
			}
			// Idempotent: injecting the output again changes nothing.
			var again bytes.Buffer
			if err := InjectYAML(bytes.NewReader(out.Bytes()), &again, testConfig, nil); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(again.Bytes(), out.Bytes()) {
				t.Errorf("second injection changed the output:\n%s", again.Bytes())
			}
		})
	}
}

func TestDecide(t *testing.T) {
	en := map[string]string{LabelIstioInjection: "enabled"}
	for _, c := range []struct {
		name                string
		ns                  string
		nsLabels, labels, a map[string]string
		rev                 string
		inject              bool
	}{
		{"namespace enabled", "shop", en, nil, nil, "", true},
		{"weft label", "shop", map[string]string{LabelWeftInjection: "enabled"}, nil, nil, "", true},
		{"no labels", "shop", nil, nil, nil, "", false},
		{"pod opts out by annotation", "shop", en, nil, map[string]string{KeyInject: "false"}, "", false},
		{"pod opts out by label", "shop", en, map[string]string{KeyInject: "false"}, nil, "", false},
		{"label wins over annotation", "shop", en, map[string]string{KeyInject: "true"}, map[string]string{KeyInject: "false"}, "", true},
		{"pod opts in", "shop", nil, map[string]string{KeyInject: "true"}, nil, "", true},
		{"namespace disabled beats pod opt-in", "shop", map[string]string{LabelIstioInjection: "disabled"}, map[string]string{KeyInject: "true"}, nil, "", false},
		{"kube-system never", "kube-system", en, nil, nil, "", false},
		{"namespace revision matches", "shop", map[string]string{LabelRevision: "canary"}, nil, nil, "canary", true},
		{"namespace revision other", "shop", map[string]string{LabelRevision: "canary"}, nil, nil, "", false},
		{"pod revision beats namespace's", "shop", map[string]string{LabelRevision: "canary"}, map[string]string{LabelRevision: "stable"}, nil, "stable", true},
		{"istio-injection beats namespace revision", "shop", map[string]string{LabelIstioInjection: "enabled", LabelRevision: "canary"}, nil, nil, "", true},
		{"enabled namespace, revisioned injector", "shop", en, nil, nil, "canary", false},
		{"enabled namespace beats the pod's revision", "shop", en, map[string]string{LabelRevision: "canary"}, nil, "", true},
		{"enabled namespace beats the pod's revision (canary injector)", "shop", en, map[string]string{LabelRevision: "canary"}, nil, "canary", false},
		{"default is the empty revision", "shop", map[string]string{LabelRevision: "default"}, nil, nil, "", true},
	} {
		why := Decide(c.ns, c.nsLabels, c.labels, c.a, c.rev)
		if (why == "") != c.inject {
			t.Errorf("%s: Decide = %q, want inject=%v", c.name, why, c.inject)
		}
	}
}

func testPod() *corev1.Pod {
	ctrl := true
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName:    "reviews-v2-7d9f8-",
			Labels:          map[string]string{"app": "reviews", "pod-template-hash": "7d9f8"},
			OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "reviews-v2-7d9f8", Controller: &ctrl}},
		},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "x"}}},
	}
}

func TestInjectPod(t *testing.T) {
	pod := testPod()
	before := pod.DeepCopy()
	en := map[string]string{LabelIstioInjection: "enabled"}
	got, why, err := InjectPod(pod, "shop", en, testConfig)
	if err != nil || why != "" {
		t.Fatalf("InjectPod: %q, %v", why, err)
	}
	if !reflect.DeepEqual(pod, before) {
		t.Error("InjectPod changed its input")
	}
	if n := len(got.Spec.InitContainers); n != 2 || got.Spec.InitContainers[0].Name != CaptureContainer || got.Spec.InitContainers[1].Name != ProxyContainer {
		t.Fatalf("init containers: %+v", got.Spec.InitContainers)
	}
	px := got.Spec.InitContainers[1]
	if px.RestartPolicy == nil || *px.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Error("the proxy is not a native sidecar (restartPolicy: Always)")
	}
	if i := indexOf(px.Args, "--workload"); i < 0 || px.Args[i+1] != "reviews-v2" {
		t.Errorf("--workload is not the Deployment's name: %q", px.Args)
	}
	var st Status
	if err := json.Unmarshal([]byte(got.Annotations[AnnotationStatus]), &st); err != nil || st.Revision != "default" {
		t.Errorf("status annotation %q: %v", got.Annotations[AnnotationStatus], err)
	}
	if got.Labels[LabelTLSMode] != "istio" || got.Labels[LabelCanonicalName] != "reviews" || got.Labels[LabelCanonicalRevision] != "latest" {
		t.Errorf("labels: %v", got.Labels)
	}
	again, why, err := InjectPod(got, "shop", en, testConfig)
	if err != nil || why == "" || again != got {
		t.Errorf("second injection: %q, %v; want the pod unchanged with a reason", why, err)
	}
	short := testPod()
	two := int64(2)
	short.Spec.TerminationGracePeriodSeconds = &two
	if got, _, _ := InjectPod(short, "shop", en, testConfig); indexOf(got.Spec.InitContainers[1].Args, "--drain-timeout") < 0 ||
		got.Spec.InitContainers[1].Args[indexOf(got.Spec.InitContainers[1].Args, "--drain-timeout")+1] != "2s" {
		t.Errorf("terminationGracePeriodSeconds 2: proxy args %q, want --drain-timeout 2s", got.Spec.InitContainers[1].Args)
	}
	host := testPod()
	host.Spec.HostNetwork = true
	if _, why, _ := InjectPod(host, "shop", en, testConfig); !strings.Contains(why, "hostNetwork") {
		t.Errorf("hostNetwork pod: reason %q", why)
	}
}

func indexOf(s []string, v string) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

func TestInjectBadAnnotations(t *testing.T) {
	en := map[string]string{LabelIstioInjection: "enabled"}
	for key, val := range map[string]string{
		AnnotationProxyCPU:      "lots",
		AnnotationExcludeOutIPs: "10.0.0.0/33",
		AnnotationExcludeInPort: "http",
		AnnotationProxyConfig:   "terminationDrainDuration: soon",
	} {
		pod := testPod()
		pod.Annotations = map[string]string{key: val}
		_, _, err := InjectPod(pod, "shop", en, testConfig)
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s: %q: error %v, want one naming the annotation", key, val, err)
		}
	}
	pod := testPod()
	pod.Spec.Containers[0].ReadinessProbe = &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstrName("web")}}}
	if _, _, err := InjectPod(pod, "shop", en, testConfig); err == nil || !strings.Contains(err.Error(), `"web"`) {
		t.Errorf("probe on an unknown named port: %v", err)
	}
}

func intstrName(s string) intstr.IntOrString { return intstr.FromString(s) }

// TestInjectYAMLRevision: weft inject leaves a pod asking another revision
// alone, and injects it with --revision of that name.
func TestInjectYAMLRevision(t *testing.T) {
	in := "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  labels: {istio.io/rev: canary}\nspec:\n  containers:\n  - {name: a, image: a}\n"
	var out bytes.Buffer
	var skipped string
	if err := InjectYAML(strings.NewReader(in), &out, testConfig, func(what, why string) { skipped = what + ": " + why }); err != nil {
		t.Fatal(err)
	}
	if out.String() != in || !strings.Contains(skipped, `revision "canary"`) {
		t.Errorf("default injector: output %q, skipped %q", out.String(), skipped)
	}
	out.Reset()
	cfg := testConfig
	cfg.Revision = "canary"
	if err := InjectYAML(strings.NewReader(in), &out, cfg, nil); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "name: weft-proxy") || !strings.Contains(out.String(), `"revision":"canary"`) {
		t.Errorf("canary injector: %s", out.String())
	}
}

// TestInjectConcurrency: proxy.istio.io/config concurrency becomes
// weft-proxy's --concurrency, as Istio passes it to Envoy; without it
// the proxy keeps its own default.
func TestInjectConcurrency(t *testing.T) {
	en := map[string]string{LabelIstioInjection: "enabled"}
	for _, tc := range []struct {
		config string // proxy.istio.io/config; "" none
		want   string // --concurrency's value; "" not passed
	}{
		{"", ""},
		{"terminationDrainDuration: 20s", ""},
		{"concurrency: 1", "1"},
		{"concurrency: 0\nterminationDrainDuration: 20s", "0"},
	} {
		pod := testPod()
		if tc.config != "" {
			pod.Annotations = map[string]string{AnnotationProxyConfig: tc.config}
		}
		got, _, err := InjectPod(pod, "shop", en, testConfig)
		if err != nil {
			t.Fatalf("%q: %v", tc.config, err)
		}
		args := got.Spec.InitContainers[1].Args
		i := indexOf(args, "--concurrency")
		switch {
		case tc.want == "" && i >= 0, tc.want != "" && (i < 0 || args[i+1] != tc.want):
			t.Errorf("%q: proxy args %q, want --concurrency %q", tc.config, args, tc.want)
		}
	}
	pod := testPod()
	pod.Annotations = map[string]string{AnnotationProxyConfig: "concurrency: -1"}
	if _, _, err := InjectPod(pod, "shop", en, testConfig); err == nil || !strings.Contains(err.Error(), "concurrency -1") {
		t.Errorf("concurrency -1: %v, want an error naming it", err)
	}
}
