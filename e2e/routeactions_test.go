package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"weft.dev/weft/internal/echo"
	"weft.dev/weft/internal/localmesh"
)

// routeActionsConfig exercises every VirtualService http route action on
// one service: rewrite, uriRegexRewrite, redirect, directResponse,
// headers (per route and per destination) and corsPolicy.
const routeActionsConfig = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: default}
spec:
  host: web
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: default}
spec:
  hosts: [web]
  http:
  - name: prefix-rewrite
    match: [{uri: {prefix: /old/}}]
    rewrite: {uri: /new/, authority: rewritten.example}
    route: [{destination: {host: web, subset: v1}}]
  - name: exact-rewrite
    match: [{uri: {exact: /legacy}}]
    rewrite: {uri: /modern}
    route: [{destination: {host: web, subset: v1}}]
  - name: regex-rewrite
    match: [{uri: {prefix: /svc/}}]
    rewrite:
      uriRegexRewrite: {match: '^/svc/([^/]+)/(.*)$', rewrite: '/\2/\1'}
    route: [{destination: {host: web, subset: v1}}]
  - name: moved
    match: [{uri: {prefix: /moved}}]
    redirect: {uri: /here, authority: elsewhere.example, redirectCode: 302}
  - name: permanent
    match: [{uri: {exact: /perm}}]
    redirect: {uri: /perm2, scheme: https, port: 8443}
  - name: maintenance
    match: [{uri: {prefix: /maintenance}}]
    directResponse: {status: 503, body: {string: "down for maintenance"}}
  - name: headers
    match: [{uri: {prefix: /headers}}]
    headers:
      request:
        set: {x-set: route}
        add: {x-add: route}
        remove: [x-drop]
      response:
        set: {x-resp-set: route}
        add: {x-resp-add: route}
        remove: [x-internal]
    route: [{destination: {host: web, subset: v1}}]
  - name: split
    match: [{uri: {prefix: /split}}]
    route:
    - destination: {host: web, subset: v1}
      weight: 50
      headers:
        request: {set: {x-dest: v1}}
        response: {set: {x-served-by: v1}}
    - destination: {host: web, subset: v2}
      weight: 50
      headers:
        request: {set: {x-dest: v2}}
        response: {set: {x-served-by: v2}}
  - name: cors
    match: [{uri: {prefix: /cors}}]
    corsPolicy:
      allowOrigins:
      - {exact: "https://good.example"}
      - {regex: 'https://.*\.trusted\.example'}
      allowMethods: [GET, POST]
      allowHeaders: [x-token]
      exposeHeaders: [x-trace]
      maxAge: 600s
      allowCredentials: true
    route: [{destination: {host: web, subset: v1}}]
  - name: default
    route: [{destination: {host: web, subset: v1}}]
