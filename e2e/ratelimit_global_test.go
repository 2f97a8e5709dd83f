package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"weft.dev/weft/internal/echo"
	"weft.dev/weft/internal/localmesh"
	"weft.dev/weft/internal/testenv"
)

// globalLimit is the requests per minute per x-user the rate limit
// service allows in the global tests.
const globalLimit = 4

// rateLimitServiceConfig is the real rate limit service's configuration:
// globalLimit requests a minute for each value of descriptor key user.
var rateLimitServiceConfig = fmt.Sprintf(`domain: weft-e2e
descriptors:
- key: user
  rate_limit: {unit: minute, requests_per_unit: %d}
`, globalLimit)

// rateLimitServiceEntry registers the rate limit service in the mesh as
// ratelimit.infra.svc.cluster.local:8081, gRPC, at addr (the process on
// loopback, without a sidecar: plaintext).
func rateLimitServiceEntry(addr string) string {
	host, port, _ := net.SplitHostPort(addr)
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratelimit, namespace: default}
spec:
  hosts: [ratelimit.infra.svc.cluster.local]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports:
  - {number: 8081, name: grpc, protocol: GRPC}
  endpoints:
  - address: %s
    ports: {grpc: %s}
`, host, port)
}

// globalRateLimitYAML limits the backend's sidecars per x-user through
// the service; the timeout is generous for a loaded test machine (Envoy's
// default is 20ms).
func globalRateLimitYAML(deny bool) string {
	return fmt.Sprintf(`apiVersion: networking.weft.dev/v1alpha1
kind: RateLimit
metadata: {name: backend, namespace: default}
spec:
  selector: {matchLabels: {app: backend}}
  global:
    service: ratelimit.infra.svc.cluster.local:8081
    domain: weft-e2e
    timeout: 2s
    failureModeDeny: %t
    rateLimitHeaders: true
    descriptors:
    - actions:
      - requestHeader: {header: x-user, key: user}
