package kube

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"

	"weft.dev/weft/internal/registry"
)

func ptr[T any](v T) *T { return &v }

func TestPortProtocol(t *testing.T) {
	tests := []struct {
		name        string
		proto       corev1.Protocol
		appProtocol *string
		want        registry.Protocol
		skipped     bool
	}{
		{name: "http", want: registry.HTTP},
		{name: "HTTP", want: registry.HTTP},
		{name: "http-web", want: registry.HTTP},
		{name: "http2", want: registry.HTTP2},
		{name: "http2-api", want: registry.HTTP2},
		{name: "grpc", want: registry.GRPC},
		{name: "grpc-orders", want: registry.GRPC},
		{name: "grpc-web", want: registry.GRPC},
		{name: "grpc-web-ui", want: registry.GRPC},
		{name: "https", want: registry.HTTPS},
		{name: "tls-db", want: registry.TLS},
		{name: "tcp", want: registry.TCP},
		{name: "mongo", want: registry.TCP},
		{name: "redis-cache", want: registry.TCP},
		{name: "mysql", want: registry.TCP},
		{name: "", want: registry.Auto},
		{name: "web", want: registry.Auto},          // unknown prefix: sniffed
		{name: "httpfoo", want: registry.Auto},      // no "-": the whole name counts
		{name: "metrics-http", want: registry.Auto}, // the prefix decides
		// appProtocol wins over the name.
		{name: "tcp", appProtocol: ptr("http"), want: registry.HTTP},
		{name: "http", appProtocol: ptr("grpc"), want: registry.GRPC},
		{name: "http", appProtocol: ptr("tcp"), want: registry.TCP},
		{name: "web", appProtocol: ptr("HTTP2"), want: registry.HTTP2},
		{name: "web", appProtocol: ptr("kubernetes.io/h2c"), want: registry.HTTP2},
		{name: "web", appProtocol: ptr("kubernetes.io/ws"), want: registry.HTTP},
		{name: "web", appProtocol: ptr("kubernetes.io/wss"), want: registry.HTTPS},
		{name: "http", appProtocol: ptr("example.com/custom"), want: registry.Auto},
		// The mesh carries TCP only.
		{name: "dns", proto: corev1.ProtocolUDP, skipped: true},
		{name: "http", proto: corev1.ProtocolSCTP, skipped: true},
		{name: "http", proto: corev1.ProtocolTCP, want: registry.HTTP},
	}
	for _, tc := range tests {
		got, ok := portProtocol(corev1.ServicePort{Name: tc.name, Protocol: tc.proto, AppProtocol: tc.appProtocol, Port: 80})
		app := "<nil>"
		if tc.appProtocol != nil {
			app = *tc.appProtocol
		}
		if ok == tc.skipped || (ok && got != tc.want) {
			t.Errorf("port name %q appProtocol %s protocol %q: got %q (kept %v), want %q (kept %v)",
				tc.name, app, tc.proto, got, ok, tc.want, !tc.skipped)
		}
	}
}

func TestConvertService(t *testing.T) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "reviews", Namespace: "shop"},
		Spec: corev1.ServiceSpec{
			ClusterIP: "10.96.0.10",
			Selector:  map[string]string{"app": "reviews"},
			Ports: []corev1.ServicePort{
				{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)},
				{Name: "grpc-api", Port: 9090, TargetPort: intstr.FromString("grpc")},
				{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP},
				{Name: "metrics", Port: 9100, AppProtocol: ptr("http")},
			},
		},
	}
	got := convertService(svc, "corp.local")
	if got.svc.Hostname != "reviews.shop.svc.corp.local" || got.svc.Namespace != "shop" || got.svc.Source != "kubernetes" ||
		got.svc.Selector["app"] != "reviews" {
		t.Errorf("service = %+v", got.svc)
	}
	want := []registry.Port{
		{Name: "http", Number: 80, Protocol: registry.HTTP, TargetPort: 8080},
		{Name: "grpc-api", Number: 9090, Protocol: registry.GRPC, TargetPortName: "grpc"}, // named target port: resolved per endpoint
		{Name: "metrics", Number: 9100, Protocol: registry.HTTP},
	}
	if len(got.svc.Ports) != len(want) {
		t.Fatalf("ports = %+v, want %+v", got.svc.Ports, want)
	}
	for i := range want {
		if got.svc.Ports[i] != want[i] {
			t.Errorf("port %d = %+v, want %+v", i, got.svc.Ports[i], want[i])
		}
	}
	if got.externalName != "" || len(got.externalEndpoints()) != 0 {
		t.Errorf("ClusterIP service has external endpoints")
	}
	if want := []netip.Addr{netip.MustParseAddr("10.96.0.10")}; !slices.Equal(got.svc.Addresses, want) {
		t.Errorf("addresses = %v, want %v (spec.clusterIP)", got.svc.Addresses, want)
	}
	if ServiceHostname("a", "b", "") != "a.b.svc.cluster.local" {
		t.Errorf("default domain suffix not applied")
	}
}

