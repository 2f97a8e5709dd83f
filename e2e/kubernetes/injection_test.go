// Package kubernetes tests Weft's Kubernetes delivery end to end against a
// real kube-apiserver (internal/testenv): the sidecar injection webhook
// served by the control plane, called by the API server over TLS.
package kubernetes

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"weft.dev/weft/internal/ca/kuberoot"
	"weft.dev/weft/internal/controlplane"
	"weft.dev/weft/internal/inject"
	"weft.dev/weft/internal/inject/webhook"
	"weft.dev/weft/internal/proxy/probes"
	"weft.dev/weft/internal/testenv"
)

const testdata = "../../internal/inject/testdata/"

var injCfg = inject.Config{Image: "example/weft-proxy:test", XDSAddress: "weft.weft-system.svc:15012"}

// startInjector runs a control plane with the injection webhook on
// loopback and registers it with the API server; it returns once the
// webhook's caBundle has been patched to the mesh root.
//
// The control plane's client has exactly the rights of the documented
// RBAC files (the webhook's and the root ConfigMap publisher's), as the
// service account weft/weft-system; client (the administrator) sets up.
func startInjector(t *testing.T, env *testenv.KubeEnv, client kubernetes.Interface) {
	t.Helper()
	ctx := context.Background()
	for _, f := range []string{"../../internal/inject/webhook/testdata/rbac.yaml", "../../internal/ca/kuberoot/testdata/rbac.yaml"} {
		rbac, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := env.Apply(ctx, rbac); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
	cfg := env.RESTConfig()
	cfg.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:weft-system:weft"}
	weft, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cp, err := controlplane.New(controlplane.Options{
		ConfigDir:      t.TempDir(),
		XDSAddress:     "127.0.0.1:0",
		StatusAddress:  controlplane.StatusDisabled,
		RootPublishers: []controlplane.RootPublisher{kuberoot.New(weft, nil)},
		Injection: &webhook.Options{Address: "127.0.0.1:0", Client: weft, Config: injCfg,
			WebhookConfigName: "weft-sidecar-injector"},
	})
	if err != nil {
		t.Fatal(err)
	}
	url := "https://" + cp.InjectionAddr().String() + webhook.Path
	fail := admissionregistrationv1.Fail
	none := admissionregistrationv1.SideEffectClassNone
	timeout := int32(10)
	// Registered before the control plane runs, without a caBundle: the
	// patcher must fill it in.
	_, err = client.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "weft-sidecar-injector"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "sidecar-injector.weft.dev",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &url},
			Rules:                   []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create}, Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
			FailurePolicy:           &fail,
			SideEffects:             &none,
			AdmissionReviewVersions: []string{"v1"},
			TimeoutSeconds:          &timeout,
			NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
				Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpNotIn, Values: []string{"kube-system"}}}},
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, 30*time.Second, cp.Run)
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "weft-sidecar-injector", metav1.GetOptions{})
		if err == nil && len(c.Webhooks[0].ClientConfig.CABundle) > 0 {
			if !bytes.Contains(c.Webhooks[0].ClientConfig.CABundle, []byte("BEGIN CERTIFICATE")) {
				t.Fatalf("caBundle is not a PEM certificate: %q", c.Webhooks[0].ClientConfig.CABundle)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the caBundle was not patched within 30s (last error %v)", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// podFromDeployment returns a Pod with the Deployment's template (and its
// name, which is then the workload name as for the Deployment).
func podFromDeployment(t *testing.T, file string) (*corev1.Pod, []byte) {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := bytes.Cut(raw, []byte("\n---\n"))
	var d appsv1.Deployment
	if err := yaml.UnmarshalStrict(first, &d); err != nil {
		t.Fatal(err)
	}
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: d.Name, Labels: d.Spec.Template.Labels, Annotations: d.Spec.Template.Annotations},
		Spec: d.Spec.Template.Spec}, first
}

