package h2client

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"
)

// h2cServer serves h with Go's HTTP/2 server (h2c, prior knowledge) on
// loopback; it is shut down when the test ends.
func h2cServer(t *testing.T, h http.Handler, tweak func(*http.Server)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: h, Protocols: p}
	if tweak != nil {
		tweak(srv)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func newClient(addr string) *Client {
	d := &net.Dialer{Timeout: 5 * time.Second}
	return New(Config{Dial: func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }, IdleTimeout: time.Minute})
}

func request(t *testing.T, method, addr, target string, body io.Reader) *http.Request {
	t.Helper()
	u, err := url.Parse("http://" + addr + target)
	if err != nil {
		t.Fatal(err)
	}
	r := &http.Request{Method: method, URL: u, Host: addr, Header: http.Header{}, ContentLength: -1}
	if body != nil {
		r.Body = io.NopCloser(body)
	}
	return r
}

// memReader is a body that says it is in memory, as the proxy's
// servers' bodies do once the client has sent all of it.
type memReader struct {
	io.Reader
	closed atomic.Bool
}

func (m *memReader) InMemory() bool { return true }
func (m *memReader) Close() error   { m.closed.Store(true); return nil }

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the body: %v", err)
	}
	return string(b)
}

func TestRequestsAgainstGoServer(t *testing.T) {
	addr := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/echo":
			w.Header().Set("Trailer", "X-Sum")
			w.Header().Set("X-Method", r.Method)
			w.Header().Set("X-Query", r.URL.RawQuery)
			w.Header().Set("X-Got-Length", fmt.Sprint(r.ContentLength))
			w.Header().Set("X-Host", r.Host)
			w.Header().Set("X-Te", r.Header.Get("Te"))
			w.Header().Set("X-Custom", r.Header.Get("X-Custom"))
			h := sha256.New()
			n, _ := io.Copy(io.MultiWriter(w, h), r.Body)
			w.Header().Set("X-Sum", fmt.Sprintf("%x/%d/%s", h.Sum(nil)[:4], n, r.Trailer.Get("X-Req-Trailer")))
		case "/big":
			w.Write(bytes.Repeat([]byte("b"), 5<<20))
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		}
	}), nil)
	c := newClient(addr)
	ctx := context.Background()

	t.Run("GET", func(t *testing.T) {
		r := request(t, "GET", addr, "/echo?a=1&b=%2F", nil)
		r.Header["X-Custom"] = []string{"v1"}
		r.Header["Te"] = []string{"trailers"}
		resp, err := c.RoundTrip(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		if body := readAll(t, resp); body != "" {
			t.Errorf("body %q", body)
		}
		for k, want := range map[string]string{"X-Method": "GET", "X-Query": "a=1&b=%2F", "X-Host": addr, "X-Te": "trailers", "X-Custom": "v1", "X-Got-Length": "0"} {
			if got := resp.Header.Get(k); got != want {
				t.Errorf("%s = %q, want %q", k, got, want)
			}
		}
		if resp.ProtoMajor != 2 || resp.StatusCode != 200 {
			t.Errorf("%s %d", resp.Proto, resp.StatusCode)
		}
		if got := resp.Trailer.Get("X-Sum"); !strings.HasSuffix(got, "/0/") {
			t.Errorf("trailer X-Sum %q", got)
		}
	})

	t.Run("POST streams both ways, trailers", func(t *testing.T) {
		payload := bytes.Repeat([]byte("0123456789abcdef"), 400_000) // 6.4 MB: past every window
		r := request(t, "POST", addr, "/echo", bytes.NewReader(payload))
		r.ContentLength = int64(len(payload))
		r.Trailer = http.Header{"X-Req-Trailer": {"t1"}}
		resp, err := c.RoundTrip(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		got := readAll(t, resp)
		if got != string(payload) {
			t.Fatalf("echo: %d bytes back of %d", len(got), len(payload))
		}
		sum := sha256.Sum256(payload)
		if want := fmt.Sprintf("%x/%d/t1", sum[:4], len(payload)); resp.Trailer.Get("X-Sum") != want {
			t.Errorf("trailer %q, want %q", resp.Trailer.Get("X-Sum"), want)
		}
		if resp.Header.Get("X-Got-Length") != fmt.Sprint(len(payload)) {
			t.Errorf("server saw content-length %s", resp.Header.Get("X-Got-Length"))
		}
	})

	t.Run("bodies in memory", func(t *testing.T) {
		for _, size := range []int{0, 1, 1000, maxFrame, maxFrame + 1, 100_000} {
			payload := strings.Repeat("m", size)
			for _, trailer := range []string{"", "tv"} {
				r := request(t, "POST", addr, "/echo", nil)
				r.Body = &memReader{Reader: strings.NewReader(payload)}
				r.ContentLength = int64(size)
				if trailer != "" {
					r.Trailer = http.Header{"X-Req-Trailer": {trailer}}
				}
				resp, err := c.RoundTrip(ctx, r)
				if err != nil {
					t.Fatal(err)
				}
				if got := readAll(t, resp); got != payload {
					t.Errorf("%d bytes: echoed %d", size, len(got))
				}
				if got := resp.Trailer.Get("X-Sum"); !strings.HasSuffix(got, fmt.Sprintf("/%d/%s", size, trailer)) {
					t.Errorf("%d bytes, trailer %q: server saw %q", size, trailer, got)
				}
				// Closed by the client (by the goroutine sending a body
				// that did not fit the first write, maybe after the response).
				deadline := time.Now().Add(5 * time.Second)
				for !r.Body.(*memReader).closed.Load() && time.Now().Before(deadline) {
					time.Sleep(time.Millisecond)
				}
				if !r.Body.(*memReader).closed.Load() {
					t.Errorf("%d bytes: body not closed", size)
				}
			}
		}
	})

	t.Run("large response, HEAD, 204", func(t *testing.T) {
		resp, err := c.RoundTrip(ctx, request(t, "GET", addr, "/big", nil))
		if err != nil {
			t.Fatal(err)
		}
		if n := len(readAll(t, resp)); n != 5<<20 {
			t.Errorf("read %d bytes", n)
		}
		resp, err = c.RoundTrip(ctx, request(t, "HEAD", addr, "/big", nil))
		if err != nil {
			t.Fatal(err)
		}
		if b := readAll(t, resp); b != "" {
			t.Errorf("HEAD body %q", b)
		}
		resp, err = c.RoundTrip(ctx, request(t, "GET", addr, "/empty", nil))
		if err != nil {
			t.Fatal(err)
		}
		if b := readAll(t, resp); b != "" || resp.StatusCode != 204 {
			t.Errorf("204: %d %q", resp.StatusCode, b)
		}
	})

	t.Run("concurrent requests share a connection", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 200)
		for i := range 200 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				body := strings.Repeat("x", i*100)
				r := request(t, "PUT", addr, "/echo", strings.NewReader(body))
				resp, err := c.RoundTrip(ctx, r)
				if err != nil {
					errs <- err
					return
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				if err != nil || string(b) != body {
					errs <- fmt.Errorf("request %d: %d bytes, %v", i, len(b), err)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if n := c.Conns(); n > 3 {
			t.Errorf("%d connections for 200 requests to a server allowing 250 streams", n)
		}
	})
}

func TestStreamLimitOpensConnections(t *testing.T) {
	release := make(chan struct{})
	var inFlight atomic.Int32
	addr := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inFlight.Add(1)
		<-release
		io.WriteString(w, "ok")
	}), func(s *http.Server) { s.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: 2} })
	c := newClient(addr)
	// The first request learns the limit (SETTINGS come with the first
	// response at the latest).
	close(release)
	resp, err := c.RoundTrip(context.Background(), request(t, "GET", addr, "/", nil))
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	release = make(chan struct{})
	var wg sync.WaitGroup
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := c.RoundTrip(context.Background(), request(t, "GET", addr, "/", nil))
			if err != nil {
				t.Error(err)
				return
			}
			readAll(t, resp)
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for inFlight.Load() < 7 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	// New connections start at the limit the first one learned, so
	// none opens more streams than the server allows (past a limit the
	// client has acknowledged, Go's server answers PROTOCOL_ERROR).
	if n := c.Conns(); n < 3 {
		t.Errorf("%d connections for 6 requests at 2 streams each, want 3 or more", n)
	}
	close(release)
	wg.Wait()
}

