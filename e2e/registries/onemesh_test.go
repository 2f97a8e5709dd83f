package registries

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"weft.dev/weft/internal/testenv"
)

// TestKubernetesConsulMigration: a service moving from VMs (registered in
// Consul) to Kubernetes is one host with the endpoints of both registries;
// a VirtualService splits it 90/10 between the VM subset and the
// Kubernetes subset, and shifting the weight live to Kubernetes fails no
// request. No conflict is reported.
func TestKubernetesConsulMigration(t *testing.T) {
	bin := binaries(t)
	k := newKube(t)
	c := testenv.Consul(t)
	n := testenv.NewNetwork(t)
	k.namespace("prod")
	k.namespace("weft-system")
	vm, pod, fe := n.Netns(t, "vm"), n.Netns(t, "pod"), n.Netns(t, "fe")

	// Kubernetes: the new home.
	k.service("prod", "order", 8080, map[string]string{"app": "order"})
	k.pod("prod", "order-k8s", "order", pod.IP, map[string]string{"app": "order", "version": "k8s"})
	k.endpointSlice("prod", "order", 8080, []sliceEndpoint{{pod: "order-k8s", ip: pod.IP, ready: true, serving: true}})
	// Consul: the VM, joining the Kubernetes host.
	consulService(t, c, "order-vm1", "order", vm.IP, 8080, []string{"version=vm"},
		map[string]string{"protocol": "http", "weft-host": "order.prod.svc.cluster.local"})
	c.Restart()
	k.apply(`
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: order, namespace: prod}
spec:
  host: order.prod.svc.cluster.local
  subsets:
  - {name: vm, labels: {version: vm}}
  - {name: kubernetes, labels: {version: k8s}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: order, namespace: prod}
spec:
  hosts: [order.prod.svc.cluster.local]
  http:
  - route:
    - destination: {host: order.prod.svc.cluster.local, subset: vm}
      weight: 90
    - destination: {host: order.prod.svc.cluster.local, subset: kubernetes}
      weight: 10
`)
	cp := serve(t, bin, n, "--kubeconfig", k.env.Kubeconfig, "--consul", c.Addr)
	startWorkload(t, bin, cp, pod, workloadSpec{Name: "order-k8s", Namespace: "prod", ServiceAccount: "order",
		Labels: "app=order,version=k8s", Version: "k8s", Port: 8080, TokenFile: k.serviceAccountToken("prod", "order")})
	startWorkload(t, bin, cp, vm, workloadSpec{Name: "order-vm1", Namespace: "prod", ServiceAccount: "order-vm",
		Labels: "app=order,version=vm", Version: "vm", Port: 8080, TokenFile: cp.token(t, bin, "prod", "order-vm")})
	client := startWorkload(t, bin, cp, fe, workloadSpec{Name: "frontend", Namespace: "prod", ServiceAccount: "frontend",
		Labels: "app=frontend", TokenFile: k.serviceAccountToken("prod", "frontend")})

	hc := &http.Client{Timeout: 5 * time.Second}
	call := func() (echoReply, error) {
		code, body, err := httpGet(hc, "http://"+client.Out+"/", map[string]string{"Host": "order.prod.svc.cluster.local:8080"})
		if err != nil {
			return echoReply{}, err
		}
		if code != 200 {
			return echoReply{}, fmt.Errorf("%d %s", code, body)
		}
		return reply(body)
	}
	// Both registries' endpoints serve the one host.
	seen := map[string]bool{}
	eventually(t, 30*time.Second, "both the VM and the pod answer", func() error {
		r, err := call()
		if err != nil {
			return err
		}
		seen[r.Version] = true
		if !seen["vm"] || !seen["k8s"] {
			return fmt.Errorf("answered so far by %v", seen)
		}
		return nil
	})
	count := func(n int) map[string]int {
		got := map[string]int{}
		for range n {
			r, err := call()
			if err != nil {
				t.Fatal(err)
			}
			got[r.Version]++
		}
		return got
	}
	got := count(400)
	t.Logf("90/10: %v", got)
	// 90% of 400 is 360; six standard deviations (36) either way.
	if got["vm"] < 324 || got["vm"] > 396 || got["vm"]+got["k8s"] != 400 {
		t.Errorf("split %v, want about 360 vm / 40 k8s", got)
	}

	// Shift the weight live to Kubernetes, with requests flowing.
	var (
		ok, failed atomic.Int64
		firstErr   atomic.Value
		stop       = make(chan struct{})
		wg         sync.WaitGroup
	)
	wg.Go(func() {
		for range 100000 {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := call(); err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
			} else {
				ok.Add(1)
			}
			time.Sleep(2 * time.Millisecond)
		}
	})
	route := func(vmWeight, k8sWeight int) map[string]any {
		return map[string]any{
			"hosts": []any{"order.prod.svc.cluster.local"},
			"http": []any{map[string]any{"route": []any{
				map[string]any{"destination": map[string]any{"host": "order.prod.svc.cluster.local", "subset": "vm"}, "weight": vmWeight},
				map[string]any{"destination": map[string]any{"host": "order.prod.svc.cluster.local", "subset": "kubernetes"}, "weight": k8sWeight},
			}}},
		}
	}
	k.updateVS("prod", "order", route(50, 50))
	time.Sleep(time.Second)
	k.updateVS("prod", "order", route(0, 100))
	eventually(t, 10*time.Second, "all traffic on Kubernetes", func() error {
		for range 20 {
			r, err := call()
			if err != nil {
				return err
			}
			if r.Version != "k8s" {
				return fmt.Errorf("answered by %s", r.Version)
			}
		}
		return nil
	})
	close(stop)
	wg.Wait()
	if failed.Load() != 0 || ok.Load() == 0 {
		t.Errorf("while shifting the weight: %d ok, %d failed (first: %v)", ok.Load(), failed.Load(), firstErr.Load())
	}
	t.Logf("while shifting the weight: %d requests, 0 failed", ok.Load())

	// One host, no conflict between the registries.
	code, body, err := httpGet(hc, "http://"+cp.Status+"/status", nil)
	if err != nil || code != 200 {
		t.Fatalf("/status: %d %v", code, err)
	}
	var st struct{ RegistryConflicts []string }
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatal(err)
	}
	if len(st.RegistryConflicts) != 0 {
		t.Errorf("registry conflicts: %v", st.RegistryConflicts)
	}
}

