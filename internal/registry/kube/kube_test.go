package kube

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/registry"
	"weft.dev/weft/internal/registry/static"
	"weft.dev/weft/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// client-go's process-wide helpers, started once and never stopped.
		goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
		goleak.IgnoreAnyFunction("k8s.io/client-go/util/workqueue.(*Typed[...]).updateUnfinishedWorkLoop"),
		goleak.IgnoreAnyFunction("k8s.io/apimachinery/pkg/util/wait.BackoffUntilWithContext"),
	)
}

// cluster is the test playing kube-controller-manager and the kubelet
// against a real API server: it creates Nodes, Pods (and writes their
// status), Services and EndpointSlices.
type cluster struct {
	t      *testing.T
	ctx    context.Context
	client kubernetes.Interface
}

func (c *cluster) must(err error, what string) {
	c.t.Helper()
	if err != nil {
		c.t.Fatalf("%s: %v", what, err)
	}
}

func (c *cluster) namespace(name string, lbls map[string]string) {
	c.t.Helper()
	_, err := c.client.CoreV1().Namespaces().Create(c.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls}}, metav1.CreateOptions{})
	c.must(err, "create namespace "+name)
}

func (c *cluster) node(name, region, zone string) {
	c.t.Helper()
	_, err := c.client.CoreV1().Nodes().Create(c.ctx, node(name, region, zone), metav1.CreateOptions{})
	c.must(err, "create node "+name)
}

// pod creates a Pod scheduled on nodeName and, as its kubelet would,
// writes its IP and Ready condition.
func (c *cluster) pod(ns, name, ip, nodeName string, ready bool, lbls map[string]string) *corev1.Pod {
	c.t.Helper()
	p := kpod(ns, name, ip, nodeName, ready, lbls)
	spec := p.Spec
	spec.Containers[0].Name, spec.Containers[0].Image = "app", "example.invalid/app:1"
	created, err := c.client.CoreV1().Pods(ns).Create(c.ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: lbls}, Spec: spec}, metav1.CreateOptions{})
	c.must(err, "create pod "+name)
	created.Status = p.Status
	created.Status.PodIPs = []corev1.PodIP{{IP: ip}}
	updated, err := c.client.CoreV1().Pods(ns).UpdateStatus(c.ctx, created, metav1.UpdateOptions{})
	c.must(err, "pod status "+name)
	return updated
}

func (c *cluster) service(s *corev1.Service) {
	c.t.Helper()
	_, err := c.client.CoreV1().Services(s.Namespace).Create(c.ctx, s, metav1.CreateOptions{})
	c.must(err, "create service "+s.Name)
}

// slice creates or replaces an EndpointSlice, as the EndpointSlice
// controller would.
func (c *cluster) slice(s *discoveryv1.EndpointSlice) {
	c.t.Helper()
	api := c.client.DiscoveryV1().EndpointSlices(s.Namespace)
	old, err := api.Get(c.ctx, s.Name, metav1.GetOptions{})
	if err == nil {
		s.ResourceVersion = old.ResourceVersion
		_, err = api.Update(c.ctx, s, metav1.UpdateOptions{})
		c.must(err, "update endpointslice "+s.Name)
		return
	}
	_, err = api.Create(c.ctx, s, metav1.CreateOptions{})
	c.must(err, "create endpointslice "+s.Name)
}

// startRegistry runs a Registry for the test's lifetime.
func startRegistry(t *testing.T, cfg *rest.Config, opts Options) *Registry {
	t.Helper()
	opts.Config = cfg
	opts.Debounce = 20 * time.Millisecond
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		opts.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	r, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, 30*time.Second, r.Run)
	return r
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// await waits (at most 30 s) until the registry's snapshot, rendered by
// render, equals want; it fails with the last rendering otherwise.
func await(t *testing.T, r *Registry, render func(*registry.Snapshot) []string, want []string) {
	t.Helper()
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	var got []string
	for {
		got = render(r.Snapshot())
		if slices.Equal(got, want) {
			return
		}
		select {
		case <-r.Changed():
		case <-deadline.C:
			t.Fatalf("after 30s the registry has:\n\t%s\nwant:\n\t%s\nstatus: %+v",
				strings.Join(got, "\n\t"), strings.Join(want, "\n\t"), r.Status())
		}
	}
}

