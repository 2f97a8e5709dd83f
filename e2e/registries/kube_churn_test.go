package registries

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"weft.dev/weft/internal/testenv"
)

// BenchmarkKubernetesEndpointChurn: a real kube-apiserver with 100
// Services × 10 Pods (1,000 endpoints, one EndpointSlice per Service),
// `weft serve --kubeconfig` and the sidecar fleet; each iteration replaces
// one pod, as a rolling update does:
//
//  1. a new Pod is created and reported running and ready at a new
//     address (the test plays the kubelet);
//  2. t0: the Service's EndpointSlice is updated once, the old pod's
//     address replaced by the new one (the test plays the EndpointSlice
//     controller) — the time to every sidecar's EDS ACK is measured from
//     here;
//  3. after the ACK, the old Pod is deleted (written just before the
//     next change's new Pod).
//
// Only the slice update changes endpoints: a Pod no slice names yet, or no
// longer names, changes nothing a proxy sees, so the pod writes happen
// before t0 (and churnSettle before it, outside the timer) and the
// measurement is of the one registry change that moves an endpoint.
// (Deleting the old Pod before the slice update would itself remove its
// endpoint — an endpoint whose targetRef Pod is unknown is skipped, as
// Istio does — and be a second, separate push.) pod-eds-pushes counts EDS
// versions that changed while no slice was written: it must stay 0.
//
// The changes are paced one every churnInterval at most — 100 per minute,
// 10% of the 1,000 pods, so -benchtime 100x is about a minute of that
// churn; changes/min says what was achieved (less when pod writes +
// churnSettle + the ACK take longer than churnInterval). The pods'
// addresses are 10.x.y.z and never contacted: no network namespaces are
// needed.
func BenchmarkKubernetesEndpointChurn(b *testing.B) {
	bin := binaries(b)
	env := testenv.KubeAPIServer(b, testenv.WithIstioCRDs())
	c := env.Client(b)
	ctx := b.Context()
	const ns, services, perService = "churn", 100, 10
	for _, n := range []string{ns, "weft-system"} { // weft-system: the status writers' Lease
		if _, err := c.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	addr := func(s, i int) string { return fmt.Sprintf("10.%d.%d.%d", 100+s/250, s%250, i%250+1) }
	podName := func(s, i int) string { return fmt.Sprintf("svc%d-%d", s, i) }

	// The initial state, written by a few workers in parallel (the client
	// is limited to 200 requests/s: ~11 s for 2,200 writes).
	err := parallel(8, services, func(s int) error {
		svc := fmt.Sprintf("svc%d", s)
		_, err := c.CoreV1().Services(ns).Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: svc, Namespace: ns},
			Spec: corev1.ServiceSpec{Selector: map[string]string{"app": svc}, Ports: []corev1.ServicePort{{
				Name: "http", Port: 8080, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP,
			}}},
		}, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		var eps []churnEndpoint
		for i := range perService {
			if err := churnPod(ctx, c, ns, podName(s, i), svc, addr(s, i)); err != nil {
				return err
			}
			eps = append(eps, churnEndpoint{podName(s, i), addr(s, i)})
		}
		_, err = c.DiscoveryV1().EndpointSlices(ns).Create(ctx, churnSlice(ns, svc, eps), metav1.CreateOptions{})
		return err
	})
	if err != nil {
		b.Fatal(err)
	}

	cp := serveOn(b, bin, "127.0.0.1", "--kubeconfig", env.Kubeconfig)
	sidecarFleet(b, bin, cp, churnSidecars)
	quiesce(b, cp) // every sidecar has every service's endpoints before the clock starts

	// The endpoints of each service, as its slice lists them now.
	current := make([][]churnEndpoint, services)
	next := make([]int, services)
	for s := range services {
		for i := range perService {
			current[s] = append(current[s], churnEndpoint{podName(s, i), addr(s, i)})
		}
		next[s] = perService
	}
	m := newChurnMeter(b, cp)
	pace := newPacer(churnInterval)
	var gone string // the pod the last change replaced
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s := i % services
		svc := fmt.Sprintf("svc%d", s)
		slot := next[s] % perService
		old := current[s][slot]
		neu := churnEndpoint{podName(s, next[s]), addr(s, next[s])}
		next[s]++

		// The pod writes, then a quiet moment for the push rounds they
		// cause (Pods are workloads too: every proxy is regenerated, and
		// nothing is sent) to end before t0.
		b.StopTimer()
		if err := churnPod(ctx, c, ns, neu.pod, svc, neu.ip); err != nil {
			b.Fatal(err)
		}
		deletePod(b, c, ns, gone)
		gone = old.pod
		time.Sleep(churnSettle)
		pace.wait()
		m.settled() // nothing changed EDS since the last ACK: pods alone do not
		b.StartTimer()

		current[s][slot] = neu
		sl, err := c.DiscoveryV1().EndpointSlices(ns).Get(ctx, svc+"-slice", metav1.GetOptions{})
		if err != nil {
			b.Fatal(err)
		}
		upd := churnSlice(ns, svc, current[s])
		upd.ResourceVersion = sl.ResourceVersion
		t0 := time.Now()
		if _, err := c.DiscoveryV1().EndpointSlices(ns).Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
			b.Fatal(err)
		}
		m.waitAcked(t0)
	}
	b.StopTimer()
	deletePod(b, c, ns, gone) // its (absent) effect on EDS is counted too
	time.Sleep(churnSettle)
	m.settled()
	m.report()
}

// churnSettle is how long the pod writes before a change are given to
// reach the proxies if they were to change anything: the registry's
// debounce (100 ms), the control plane's (20 ms) and a push round.
const churnSettle = 250 * time.Millisecond

// deletePod deletes a Pod at once (no kubelet runs to finish it); "" is
// none.
func deletePod(b *testing.B, c kubernetes.Interface, ns, name string) {
	if name == "" {
		return
	}
	if err := c.CoreV1().Pods(ns).Delete(b.Context(), name, metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))}); err != nil {
		b.Fatal(err)
	}
}

type churnEndpoint struct{ pod, ip string }

// churnPod creates a Pod for svc and reports it running and ready at ip.
func churnPod(ctx context.Context, c kubernetes.Interface, ns, name, svc, ip string) error {
	p, err := c.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": svc, "version": "v1"}},
		Spec: corev1.PodSpec{ServiceAccountName: "default", Containers: []corev1.Container{{
			Name: "app", Image: "app", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
		}}},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create pod %s/%s: %w", ns, name, err)
	}
	p.Status = corev1.PodStatus{
		Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
	}
	if _, err := c.CoreV1().Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("pod %s/%s status: %w", ns, name, err)
	}
	return nil
}

// churnSlice is a Service's one EndpointSlice with eps, all ready.
func churnSlice(ns, svc string, eps []churnEndpoint) *discoveryv1.EndpointSlice {
	port := int32(8080)
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: svc + "-slice", Namespace: ns, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("http"), Port: &port, Protocol: ptr(corev1.ProtocolTCP)}},
	}
	for _, e := range eps {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{e.ip},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr(true), Serving: ptr(true), Terminating: ptr(false)},
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: e.pod},
		})
	}
	return s
}

// parallel runs f(0..n-1) on workers goroutines and returns the first
// error.
func parallel(workers, n int, f func(int) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		jobs  = make(chan int)
	)
	for range workers {
		wg.Go(func() {
			for j := range jobs {
				if err := f(j); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		})
	}
	for j := range n {
		jobs <- j
	}
	close(jobs)
	wg.Wait()
	return first
}