// TestConsulKubernetesConflictReported: the same host with different
// protocols in Kubernetes and Consul is a conflict on /status naming both
// registries, never silent.
func TestConsulKubernetesConflictReported(t *testing.T) {
	bin := binaries(t)
	k := newKube(t)
	c := testenv.Consul(t)
	n := testenv.NewNetwork(t)
	k.namespace("prod")
	k.service("prod", "order", 8080, map[string]string{"app": "order"})
	consulService(t, c, "order-vm1", "order", "10.77.250.10", 8080, []string{"version=vm"},
		map[string]string{"protocol": "tcp", "weft-host": "order.prod.svc.cluster.local"})
	c.Restart()
	cp := serve(t, bin, n, "--kubeconfig", k.env.Kubeconfig, "--consul", c.Addr, "--kube-read-only")
	hc := &http.Client{Timeout: 5 * time.Second}
	eventually(t, 20*time.Second, "conflict on /status", func() error {
		_, body, err := httpGet(hc, "http://"+cp.Status+"/status", nil)
		if err != nil {
			return err
		}
		var st struct{ RegistryConflicts []string }
		if err := json.Unmarshal([]byte(body), &st); err != nil {
			return err
		}
		for _, cf := range st.RegistryConflicts {
			if strings.Contains(cf, "order.prod.svc.cluster.local") && strings.Contains(cf, "kubernetes") && strings.Contains(cf, "consul") {
				return nil
			}
		}
		return fmt.Errorf("conflicts: %v", st.RegistryConflicts)
	})
	cp.waitOutput(regexpMust(`registry conflict`), 5*time.Second)
}

