package dataplane

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/durationpb"

	"weft.dev/weft/internal/xds/contract"
)

// h1Proxy starts a data plane whose outbound listener sends everything to
// one HTTP/1.1 endpoint at addr, and returns its base URL and registry.
func h1Proxy(t *testing.T, addr string) (string, *prometheus.Registry, *Dataplane) {
	t.Helper()
	reg := newRegistry()
	d := newDataplane(t, contract.Identity{WorkloadName: "client", Namespace: "default"}, reg)
	mustApply(t, d, resourcesAny(staticCluster(t, "up", addr),
		routeConfig("r", vhost("v", []string{"*"}, toCluster("all", prefixMatch("/"), "up"))),
		httpListener(t, "out", core.TrafficDirection_OUTBOUND, "r", nil)))
	return "http://" + d.ListenerAddr("out").String(), reg, d
}

// countingUpstream is an httptest server running h that counts the
// connections it accepted.
func countingUpstream(t *testing.T, h http.HandlerFunc) (string, *atomic.Int32) {
	t.Helper()
	var conns atomic.Int32
	s := httptest.NewUnstartedServer(h)
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s.Listener.Addr().String(), &conns
}

// rawUpstream accepts connections and hands the i-th (from 0) to serve.
// It returns the address and the number of accepted connections.
func rawUpstream(t *testing.T, serve func(i int, c net.Conn, br *bufio.Reader)) (string, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var (
		accepted atomic.Int32
		wg       sync.WaitGroup
		mu       sync.Mutex
		conns    []net.Conn
	)
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			i := int(accepted.Add(1)) - 1
			wg.Go(func() {
				defer c.Close()
				serve(i, c, bufio.NewReader(c))
			})
		}
	})
	return ln.Addr().String(), &accepted
}

const okResponse = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

// serveOK answers n requests on c with okResponse.
func serveOK(c net.Conn, br *bufio.Reader, n int) bool {
	for range n {
		if _, err := http.ReadRequest(br); err != nil {
			return false
		}
		if _, err := io.WriteString(c, okResponse); err != nil {
			return false
		}
	}
	return true
}

func resetConn(c net.Conn) {
	c.(*net.TCPConn).SetLinger(0)
	c.Close()
}

func TestH1PoolReuse(t *testing.T) {
	var seen []string
	var mu sync.Mutex
	addr, conns := countingUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.Header.Get("X-Request-Id"))
		mu.Unlock()
		io.WriteString(w, "hello")
	})
	base, _, _ := h1Proxy(t, addr)
	c := client(t, false)
	for i := range 20 {
		method := []string{"GET", "DELETE", "OPTIONS", "POST"}[i%4]
		if got := do(t, c, method, base+"/x", "svc", nil); got.code != 200 || got.body != "hello" {
			t.Fatalf("request %d: %d %q", i, got.code, got.body)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("upstream saw %d connections for 20 sequential requests, want 1", n)
	}
	if len(seen) != 20 || len(strings.Fields(seen[0])[1]) != 36 {
		t.Errorf("upstream saw %q", seen)
	}
}

