package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"weft.dev/weft/internal/echo"
	"weft.dev/weft/internal/localmesh"
)

const outlierConfig = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: flaky, namespace: default}
spec:
  host: flaky
  trafficPolicy:
    outlierDetection:
      consecutive5xxErrors: 3
      interval: 100ms
      baseEjectionTime: 1s
      maxEjectionPercent: 50
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: flaky, namespace: default}
spec:
  hosts: [flaky]
  http:
  - name: with-retries
    route: [{destination: {host: flaky}}]
    retries: {attempts: 3, retryOn: 5xx}
`

// flakyBackend is an endpoint without a sidecar that fails about half of
// its requests with 503 until healed.
type flakyBackend struct {
	addr     string
	failing  atomic.Bool
	requests atomic.Int64
	srv      *http.Server
}

func startFlakyBackend(t *testing.T, ip string) *flakyBackend {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	b := &flakyBackend{addr: ln.Addr().String()}
	b.failing.Store(true)
	b.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.requests.Add(1)
		if b.failing.Load() && rand.IntN(2) == 0 {
			http.Error(w, "flaky", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(echo.Reply{Name: "flaky-bad", Version: "v1"})
	})}
	go func() { _ = b.srv.Serve(ln) }()
	t.Cleanup(func() { _ = b.srv.Close() })
	return b
}

// addFlakyEndpoint starts a flakyBackend on a fresh address and makes it
// an endpoint of service (a WorkloadEntry, version v1, no sidecar).
func addFlakyEndpoint(t *testing.T, m *Mesh, service string) (*flakyBackend, string) {
	t.Helper()
	ip := nextIP()
	b := startFlakyBackend(t, ip)
	_, port, _ := net.SplitHostPort(b.addr)
	var portN uint32
	fmt.Sscan(port, &portN)
	m.WriteConfig(service+"-bad.yaml", Backend{Name: service + "-bad", Version: "v1", IP: ip, Port: portN, Plain: true}.WorkloadEntryYAML(service))
	return b, ip
}

// endpointHealth returns the health_status /config_dump shows for the
// endpoint at ip in the named assignment, "" when not found.
func endpointHealth(t *testing.T, w *localmesh.Workload, cluster, ip string) (string, map[string]any) {
	t.Helper()
	var dump struct {
		Endpoints []struct {
			ClusterName string `json:"clusterName"`
			Endpoints   []struct {
				LbEndpoints []struct {
					Endpoint struct {
						Address struct {
							SocketAddress struct{ Address string } `json:"socketAddress"`
						}
					}
					HealthStatus string `json:"healthStatus"`
					Metadata     struct {
						FilterMetadata map[string]map[string]any `json:"filterMetadata"`
					}
				} `json:"lbEndpoints"`
			}
		}
	}
	if err := json.Unmarshal([]byte(adminGet(t, w, "/config_dump")), &dump); err != nil {
		t.Fatalf("decoding /config_dump: %v", err)
	}
	for _, cla := range dump.Endpoints {
		if cla.ClusterName != cluster {
			continue
		}
		for _, loc := range cla.Endpoints {
			for _, e := range loc.LbEndpoints {
				if e.Endpoint.Address.SocketAddress.Address == ip {
					h := e.HealthStatus
					if h == "" {
						h = "UNKNOWN"
					}
					return h, e.Metadata.FilterMetadata["envoy.outlier_detection"]
				}
			}
		}
	}
	return "", nil
}

// TestOutlierDetectionEjectsFlakyEndpoint: one of three endpoints fails
// half its requests. With retries and outlier detection at least 99.9% of
// 5,000 requests succeed; the bad endpoint is ejected (metrics and config
// dump show it) and, once it heals, comes back.
func TestOutlierDetectionEjectsFlakyEndpoint(t *testing.T) {
	m := NewMesh(t)
	good := m.Service("flaky", "HTTP", "v1", "v1")
	bad, badIP := addFlakyEndpoint(t, m, "flaky")
	m.WriteConfig("flaky-rules.yaml", outlierConfig)
	front := m.Client("frontend")
	c := newClient()
	const cluster = "outbound|8080||flaky.default.svc.cluster.local"
	Eventually(t, 10*time.Second, "outlier detection, retries and three endpoints in frontend's config", func() error {
		if clusterDump(t, front, cluster)["outlierDetection"] == nil {
			return fmt.Errorf("no outlierDetection on %s", cluster)
		}
		if h, _ := endpointHealth(t, front, cluster, badIP); h == "" {
			return fmt.Errorf("bad endpoint not in the assignment yet")
		}
		if !strings.Contains(adminGet(t, front, "/config_dump"), `"numRetries": 3`) {
			return fmt.Errorf("no retry policy yet")
		}
		return nil
	})

	// 5,000 requests from 8 workers while the main goroutine watches the
	// ejection in the metrics and the config dump.
	const n, workers = 5000, 8
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	var sent, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for sent.Add(1) <= n && ctx.Err() == nil {
				code, _, err := Get(ctx, c, front, "flaky", "/", nil)
				if err != nil || code != 200 {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("code %d err %v", code, err))
				}
			}
		})
	}
	Eventually(t, 60*time.Second, "bad endpoint ejected (metrics and config dump)", func() error {
		if v, _ := series(t, front, "envoy_cluster_outlier_detection_ejections_active", map[string]string{"envoy_cluster_name": cluster}); v != 1 {
			return fmt.Errorf("ejections_active = %v", v)
		}
		if h, od := endpointHealth(t, front, cluster, badIP); h != "UNHEALTHY" || od["ejected"] != true {
			return fmt.Errorf("config dump: bad endpoint %s %v", h, od)
		}
		return nil
	})
	wg.Wait()
	if ctx.Err() != nil {
		t.Fatal("traffic did not finish in time")
	}
	var goodReqs uint64
	for _, w := range good {
		goodReqs += w.Echo.Requests()
	}
	badShare := float64(bad.requests.Load()) / (float64(bad.requests.Load()) + float64(goodReqs))
	t.Logf("%d of %d failed; the bad endpoint took %.1f%% of the attempts", failed.Load(), n, 100*badShare)
	if f := failed.Load(); f*1000 > n {
		t.Fatalf("%d of %d requests failed (want at least 99.9%% success); first: %v", f, n, firstErr.Load())
	}
	if badShare > 0.25 {
		t.Errorf("bad endpoint took %.1f%% of the attempts: ejection should keep it well under a third", 100*badShare)
	}
	if v, _ := series(t, front, "envoy_cluster_outlier_detection_ejections_enforced_consecutive_5xx", map[string]string{"envoy_cluster_name": cluster}); v < 1 {
		t.Errorf("ejections_enforced_consecutive_5xx = %v, want >= 1", v)
	}

	// Healed, it comes back once its ejection time is up.
	bad.failing.Store(false)
	before := bad.requests.Load()
	Eventually(t, 60*time.Second, "healed endpoint back in rotation", func() error {
		for range 30 {
			if code, _, err := Get(ctx, c, front, "flaky", "/", nil); err != nil || code != 200 {
				return fmt.Errorf("request failed after healing: %d %v", code, err)
			}
		}
		if got := bad.requests.Load() - before; got < 10 {
			return fmt.Errorf("healed endpoint got %d requests", got)
		}
		if v, _ := series(t, front, "envoy_cluster_outlier_detection_ejections_active", map[string]string{"envoy_cluster_name": cluster}); v != 0 {
			return fmt.Errorf("ejections_active = %v", v)
		}
		if h, _ := endpointHealth(t, front, cluster, badIP); h == "UNHEALTHY" {
			return fmt.Errorf("config dump still shows it ejected")
		}
		return nil
	})
}

// TestOutlierDetectionFailurePercentage: failurePercentageThreshold
// (Istio 1.32) ejects an endpoint whose failures are interspersed with
// successes — about half its answers are 503, rarely several in a row —
// with consecutive-error detection off, once five endpoints (Envoy's
// minimum) had 50 attempts in an interval.
func TestOutlierDetectionFailurePercentage(t *testing.T) {
	m := NewMesh(t)
	m.Service("fp", "HTTP", "v1", "v1", "v1", "v1")
	_, badIP := addFlakyEndpoint(t, m, "fp")
	m.WriteConfig("fp-rules.yaml", `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: fp, namespace: default}
