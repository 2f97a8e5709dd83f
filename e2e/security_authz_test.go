package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"testing"
	"time"

	"weft.dev/weft/internal/echo"
	"weft.dev/weft/internal/localmesh"
)

// call sends one request through w's outbound listener (w nil: to addr
// directly) and returns the status, the body, and what the app saw when
// it answered 200.
func call(ctx context.Context, c *http.Client, addr, method, host, path string, hdr map[string]string) (int, string, echo.Reply, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, nil)
	if err != nil {
		return 0, "", echo.Reply{}, err
	}
	req.Host = host
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", echo.Reply{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, "", echo.Reply{}, err
	}
	var r echo.Reply
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, &r); err != nil {
			return resp.StatusCode, string(body), r, fmt.Errorf("decoding %q: %w", body, err)
		}
	}
	return resp.StatusCode, string(body), r, nil
}

// expect is one request and the status (and, for refusals, the body) it
// must get.
type expect struct {
	name         string
	method, path string
	hdr          map[string]string
	code         int
	body         string // checked when code is not 200
}

// check sends each request through via and reports every mismatch at
// once, in one error.
func check(ctx context.Context, c *http.Client, via, host string, cases []expect) error {
	var bad []string
	for _, e := range cases {
		method := e.method
		if method == "" {
			method = "GET"
		}
		code, body, _, err := call(ctx, c, via, method, host, e.path, e.hdr)
		switch {
		case err != nil:
			bad = append(bad, fmt.Sprintf("%s: %v", e.name, err))
		case code != e.code || (e.code != 200 && body != e.body):
			bad = append(bad, fmt.Sprintf("%s: %s %s got %d %q, want %d %q", e.name, method, e.path, code, body, e.code, e.body))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%s", strings.Join(bad, "; "))
	}
	return nil
}

// eventuallyAll waits (10 s at most) until every request of cases gets
// what it must: a policy written to the config directory has reached the
// sidecars.
func eventuallyAll(t *testing.T, what string, c *http.Client, via, host string, cases []expect) {
	t.Helper()
	Eventually(t, 10*time.Second, what, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return check(ctx, c, via, host, cases)
	})
}

const denied = "RBAC: access denied"

// authzMesh is a mesh with the service orders (one workload, service
// account orders) and two client workloads, frontend and batch, each with
// its own service account; it returns once both reach orders.
func authzMesh(t *testing.T) (m *Mesh, orders *localmesh.Workload, frontend, batch *localmesh.Workload) {
	t.Helper()
	m = NewMesh(t)
	orders = m.Service("orders", "HTTP", "v1")[0]
	frontend, batch = m.Client("frontend"), m.Client("batch")
	c := newClient()
	for _, w := range []*localmesh.Workload{frontend, batch} {
		eventuallyAll(t, w.Opts.Name+" reaches orders", c, w.Outbound, "orders", []expect{{name: "GET", path: "/", code: 200}})
	}
	return m, orders, frontend, batch
}

// mutualTLS reports whether orders sees frontend's requests over mutual
// TLS: the app gets x-forwarded-client-cert only then.
func mutualTLS(t *testing.T, c *http.Client, frontend *localmesh.Workload) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	code, _, r, err := call(ctx, c, frontend.Outbound, "GET", "orders", "/", nil)
	if err != nil || code != 200 {
		t.Fatalf("frontend → orders: %d %v", code, err)
	}
	return r.Headers["x-forwarded-client-cert"] != ""
}

