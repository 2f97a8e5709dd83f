package kube

import (
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/cache"

	"weft.dev/weft/internal/registry"
)

// fixture holds informer-like stores filled by hand.
type fixture struct {
	st stores
	b  *builder
}

func newFixture(t testing.TB, objs ...any) *fixture {
	t.Helper()
	idx := func(extra cache.Indexers) cache.Indexer {
		return cache.NewIndexer(cache.MetaNamespaceKeyFunc, extra)
	}
	f := &fixture{st: stores{
		services:   store{"": idx(cache.Indexers{})},
		slices:     store{"": idx(cache.Indexers{indexService: sliceServiceIndex})},
		pods:       store{"": idx(cache.Indexers{indexIP: podIPIndex, indexNode: podNodeIndex})},
		nodes:      store{"": idx(cache.Indexers{})},
		namespaces: store{"": idx(cache.Indexers{})},
	}}
	for _, o := range objs {
		f.add(t, o)
	}
	f.b = newBuilder("")
	f.b.st = f.st
	return f
}

func (f *fixture) storeOf(o any) cache.Indexer {
	switch o.(type) {
	case *corev1.Service:
		return f.st.services[""]
	case *discoveryv1.EndpointSlice:
		return f.st.slices[""]
	case *corev1.Pod:
		return f.st.pods[""]
	case *corev1.Node:
		return f.st.nodes[""]
	case *corev1.Namespace:
		return f.st.namespaces[""]
	}
	panic(fmt.Sprintf("no store for %T", o))
}

func (f *fixture) add(t testing.TB, o any) {
	t.Helper()
	if err := f.storeOf(o).Add(o); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) update(t testing.TB, o any) {
	t.Helper()
	if err := f.storeOf(o).Update(o); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) remove(t testing.TB, o any) {
	t.Helper()
	if err := f.storeOf(o).Delete(o); err != nil {
		t.Fatal(err)
	}
}

func all() *dirty { d := newDirty(); d.all = true; return d }

func fmtContents(c registry.Contents) []string {
	snap := registry.New(c)
	var out []string
	for _, s := range snap.Services() {
		var ports []string
		for _, p := range s.Ports {
			ports = append(ports, fmt.Sprintf("%s/%d/%s/%d", p.Name, p.Number, p.Protocol, p.TargetPort))
		}
		out = append(out, fmt.Sprintf("svc %s ports=[%s]", s.Hostname, strings.Join(ports, " ")))
		for _, e := range snap.Endpoints(s.Hostname, 0) {
			out = append(out, "  "+fmtEndpoint(e))
		}
	}
	for _, w := range snap.Workloads() {
		out = append(out, fmt.Sprintf("wl %s/%s %s %s sa=%s loc=%q health=%s", w.Namespace, w.Name, w.Address,
			registry.LabelString(w.Labels), w.ServiceAccount, w.Locality, healthName(w.Health)))
	}
	return out
}

func fmtEndpoint(e *registry.Endpoint) string {
	return fmt.Sprintf("%d -> %s:%d %s %s loc=%q sa=%s wl=%s/%s", e.ServicePort, e.Address, e.Port, healthName(e.Health),
		registry.LabelString(e.Labels), e.Locality, e.ServiceAccount, e.Namespace, e.WorkloadName)
}

func healthName(h registry.Health) string {
	return map[registry.Health]string{registry.Healthy: "HEALTHY", registry.Unhealthy: "UNHEALTHY", registry.Draining: "DRAINING"}[h]
}

func check(t *testing.T, got, want []string) {
	t.Helper()
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got:\n\t%s\nwant:\n\t%s", strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
	}
}

// Object constructors.

func node(name, region, zone string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{labelRegion: region, labelZone: zone}}}
}

func kpod(ns, name, ip, nodeName string, ready bool, lbls map[string]string) *corev1.Pod {
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbls, ResourceVersion: "1"},
		Spec: corev1.PodSpec{NodeName: nodeName, ServiceAccountName: "sa-" + lbls["app"], Containers: []corev1.Container{{
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
		}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}},
	}
}

func ksvc(ns, name string, ports ...corev1.ServicePort) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Spec: corev1.ServiceSpec{Ports: ports}}
}

type sliceEP struct {
	ip, pod                     string
	ready, serving, terminating *bool
	zone, nodeName              string
}