// TestConvertServiceExportTo: Istio's networking.istio.io/exportTo
// annotation limits the namespaces whose sidecars see the Service.
func TestConvertServiceExportTo(t *testing.T) {
	for _, tc := range []struct {
		annotation string
		want       []string
	}{
		{"", nil},
		{".", []string{"shop"}},
		{"., pay", []string{"shop", "pay"}},
		{"*", nil},
		{"~", []string{}},
	} {
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "reviews", Namespace: "shop"}}
		if tc.annotation != "" {
			svc.Annotations = map[string]string{"networking.istio.io/exportTo": tc.annotation}
		}
		got := convertService(svc, "").svc.ExportTo
		if (got == nil) != (tc.want == nil) || !slices.Equal(got, tc.want) {
			t.Errorf("exportTo annotation %q: ExportTo %#v, want %#v", tc.annotation, got, tc.want)
		}
	}
}

// TestConvertServiceTrafficDistribution: spec.trafficDistribution, else
// Istio's networking.istio.io/traffic-distribution annotation, as Istio's
// GetTrafficDistribution reads them.
func TestConvertServiceTrafficDistribution(t *testing.T) {
	ptr := func(s string) *string { return &s }
	for _, tc := range []struct {
		field      *string
		annotation string
		want       string
	}{
		{nil, "", ""},
		{ptr("PreferClose"), "", registry.TrafficPreferSameZone},
		{ptr("PreferSameNode"), "PreferClose", registry.TrafficPreferSameNode},
		{nil, "PreferSameZone", registry.TrafficPreferSameZone},
		{nil, "somewhere", ""},
	} {
		svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "reviews", Namespace: "shop"}, Spec: corev1.ServiceSpec{TrafficDistribution: tc.field}}
		if tc.annotation != "" {
			svc.Annotations = map[string]string{"networking.istio.io/traffic-distribution": tc.annotation}
		}
		if got := convertService(svc, "").svc.TrafficDistribution; got != tc.want {
			t.Errorf("field %v, annotation %q: %q, want %q", tc.field, tc.annotation, got, tc.want)
		}
	}
}

func TestConvertExternalNameService(t *testing.T) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "shop"},
		Spec: corev1.ServiceSpec{
			Type:         corev1.ServiceTypeExternalName,
			ExternalName: "db.prod.example.com.",
			Ports:        []corev1.ServicePort{{Name: "tcp-pg", Port: 5432, TargetPort: intstr.FromInt32(6543)}},
		},
	}
	got := convertService(svc, "")
	if got.svc.Resolution != registry.DNS {
		t.Errorf("resolution %s, want DNS: the proxies resolve the name", got.svc.Resolution)
	}
	eps := got.externalEndpoints()
	if len(eps) != 1 {
		t.Fatalf("endpoints = %v, want one", eps)
	}
	e := eps[0]
	if e.ServiceHostname != "db.shop.svc.cluster.local" || e.ServicePort != 5432 || e.Address != "db.prod.example.com" ||
		e.Port != 5432 || e.Health != registry.Healthy || e.Namespace != "shop" {
		t.Errorf("endpoint = %+v", e)
	}
}