// TestSecurityAuthzAllowPrincipal: an ALLOW policy naming frontend's
// identity admits frontend and refuses batch (403 "RBAC: access denied"),
// counted by the server sidecar as 403 with response flag RBAC.
func TestSecurityAuthzAllowPrincipal(t *testing.T) {
	m, orders, frontend, batch := authzMesh(t)
	c := newClient()
	// Principals come from the client's certificate: the hop between the
	// sidecars must be mutual TLS.
	if !mutualTLS(t, c, frontend) {
		t.Fatal("the app sees no x-forwarded-client-cert: the hop is not mutual TLS")
	}
	m.WriteConfig("authz.yaml", `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: orders-from-frontend, namespace: default}
spec:
  selector: {matchLabels: {app: orders}}
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/default/sa/frontend"]
`)
	eventuallyAll(t, "frontend admitted", c, frontend.Outbound, "orders", []expect{{name: "frontend", path: "/", code: 200}})
	eventuallyAll(t, "batch refused", c, batch.Outbound, "orders", []expect{{name: "batch", path: "/", code: 403, body: denied}})
	if got, _ := series(t, orders, "istio_requests_total", map[string]string{"reporter": "destination",
		"response_code": "403", "response_flags": "RBAC", "source_workload": "batch"}); got < 1 {
		t.Errorf("orders' sidecar counted %v refusals of batch as 403 RBAC, want at least 1", got)
	}
	if got, _ := series(t, orders, "istio_requests_total", map[string]string{"reporter": "destination",
		"response_code": "403", "source_workload": "frontend"}); got != 0 {
		t.Errorf("orders' sidecar refused frontend %v times", got)
	}
}

// TestSecurityAuthzPathsAndMethods: ALLOW rules on methods and paths,
// and a DENY rule on /admin that beats an ALLOW rule admitting
// everything to an admins-only header; paths are matched after
// normalization, so dot segments do not get around /admin.
func TestSecurityAuthzPathsAndMethods(t *testing.T) {
	m, orders, frontend, _ := authzMesh(t)
	c := newClient()
	m.WriteConfig("authz.yaml", `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: orders-api, namespace: default}
spec:
  selector: {matchLabels: {app: orders}}
  action: ALLOW
  rules:
  - to:
    - operation:
        methods: ["GET"]
        paths: ["/orders", "/orders/*"]
  - to:
    - operation:
        methods: ["POST"]
        paths: ["/orders/new"]
  - when:
    - key: request.headers[x-team]
      values: ["admins"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: default}
spec:
  selector: {matchLabels: {app: orders}}
  action: DENY
  rules:
  - to:
    - operation:
        paths: ["/admin", "/admin/*"]
`)
	admins := map[string]string{"X-Team": "admins"}
	cases := []expect{
		{name: "GET an order", path: "/orders/17", code: 200},
		{name: "GET the list", path: "/orders?page=2", code: 200},
		{name: "POST to an order", method: "POST", path: "/orders/17", code: 403, body: denied},
		{name: "POST a new order", method: "POST", path: "/orders/new", code: 200},
		{name: "DELETE", method: "DELETE", path: "/orders/17", code: 403, body: denied},
		{name: "another path", path: "/users", code: 403, body: denied},
		{name: "a prefix is not a path", path: "/orderstatus", code: 403, body: denied},
		{name: "admins may do anything else", method: "DELETE", path: "/orders/17", hdr: admins, code: 200},
		{name: "but DENY beats ALLOW", path: "/admin/users", hdr: admins, code: 403, body: denied},
		{name: "/admin itself", path: "/admin", hdr: admins, code: 403, body: denied},
		{name: "dot segments", path: "/orders/../admin/users", hdr: admins, code: 403, body: denied},
		{name: "encoded dot segments", path: "/orders/%2E%2E/admin/users", hdr: admins, code: 403, body: denied},
	}
	eventuallyAll(t, "policies in force", c, frontend.Outbound, "orders", cases)

	// Refusals are counted by orders' sidecar against orders.
	if got, _ := series(t, orders, "istio_requests_total", map[string]string{"reporter": "destination", "response_code": "403",
		"response_flags": "RBAC", "destination_service_name": "orders", "destination_workload": orders.Opts.Name, "source_workload": "frontend"}); got < 7 {
		t.Errorf("orders' sidecar counted %v refusals as 403 RBAC against orders, want at least 7", got)
	}

	// The same, sent straight to orders' sidecar (no client sidecar
	// normalizing first): the server side normalizes on its own.
	inbound := net.JoinHostPort(orders.Opts.IPs[0], fmt.Sprint(orders.Opts.WorkloadPort))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := check(ctx, c, inbound, "orders", cases); err != nil {
		t.Errorf("straight to the server sidecar: %v", err)
	}
	_, _, r, err := call(ctx, c, inbound, "GET", "orders", "/orders/a/./b/../c?x=1", nil)
	if err != nil || r.Path != "/orders/a/c" || r.Query != "x=1" {
		t.Errorf("the app got path %q query %q (%v), want the normalized /orders/a/c, x=1", r.Path, r.Query, err)
	}
}