`, deny)
}

// TestRateLimitGlobalSharedAcrossProxies: two replicas of the backend,
// each with its own sidecar, ask one real rate limit service
// (envoyproxy/ratelimit on a real Redis) about each request. A user's
// globalLimit requests a minute are shared by both sidecars: requests
// alternate between them, the first globalLimit pass, and the next gets
// 429 with x-envoy-ratelimited from either sidecar; another user is not
// affected. The sidecars count envoy_cluster_ratelimit_ok/over_limit and
// report the 429s with response flag RL.
//
// The service counts in fixed windows of a minute: when the run crosses
// a window's end (x-ratelimit-reset goes up), it starts over as another
// user, at most three times.
func TestRateLimitGlobalSharedAcrossProxies(t *testing.T) {
	rl := testenv.RateLimit(t, rateLimitServiceConfig)
	m := NewMesh(t)
	m.WriteConfig("ratelimit-service.yaml", rateLimitServiceEntry(rl.GRPCAddr))
	backends := m.Service("backend", "HTTP", "v1", "v1")
	m.WriteConfig("ratelimit.yaml", globalRateLimitYAML(false))
	for _, b := range backends {
		waitDump(t, b, "envoy.filters.http.ratelimit")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	send := globalSender(t, ctx, backends)

	var user string
	var ok bool
	for attempt := range 3 {
		user = fmt.Sprintf("alice-%d", attempt)
		if ok = sharedLimitRun(t, send, user); ok {
			break
		}
		t.Logf("the service's minute window ended during the run as %s; again as another user", user)
	}
	if !ok {
		t.Fatal("three runs each crossed a minute window's end")
	}
	for i := range backends {
		if code, h := send(i, "bob"); code != 200 {
			t.Errorf("bob through sidecar %d: %d %v, want 200 (his own count)", i, code, h)
		}
	}
	// Every sidecar counted what it asked; over_limit at least the two
	// refusals of the last run.
	var okCount, over float64
	for _, b := range backends {
		v, _ := series(t, b, "envoy_cluster_ratelimit_ok", nil)
		okCount += v
		v, _ = series(t, b, "envoy_cluster_ratelimit_over_limit", nil)
		over += v
		if v, _ := series(t, b, "envoy_cluster_ratelimit_error", nil); v != 0 {
			t.Errorf("%s counted %v rate limit service errors", b.Opts.Name, v)
		}
	}
	if okCount < globalLimit+2 || over < 2 {
		t.Errorf("envoy_cluster_ratelimit_ok %v (want at least %d), over_limit %v (want at least 2)", okCount, globalLimit+2, over)
	}
	var rl429 float64
	for _, b := range backends {
		v, _ := series(t, b, "istio_requests_total", map[string]string{"reporter": "destination", "response_code": "429", "response_flags": "RL"})
		rl429 += v
	}
	if rl429 != over {
		t.Errorf("istio_requests_total{response_code=429, response_flags=RL} = %v, want %v (the over_limit answers)", rl429, over)
	}
}

// sharedLimitRun sends globalLimit requests as user alternately through
// the two sidecars (all must pass), then one more through each (both
// must be refused). It returns false when the service's window rolled
// over meanwhile (the run proves nothing then).
func sharedLimitRun(t *testing.T, send func(int, string) (int, http.Header), user string) bool {
	t.Helper()
	lastReset := int64(-1)
	rolled := func(h http.Header) bool {
		r, err := strconv.ParseInt(h.Get("X-Ratelimit-Reset"), 10, 64)
		if err != nil {
			t.Fatalf("x-ratelimit-reset %q: %v (headers %v)", h.Get("X-Ratelimit-Reset"), err, h)
		}
		defer func() { lastReset = r }()
		return lastReset >= 0 && r > lastReset
	}
	for i := range globalLimit {
		code, h := send(i%2, user)
		if rolled(h) {
			return false
		}
		if code != 200 {
			t.Fatalf("%s request %d through sidecar %d: %d %v, want 200 (within the shared limit of %d)", user, i+1, i%2, code, h, globalLimit)
		}
		if want := fmt.Sprint(globalLimit - 1 - i); h.Get("X-Ratelimit-Remaining") != want {
			t.Errorf("%s request %d: x-ratelimit-remaining %q, want %s", user, i+1, h.Get("X-Ratelimit-Remaining"), want)
		}
	}
	for i := range 2 {
		code, h := send(i, user)
		if rolled(h) {
			return false
		}
		if code != 429 || h.Get("X-Envoy-Ratelimited") != "true" {
			t.Errorf("%s request %d through sidecar %d: %d %v, want 429 with x-envoy-ratelimited (over the shared limit)", user, globalLimit+1+i, i, code, h)
		}
		if want := fmt.Sprintf("%d, %d;w=60", globalLimit, globalLimit); h.Get("X-Ratelimit-Limit") != want {
			t.Errorf("x-ratelimit-limit %q, want %q", h.Get("X-Ratelimit-Limit"), want)
		}
	}
	return true
}

// globalSender returns a function that sends GET / as user (x-user) to
// backend i's inbound port directly, and returns the answer's status and
// headers.
func globalSender(t *testing.T, ctx context.Context, backends []*localmesh.Workload) func(int, string) (int, http.Header) {
	c := newClient()
	return func(i int, user string) (int, http.Header) {
		t.Helper()
		b := backends[i]
		addr := net.JoinHostPort(b.Opts.IPs[0], fmt.Sprint(b.Opts.WorkloadPort))
		code, h, err := getHeadersWith(ctx, c, addr, "backend", "/", map[string]string{"x-user": user})
		if err != nil {
			t.Fatalf("request to %s: %v", b.Opts.Name, err)
		}
		return code, h
	}
}

// TestRateLimitGlobalFailureMode: with the rate limit service stopped,
// requests pass (fail open, Envoy's default), counted
// envoy_cluster_ratelimit_error and failure_mode_allowed; with
// failureModeDeny they are refused with Envoy's status_on_error default,
// 500, and response flag RLSE. Once the service is back they pass again.
func TestRateLimitGlobalFailureMode(t *testing.T) {
	rl := testenv.RateLimit(t, rateLimitServiceConfig)
	m := NewMesh(t)
	m.WriteConfig("ratelimit-service.yaml", rateLimitServiceEntry(rl.GRPCAddr))
	backends := m.Service("backend", "HTTP", "v1")
	b := backends[0]
	m.WriteConfig("ratelimit.yaml", globalRateLimitYAML(false))
	waitDump(t, b, "envoy.filters.http.ratelimit")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	send := globalSender(t, ctx, backends)
	if code, h := send(0, "carol"); code != 200 || h.Get("X-Ratelimit-Remaining") == "" {
		t.Fatalf("with the service up: %d %v, want 200 with x-ratelimit headers", code, h)
	}

	rl.Stop()
	for i := range 3 {
		if code, h := send(0, "carol"); code != 200 || h.Get("X-Ratelimit-Remaining") != "" {
			t.Errorf("service down, fail open, request %d: %d %v; want 200 without x-ratelimit headers", i, code, h)
		}
	}
	if e, _ := series(t, b, "envoy_cluster_ratelimit_error", nil); e != 3 {
		t.Errorf("envoy_cluster_ratelimit_error = %v, want 3", e)
	}
	if a, _ := series(t, b, "envoy_cluster_ratelimit_failure_mode_allowed", nil); a != 3 {
		t.Errorf("envoy_cluster_ratelimit_failure_mode_allowed = %v, want 3", a)
	}

	m.WriteConfig("ratelimit.yaml", globalRateLimitYAML(true))
	Eventually(t, 10*time.Second, "failureModeDeny applied", func() error {
		if code, _ := send(0, "carol"); code != 500 {
			return fmt.Errorf("status %d, want 500", code)
		}
		return nil
	})
	before := b.Echo.Requests()
	for i := range 2 {
		if code, h := send(0, "carol"); code != 500 {
			t.Errorf("service down, failureModeDeny, request %d: %d %v; want 500", i, code, h)
		}
	}
	if n := b.Echo.Requests(); n != before {
		t.Errorf("the backend app saw %d more requests; refused ones must not reach it", n-before)
	}
	if v, _ := series(t, b, "istio_requests_total", map[string]string{"reporter": "destination", "response_code": "500", "response_flags": "RLSE"}); v < 3 {
		t.Errorf("istio_requests_total{response_code=500, response_flags=RLSE} = %v, want at least 3", v)
	}

	rl.Start()
	Eventually(t, 10*time.Second, "the service answers again", func() error {
		if code, h := send(0, "dave"); code != 200 || !strings.HasPrefix(h.Get("X-Ratelimit-Limit"), fmt.Sprint(globalLimit)) {
			return fmt.Errorf("status %d, x-ratelimit-limit %q", code, h.Get("X-Ratelimit-Limit"))
		}
		return nil
	})
}

// TestGatewayGlobalRateLimit: two ingress gateway proxies (one
// Gateway's selector picks both, as replicas of one deployment) share a
// user's limit through the real rate limit service: requests alternate
// between them, the first globalLimit pass, the next is refused 429 by
// either. The gateways count under the route's cluster, the backend
// service's.
func TestGatewayGlobalRateLimit(t *testing.T) {
	rl := testenv.RateLimit(t, rateLimitServiceConfig)
	m := NewMesh(t)
	m.WriteConfig("ratelimit-service.yaml", rateLimitServiceEntry(rl.GRPCAddr))
	m.Service("web", "HTTP", "v1")
	labels := map[string]string{"istio": "ingressgateway"}
	gws := []*localmesh.Gateway{m.gatewayAt("ingress-a", "istio-system", nextIP(), labels), m.gatewayAt("ingress-b", "istio-system", nextIP(), labels)}
	port, err := localmesh.FreePortOn(gws[0].Opts.IP, gws[1].Opts.IP)
	if err != nil {
		t.Fatal(err)
	}
	m.WriteConfig("gateway.yaml", apiGatewayYAML(port)+`---
