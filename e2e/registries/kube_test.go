package registries

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"weft.dev/weft/internal/testenv"
)

// kube is a test's API server with helpers that play the kubelet and the
// EndpointSlice controller, neither of which runs.
type kube struct {
	t   *testing.T
	env *testenv.KubeEnv
	c   kubernetes.Interface
	ctx context.Context
}

func newKube(t *testing.T) *kube {
	env := testenv.KubeAPIServer(t, testenv.WithIstioCRDs())
	return &kube{t: t, env: env, c: env.Client(t), ctx: t.Context()}
}

func (k *kube) namespace(name string) {
	k.t.Helper()
	if _, err := k.c.CoreV1().Namespaces().Create(k.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
		k.t.Fatal(err)
	}
}

// serviceAccountToken creates a service account and a projected-style
// token for it with the CA's audience, as the kubelet mounts for a pod,
// and writes it to a file.
func (k *kube) serviceAccountToken(ns, sa string) string {
	k.t.Helper()
	_, err := k.c.CoreV1().ServiceAccounts(ns).Create(k.ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{})
	if err != nil && !strings.Contains(err.Error(), "already exists") {
		k.t.Fatal(err)
	}
	exp := int64(3600)
	tr, err := k.c.CoreV1().ServiceAccounts(ns).CreateToken(k.ctx, sa, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{Audiences: []string{"istio-ca"}, ExpirationSeconds: &exp},
	}, metav1.CreateOptions{})
	if err != nil {
		k.t.Fatalf("TokenRequest for %s/%s: %v", ns, sa, err)
	}
	p := filepath.Join(k.t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(tr.Status.Token), 0o600); err != nil {
		k.t.Fatal(err)
	}
	return p
}

// service creates a ClusterIP Service with one HTTP port.
func (k *kube) service(ns, name string, port int32, selector map[string]string) {
	k.t.Helper()
	_, err := k.c.CoreV1().Services(ns).Create(k.ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: selector, Ports: []corev1.ServicePort{{
			Name: "http", Port: port, TargetPort: intstr.FromInt32(port), Protocol: corev1.ProtocolTCP,
		}}},
	}, metav1.CreateOptions{})
	if err != nil {
		k.t.Fatal(err)
	}
}

// pod creates a Pod and, as its kubelet would, reports it running and
// ready at ip.
func (k *kube) pod(ns, name, sa, ip string, labels map[string]string) {
	k.t.Helper()
	p, err := k.c.CoreV1().Pods(ns).Create(k.ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: corev1.PodSpec{ServiceAccountName: sa, Containers: []corev1.Container{{
			Name: "app", Image: "weft-echo", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
		}}},
	}, metav1.CreateOptions{})
	if err != nil {
		k.t.Fatal(err)
	}
	p.Status = corev1.PodStatus{
		Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
	}
	if _, err := k.c.CoreV1().Pods(ns).UpdateStatus(k.ctx, p, metav1.UpdateOptions{}); err != nil {
		k.t.Fatal(err)
	}
}

// sliceEndpoint is one address of an EndpointSlice.
type sliceEndpoint struct {
	pod, ip                     string
	ready, serving, terminating bool
}

// endpointSlice creates or replaces the one EndpointSlice of a Service.
func (k *kube) endpointSlice(ns, svc string, port int32, eps []sliceEndpoint) {
	k.t.Helper()
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: svc + "-slice", Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: &port, Protocol: ptr(corev1.ProtocolTCP)}},
	}
	for _, e := range eps {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{e.ip},
			Conditions: discoveryv1.EndpointConditions{Ready: &e.ready, Serving: &e.serving, Terminating: &e.terminating},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: e.pod},
		})
	}
	cur, err := k.c.DiscoveryV1().EndpointSlices(ns).Get(k.ctx, s.Name, metav1.GetOptions{})
	if err == nil {
		s.ResourceVersion = cur.ResourceVersion
		_, err = k.c.DiscoveryV1().EndpointSlices(ns).Update(k.ctx, s, metav1.UpdateOptions{})
	} else {
		_, err = k.c.DiscoveryV1().EndpointSlices(ns).Create(k.ctx, s, metav1.CreateOptions{})
	}
	if err != nil {
		k.t.Fatal(err)
	}
}

