package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"weft.dev/weft/internal/echo"
	"weft.dev/weft/internal/localmesh"
)

// waitDump waits until w's config dump contains marker: a freshly written
// config has reached the sidecar.
func waitDump(t *testing.T, w *localmesh.Workload, marker string) {
	t.Helper()
	Eventually(t, 10*time.Second, w.Opts.Name+" config has "+marker, func() error {
		if !strings.Contains(adminGet(t, w, "/config_dump"), marker) {
			return fmt.Errorf("not in /config_dump yet")
		}
		return nil
	})
}

func totalRequests(ws []*localmesh.Workload) uint64 {
	var n uint64
	for _, w := range ws {
		n += w.Echo.Requests()
	}
	return n
}

const retryRoutes = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend, namespace: default}
spec:
  hosts: [backend]
  http:
  - name: route-timeout
    match: [{uri: {prefix: /timeout}}]
    timeout: 300ms
    retries: {attempts: 0}
    route: [{destination: {host: backend}}]
  - name: per-try-timeout
    match: [{uri: {prefix: /pertry}}]
    retries: {attempts: 2, perTryTimeout: 200ms, retryOn: "5xx"}
    route: [{destination: {host: backend}}]
  - name: three-retries
    retries: {attempts: 3, retryOn: "5xx,connect-failure"}
    route: [{destination: {host: backend}}]