func kslice(ns, svc, name string, ports []discoveryv1.EndpointPort, eps ...sliceEP) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       ports,
	}
	for _, e := range eps {
		ep := discoveryv1.Endpoint{Addresses: []string{e.ip},
			Conditions: discoveryv1.EndpointConditions{Ready: e.ready, Serving: e.serving, Terminating: e.terminating}}
		if e.pod != "" {
			ep.TargetRef = &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: e.pod}
		}
		if e.zone != "" {
			ep.Zone = ptr(e.zone)
		}
		if e.nodeName != "" {
			ep.NodeName = ptr(e.nodeName)
		}
		s.Endpoints = append(s.Endpoints, ep)
	}
	return s
}

func eport(name string, port int32) discoveryv1.EndpointPort {
	return discoveryv1.EndpointPort{Name: ptr(name), Port: ptr(port), Protocol: ptr(corev1.ProtocolTCP)}
}

var (
	yes = ptr(true)
	no  = ptr(false)
)

// TestBuild converts a small cluster: a ClusterIP service with named and
// numbered target ports, ready / terminating / unready endpoints, a
// headless service, an ExternalName service, endpoints found by targetRef
// and by IP, localities from Nodes and slices.
func TestBuild(t *testing.T) {
	app := func(a, v string) map[string]string { return map[string]string{"app": a, "version": v} }
	f := newFixture(t,
		node("n1", "eu", "eu-1a"), node("n2", "eu", "eu-1b"),
		kpod("shop", "reviews-1", "10.77.0.1", "n1", true, app("reviews", "v1")),
		kpod("shop", "reviews-2", "10.77.0.2", "n2", true, app("reviews", "v2")),
		kpod("shop", "reviews-3", "10.77.0.3", "n2", false, app("reviews", "v2")),
		kpod("shop", "reviews-4", "10.77.0.4", "n1", true, app("reviews", "v1")),
		kpod("shop", "db-0", "10.77.0.9", "n1", true, app("db", "")),
		ksvc("shop", "reviews",
			corev1.ServicePort{Name: "http", Port: 80, TargetPort: intstr.FromString("http")},
			corev1.ServicePort{Name: "grpc-api", Port: 9090, TargetPort: intstr.FromInt32(9091)},
			corev1.ServicePort{Name: "udp", Port: 53, Protocol: corev1.ProtocolUDP}),
		kslice("shop", "reviews", "reviews-abc",
			[]discoveryv1.EndpointPort{eport("http", 8080), eport("grpc-api", 9091), eport("udp", 53), eport("unknown", 1)},
			sliceEP{ip: "10.77.0.1", pod: "reviews-1", ready: yes},
			sliceEP{ip: "10.77.0.2", pod: "reviews-2", ready: no, serving: yes, terminating: yes},
			sliceEP{ip: "10.77.0.3", pod: "reviews-3", ready: no, serving: no, terminating: no},
			sliceEP{ip: "10.77.0.4", pod: "reviews-4", ready: no, serving: no, terminating: yes}, // gone
		),
		// A slice written by hand: no targetRef, the pod is found by IP;
		// the slice's zone wins over the Node's.
		kslice("shop", "reviews", "reviews-manual", []discoveryv1.EndpointPort{eport("http", 8080)},
			sliceEP{ip: "10.77.0.9", zone: "eu-1c"}),
		// A slice of an FQDN type, ignored as Istio does.
		&discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "reviews-fqdn",
			Labels: map[string]string{discoveryv1.LabelServiceName: "reviews"}}, AddressType: discoveryv1.AddressTypeFQDN,
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"x.example.com"}}}, Ports: []discoveryv1.EndpointPort{eport("http", 80)}},
		// Headless: endpoints alike.
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db"}, Spec: corev1.ServiceSpec{
			ClusterIP: corev1.ClusterIPNone, Ports: []corev1.ServicePort{{Name: "tcp-pg", Port: 5432}}}},
		kslice("shop", "db", "db-x", []discoveryv1.EndpointPort{eport("tcp-pg", 5432)}, sliceEP{ip: "10.77.0.9", pod: "db-0"}),
		// ExternalName: the DNS name is the endpoint.
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "payments"}, Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeExternalName, ExternalName: "pay.example.com", Ports: []corev1.ServicePort{{Name: "https", Port: 443}}}},
		// A slice whose pod is not known yet: left out until it arrives.
		ksvc("shop", "late", corev1.ServicePort{Name: "http", Port: 80}),
		kslice("shop", "late", "late-x", []discoveryv1.EndpointPort{eport("http", 80)}, sliceEP{ip: "10.77.0.20", pod: "late-1"}),
	)
	got := fmtContents(f.b.build(all()))
	check(t, got, []string{
		"svc db.shop.svc.cluster.local ports=[tcp-pg/5432/TCP/0]",
		`  5432 -> 10.77.0.9:5432 HEALTHY {app=db, kubernetes.io/hostname=n1, topology.kubernetes.io/region=eu, topology.kubernetes.io/zone=eu-1a, version=} loc="eu/eu-1a/" sa=sa-db wl=shop/db-0`,
		"svc late.shop.svc.cluster.local ports=[http/80/HTTP/0]",
		"svc payments.shop.svc.cluster.local ports=[https/443/HTTPS/0]",
		`  443 -> pay.example.com:443 HEALTHY {} loc="" sa= wl=shop/pay.example.com`,
		"svc reviews.shop.svc.cluster.local ports=[http/80/HTTP/0 grpc-api/9090/GRPC/9091]",
		`  80 -> 10.77.0.1:8080 HEALTHY {app=reviews, kubernetes.io/hostname=n1, topology.kubernetes.io/region=eu, topology.kubernetes.io/zone=eu-1a, version=v1} loc="eu/eu-1a/" sa=sa-reviews wl=shop/reviews-1`,
		`  80 -> 10.77.0.2:8080 DRAINING {app=reviews, kubernetes.io/hostname=n2, topology.kubernetes.io/region=eu, topology.kubernetes.io/zone=eu-1b, version=v2} loc="eu/eu-1b/" sa=sa-reviews wl=shop/reviews-2`,
		`  80 -> 10.77.0.3:8080 UNHEALTHY {app=reviews, kubernetes.io/hostname=n2, topology.kubernetes.io/region=eu, topology.kubernetes.io/zone=eu-1b, version=v2} loc="eu/eu-1b/" sa=sa-reviews wl=shop/reviews-3`,
		`  80 -> 10.77.0.9:8080 HEALTHY {app=db, kubernetes.io/hostname=n1, topology.kubernetes.io/region=eu, topology.kubernetes.io/zone=eu-1c, version=} loc="eu/eu-1c/" sa=sa-db wl=shop/db-0`,
		`  9090 -> 10.77.0.1:9091 HEALTHY {app=reviews, kubernetes.io/hostname=n1, topology.kubernetes.io/region=eu, topology.kubernetes.io/zone=eu-1a, version=v1} loc="eu/eu-1a/" sa=sa-reviews wl=shop/reviews-1`,
		`  9090 -> 10.77.0.2:9091 DRAINING {app=reviews, kubernetes.io/hostname=n2, topology.kubernetes.io/region=eu, topology.kubernetes.io/zone=eu-1b, version=v2} loc="eu/eu-1b/" sa=sa-reviews wl=shop/reviews-2`,
		`  9090 -> 10.77.0.3:9091 UNHEALTHY {app=reviews, kubernetes.io/hostname=n2, topology.kubernetes.io/region=eu, topology.kubernetes.io/zone=eu-1b, version=v2} loc="eu/eu-1b/" sa=sa-reviews wl=shop/reviews-3`,
		`wl shop/db-0 10.77.0.9 {app=db, kubernetes.io/hostname=n1, topology.kubernetes.io/region=eu, topology.kubernetes.io/zone=eu-1a, version=} sa=sa-db loc="eu/eu-1a/" health=HEALTHY`,
		`wl shop/reviews-1 10.77.0.1 {app=reviews, kubernetes.io/hostname=n1, topology.kubernetes.io/region=eu, topology.kubernetes.io/zone=eu-1a, version=v1} sa=sa-reviews loc="eu/eu-1a/" health=HEALTHY`,
		`wl shop/reviews-2 10.77.0.2 {app=reviews, kubernetes.io/hostname=n2, topology.kubernetes.io/region=eu, topology.kubernetes.io/zone=eu-1b, version=v2} sa=sa-reviews loc="eu/eu-1b/" health=HEALTHY`,
		`wl shop/reviews-3 10.77.0.3 {app=reviews, kubernetes.io/hostname=n2, topology.kubernetes.io/region=eu, topology.kubernetes.io/zone=eu-1b, version=v2} sa=sa-reviews loc="eu/eu-1b/" health=UNHEALTHY`,
		`wl shop/reviews-4 10.77.0.4 {app=reviews, kubernetes.io/hostname=n1, topology.kubernetes.io/region=eu, topology.kubernetes.io/zone=eu-1a, version=v1} sa=sa-reviews loc="eu/eu-1a/" health=HEALTHY`,
	})

	// The late pod arrives: only it is marked, and the service that
	// waited for it gets its endpoint.
	f.add(t, kpod("shop", "late-1", "10.77.0.20", "", true, app("late", "v1")))
	d := newDirty()
	d.pods["shop/late-1"] = true
	c := f.b.build(d)
	snap := registry.New(c)
	if eps := snap.Endpoints("late.shop.svc.cluster.local", 80); len(eps) != 1 || eps[0].Address != "10.77.0.20" {
		t.Errorf("late endpoints = %v", eps)
	}
	checkIncremental(t, f, c)
}