func TestH1StaleConnRetry(t *testing.T) {
	for _, tc := range []struct {
		name, method string
		second       func(c net.Conn, br *bufio.Reader) // conn #1
		code         int
		conns        int32
	}{
		// GET is retried once on a fresh connection after the stale one fails.
		{"retried", "GET", func(c net.Conn, br *bufio.Reader) { serveOK(c, br, 1) }, 200, 2},
		// The retry fails too: no third attempt.
		{"once", "GET", func(c net.Conn, br *bufio.Reader) { http.ReadRequest(br); resetConn(c) }, 503, 2},
		// A bodiless POST is never replayed, but a connection the upstream
		// had visibly closed is dropped before use.
		{"post", "POST", func(c net.Conn, br *bufio.Reader) { serveOK(c, br, 1) }, 200, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			closed := make(chan struct{})
			addr, accepted := rawUpstream(t, func(i int, c net.Conn, br *bufio.Reader) {
				switch i {
				case 0: // answer once with keep-alive, then close while idle
					serveOK(c, br, 1)
					c.Close()
					close(closed)
				case 1:
					tc.second(c, br)
				}
			})
			base, reg, _ := h1Proxy(t, addr)
			c := client(t, false)
			if got := do(t, c, tc.method, base+"/", "svc", nil); got.code != 200 {
				t.Fatalf("first request: %d", got.code)
			}
			<-closed
			time.Sleep(20 * time.Millisecond) // let the FIN arrive
			got := do(t, c, tc.method, base+"/", "svc", nil)
			if got.code != tc.code {
				t.Errorf("second request: %d %q, want %d", got.code, got.body, tc.code)
			}
			if tc.code == 503 && counterValue(t, reg, map[string]string{"response_flags": "UC"}) != 1 {
				t.Errorf("no UC response flag")
			}
			if n := accepted.Load(); n != tc.conns {
				t.Errorf("upstream accepted %d connections, want %d", n, tc.conns)
			}
		})
	}
}

func TestH1NoRetryAfterResponseStarted(t *testing.T) {
	for _, tc := range []struct {
		name, partial string
		flags         string
	}{
		{"status line", "HTTP/1.1 200 OK\r\n", "UC"},
		{"headers", "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", "UR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, accepted := rawUpstream(t, func(i int, c net.Conn, br *bufio.Reader) {
				if i == 0 && serveOK(c, br, 1) {
					http.ReadRequest(br)
					io.WriteString(c, tc.partial)
					time.Sleep(10 * time.Millisecond)
					resetConn(c)
				}
			})
			base, reg, _ := h1Proxy(t, addr)
			c := client(t, false)
			if got := do(t, c, "GET", base+"/", "svc", nil); got.code != 200 {
				t.Fatalf("first request: %d", got.code)
			}
			// POST: Go's client would replay a GET on a new connection when
			// the proxy resets the downstream one before any response byte.
			req, _ := http.NewRequest("POST", base+"/", nil)
			req.Host = "svc"
			resp, err := c.Do(req)
			if tc.flags == "UC" {
				if err != nil || resp.StatusCode != 503 {
					t.Fatalf("got %v %v, want 503", resp, err)
				}
				resp.Body.Close()
			} else {
				var b []byte
				if err == nil {
					b, err = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				if err == nil {
					t.Fatalf("downstream was not reset: %d %q %v", resp.StatusCode, b, resp.Header)
				}
			}
			waitFor(t, func() bool { return counterValue(t, reg, map[string]string{"response_flags": tc.flags}) == 1 })
			if n := accepted.Load(); n != 1 {
				t.Errorf("upstream accepted %d connections, want 1 (no retry)", n)
			}
		})
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("condition not met")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestH1ConnectionClose(t *testing.T) {
	var requests atomic.Int32
	addr, conns := countingUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		if r.URL.Path == "/close" {
			w.Header().Set("Connection", "close")
		}
		io.WriteString(w, "ok")
	})
	base, _, _ := h1Proxy(t, addr)
	c := client(t, false)
	for i, path := range []string{"/close", "/", "/"} {
		if got := do(t, c, "GET", base+path, "svc", nil); got.code != 200 || got.header.Get("Connection") != "" {
			t.Fatalf("request %d: %d, Connection %q", i, got.code, got.header.Get("Connection"))
		}
	}
	// A downstream Connection: close is hop-by-hop: the upstream connection stays.
	if got := do(t, c, "GET", base+"/", "svc", map[string]string{"Connection": "close"}); got.code != 200 {
		t.Fatalf("Connection: close request: %d", got.code)
	}
	if n, r := conns.Load(), requests.Load(); n != 2 || r != 4 {
		t.Errorf("upstream saw %d connections and %d requests, want 2 and 4", n, r)
	}
}