// apply creates or updates Istio objects from YAML (kubectl apply).
func (k *kube) apply(yaml string) {
	k.t.Helper()
	if err := k.env.Apply(k.ctx, []byte(yaml)); err != nil {
		k.t.Fatal(err)
	}
}

var vsGVR = schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "virtualservices"}

// updateVS replaces a VirtualService's spec.
func (k *kube) updateVS(ns, name string, spec map[string]any) {
	k.t.Helper()
	ri := k.env.Dynamic(k.t).Resource(vsGVR).Namespace(ns)
	obj, err := ri.Get(k.ctx, name, metav1.GetOptions{})
	if err != nil {
		k.t.Fatal(err)
	}
	obj.Object["spec"] = spec
	if _, err := ri.Update(k.ctx, obj, metav1.UpdateOptions{}); err != nil {
		k.t.Fatal(err)
	}
}

// vsStatus is a VirtualService's status as Weft wrote it.
func (k *kube) vsStatus(ns, name string) (generation int64, status map[string]any) {
	k.t.Helper()
	obj, err := k.env.Dynamic(k.t).Resource(vsGVR).Namespace(ns).Get(k.ctx, name, metav1.GetOptions{})
	if err != nil {
		k.t.Fatal(err)
	}
	st, _ := obj.Object["status"].(map[string]any)
	return obj.GetGeneration(), st
}

func ptr[T any](v T) *T { return &v }

const backendConfig = `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: backend, namespace: shop}
spec:
  host: backend
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend, namespace: shop}
spec:
  hosts: [backend]
  http:
  - match:
    - headers: {x-canary: {exact: "true"}}
    route:
    - destination: {host: backend, subset: v2}
  - route:
    - destination: {host: backend, subset: v1}
`

