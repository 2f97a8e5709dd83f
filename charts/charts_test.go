package charts

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	meshconfig "istio.io/api/mesh/v1alpha1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/restmapper"

	"weft.dev/weft/internal/ca"
	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/testenv"
)

// The charts, by directory.
const (
	chartWeft    = "weft"
	chartCRDs    = "weft-crds"
	chartGateway = "weft-gateway"
)

// helmRun runs helm with args in this directory, with its own empty
// config, cache and data directories (nothing of the user's helm setup
// leaks in), and returns stdout, or an error carrying stderr.
func helmRun(t *testing.T, args ...string) (string, error) {
	t.Helper()
	bin := testenv.Tool(t, "helm")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	home := t.TempDir()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
		"KUBECONFIG="+filepath.Join(home, "no-kubeconfig"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// render is `helm template` of chart as release in namespace ns with the
// given extra arguments (-f FILE, --set K=V); it fails t on an error.
func render(t *testing.T, release, chart, ns string, extra ...string) []*unstructured.Unstructured {
	t.Helper()
	out, err := helmRun(t, append([]string{"template", release, chart, "--namespace", ns}, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeAll([]byte(out))
	if err != nil {
		t.Fatalf("helm template %s %s: %v", chart, strings.Join(extra, " "), err)
	}
	if len(objs) == 0 {
		t.Fatalf("helm template %s %s rendered nothing", chart, strings.Join(extra, " "))
	}
	return objs
}

// decodeAll decodes a multi-document YAML stream, skipping empty documents.
func decodeAll(data []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objs []*unstructured.Unstructured
	for i := 0; ; i++ {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if len(m) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}

// find returns the one object of kind and name; it fails t otherwise.
func find(t *testing.T, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	var found *unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			if found != nil {
				t.Fatalf("two %s %s rendered", kind, name)
			}
			found = o
		}
	}
	if found == nil {
		t.Fatalf("no %s %s rendered; have %v", kind, name, names(objs))
	}
	return found
}

func has(objs []*unstructured.Unstructured, kind string) bool {
	return slices.ContainsFunc(objs, func(o *unstructured.Unstructured) bool { return o.GetKind() == kind })
}

func names(objs []*unstructured.Unstructured) []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.GetKind()+"/"+o.GetName())
	}
	return out
}

// podSpec returns a Deployment's pod template spec, typed.
func podSpec(t *testing.T, d *unstructured.Unstructured) corev1.PodSpec {
	t.Helper()
	raw, _, _ := unstructured.NestedMap(d.Object, "spec", "template", "spec")
	b, _ := json.Marshal(raw)
	var ps corev1.PodSpec
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ps); err != nil {
		t.Fatalf("Deployment %s: pod spec: %v", d.GetName(), err)
	}
	return ps
}

// intField reads a number of a decoded object (JSON decoding makes it a
// float64); 0 when it is missing.
func intField(o *unstructured.Unstructured, fields ...string) int64 {
	v, _, _ := unstructured.NestedFieldNoCopy(o.Object, fields...)
	switch n := v.(type) {
	case int64:
		return n
	case float64:
		return int64(n)
	}
	return 0
}

func replicas(d *unstructured.Unstructured) int64 { return intField(d, "spec", "replicas") }

func TestHelmLint(t *testing.T) {
	for _, tc := range []struct{ chart, values string }{
		{chartWeft, ""},
		{chartWeft, "testdata/weft-platform.yaml"},
		{chartCRDs, ""},
		{chartGateway, ""},
		{chartGateway, "testdata/gateway-platform.yaml"},
	} {
		args := []string{"lint", "--strict", tc.chart}
		if tc.values != "" {
			args = append(args, "-f", tc.values)
		}
		out, err := helmRun(t, args...)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		if !strings.Contains(out, "0 chart(s) failed") {
			t.Errorf("helm %s:\n%s", strings.Join(args, " "), out)
		}
	}
}