func TestH1HeadAnd1xx(t *testing.T) {
	addr, conns := countingUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/early" {
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			w.Header().Del("Link")
		}
		w.Header().Set("Content-Length", "5")
		io.WriteString(w, "hello")
	})
	base, _, _ := h1Proxy(t, addr)
	c := client(t, false)
	for _, tc := range []struct{ method, path, body string }{
		{"HEAD", "/", ""}, {"GET", "/", "hello"}, {"GET", "/early", "hello"}, {"HEAD", "/early", ""}, {"GET", "/", "hello"},
	} {
		got := do(t, c, tc.method, base+tc.path, "svc", nil)
		if got.code != 200 || got.body != tc.body || got.header.Get("Content-Length") != "5" {
			t.Errorf("%s %s: %d %q Content-Length %q", tc.method, tc.path, got.code, got.body, got.header.Get("Content-Length"))
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("upstream saw %d connections, want 1", n)
	}
}

func TestH1ChunkedTrailers(t *testing.T) {
	addr, conns := countingUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		io.WriteString(w, "part1,")
		w.(http.Flusher).Flush()
		io.WriteString(w, "part2")
		w.Header().Set("X-Sum", "42")
	})
	base, _, _ := h1Proxy(t, addr)
	c := client(t, false)
	for range 2 {
		req, _ := http.NewRequest("GET", base+"/", nil)
		req.Host = "svc"
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(b) != "part1,part2" || resp.Trailer.Get("X-Sum") != "42" {
			t.Errorf("got %q %v, trailer %v", b, err, resp.Trailer)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("upstream saw %d connections, want 1", n)
	}
}

func TestH1CancellationClosesUpstream(t *testing.T) {
	started := make(chan struct{}, 1)
	gone := make(chan struct{}, 1)
	addr, _ := countingUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			started <- struct{}{}
			select {
			case <-r.Context().Done(): // the proxy closed the connection
				gone <- struct{}{}
			case <-time.After(5 * time.Second):
			}
			return
		}
		io.WriteString(w, "ok")
	})
	// Downstream cancellation.
	base, reg, d := h1Proxy(t, addr)
	c := client(t, false)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/slow", nil)
	req.Host = "svc"
	errc := make(chan error, 1)
	go func() {
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	<-started
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("client: %v", err)
	}
	select {
	case <-gone:
	case <-time.After(3 * time.Second):
		t.Fatal("upstream connection not closed after the downstream cancelled")
	}
	waitFor(t, func() bool { return counterValue(t, reg, map[string]string{"response_flags": "DC"}) == 1 })

	// Route timeout.
	mustApply(t, d, resourcesAny(staticCluster(t, "up", addr),
		routeConfig("r", vhost("v", []string{"*"}, &route.Route{Match: prefixMatch("/"), Action: &route.Route_Route{Route: &route.RouteAction{
			ClusterSpecifier: &route.RouteAction_Cluster{Cluster: "up"}, Timeout: durationpb.New(100 * time.Millisecond)}}})),
		httpListener(t, "out", core.TrafficDirection_OUTBOUND, "r", nil)))
	if got := do(t, c, "GET", base+"/slow", "svc", nil); got.code != 504 || got.body != bodyTimeout {
		t.Errorf("route timeout: %d %q", got.code, got.body)
	}
	<-started
	select {
	case <-gone:
	case <-time.After(3 * time.Second):
		t.Fatal("upstream connection not closed after the route timeout")
	}
	if got := do(t, c, "GET", base+"/", "svc", nil); got.code != 200 {
		t.Errorf("after timeout: %d", got.code)
	}
}