`

// TestRetriesStopAtConfiguredAttempts: with attempts 3 a request that every
// endpoint fails is tried exactly 4 times (counted at the backends), the
// client gets the upstream's 503 with response flag URX, and the retries
// are counted in envoy_cluster_upstream_rq_retry.
func TestRetriesStopAtConfiguredAttempts(t *testing.T) {
	m := NewMesh(t)
	backends := m.Service("backend", "HTTP", "v1", "v1", "v1")
	front := m.Client("frontend")
	c := newClient()
	m.WriteConfig("backend-routes.yaml", retryRoutes)
	waitDump(t, front, "three-retries")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	const n = 20
	before := totalRequests(backends)
	for i := 0; i < n; i++ {
		code, _, err := Get(ctx, c, front, "backend", "/", map[string]string{"x-echo-status": "503"})
		if err != nil || code != 503 {
			t.Fatalf("request %d: code %d err %v, want the upstream's 503", i, code, err)
		}
	}
	if got := totalRequests(backends) - before; got != n*4 {
		t.Errorf("backends saw %d attempts for %d requests, want %d (1 + 3 retries each)", got, n, n*4)
	}
	if got, _ := series(t, front, "istio_requests_total", map[string]string{"reporter": "source", "response_code": "503", "response_flags": "URX"}); got != n {
		t.Errorf("istio_requests_total{response_flags=URX} = %v, want %d", got, n)
	}
	if got, _ := series(t, front, "envoy_cluster_upstream_rq_retry", map[string]string{"envoy_cluster_name": "outbound|8080||backend.default.svc.cluster.local"}); got != n*3 {
		t.Errorf("envoy_cluster_upstream_rq_retry = %v, want %d", got, n*3)
	}

	// A request that succeeds is sent once.
	before = totalRequests(backends)
	for i := 0; i < n; i++ {
		if code, _, err := Get(ctx, c, front, "backend", "/", nil); err != nil || code != 200 {
			t.Fatalf("request %d: code %d err %v", i, code, err)
		}
	}
	if got := totalRequests(backends) - before; got != n {
		t.Errorf("backends saw %d requests for %d successful ones", got, n)
	}
}

// TestTimeouts: the route timeout answers 504 (flag UT) long before a slow
// backend would; perTryTimeout ends each attempt and retries it, so a slow
// request is tried 1 + attempts times and then gets 504.
func TestTimeouts(t *testing.T) {
	m := NewMesh(t)
	backends := m.Service("backend", "HTTP", "v1", "v1", "v1")
	front := m.Client("frontend")
	c := newClient()
	m.WriteConfig("backend-routes.yaml", retryRoutes)
	waitDump(t, front, "per-try-timeout")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	start := time.Now()
	code, _, err := Get(ctx, c, front, "backend", "/timeout?delay=3s", nil)
	if err != nil || code != 504 {
		t.Fatalf("route timeout: code %d err %v, want 504", code, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("route timeout of 300ms answered after %v", d)
	}
	if got, _ := series(t, front, "istio_requests_total", map[string]string{"reporter": "source", "response_code": "504", "response_flags": "UT"}); got != 1 {
		t.Errorf("istio_requests_total{response_flags=UT} = %v, want 1", got)
	}
	if got, _ := series(t, front, "envoy_cluster_upstream_rq_timeout", map[string]string{"envoy_cluster_name": "outbound|8080||backend.default.svc.cluster.local"}); got != 1 {
		t.Errorf("envoy_cluster_upstream_rq_timeout = %v, want 1", got)
	}

	before := totalRequests(backends)
	start = time.Now()
	code, _, err = Get(ctx, c, front, "backend", "/pertry?delay=3s", nil)
	if err != nil || code != 504 {
		t.Fatalf("per-try timeout: code %d err %v, want 504", code, err)
	}
	if d := time.Since(start); d > 2500*time.Millisecond {
		t.Errorf("3 tries of 200ms answered after %v", d)
	}
	Eventually(t, 5*time.Second, "attempts counted at the backends", func() error {
		if got := totalRequests(backends) - before; got != 3 {
			return fmt.Errorf("backends saw %d attempts, want 3", got)
		}
		return nil
	})
	// A fast request on the same route is not affected.
	if code, _, err := Get(ctx, c, front, "backend", "/pertry?delay=10ms", nil); err != nil || code != 200 {
		t.Fatalf("fast request: code %d err %v", code, err)
	}
}

// TestDefaultRetryPolicySkipsDeadEndpoint: with no VirtualService, Istio's
// default policy (2 retries on connect-failure, on another host) hides an
// endpoint whose sidecar is down: no client-visible failure in 300 requests.
func TestDefaultRetryPolicySkipsDeadEndpoint(t *testing.T) {
	m := NewMesh(t)
	backends := m.Service("backend", "HTTP", "v1", "v1", "v1")
	front := m.Client("frontend")
	c := newClient()
	Eventually(t, 10*time.Second, "all three endpoints answer", func() error {
		got := map[string]bool{}
		for i := 0; i < 9; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			code, r, err := Get(ctx, c, front, "backend", "/", nil)
			cancel()
			if err != nil || code != 200 {
				return fmt.Errorf("code %d err %v", code, err)
			}
			got[r.Name] = true
		}
		if len(got) != 3 {
			return fmt.Errorf("answered by %v", got)
		}
		return nil
	})
	if err := backends[1].StopProxy(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	failures := 0
	for i := 0; i < 300; i++ {
		code, r, err := Get(ctx, c, front, "backend", "/", nil)
		if err != nil || code != http.StatusOK {
			failures++
			t.Logf("request %d: code %d err %v", i, code, err)
			continue
		}
		if r.Name == backends[1].Opts.Name {
			t.Fatalf("request %d answered by the stopped workload", i)
		}
	}
	if failures > 0 {
		t.Fatalf("%d of 300 requests failed with one endpoint down; the default retry policy should hide it", failures)
	}
	if got, _ := series(t, front, "envoy_cluster_upstream_rq_retry", map[string]string{"envoy_cluster_name": "outbound|8080||backend.default.svc.cluster.local"}); got < 50 {
		t.Errorf("envoy_cluster_upstream_rq_retry = %v, want about 100 (a third of 300)", got)
	}
}

// TestGRPCDefaultRetry: Istio's default policy retries gRPC calls (with
// their request bodies) whose endpoint refuses connections, on other
// endpoints: no call fails with one greeter's sidecar down. An UNAVAILABLE
// the app sends after its response headers is not a trailers-only response,
// and Envoy retries only those: each such call is sent once.
func TestGRPCDefaultRetry(t *testing.T) {
	m := NewMesh(t)
	greeters := m.Service("greeter", "GRPC", "v1", "v1", "v1")
	front := m.Client("frontend")
	cc := GRPCClient(t, front, "greeter")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	WaitGRPCAnswerers(t, cc, 3)

	before := totalRequests(greeters)
	req, _ := structpb.NewStruct(map[string]any{"status": float64(codes.Unavailable)})
	for i := 0; i < 10; i++ {
		if _, err := echo.Call(ctx, cc, req); status.Code(err) != codes.Unavailable {
			t.Fatalf("got %v, want UNAVAILABLE", err)
		}
	}
	if got := totalRequests(greeters) - before; got != 10 {
		t.Errorf("backends saw %d attempts for 10 calls answered UNAVAILABLE after headers, want 10", got)
	}

	if err := greeters[2].StopProxy(); err != nil {
		t.Fatal(err)
	}
	body, _ := structpb.NewStruct(map[string]any{"payload": strings.Repeat("x", 1000)})
	for i := 0; i < 300; i++ {
		r, err := echo.Call(ctx, cc, body)
		if err != nil {
			t.Fatalf("call %d with one greeter down: %v", i, err)
		}
		if r.Fields["name"].GetStringValue() == greeters[2].Opts.Name {
			t.Fatalf("call %d answered by the stopped greeter", i)
		}
	}
}