apiVersion: networking.weft.dev/v1alpha1
kind: RateLimit
metadata: {name: edge, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  global:
    service: ratelimit.infra.svc.cluster.local:8081
    domain: weft-e2e
    timeout: 2s
    rateLimitHeaders: true
    descriptors:
    - actions:
      - requestHeader: {header: x-user, key: user}
`)
	c := newClient()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	get := func(i int, user string) (int, http.Header, error) {
		addr := net.JoinHostPort(gws[i].Opts.IP, fmt.Sprint(port))
		return getHeadersWith(ctx, c, addr, "api.example.com", "/", map[string]string{"x-user": user})
	}
	send := func(i int, user string) (int, http.Header) {
		t.Helper()
		code, h, err := get(i, user)
		if err != nil {
			t.Fatalf("request to %s: %v", gws[i].Opts.Name, err)
		}
		return code, h
	}
	for i := range gws {
		Eventually(t, 20*time.Second, gws[i].Opts.Name+" asking the rate limit service", func() error {
			if code, h, err := get(i, "probe"); err != nil || code != 200 || h.Get("X-Ratelimit-Limit") == "" {
				return fmt.Errorf("status %d, no x-ratelimit-limit yet (%v)", code, err)
			}
			return nil
		})
	}
	ok := false
	for attempt := range 3 {
		if ok = sharedLimitRun(t, send, fmt.Sprintf("erin-%d", attempt)); ok {
			break
		}
	}
	if !ok {
		t.Fatal("three runs each crossed a minute window's end")
	}
	var over float64
	for _, g := range gws {
		// series reads a proxy's admin endpoint: the gateway's, here.
		asWorkload := &localmesh.Workload{Proxy: g.Proxy, Opts: localmesh.WorkloadOptions{Name: g.Opts.Name}}
		v, _ := series(t, asWorkload, "envoy_cluster_ratelimit_over_limit", map[string]string{"envoy_cluster_name": "outbound|8080||web.default.svc.cluster.local"})
		over += v
	}
	if over < 2 {
		t.Errorf("the gateways counted envoy_cluster_ratelimit_over_limit{envoy_cluster_name=outbound|8080||web…} %v times, want at least 2", over)
	}
}

// TestRateLimitGlobalServiceInMesh: the rate limit service runs behind a
// sidecar of its own, in the mesh (labelled tlsMode istio): the
// backends' sidecars reach it like any destination, through the
// service's outbound cluster, over mutual TLS to its sidecar, which
// forwards the gRPC call to the service. The shared limit holds as
// with a plaintext service.
func TestRateLimitGlobalServiceInMesh(t *testing.T) {
	rl := testenv.RateLimit(t, rateLimitServiceConfig)
	m := NewMesh(t)
	ip := nextIP()
	port, err := localmesh.FreePort(ip)
	if err != nil {
		t.Fatal(err)
	}
	m.WriteConfig("ratelimit-service.yaml", fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratelimit, namespace: default}
spec:
  hosts: [ratelimit.infra.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 8081, name: grpc, protocol: GRPC}
  workloadSelector:
    labels: {app: ratelimit}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ratelimit-0, namespace: default}
spec:
  address: %s
  ports: {grpc: %d}
  labels: {app: ratelimit, version: v1, security.istio.io/tlsMode: istio}
  serviceAccount: ratelimit
`, ip, port))
	rlsSidecar := m.Workload(localmesh.WorkloadOptions{Name: "ratelimit-0", IPs: []string{ip}, WorkloadPort: uint32(port),
		Labels: map[string]string{"app": "ratelimit", "version": "v1"}, AppTarget: rl.GRPCAddr})
	Eventually(t, 10*time.Second, "the rate limit service's sidecar serving", func() error {
		if !rlsSidecar.Serving() {
			return fmt.Errorf("not serving its inbound port yet")
		}
		return nil
	})
	backends := m.Service("backend", "HTTP", "v1", "v1")
	m.WriteConfig("ratelimit.yaml", globalRateLimitYAML(true)) // deny: a broken path cannot pass unnoticed
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	send := globalSender(t, ctx, backends)
	for i, b := range backends {
		waitDump(t, b, "envoy.filters.http.ratelimit")
		Eventually(t, 20*time.Second, b.Opts.Name+" asking the rate limit service", func() error {
			if code, h := send(i, "probe"); code != 200 || h.Get("X-Ratelimit-Limit") == "" {
				return fmt.Errorf("status %d, no x-ratelimit-limit yet", code)
			}
			return nil
		})
	}
	ok := false
	for attempt := range 3 {
		if ok = sharedLimitRun(t, send, fmt.Sprintf("frank-%d", attempt)); ok {
			break
		}
	}
	if !ok {
		t.Fatal("three runs each crossed a minute window's end")
	}
	// The calls crossed the service's sidecar over mutual TLS, with the
	// backends' identity. (Their peer metadata is not sent: as from
	// Envoy, a filter's own calls are not the router's requests.)
	v, seen := series(t, rlsSidecar, "istio_requests_total", map[string]string{"reporter": "destination", "request_protocol": "grpc",
		"connection_security_policy": "mutual_tls", "source_principal": "spiffe://cluster.local/ns/default/sa/backend", "grpc_response_status": "0"})
	if v < globalLimit+2 {
		t.Errorf("the rate limit service's sidecar saw %v gRPC calls over mutual TLS from the backends, want at least %d; it counted %v", v, globalLimit+2, seen)
	}
}

