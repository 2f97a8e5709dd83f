package e2e

import (
	"fmt"
	"net/http"
	"testing"
	"time"
)

// localReplyHeadersConfig routes /gone to a subset without endpoints and
// /slow to v1 with a short timeout; both routes set a response header and
// allow one CORS origin.
const localReplyHeadersConfig = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: default}
spec:
  host: web
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v9, labels: {version: v9}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: web
  namespace: default
  # /gone goes to a subset with no endpoints on purpose: without this the
  # traffic-impact guard would hold the route back.
  annotations: {weft.dev/allow-unserved: "true"}
spec:
  hosts: [web]
  http:
  - name: gone
    match: [{uri: {prefix: /gone}}]
    headers:
      response:
        set: {x-route: gone}
    corsPolicy:
      allowOrigins: [{exact: "https://good.example"}]
    route: [{destination: {host: web, subset: v9}}]
  - name: slow
    match: [{uri: {prefix: /slow}}]
    timeout: 200ms
    headers:
      response:
        set: {x-route: slow}
    corsPolicy:
      allowOrigins: [{exact: "https://good.example"}]
    route: [{destination: {host: web, subset: v1}}]
  - name: default
    route: [{destination: {host: web, subset: v1}}]
`

// TestLocalReplyHeaders: the proxy's own 503 UH and 504 UT replies carry the
// route's response headers and, for an allowed Origin, the CORS headers,
// as Envoy's router local replies do.
func TestLocalReplyHeaders(t *testing.T) {
	m := NewMesh(t)
	web := m.Service("web", "HTTP", "v1")
	m.WriteConfig("web-localreply.yaml", localReplyHeadersConfig)
	front := m.Client("frontend")
	c := newClient()
	good := map[string]string{"Origin": "https://good.example"}
	Eventually(t, 10*time.Second, "route to the empty subset in force", func() error {
		r, err := trySend(c, front, "GET", "web", "/gone", good)
		if err != nil {
			return err
		}
		if r.code != http.StatusServiceUnavailable || r.header.Get("x-route") != "gone" {
			return fmt.Errorf("/gone: %d %q x-route %q", r.code, r.body, r.header.Get("x-route"))
		}
		return nil
	})
	before := requests(web)

	tests := []struct {
		name, path string
		hdr        map[string]string
		code       int
		body       string
		want       map[string]string
	}{
		{"503 UH", "/gone", good, 503, "no healthy upstream",
			map[string]string{"x-route": "gone", "Access-Control-Allow-Origin": "https://good.example"}},
		{"503 UH, origin not allowed", "/gone", map[string]string{"Origin": "https://evil.example"}, 503, "no healthy upstream",
			map[string]string{"x-route": "gone", "Access-Control-Allow-Origin": ""}},
		{"504 UT", "/slow?delay=3s", good, 504, "upstream request timeout",
			map[string]string{"x-route": "slow", "Access-Control-Allow-Origin": "https://good.example"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := send(t, c, front, "GET", "web", tc.path, tc.hdr)
			if r.code != tc.code || r.body != tc.body {
				t.Fatalf("got %d %q, want %d %q", r.code, r.body, tc.code, tc.body)
			}
			for k, v := range tc.want {
				if got := r.header.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
		})
	}
	if n := requests(web) - before; n != 1 {
		t.Errorf("the backend saw %d requests, want 1 (the timed-out one)", n)
	}
}
