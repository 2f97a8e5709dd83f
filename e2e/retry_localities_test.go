package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"weft.dev/weft/internal/localmesh"
)

// startFailingBackend is an endpoint without a sidecar that answers every
// request with 503, counting them.
func startFailingBackend(t *testing.T, hits *atomic.Int64) Backend {
	t.Helper()
	ip := nextIP()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Error(w, "always failing", http.StatusServiceUnavailable)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return Backend{Name: fmt.Sprintf("failing-%d", ln.Addr().(*net.TCPAddr).Port), Version: "v1", IP: ip,
		Port: uint32(ln.Addr().(*net.TCPAddr).Port), Plain: true}
}

const retryLocalitiesDR = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: zonal, namespace: default}
spec:
  host: zonal
  trafficPolicy:
    loadBalancer:
      localityLbSetting: {enabled: true}
    outlierDetection:
      consecutive5xxErrors: 0
`

func retryLocalitiesVS(remote bool) string {
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: zonal, namespace: default}
spec:
  hosts: [zonal]
  http:
  - route: [{destination: {host: zonal}}]
    retries: {attempts: 2, retryOn: 5xx, retryRemoteLocalities: %t}
`, remote)
}

// TestRetryRemoteLocalities: a client in r1/z1; the three endpoints of its
// zone (priority 0) answer 503 to everything, the one in r1/z2 (priority
// 1) is healthy. Outlier detection is configured (Istio applies locality
// priorities only then) but never ejects (consecutive5xxErrors: 0), so
// only the retries can reach z2. With retryRemoteLocalities (Envoy's
// previous_priorities, update_frequency 2) the third attempt leaves z1's
// priority out and every request succeeds from z2; without it all three
// attempts stay in z1 and every request fails.
func TestRetryRemoteLocalities(t *testing.T) {
	m := NewMesh(t)
	remote := m.Service("zonal", "HTTP", "v1")[0]
	var badHits atomic.Int64
	bs := []Backend{startFailingBackend(t, &badHits), startFailingBackend(t, &badHits), startFailingBackend(t, &badHits), backendOf(remote)}
	m.WriteConfig("zonal-services.yaml", workloadEntriesYAML("zonal", 8080, bs, []string{"r1/z1", "r1/z1", "r1/z1", "r1/z2"}))
	m.WriteConfig("zonal-dr.yaml", retryLocalitiesDR)
	m.WriteConfig("zonal-vs.yaml", retryLocalitiesVS(true))
	client := m.Workload(localmesh.WorkloadOptions{Name: "client", Labels: map[string]string{"app": "client", "version": "v1"}, Locality: "r1/z1"})
	c := newClient()
	const cluster = "outbound|8080||zonal.default.svc.cluster.local"

	// run sends n requests and counts the answers from z2 and the failures.
	run := func(n int) (fromRemote, failed int) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		for range n {
			code, r, err := Get(ctx, c, client, "zonal", "/", nil)
			switch {
			case err != nil || code != 200:
				failed++
			case r.Name == remote.Opts.Name:
				fromRemote++
			}
		}
		return fromRemote, failed
	}
	ready := func(wantPriority bool) func() error {
		return func() error {
			dump := adminGet(t, client, "/config_dump")
			if got := strings.Contains(dump, "previous_priorities"); got != wantPriority {
				return fmt.Errorf("retry_priority in the config dump: %t, want %t", got, wantPriority)
			}
			for _, b := range bs {
				if h, _ := endpointHealth(t, client, cluster, b.IP); h == "" {
					return fmt.Errorf("endpoint %s not in the assignment yet", b.IP)
				}
			}
			return nil
		}
	}

	Eventually(t, 15*time.Second, "retry_priority and four endpoints in the client's config", ready(true))
	const n = 200
	badHits.Store(0)
	fromRemote, failed := run(n)
	t.Logf("retryRemoteLocalities: %d of %d answered by z2, %d failed, z1 saw %d attempts", fromRemote, n, failed, badHits.Load())
	if fromRemote != n || failed != 0 {
		t.Errorf("retryRemoteLocalities: %d of %d answered by z2 and %d failed; want all from z2", fromRemote, n, failed)
	}
	if got := badHits.Load(); got != 2*n {
		t.Errorf("retryRemoteLocalities: z1 saw %d attempts, want %d (two per request, as update_frequency 2 says)", got, 2*n)
	}

	m.WriteConfig("zonal-vs.yaml", retryLocalitiesVS(false))
	Eventually(t, 15*time.Second, "retry_priority gone from the client's config", ready(false))
	badHits.Store(0)
	fromRemote, failed = run(n)
	t.Logf("without: %d of %d answered by z2, %d failed, z1 saw %d attempts", fromRemote, n, failed, badHits.Load())
	if fromRemote != 0 || failed != n {
		t.Errorf("without retryRemoteLocalities: %d of %d answered by z2 and %d failed; want all to fail in z1", fromRemote, n, failed)
	}
	if got := badHits.Load(); got != 3*n {
		t.Errorf("without retryRemoteLocalities: z1 saw %d attempts, want %d", got, 3*n)
	}
}
