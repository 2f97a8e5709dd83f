package upstream

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttp "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"weft.dev/weft/internal/proxy/proxytest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseOptions(t *testing.T) {
	withOptions := func(o *upstreamhttp.HttpProtocolOptions) *cluster.Cluster {
		c := proxytest.EDSCluster(t, "c", false, "")
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptionsKey: proxytest.MustAny(t, o)}
		return c
	}
	for _, tc := range []struct {
		name             string
		c                *cluster.Cluster
		h2, downstream   bool
		maxUses          uint32
		connect, idle    time.Duration
		wantErrSubstring string
	}{
		{name: "explicit HTTP/1.1", c: proxytest.EDSCluster(t, "c", false, ""), connect: 2 * time.Second, idle: IdleTimeout},
		{name: "explicit h2c", c: proxytest.EDSCluster(t, "c", true, ""), h2: true, connect: 2 * time.Second, idle: IdleTimeout},
		{name: "use_downstream_protocol_config", c: proxytest.DownstreamProtocolCluster(t, "c"), downstream: true, connect: 2 * time.Second, idle: IdleTimeout},
		{name: "legacy http2_protocol_options", c: &cluster.Cluster{Http2ProtocolOptions: &core.Http2ProtocolOptions{}}, h2: true, connect: defaultConnectTimeout, idle: IdleTimeout},
		{name: "idle timeout and requests per connection", c: withOptions(&upstreamhttp.HttpProtocolOptions{
			CommonHttpProtocolOptions: &core.HttpProtocolOptions{IdleTimeout: durationpb.New(time.Second), MaxRequestsPerConnection: wrapperspb.UInt32(3)}}),
			maxUses: 3, connect: 2 * time.Second, idle: time.Second},
		{name: "TLS with an unknown secret", c: &cluster.Cluster{TransportSocket: &core.TransportSocket{Name: "envoy.transport_sockets.tls",
			ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: proxytest.MustAny(t, &tlsv3.UpstreamTlsContext{
				CommonTlsContext: &tlsv3.CommonTlsContext{TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "kubernetes://foo"}}}})}}},
			wantErrSubstring: `transport_socket.typed_config (UpstreamTlsContext): common_tls_context.tls_certificate_sds_secret_configs[0]: secret "kubernetes://foo": the proxy serves only "default"`},
		{name: "negative connect timeout", c: &cluster.Cluster{ConnectTimeout: durationpb.New(-time.Second)}, wantErrSubstring: "connect_timeout"},
		{name: "negative idle timeout", c: withOptions(&upstreamhttp.HttpProtocolOptions{
			CommonHttpProtocolOptions: &core.HttpProtocolOptions{IdleTimeout: durationpb.New(-time.Second)}}), wantErrSubstring: "idle_timeout: invalid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := ParseOptions(tc.c, nil)
			if tc.wantErrSubstring != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErrSubstring) {
					t.Fatalf("err = %v, want …%s…", err, tc.wantErrSubstring)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if o.HTTP2() != tc.h2 || o.downstreamProtocol != tc.downstream || o.maxUses != tc.maxUses || o.connectTimeout != tc.connect {
				t.Errorf("options = %+v", o)
			}
			p := NewPool(o)
			defer p.CloseIdle()
			if p.transport.Load() != nil || p.h2c.Load() != nil {
				t.Error("pool: a transport was built before the first request")
			}
			if p.downH2 != tc.downstream || p.h2 != tc.h2 || p.plainTransport().IdleConnTimeout != tc.idle {
				t.Errorf("pool: h2c %v, h2 %v, idle %v", p.downH2, p.h2, p.plainTransport().IdleConnTimeout)
			}
		})
	}
}