func TestEndpointHealth(t *testing.T) {
	tests := []struct {
		name                       string
		ready, serving, terminated *bool
		publishNotReady            bool
		want                       registry.Health
		dropped                    bool
	}{
		{name: "no conditions", want: registry.Healthy},
		{name: "ready", ready: ptr(true), serving: ptr(true), terminated: ptr(false), want: registry.Healthy},
		{name: "not ready", ready: ptr(false), serving: ptr(false), terminated: ptr(false), want: registry.Unhealthy},
		{name: "not ready, old writer", ready: ptr(false), want: registry.Unhealthy},
		{name: "terminating, serving", ready: ptr(false), serving: ptr(true), terminated: ptr(true), want: registry.Draining},
		{name: "terminating, serving unset", ready: ptr(false), terminated: ptr(true), want: registry.Draining},
		{name: "terminating, not serving", ready: ptr(false), serving: ptr(false), terminated: ptr(true), dropped: true},
		{name: "publishNotReadyAddresses", ready: ptr(false), serving: ptr(false), publishNotReady: true, want: registry.Healthy},
	}
	for _, tc := range tests {
		got, ok := endpointHealth(discoveryv1.EndpointConditions{Ready: tc.ready, Serving: tc.serving, Terminating: tc.terminated}, tc.publishNotReady)
		if ok == tc.dropped || (ok && got != tc.want) {
			t.Errorf("%s: got %v (kept %v), want %v (kept %v)", tc.name, got, ok, tc.want, !tc.dropped)
		}
	}
}

