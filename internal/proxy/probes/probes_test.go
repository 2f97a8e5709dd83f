package probes

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func port(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	var n int
	fmt.Sscan(p, &n)
	return n
}

// TestProbes runs each kind of probe against real local servers through a
// real probes server.
func TestProbes(t *testing.T) {
	var healthy atomic.Bool
	healthy.Store(true)
	var gotHeader, gotHost atomic.Value
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotHeader.Store(r.Header.Get("X-Probe"))
		gotHost.Store(r.Host)
		if r.URL.Path != "/ready" || !healthy.Load() {
			w.WriteHeader(http.StatusInternalServerError)
		}
	}))
	defer app.Close()
	tlsApp := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer tlsApp.Close()

	gs := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	hs.SetServingStatus("orders", healthpb.HealthCheckResponse_NOT_SERVING)
	gln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(gln)
	defer gs.Stop()

	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedPort := port(t, closed.Addr().String())
	closed.Close()

	admin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ready" {
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer admin.Close()

	env := fmt.Sprintf(`{
	  "/app-health/app/readyz": {"httpGet": {"path": "/ready", "port": %d, "httpHeaders": [{"name": "X-Probe", "value": "kubelet"}, {"name": "Host", "value": "app.local"}]}, "timeoutSeconds": 2},
	  "/app-health/app/livez": {"tcpSocket": {"port": %d}},
	  "/app-health/app/startupz": {"grpc": {"port": %d}},
	  "/app-health/tls/readyz": {"httpGet": {"path": "/", "port": %d, "scheme": "HTTPS"}},
	  "/app-health/orders/readyz": {"grpc": {"port": %d, "service": "orders"}},
	  "/app-health/gone/livez": {"tcpSocket": {"port": %d}},
	  "/app-health/gone/readyz": {"httpGet": {"path": "/", "port": %d}}
	}`, port(t, app.Listener.Addr().String()), port(t, app.Listener.Addr().String()), port(t, gln.Addr().String()),
		port(t, tlsApp.Listener.Addr().String()), port(t, gln.Addr().String()), closedPort, closedPort)
	probers, err := Parse(env)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, ln, Handler(probers, admin.URL, nil, slog.Default())) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()

	get := func(path string) int {
		t.Helper()
		resp, err := http.Get("http://" + ln.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for path, want := range map[string]int{
		"/app-health/app/readyz":    200,
		"/app-health/app/livez":     200,
		"/app-health/app/startupz":  200,
		"/app-health/tls/readyz":    200,
		"/app-health/orders/readyz": 503,
		"/app-health/gone/livez":    503,
		"/app-health/gone/readyz":   503,
		"/app-health/none/readyz":   404,
		ReadyPath:                   200,
	} {
		if got := get(path); got != want {
			t.Errorf("GET %s: %d, want %d", path, got, want)
		}
	}
	if gotHeader.Load() != "kubelet" || gotHost.Load() != "app.local" {
		t.Errorf("the app saw X-Probe %v, Host %v", gotHeader.Load(), gotHost.Load())
	}
	healthy.Store(false)
	if got := get("/app-health/app/readyz"); got != 500 {
		t.Errorf("unhealthy app: %d, want its 500", got)
	}
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	if got := get("/app-health/app/startupz"); got != 503 {
		t.Errorf("grpc NOT_SERVING: %d, want 503", got)
	}
}

func TestParseErrors(t *testing.T) {
	for in, want := range map[string]string{
		`[]`:                                 "not a JSON object",
		`{"/x": {"tcpSocket": {"port": 1}}}`: "/app-health/",
		`{"/app-health/a/readyz": {}}`:       "exactly one",
		`{"/app-health/a/readyz": {"tcpSocket": {"port": 0}}}`:                      "out of range",
		`{"/app-health/a/readyz": {"httpGet": {"port": 80, "scheme": "FTP"}}}`:      "scheme",
		`{"/app-health/a/readyz": {"httpGet": {"port": 80}, "grpc": {"port": 81}}}`: "exactly one",
	} {
		if _, err := Parse(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%s): %v, want an error with %q", in, err, want)
		}
	}
}