// TestH2ConnectionKeepalive: http2_protocol_options.connection_keepalive
// (Istio's connectionPool.http.http2KeepAlive) sets when an HTTP/2
// connection is pinged and how long the answer may take.
func TestH2ConnectionKeepalive(t *testing.T) {
	h2With := func(ka *core.KeepaliveSettings) *cluster.Cluster {
		c := proxytest.EDSCluster(t, "c", false, "")
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptionsKey: proxytest.MustAny(t, &upstreamhttp.HttpProtocolOptions{
			UpstreamProtocolOptions: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &core.Http2ProtocolOptions{ConnectionKeepalive: ka}},
			}},
		})}
		return c
	}
	for _, tc := range []struct {
		name              string
		ka                *core.KeepaliveSettings
		interval, timeout time.Duration
		wantErrSubstring  string
	}{
		{name: "defaults", interval: 30 * time.Second, timeout: 10 * time.Second},
		{name: "both", ka: &core.KeepaliveSettings{Interval: durationpb.New(15 * time.Second), Timeout: durationpb.New(5 * time.Second)},
			interval: 15 * time.Second, timeout: 5 * time.Second},
		{name: "timeout only", ka: &core.KeepaliveSettings{Timeout: durationpb.New(time.Second)}, interval: 30 * time.Second, timeout: time.Second},
		{name: "zero interval", ka: &core.KeepaliveSettings{Interval: durationpb.New(0)},
			wantErrSubstring: "http2_protocol_options.connection_keepalive.interval: must be a positive duration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o, err := ParseOptions(h2With(tc.ka), nil)
			if tc.wantErrSubstring != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErrSubstring) {
					t.Fatalf("err = %v, want …%s…", err, tc.wantErrSubstring)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			p := NewPool(o)
			defer p.CloseIdle()
			h2 := p.plainTransport().HTTP2
			if h2.SendPingTimeout != tc.interval || h2.PingTimeout != tc.timeout {
				t.Errorf("pings after %v, timeout %v; want %v, %v", h2.SendPingTimeout, h2.PingTimeout, tc.interval, tc.timeout)
			}
		})
	}
}

// TestPoolRoundTrip: bodiless HTTP/1.1 requests reuse one connection on
// the synchronous path; a refused connection is a connect error.
// countingServer starts an HTTP/1.1 server with handler h until the test
// ends; conns counts the connections it accepted.
func countingServer(t *testing.T, h http.HandlerFunc) (addr string, conns *atomic.Int64) {
	t.Helper()
	conns = new(atomic.Int64)
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String(), conns
}