// TestVMAutoRegistration: a VM whose proxy connects with a WorkloadGroup's
// name joins the mesh — a ServiceEntry selecting the group's labels routes
// to it — and leaves it a grace period after its proxy disconnects.
func TestVMAutoRegistration(t *testing.T) {
	bin := binaries(t)
	n := testenv.NewNetwork(t)
	vm, fe := n.Netns(t, "vm"), n.Netns(t, "fe")
	cfg := t.TempDir()
	writeFile(t, filepath.Join(cfg, "reviews.yaml"), `
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: reviews, namespace: default}
spec:
  metadata:
    labels: {app: reviews, version: vm}
  template:
    serviceAccount: reviews-vm
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.vms.internal]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9080, name: http, protocol: HTTP}
  workloadSelector:
    labels: {app: reviews}
`)
	cp := serve(t, bin, n, "--config", cfg, "--auto-registration-grace", "2s")
	client := startWorkload(t, bin, cp, fe, workloadSpec{Name: "frontend", Namespace: "default", ServiceAccount: "frontend",
		Labels: "app=frontend", TokenFile: cp.token(t, bin, "default", "frontend")})
	hc := &http.Client{Timeout: 5 * time.Second}
	call := func() (int, string) {
		code, body, err := httpGet(hc, "http://"+client.Out+"/", map[string]string{"Host": "reviews.vms.internal:9080"})
		if err != nil {
			t.Fatal(err)
		}
		return code, body
	}
	if code, _ := call(); code == 200 {
		t.Fatalf("reviews answered before any VM registered")
	}
	autoregWorkloads := func() int {
		_, body, err := httpGet(hc, "http://"+cp.Status+"/status", nil)
		if err != nil {
			t.Fatal(err)
		}
		var st struct {
			Registries []struct {
				Name      string
				Workloads int
			}
		}
		if err := json.Unmarshal([]byte(body), &st); err != nil {
			t.Fatal(err)
		}
		for _, r := range st.Registries {
			if r.Name == "autoregistration" {
				return r.Workloads
			}
		}
		t.Fatalf("/status has no autoregistration registry:\n%s", body)
		return 0
	}

	w := startWorkload(t, bin, cp, vm, workloadSpec{Name: "reviews-vm1", Namespace: "default", ServiceAccount: "reviews-vm",
		Labels: "version=vm", Version: "vm", Port: 9080, TokenFile: cp.token(t, bin, "default", "reviews-vm"),
		Extra: []string{"--auto-register-group", "reviews"}})
	eventually(t, 20*time.Second, "the VM registered and routed to", func() error {
		code, body := call()
		if code != 200 {
			return fmt.Errorf("%d %s", code, body)
		}
		if r, err := reply(body); err != nil || r.Name != "reviews-vm1" {
			return fmt.Errorf("answered %s %v", body, err)
		}
		return nil
	})
	if n := autoregWorkloads(); n != 1 {
		t.Errorf("/status autoregistration workloads = %d, want 1", n)
	}

	// The VM's proxy goes away: after the grace period the VM leaves.
	w.Proxy.kill()
	eventually(t, 20*time.Second, "the VM unregistered", func() error {
		if n := autoregWorkloads(); n != 0 {
			return fmt.Errorf("%d workloads still registered", n)
		}
		return nil
	})
	eventually(t, 10*time.Second, "no route to the gone VM", func() error {
		if code, body := call(); code == 200 {
			return fmt.Errorf("still answered: %s", body)
		}
		return nil
	})
	cp.waitOutput(regexpMust(`VM unregistered after its grace period`), 5*time.Second)
}

// TestKubernetesVMJoinsService: Istio's VM onboarding — a Kubernetes
// Service selects app=reviews, a VM registers with a WorkloadGroup
// (custom resource) carrying that label, and clients calling the
// Kubernetes Service reach the VM beside the Pod.
func TestKubernetesVMJoinsService(t *testing.T) {
	bin := binaries(t)
	k := newKube(t)
	n := testenv.NewNetwork(t)
	k.namespace("shop")
	k.namespace("weft-system")
	podNS, vm, fe := n.Netns(t, "pod"), n.Netns(t, "vm"), n.Netns(t, "fe")
	k.service("shop", "reviews", 9080, map[string]string{"app": "reviews"})
	k.pod("shop", "reviews-pod", "reviews", podNS.IP, map[string]string{"app": "reviews", "version": "pod"})
	k.endpointSlice("shop", "reviews", 9080, []sliceEndpoint{{pod: "reviews-pod", ip: podNS.IP, ready: true, serving: true}})
	k.apply(`
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: reviews-vms, namespace: shop}
spec:
  metadata:
    labels: {app: reviews, version: vm}
  template:
    serviceAccount: reviews-vm
`)
	cp := serve(t, bin, n, "--kubeconfig", k.env.Kubeconfig)
	startWorkload(t, bin, cp, podNS, workloadSpec{Name: "reviews-pod", Namespace: "shop", ServiceAccount: "reviews",
		Labels: "app=reviews,version=pod", Version: "pod", Port: 9080, TokenFile: k.serviceAccountToken("shop", "reviews")})
	client := startWorkload(t, bin, cp, fe, workloadSpec{Name: "frontend", Namespace: "shop", ServiceAccount: "frontend",
		Labels: "app=frontend", TokenFile: k.serviceAccountToken("shop", "frontend")})
	// The VM has no Kubernetes identity: a bootstrap token.
	startWorkload(t, bin, cp, vm, workloadSpec{Name: "reviews-vm1", Namespace: "shop", ServiceAccount: "reviews-vm",
		Version: "vm", Port: 9080, TokenFile: cp.token(t, bin, "shop", "reviews-vm"), Extra: []string{"--auto-register-group", "reviews-vms"}})

	hc := &http.Client{Timeout: 5 * time.Second}
	seen := map[string]bool{}
	eventually(t, 30*time.Second, "the pod and the VM both answer for the Kubernetes Service", func() error {
		code, body, err := httpGet(hc, "http://"+client.Out+"/", map[string]string{"Host": "reviews.shop.svc.cluster.local:9080"})
		if err != nil {
			return err
		}
		if code != 200 {
			return fmt.Errorf("%d %s", code, body)
		}
		r, err := reply(body)
		if err != nil {
			return err
		}
		seen[r.Version] = true
		if !seen["pod"] || !seen["vm"] {
			return fmt.Errorf("answered so far by %v", seen)
		}
		return nil
	})
}