// TestKubernetesMesh: Services, Pods and EndpointSlices created through a
// real API server, routed by a VirtualService and DestinationRule created
// as custom resources; sidecars (weft-proxy in network namespaces, the
// test playing the kubelet) get their certificates with their pods'
// service-account tokens. A bad VirtualService is rejected on its status
// while the last good one keeps serving; scaling up and down (EndpointSlice
// changes) reaches the client sidecar as EDS-only pushes with 0 failed
// requests.
func TestKubernetesMesh(t *testing.T) {
	bin := binaries(t)
	k := newKube(t)
	n := testenv.NewNetwork(t)
	k.namespace("shop")
	k.namespace("weft-system") // the status writers' Lease lives there
	v1a, v2, v1b, fe := n.Netns(t, "v1a"), n.Netns(t, "v2"), n.Netns(t, "v1b"), n.Netns(t, "fe")

	k.service("shop", "backend", 8080, map[string]string{"app": "backend"})
	pod := func(ns *testenv.Netns, name, version string) {
		k.pod("shop", name, "backend", ns.IP, map[string]string{"app": "backend", "version": version, "security.istio.io/tlsMode": "istio"})
	}
	pod(v1a, "backend-v1-a", "v1")
	pod(v2, "backend-v2-a", "v2")
	k.endpointSlice("shop", "backend", 8080, []sliceEndpoint{
		{pod: "backend-v1-a", ip: v1a.IP, ready: true, serving: true},
		{pod: "backend-v2-a", ip: v2.IP, ready: true, serving: true},
	})
	k.pod("shop", "frontend-a", "frontend", fe.IP, map[string]string{"app": "frontend", "security.istio.io/tlsMode": "istio"})
	k.apply(backendConfig)

	cp := serve(t, bin, n, "--kubeconfig", k.env.Kubeconfig)
	backendToken, frontendToken := k.serviceAccountToken("shop", "backend"), k.serviceAccountToken("shop", "frontend")
	spec := func(name, version string) workloadSpec {
		return workloadSpec{Name: name, Namespace: "shop", ServiceAccount: "backend", Labels: "app=backend,version=" + version,
			Version: version, Port: 8080, TokenFile: backendToken}
	}
	oldPod := startWorkload(t, bin, cp, v1a, spec("backend-v1-a", "v1"))
	startWorkload(t, bin, cp, v2, spec("backend-v2-a", "v2"))
	client := startWorkload(t, bin, cp, fe, workloadSpec{Name: "frontend-a", Namespace: "shop", ServiceAccount: "frontend",
		Labels: "app=frontend", TokenFile: frontendToken})

	hc := &http.Client{Timeout: 5 * time.Second}
	call := func(headers map[string]string) (echoReply, error) {
		h := map[string]string{"Host": "backend.shop.svc.cluster.local:8080"}
		for k, v := range headers {
			h[k] = v
		}
		code, body, err := httpGet(hc, "http://"+client.Out+"/", h)
		if err != nil {
			return echoReply{}, err
		}
		if code != 200 {
			return echoReply{}, fmt.Errorf("%d %s", code, body)
		}
		return reply(body)
	}
	want := func(headers map[string]string, version string) {
		t.Helper()
		eventually(t, 20*time.Second, "backend answers "+version, func() error {
			r, err := call(headers)
			if err != nil {
				return err
			}
			if r.Version != version {
				return fmt.Errorf("answered by %s %s, want %s", r.Name, r.Version, version)
			}
			return nil
		})
	}
	want(nil, "v1")
	want(map[string]string{"x-canary": "true"}, "v2")

	// Status: Weft accepted both objects.
	eventually(t, 10*time.Second, "VirtualService status", func() error {
		gen, st := k.vsStatus("shop", "backend")
		if fmt.Sprint(st["observedGeneration"]) != fmt.Sprint(gen) || !strings.Contains(fmt.Sprint(st["conditions"]), "Accepted") {
			return fmt.Errorf("generation %d, status %v", gen, st)
		}
		return nil
	})

	// A bad edit — a regex RE2 refuses — is rejected on its status, with
	// the field named; the last good version keeps routing.
	k.updateVS("shop", "backend", map[string]any{
		"hosts": []any{"backend"},
		"http": []any{map[string]any{
			"match": []any{map[string]any{"uri": map[string]any{"regex": "(unclosed"}}},
			"route": []any{map[string]any{"destination": map[string]any{"host": "backend", "subset": "v2"}}},
		}},
	})
	eventually(t, 10*time.Second, "the bad VirtualService rejected on its status", func() error {
		gen, st := k.vsStatus("shop", "backend")
		s := fmt.Sprint(st)
		if fmt.Sprint(st["observedGeneration"]) != fmt.Sprint(gen) || !strings.Contains(s, "Rejected") || !strings.Contains(s, "regex") {
			return fmt.Errorf("generation %d, status %s", gen, s)
		}
		return nil
	})
	for range 20 {
		if r, err := call(nil); err != nil || r.Version != "v1" {
			t.Fatalf("after a rejected edit: %+v %v, want v1 (the last good VirtualService)", r, err)
		}
	}

	// Scale up: a second v1 pod joins; then the first leaves, draining.
	// Requests flow all along.
	var (
		ok, failed atomic.Int64
		firstErr   atomic.Value
		stop       = make(chan struct{})
		wg         sync.WaitGroup
		seen       sync.Map // pod name -> true
	)
	wg.Go(func() {
		for range 100000 {
			select {
			case <-stop:
				return
			default:
			}
			r, err := call(nil)
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
				continue
			}
			ok.Add(1)
			seen.Store(r.Name, true)
			time.Sleep(2 * time.Millisecond)
		}
	})
	before := versionsOf(t, cp, "frontend-a")
	pod(v1b, "backend-v1-b", "v1")
	startWorkload(t, bin, cp, v1b, spec("backend-v1-b", "v1"))
	t0 := time.Now()
	k.endpointSlice("shop", "backend", 8080, []sliceEndpoint{
		{pod: "backend-v1-a", ip: v1a.IP, ready: true, serving: true},
		{pod: "backend-v2-a", ip: v2.IP, ready: true, serving: true},
		{pod: "backend-v1-b", ip: v1b.IP, ready: true, serving: true},
	})
	eventually(t, 10*time.Second, "the new pod serves", func() error {
		if _, ok := seen.Load("backend-v1-b"); !ok {
			return fmt.Errorf("no answer from backend-v1-b yet")
		}
		return nil
	})
	t.Logf("scale-up: the new pod answered %v after the EndpointSlice update", time.Since(t0).Round(time.Millisecond))
	after := versionsOf(t, cp, "frontend-a")
	for _, ty := range []string{"CDS", "LDS", "RDS"} {
		if before[ty] != after[ty] {
			t.Errorf("scale-up changed the client's %s (%s -> %s): want an EDS-only push", ty, before[ty], after[ty])
		}
	}
	if before["EDS"] == after["EDS"] {
		t.Errorf("scale-up did not change the client's EDS version (%s)", after["EDS"])
	}

	// Scale down: backend-v1-a terminates (serving, not ready: draining);
	// once no new request goes there its processes exit, and then it
	// leaves the slice.
	k.endpointSlice("shop", "backend", 8080, []sliceEndpoint{
		{pod: "backend-v1-a", ip: v1a.IP, ready: false, serving: true, terminating: true},
		{pod: "backend-v2-a", ip: v2.IP, ready: true, serving: true},
		{pod: "backend-v1-b", ip: v1b.IP, ready: true, serving: true},
	})
	eventually(t, 10*time.Second, "draining endpoint gets no new requests", func() error {
		seen.Delete("backend-v1-a")
		time.Sleep(300 * time.Millisecond)
		if _, ok := seen.Load("backend-v1-a"); ok {
			return fmt.Errorf("backend-v1-a still answers")
		}
		return nil
	})
	oldPod.Proxy.kill()
	oldPod.App.kill()
	k.endpointSlice("shop", "backend", 8080, []sliceEndpoint{
		{pod: "backend-v2-a", ip: v2.IP, ready: true, serving: true},
		{pod: "backend-v1-b", ip: v1b.IP, ready: true, serving: true},
	})
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	if failed.Load() != 0 || ok.Load() == 0 {
		t.Errorf("while scaling up and down: %d ok, %d failed (first: %v)", ok.Load(), failed.Load(), firstErr.Load())
	}
	t.Logf("while scaling up and down: %d requests, %d failed", ok.Load(), failed.Load())

	// /status lists the Kubernetes sources, synced.
	code, body, err := httpGet(hc, "http://"+cp.Status+"/status", nil)
	if err != nil || code != 200 {
		t.Fatalf("/status: %d %v", code, err)
	}
	if !strings.Contains(body, `"name": "kubernetes"`) {
		t.Errorf("/status does not list the kubernetes sources:\n%s", body)
	}
}

// versionsOf is a connected proxy's ACKed version per xDS type (CDS, LDS,
// EDS, RDS), from the control plane's /debug/proxies.
func versionsOf(t *testing.T, cp *controlPlane, workload string) map[string]string {
	t.Helper()
	code, body, err := httpGet(&http.Client{Timeout: 5 * time.Second}, "http://"+cp.Status+"/debug/proxies", nil)
	if err != nil || code != 200 {
		t.Fatalf("/debug/proxies: %d %v", code, err)
	}
	var out struct {
		Proxies []struct {
			Workload string
			Types    []struct{ Type, Acked string }
		}
	}
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		t.Fatal(err)
	}
	for _, p := range out.Proxies {
		if p.Workload == workload {
			v := map[string]string{}
			for _, ty := range p.Types {
				v[ty.Type] = ty.Acked
			}
			return v
		}
	}
	t.Fatalf("no proxy of workload %s on /debug/proxies", workload)
	return nil
}
