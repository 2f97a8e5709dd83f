package kube

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"sort"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"weft.dev/weft/internal/testenv"
)

// BenchmarkKubernetesPodReplace measures, against a real API server with
// 1,002 pods behind 334 services, how long a pod replacement (a new Pod,
// its slice updated, the old Pod deleted — what a rolling update does)
// takes from the EndpointSlice write to a registry snapshot that has the
// new endpoint: informer delivery + the debounce (DefaultDebounce) + the
// incremental rebuild. Only that wait is timed; it also reports the
// median and worst in ms, and the registry's heap after its first sync.
//
//	go test -run XXX -bench BenchmarkKubernetesPodReplace -benchtime 50x ./internal/registry/kube
func BenchmarkKubernetesPodReplace(b *testing.B) {
	const services, podsPer = 334, 3
	env := testenv.KubeAPIServer(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	client := env.Client(b)
	must := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	_, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bench"}}, metav1.CreateOptions{})
	must(err)
	_, err = client.CoreV1().Nodes().Create(ctx, node("n1", "r", "z"), metav1.CreateOptions{})
	must(err)
	mkPod := func(name, ip, app string) {
		p := kpod("bench", name, ip, "n1", true, map[string]string{"app": app})
		spec := p.Spec
		spec.Containers[0].Name, spec.Containers[0].Image = "app", "example.invalid/app:1"
		created, err := client.CoreV1().Pods("bench").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: p.Labels}, Spec: spec}, metav1.CreateOptions{})
		must(err)
		created.Status = p.Status
		_, err = client.CoreV1().Pods("bench").UpdateStatus(ctx, created, metav1.UpdateOptions{})
		must(err)
	}
	ports := []discoveryv1.EndpointPort{eport("http", 8080)}
	ipOf := func(svc, gen int) string { return fmt.Sprintf("10.%d.%d.%d", 77+svc/250, svc%250, gen%250+1) }
	// live[s] are the generations of service s's pods.
	live := make([][]int, services)
	slice := func(s int) *discoveryv1.EndpointSlice {
		name := fmt.Sprintf("svc-%d", s)
		var eps []sliceEP
		for _, g := range live[s] {
			eps = append(eps, sliceEP{ip: ipOf(s, g), pod: fmt.Sprintf("%s-%d", name, g), ready: yes})
		}
		return kslice("bench", name, name, ports, eps...)
	}
	for s := range services {
		name := fmt.Sprintf("svc-%d", s)
		_, err := client.CoreV1().Services("bench").Create(ctx, ksvc("bench", name, corev1.ServicePort{Name: "http", Port: 80}), metav1.CreateOptions{})
		must(err)
		for g := range podsPer {
			mkPod(fmt.Sprintf("%s-%d", name, g), ipOf(s, g), name)
			live[s] = append(live[s], g)
		}
		_, err = client.DiscoveryV1().EndpointSlices("bench").Create(ctx, slice(s), metav1.CreateOptions{})
		must(err)
	}

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	r, err := New(Options{Config: env.RESTConfig()})
	must(err)
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); r.Run(rctx) }()
	defer func() { stop(); <-done }()
	waitFor := func(host, addr string) {
		deadline := time.NewTimer(30 * time.Second)
		defer deadline.Stop()
		for {
			for _, e := range r.Snapshot().Endpoints(host, 80) {
				if e.Address == addr {
					return
				}
			}
			select {
			case <-r.Changed():
			case <-deadline.C:
				b.Fatalf("%s never reached the registry", addr)
			}
		}
	}
	waitFor("svc-0.bench.svc.cluster.local", ipOf(0, 0))
	var after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&after)
	heapMB := float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / (1 << 20)
	for len(r.Changed()) > 0 {
		<-r.Changed()
	}

	var lat []time.Duration
	i := 0
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		s := (i * 7) % services
		name := fmt.Sprintf("svc-%d", s)
		old := live[s][0]
		gen := live[s][len(live[s])-1] + 1
		mkPod(fmt.Sprintf("%s-%d", name, gen), ipOf(s, gen), name)
		live[s] = append(live[s][1:], gen)
		sl := slice(s)
		cur, err := client.DiscoveryV1().EndpointSlices("bench").Get(ctx, name, metav1.GetOptions{})
		must(err)
		sl.ResourceVersion = cur.ResourceVersion
		b.StartTimer()
		start := time.Now()
		_, err = client.DiscoveryV1().EndpointSlices("bench").Update(ctx, sl, metav1.UpdateOptions{})
		must(err)
		waitFor(name+".bench.svc.cluster.local", ipOf(s, gen))
		lat = append(lat, time.Since(start))
		b.StopTimer()
		must(client.CoreV1().Pods("bench").Delete(ctx, fmt.Sprintf("%s-%d", name, old), *metav1.NewDeleteOptions(0)))
		i++
		b.StartTimer()
	}
	b.StopTimer()
	if len(lat) > 0 {
		sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(slices.Max(lat).Microseconds())/1000, "max-ms")
	}
	b.ReportMetric(float64(r.Status().Workloads), "pods")
	// The registry's heap after its first sync: informer caches (slimmed),
	// conversions and the snapshot.
	b.ReportMetric(heapMB, "heap-MB")
}