func TestHelmTemplateWeftDefaults(t *testing.T) {
	objs := render(t, "weft", chartWeft, "weft-system")
	for _, kind := range []string{"ServiceAccount", "Service", "Deployment", "PodDisruptionBudget", "ClusterRole",
		"ClusterRoleBinding", "Role", "RoleBinding", "Secret", "MutatingWebhookConfiguration"} {
		if !has(objs, kind) {
			t.Errorf("no %s rendered; have %v", kind, names(objs))
		}
	}
	d := find(t, objs, "Deployment", "weft")
	if got := replicas(d); got != 2 {
		t.Errorf("replicas = %d, want 2", got)
	}
	ps := podSpec(t, d)
	c := ps.Containers[0]
	for _, want := range []string{"serve", "--in-cluster", "--xds-address=0.0.0.0:15012", "--status-address=0.0.0.0:15014",
		"--injection-address=:15017", "--leader-election-namespace=weft-system", "--trust-domain=cluster.local",
		"--domain-suffix=cluster.local", "--log-level=info", "--ca-dir=/etc/cacerts",
		"--injection-xds-address=weft-xds.weft-system.svc:15012"} {
		if !slices.Contains(c.Args, want) {
			t.Errorf("weft serve args %q lack %q", c.Args, want)
		}
	}
	if c.Image != "ghcr.io/weft-mesh/weft:0.1.0" {
		t.Errorf("image = %q", c.Image)
	}
	if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("container securityContext = %+v, want a read-only root and no privilege escalation", sc)
	}
	if ps.SecurityContext == nil || ps.SecurityContext.RunAsNonRoot == nil || !*ps.SecurityContext.RunAsNonRoot {
		t.Errorf("pod securityContext = %+v, want runAsNonRoot", ps.SecurityContext)
	}
	if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Path != "/status" || p.HTTPGet.Port.StrVal != "http-monitoring" {
		t.Errorf("readiness probe = %+v, want GET /status on http-monitoring", p)
	}
	if a := ps.Affinity; a == nil || a.PodAntiAffinity == nil || len(a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) != 1 {
		t.Errorf("affinity = %+v, want a preferred pod anti-affinity", a)
	}
	// No meshConfig: Istio's default mesh config, no ConfigMap, no flag.
	if has(objs, "ConfigMap") || slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--mesh-config") }) {
		t.Errorf("without meshConfig: objects %v, args %q; want no ConfigMap and no --mesh-config", names(objs), c.Args)
	}

	svc := find(t, objs, "Service", "weft")
	ports, _, _ := unstructured.NestedSlice(svc.Object, "spec", "ports")
	var got []string
	for _, p := range ports {
		m := p.(map[string]any)
		got = append(got, fmt.Sprintf("%v=%v", m["name"], m["port"]))
	}
	if want := []string{"grpc-xds=15012", "http-monitoring=15014", "https-webhook=15017"}; !slices.Equal(got, want) {
		t.Errorf("Service ports = %v, want %v", got, want)
	}

	// Proxies reach every replica through the headless Service.
	xds := find(t, objs, "Service", "weft-xds")
	if ip, _, _ := unstructured.NestedString(xds.Object, "spec", "clusterIP"); ip != "None" {
		t.Errorf("weft-xds clusterIP = %q, want None (headless: one record per replica)", ip)
	}

	mwc := find(t, objs, "MutatingWebhookConfiguration", "weft-sidecar-injector")
	hooks, _, _ := unstructured.NestedSlice(mwc.Object, "webhooks")
	if len(hooks) != 3 {
		t.Fatalf("webhooks: %d, want 3 (istio-injection namespaces, weft.dev/inject namespaces, labelled pods)", len(hooks))
	}
	for _, h := range hooks {
		m := h.(map[string]any)
		svcRef, _, _ := unstructured.NestedMap(m, "clientConfig", "service")
		if svcRef["name"] != "weft" || svcRef["namespace"] != "weft-system" || svcRef["path"] != "/inject" || fmt.Sprint(svcRef["port"]) != "15017" {
			t.Errorf("webhook %v clientConfig.service = %v, want weft.weft-system:15017/inject", m["name"], svcRef)
		}
		if cb, _, _ := unstructured.NestedString(m, "clientConfig", "caBundle"); cb != "" {
			t.Errorf("webhook %v caBundle = %q, want empty (the control plane patches it)", m["name"], cb)
		}
	}

	// The generated root is one weft's CA accepts as its --ca-dir.
	sec := find(t, objs, "Secret", "cacerts")
	dir := t.TempDir()
	data, _, _ := unstructured.NestedStringMap(sec.Object, "data")
	for _, f := range []string{ca.FileCACert, ca.FileCAKey, ca.FileRootCert, ca.FileCertChain} {
		b, err := base64.StdEncoding.DecodeString(data[f])
		if err != nil || len(b) == 0 {
			t.Fatalf("Secret cacerts: %s: %v (%d bytes)", f, err, len(b))
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	loaded, err := ca.New(ca.Options{Dir: dir, TrustDomain: "cluster.local", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("the CA does not load the chart's generated cacerts: %v", err)
	}
	if root, _ := base64.StdEncoding.DecodeString(data[ca.FileRootCert]); !bytes.Equal(bytes.TrimSpace(loaded.RootPEM()), bytes.TrimSpace(root)) {
		t.Errorf("the CA's root is not the Secret's root-cert.pem:\n%s", loaded.RootPEM())
	}
	if sec.GetAnnotations()["helm.sh/resource-policy"] != "keep" {
		t.Errorf("Secret cacerts annotations = %v, want helm.sh/resource-policy: keep", sec.GetAnnotations())
	}
}

func TestHelmTemplateWeftPlatformValues(t *testing.T) {
	objs := render(t, "weft", chartWeft, "mesh-control", "-f", "testdata/weft-platform.yaml")
	d := find(t, objs, "Deployment", "weft")
	if got := replicas(d); got != 3 {
		t.Errorf("replicas = %d, want 3", got)
	}
	ps := podSpec(t, d)
	c := ps.Containers[0]
	for _, want := range []string{"--consul=http://consul-server.consul.svc:8500", "--consul-datacenter=dc1",
		"--kube-namespace-selector=istio-discovery=enabled", "--trust-domain=prod.example.com", "--workload-cert-ttl=12h",
		"--leader-election-namespace=mesh-control", "--log-level=warn", "--debounce=200ms", "--ca-dir=/etc/cacerts"} {
		if !slices.Contains(c.Args, want) {
			t.Errorf("weft serve args %q lack %q", c.Args, want)
		}
	}
	if c.Image != "registry.example.com/platform/weft:0.1.0-rc.1" {
		t.Errorf("image = %q", c.Image)
	}
	if ps.NodeSelector["node-role.example.com/infra"] != "true" || len(ps.Tolerations) != 1 || len(ps.TopologySpreadConstraints) != 1 {
		t.Errorf("placement: nodeSelector %v, tolerations %v, spread %v", ps.NodeSelector, ps.Tolerations, ps.TopologySpreadConstraints)
	}
	if got := c.Resources.Limits.Memory().String(); got != "4Gi" {
		t.Errorf("memory limit = %s, want 4Gi", got)
	}
	if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
		return e.Name == "CONSUL_HTTP_TOKEN" && e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && e.ValueFrom.SecretKeyRef.Name == "weft-consul-token"
	}) {
		t.Errorf("env %v lacks CONSUL_HTTP_TOKEN from Secret weft-consul-token", c.Env)
	}
	// ca.source secret: the chart mounts the team's Secret and makes none.
	if has(objs, "Secret") {
		t.Errorf("ca.source secret rendered a Secret: %v", names(objs))
	}
	if !slices.ContainsFunc(ps.Volumes, func(v corev1.Volume) bool { return v.Secret != nil && v.Secret.SecretName == "cacerts" }) {
		t.Errorf("volumes %v lack Secret cacerts", ps.Volumes)
	}
	pdb := find(t, objs, "PodDisruptionBudget", "weft")
	if v, _, _ := unstructured.NestedFieldNoCopy(pdb.Object, "spec", "minAvailable"); fmt.Sprint(v) != "2" {
		t.Errorf("PDB minAvailable = %v, want 2", v)
	}

	// meshConfig: a ConfigMap weft serve reads as --mesh-config.
	mc := meshConfigOf(t, objs, d, "mesh-control")
	var providers []string
	for _, p := range mc.GetExtensionProviders() {
		providers = append(providers, p.GetName())
	}
	if want := []string{"prometheus", "envoy", "otel-tracing", "json-stdout"}; !slices.Equal(providers, want) {
		t.Fatalf("mesh config providers = %v, want %v (the built-in ones, then the values')", providers, want)
	}
	if got := mc.GetExtensionProviders()[2].GetOpentelemetry(); got.GetService() != "opentelemetry-collector.observability.svc.cluster.local" || got.GetPort() != 4317 {
		t.Errorf("otel-tracing = %v", got)
	}
	if got := mc.GetExtensionProviders()[3].GetEnvoyFileAccessLog().GetLogFormat().GetLabels().AsMap()["path"]; got != "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%" {
		t.Errorf("json-stdout's path label = %q: the value did not survive the rendering", got)
	}
	if got := mc.GetDefaultProviders().GetTracing(); !slices.Equal(got, []string{"otel-tracing"}) {
		t.Errorf("defaultProviders.tracing = %v", got)
	}
	if got := mc.GetDefaultConfig().GetTracing().GetSampling(); got != 5 {
		t.Errorf("defaultConfig.tracing.sampling = %v, want 5", got)
	}
}

