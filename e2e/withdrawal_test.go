package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"weft.dev/weft/internal/localmesh"
)

// canaryPresent is the canary release in one file: the canary's
// WorkloadEntry, the DestinationRule with both subsets and the weighted
// route. canaryWithdrawn is the same file after the canary was abandoned:
// one write removes the workload, its subset and its route.
const (
	canaryPresent = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: backend, namespace: default}
spec:
  host: backend
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend, namespace: default}
spec:
  hosts: [backend]
  http:
  - name: weighted
    route:
    - destination: {host: backend, subset: v1}
      weight: 50
    - destination: {host: backend, subset: v2}
      weight: 50
---
`
	canaryWithdrawn = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: backend, namespace: default}
spec:
  host: backend
  subsets:
  - {name: v1, labels: {version: v1}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend, namespace: default}
spec:
  hosts: [backend]
  http:
  - name: stable
    route:
    - destination: {host: backend, subset: v1}
`
)

// TestConfigSafetyCanaryWithdrawal withdraws a canary — its WorkloadEntry,
// its subset and its route, in one write of one file — and re-adds it, ten
// times, under steady traffic of about 200 requests a second through a
// client sidecar. The canary's sidecar learns of the withdrawal a little
// before the client's does; its inbound listener must drain (keep serving,
// with Connection: close) rather than close, so not one request fails. Some
// rounds re-add the canary while its listener drains (the listener takes
// its socket back), the others only once the drain is over.
func TestConfigSafetyCanaryWithdrawal(t *testing.T) {
	const (
		rounds = 10
		drain  = 2 * time.Second // the canary sidecar's listener drain
	)
	m := NewMesh(t)
	m.Service("backend", "HTTP", "v1")
	port, err := localmesh.FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	canary := Backend{Name: "backend-canary", Version: "v2", IP: nextIP(), Port: uint32(port)}
	m.Workload(localmesh.WorkloadOptions{
		Name: canary.Name, IPs: []string{canary.IP}, WorkloadPort: canary.Port,
		Labels:        map[string]string{"app": "backend", "version": "v2"},
		ListenerDrain: drain,
	})
	canaryAddr := net.JoinHostPort(canary.IP, fmt.Sprint(canary.Port))
	present := canaryPresent + canary.WorkloadEntryYAML("backend")
	const v2Cluster = "outbound|8080|v2|backend.default.svc.cluster.local"

	front := m.Client("frontend")
	c := newClient()
	m.WriteConfig("backend-canary.yaml", canaryWithdrawn)
	waitVersion(t, c, front, "backend", nil, "v1")

	tr := startPacedTraffic(c, front, "backend", 4, 20*time.Millisecond) // 4 × 50 rps
	defer tr.stop()
	for round := 0; round < rounds; round++ {
		m.WriteConfig("backend-canary.yaml", present)
		v2 := tr.count("v2")
		Eventually(t, 10*time.Second, fmt.Sprintf("round %d: traffic reaching the canary", round), func() error {
			if n := tr.count("v2") - v2; n < 50 {
				return fmt.Errorf("%d answers from v2", n)
			}
			return nil
		})

		m.WriteConfig("backend-canary.yaml", canaryWithdrawn)
		Eventually(t, 10*time.Second, fmt.Sprintf("round %d: the client dropping the canary", round), func() error {
			if clusterDump(t, front, v2Cluster) != nil {
				return fmt.Errorf("%s still in the client's config", v2Cluster)
			}
			return nil
		})
		if round%3 == 2 {
			// Let the drain run out: the canary's listener closes.
			Eventually(t, drain+10*time.Second, fmt.Sprintf("round %d: the canary's listener closing", round), func() error {
				conn, err := net.DialTimeout("tcp", canaryAddr, time.Second)
				if err != nil {
					return nil
				}
				conn.Close()
				return fmt.Errorf("%s still accepts", canaryAddr)
			})
		}
		// Traffic keeps flowing on v1 alone for a moment.
		v1 := tr.count("v1")
		Eventually(t, 10*time.Second, fmt.Sprintf("round %d: traffic on v1", round), func() error {
			if n := tr.count("v1") - v1; n < 20 {
				return fmt.Errorf("%d answers from v1", n)
			}
			return nil
		})
	}
	tr.stop()
	sent, failed, first := tr.result()
	t.Logf("%d requests over %d withdrawals: %d on v1, %d on v2, %d failed", sent, rounds, tr.count("v1"), tr.count("v2"), failed)
	if failed != 0 {
		t.Fatalf("%d of %d requests failed while the canary was withdrawn and re-added %d times; first: %s; the client's sidecar recorded: %v",
			failed, sent, rounds, first, failureSeries(t, front))
	}
}

// failureSeries lists w's istio_requests_total series that are not 200s:
// "<code> <flags> <destination_version>: <count>".
func failureSeries(t *testing.T, w *localmesh.Workload) []string {
	t.Helper()
	_, all := series(t, w, "istio_requests_total", nil)
	var out []string
	for _, ls := range all {
		if ls["response_code"] == "200" {
			continue
		}
		n, _ := series(t, w, "istio_requests_total", ls)
		out = append(out, fmt.Sprintf("%s %s %s: %v", ls["response_code"], ls["response_flags"], ls["destination_version"], n))
	}
	return out
}

// pacedTraffic sends GET / to one host through a workload's sidecar at a
// fixed rate per worker, counting answers by version and failures. Each
// worker sends at most 20,000 requests and stops within 60 s anyway.
type pacedTraffic struct {
	sent, failed atomic.Int64
	stopped      atomic.Bool // checked between requests: none is cut off
	mu           sync.Mutex
	versions     map[string]int64
	first        string
	cancel       context.CancelFunc
	wg           sync.WaitGroup
}

func startPacedTraffic(c *http.Client, w *localmesh.Workload, host string, workers int, every time.Duration) *pacedTraffic {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	tr := &pacedTraffic{versions: map[string]int64{}, cancel: cancel}
	for i := 0; i < workers; i++ {
		tr.wg.Go(func() {
			tick := time.NewTicker(every)
			defer tick.Stop()
			for j := 0; j < 20000 && !tr.stopped.Load(); j++ {
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
				rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
				code, r, err := Get(rctx, c, w, host, "/", nil)
				rcancel()
				tr.sent.Add(1)
				tr.mu.Lock()
				if err != nil || code != 200 {
					tr.failed.Add(1)
					if tr.first == "" {
						tr.first = fmt.Sprintf("code %d err %v", code, err)
					}
				} else {
					tr.versions[r.Version]++
				}
				tr.mu.Unlock()
			}
		})
	}
	return tr
}

func (tr *pacedTraffic) count(version string) int64 {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.versions[version]
}

func (tr *pacedTraffic) stop() { tr.stopped.Store(true); tr.wg.Wait(); tr.cancel() }

func (tr *pacedTraffic) result() (sent, failed int64, first string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.sent.Load(), tr.failed.Load(), strings.TrimSpace(tr.first)
}