// TestH1BodiesInMemoryOrTransport: a small body that arrives with its head
// is sent on the synchronous path (the pooled connection bodyless requests
// use); a body larger than what the synchronous path takes in memory
// streams through http.Transport, on a connection of its own.
func TestH1BodiesInMemoryOrTransport(t *testing.T) {
	addr, conns := countingUpstream(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Len", itoa(len(b)))
		w.Write(b)
	})
	base, _, _ := h1Proxy(t, addr)
	c := client(t, false)
	if got := do(t, c, "GET", base+"/", "svc", nil); got.code != 200 {
		t.Fatalf("GET: %d", got.code)
	}
	for _, tc := range []struct {
		body  string
		conns int32
	}{
		{"payload", 1}, // Go's client writes a strings.Reader body with its head
		{strings.Repeat("z", 100<<10), 2},
	} {
		req, _ := http.NewRequest("POST", base+"/", strings.NewReader(tc.body))
		req.Host = "svc"
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != tc.body {
			t.Errorf("POST %d bytes: %d, echoed %d bytes", len(tc.body), resp.StatusCode, len(b))
		}
		if n := conns.Load(); n != tc.conns {
			t.Errorf("after POST of %d bytes the upstream saw %d connections, want %d", len(tc.body), n, tc.conns)
		}
	}
}

func TestH1PoolClosedWhenEndpointOrClusterChanges(t *testing.T) {
	var closed atomic.Int32
	counting := func() string {
		s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
		s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
			if st == http.StateClosed {
				closed.Add(1)
			}
		}
		s.Start()
		t.Cleanup(s.Close)
		return s.Listener.Addr().String()
	}
	a, b := counting(), counting()
	mk := func(addr string, connectTimeout time.Duration) *xdsResources {
		cl := edsCluster(t, "up", false, "")
		cl.ConnectTimeout = durationpb.New(connectTimeout)
		return resourcesAny(cl, cla("up", ep{Addr: addr}),
			routeConfig("r", vhost("v", []string{"*"}, toCluster("all", prefixMatch("/"), "up"))),
			httpListener(t, "out", core.TrafficDirection_OUTBOUND, "r", nil))
	}
	d := newDataplane(t, contract.Identity{}, nil)
	mustApply(t, d, mk(a, time.Second))
	base := "http://" + d.ListenerAddr("out").String()
	c := client(t, false)
	if got := do(t, c, "GET", base+"/", "svc", nil); got.code != 200 {
		t.Fatalf("GET: %d", got.code)
	}
	before := d.rt.Load().clusters["up"]
	// Endpoint removed, cluster unchanged: the pool stays, the endpoint's
	// idle connection goes.
	mustApply(t, d, mk(b, time.Second))
	if !d.rt.Load().clusters["up"].SharesState(before) {
		t.Fatal("pool replaced on an endpoint-only update")
	}
	waitFor(t, func() bool { return closed.Load() == 1 })
	if got := do(t, c, "GET", base+"/", "svc", nil); got.code != 200 {
		t.Fatalf("GET: %d", got.code)
	}
	// Cluster changed: the old pool is retired and its connections closed.
	mustApply(t, d, mk(b, 2*time.Second))
	waitFor(t, func() bool { return closed.Load() == 2 })
	if got := do(t, c, "GET", base+"/", "svc", nil); got.code != 200 {
		t.Fatalf("GET: %d", got.code)
	}
}

// TestH1HTTP10ResponseNotReused: a kept-alive HTTP/1.0 response whose
// Transfer-Encoding net/http ignores (it frames the body by
// Content-Length) leaves the rest of its bytes on the connection; the
// connection is not used again, so those bytes never become the
// response to another request.
func TestH1HTTP10ResponseNotReused(t *testing.T) {
	addr, conns := rawUpstream(t, func(i int, c net.Conn, br *bufio.Reader) {
		if i > 0 {
			serveOK(c, br, 10)
			return
		}
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\nok")
		// The rest comes after the response was read whole (bytes
		// already buffered then close the connection anyway): what a
		// reused connection would answer the next request with.
		time.Sleep(100 * time.Millisecond)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled")
		serveOK(c, br, 10)
	})
	base, _, _ := h1Proxy(t, addr)
	c := client(t, false)
	for i := range 3 {
		if got := do(t, c, "GET", base+"/", "svc", nil); got.code != 200 || got.body != "ok" {
			t.Fatalf("request %d: %d %q, want 200 \"ok\"", i, got.code, got.body)
		}
	}
	if n := conns.Load(); n != 2 {
		t.Errorf("upstream saw %d connections, want 2 (the HTTP/1.0 response's closed)", n)
	}
}
