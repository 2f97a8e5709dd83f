package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// istioCase is one request of an Istio integration test case: a
// VirtualService for host b, a request through the client's sidecar, and
// what Istio's test checks of the answer.
type istioCase struct {
	name   string
	vs     string
	method string
	host   string
	path   string
	hdr    map[string]string
	check  func(r actionResult) error
}

// TestIstioIntegrationRouting runs the VirtualService cases of Istio's
// own integration suite (tests/integration/pilot/common/routing.go:
// header mutations, redirects, rewrites, header and pseudo-header matches,
// CORS, retries, faults, withoutHeaders) with the requests and checks
// Istio makes, from a client sidecar to service b on port 80. Each case's
// config carries a /__case route answering its number, so a case starts
// once its config is in force.
func TestIstioIntegrationRouting(t *testing.T) {
	m := NewMesh(t)
	m.ServiceOnPort("b", "HTTP", 80, "v1")
	front := m.Client("a")
	c := newClient()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	status := func(code int) func(actionResult) error {
		return func(r actionResult) error {
			if r.code != code {
				return fmt.Errorf("status %d want %d body %q", r.code, code, r.body)
			}
			return nil
		}
	}
	hostIs := func(h string) func(actionResult) error {
		return func(r actionResult) error {
			if r.code != 200 || r.reply.Host != h {
				return fmt.Errorf("status %d host %q want %q", r.code, r.reply.Host, h)
			}
			return nil
		}
	}
	hdrIs := func(k, v string) func(actionResult) error {
		return func(r actionResult) error {
			if r.code != 200 || r.reply.Headers[k] != v {
				return fmt.Errorf("status %d %s=%q want %q", r.code, k, r.reply.Headers[k], v)
			}
			return nil
		}
	}
	loc := func(code int, l string) func(actionResult) error {
		return func(r actionResult) error {
			if r.code != code || r.header.Get("Location") != l {
				return fmt.Errorf("status %d location %q want %d %q", r.code, r.header.Get("Location"), code, l)
			}
			return nil
		}
	}
	url := func(p, q string) func(actionResult) error {
		return func(r actionResult) error {
			if r.code != 200 || r.reply.Path != p || r.reply.Query != q {
				return fmt.Errorf("status %d path %q query %q", r.code, r.reply.Path, r.reply.Query)
			}
			return nil
		}
	}
	respHdrs := func(want map[string]string) func(actionResult) error {
		return func(r actionResult) error {
			for k, v := range want {
				if r.header.Get(k) != v {
					return fmt.Errorf("status %d %s=%q want %q (all %v)", r.code, k, r.header.Get(k), v, r.header)
				}
			}
			return nil
		}
	}
	// Each case's VirtualService answers /__case with the case's number
	// first, so the test knows when that config is in force.
	vs := func(routes string) string {
		return "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: default, namespace: default}\nspec:\n  hosts: [b]\n  http:\n" +
			"  - match: [{uri: {exact: /__case}}]\n    directResponse: {status: 200, body: {string: \"@CASE@\"}}\n" + routes
	}
	cases := []istioCase{
		{name: "added header", vs: vs(`  - route:
    - destination: {host: b}
    headers:
      request:
        add: {istio-custom-header: user-defined-value}
`), check: hdrIs("istio-custom-header", "user-defined-value")},
		{name: "set authority", vs: vs(`  - route:
    - destination: {host: b}
    headers:
      request:
        set: {":authority": my-custom-authority}
`), check: hostIs("my-custom-authority")},
		{name: "set Host in destination", vs: vs(`  - route:
    - destination: {host: b}
      headers:
        request:
          set: {Host: my-custom-authority}
`), check: hostIs("my-custom-authority")},
		{name: "route and destination", vs: vs(`  - route:
    - destination: {host: b}
      headers:
        request:
          set: {Host: dest-authority}
    headers:
      request:
        set: {":authority": route-authority}
`), check: hostIs("route-authority")},
		{name: "route and multi destination", vs: vs(`  - route:
    - destination: {host: b}
      headers:
        request:
          set: {Host: dest-authority}
      weight: 50
    - destination: {host: b}
      weight: 50
    headers:
      request:
        set: {":authority": route-authority}
`), check: hostIs("route-authority")},
		{name: "multi destination", vs: vs(`  - route:
    - destination: {host: b}
      headers:
        request:
          set: {Host: dest-authority}
      weight: 50
    - destination: {host: b}
      headers:
        request:
          set: {Host: dest-authority}
      weight: 50
`), check: hostIs("dest-authority")},
		{name: "redirect keeps query", vs: vs(`  - match: [{uri: {exact: /foo}}]
    redirect: {uri: /new/path}
  - match: [{uri: {exact: /new/path}}]
    route: [{destination: {host: b}}]
`), path: "/foo?key=value", check: loc(301, "http://b/new/path?key=value")},
		{name: "redirect port and scheme", vs: vs(`  - match: [{uri: {exact: /foo}}]
    redirect: {derivePort: FROM_REQUEST_PORT, scheme: https}
`), path: "/foo", check: loc(301, "https://b:80/foo")},
		{name: "redirect request port default", vs: vs(`  - match: [{uri: {exact: /foo}}]
    redirect: {derivePort: FROM_REQUEST_PORT}
`), path: "/foo", check: loc(301, "http://b/foo")},
		{name: "redirect request port host port", vs: vs(`  - match: [{uri: {exact: /foo}}]
    redirect: {derivePort: FROM_REQUEST_PORT}
`), host: "b:80", path: "/foo", check: loc(301, "http://b:80/foo")},
		{name: "redirect prefix rewrite", vs: vs(`  - match: [{uri: {prefix: /foo/}}]
    redirect: {prefixRewrite: /new/}
`), path: "/foo/bar", check: loc(301, "http://b/new/bar")},
		{name: "weird header no match", vs: vs(`  - match:
    - headers:
        "a!#$%&'*+-.^_` + "`" + `|~z": {exact: why}
    route: [{destination: {host: b}}]
`), check: status(404)},
		{name: "weird header match", vs: vs(`  - match:
    - headers:
        "a!#$%&'*+-.^_` + "`" + `|~z": {exact: why}
    route: [{destination: {host: b}}]
`), hdr: map[string]string{"a!#$%&'*+-.^_`|~z": "why"}, check: status(200)},
		{name: "pseudo header no match", vs: vs(`  - match:
    - headers:
        ":method": {exact: GET}
    route: [{destination: {host: b}}]
`), method: "POST", check: status(404)},
		{name: "pseudo header match", vs: vs(`  - match:
    - headers:
        ":method": {exact: GET}
    route: [{destination: {host: b}}]
`), check: status(200)},
		{name: "rewrite uri", vs: vs(`  - match: [{uri: {exact: /foo}}]
    rewrite: {uri: /new/path}
    route: [{destination: {host: b}}]
`), path: "/foo?key=value#hash", check: url("/new/path", "key=value")},
		{name: "rewrite authority", vs: vs(`  - match: [{uri: {exact: /foo}}]
    rewrite: {authority: new-authority}
    route: [{destination: {host: b}}]
`), path: "/foo", check: hostIs("new-authority")},
		{name: "cors preflight", vs: vs(`  - corsPolicy:
      allowOrigins: [{exact: cors.com}]
      allowMethods: [POST, GET]
      allowCredentials: false
      allowHeaders: [X-Foo-Bar, X-Foo-Baz]
      maxAge: "24h"
    route: [{destination: {host: b}}]
`), method: "OPTIONS", hdr: map[string]string{"Origin": "cors.com", "Access-Control-Request-Method": "DELETE"},
			check: func(r actionResult) error {
				if r.code != 200 {
					return fmt.Errorf("status %d", r.code)
				}
				return respHdrs(map[string]string{"Access-Control-Allow-Origin": "cors.com", "Access-Control-Allow-Methods": "POST,GET", "Access-Control-Allow-Headers": "X-Foo-Bar,X-Foo-Baz", "Access-Control-Max-Age": "86400"})(r)
			}},
		{name: "cors get", vs: vs(`  - corsPolicy:
      allowOrigins: [{exact: cors.com}]
      allowMethods: [POST, GET]
      allowCredentials: false
      allowHeaders: [X-Foo-Bar, X-Foo-Baz]
      maxAge: "24h"
    route: [{destination: {host: b}}]
`), hdr: map[string]string{"Origin": "cors.com"}, check: respHdrs(map[string]string{"Access-Control-Allow-Origin": "cors.com"})},
		{name: "retry conditions", vs: vs(`  - route: [{destination: {host: b}}]
    retries:
      attempts: 3
      perTryTimeout: 2s
      retryOn: gateway-error,connect-failure,refused-stream,reset-before-request
      retryRemoteLocalities: true
`), check: status(200)},
		{name: "fault abort", vs: vs(`  - route: [{destination: {host: b}}]
    fault: {abort: {percentage: {value: 100}, httpStatus: 418}}
`), check: status(418)},
		{name: "catch all regex", vs: vs(`  - match: [{uri: {regex: ".*"}}]
    route: [{destination: {host: b}}]
    fault: {abort: {percentage: {value: 100}, httpStatus: 418}}
  - route: [{destination: {host: b}}]
`), check: status(418)},
		{name: "without headers jason", vs: vs(`  - match:
    - withoutHeaders: {end-user: {exact: jason}}
    route: [{destination: {host: b}}]
    fault: {abort: {percentage: {value: 100}, httpStatus: 403}}
  - route: [{destination: {host: b}}]
`), path: "/foo", hdr: map[string]string{"end-user": "jason"}, check: status(200)},
		{name: "without headers not jason", vs: vs(`  - match:
    - withoutHeaders: {end-user: {exact: jason}}
    route: [{destination: {host: b}}]
    fault: {abort: {percentage: {value: 100}, httpStatus: 403}}
  - route: [{destination: {host: b}}]
`), path: "/foo", hdr: map[string]string{"end-user": "not-jason"}, check: status(403)},
		{name: "without headers absent", vs: vs(`  - match:
    - withoutHeaders: {end-user: {exact: jason}}
    route: [{destination: {host: b}}]
    fault: {abort: {percentage: {value: 100}, httpStatus: 403}}
  - route: [{destination: {host: b}}]
`), path: "/foo", check: status(403)},
		{name: "without regex star empty", vs: vs(`  - match:
    - withoutHeaders: {end-user: {regex: "*"}}
    route: [{destination: {host: b}}]
    fault: {abort: {percentage: {value: 100}, httpStatus: 403}}
  - route: [{destination: {host: b}}]
`), path: "/foo", hdr: map[string]string{"end-user": ""}, check: status(200)},
		{name: "without regex star absent", vs: vs(`  - match:
    - withoutHeaders: {end-user: {regex: "*"}}
    route: [{destination: {host: b}}]
    fault: {abort: {percentage: {value: 100}, httpStatus: 403}}
  - route: [{destination: {host: b}}]
`), path: "/foo", check: status(403)},
		{name: "without regex any empty", vs: vs(`  - match:
    - withoutHeaders: {end-user: {regex: ".*"}}
    route: [{destination: {host: b}}]
    fault: {abort: {percentage: {value: 100}, httpStatus: 403}}
  - route: [{destination: {host: b}}]
`), path: "/foo", hdr: map[string]string{"end-user": ""}, check: status(200)},
		{name: "without regex any absent", vs: vs(`  - match:
    - withoutHeaders: {end-user: {regex: ".*"}}
    route: [{destination: {host: b}}]
    fault: {abort: {percentage: {value: 100}, httpStatus: 403}}
  - route: [{destination: {host: b}}]
`), path: "/foo", check: status(200)},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m.WriteConfig("vs.yaml", strings.ReplaceAll(tc.vs, "@CASE@", fmt.Sprint(i)))
			Eventually(t, 10*time.Second, "the case's config in force", func() error {
				r, err := trySend(c, front, "GET", "b", "/__case", nil)
				if err != nil {
					return err
				}
				if r.body != fmt.Sprint(i) {
					return fmt.Errorf("/__case answers %d %q", r.code, r.body)
				}
				return nil
			})
			method := tc.method
			if method == "" {
				method = "GET"
			}
			host := tc.host
			if host == "" {
				host = "b"
			}
			path := tc.path
			if path == "" {
				path = "/"
			}
			r, err := trySend(c, front, method, host, path, tc.hdr)
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.check(r); err != nil {
				t.Error(err)
			}
		})
	}
}