func TestWorkloadName(t *testing.T) {
	ctrl := func(kind, name string) []metav1.OwnerReference {
		return []metav1.OwnerReference{{Kind: kind, Name: name, Controller: ptr(true)}}
	}
	tests := []struct {
		name string
		pod  metav1.ObjectMeta
		want string
	}{
		{"bare pod", metav1.ObjectMeta{Name: "debug"}, "debug"},
		{"deployment", metav1.ObjectMeta{Name: "reviews-v1-5c8d9-x7k2p", GenerateName: "reviews-v1-5c8d9-",
			Labels: map[string]string{"pod-template-hash": "5c8d9"}, OwnerReferences: ctrl("ReplicaSet", "reviews-v1-5c8d9")}, "reviews-v1"},
		{"bare replicaset", metav1.ObjectMeta{Name: "rs-abcde", GenerateName: "rs-",
			OwnerReferences: ctrl("ReplicaSet", "rs")}, "rs"},
		{"statefulset", metav1.ObjectMeta{Name: "db-0", GenerateName: "db-",
			OwnerReferences: ctrl("StatefulSet", "db")}, "db"},
		{"owner not a controller", metav1.ObjectMeta{Name: "x-1", GenerateName: "x-",
			OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "x"}}}, "x-1"},
		{"label wins", metav1.ObjectMeta{Name: "p", GenerateName: "p-", Labels: map[string]string{"service.istio.io/workload-name": "named"},
			OwnerReferences: ctrl("ReplicaSet", "rs")}, "named"},
	}
	for _, tc := range tests {
		if got := workloadName(&corev1.Pod{ObjectMeta: tc.pod}); got != tc.want {
			t.Errorf("%s: workload name %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestConvertPod(t *testing.T) {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1", Labels: map[string]string{
		labelRegion: "eu-west", labelZone: "eu-west-1a", labelSubzone: "rack7"}}}
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "reviews-1", Namespace: "shop", Labels: map[string]string{"app": "reviews", "version": "v2"}},
		Spec: corev1.PodSpec{
			NodeName:           "n1",
			ServiceAccountName: "reviews",
			Containers: []corev1.Container{
				{Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP}}},
				{Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 9999}, {Name: "admin", ContainerPort: 9901}}},
			},
		},
		Status: corev1.PodStatus{PodIP: "10.77.0.5", Phase: corev1.PodRunning,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
	got := convertPod(p, node)
	w := got.wl
	if w == nil {
		t.Fatal("no workload")
	}
	if w.Name != "reviews-1" || w.Namespace != "shop" || w.Address != "10.77.0.5" || w.ServiceAccount != "reviews" ||
		w.Locality != "eu-west/eu-west-1a/rack7" || w.Health != registry.Healthy || w.Source != "kubernetes" {
		t.Errorf("workload = %+v", w)
	}
	if w.Ports["http"] != 8080 || w.Ports["admin"] != 9901 || len(w.Ports) != 2 {
		t.Errorf("ports = %v, want http:8080 (first wins) admin:9901", w.Ports)
	}
	wantLabels := map[string]string{"app": "reviews", "version": "v2", labelRegion: "eu-west", labelZone: "eu-west-1a",
		labelSubzone: "rack7", labelHostname: "n1"}
	if registry.LabelString(w.Labels) != registry.LabelString(wantLabels) {
		t.Errorf("labels = %v, want %v", w.Labels, wantLabels)
	}
	if p.Labels[labelRegion] != "" {
		t.Error("convertPod modified the Pod's labels")
	}
	if got.locality("eu-west-1b") != "eu-west/eu-west-1b/rack7" {
		t.Errorf("slice zone not used: %q", got.locality("eu-west-1b"))
	}

	// The locality label overrides the Node.
	p.Labels[labelLocality] = "us.us-1.a"
	if l := convertPod(p, node).wl.Locality; l != "us/us-1/a" {
		t.Errorf("locality label: %q", l)
	}
	delete(p.Labels, labelLocality)

	// Health and presence.
	p.DeletionTimestamp = &metav1.Time{}
	if h := convertPod(p, nil).wl.Health; h != registry.Draining {
		t.Errorf("terminating ready pod: %v, want Draining", h)
	}
	p.DeletionTimestamp = nil
	p.Status.Conditions[0].Status = corev1.ConditionFalse
	if h := convertPod(p, nil).wl.Health; h != registry.Unhealthy {
		t.Errorf("unready pod: %v, want Unhealthy", h)
	}
	if l := convertPod(p, nil).wl.Locality; l != "" {
		t.Errorf("no node: locality %q", l)
	}
	p.Status.Phase = corev1.PodSucceeded
	if convertPod(p, nil).wl != nil {
		t.Error("a finished pod is a workload")
	}
	p.Status.Phase, p.Status.PodIP = corev1.PodPending, ""
	if convertPod(p, nil).wl != nil {
		t.Error("a pod without IP is a workload")
	}
	p.Spec.ServiceAccountName = ""
	if sa := convertPod(p, nil).serviceAccount; sa != "default" {
		t.Errorf("service account %q, want default", sa)
	}
}

func TestRelevantChanges(t *testing.T) {
	a := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{ResourceVersion: "1", Labels: map[string]string{"app": "a"}},
		Status: corev1.PodStatus{PodIP: "10.77.0.1"}}
	b := a.DeepCopy()
	b.ResourceVersion = "2"
	b.Status.ContainerStatuses = []corev1.ContainerStatus{{RestartCount: 3}}
	if podRelevantChange(a, b) {
		t.Error("a restart count is a relevant change")
	}
	b.Labels["version"] = "v2"
	if !podRelevantChange(a, b) {
		t.Error("a label change is not relevant")
	}
	n1 := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{labelZone: "a"}}}
	n2 := n1.DeepCopy()
	n2.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady}}
	if nodeRelevantChange(n1, n2) {
		t.Error("node status is a relevant change")
	}
	n2.Labels[labelZone] = "b"
	if !nodeRelevantChange(n1, n2) {
		t.Error("a zone change is not relevant")
	}
}