// meshConfigOf checks how the weft chart hands a meshConfig to weft serve
// — a ConfigMap with key mesh, mounted read-only where --mesh-config
// points, its checksum on the pod template — and returns the mesh config
// weft serve reads from it, which must load without errors or warnings.
func meshConfigOf(t *testing.T, objs []*unstructured.Unstructured, d *unstructured.Unstructured, ns string) *meshconfig.MeshConfig {
	t.Helper()
	cm := find(t, objs, "ConfigMap", "weft-mesh-config")
	if cm.GetNamespace() != ns {
		t.Errorf("ConfigMap weft-mesh-config in namespace %q, want %q", cm.GetNamespace(), ns)
	}
	data, _, _ := unstructured.NestedStringMap(cm.Object, "data")
	ps := podSpec(t, d)
	c := ps.Containers[0]
	var flag string
	for _, a := range c.Args {
		if v, ok := strings.CutPrefix(a, "--mesh-config="); ok {
			flag = v
		}
	}
	vol := slices.IndexFunc(ps.Volumes, func(v corev1.Volume) bool { return v.ConfigMap != nil && v.ConfigMap.Name == cm.GetName() })
	if vol < 0 {
		t.Fatalf("no volume of ConfigMap %s: %v", cm.GetName(), ps.Volumes)
	}
	mount := slices.IndexFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == ps.Volumes[vol].Name })
	if mount < 0 || !c.VolumeMounts[mount].ReadOnly {
		t.Fatalf("volume %s is not mounted read-only: %v", ps.Volumes[vol].Name, c.VolumeMounts)
	}
	if want := path.Join(c.VolumeMounts[mount].MountPath, "mesh"); flag != want {
		t.Errorf("--mesh-config=%q, want %q (key mesh of the mounted ConfigMap)", flag, want)
	}
	ann, _, _ := unstructured.NestedStringMap(d.Object, "spec", "template", "metadata", "annotations")
	if sum := ann["checksum/mesh-config"]; len(sum) != 64 {
		t.Errorf("pod template annotations %v: no checksum/mesh-config (a new mesh config must roll the pods: weft serve reads it once)", ann)
	}
	mc, warns, err := config.ParseMeshConfig("ConfigMap weft-mesh-config", []byte(data["mesh"]))
	if err != nil {
		t.Fatalf("weft serve would refuse the rendered mesh config: %v\n%s", err, data["mesh"])
	}
	for _, w := range warns {
		t.Errorf("mesh config: %v", w.Error())
	}
	return mc
}

