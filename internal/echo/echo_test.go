package echo_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"

	"weft.dev/weft/internal/echo"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// start runs a server until the test ends and checks that Run returns nil.
func start(t *testing.T) *echo.Server {
	t.Helper()
	s, err := echo.New(echo.Options{Name: "reviews", Version: "v2", Address: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return s
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func h1Client(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// h2cClient speaks HTTP/2 with prior knowledge over cleartext.
func h2cClient(t *testing.T) *http.Client {
	tr := &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func get(t *testing.T, c *http.Client, url string, hdr http.Header) (*http.Response, []byte, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(testContext(t), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

func decode(t *testing.T, body []byte) echo.Reply {
	t.Helper()
	var r echo.Reply
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("decoding %q: %v", body, err)
	}
	return r
}

func TestHTTP1Reply(t *testing.T) {
	s := start(t)
	c := h1Client(t)
	url := fmt.Sprintf("http://%s/a/b?x=1&y=2", s.Addr())
	req, err := http.NewRequestWithContext(testContext(t), http.MethodPost, url, strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Add("X-Multi", "one")
	req.Header.Add("X-Multi", "two")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Errorf("status = %d, want 200", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	if n, v := resp.Header.Get("X-Echo-Name"), resp.Header.Get("X-Echo-Version"); n != "reviews" || v != "v2" {
		t.Errorf("x-echo-name, x-echo-version = %q, %q", n, v)
	}
	r := decode(t, body)
	want := echo.Reply{
		Name: "reviews", Version: "v2", Method: "POST", Path: "/a/b", Query: "x=1&y=2", URI: "/a/b?x=1&y=2",
		Host: s.Addr().String(), Proto: "HTTP/1.1", BodyBytes: 5,
	}
	got := r
	got.Headers = nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("reply = %+v, want %+v", got, want)
	}
	if h := r.Headers["x-multi"]; h != "one, two" {
		t.Errorf("headers[x-multi] = %q, want %q", h, "one, two")
	}
	if h := r.Headers["content-length"]; h != "5" {
		t.Errorf("headers[content-length] = %q, want 5", h)
	}
	if got := s.Requests(); got != 1 {
		t.Errorf("Requests() = %d, want 1", got)
	}
	if got := s.InFlight(); got != 0 {
		t.Errorf("InFlight() = %d, want 0", got)
	}
}

func TestH2CPriorKnowledge(t *testing.T) {
	s := start(t)
	resp, body, err := get(t, h2cClient(t), fmt.Sprintf("http://%s/h2?q=1", s.Addr()), http.Header{"X-Test": {"yes"}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.ProtoMajor != 2 {
		t.Errorf("response proto = %s", resp.Proto)
	}
	r := decode(t, body)
	if r.Proto != "HTTP/2.0" || r.Path != "/h2" || r.Query != "q=1" || r.Headers["x-test"] != "yes" || r.Host != s.Addr().String() {
		t.Errorf("reply = %+v", r)
	}
}

func TestH2CPriorKnowledgeStdTransport(t *testing.T) {
	s := start(t)
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	_, body, err := get(t, &http.Client{Transport: tr}, fmt.Sprintf("http://%s/", s.Addr()), nil)
	if err != nil {
		t.Fatal(err)
	}
	if r := decode(t, body); r.Proto != "HTTP/2.0" {
		t.Errorf("proto = %q, want HTTP/2.0", r.Proto)
	}
}

// TestH2CUpgrade performs the HTTP/1.1 "Upgrade: h2c" exchange by hand (Go
// clients do not implement it) and reads the reply to the upgraded request.
func TestH2CUpgrade(t *testing.T) {
	s, err := echo.New(echo.Options{Name: "reviews", Version: "v2"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	conn, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))

	fmt.Fprintf(conn, "GET /up?u=1 HTTP/1.1\r\nHost: echo.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: \r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status = %d, want 101", resp.StatusCode)
	}
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, br)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var (
		hdrs = map[string]string{}
		body bytes.Buffer
		dec  = hpack.NewDecoder(4096, func(f hpack.HeaderField) { hdrs[f.Name] = f.Value })
	)
	for done := false; !done; {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				if err := fr.WriteSettingsAck(); err != nil {
					t.Fatal(err)
				}
			}
		case *http2.HeadersFrame:
			if f.StreamID != 1 {
				t.Fatalf("HEADERS on stream %d, want 1", f.StreamID)
			}
			if _, err := dec.Write(f.HeaderBlockFragment()); err != nil {
				t.Fatal(err)
			}
			done = f.StreamEnded()
		case *http2.DataFrame:
			body.Write(f.Data())
			done = f.StreamEnded()
		}
	}
	if hdrs[":status"] != "200" {
		t.Errorf(":status = %q", hdrs[":status"])
	}
	r := decode(t, body.Bytes())
	if r.Proto != "HTTP/2.0" || r.Path != "/up" || r.Host != "echo.test" {
		t.Errorf("reply = %+v", r)
	}
	if _, ok := r.Headers["upgrade"]; ok {
		t.Errorf("upgrade header presented to the HTTP/2 request: %v", r.Headers)
	}
	if got := s.Requests(); got != 1 {
		t.Errorf("Requests() = %d, want 1", got)
	}

	// Shutdown closes the upgraded connection, which net/http no longer owns.
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return with an upgraded connection open")
	}
	for {
		if _, err := fr.ReadFrame(); err != nil {
			break // GOAWAY may come first; then the connection ends.
		}
	}
}

func TestControls(t *testing.T) {
	s := start(t)
	clients := map[string]*http.Client{"HTTP/1.1": h1Client(t), "h2c": h2cClient(t)}
	tests := []struct {
		name       string
		query      string
		header     http.Header
		wantStatus int
		check      func(t *testing.T, resp *http.Response, body []byte)
	}{
		{name: "status query", query: "status=503", wantStatus: 503},
		{name: "status header", header: http.Header{"X-Echo-Status": {"418"}}, wantStatus: 418},
		{name: "query wins", query: "status=201", header: http.Header{"X-Echo-Status": {"418"}}, wantStatus: 201},
		{name: "bad status", query: "status=abc", wantStatus: 400},
		{name: "status out of range", query: "status=42", wantStatus: 400},
		{name: "bad delay", query: "delay=soon", wantStatus: 400},
		{
			name: "size", query: "size=4096", wantStatus: 200,
			check: func(t *testing.T, _ *http.Response, body []byte) {
				if len(body) != 4096 {
					t.Errorf("len(body) = %d, want 4096", len(body))
				}
				if r := decode(t, body); len(r.Pad) == 0 {
					t.Errorf("no pad")
				}
			},
		},
		{
			name: "size smaller than reply", query: "size=10", wantStatus: 200,
			check: func(t *testing.T, _ *http.Response, body []byte) {
				if r := decode(t, body); r.Pad != "" {
					t.Errorf("pad = %q, want none", r.Pad)
				}
			},
		},
		{
			name: "headers", query: "header=x-a:1&header=x-b:%202", header: http.Header{"X-Echo-Header": {"x-c:3"}}, wantStatus: 200,
			check: func(t *testing.T, resp *http.Response, _ []byte) {
				for k, v := range map[string]string{"X-A": "1", "X-B": "2", "X-C": "3"} {
					if got := resp.Header.Get(k); got != v {
						t.Errorf("header %s = %q, want %q", k, got, v)
					}
				}
			},
		},
		{name: "bad header", query: "header=novalue", wantStatus: 400},
	}
	for proto, c := range clients {
		for _, tt := range tests {
			t.Run(proto+"/"+tt.name, func(t *testing.T) {
				resp, body, err := get(t, c, fmt.Sprintf("http://%s/c?%s", s.Addr(), tt.query), tt.header)
				if err != nil {
					t.Fatal(err)
				}
				if resp.StatusCode != tt.wantStatus {
					t.Fatalf("status = %d, want %d (body %s)", resp.StatusCode, tt.wantStatus, body)
				}
				if resp.Header.Get("Content-Type") != "application/json" || !json.Valid(body) {
					t.Errorf("not a JSON response: %q %q", resp.Header.Get("Content-Type"), body)
				}
				if tt.check != nil {
					tt.check(t, resp, body)
				}
			})
		}
	}
}

func TestDelay(t *testing.T) {
	s := start(t)
	for proto, c := range map[string]*http.Client{"HTTP/1.1": h1Client(t), "h2c": h2cClient(t)} {
		t.Run(proto, func(t *testing.T) {
			begin := time.Now()
			resp, _, err := get(t, c, fmt.Sprintf("http://%s/?delay=150ms", s.Addr()), nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 200 {
				t.Errorf("status = %d", resp.StatusCode)
			}
			if d := time.Since(begin); d < 150*time.Millisecond {
				t.Errorf("answered after %v, want >= 150ms", d)
			}
		})
		t.Run(proto+"/cancelled", func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/", s.Addr()), nil)
			req.Header.Set("X-Echo-Delay", "20s")
			if resp, err := c.Do(req); err == nil {
				resp.Body.Close()
				t.Fatal("request with 20s delay did not time out")
			}
			// The handler notices the cancellation and returns.
			for deadline := time.Now().Add(5 * time.Second); s.InFlight() != 0; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("InFlight() = %d after the client gave up", s.InFlight())
				}
			}
		})
	}
}

func TestInFlight(t *testing.T) {
	s := start(t)
	c := h1Client(t)
	errc := make(chan error, 1)
	go func() {
		_, _, err := get(t, c, fmt.Sprintf("http://%s/?delay=300ms", s.Addr()), nil)
		errc <- err
	}()
	for deadline := time.Now().Add(5 * time.Second); s.InFlight() != 1; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("InFlight() = %d, want 1", s.InFlight())
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if got := s.InFlight(); got != 0 {
		t.Errorf("InFlight() = %d after the response, want 0", got)
	}
}

func TestResetHTTP1(t *testing.T) {
	s := start(t)
	_, _, err := get(t, h1Client(t), fmt.Sprintf("http://%s/?reset=true", s.Addr()), nil)
	if err == nil {
		t.Fatal("reset request succeeded")
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !strings.Contains(err.Error(), "reset") {
		t.Errorf("err = %v, want EOF or connection reset", err)
	}
	// The server keeps serving.
	if _, _, err := get(t, h1Client(t), fmt.Sprintf("http://%s/", s.Addr()), nil); err != nil {
		t.Fatal(err)
	}
}

func TestResetHTTP2(t *testing.T) {
	s := start(t)
	c := h2cClient(t)
	_, _, err := get(t, c, fmt.Sprintf("http://%s/", s.Addr()), http.Header{"X-Echo-Reset": {"true"}})
	var se http2.StreamError
	if !errors.As(err, &se) {
		t.Fatalf("err = %v, want an http2.StreamError", err)
	}
	// Only the stream was reset: the connection still works.
	if _, _, err := get(t, c, fmt.Sprintf("http://%s/", s.Addr()), nil); err != nil {
		t.Fatal(err)
	}
}

func TestGracefulShutdown(t *testing.T) {
	s, err := echo.New(echo.Options{Name: "reviews", Version: "v1"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	for proto, c := range map[string]*http.Client{"HTTP/1.1": h1Client(t), "h2c": h2cClient(t)} {
		t.Run(proto, func(t *testing.T) {
			// Open the connection first so the request is not refused below.
			if _, _, err := get(t, c, fmt.Sprintf("http://%s/", s.Addr()), nil); err != nil {
				t.Fatal(err)
			}
		})
	}
	errc := make(chan error, 2)
	for _, c := range []*http.Client{h1Client(t), h2cClient(t)} {
		go func() {
			resp, _, err := get(t, c, fmt.Sprintf("http://%s/?delay=300ms", s.Addr()), nil)
			if err == nil && resp.StatusCode != 200 {
				err = fmt.Errorf("status %d", resp.StatusCode)
			}
			errc <- err
		}()
	}
	for deadline := time.Now().Add(5 * time.Second); s.InFlight() != 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("InFlight() = %d, want 2", s.InFlight())
		}
	}
	cancel()
	for range 2 {
		if err := <-errc; err != nil {
			t.Errorf("in-flight request during shutdown: %v", err)
		}
	}
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if _, err := net.Dial("tcp", s.Addr().String()); err == nil {
		t.Error("still accepting connections after Run returned")
	}
}

func dialGRPC(t *testing.T, s *echo.Server) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(s.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func mustStruct(t *testing.T, m map[string]any) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestGRPCEcho(t *testing.T) {
	s := start(t)
	cc := dialGRPC(t, s)
	ctx := metadata.AppendToOutgoingContext(testContext(t), "x-user", "alice", "x-multi", "a", "x-multi", "b")

	var header metadata.MD
	reply, err := echo.Call(ctx, cc, mustStruct(t, map[string]any{"echo": map[string]any{"k": "v"}}), grpc.Header(&header))
	if err != nil {
		t.Fatal(err)
	}
	f := reply.GetFields()
	if f["name"].GetStringValue() != "reviews" || f["version"].GetStringValue() != "v2" {
		t.Errorf("reply = %v", reply)
	}
	md := f["metadata"].GetStructValue().GetFields()
	if md["x-user"].GetStringValue() != "alice" || md["x-multi"].GetStringValue() != "a, b" {
		t.Errorf("metadata = %v", md)
	}
	if f["echo"].GetStructValue().GetFields()["k"].GetStringValue() != "v" {
		t.Errorf("echo = %v", f["echo"])
	}
	if got := header.Get("x-echo-version"); len(got) != 1 || got[0] != "v2" {
		t.Errorf("header x-echo-version = %v", got)
	}

	t.Run("status", func(t *testing.T) {
		_, err := echo.Call(testContext(t), cc, mustStruct(t, map[string]any{"status": float64(codes.Unavailable)}))
		st, _ := status.FromError(err)
		if st.Code() != codes.Unavailable || st.Message() != "echo: requested status" {
			t.Errorf("err = %v, want Unavailable: echo: requested status", err)
		}
	})
	t.Run("bad status", func(t *testing.T) {
		_, err := echo.Call(testContext(t), cc, mustStruct(t, map[string]any{"status": "oops"}))
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("err = %v, want InvalidArgument", err)
		}
	})
	t.Run("delay", func(t *testing.T) {
		begin := time.Now()
		if _, err := echo.Call(testContext(t), cc, mustStruct(t, map[string]any{"delay": "100ms"})); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(begin); d < 100*time.Millisecond {
			t.Errorf("answered after %v", d)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		_, err := echo.Call(ctx, cc, mustStruct(t, map[string]any{"delay": "20s"}))
		if status.Code(err) != codes.DeadlineExceeded {
			t.Errorf("err = %v, want DeadlineExceeded", err)
		}
	})
}

func TestGRPCStream(t *testing.T) {
	s := start(t)
	cc := dialGRPC(t, s)
	replies, err := echo.Stream(testContext(t), cc, mustStruct(t, map[string]any{"count": 5, "echo": "hi"}))
	if err != nil {
		t.Fatal(err)
	}
	if len(replies) != 5 {
		t.Fatalf("got %d replies, want 5", len(replies))
	}
	for i, r := range replies {
		f := r.GetFields()
		if f["index"].GetNumberValue() != float64(i) || f["echo"].GetStringValue() != "hi" || f["name"].GetStringValue() != "reviews" {
			t.Errorf("reply %d = %v", i, r)
		}
	}

	replies, err = echo.Stream(testContext(t), cc, mustStruct(t, map[string]any{"count": 2, "status": float64(codes.Aborted)}))
	if status.Code(err) != codes.Aborted || len(replies) != 2 {
		t.Errorf("got %d replies and %v, want 2 and Aborted", len(replies), err)
	}

	replies, err = echo.Stream(testContext(t), cc, mustStruct(t, map[string]any{"count": 5000}))
	if err != nil || len(replies) != echo.MaxStreamCount {
		t.Errorf("got %d replies and %v, want %d", len(replies), err, echo.MaxStreamCount)
	}
}

func TestGRPCHealth(t *testing.T) {
	s := start(t)
	cc := dialGRPC(t, s)
	for _, svc := range []string{"", echo.ServiceName} {
		resp, err := healthpb.NewHealthClient(cc).Check(testContext(t), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("service %q: status = %v", svc, resp.GetStatus())
		}
	}
}

func TestRequestsCountsEveryProtocol(t *testing.T) {
	s := start(t)
	for range 3 {
		if _, _, err := get(t, h1Client(t), fmt.Sprintf("http://%s/", s.Addr()), nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := get(t, h2cClient(t), fmt.Sprintf("http://%s/", s.Addr()), nil); err != nil {
		t.Fatal(err)
	}
	cc := dialGRPC(t, s)
	for range 2 {
		if _, err := echo.Call(testContext(t), cc, &structpb.Struct{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := echo.Stream(testContext(t), cc, mustStruct(t, map[string]any{"count": 3})); err != nil {
		t.Fatal(err)
	}
	if got := s.Requests(); got != 7 {
		t.Errorf("Requests() = %d, want 7 (3 HTTP/1.1 + 1 h2c + 3 gRPC calls)", got)
	}
}

// TestGRPCConformanceEcho: the Gateway API conformance suite's GrpcEcho
// service answers each of its three methods with an EchoResponse naming
// this app as context.pod.
func TestGRPCConformanceEcho(t *testing.T) {
	s := start(t)
	cc := dialGRPC(t, s)
	for _, m := range []string{"Echo", "EchoTwo", "EchoThree"} {
		out := &emptypb.Empty{}
		if err := cc.Invoke(testContext(t), "/"+echo.ConformanceServiceName+"/"+m, &emptypb.Empty{}, out); err != nil {
			t.Fatalf("%s: %v", m, err)
		}
		if got := echo.ConformancePod(out); got != "reviews" {
			t.Errorf("%s: context.pod %q, want reviews", m, got)
		}
	}
}