// TestSecurityAuthzChangeOnKeptAliveConnection: a policy change applies
// to the next request of a connection opened before it, both ways.
func TestSecurityAuthzChangeOnKeptAliveConnection(t *testing.T) {
	m, orders, _, _ := authzMesh(t)
	inbound := net.JoinHostPort(orders.Opts.IPs[0], fmt.Sprint(orders.Opts.WorkloadPort))
	// One connection, kept alive, straight to orders' sidecar.
	tr := &http.Transport{MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1, DialContext: (&net.Dialer{Timeout: time.Second}).DialContext}
	t.Cleanup(tr.CloseIdleConnections)
	c := &http.Client{Timeout: 5 * time.Second, Transport: tr}
	conns := 0
	get := func() int {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{GotConn: func(ci httptrace.GotConnInfo) {
			if !ci.Reused {
				conns++
			}
		}})
		code, _, _, err := call(ctx, c, inbound, "GET", "orders", "/", nil)
		if err != nil {
			t.Fatal(err)
		}
		return code
	}
	if code := get(); code != 200 {
		t.Fatalf("before the policy: %d", code)
	}
	m.WriteConfig("authz.yaml", `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: default}
spec:
  selector: {matchLabels: {app: orders}}
`)
	Eventually(t, 10*time.Second, "allow-nothing in force", func() error {
		if code := get(); code != 403 {
			return fmt.Errorf("got %d", code)
		}
		return nil
	})
	m.WriteConfig("authz.yaml", "")
	Eventually(t, 10*time.Second, "policy gone", func() error {
		if code := get(); code != 200 {
			return fmt.Errorf("got %d", code)
		}
		return nil
	})
	if conns != 1 {
		t.Errorf("%d connections opened, want every request on the first one", conns)
	}
}

// TestSecurityAuthzSourceAddresses: ipBlocks match the address the
// connection comes from, remoteIpBlocks the original client named by
// X-Forwarded-For (Envoy's remote address on a sidecar, which does not
// use the peer's address as the remote one). Clients here talk to
// orders' sidecar directly, from addresses of their own.
func TestSecurityAuthzSourceAddresses(t *testing.T) {
	m, orders, _, _ := authzMesh(t)
	inbound := net.JoinHostPort(orders.Opts.IPs[0], fmt.Sprint(orders.Opts.WorkloadPort))
	trusted, other := nextIP(), nextIP()
	from := func(ip string) *http.Client {
		d := &net.Dialer{Timeout: time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
		tr := &http.Transport{DialContext: d.DialContext}
		t.Cleanup(tr.CloseIdleConnections)
		return &http.Client{Timeout: 5 * time.Second, Transport: tr}
	}
	m.WriteConfig("authz.yaml", fmt.Sprintf(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: orders-from-addresses, namespace: default}
spec:
  selector: {matchLabels: {app: orders}}
  action: ALLOW
  rules:
  - from:
    - source:
        ipBlocks: ["%s/32"]
  - from:
    - source:
        remoteIpBlocks: ["203.0.113.0/24"]
`, trusted))
	eventuallyAll(t, "the trusted address admitted", from(trusted), inbound, "orders", []expect{{name: "trusted", path: "/", code: 200}})
	eventuallyAll(t, "others refused", from(other), inbound, "orders", []expect{
		{name: "another address", path: "/", code: 403, body: denied},
		{name: "from an allowed original client", path: "/", hdr: map[string]string{"X-Forwarded-For": "203.0.113.9"}, code: 200},
		{name: "a proxy after it is not", path: "/", hdr: map[string]string{"X-Forwarded-For": "203.0.113.9, 198.51.100.1"}, code: 403, body: denied},
	})
}