// checkIncremental: what an incremental build produced equals a build
// from scratch of the same stores.
func checkIncremental(t *testing.T, f *fixture, got registry.Contents) {
	t.Helper()
	fresh := newBuilder("")
	fresh.st = f.st
	fresh.nsSelector = f.b.nsSelector
	check(t, fmtContents(got), fmtContents(fresh.build(all())))
}

// TestBuildIncremental: each kind of change, marked as the informers mark
// it, gives what a full rebuild gives.
func TestBuildIncremental(t *testing.T) {
	lbl := map[string]string{"app": "web"}
	p1 := kpod("ns", "web-1", "10.77.1.1", "n1", true, lbl)
	p2 := kpod("ns", "web-2", "10.77.1.2", "n1", true, lbl)
	svc := ksvc("ns", "web", corev1.ServicePort{Name: "http", Port: 80})
	sl := kslice("ns", "web", "web-a", []discoveryv1.EndpointPort{eport("http", 8080)}, sliceEP{ip: "10.77.1.1", pod: "web-1"})
	// A hand-made slice: no Pod, a node.
	manual := ksvc("ns", "manual", corev1.ServicePort{Name: "http", Port: 80})
	manualSlice := kslice("ns", "manual", "manual-a", []discoveryv1.EndpointPort{eport("http", 80)}, sliceEP{ip: "10.77.1.50", nodeName: "n1"})
	f := newFixture(t, node("n1", "r", "z1"), p1, p2, svc, sl, manual, manualSlice)
	if got := fmtContents(f.b.build(all())); !strings.Contains(strings.Join(got, "\n"), `10.77.1.50:80 HEALTHY {kubernetes.io/hostname=n1, topology.kubernetes.io/region=r, topology.kubernetes.io/zone=z1} loc="r/z1/"`) {
		t.Errorf("hand-made slice endpoint has no node locality:\n%s", strings.Join(got, "\n"))
	}

	step := func(name string, mark func(d *dirty)) {
		t.Helper()
		d := newDirty()
		mark(d)
		got := f.b.build(d)
		t.Run(name, func(t *testing.T) { checkIncremental(t, f, got) })
	}
	// Scale up: the slice gains web-2.
	sl2 := kslice("ns", "web", "web-a", []discoveryv1.EndpointPort{eport("http", 8080)},
		sliceEP{ip: "10.77.1.1", pod: "web-1"}, sliceEP{ip: "10.77.1.2", pod: "web-2"})
	f.update(t, sl2)
	step("slice update", func(d *dirty) { d.services["ns/web"] = true })

	// A pod's labels change: its endpoints relabel.
	p1b := p1.DeepCopy()
	p1b.Labels = map[string]string{"app": "web", "version": "v2"}
	f.update(t, p1b)
	step("pod labels", func(d *dirty) { d.pods["ns/web-1"] = true })

	// A node moves zone: its pods relocate.
	f.update(t, node("n1", "r", "z2"))
	step("node zone", func(d *dirty) { d.nodes["n1"] = true })

	// Scale down: web-2 leaves the slice and is deleted.
	f.update(t, sl)
	f.remove(t, p2)
	step("scale down", func(d *dirty) { d.services["ns/web"] = true; d.pods["ns/web-2"] = true })

	// The service is deleted: its endpoints go.
	f.remove(t, svc)
	step("service deleted", func(d *dirty) { d.services["ns/web"] = true })
	if snap := registry.New(f.b.build(newDirty())); snap.Service("web.ns.svc.cluster.local") != nil || len(snap.Endpoints("web.ns.svc.cluster.local", 0)) != 0 {
		t.Errorf("after delete: %v", fmtContents(f.b.build(newDirty())))
	}
}

