package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"weft.dev/weft/internal/localmesh"
)

const breakerRule = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: slow, namespace: default}
spec:
  host: slow
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 1}
      http: {http1MaxPendingRequests: 1}
`

// clusterDump returns the named cluster from w's /config_dump, or nil.
func clusterDump(t *testing.T, w *localmesh.Workload, name string) map[string]any {
	t.Helper()
	var dump struct{ Clusters, Endpoints []map[string]any }
	if err := json.Unmarshal([]byte(adminGet(t, w, "/config_dump")), &dump); err != nil {
		t.Fatalf("decoding /config_dump: %v", err)
	}
	for _, c := range dump.Clusters {
		if c["name"] == name {
			return c
		}
	}
	return nil
}

// TestCircuitBreakerOverflow: with maxConnections 1 and
// http1MaxPendingRequests 1, 20 concurrent slow requests: the backend never
// has more than one in flight, one more waits, and the overflow is answered
// 503 with response flag UO at once, and counted.
func TestCircuitBreakerOverflow(t *testing.T) {
	m := NewMesh(t)
	backends := m.Service("slow", "HTTP", "v1")
	front := m.Client("frontend")
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 32}}
	const cluster = "outbound|8080||slow.default.svc.cluster.local"
	waitVersion(t, c, front, "slow", nil, "v1")
	m.WriteConfig("slow-rule.yaml", breakerRule)
	Eventually(t, 10*time.Second, "circuit breaker in frontend's config", func() error {
		cb, _ := json.Marshal(clusterDump(t, front, cluster)["circuitBreakers"])
		if string(cb) != `{"thresholds":[{"maxConnections":1,"maxPendingRequests":1,"maxRequests":4294967295,"maxRetries":4294967295,"trackRemaining":true}]}` {
			return fmt.Errorf("circuitBreakers = %s", cb)
		}
		return nil
	})

	// Sample the backend's concurrency while the burst runs.
	var maxInFlight atomic.Int64
	sampleCtx, stopSampling := context.WithCancel(context.Background())
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for sampleCtx.Err() == nil {
			if n := backends[0].Echo.InFlight(); n > maxInFlight.Load() {
				maxInFlight.Store(n)
			}
			time.Sleep(200 * time.Microsecond)
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	type result struct {
		code       int
		overloaded string
		took       time.Duration
		err        error
	}
	const n = 20
	results := make([]result, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+front.Outbound+"/?delay=300ms", nil)
			req.Host = "slow"
			t0 := time.Now()
			resp, err := c.Do(req)
			if err != nil {
				results[i] = result{err: err}
				return
			}
			resp.Body.Close()
			results[i] = result{code: resp.StatusCode, overloaded: resp.Header.Get("X-Envoy-Overloaded"), took: time.Since(t0)}
		})
	}
	close(start)
	wg.Wait()
	stopSampling()
	<-sampled

	var ok, overflow int
	for i, r := range results {
		switch {
		case r.err != nil:
			t.Fatalf("request %d: %v", i, r.err)
		case r.code == 200:
			ok++
		case r.code == 503:
			overflow++
			if r.overloaded != "true" {
				t.Errorf("request %d: 503 without x-envoy-overloaded", i)
			}
			if r.took > 250*time.Millisecond {
				t.Errorf("request %d: overflow took %v, want an immediate answer (the backend takes 300ms)", i, r.took)
			}
		default:
			t.Errorf("request %d: status %d", i, r.code)
		}
	}
	t.Logf("%d served, %d overflowed, backend max in flight %d", ok, overflow, maxInFlight.Load())
	if got := maxInFlight.Load(); got > 1 {
		t.Errorf("backend saw %d requests at once, want at most maxConnections=1", got)
	}
	if ok < 1 || ok > 2 || overflow != n-ok {
		t.Errorf("served %d, overflowed %d: want 1 or 2 served (one connection, one pending), the rest overflowing", ok, overflow)
	}
	if got, _ := series(t, front, "envoy_cluster_upstream_rq_pending_overflow", map[string]string{"envoy_cluster_name": cluster}); int(got) != overflow {
		t.Errorf("envoy_cluster_upstream_rq_pending_overflow = %v, want %d", got, overflow)
	}
	if got, _ := series(t, front, "envoy_cluster_upstream_cx_overflow", map[string]string{"envoy_cluster_name": cluster}); got < float64(overflow) {
		t.Errorf("envoy_cluster_upstream_cx_overflow = %v, want >= %d", got, overflow)
	}
	if got, _ := series(t, front, "istio_requests_total", map[string]string{"reporter": "source", "response_code": "503", "response_flags": "UO"}); int(got) != overflow {
		t.Errorf("istio_requests_total{response_flags=UO} = %v, want %d", got, overflow)
	}
	// The limits released everything: a request now goes straight through.
	if code, _, err := Get(ctx, c, front, "slow", "/", nil); err != nil || code != 200 {
		t.Fatalf("after the burst: %d %v", code, err)
	}
}
