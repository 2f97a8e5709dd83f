// Package e2e proves Weft's user-visible behaviour end to end: a real
// control plane, real weft-proxy sidecars and echo workloads on loopback,
// real HTTP/1.1, HTTP/2 and gRPC requests, and assertions on what came out.
package e2e

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"testing"
	"time"

	"weft.dev/weft/internal/localmesh"
)

const backendRoutes = `apiVersion: networking.istio.io/v1
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
  - name: canary-header
    match:
    - headers:
        x-canary: {exact: "true"}
    route:
    - destination: {host: backend, subset: v2}
  - name: weighted
    route:
    - destination: {host: backend, subset: v1}
      weight: %d
    - destination: {host: backend, subset: v2}
      weight: %d
`

// canaryMesh is the gray-release setup of examples/canary: a frontend
// client and a backend with v1 and v2, split by weight and header.
func canaryMesh(t *testing.T, w1, w2 int) (*Mesh, *http.Client) {
	t.Helper()
	m := NewMesh(t)
	m.Service("backend", "HTTP", "v1", "v2")
	m.WriteConfig("backend-routes.yaml", fmt.Sprintf(backendRoutes, w1, w2))
	return m, newClient()
}

func TestHeaderRoutesToCanary(t *testing.T) {
	m, c := canaryMesh(t, 100, 0)
	front := m.Client("frontend")
	waitVersion(t, c, front, "backend", nil, "v1")

	got := Tally(t, c, front, "backend", map[string]string{"x-canary": "true"}, 200, byVersion)
	if got["v2"] != 200 {
		t.Fatalf("x-canary: true: want all 200 requests on v2, got %v", got)
	}
	got = Tally(t, c, front, "backend", map[string]string{"x-canary": "false"}, 200, byVersion)
	if got["v1"] != 200 {
		t.Fatalf("x-canary: false: want all 200 requests on v1 (weight 100/0), got %v", got)
	}
}

func TestWeightedSplit(t *testing.T) {
	m, c := canaryMesh(t, 90, 10)
	front := m.Client("frontend")
	waitVersion(t, c, front, "backend", map[string]string{"x-canary": "true"}, "v2") // the VirtualService is in force

	const n = 2000
	got := Tally(t, c, front, "backend", nil, n, byVersion)
	share := 100 * float64(got["v1"]) / n
	if math.Abs(share-90) > 3 || got["v1"]+got["v2"] != n {
		t.Fatalf("90/10 split over %d requests: got %v (v1 %.1f%%), want 90%% ± 3", n, got, share)
	}
	t.Logf("90/10 split: %v (v1 %.1f%%)", got, share)
}

// TestLiveWeightChange moves all traffic to v2 while requests keep flowing
// on 8 connections, and requires that not one of them fails.
func TestLiveWeightChange(t *testing.T) {
	m, c := canaryMesh(t, 90, 10)
	front := m.Client("frontend")
	waitVersion(t, c, front, "backend", map[string]string{"x-canary": "true"}, "v2") // the VirtualService is in force

	tr := StartTraffic(c, front, "backend", 8)
	// Let traffic flow on the old weights, change them, and wait until the
	// new split is fully in force while traffic continues.
	tr.WaitSent(t, 200)
	m.WriteConfig("backend-routes.yaml", fmt.Sprintf(backendRoutes, 0, 100))
	changed := time.Now()
	waitVersion(t, c, front, "backend", nil, "v2")
	t.Logf("0/100 in force %v after the edit", time.Since(changed).Round(time.Millisecond))
	tr.WaitSent(t, 200)
	tr.Stop(t, "during the weight change")
	got := Tally(t, c, front, "backend", nil, 200, byVersion)
	if got["v2"] != 200 {
		t.Fatalf("after 0/100: want all requests on v2, got %v", got)
	}
}

// waitVersion waits until requests to host route to version want (any
// successful answer when want is empty).
func waitVersion(t *testing.T, c *http.Client, front *localmesh.Workload, host string, hdr map[string]string, want string) {
	t.Helper()
	Eventually(t, 30*time.Second, "routing to "+host+" "+want, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		// A streak of answers from the wanted version, so a weighted split
		// that still sends some elsewhere does not count.
		for i := 0; i < 20; i++ {
			code, r, err := Get(ctx, c, front, host, "/", hdr)
			if err != nil {
				return err
			}
			if code != 200 {
				return fmt.Errorf("status %d", code)
			}
			if want != "" && r.Version != want {
				return fmt.Errorf("answered by %s %s", r.Name, r.Version)
			}
			if want == "" {
				return nil
			}
		}
		return nil
	})
}