func TestPoolRoundTrip(t *testing.T) {
	addr, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	})
	p := NewPool(Options{})
	defer p.CloseIdle()
	ep := p.Endpoint(addr, nil)
	for range 3 {
		in := httptest.NewRequest("GET", "http://svc/", nil)
		out, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
		resp, err := p.RoundTrip(context.Background(), ep, in, out, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "ok" {
			t.Fatalf("body %q", b)
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("3 requests used %d connections, want 1", n)
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	out, _ := http.NewRequest("GET", "http://"+closed+"/", nil)
	if _, err := p.RoundTrip(context.Background(), p.Endpoint(closed, nil), httptest.NewRequest("GET", "http://svc/", nil), out, nil); !IsConnectError(err) {
		t.Errorf("refused connection: err = %v, want a connect error", err)
	}
}

// activeCount is an ActiveCounter for tests.
type activeCount struct{ n atomic.Int64 }

func (a *activeCount) Inc() { a.n.Add(1) }
func (a *activeCount) Dec() { a.n.Add(-1) }

// TestPoolCountsActiveConnections: upstream_cx_active counts the open
// connections, HTTP/1.1 pooled and byte streams, until they are closed;
// a failed connect is never counted.
func TestPoolCountsActiveConnections(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer srv.Close()
	var active activeCount
	var o Options
	o.CountActive(&active)
	p := NewPool(o)
	defer p.CloseIdle()
	addr := srv.Listener.Addr().String()
	ep := p.Endpoint(addr, nil)
	in := httptest.NewRequest("GET", "http://svc/", nil)
	out, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
	resp, err := p.RoundTrip(context.Background(), ep, in, out, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	resp.Body.Close()
	if n := active.n.Load(); n != 1 {
		t.Fatalf("after one request: %d active, want 1 (kept for reuse)", n)
	}
	s, err := ep.DialStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.(interface{ CloseWrite() error }); !ok {
		t.Error("a counted TCP stream lost CloseWrite (half-close)")
	}
	if n := active.n.Load(); n != 2 {
		t.Errorf("with a byte stream: %d active, want 2", n)
	}
	s.Close()
	s.Close() // counted once
	p.CloseIdle()
	if n := active.n.Load(); n != 0 {
		t.Errorf("after closing: %d active, want 0", n)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	if _, err := p.Endpoint(closed, nil).DialStream(context.Background()); err == nil {
		t.Fatal("dial to a closed port succeeded")
	}
	if n := active.n.Load(); n != 0 {
		t.Errorf("after a failed connect: %d active, want 0", n)
	}
}

// TestLazyPool: a Lazy builds one pool at its first use, which every
// caller shares; one built after CloseIdle (a request still running on a
// retired configuration) is closed at once, so its connections are not
// pooled.
func TestLazyPool(t *testing.T) {
	var l Lazy
	l.Init(Options{})
	if l.Built() != nil {
		t.Fatal("built before first use")
	}
	if l.HTTP2() || l.Broken() != nil || l.Socket(nil) != 0 {
		t.Fatal("a plaintext HTTP/1.1 cluster's options read wrong without its pool")
	}
	p := l.Pool()
	if p == nil || l.Pool() != p || l.Built() != p {
		t.Fatal("two uses got different pools")
	}
	if p.EndpointIn("127.0.0.1:1", 5) != p.EndpointIn("127.0.0.1:1", 0) {
		t.Fatal("an out-of-range socket is not the cluster's own")
	}
	l.CloseIdle()
	if !p.h1.closed {
		t.Fatal("CloseIdle left the pool open")
	}

	var late Lazy
	late.Init(Options{})
	late.CloseIdle()
	if !late.Pool().h1.closed {
		t.Fatal("a pool built after CloseIdle is open")
	}
}

// memBody is a request body that says whether it is all in memory.
type memBody struct {
	io.Reader
	inMemory bool
	closed   bool
}

func (b *memBody) InMemory() bool { return b.inMemory }
func (b *memBody) Close() error   { b.closed = true; return nil }

// TestPoolRoundTripInMemoryBody: requests whose body is all in memory go
// on the synchronous path — the same pooled connection as requests
// without a body, the body intact whatever its size, closed once read —
// and a body that is not (still arriving) streams through http.Transport,
// on a connection of its own.
func TestPoolRoundTripInMemoryBody(t *testing.T) {
	addr, conns := countingServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil || int64(len(b)) != r.ContentLength {
			t.Errorf("%s: read %d bytes of %d, %v", r.Method, len(b), r.ContentLength, err)
		}
		w.Write(b)
	})
	p := NewPool(Options{})
	defer p.CloseIdle()
	ep := p.Endpoint(addr, nil)
	send := func(method, body string, inMemory bool) {
		t.Helper()
		in := httptest.NewRequest(method, "http://svc/", nil)
		out, _ := http.NewRequest(method, "http://"+addr+"/", nil)
		var mb *memBody
		if body != "" {
			mb = &memBody{Reader: strings.NewReader(body), inMemory: inMemory}
			out.Body, out.ContentLength = mb, int64(len(body))
		}
		resp, err := p.RoundTrip(context.Background(), ep, in, out, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != body {
			t.Fatalf("%s: echoed %d bytes, want %d", method, len(b), len(body))
		}
		if mb != nil && !mb.closed {
			t.Errorf("%s: request body not closed", method)
		}
	}
	send("GET", "", false)
	send("POST", strings.Repeat("a", 1024), true)
	send("PUT", strings.Repeat("b", bodyBufSize+1), true) // larger than the pooled buffers
	send("POST", "c", true)
	if n := conns.Load(); n != 1 {
		t.Errorf("requests with bodies in memory used %d connections, want 1 (the synchronous path's)", n)
	}
	send("POST", strings.Repeat("d", 100), false)
	if n := conns.Load(); n != 2 {
		t.Errorf("a body not in memory: %d connections, want 2 (http.Transport's own)", n)
	}
}

// TestPoolPostAfterUpstreamClosedIdle: a request that must not be sent
// twice (a POST) is not sent on a pooled connection the upstream has
// closed while it was idle: the liveness peek sees the close and the
// request goes on a new connection.
func TestPoolPostAfterUpstreamClosedIdle(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() { // one answer per connection, then the server closes it
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				io.Copy(io.Discard, req.Body)
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			}()
		}
	}()
	p := NewPool(Options{})
	defer p.CloseIdle()
	ep := p.Endpoint(ln.Addr().String(), nil)
	send := func(method string) {
		t.Helper()
		in := httptest.NewRequest(method, "http://svc/", nil)
		out, _ := http.NewRequest(method, "http://"+ln.Addr().String()+"/", nil)
		out.Body, out.ContentLength = &memBody{Reader: strings.NewReader("body"), inMemory: true}, 4
		resp, err := p.RoundTrip(context.Background(), ep, in, out, nil)
		if err != nil {
			t.Fatalf("%s: %v", method, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "ok" {
			t.Fatalf("%s: body %q", method, b)
		}
	}
	send("POST")
	time.Sleep(50 * time.Millisecond) // the upstream's FIN arrives
	send("POST")
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (the closed one not reused)", n)
	}
}