func TestCancelResetsStream(t *testing.T) {
	gone := make(chan error, 2)
	addr := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		<-r.Context().Done()
		gone <- r.Context().Err()
	}), nil)
	c := newClient(addr)
	for _, how := range []string{"context", "body close"} {
		ctx, cancel := context.WithCancel(context.Background())
		resp, err := c.RoundTrip(ctx, request(t, "GET", addr, "/", nil))
		if err != nil {
			t.Fatal(err)
		}
		if how == "context" {
			cancel()
			if _, err := resp.Body.Read(make([]byte, 10)); !errors.Is(err, context.Canceled) {
				t.Errorf("%s: read after cancel: %v", how, err)
			}
		} else {
			resp.Body.Close()
		}
		select {
		case <-gone:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the server's request was not cancelled", how)
		}
		cancel()
	}
	// The connection still serves.
	resp, err := c.RoundTrip(context.Background(), request(t, "HEAD", addr, "/", nil))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if c.Conns() != 1 {
		t.Errorf("%d connections", c.Conns())
	}
}

func TestContextBeforeResponse(t *testing.T) {
	addr := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }), nil)
	c := newClient(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.RoundTrip(ctx, request(t, "GET", addr, "/", nil)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v", err)
	}
}

func TestConnectError(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	c := newClient(addr)
	_, err := c.RoundTrip(context.Background(), request(t, "GET", addr, "/", nil))
	var op *net.OpError
	if !errors.As(err, &op) {
		t.Fatalf("err %v, want the dialer's", err)
	}
}