// endpointsOf renders one host's endpoints briefly.
func endpointsOf(host string) func(*registry.Snapshot) []string {
	return func(s *registry.Snapshot) []string {
		var out []string
		for _, e := range s.Endpoints(host, 0) {
			out = append(out, fmt.Sprintf("%d -> %s:%d %s v=%s loc=%s sa=%s wl=%s", e.ServicePort, e.Address, e.Port,
				healthName(e.Health), e.Labels["version"], e.Locality, e.ServiceAccount, e.WorkloadName))
		}
		return out
	}
}

func serviceOf(host string) func(*registry.Snapshot) []string {
	return func(s *registry.Snapshot) []string {
		svc := s.Service(host)
		if svc == nil {
			return nil
		}
		out := []string{svc.Hostname + " " + svc.Source}
		for _, p := range svc.Ports {
			out = append(out, fmt.Sprintf("%s %d %s target=%d", p.Name, p.Number, p.Protocol, p.TargetPort))
		}
		return out
	}
}

// TestKubernetesRegistry runs the registry against a real kube-apiserver
// and etcd; the test plays the controllers and kubelets (there are none),
// writing Pods' status and EndpointSlices through the API. Pod and
// endpoint addresses are in 10.77.0.0/16: the API server refuses
// loopback ones, and nothing sends traffic to them.
func TestKubernetesRegistry(t *testing.T) {
	env := testenv.KubeAPIServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := &cluster{t: t, ctx: ctx, client: env.Client(t)}
	c.namespace("shop", map[string]string{"mesh": "on"})
	c.namespace("other", nil)
	c.node("node-a", "eu-west", "eu-west-1a")
	c.node("node-b", "eu-west", "eu-west-1b")

	r := startRegistry(t, env.RESTConfig(), Options{})

	const reviews = "reviews.shop.svc.cluster.local"
	v1 := map[string]string{"app": "reviews", "version": "v1"}
	v2 := map[string]string{"app": "reviews", "version": "v2"}
	httpPort := []discoveryv1.EndpointPort{eport("http", 8080)}

	t.Run("service, slice and pods", func(t *testing.T) {
		c.t = t
		c.pod("shop", "reviews-1", "10.77.0.1", "node-a", true, v1)
		c.pod("shop", "reviews-2", "10.77.0.2", "node-b", true, v2)
		c.service(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "reviews", Namespace: "shop"}, Spec: corev1.ServiceSpec{
			Selector: map[string]string{"app": "reviews"},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}},
		}})
		c.slice(kslice("shop", "reviews", "reviews-1", httpPort,
			sliceEP{ip: "10.77.0.1", pod: "reviews-1", ready: yes},
			sliceEP{ip: "10.77.0.2", pod: "reviews-2", ready: yes}))
		await(t, r, serviceOf(reviews), []string{reviews + " kubernetes", "http 80 HTTP target=0"})
		await(t, r, endpointsOf(reviews), []string{
			"80 -> 10.77.0.1:8080 HEALTHY v=v1 loc=eu-west/eu-west-1a/ sa=sa-reviews wl=reviews-1",
			"80 -> 10.77.0.2:8080 HEALTHY v=v2 loc=eu-west/eu-west-1b/ sa=sa-reviews wl=reviews-2",
		})
		st := r.Status()
		if !st.Synced || !st.Connected || st.LastError != "" || st.Services == 0 || st.Endpoints != 2 || st.Workloads != 2 {
			t.Errorf("status = %+v", st)
		}
	})

	t.Run("scale up and down", func(t *testing.T) {
		c.t = t
		c.pod("shop", "reviews-3", "10.77.0.3", "node-a", true, v2)
		c.slice(kslice("shop", "reviews", "reviews-1", httpPort,
			sliceEP{ip: "10.77.0.1", pod: "reviews-1", ready: yes},
			sliceEP{ip: "10.77.0.2", pod: "reviews-2", ready: yes},
			sliceEP{ip: "10.77.0.3", pod: "reviews-3", ready: yes}))
		await(t, r, endpointsOf(reviews), []string{
			"80 -> 10.77.0.1:8080 HEALTHY v=v1 loc=eu-west/eu-west-1a/ sa=sa-reviews wl=reviews-1",
			"80 -> 10.77.0.2:8080 HEALTHY v=v2 loc=eu-west/eu-west-1b/ sa=sa-reviews wl=reviews-2",
			"80 -> 10.77.0.3:8080 HEALTHY v=v2 loc=eu-west/eu-west-1a/ sa=sa-reviews wl=reviews-3",
		})
		// A second slice for the same service (the controller splits
		// large services) adds to the first.
		c.pod("shop", "reviews-4", "10.77.0.4", "node-b", false, v1)
		c.slice(kslice("shop", "reviews", "reviews-2", httpPort,
			sliceEP{ip: "10.77.0.4", pod: "reviews-4", ready: no, serving: no, terminating: no}))
		await(t, r, endpointsOf(reviews), []string{
			"80 -> 10.77.0.1:8080 HEALTHY v=v1 loc=eu-west/eu-west-1a/ sa=sa-reviews wl=reviews-1",
			"80 -> 10.77.0.2:8080 HEALTHY v=v2 loc=eu-west/eu-west-1b/ sa=sa-reviews wl=reviews-2",
			"80 -> 10.77.0.3:8080 HEALTHY v=v2 loc=eu-west/eu-west-1a/ sa=sa-reviews wl=reviews-3",
			"80 -> 10.77.0.4:8080 UNHEALTHY v=v1 loc=eu-west/eu-west-1b/ sa=sa-reviews wl=reviews-4",
		})
		c.must(c.client.DiscoveryV1().EndpointSlices("shop").Delete(ctx, "reviews-2", metav1.DeleteOptions{}), "delete slice")
		c.must(c.client.CoreV1().Pods("shop").Delete(ctx, "reviews-4", *metav1.NewDeleteOptions(0)), "delete pod")
		c.slice(kslice("shop", "reviews", "reviews-1", httpPort,
			sliceEP{ip: "10.77.0.1", pod: "reviews-1", ready: yes},
			sliceEP{ip: "10.77.0.3", pod: "reviews-3", ready: yes}))
		await(t, r, endpointsOf(reviews), []string{
			"80 -> 10.77.0.1:8080 HEALTHY v=v1 loc=eu-west/eu-west-1a/ sa=sa-reviews wl=reviews-1",
			"80 -> 10.77.0.3:8080 HEALTHY v=v2 loc=eu-west/eu-west-1a/ sa=sa-reviews wl=reviews-3",
		})
	})

	t.Run("terminating endpoints drain", func(t *testing.T) {
		c.t = t
		// Graceful deletion of a scheduled Pod: the API server sets its
		// deletionTimestamp and waits for the (absent) kubelet.
		c.must(c.client.CoreV1().Pods("shop").Delete(ctx, "reviews-3", metav1.DeleteOptions{}), "delete pod")
		c.slice(kslice("shop", "reviews", "reviews-1", httpPort,
			sliceEP{ip: "10.77.0.1", pod: "reviews-1", ready: yes},
			sliceEP{ip: "10.77.0.3", pod: "reviews-3", ready: no, serving: yes, terminating: yes}))
		await(t, r, endpointsOf(reviews), []string{
			"80 -> 10.77.0.1:8080 HEALTHY v=v1 loc=eu-west/eu-west-1a/ sa=sa-reviews wl=reviews-1",
			"80 -> 10.77.0.3:8080 DRAINING v=v2 loc=eu-west/eu-west-1a/ sa=sa-reviews wl=reviews-3",
		})
		await(t, r, workloadsIn("shop", "reviews-3"), []string{"shop/reviews-3 10.77.0.3 DRAINING"})
		// Once it stops serving it is gone.
		c.slice(kslice("shop", "reviews", "reviews-1", httpPort,
			sliceEP{ip: "10.77.0.1", pod: "reviews-1", ready: yes},
			sliceEP{ip: "10.77.0.3", pod: "reviews-3", ready: no, serving: no, terminating: yes}))
		await(t, r, endpointsOf(reviews), []string{
			"80 -> 10.77.0.1:8080 HEALTHY v=v1 loc=eu-west/eu-west-1a/ sa=sa-reviews wl=reviews-1",
		})
	})

	t.Run("headless", func(t *testing.T) {
		c.t = t
		c.pod("shop", "db-0", "10.77.1.1", "node-a", true, map[string]string{"app": "db"})
		c.service(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "shop"}, Spec: corev1.ServiceSpec{
			ClusterIP: corev1.ClusterIPNone, Selector: map[string]string{"app": "db"},
			Ports: []corev1.ServicePort{{Name: "tcp-pg", Port: 5432}},
		}})
		c.slice(kslice("shop", "db", "db-1", []discoveryv1.EndpointPort{eport("tcp-pg", 5432)}, sliceEP{ip: "10.77.1.1", pod: "db-0"}))
		await(t, r, serviceOf("db.shop.svc.cluster.local"), []string{"db.shop.svc.cluster.local kubernetes", "tcp-pg 5432 TCP target=5432"})
		await(t, r, endpointsOf("db.shop.svc.cluster.local"), []string{"5432 -> 10.77.1.1:5432 HEALTHY v= loc=eu-west/eu-west-1a/ sa=sa-db wl=db-0"})
	})

	t.Run("external name", func(t *testing.T) {
		c.t = t
		c.service(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "payments", Namespace: "shop"}, Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeExternalName, ExternalName: "pay.example.com",
			Ports: []corev1.ServicePort{{Name: "https", Port: 443}},
		}})
		const host = "payments.shop.svc.cluster.local"
		await(t, r, serviceOf(host), []string{host + " kubernetes", "https 443 HTTPS target=443"})
		await(t, r, endpointsOf(host), []string{"443 -> pay.example.com:443 HEALTHY v= loc= sa= wl=pay.example.com"})
	})

	t.Run("appProtocol and port names", func(t *testing.T) {
		c.t = t
		c.service(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "protocols", Namespace: "shop"}, Spec: corev1.ServiceSpec{
			Ports: []corev1.ServicePort{
				{Name: "http-web", Port: 80, TargetPort: intstr.FromInt32(8080)},
				{Name: "api", Port: 81, AppProtocol: ptr("kubernetes.io/h2c")},
				{Name: "grpc-orders", Port: 82, AppProtocol: ptr("tcp")},
				{Name: "grpc-orders2", Port: 83},
				{Name: "tls-db", Port: 84},
				{Name: "mongo", Port: 85},
				{Name: "admin", Port: 86},
				{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP},
			},
		}})
		const host = "protocols.shop.svc.cluster.local"
		await(t, r, serviceOf(host), []string{host + " kubernetes",
			"http-web 80 HTTP target=8080", "api 81 HTTP2 target=81", "grpc-orders 82 TCP target=82",
			"grpc-orders2 83 GRPC target=83", "tls-db 84 TLS target=84", "mongo 85 TCP target=85", "admin 86 AUTO target=86"})
	})

	t.Run("serviceentry selects pods", func(t *testing.T) {
		c.t = t
		c.pod("shop", "legacy-1", "10.77.2.1", "node-b", true, map[string]string{"app": "legacy"})
		c.pod("other", "legacy-2", "10.77.2.2", "node-b", true, map[string]string{"app": "legacy"})
		await(t, r, workloadsIn("", "legacy-"), []string{"other/legacy-2 10.77.2.2 HEALTHY", "shop/legacy-1 10.77.2.1 HEALTHY"})
		store := config.NewStore(config.Options{Logger: slog.New(slog.DiscardHandler)})
		cfg := store.Load(map[string][]byte{"se.yaml": []byte(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy, namespace: shop}
spec:
  hosts: [legacy.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: legacy}}
`)})
		reg := static.BuildWith(cfg, static.Options{Workloads: r.Snapshot().Workloads()})
		got := endpointsOf("legacy.example.com")(reg)
		want := []string{"80 -> 10.77.2.1:8080 HEALTHY v= loc=eu-west/eu-west-1b/ sa=sa-legacy wl=legacy-1"}
		if !slices.Equal(got, want) {
			t.Errorf("ServiceEntry endpoints:\n\t%s\nwant:\n\t%s", strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
		}
	})

	t.Run("node zone change", func(t *testing.T) {
		c.t = t
		n, err := c.client.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
		c.must(err, "get node")
		n.Labels[labelZone] = "eu-west-1c"
		_, err = c.client.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
		c.must(err, "update node")
		await(t, r, endpointsOf(reviews), []string{
			"80 -> 10.77.0.1:8080 HEALTHY v=v1 loc=eu-west/eu-west-1c/ sa=sa-reviews wl=reviews-1",
		})
	})

	t.Run("namespace filters", func(t *testing.T) {
		c.t = t
		c.service(ksvc("other", "elsewhere", corev1.ServicePort{Name: "http", Port: 80}))
		await(t, r, serviceOf("elsewhere.other.svc.cluster.local"), []string{"elsewhere.other.svc.cluster.local kubernetes", "http 80 HTTP target=80"})
		for name, opts := range map[string]Options{
			"namespaces": {Namespaces: []string{"shop"}},
			"selector":   {NamespaceSelector: "mesh=on"},
		} {
			only := startRegistry(t, env.RESTConfig(), opts)
			await(t, only, serviceOf(reviews), []string{reviews + " kubernetes", "http 80 HTTP target=0"})
			if only.Snapshot().Service("elsewhere.other.svc.cluster.local") != nil {
				t.Errorf("%s: a service of namespace other is published", name)
			}
			for _, w := range only.Snapshot().Workloads() {
				if w.Namespace != "shop" {
					t.Errorf("%s: workload %s/%s is published", name, w.Namespace, w.Name)
				}
			}
		}
	})
}

func workloadsIn(ns, prefix string) func(*registry.Snapshot) []string {
	return func(s *registry.Snapshot) []string {
		var out []string
		for _, w := range s.Workloads() {
			if (ns == "" || w.Namespace == ns) && strings.HasPrefix(w.Name, prefix) {
				out = append(out, fmt.Sprintf("%s/%s %s %s", w.Namespace, w.Name, w.Address, healthName(w.Health)))
			}
		}
		return out
	}
}

// TestKubernetesRegistryRBAC: with only the documented ClusterRole
// (testdata/rbac.yaml, as the weft-system/weft service account, by
// impersonation) the registry syncs; without it, it reports the API
// server's refusal on Status.
func TestKubernetesRegistryRBAC(t *testing.T) {
	env := testenv.KubeAPIServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := &cluster{t: t, ctx: ctx, client: env.Client(t)}
	c.namespace("shop", map[string]string{"mesh": "on"})
	c.service(ksvc("shop", "a", corev1.ServicePort{Name: "http", Port: 80}))

	as := func(user string) *rest.Config {
		cfg := env.RESTConfig()
		cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
		return cfg
	}
	// Credentials the API server refuses: Run fails at once, saying so.
	bad := env.RESTConfig()
	bad.BearerToken = "not-a-token"
	badReg, err := New(Options{Config: bad, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := badReg.Run(ctx); err == nil || !strings.Contains(err.Error(), "refused our credentials") {
		t.Errorf("Run with a bad token: %v, want an error about credentials", err)
	}

	denied := startRegistry(t, as("system:serviceaccount:weft-system:nobody"), Options{})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && !strings.Contains(denied.Status().LastError, "forbidden") {
		time.Sleep(50 * time.Millisecond)
	}
	if st := denied.Status(); st.Synced || !st.Connected || !strings.Contains(st.LastError, "forbidden") {
		t.Errorf("without RBAC: status = %+v, want not synced, connected, a forbidden error", st)
	}

	rbac, err := os.ReadFile("testdata/rbac.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Apply(ctx, rbac); err != nil {
		t.Fatal(err)
	}
	r := startRegistry(t, as("system:serviceaccount:weft-system:weft"), Options{NamespaceSelector: "mesh=on"})
	await(t, r, serviceOf("a.shop.svc.cluster.local"), []string{"a.shop.svc.cluster.local kubernetes", "http 80 HTTP target=80"})
	if st := r.Status(); !st.Synced || !st.Connected || st.LastError != "" {
		t.Errorf("with RBAC: status = %+v", st)
	}
}

// forwarder is a TCP relay in front of the API server that the test can
// cut and restore, to make an outage the registry sees as one.
type forwarder struct {
	t      *testing.T
	addr   string // listen address, kept across restarts
	target string
	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]bool
	wg     sync.WaitGroup
}

func newForwarder(t *testing.T, target string) *forwarder {
	f := &forwarder{t: t, addr: "127.0.0.1:0", target: target, conns: map[net.Conn]bool{}}
	f.start()
	t.Cleanup(f.stop)
	return f
}

func (f *forwarder) start() {
	f.t.Helper()
	ln, err := net.Listen("tcp", f.addr)
	if err != nil {
		f.t.Fatalf("forwarder: %v", err)
	}
	f.mu.Lock()
	f.ln, f.addr = ln, ln.Addr().String()
	f.mu.Unlock()
	f.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", f.target)
			if err != nil {
				c.Close()
				continue
			}
			f.mu.Lock()
			f.conns[c], f.conns[up] = true, true
			f.mu.Unlock()
			for _, pair := range [][2]net.Conn{{c, up}, {up, c}} {
				f.wg.Go(func() {
					io.Copy(pair[0], pair[1])
					pair[0].Close()
					pair[1].Close()
				})
			}
		}
	})
}

// stop closes the listener and every relayed connection.
func (f *forwarder) stop() {
	f.mu.Lock()
	if f.ln != nil {
		f.ln.Close()
		f.ln = nil
	}
	for c := range f.conns {
		c.Close()
	}
	f.conns = map[net.Conn]bool{}
	f.mu.Unlock()
	f.wg.Wait()
}

// TestKubernetesRegistryOutage: when the API server cannot be reached the
// registry says so on Status and keeps its last snapshot; when it is back,
// the informers catch up with what changed meanwhile.
func TestKubernetesRegistryOutage(t *testing.T) {
	env := testenv.KubeAPIServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := &cluster{t: t, ctx: ctx, client: env.Client(t)}
	c.namespace("shop", nil)
	c.service(ksvc("shop", "a", corev1.ServicePort{Name: "http", Port: 80}))
	httpPort := []discoveryv1.EndpointPort{eport("http", 8080)}
	c.slice(kslice("shop", "a", "a-1", httpPort, sliceEP{ip: "10.77.4.1"}))

	u, err := url.Parse(env.URL)
	if err != nil {
		t.Fatal(err)
	}
	fwd := newForwarder(t, u.Host)
	cfg := env.RESTConfig()
	cfg.Host = "https://" + fwd.addr
	r := startRegistry(t, cfg, Options{})
	const host = "a.shop.svc.cluster.local"
	await(t, r, endpointsOf(host), []string{"80 -> 10.77.4.1:8080 HEALTHY v= loc= sa= wl="})

	fwd.stop()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) && r.Status().Connected {
		time.Sleep(50 * time.Millisecond)
	}
	st := r.Status()
	if st.Connected || st.LastError == "" || !st.Synced {
		t.Fatalf("during the outage: status = %+v, want synced, not connected, an error", st)
	}
	t.Logf("during the outage: %s", st.LastError)
	if got := endpointsOf(host)(r.Snapshot()); len(got) != 1 {
		t.Errorf("during the outage the snapshot lost its endpoints: %v", got)
	}
	// Scale up while the registry cannot see it.
	c.slice(kslice("shop", "a", "a-1", httpPort, sliceEP{ip: "10.77.4.1"}, sliceEP{ip: "10.77.4.2"}))

	fwd.start()
	await(t, r, endpointsOf(host), []string{"80 -> 10.77.4.1:8080 HEALTHY v= loc= sa= wl=", "80 -> 10.77.4.2:8080 HEALTHY v= loc= sa= wl="})
	deadline = time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) && (!r.Status().Connected || r.Status().LastError != "") {
		time.Sleep(50 * time.Millisecond)
	}
	if st := r.Status(); !st.Connected || st.LastError != "" {
		t.Errorf("after the outage: status = %+v, want connected, no error", st)
	}
}