`

type actionResult struct {
	code   int
	header http.Header
	body   string
	reply  echo.Reply // when the echo answered
}

// send makes one request through w's outbound listener without following
// redirects.
func send(t *testing.T, c *http.Client, w *localmesh.Workload, method, host, path string, hdr map[string]string) actionResult {
	t.Helper()
	res, err := trySend(c, w, method, host, path, hdr)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func trySend(c *http.Client, w *localmesh.Workload, method, host, path string, hdr map[string]string) (actionResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+w.Outbound+path, nil)
	if err != nil {
		return actionResult{}, err
	}
	req.Host = host
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return actionResult{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return actionResult{}, fmt.Errorf("%s %s: reading body: %w", method, path, err)
	}
	res := actionResult{code: resp.StatusCode, header: resp.Header, body: string(b)}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		_ = json.Unmarshal(b, &res.reply)
	}
	return res, nil
}

func routeActionsMesh(t *testing.T) (*http.Client, *localmesh.Workload, []*localmesh.Workload) {
	t.Helper()
	m := NewMesh(t)
	web := m.Service("web", "HTTP", "v1", "v2")
	m.WriteConfig("web-routes.yaml", routeActionsConfig)
	front := m.Client("frontend")
	c := newClient()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	Eventually(t, 10*time.Second, "route actions in force", func() error {
		r, err := trySend(c, front, "GET", "web", "/maintenance", nil)
		if err != nil {
			return err
		}
		if r.code != 503 || r.body != "down for maintenance" {
			return fmt.Errorf("/maintenance: %d %q", r.code, r.body)
		}
		return nil
	})
	return c, front, web
}

func requests(ws []*localmesh.Workload) uint64 {
	var n uint64
	for _, w := range ws {
		n += w.Echo.Requests()
	}
	return n
}

func TestRewrite(t *testing.T) {
	c, front, _ := routeActionsMesh(t)
	tests := []struct {
		name, path, wantPath, wantQuery, wantHost string
	}{
		{"uri prefix and authority", "/old/items?id=7", "/new/items", "id=7", "rewritten.example"},
		{"uri on an exact match replaces the path", "/legacy?x=1", "/modern", "x=1", "web"},
		{"uriRegexRewrite", "/svc/orders/v1/list", "/v1/list/orders", "", "web"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := send(t, c, front, "GET", "web", tc.path, nil)
			if r.code != 200 {
				t.Fatalf("status %d: %s", r.code, r.body)
			}
			if r.reply.Path != tc.wantPath || r.reply.Query != tc.wantQuery || r.reply.Host != tc.wantHost {
				t.Errorf("echo saw path %q query %q host %q, want %q %q %q",
					r.reply.Path, r.reply.Query, r.reply.Host, tc.wantPath, tc.wantQuery, tc.wantHost)
			}
		})
	}
}

func TestRedirectAndDirectResponse(t *testing.T) {
	c, front, web := routeActionsMesh(t)
	before := requests(web)
	tests := []struct {
		name, path string
		code       int
		location   string
		body       string
	}{
		{"redirect 302 keeps the query", "/moved/x?k=v", 302, "http://elsewhere.example/here?k=v", ""},
		{"redirect 301 with scheme and port", "/perm", 301, "https://web:8443/perm2", ""},
		{"direct response", "/maintenance/now", 503, "", "down for maintenance"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for i := 0; i < 5; i++ {
				r := send(t, c, front, "GET", "web", tc.path, nil)
				if r.code != tc.code || r.header.Get("Location") != tc.location || r.body != tc.body {
					t.Fatalf("got %d Location %q body %q, want %d %q %q", r.code, r.header.Get("Location"), r.body, tc.code, tc.location, tc.body)
				}
			}
		})
	}
	if n := requests(web) - before; n != 0 {
		t.Errorf("the backend saw %d requests; redirects and direct responses must be answered by the proxy", n)
	}
}

func TestRouteHeaders(t *testing.T) {
	c, front, _ := routeActionsMesh(t)
	r := send(t, c, front, "GET", "web", "/headers?header=x-internal:secret&header=x-resp-add:backend&header=x-resp-set:backend",
		map[string]string{"x-set": "client", "x-add": "client", "x-drop": "gone"})
	if r.code != 200 {
		t.Fatalf("status %d: %s", r.code, r.body)
	}
	seen := r.reply.Headers
	if seen["x-set"] != "route" || seen["x-add"] != "client, route" {
		t.Errorf("request headers at the echo: x-set %q (want route), x-add %q (want \"client, route\")", seen["x-set"], seen["x-add"])
	}
	if v, ok := seen["x-drop"]; ok {
		t.Errorf("request header x-drop reached the echo: %q", v)
	}
	if got := r.header.Values("x-resp-set"); len(got) != 1 || got[0] != "route" {
		t.Errorf("response x-resp-set = %q, want [route]", got)
	}
	if got := r.header.Values("x-resp-add"); len(got) != 2 || got[0] != "backend" || got[1] != "route" {
		t.Errorf("response x-resp-add = %q, want [backend route]", got)
	}
	if v := r.header.Get("x-internal"); v != "" {
		t.Errorf("response header x-internal reached the client: %q", v)
	}
}

func TestPerDestinationHeaders(t *testing.T) {
	c, front, _ := routeActionsMesh(t)
	got := map[string]int{}
	for i := 0; i < 200; i++ {
		r := send(t, c, front, "GET", "web", "/split", nil)
		if r.code != 200 {
			t.Fatalf("request %d: status %d", i, r.code)
		}
		served, dest := r.header.Get("x-served-by"), r.reply.Headers["x-dest"]
		if served != r.reply.Version || dest != r.reply.Version {
			t.Fatalf("request %d answered by %s: x-served-by %q, x-dest at the echo %q", i, r.reply.Version, served, dest)
		}
		got[served]++
	}
	if got["v1"] == 0 || got["v2"] == 0 {
		t.Fatalf("50/50 split over 200 requests: %v", got)
	}
}

func TestCORS(t *testing.T) {
	c, front, web := routeActionsMesh(t)
	preflight := func(origin string) map[string]string {
		return map[string]string{"Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-token"}
	}
	t.Run("preflight from an allowed origin is answered by the proxy", func(t *testing.T) {
		before := requests(web)
		for _, origin := range []string{"https://good.example", "https://app.trusted.example"} {
			r := send(t, c, front, "OPTIONS", "web", "/cors", preflight(origin))
			want := map[string]string{
				"Access-Control-Allow-Origin":      origin,
				"Access-Control-Allow-Methods":     "GET,POST",
				"Access-Control-Allow-Headers":     "x-token",
				"Access-Control-Max-Age":           "600",
				"Access-Control-Allow-Credentials": "true",
			}
			if r.code != 200 {
				t.Fatalf("%s: status %d", origin, r.code)
			}
			for k, v := range want {
				if got := r.header.Get(k); got != v {
					t.Errorf("%s: %s = %q, want %q", origin, k, got, v)
				}
			}
		}
		if n := requests(web) - before; n != 0 {
			t.Errorf("the backend saw %d preflights", n)
		}
	})
	t.Run("preflight from another origin gets no CORS headers", func(t *testing.T) {
		r := send(t, c, front, "OPTIONS", "web", "/cors", preflight("https://evil.example"))
		for _, k := range []string{"Access-Control-Allow-Origin", "Access-Control-Allow-Methods", "Access-Control-Allow-Credentials"} {
			if v := r.header.Get(k); v != "" {
				t.Errorf("%s = %q, want none", k, v)
			}
		}
		if r.reply.Method != "OPTIONS" {
			t.Errorf("the preflight was not forwarded to the backend (unmatchedPreflights FORWARD): %d %q", r.code, r.body)
		}
	})
	t.Run("actual requests", func(t *testing.T) {
		r := send(t, c, front, "GET", "web", "/cors", map[string]string{"Origin": "https://good.example"})
		if r.code != 200 || r.reply.Name == "" {
			t.Fatalf("status %d %q", r.code, r.body)
		}
		for k, v := range map[string]string{"Access-Control-Allow-Origin": "https://good.example",
			"Access-Control-Allow-Credentials": "true", "Access-Control-Expose-Headers": "x-trace"} {
			if got := r.header.Get(k); got != v {
				t.Errorf("%s = %q, want %q", k, got, v)
			}
		}
		r = send(t, c, front, "GET", "web", "/cors", map[string]string{"Origin": "https://evil.example"})
		if r.code != 200 || r.header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("other origin: status %d, Access-Control-Allow-Origin %q (want none)", r.code, r.header.Get("Access-Control-Allow-Origin"))
		}
		r = send(t, c, front, "GET", "web", "/other", map[string]string{"Origin": "https://good.example"})
		if r.header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("a route without corsPolicy added CORS headers")
		}
	})
}