func TestGracefulShutdownOfServer(t *testing.T) {
	// Go's server sends GOAWAY on Shutdown and finishes what it took; the
	// client's later requests go to a new connection.
	var srv *http.Server
	hits := atomic.Int32{}
	addr := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.WriteString(w, "ok")
	}), func(s *http.Server) { srv = s })
	c := newClient(addr)
	resp, err := c.RoundTrip(context.Background(), request(t, "GET", addr, "/", nil))
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	// A second listener on the same handler takes over the address's
	// role: shut the first server's connections down, keep listening.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go srv.Shutdown(ctx)
	deadline := time.Now().Add(5 * time.Second)
	for c.Conns() != 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if c.Conns() != 0 {
		t.Fatalf("connection kept after GOAWAY")
	}
}

func TestIdleTimeoutAndShutdown(t *testing.T) {
	addr := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}), nil)
	d := &net.Dialer{}
	c := New(Config{Dial: func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }, IdleTimeout: 100 * time.Millisecond})
	resp, err := c.RoundTrip(context.Background(), request(t, "GET", addr, "/", nil))
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	deadline := time.Now().Add(5 * time.Second)
	for c.Conns() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if c.Conns() != 0 {
		t.Fatal("idle connection not closed")
	}
	c.Shutdown()
	resp, err = c.RoundTrip(context.Background(), request(t, "GET", addr, "/", nil))
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	for c.Conns() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if c.Conns() != 0 {
		t.Fatal("connection of a shut-down client kept after its request")
	}
}

// TestGRPCHealthCheck sends a unary gRPC call by hand to grpc-go's
// server: framing, trailers (grpc-status) and flow control as grpc-go
// wants them.
func TestGRPCHealthCheck(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("weft", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)
	addr := ln.Addr().String()
	c := newClient(addr)
	for _, svc := range []string{"weft", "unknown"} {
		msg, _ := proto.Marshal(&healthpb.HealthCheckRequest{Service: svc})
		frame := append([]byte{0, 0, 0, 0, byte(len(msg))}, msg...)
		r := request(t, "POST", addr, "/grpc.health.v1.Health/Check", bytes.NewReader(frame))
		r.Header["Content-Type"] = []string{"application/grpc"}
		r.Header["Te"] = []string{"trailers"}
		resp, err := c.RoundTrip(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		body := readAll(t, resp)
		status := resp.Trailer.Get("Grpc-Status")
		if status == "" {
			status = resp.Header.Get("Grpc-Status") // trailers-only: one HEADERS ending the stream
		}
		switch svc {
		case "weft":
			var out healthpb.HealthCheckResponse
			if status != "0" || len(body) < 5 || proto.Unmarshal([]byte(body[5:]), &out) != nil || out.Status != healthpb.HealthCheckResponse_SERVING {
				t.Errorf("%s: grpc-status %q, body %q", svc, status, body)
			}
		case "unknown":
			if status != "5" { // NOT_FOUND
				t.Errorf("%s: grpc-status %q", svc, status)
			}
		}
	}
}

// TestServerFirstStream: a request whose client sends nothing until the
// server has answered (a server-first bidirectional stream) still gets
// its HEADERS out, after headersWait, and then streams both ways.
func TestServerFirstStream(t *testing.T) {
	addr := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		buf := make([]byte, 64)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				w.Write(buf[:n])
				w.(http.Flusher).Flush()
			}
			if err != nil {
				return
			}
		}
	}), nil)
	c := newClient(addr)
	pr, pw := io.Pipe()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.RoundTrip(ctx, request(t, "POST", addr, "/", pr))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	for _, msg := range []string{"ping", "pong"} {
		go pw.Write([]byte(msg))
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(resp.Body, got); err != nil || string(got) != msg {
			t.Fatalf("echo of %q: %q %v", msg, got, err)
		}
	}
	pw.Close()
	if rest, err := io.ReadAll(resp.Body); err != nil || len(rest) != 0 {
		t.Errorf("after the upload ended: %q %v", rest, err)
	}
}

// TestRoundTripHeld: the client says it may still use a request after
// RoundTripHeld returns only when a goroutine of its own goes on sending
// the body; without a body, or with one whole in memory, it is done with
// the request, which its caller may then reuse.
func TestRoundTripHeld(t *testing.T) {
	addr := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(w, r.Body)
	}), nil)
	c := newClient(addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pr, pw := io.Pipe()
	for _, tc := range []struct {
		name string
		req  *http.Request
		held bool
	}{
		{"no body", request(t, "GET", addr, "/", nil), false},
		{"body in memory", func() *http.Request {
			r := request(t, "POST", addr, "/", nil)
			r.Body, r.ContentLength = &memReader{Reader: strings.NewReader("hello")}, 5
			return r
		}(), false},
		{"body that streams", request(t, "POST", addr, "/", pr), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.held {
				// The server answers once the body starts coming.
				go func() { pw.Write([]byte("streamed")); pw.Close() }()
			}
			resp, held, err := c.RoundTripHeld(ctx, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if held != tc.held {
				t.Errorf("held = %v, want %v", held, tc.held)
			}
			readAll(t, resp)
		})
	}
}
