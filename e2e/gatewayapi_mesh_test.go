package e2e

import (
	"fmt"
	"math"
	"testing"
	"time"
)

// meshRoute is Istio's bookinfo gateway-api sample's pattern
// (route-reviews-90-10.yaml): an HTTPRoute attached to a Service (the
// Gateway API for service mesh) splits its traffic between one Service per
// version, by weight, with a header that picks the canary.
const meshRoute = `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backend, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: backend, port: 8080}]
  rules:
  - matches: [{headers: [{name: x-canary, value: "true"}]}]
    backendRefs: [{name: backend-v2, port: 8080}]
  - backendRefs:
    - {name: backend-v1, port: 8080, weight: %d}
    - {name: backend-v2, port: 8080, weight: %d}
`

// TestGatewayAPIMeshRoute: sidecars route a Service's traffic by an
// HTTPRoute attached to it, as by a VirtualService: a header match, a
// 90/10 split over 2,000 requests, and a live weight change under traffic
// that fails no request.
func TestGatewayAPIMeshRoute(t *testing.T) {
	m := NewMesh(t)
	m.Service("backend", "HTTP", "v1")
	m.Service("backend-v1", "HTTP", "v1")
	m.Service("backend-v2", "HTTP", "v2")
	m.WriteConfig("backend-route.yaml", fmt.Sprintf(meshRoute, 90, 10))
	c := newClient()
	front := m.Client("frontend")
	waitVersion(t, c, front, "backend", map[string]string{"x-canary": "true"}, "v2") // the route is in force

	got := Tally(t, c, front, "backend", map[string]string{"x-canary": "true"}, 200, byVersion)
	if got["v2"] != 200 {
		t.Fatalf("x-canary: true: want all 200 requests on v2, got %v", got)
	}
	const n = 2000
	got = Tally(t, c, front, "backend", nil, n, byVersion)
	share := 100 * float64(got["v1"]) / n
	if math.Abs(share-90) > 3 || got["v1"]+got["v2"] != n {
		t.Fatalf("90/10 split over %d requests: got %v (v1 %.1f%%), want 90%% ± 3", n, got, share)
	}
	t.Logf("90/10 split: %v (v1 %.1f%%)", got, share)

	tr := StartTraffic(c, front, "backend", 8)
	tr.WaitSent(t, 200)
	m.WriteConfig("backend-route.yaml", fmt.Sprintf(meshRoute, 0, 100))
	changed := time.Now()
	waitVersion(t, c, front, "backend", nil, "v2")
	t.Logf("0/100 in force %v after the edit", time.Since(changed).Round(time.Millisecond))
	tr.WaitSent(t, 200)
	tr.Stop(t, "during the weight change")
}