// TestBuildDuplicateEndpoint: an endpoint in two slices (moving between
// them) is published once, with the healthier conditions.
func TestBuildDuplicateEndpoint(t *testing.T) {
	f := newFixture(t,
		kpod("ns", "a", "10.77.2.1", "", true, map[string]string{"app": "a"}),
		ksvc("ns", "a", corev1.ServicePort{Name: "http", Port: 80}),
		kslice("ns", "a", "a-1", []discoveryv1.EndpointPort{eport("http", 80)}, sliceEP{ip: "10.77.2.1", pod: "a", ready: no}),
		kslice("ns", "a", "a-2", []discoveryv1.EndpointPort{eport("http", 80)}, sliceEP{ip: "10.77.2.1", pod: "a", ready: yes}),
	)
	eps := registry.New(f.b.build(all())).Endpoints("a.ns.svc.cluster.local", 0)
	if len(eps) != 1 || eps[0].Health != registry.Healthy {
		t.Errorf("endpoints = %v, want one healthy", eps)
	}
}

// TestBuildNamespaceSelector: only namespaces whose labels match are
// published; relabelling a namespace (a full rebuild) brings it in.
func TestBuildNamespaceSelector(t *testing.T) {
	mesh := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "in", Labels: map[string]string{"mesh": "on"}}}
	other := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "out"}}
	f := newFixture(t, mesh, other,
		ksvc("in", "a", corev1.ServicePort{Name: "http", Port: 80}),
		ksvc("out", "b", corev1.ServicePort{Name: "http", Port: 80}),
		kpod("out", "b-1", "10.77.3.1", "", true, nil),
	)
	sel, err := labels.Parse("mesh=on")
	if err != nil {
		t.Fatal(err)
	}
	f.b.nsSelector = sel
	check(t, fmtContents(f.b.build(all())), []string{"svc a.in.svc.cluster.local ports=[http/80/HTTP/0]"})

	other = other.DeepCopy()
	other.Labels = map[string]string{"mesh": "on"}
	f.update(t, other)
	c := f.b.build(all())
	if len(c.Services) != 2 || len(c.Workloads) != 1 {
		t.Errorf("after relabel: %v", fmtContents(c))
	}
}