// TestHelmMeshConfig: a meshConfig as Istio users write it reaches weft
// serve; a change of it changes the pod template (helm upgrade rolls the
// pods); the schema knows exactly MeshConfig's fields.
func TestHelmMeshConfig(t *testing.T) {
	values := func(body string) string {
		f := filepath.Join(t.TempDir(), "values.yaml")
		if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	const tracing = `meshConfig:
  extensionProviders:
  - name: jaeger
    opentelemetry: {service: jaeger-collector.observability.svc.cluster.local, port: 4317}
  defaultProviders:
    tracing: [jaeger]
`
	objs := render(t, "weft", chartWeft, "weft-system", "-f", values(tracing))
	d := find(t, objs, "Deployment", "weft")
	if mc := meshConfigOf(t, objs, d, "weft-system"); !slices.Equal(mc.GetDefaultProviders().GetTracing(), []string{"jaeger"}) {
		t.Errorf("defaultProviders = %v", mc.GetDefaultProviders())
	}
	sum := func(d *unstructured.Unstructured) string {
		ann, _, _ := unstructured.NestedStringMap(d.Object, "spec", "template", "metadata", "annotations")
		return ann["checksum/mesh-config"]
	}
	// The scrape annotations stay beside the checksum.
	if ann, _, _ := unstructured.NestedStringMap(d.Object, "spec", "template", "metadata", "annotations"); ann["prometheus.io/scrape"] != "true" {
		t.Errorf("pod annotations %v lost the default podAnnotations", ann)
	}
	again := find(t, render(t, "weft", chartWeft, "weft-system", "-f", values(tracing)), "Deployment", "weft")
	changed := find(t, render(t, "weft", chartWeft, "weft-system", "-f", values(tracing+"  accessLogFile: /dev/stdout\n")), "Deployment", "weft")
	if sum(again) != sum(d) || sum(changed) == sum(d) {
		t.Errorf("checksum/mesh-config: %q, same values %q, changed values %q; want equal, then different", sum(d), sum(again), sum(changed))
	}

	// The schema's meshConfig properties are MeshConfig's fields, by
	// their JSON and proto names (weft serve reads both).
	raw, err := os.ReadFile(filepath.Join(chartWeft, "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var schema struct {
		Properties struct {
			MeshConfig struct {
				Properties map[string]json.RawMessage `json:"properties"`
			} `json:"meshConfig"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(raw, &schema); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{}
	fields := (&meshconfig.MeshConfig{}).ProtoReflect().Descriptor().Fields()
	for i := range fields.Len() {
		want[fields.Get(i).JSONName()] = true
		want[string(fields.Get(i).Name())] = true
	}
	got := map[string]bool{}
	for k := range schema.Properties.MeshConfig.Properties {
		got[k] = true
	}
	for k := range want {
		if !got[k] {
			t.Errorf("values.schema.json meshConfig lacks MeshConfig field %s", k)
		}
	}
	for k := range got {
		if !want[k] {
			t.Errorf("values.schema.json meshConfig has %s, not a MeshConfig field", k)
		}
	}
}

func TestHelmTemplateWeftOptions(t *testing.T) {
	t.Run("read-only", func(t *testing.T) {
		objs := render(t, "weft", chartWeft, "weft-system", "--set", "kubernetes.readOnly=true")
		if has(objs, "Role") || has(objs, "RoleBinding") {
			t.Errorf("kubernetes.readOnly rendered the Lease Role: %v", names(objs))
		}
		for _, r := range rules(t, find(t, objs, "ClusterRole", "weft")) {
			if slices.Contains(r.Verbs, "update") && slices.ContainsFunc(r.Resources, func(s string) bool { return strings.HasSuffix(s, "/status") }) ||
				slices.Contains(r.Resources, "events") {
				t.Errorf("kubernetes.readOnly keeps rule %+v", r)
			}
		}
		if args := podSpec(t, find(t, objs, "Deployment", "weft")).Containers[0].Args; !slices.Contains(args, "--kube-read-only") {
			t.Errorf("args %q lack --kube-read-only", args)
		}
	})
	t.Run("no injection", func(t *testing.T) {
		objs := render(t, "weft", chartWeft, "weft-system", "--set", "injection.enabled=false")
		if has(objs, "MutatingWebhookConfiguration") {
			t.Error("injection.enabled=false rendered the webhook")
		}
		for _, r := range rules(t, find(t, objs, "ClusterRole", "weft")) {
			if slices.Contains(r.Resources, "mutatingwebhookconfigurations") {
				t.Errorf("injection.enabled=false keeps rule %+v", r)
			}
		}
		if args := podSpec(t, find(t, objs, "Deployment", "weft")).Containers[0].Args; slices.ContainsFunc(args, func(a string) bool {
			return strings.HasPrefix(a, "--injection-address")
		}) {
			t.Errorf("args %q have --injection-address", args)
		}
	})
	t.Run("in-memory CA, one replica", func(t *testing.T) {
		objs := render(t, "weft", chartWeft, "weft-system", "--set", "ca.source=memory", "--set", "replicaCount=1")
		if has(objs, "Secret") || has(objs, "PodDisruptionBudget") {
			t.Errorf("rendered %v, want no Secret and no PDB", names(objs))
		}
		if args := podSpec(t, find(t, objs, "Deployment", "weft")).Containers[0].Args; slices.ContainsFunc(args, func(a string) bool {
			return strings.HasPrefix(a, "--ca-dir")
		}) {
			t.Errorf("args %q have --ca-dir", args)
		}
	})
}

// rbacRule is a PolicyRule as it reads in YAML.
type rbacRule struct {
	APIGroups     []string `json:"apiGroups"`
	Resources     []string `json:"resources"`
	ResourceNames []string `json:"resourceNames,omitempty"`
	Verbs         []string `json:"verbs"`
}

func rules(t *testing.T, o *unstructured.Unstructured) []rbacRule {
	t.Helper()
	raw, _, _ := unstructured.NestedSlice(o.Object, "rules")
	b, _ := json.Marshal(raw)
	var rs []rbacRule
	if err := json.Unmarshal(b, &rs); err != nil {
		t.Fatalf("%s %s rules: %v", o.GetKind(), o.GetName(), err)
	}
	return rs
}

// TestHelmRBACMatchesDocs: the chart grants exactly what docs/registries.md's
// RBAC section lists, plus the root-cert ConfigMaps and the webhook's
// caBundle — and nothing else.
func TestHelmRBACMatchesDocs(t *testing.T) {
	doc, err := os.ReadFile("../docs/registries.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "\n## RBAC\n")
	if !ok {
		t.Fatal("docs/registries.md has no ## RBAC section")
	}
	section, _, _ = strings.Cut(section, "\n## ")
	var docObjs []*unstructured.Unstructured
	for _, m := range regexp.MustCompile("(?s)```ya?ml\n(.*?)```").FindAllStringSubmatch(section, -1) {
		objs, err := decodeAll([]byte(m[1]))
		if err != nil {
			t.Fatalf("docs/registries.md RBAC: %v", err)
		}
		docObjs = append(docObjs, objs...)
	}
	objs := render(t, "weft", chartWeft, "weft-system")

	chartRules := rules(t, find(t, objs, "ClusterRole", "weft"))
	if want := rules(t, find(t, docObjs, "ClusterRole", "weft")); !reflect.DeepEqual(chartRules, want) {
		t.Errorf("ClusterRole rules differ from docs/registries.md:\n chart %+v\n docs  %+v", chartRules, want)
	}
	if got, want := rules(t, find(t, objs, "Role", "weft-status-leader")), rules(t, find(t, docObjs, "Role", "weft-status-leader")); !reflect.DeepEqual(got, want) {
		t.Errorf("Lease Role rules differ from docs/registries.md:\n chart %+v\n docs  %+v", got, want)
	}
}

func TestHelmTemplateGateway(t *testing.T) {
	objs := render(t, "ingress", chartGateway, "istio-ingress")
	d := find(t, objs, "Deployment", "ingress")
	if got := replicas(d); got != 2 {
		t.Errorf("replicas = %d, want 2", got)
	}
	labels, _, _ := unstructured.NestedStringMap(d.Object, "spec", "template", "metadata", "labels")
	if labels["istio"] != "ingressgateway" {
		t.Errorf("pod labels %v lack istio=ingressgateway", labels)
	}
	svc := find(t, objs, "Service", "ingress")
	sel, _, _ := unstructured.NestedStringMap(svc.Object, "spec", "selector")
	for k, v := range sel {
		if labels[k] != v {
			t.Errorf("Service selector %s=%s does not match the pod labels %v", k, v, labels)
		}
	}
	if typ, _, _ := unstructured.NestedString(svc.Object, "spec", "type"); typ != "LoadBalancer" {
		t.Errorf("Service type %q, want LoadBalancer", typ)
	}
	c := podSpec(t, d).Containers[0]
	if !slices.Contains(c.Args, "--xds-address=weft.weft-system.svc:15012") || !slices.Contains(c.Args, "--labels=app=istio-ingressgateway,istio=ingressgateway") {
		t.Errorf("weft-proxy args %q", c.Args)
	}
	if has(objs, "HorizontalPodAutoscaler") {
		t.Error("HPA rendered without autoscaling.enabled")
	}

	objs = render(t, "ingress", chartGateway, "istio-ingress", "-f", "testdata/gateway-platform.yaml")
	d = find(t, objs, "Deployment", "ingress")
	if _, ok, _ := unstructured.NestedFieldNoCopy(d.Object, "spec", "replicas"); ok {
		t.Error("autoscaling.enabled: the Deployment still sets replicas (it would fight the HPA)")
	}
	hpa := find(t, objs, "HorizontalPodAutoscaler", "ingress")
	if n := intField(hpa, "spec", "maxReplicas"); n != 20 {
		t.Errorf("HPA maxReplicas = %d, want 20", n)
	}
	if ps := podSpec(t, d); ps.TerminationGracePeriodSeconds == nil || *ps.TerminationGracePeriodSeconds != 50 {
		t.Errorf("terminationGracePeriodSeconds = %v, want drainTimeoutSeconds+5 = 50", ps.TerminationGracePeriodSeconds)
	}
}

// TestHelmSchemaRejectsBadValues: values.schema.json (and the chart's own
// checks) make helm template fail, naming the bad value.
func TestHelmSchemaRejectsBadValues(t *testing.T) {
	for _, tc := range []struct {
		name, chart, values, want string
	}{
		{"replicas not a number", chartWeft, "replicaCount: two\n", "replicaCount"},
		{"unknown key", chartWeft, "replicas: 3\n", "replicas"},
		{"CA source", chartWeft, "ca:\n  source: vault\n", "source"},
		{"log level", chartWeft, "logLevel: verbose\n", "logLevel"},
		{"cert TTL", chartWeft, "mesh:\n  workloadCertTTL: 1day\n", "workloadCertTTL"},
		{"failure policy", chartWeft, "injection:\n  failurePolicy: Maybe\n", "failurePolicy"},
		{"memory CA with replicas", chartWeft, "ca:\n  source: memory\n", "ca.source memory"},
		{"extra arg not a flag", chartWeft, "extraArgs: [debug]\n", "extraArgs"},
		{"mesh config field misspelt", chartWeft, "meshConfig:\n  extensionProvider: []\n", "extensionProvider"},
		{"mesh config encoding", chartWeft, "meshConfig:\n  accessLogEncoding: json\n", "accessLogEncoding"},
		{"mesh config provider without a name", chartWeft, "meshConfig:\n  extensionProviders:\n  - opentelemetry: {port: 4317}\n", "name"},
		{"gateway privileged port", chartGateway, "service:\n  ports:\n  - {name: http, port: 80, targetPort: 80}\n", "targetPort"},
		{"gateway without labels", chartGateway, "labels: null\n", "labels"},
		{"gateway control plane address", chartGateway, "controlPlane:\n  address: weft\n", "address"},
		{"crds install", chartCRDs, "crds:\n  install: \"yes\"\n", "install"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := filepath.Join(t.TempDir(), "values.yaml")
			if err := os.WriteFile(f, []byte(tc.values), 0o600); err != nil {
				t.Fatal(err)
			}
			out, err := helmRun(t, "template", "x", tc.chart, "--namespace", "x", "-f", f)
			if err == nil {
				t.Fatalf("helm template accepted %q:\n%.500s", tc.values, out)
			}
			t.Logf("rejected: %v", err)
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("helm template rejected %q, but its error does not name %q:\n%v", tc.values, tc.want, err)
			}
		})
	}
}

// TestHelmCRDsMatchIstioAPI: charts/weft-crds carries istio.io/api's CRDs
// byte for byte, from the version in go.mod (a go.mod bump fails here until
// hack/update-crds.sh runs).
func TestHelmCRDsMatchIstioAPI(t *testing.T) {
	src, err := testenv.IstioCRDsFile()
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	copyFile := filepath.Join(chartCRDs, "files", "istio-crds.gen.yaml")
	got, err := os.ReadFile(copyFile)
	if err != nil {
		t.Fatal(err)
	}
	header, body, ok := bytes.Cut(got, []byte("# ---- verbatim copy of istio.io/api follows ----\n"))
	if !ok {
		t.Fatalf("%s lost its header marker; run hack/update-crds.sh", copyFile)
	}
	if !bytes.Equal(body, want) {
		t.Errorf("%s differs from %s: run hack/update-crds.sh", copyFile, src)
	}
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", "istio.io/api").Output()
	if err != nil {
		t.Fatalf("go list -m istio.io/api: %v", err)
	}
	ver := strings.TrimSpace(string(out))
	if !bytes.Contains(header, []byte("istio.io/api "+ver+",")) {
		t.Errorf("%s header does not name istio.io/api %s: run hack/update-crds.sh\n%s", copyFile, ver, header)
	}
	chart, err := os.ReadFile(filepath.Join(chartCRDs, "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(chart, []byte("\nappVersion: \""+strings.TrimPrefix(ver, "v")+"\"\n")) {
		t.Errorf("%s/Chart.yaml appVersion is not %s: run hack/update-crds.sh", chartCRDs, ver)
	}

	// The chart renders exactly those CRDs, and Weft's own.
	objs := render(t, "weft-crds", chartCRDs, "weft-system")
	weftCRDs, err := os.ReadFile(filepath.Join(chartCRDs, "files", "weft-crds.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	wantObjs, err := decodeAll(append(append(want, "\n---\n"...), weftCRDs...))
	if err != nil {
		t.Fatal(err)
	}
	if g, w := names(objs), names(wantObjs); !slices.Equal(g, w) {
		t.Errorf("weft-crds renders %v, want %v", g, w)
	}
	if objs, err := helmRun(t, "template", "weft-crds", chartCRDs, "--set", "crds.install=false"); err != nil || strings.Contains(objs, "kind:") {
		t.Errorf("crds.install=false: %v\n%.300s", err, objs)
	}
}

// dryRunApplier applies objects to a real API server with server-side
// apply and dryRun=All.
type dryRunApplier struct {
	env    *testenv.KubeEnv
	mapper meta.RESTMapper
}

func (a *dryRunApplier) apply(ctx context.Context, t *testing.T, defaultNS string, obj *unstructured.Unstructured) error {
	gvk := obj.GroupVersionKind()
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		return fmt.Errorf("%s %s: %w", gvk, obj.GetName(), err)
	}
	dc := a.env.Dynamic(t)
	ri := dc.Resource(m.Resource).Namespace(defaultNS)
	if m.Scope.Name() == meta.RESTScopeNameRoot {
		ri = dc.Resource(m.Resource).Namespace("")
	} else if ns := obj.GetNamespace(); ns != "" {
		ri = dc.Resource(m.Resource).Namespace(ns)
	}
	body, err := json.Marshal(obj.Object)
	if err != nil {
		return err
	}
	force := true
	_, err = ri.Patch(ctx, obj.GetName(), types.ApplyPatchType, body, metav1.PatchOptions{
		DryRun: []string{metav1.DryRunAll}, FieldManager: "weft-test", Force: &force})
	if err != nil {
		return fmt.Errorf("%s %s: %w", gvk.Kind, obj.GetName(), err)
	}
	return nil
}

// TestHelmDryRunApply renders every chart with default and platform values
// and applies each object to a real kube-apiserver (with Istio's CRDs)
// with server-side apply and dryRun=All: the API server validates every
// field, as `kubectl apply --server-side --dry-run=server` would.
func TestHelmDryRunApply(t *testing.T) {
	testenv.Tool(t, "helm")
	env := testenv.KubeAPIServer(t, testenv.WithIstioCRDs())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	client := env.Client(t)
	for _, ns := range []string{"weft-system", "mesh-control", "istio-ingress"} {
		if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create namespace %s: %v", ns, err)
		}
	}
	disco, err := discovery.NewDiscoveryClientForConfig(env.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	a := &dryRunApplier{env: env, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disco))}

	for _, tc := range []struct {
		name, release, chart, ns string
		args                     []string
		min                      int // objects at least: nothing silently rendered away
	}{
		{"weft defaults", "weft", chartWeft, "weft-system", nil, 10},
		{"weft platform values", "weft", chartWeft, "mesh-control", []string{"-f", "testdata/weft-platform.yaml"}, 9},
		{"weft read-only, no injection, memory CA", "weft", chartWeft, "weft-system",
			[]string{"--set", "kubernetes.readOnly=true,injection.enabled=false,ca.source=memory,replicaCount=1"}, 5},
		{"weft-crds", "weft-crds", chartCRDs, "weft-system", nil, 15},
		{"gateway defaults", "ingress", chartGateway, "istio-ingress", nil, 4},
		{"gateway platform values", "ingress", chartGateway, "istio-ingress", []string{"-f", "testdata/gateway-platform.yaml"}, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs := render(t, tc.release, tc.chart, tc.ns, tc.args...)
			if len(objs) < tc.min {
				t.Errorf("rendered %d objects, want at least %d: %v", len(objs), tc.min, names(objs))
			}
			for _, o := range objs {
				if err := a.apply(ctx, t, tc.ns, o); err != nil {
					t.Errorf("server-side dry-run apply: %v", err)
				}
			}
		})
	}

	// The dry run does validate: a bad object is refused.
	t.Run("a bad object is refused", func(t *testing.T) {
		objs := render(t, "weft", chartWeft, "weft-system")
		d := find(t, objs, "Deployment", "weft").DeepCopy()
		if err := unstructured.SetNestedField(d.Object, "Not_A_DNS_Label", "spec", "template", "spec", "serviceAccountName"); err != nil {
			t.Fatal(err)
		}
		err := a.apply(ctx, t, "weft-system", d)
		if err == nil || !strings.Contains(err.Error(), "serviceAccountName") {
			t.Errorf("dry-run apply of an invalid Deployment: %v, want an error naming serviceAccountName", err)
		}
	})
}

// TestHelmInstallKeepsCARoot installs the weft chart for real on a
// kube-apiserver (no kubelet: nothing runs, the objects are stored) and
// follows the generated CA root through upgrade, uninstall and reinstall:
// the root never changes, and a cacerts Secret someone else made is used,
// not replaced.
func TestHelmInstallKeepsCARoot(t *testing.T) {
	testenv.Tool(t, "helm")
	env := testenv.KubeAPIServer(t, testenv.WithIstioCRDs())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	client := env.Client(t)
	const ns = "weft-system"
	if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	helm := func(args ...string) string {
		t.Helper()
		out, err := helmRun(t, append(args, "--namespace", ns, "--kubeconfig", env.Kubeconfig)...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	root := func() []byte {
		t.Helper()
		s, err := client.CoreV1().Secrets(ns).Get(ctx, "cacerts", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("Secret cacerts: %v", err)
		}
		if len(s.Data[ca.FileRootCert]) == 0 || len(s.Data[ca.FileCAKey]) == 0 {
			t.Fatalf("Secret cacerts has keys %v", slices.Sorted(func(yield func(string) bool) {
				for k := range s.Data {
					if !yield(k) {
						return
					}
				}
			}))
		}
		return s.Data[ca.FileRootCert]
	}

	notes := helm("install", "weft", chartWeft)
	if !strings.Contains(notes, "weft.weft-system.svc:15012") {
		t.Errorf("install NOTES do not say where proxies connect:\n%s", notes)
	}
	first := root()

	helm("upgrade", "weft", chartWeft, "--set", "logLevel=debug")
	if !bytes.Equal(root(), first) {
		t.Error("helm upgrade replaced the CA root")
	}
	d, err := client.AppsV1().Deployments(ns).Get(ctx, "weft", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if args := d.Spec.Template.Spec.Containers[0].Args; !slices.Contains(args, "--log-level=debug") {
		t.Errorf("after upgrade, args %q lack --log-level=debug", args)
	}

	helm("uninstall", "weft")
	if _, err := client.AppsV1().Deployments(ns).Get(ctx, "weft", metav1.GetOptions{}); err == nil {
		t.Error("helm uninstall left the Deployment")
	}
	if !bytes.Equal(root(), first) {
		t.Error("helm uninstall removed or changed the CA root")
	}
	helm("install", "weft", chartWeft)
	if !bytes.Equal(root(), first) {
		t.Error("reinstalling replaced the CA root that uninstall kept")
	}

	// A plug-in CA: a cacerts Secret the chart did not make is left alone.
	helm("uninstall", "weft")
	if err := client.CoreV1().Secrets(ns).Delete(ctx, "cacerts", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	own := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "cacerts", Namespace: ns}, Data: map[string][]byte{
		ca.FileCACert: []byte("team CA"), ca.FileCAKey: []byte("team key"), ca.FileRootCert: []byte("team root")}}
	if _, err := client.CoreV1().Secrets(ns).Create(ctx, own, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	helm("install", "weft", chartWeft)
	if got := root(); string(got) != "team root" {
		t.Errorf("the chart replaced a cacerts Secret it did not make: root-cert.pem = %.40q", got)
	}
}

// TestHelmInjectionWebhookSelectors asks the real API server which pods the
// chart's webhooks select: with each webhook alone installed (and no
// Service behind it, so a call fails), a pod creation is refused exactly
// when that webhook matches. Every pod must match at most one webhook, and
// the right one.
func TestHelmInjectionWebhookSelectors(t *testing.T) {
	testenv.Tool(t, "helm")
	env := testenv.KubeAPIServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	client := env.Client(t)

	mwc := find(t, render(t, "weft", chartWeft, "weft-system"), "MutatingWebhookConfiguration", "weft-sidecar-injector")
	hooks, _, _ := unstructured.NestedSlice(mwc.Object, "webhooks")
	var hookNames []string
	for _, h := range hooks {
		hookNames = append(hookNames, h.(map[string]any)["name"].(string))
	}

	nsLabels := map[string]map[string]string{
		"istio-on":       {"istio-injection": "enabled"},
		"istio-off":      {"istio-injection": "disabled"},
		"weft-on":        {"weft.dev/inject": "enabled"},
		"both-on":        {"istio-injection": "enabled", "weft.dev/inject": "enabled"},
		"plain":          nil,
		"istio-off-weft": {"istio-injection": "disabled", "weft.dev/inject": "enabled"},
		"weft-off":       {"weft.dev/inject": "disabled"},
	}
	for name, labels := range nsLabels {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
		if _, err := client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		ns, podInject string // podInject: the pod's sidecar.istio.io/inject label, "" for none
		want          string // the webhook that must select the pod, "" for none
	}{
		{"istio-on", "", hookNames[0]},
		{"istio-on", "true", hookNames[0]},
		{"istio-on", "false", ""},
		{"weft-on", "", hookNames[1]},
		{"weft-on", "true", hookNames[1]},
		{"weft-on", "false", ""},
		{"both-on", "", hookNames[0]},
		{"plain", "", ""},
		{"plain", "true", hookNames[2]},
		{"plain", "false", ""},
		{"istio-off", "true", ""},
		{"istio-off-weft", "", hookNames[1]},
		{"istio-off-weft", "false", ""},
		{"weft-off", "true", ""},
	}
	matched := make([][]string, len(cases))
	for _, h := range hooks {
		one := mwc.DeepCopy()
		if err := unstructured.SetNestedSlice(one.Object, []any{h}, "webhooks"); err != nil {
			t.Fatal(err)
		}
		dc := env.Dynamic(t).Resource(admissionGVR)
		_ = dc.Delete(ctx, one.GetName(), metav1.DeleteOptions{})
		if _, err := dc.Create(ctx, one, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create webhook configuration: %v", err)
		}
		name := h.(map[string]any)["name"].(string)
		create := func(c int) error {
			pod := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{GenerateName: "app-", Namespace: cases[c].ns},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "app"}}},
			}
			if cases[c].podInject != "" {
				pod.Labels = map[string]string{"sidecar.istio.io/inject": cases[c].podInject}
			}
			_, err := client.CoreV1().Pods(cases[c].ns).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			return err
		}
		// The API server loads webhook configurations asynchronously:
		// wait until a pod this webhook must select is refused by it (not
		// by the previous configuration).
		probe := slices.IndexFunc(cases, func(c struct{ ns, podInject, want string }) bool { return c.want == name })
		if probe < 0 {
			t.Fatalf("no case expects webhook %s", name)
		}
		for deadline := time.Now().Add(10 * time.Second); ; {
			err := create(probe)
			if err != nil && strings.Contains(err.Error(), `failed calling webhook "`+name+`"`) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("webhook %s never took effect: last answer %v", name, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		for i := range cases {
			err := create(i)
			switch {
			case err == nil:
			case strings.Contains(err.Error(), `failed calling webhook "`+name+`"`):
				matched[i] = append(matched[i], name)
			default:
				t.Fatalf("pod in %s: %v", cases[i].ns, err)
			}
		}
	}
	for i, c := range cases {
		var want []string
		if c.want != "" {
			want = []string{c.want}
		}
		if !slices.Equal(matched[i], want) {
			t.Errorf("namespace %s %v, pod sidecar.istio.io/inject=%q: selected by %v, want %v",
				c.ns, nsLabels[c.ns], c.podInject, matched[i], want)
		}
	}
}

var admissionGVR = schema.GroupVersionResource{Group: "admissionregistration.k8s.io", Version: "v1", Resource: "mutatingwebhookconfigurations"}
