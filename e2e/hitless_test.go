package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// TestNewSubsetsAreHitless introduces subsets and a weighted route while
// traffic flows. The route to the new subset clusters must not be used
// before their endpoints are there: not one request may fail.
func TestNewSubsetsAreHitless(t *testing.T) {
	for round := 0; round < 3; round++ {
		t.Run(fmt.Sprint("round", round), func(t *testing.T) {
			m := NewMesh(t)
			m.Service("backend", "HTTP", "v1", "v2")
			front := m.Client("frontend")
			c := newClient()
			waitVersion(t, c, front, "backend", nil, "") // default route serving

			tr := StartTraffic(c, front, "backend", 4)
			tr.WaitSent(t, 50)
			m.WriteConfig("backend-routes.yaml", fmt.Sprintf(backendRoutes, 0, 100))
			waitVersion(t, c, front, "backend", nil, "v2")
			tr.Stop(t, "while subsets were introduced")
		})
	}
}

// TestReadyMeansServing starts a sidecar on a mesh whose config is
// already complete: from the moment it reports ready, every request must
// succeed — no 503 while clusters or endpoints are still arriving.
func TestReadyMeansServing(t *testing.T) {
	m := NewMesh(t)
	m.Service("backend", "HTTP", "v1", "v2")
	m.WriteConfig("backend-routes.yaml", fmt.Sprintf(backendRoutes, 50, 50))
	m.WaitLoaded(1, 2) // the control plane has the config before the sidecars start
	c := newClient()
	for round := 0; round < 5; round++ {
		front := m.Client(fmt.Sprint("frontend-", round))
		Eventually(t, 10*time.Second, "sidecar ready", func() error {
			if !front.Proxy.Ready() {
				return fmt.Errorf("not ready")
			}
			return nil
		})
		got := map[string]int{}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		for i := 0; i < 200; i++ {
			code, r, err := Get(ctx, c, front, "backend", "/", map[string]string{"x-canary": fmt.Sprint(i%2 == 0)})
			if err != nil || code != 200 {
				cancel()
				t.Fatalf("round %d: request %d after ready: code %d err %v (answers so far %v)", round, i, code, err, got)
			}
			got[r.Version]++
		}
		cancel()
	}
}

// TestStartDuringConfigChange starts a sidecar while its services and
// routes are still arriving at the control plane. Whatever config it
// starts on, once ready it must never answer 503: a route is used only
// with its clusters, and a cluster only with its endpoints.
func TestStartDuringConfigChange(t *testing.T) {
	for round := 0; round < 4; round++ {
		t.Run(fmt.Sprint("round", round), func(t *testing.T) {
			m := NewMesh(t)
			m.Service("backend", "HTTP", "v1", "v2")
			m.WriteConfig("backend-routes.yaml", fmt.Sprintf(backendRoutes, 50, 50))
			front := m.Client("frontend")
			c := newClient()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			codes := map[int]int{}
			streak := 0
			for i := 0; i < 5000 && streak < 50; i++ {
				if !front.Proxy.Ready() {
					time.Sleep(time.Millisecond)
					continue
				}
				code, r, err := Get(ctx, c, front, "backend", "/", map[string]string{"x-canary": "true"})
				if err != nil {
					t.Fatalf("request after ready: %v", err)
				}
				codes[code]++
				if code == 200 && r.Version == "v2" {
					streak++
				} else {
					streak = 0
				}
			}
			if streak < 50 {
				t.Fatalf("canary routing never settled: %v", codes)
			}
			for code, n := range codes {
				if code != 200 && code != 404 { // 404: the route was not there yet — a config state, not a failure to forward
					_, seen := series(t, front, "istio_requests_total", map[string]string{"response_code": fmt.Sprint(code)})
					t.Errorf("%d answers with status %d after ready (all: %v); series: %v", n, code, codes, seen)
				}
			}
		})
	}
}

// TestRemovingSubsetIsHitless drops a subset and every route to it in one
// edit while traffic flows. Clusters arrive before routes on the wire, so a
// proxy that applied the new clusters with the old routes would send
// requests to a cluster that no longer exists (503 NC).
func TestRemovingSubsetIsHitless(t *testing.T) {
	for round := 0; round < 3; round++ {
		t.Run(fmt.Sprint("round", round), func(t *testing.T) {
			m := NewMesh(t)
			m.Service("backend", "HTTP", "v1", "v2")
			m.WriteConfig("backend-routes.yaml", fmt.Sprintf(backendRoutes, 50, 50))
			front := m.Client("frontend")
			c := newClient()
			waitVersion(t, c, front, "backend", map[string]string{"x-canary": "true"}, "v2")

			tr := StartTraffic(c, front, "backend", 4)
			tr.WaitSent(t, 100)
			m.WriteConfig("backend-routes.yaml", v1Only)
			waitVersion(t, c, front, "backend", map[string]string{"x-canary": "true"}, "v1")
			tr.WaitSent(t, 100)
			tr.Stop(t, "while subset v2 was removed")
		})
	}
}

// v1Only is backendRoutes after the canary was abandoned: subset v2 and
// every route to it are gone.
const v1Only = `apiVersion: networking.istio.io/v1
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
  - name: all-v1
    route:
    - destination: {host: backend, subset: v1}
`