// TestSlimKeepsWhatConversionReads: a Pod and a Node slimmed for the
// informer caches convert exactly as the full objects do.
func TestSlimKeepsWhatConversionReads(t *testing.T) {
	always := corev1.ContainerRestartPolicyAlways
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "reviews-5c8d9-x7k2p", GenerateName: "reviews-5c8d9-", Namespace: "shop",
			Labels:            map[string]string{"app": "reviews", "pod-template-hash": "5c8d9", labelLocality: "r.z"},
			Annotations:       map[string]string{"big": strings.Repeat("x", 1000)},
			ManagedFields:     []metav1.ManagedFieldsEntry{{Manager: "kubelet"}},
			OwnerReferences:   []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "reviews-5c8d9", Controller: ptr(true)}},
			DeletionTimestamp: &metav1.Time{}},
		Spec: corev1.PodSpec{NodeName: "n1", ServiceAccountName: "reviews",
			Containers: []corev1.Container{{Name: "app", Image: "img", Env: []corev1.EnvVar{{Name: "A", Value: "b"}},
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}},
			InitContainers: []corev1.Container{{Name: "sidecar", RestartPolicy: &always, Ports: []corev1.ContainerPort{{Name: "admin", ContainerPort: 15000}}}},
		},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.77.0.1", PodIPs: []corev1.PodIP{{IP: "10.77.0.1"}},
			Conditions:        []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}, {Type: corev1.PodReady, Status: corev1.ConditionTrue}},
			ContainerStatuses: []corev1.ContainerStatus{{Name: "app", RestartCount: 2}}},
	}
	n := node("n1", "r", "z")
	n.Status.Images = []corev1.ContainerImage{{Names: []string{"img"}, SizeBytes: 1}}
	so, _ := slim(p)
	sn, _ := slim(n)
	slimPod, slimNode := so.(*corev1.Pod), sn.(*corev1.Node)
	full, slimmed := convertPod(p, n), convertPod(slimPod, slimNode)
	if fmt.Sprintf("%+v", *full.wl) != fmt.Sprintf("%+v", *slimmed.wl) || full.workloadName != slimmed.workloadName || full.terminating != slimmed.terminating {
		t.Errorf("slimmed pod converts to\n%+v\nfull:\n%+v", *slimmed.wl, *full.wl)
	}
	other := slimPod.DeepCopy()
	other.ResourceVersion = "2"
	if podRelevantChange(p, other) {
		t.Error("the slimmed pod differs from the full one in a field the registry reads")
	}
	if len(slimPod.Annotations) != 0 || len(slimPod.ManagedFields) != 0 || len(slimNode.Status.Images) != 0 || slimPod.Spec.Containers[0].Env != nil {
		t.Errorf("not slimmed: %+v", slimPod)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	cfg := &rest.Config{Host: "https://127.0.0.1:1"}
	for name, opts := range map[string]Options{
		"no config":          {},
		"bad selector":       {Config: cfg, NamespaceSelector: "mesh in (a"},
		"an empty namespace": {Config: cfg, Namespaces: []string{"a", ""}},
	} {
		if _, err := New(opts); err == nil || !strings.Contains(err.Error(), "kubernetes registry") {
			t.Errorf("%s: New = %v, want an error naming the registry", name, err)
		}
	}
	r, err := New(Options{Config: cfg, Namespaces: []string{"b", "a", "b"}})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(r.opts.Namespaces) != "[a b]" || r.Snapshot() == nil || r.Name() != "kubernetes" || r.Status().Synced {
		t.Errorf("New: namespaces %v, snapshot %v, name %q, status %+v", r.opts.Namespaces, r.Snapshot(), r.Name(), r.Status())
	}
}

func TestConvertServiceAddresses(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec corev1.ServiceSpec
		want []netip.Addr
	}{
		{"dual stack", corev1.ServiceSpec{ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10", "fd00:10:96::a"}},
			[]netip.Addr{netip.MustParseAddr("10.96.0.10"), netip.MustParseAddr("fd00:10:96::a")}},
		{"headless", corev1.ServiceSpec{ClusterIP: "None", ClusterIPs: []string{"None"}}, nil},
		{"not yet allocated", corev1.ServiceSpec{}, nil},
		{"external name", corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "db.example.com", ClusterIP: "10.96.0.11"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "ns"}, Spec: tc.spec}
			if got := convertService(svc, "").svc.Addresses; !slices.Equal(got, tc.want) {
				t.Errorf("addresses = %v, want %v", got, tc.want)
			}
		})
	}
}