// benchCluster fills a fixture with services × podsPer pods, each service
// with one slice of two ports.
func benchCluster(b *testing.B, services, podsPer int) *fixture {
	f := newFixture(b, node("n1", "r", "z"))
	for i := range services {
		name := fmt.Sprintf("svc-%d", i)
		f.add(b, ksvc("bench", name, corev1.ServicePort{Name: "http", Port: 80}, corev1.ServicePort{Name: "grpc", Port: 9090}))
		var eps []sliceEP
		for j := range podsPer {
			pod := fmt.Sprintf("%s-%d", name, j)
			ip := fmt.Sprintf("10.%d.%d.%d", 77+i/250, i%250, j+1)
			f.add(b, kpod("bench", pod, ip, "n1", true, map[string]string{"app": name, "version": "v1"}))
			eps = append(eps, sliceEP{ip: ip, pod: pod, ready: yes})
		}
		f.add(b, kslice("bench", name, name+"-x", []discoveryv1.EndpointPort{eport("http", 8080), eport("grpc", 9090)}, eps...))
	}
	return f
}

// BenchmarkBuildFull converts 1,000 services × 3 pods from scratch (the
// first sync, or a Node's zone change) and builds the snapshot.
func BenchmarkBuildFull(b *testing.B) {
	f := benchCluster(b, 1000, 3)
	b.ReportAllocs()
	for b.Loop() {
		registry.New(f.b.build(all()))
	}
}

// BenchmarkBuildOnePod is one pod replaced in the same cluster (its slice
// changes): one service and one pod are reconverted, then the snapshot is
// assembled.
func BenchmarkBuildOnePod(b *testing.B) {
	f := benchCluster(b, 1000, 3)
	f.b.build(all())
	b.ReportAllocs()
	for b.Loop() {
		d := newDirty()
		d.pods["bench/svc-500-1"] = true
		d.services["bench/svc-500"] = true
		registry.New(f.b.build(d))
	}
}

// BenchmarkBuildChurn10Percent is 10% of the pods (300) replaced in one
// debounce window.
func BenchmarkBuildChurn10Percent(b *testing.B) {
	f := benchCluster(b, 1000, 3)
	f.b.build(all())
	b.ReportAllocs()
	for b.Loop() {
		d := newDirty()
		for i := 0; i < 1000; i += 10 {
			for j := range 3 {
				d.pods[fmt.Sprintf("bench/svc-%d-%d", i, j)] = true
			}
			d.services[fmt.Sprintf("bench/svc-%d", i)] = true
		}
		registry.New(f.b.build(d))
	}
}