func mustCreateNS(t *testing.T, client kubernetes.Interface, name string, labels map[string]string) {
	t.Helper()
	if _, err := client.CoreV1().Namespaces().Create(context.Background(),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestInjectionWebhook: Pods created through the real API server in a
// namespace labelled istio-injection=enabled come out with the sidecar,
// the same one `weft inject` adds to the Deployment they come from; an
// opted-out Pod and a Pod of an unlabelled namespace are unchanged; the
// namespace has the root ConfigMap the proxy mounts.
func TestInjectionWebhook(t *testing.T) {
	env := testenv.KubeAPIServer(t)
	client := env.Client(t)
	startInjector(t, env, client)
	ctx := context.Background()
	mustCreateNS(t, client, "shop", map[string]string{inject.LabelIstioInjection: "enabled"})
	mustCreateNS(t, client, "plain", nil)

	pod, deploy := podFromDeployment(t, testdata+"deployment-probes.yaml")
	pod.Namespace = "shop"
	got, err := client.CoreV1().Pods("shop").Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating the pod through the webhook: %v", err)
	}

	// What `weft inject` makes of the Deployment.
	var out bytes.Buffer
	if err := inject.InjectYAML(bytes.NewReader(deploy), &out, injCfg, nil); err != nil {
		t.Fatal(err)
	}
	var want appsv1.Deployment
	if err := yaml.Unmarshal(out.Bytes(), &want); err != nil {
		t.Fatal(err)
	}
	wt := want.Spec.Template

	if names := containerNames(got.Spec.InitContainers); !reflect.DeepEqual(names, []string{inject.CaptureContainer, inject.ProxyContainer}) {
		t.Fatalf("init containers of the created pod: %v", names)
	}
	for i, g := range got.Spec.InitContainers {
		w := wt.Spec.InitContainers[i]
		if !reflect.DeepEqual(g.Args, w.Args) || !reflect.DeepEqual(g.Command, w.Command) || g.Image != w.Image ||
			!reflect.DeepEqual(g.Env, w.Env) || !reflect.DeepEqual(g.VolumeMounts, w.VolumeMounts) ||
			!reflect.DeepEqual(g.RestartPolicy, w.RestartPolicy) || !reflect.DeepEqual(g.SecurityContext, w.SecurityContext) {
			t.Errorf("init container %s differs from weft inject's:\nwebhook: %s\ninject:  %s", g.Name, js(g), js(w))
		}
	}
	px := got.Spec.InitContainers[1]
	if px.RestartPolicy == nil || *px.RestartPolicy != corev1.ContainerRestartPolicyAlways || px.StartupProbe == nil {
		t.Errorf("the proxy is not a native sidecar with a startup probe: %s", js(px))
	}
	if !strings.Contains(envValue(px.Env, inject.ProbersEnv), `"/app-health/reviews/readyz"`) {
		t.Errorf("%s: %q", inject.ProbersEnv, envValue(px.Env, inject.ProbersEnv))
	}
	for i, c := range got.Spec.Containers {
		w := wt.Spec.Containers[i]
		for _, p := range [][2]*corev1.Probe{{c.ReadinessProbe, w.ReadinessProbe}, {c.LivenessProbe, w.LivenessProbe}, {c.StartupProbe, w.StartupProbe}} {
			if (p[0] == nil) != (p[1] == nil) || p[0] != nil && !reflect.DeepEqual(p[0].ProbeHandler, p[1].ProbeHandler) {
				t.Errorf("container %s: probe %s, weft inject's %s", c.Name, js(p[0]), js(p[1]))
			}
		}
	}
	if c := got.Spec.Containers[0]; c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/app-health/reviews/readyz" || c.ReadinessProbe.HTTPGet.Port.IntValue() != inject.AppProbesPort {
		t.Errorf("readiness probe not rewritten: %s", js(c.ReadinessProbe))
	}
	var vols []string
	for _, v := range got.Spec.Volumes {
		vols = append(vols, v.Name)
	}
	if !reflect.DeepEqual(vols, []string{inject.TokenVolume, inject.RootCertVolume}) ||
		got.Spec.Volumes[0].Projected.Sources[0].ServiceAccountToken.Audience != "istio-ca" {
		t.Errorf("volumes: %s", js(got.Spec.Volumes))
	}
	for _, k := range []string{inject.AnnotationStatus, inject.AnnotationDefaultCont} {
		if got.Annotations[k] != wt.Annotations[k] || got.Annotations[k] == "" {
			t.Errorf("annotation %s = %q, weft inject's %q", k, got.Annotations[k], wt.Annotations[k])
		}
	}
	if !reflect.DeepEqual(got.Labels, wt.Labels) || got.Labels[inject.LabelTLSMode] != "istio" {
		t.Errorf("labels %v, weft inject's %v", got.Labels, wt.Labels)
	}
	// The volume's ConfigMap is published to the namespace (kuberoot).
	for i := 0; ; i++ {
		cm, err := client.CoreV1().ConfigMaps("shop").Get(ctx, inject.RootCertConfigMap, metav1.GetOptions{})
		if err == nil && strings.Contains(cm.Data["root-cert.pem"], "BEGIN CERTIFICATE") {
			break
		}
		if i == 200 {
			t.Fatalf("root ConfigMap in shop after 10s: %v %v", cm, err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Opt-outs go through the webhook and come out unchanged.
	opt, _ := podFromDeployment(t, testdata+"deployment-probes.yaml")
	opt.Name, opt.Namespace = "opted-out", "shop"
	opt.Annotations = map[string]string{inject.KeyInject: "false"}
	plain, _ := podFromDeployment(t, testdata+"deployment-probes.yaml")
	plain.Namespace = "plain"
	for _, p := range []*corev1.Pod{opt, plain} {
		created, err := client.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(created.Spec.InitContainers) != 0 || created.Annotations[inject.AnnotationStatus] != "" ||
			created.Spec.Containers[0].ReadinessProbe.HTTPGet.Path != "/ready" || len(created.Spec.Volumes) != 0 {
			t.Errorf("pod %s/%s was changed: %s", p.Namespace, p.Name, js(created.Spec))
		}
	}

	// A pod with an invalid annotation is refused with a message that
	// names it.
	bad, _ := podFromDeployment(t, testdata+"deployment-probes.yaml")
	bad.Name, bad.Namespace = "bad", "shop"
	bad.Annotations = map[string]string{inject.AnnotationProxyCPU: "lots"}
	if _, err := client.CoreV1().Pods("shop").Create(ctx, bad, metav1.CreateOptions{}); err == nil ||
		!strings.Contains(err.Error(), inject.AnnotationProxyCPU) {
		t.Errorf("pod with a bad annotation: %v, want a refusal naming %s", err, inject.AnnotationProxyCPU)
	}

	t.Run("probes", func(t *testing.T) { probesAnswered(t, client) })
}

// probesAnswered creates a pod whose probes point at real servers on
// loopback, then plays the kubelet: it calls the rewritten probes on a
// probes server run as weft-proxy runs it, with the WEFT_APP_PROBERS the
// webhook put in the pod.
func probesAnswered(t *testing.T, client kubernetes.Interface) {
	var healthy atomic.Bool
	healthy.Store(true)
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !healthy.Load() || r.URL.Path != "/ready" {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer app.Close()
	appPort := int32(app.Listener.Addr().(*net.TCPAddr).Port)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "probed", Namespace: "shop"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{
		Name: "app", Image: "app", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: appPort}},
		ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromString("http")}}},
		LivenessProbe:  &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(appPort)}}},
	}}}}
	got, err := client.CoreV1().Pods("shop").Create(context.Background(), pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	probers, err := probes.Parse(envValue(got.Spec.InitContainers[1].Env, inject.ProbersEnv))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, 10*time.Second, func(ctx context.Context) error {
		return probes.Serve(ctx, ln, probes.Handler(probers, "http://127.0.0.1:1", nil, slog.Default()))
	})
	kubelet := func(p *corev1.Probe) int {
		t.Helper()
		if p.HTTPGet == nil || p.HTTPGet.Port.IntValue() != inject.AppProbesPort {
			t.Fatalf("probe not rewritten to the proxy: %s", js(p))
		}
		// The kubelet would call <pod IP>:15020; the test's server is on
		// an ephemeral loopback port.
		resp, err := http.Get("http://" + ln.Addr().String() + p.HTTPGet.Path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	c := got.Spec.Containers[0]
	if r, l := kubelet(c.ReadinessProbe), kubelet(c.LivenessProbe); r != 200 || l != 200 {
		t.Errorf("healthy app: readiness %d, liveness %d", r, l)
	}
	healthy.Store(false)
	if r := kubelet(c.ReadinessProbe); r != http.StatusServiceUnavailable {
		t.Errorf("unready app: readiness %d, want the app's 503", r)
	}
	app.Close()
	if l := kubelet(c.LivenessProbe); l != http.StatusServiceUnavailable {
		t.Errorf("app gone: liveness %d, want 503", l)
	}
}

func containerNames(cs []corev1.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

func envValue(env []corev1.EnvVar, name string) string {
	for _, e := range env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

func js(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