// TestRateLimitGlobalGRPC: gRPC calls through a client's sidecar to the
// greeter's, limited per user (request metadata x-user) by the real rate
// limit service: the call over the limit fails with UNAVAILABLE, as from
// Envoy, and carries x-envoy-ratelimited and the x-ratelimit-* metadata;
// both sidecars count it with grpc-status 14.
func TestRateLimitGlobalGRPC(t *testing.T) {
	rl := testenv.RateLimit(t, rateLimitServiceConfig)
	m := NewMesh(t)
	m.WriteConfig("ratelimit-service.yaml", rateLimitServiceEntry(rl.GRPCAddr))
	backends := m.Service("greeter", "GRPC", "v1")
	front := m.Client("frontend")
	m.WriteConfig("ratelimit.yaml", strings.Replace(globalRateLimitYAML(false), "app: backend", "app: greeter", 1))
	for _, b := range backends {
		waitDump(t, b, "envoy.filters.http.ratelimit")
	}
	cc := GRPCClient(t, front, "greeter")
	WaitGRPCAnswerers(t, cc, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// send maps a call to what sharedLimitRun reads: 200 for OK, 429 for
	// UNAVAILABLE, and the response's header and trailer metadata.
	send := func(_ int, user string) (int, http.Header) {
		t.Helper()
		var hdr, trl metadata.MD
		_, err := echo.Call(metadata.AppendToOutgoingContext(ctx, "x-user", user), cc, &structpb.Struct{}, grpc.Header(&hdr), grpc.Trailer(&trl))
		h := http.Header{}
		for _, md := range []metadata.MD{hdr, trl} {
			for k, vs := range md {
				for _, v := range vs {
					h.Add(k, v)
				}
			}
		}
		switch status.Code(err) {
		case codes.OK:
			return 200, h
		case codes.Unavailable:
			return 429, h
		}
		t.Fatalf("call as %s: %v", user, err)
		return 0, nil
	}
	ok := false
	for attempt := range 3 {
		if ok = sharedLimitRun(t, send, fmt.Sprintf("grace-%d", attempt)); ok {
			break
		}
	}
	if !ok {
		t.Fatal("three runs each crossed a minute window's end")
	}
	if v, _ := series(t, backends[0], "istio_requests_total", map[string]string{"reporter": "destination", "grpc_response_status": "14", "response_flags": "RL"}); v < 2 {
		t.Errorf("the greeter's sidecar counted %v calls with grpc-status 14 and flag RL, want at least 2", v)
	}
	if v, _ := series(t, front, "istio_requests_total", map[string]string{"reporter": "source", "grpc_response_status": "14"}); v < 2 {
		t.Errorf("the client's sidecar counted %v calls with grpc-status 14, want at least 2", v)
	}
}