spec:
  host: fp
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    outlierDetection:
      consecutive5xxErrors: 0
      failurePercentageThreshold: 30
      interval: 2s
      baseEjectionTime: 60s
      maxEjectionPercent: 50
`)
	front := m.Client("frontend")
	c := newClient()
	const cluster = "outbound|8080||fp.default.svc.cluster.local"
	Eventually(t, 10*time.Second, "failure percentage and five endpoints in frontend's config", func() error {
		if !strings.Contains(fmt.Sprint(clusterDump(t, front, cluster)["outlierDetection"]), "failurePercentageThreshold") {
			return fmt.Errorf("no failurePercentageThreshold on %s", cluster)
		}
		if h, _ := endpointHealth(t, front, cluster, badIP); h == "" {
			return fmt.Errorf("bad endpoint not in the assignment yet")
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	var ejected atomic.Bool
	for range 4 {
		wg.Go(func() {
			for i := 0; i < 20000 && !ejected.Load() && ctx.Err() == nil; i++ {
				_, _, _ = Get(ctx, c, front, "fp", "/", nil)
			}
		})
	}
	defer wg.Wait()
	defer ejected.Store(true)
	Eventually(t, 45*time.Second, "bad endpoint ejected by failure percentage", func() error {
		if v, _ := series(t, front, "envoy_cluster_outlier_detection_ejections_active", map[string]string{"envoy_cluster_name": cluster}); v != 1 {
			return fmt.Errorf("ejections_active = %v", v)
		}
		if h, od := endpointHealth(t, front, cluster, badIP); h != "UNHEALTHY" || od["ejected"] != true {
			return fmt.Errorf("config dump: bad endpoint %s %v", h, od)
		}
		return nil
	})
	ejected.Store(true)
	if v, _ := series(t, front, "envoy_cluster_outlier_detection_ejections_enforced_consecutive_5xx", map[string]string{"envoy_cluster_name": cluster}); v != 0 {
		t.Errorf("ejections_enforced_consecutive_5xx = %v: consecutive detection was off", v)
	}
}
