package e2e

import (
	"context"
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

// TestGatewayAPIMeshRouteRetry: a rule's retry (attempts 3, codes 503 and
// 429) makes the sidecar try a request the backends answer 429 four
// times, and a route with attempts 0 only once, where the mesh's default
// policy would not retry 429 at all.
func TestGatewayAPIMeshRouteRetry(t *testing.T) {
	m := NewMesh(t)
	backends := m.Service("backend", "HTTP", "v1", "v1")
	front := m.Client("frontend")
	c := newClient()
	m.WriteConfig("backend-route.yaml", `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: backend, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: backend}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /once}}]
    backendRefs: [{name: backend, port: 8080}]
    retry: {attempts: 0}
  - backendRefs: [{name: backend, port: 8080}]
    retry: {attempts: 3, codes: [503, 429]}
`)
	waitDump(t, front, "default.backend.1.0") // the route's second rule is in force
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const n = 10
	for _, tc := range []struct {
		path     string
		attempts uint64
	}{{"/", 4}, {"/once", 1}} {
		before := totalRequests(backends)
		for i := range n {
			code, _, err := Get(ctx, c, front, "backend", tc.path, map[string]string{"x-echo-status": "429"})
			if err != nil || code != 429 {
				t.Fatalf("%s request %d: code %d err %v, want the upstream's 429", tc.path, i, code, err)
			}
		}
		if got := totalRequests(backends) - before; got != n*tc.attempts {
			t.Errorf("%s: backends saw %d attempts for %d requests, want %d", tc.path, got, n, n*tc.attempts)
		}
	}
}

// TestGatewayAPIMeshRouteCORS: a route's CORS filter is answered by the
// sidecar: a preflight from an origin its wildcard allows gets the CORS
// headers without reaching the backend; one from another origin gets
// none (and goes on to the backend, as Istio's translation says).
func TestGatewayAPIMeshRouteCORS(t *testing.T) {
	m := NewMesh(t)
	m.Service("web", "HTTP", "v1")
	front := m.Client("frontend")
	c := newClient()
	m.WriteConfig("web-route.yaml", `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules:
  - backendRefs: [{name: web, port: 8080}]
    filters:
    - type: CORS
      cors:
        allowOrigins: ["https://*.trusted.example"]
        allowMethods: [GET, POST]
        allowHeaders: [x-token]
        maxAge: 600
`)
	waitDump(t, front, "default.web.0.0")
	preflight := func(origin string) map[string]string {
		return map[string]string{"Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-token"}
	}
	r := send(t, c, front, "OPTIONS", "web", "/", preflight("https://app.trusted.example"))
	for k, v := range map[string]string{"Access-Control-Allow-Origin": "https://app.trusted.example",
		"Access-Control-Allow-Methods": "GET,POST", "Access-Control-Allow-Headers": "x-token", "Access-Control-Max-Age": "600"} {
		if got := r.header.Get(k); got != v {
			t.Errorf("allowed origin: %s = %q, want %q", k, got, v)
		}
	}
	r = send(t, c, front, "OPTIONS", "web", "/", preflight("https://evil.example"))
	if v := r.header.Get("Access-Control-Allow-Origin"); v != "" {
		t.Errorf("another origin: Access-Control-Allow-Origin = %q, want none", v)
	}
}

// TestGatewayAPIServiceEntryRoute: Istio's extension of the mesh routes
// to ServiceEntries: an HTTPRoute attached to a ServiceEntry routes the
// sidecars' requests for its host, here to a backend named by a
// Hostname backendRef (group networking.istio.io).
func TestGatewayAPIServiceEntryRoute(t *testing.T) {
	m := NewMesh(t)
	m.Service("backend", "HTTP", "v1")
	m.Service("backend-canary", "HTTP", "v2")
	front := m.Client("frontend")
	c := newClient()
	m.WriteConfig("legacy.yaml", `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy, namespace: default}
spec:
  hosts: [legacy.example.com]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: backend}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: legacy, namespace: default}
spec:
  parentRefs: [{group: networking.istio.io, kind: ServiceEntry, name: legacy}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /canary}}]
    backendRefs: [{group: networking.istio.io, kind: Hostname, name: backend-canary.default.svc.cluster.local, port: 8080}]
  - backendRefs: [{group: networking.istio.io, kind: Hostname, name: legacy.example.com, port: 8080}]
`)
	waitDump(t, front, "default.legacy.1.0")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for path, want := range map[string]string{"/canary/x": "v2", "/": "v1"} {
		for i := range 20 {
			code, r, err := Get(ctx, c, front, "legacy.example.com:8080", path, nil)
			if err != nil || code != 200 || byVersion(r) != want {
				t.Fatalf("%s request %d: code %d err %v version %q, want %s", path, i, code, err, byVersion(r), want)
			}
		}
	}
}
