package dataplane

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/types/known/durationpb"

	"weft.dev/weft/internal/xds/contract"
)

// limitedDataplane is a data plane with opts (Metrics added) serving two
// plaintext HTTP listeners, "out" and "out2", that route to a real
// upstream.
func limitedDataplane(t testing.TB, opts Options, edit func(*hcmT)) (*Dataplane, *prometheus.Registry) {
	t.Helper()
	reg := newRegistry()
	opts.Metrics = reg
	d, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		d.Close(ctx)
	})
	app := echoUpstream(t, "app", false)
	rc := func() *routev3.RouteConfiguration {
		return routeConfig("80", vhost("svc", []string{"svc"}, toCluster("all", prefixMatch("/"), "app")))
	}
	l1 := httpListener(t, "out", core.TrafficDirection_OUTBOUND, "", rc())
	l2 := httpListener(t, "out2", core.TrafficDirection_OUTBOUND, "", rc())
	if edit != nil {
		l1, l2 = withHCM(t, l1, edit), withHCM(t, l2, edit)
	}
	mustApply(t, d, resourcesAny(staticCluster(t, "app", app), l1, l2))
	return d, reg
}

// keepAliveConn dials addr and makes one keep-alive request; it returns
// the open connection and its reader, or nil when the proxy closed it
// without an answer. Bounded by a 10 s deadline.
func keepAliveConn(t testing.TB, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	if resp := roundTripOK(t, c, br); resp == nil {
		c.Close()
		return nil, nil
	}
	return c, br
}

// roundTripOK sends one request on c; nil when the connection closed
// without an answer.
func roundTripOK(t testing.TB, c net.Conn, br *bufio.Reader) *http.Response {
	t.Helper()
	io.WriteString(c, "GET /ok HTTP/1.1\r\nHost: svc\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	return resp
}

// TestMaxConnectionsAcrossListeners: Options.MaxConnections bounds the
// connections of all listeners together; one more, on any listener, is
// closed at once and counted in envoy_listener_downstream_global_cx_overflow
// of its listener; envoy_server_total_connections counts them all.
func TestMaxConnectionsAcrossListeners(t *testing.T) {
	d, reg := limitedDataplane(t, Options{MaxConnections: 2}, nil)
	out, out2 := d.ListenerAddr("out").String(), d.ListenerAddr("out2").String()
	a, _ := keepAliveConn(t, out)
	b, _ := keepAliveConn(t, out2)
	if a == nil || b == nil {
		t.Fatal("the first two connections were refused")
	}
	defer b.Close()
	if gaugeValue(t, reg, "envoy_server_total_connections") != 2 {
		t.Errorf("envoy_server_total_connections = %v, want 2", gaugeValue(t, reg, "envoy_server_total_connections"))
	}
	for _, addr := range []string{out, out2} {
		if c, _ := keepAliveConn(t, addr); c != nil {
			c.Close()
			t.Fatalf("a third connection (on %s) was served; want it closed", addr)
		}
	}
	if n := counterFamilyWith(t, reg, "envoy_listener_downstream_global_cx_overflow", map[string]string{listenerAddressLabel: "out2"}); n != 1 {
		t.Errorf("global_cx_overflow{out2} = %v, want 1", n)
	}
	if n := counterFamily(t, reg, "envoy_listener_downstream_global_cx_overflow"); n != 2 {
		t.Errorf("global_cx_overflow = %v, want 2", n)
	}
	if n := counterFamily(t, reg, "envoy_listener_downstream_cx_overflow"); n != 0 {
		t.Errorf("the per-listener limit counted %v overflows; there is none", n)
	}
	a.Close()
	// The proxy sees the close asynchronously: bounded retries.
	var c net.Conn
	for i := 0; i < 100 && c == nil; i++ {
		if c, _ = keepAliveConn(t, out2); c == nil {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if c == nil {
		t.Fatal("no room after a connection closed")
	}
	c.Close()
}

// fakeOverload is an Overload whose actions the test turns on and off.
type fakeOverload struct{ reject, noKeepalive atomic.Bool }

func (f *fakeOverload) RejectIncomingConnections() bool { return f.reject.Load() }
func (f *fakeOverload) DisableHTTPKeepalive() bool      { return f.noKeepalive.Load() }

// TestOverloadActions: while the overload manager rejects connections,
// new ones are closed at once and counted
// (envoy_listener_downstream_cx_overload_reject) and those already open
// are served; while it disables keep-alive, HTTP/1.1 responses carry
// Connection: close and HTTP/2 ones end the connection with a GOAWAY;
// when the actions end, all is as before.
func TestOverloadActions(t *testing.T) {
	ov := &fakeOverload{}
	d, reg := limitedDataplane(t, Options{Overload: ov}, nil)
	addr := d.ListenerAddr("out").String()
	held, br := keepAliveConn(t, addr)
	if held == nil {
		t.Fatal("refused with no overload")
	}
	defer held.Close()

	ov.reject.Store(true)
	for range 3 {
		if c, _ := keepAliveConn(t, addr); c != nil {
			c.Close()
			t.Fatal("a new connection was served while the overload manager rejects them")
		}
	}
	if n := counterFamily(t, reg, "envoy_listener_downstream_cx_overload_reject"); n != 3 {
		t.Errorf("cx_overload_reject = %v, want 3", n)
	}
	if resp := roundTripOK(t, held, br); resp == nil || resp.Close {
		t.Fatalf("a held connection was not served on (%v)", resp)
	}

	ov.noKeepalive.Store(true)
	if resp := roundTripOK(t, held, br); resp == nil || !resp.Close {
		t.Fatalf("with keep-alive disabled the response does not close the connection (%v)", resp)
	}
	if b, err := io.ReadAll(br); err != nil || len(b) != 0 {
		t.Errorf("after Connection: close read %q, %v; want EOF", b, err)
	}
	ov.reject.Store(false)
	var h2Dials atomic.Int32
	h2tr := &http.Transport{DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
		h2Dials.Add(1)
		var dl net.Dialer
		return dl.DialContext(ctx, network, a)
	}}
	h2tr.Protocols = new(http.Protocols)
	h2tr.Protocols.SetUnencryptedHTTP2(true)
	defer h2tr.CloseIdleConnections()
	h2 := &http.Client{Transport: h2tr, Timeout: 10 * time.Second}
	// Each HTTP/2 connection is asked to go (GOAWAY) with its response:
	// every request takes a new one, and all are answered. (The client may
	// dial once more than that: a request it sends before it reads the
	// GOAWAY is refused by the closing connection and retried on a new
	// one.)
	for i := range 3 {
		if r := do(t, h2, "GET", "http://"+addr+"/h2", "svc", nil); r.code != 200 {
			t.Fatalf("h2c request %d with keep-alive disabled: status %d", i, r.code)
		}
	}
	if n := h2Dials.Load(); n < 3 {
		t.Errorf("3 HTTP/2 requests with keep-alive disabled took %d connections, want one each", n)
	}

	ov.noKeepalive.Store(false)
	c, br2 := keepAliveConn(t, addr)
	if c == nil {
		t.Fatal("refused after the overload ended")
	}
	defer c.Close()
	if resp := roundTripOK(t, c, br2); resp == nil || resp.Close {
		t.Fatalf("keep-alive not back after the overload ended (%v)", resp)
	}
}

// TestSlowLorisShedWhileServing attempts 1,000 slow-loris connections —
// each sends a request head one header line at a time and never ends it
// — against a listener of a proxy that holds at most 300 connections,
// while a client with keep-alive connections opened before the attack
// goes on sending requests. Every normal request succeeds; attack
// connections over the limit are closed at once (counted), and those
// admitted are closed by request_headers_timeout, making room for the
// next. Bounded in count (1,000 attempts, 300 normal requests) and time
// (deadlines, a context); no timing is asserted.
//
// (The proxy closes a timed-out head without an answer, or with
// net/http's 400 when it was reading: the attacker cannot tell a
// timed-out connection from a shed one, so the counts come from the
// proxy's metrics.)
func TestSlowLorisShedWhileServing(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 1,000 connections")
	}
	const (
		attempts    = 1000
		maxConns    = 300
		normalConns = 4
		normalReqs  = 300
	)
	d, reg := limitedDataplane(t, Options{MaxConnections: maxConns, Identity: contract.Identity{}}, func(m *hcmT) {
		m.RequestHeadersTimeout = durationpb.New(time.Second)
	})
	addr := d.ListenerAddr("out").String()

	// The normal client's connections are open before the attack.
	normal := make([]struct {
		c  net.Conn
		br *bufio.Reader
	}, normalConns)
	for i := range normal {
		c, br := keepAliveConn(t, addr)
		if c == nil {
			t.Fatal("a normal connection was refused before the attack")
		}
		defer c.Close()
		normal[i].c, normal[i].br = c, br
	}

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	attack := newSlowLoris(ctx, addr, attempts, false, lorisH1, nil)
	defer attack.stop()
	// The attack holds the proxy's connections before normal traffic
	// goes on (bounded wait).
	for i := 0; i < 500 && attack.dialled.Load() < maxConns; i++ {
		time.Sleep(10 * time.Millisecond)
	}

	// Normal traffic, round robin over its connections, while the attack
	// runs; every request must succeed.
	for i := range normalReqs {
		n := &normal[i%normalConns]
		n.c.SetDeadline(time.Now().Add(10 * time.Second))
		if resp := roundTripOK(t, n.c, n.br); resp == nil || resp.StatusCode != 200 {
			t.Fatalf("normal request %d failed during the attack (%d attack connections dialled)", i, attack.dialled.Load())
		}
		if i%10 == 0 {
			time.Sleep(5 * time.Millisecond) // spread over the attack
		}
	}
	// The attack ends when the proxy has closed every one of its
	// connections: an attacker never closes one itself.
	attack.wait()
	if ctx.Err() != nil {
		t.Fatal("the proxy did not close every slow-loris connection within 60 s")
	}
	shed := int64(counterFamily(t, reg, "envoy_listener_downstream_global_cx_overflow"))
	admitted := attack.dialled.Load() - shed
	t.Logf("slow loris: %d attempts, %d dialled, %d closed at once over --max-connections, %d admitted and closed by request_headers_timeout",
		attempts, attack.dialled.Load(), shed, admitted)
	if attack.dialled.Load() != attempts {
		t.Errorf("%d of %d attack connections were dialled", attack.dialled.Load(), attempts)
	}
	if shed == 0 {
		t.Error("no attack connection was shed over the connection limit")
	}
	if admitted <= 0 {
		t.Error("no attack connection was admitted")
	}
	// And the proxy still takes new connections once the attack is over
	// (bounded retries while its last connections close).
	var c net.Conn
	for i := 0; i < 200 && c == nil; i++ {
		if c, _ = keepAliveConn(t, addr); c == nil {
			time.Sleep(25 * time.Millisecond)
		}
	}
	if c == nil {
		t.Fatal("no new connection is served after the attack")
	}
	c.Close()
}

// slowLoris dials attempts connections to addr, at most 100 dialling at
// once, and on each sends the start of a request and then a little more
// every 100 ms, never its end (see lorisKind), until the proxy closes the
// connection or ctx ends. With redial, a connection the proxy closed is
// dialled again (after 100 ms) until ctx ends, as a real attacker keeps
// its connections up. Each connection has a goroutine (and one reading),
// which ends with ctx.
type slowLoris struct {
	kind    lorisKind
	tls     *tls.Config // dial TLS (ALPN h2 for the HTTP/2 kinds); nil: plaintext
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	dialled atomic.Int64 // connections that were established
}

// lorisKind is what a slow-loris connection trickles.
type lorisKind string

const (
	// lorisH1: an HTTP/1.1 request line, then a header line every
	// 100 ms, never the blank line that ends the head.
	lorisH1 lorisKind = "h1"
	// lorisH2Idle: the HTTP/2 preface and SETTINGS, then a PING every
	// 100 ms, never a HEADERS frame.
	lorisH2Idle lorisKind = "h2-idle"
	// lorisH2Headers: the HTTP/2 preface and SETTINGS, a HEADERS frame
	// without END_HEADERS, then a CONTINUATION frame with one more header
	// field every 100 ms, never the one that ends the block.
	lorisH2Headers lorisKind = "h2-headers"
)

func newSlowLoris(parent context.Context, addr string, attempts int, redial bool, kind lorisKind, tlsConf *tls.Config) *slowLoris {
	ctx, cancel := context.WithCancel(parent)
	s := &slowLoris{cancel: cancel, kind: kind, tls: tlsConf}
	sem := make(chan struct{}, 100)
	for range attempts {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			for s.one(ctx, addr, sem) && redial {
				select {
				case <-ctx.Done():
					return
				case <-time.After(100 * time.Millisecond):
				}
			}
		}()
	}
	return s
}

// one makes one slow-loris connection; false once ctx has ended.
func (s *slowLoris) one(ctx context.Context, addr string, sem chan struct{}) bool {
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	var dl net.Dialer
	c, err := dl.DialContext(ctx, "tcp", addr)
	if err == nil && s.tls != nil {
		tc := tls.Client(c, s.tls)
		hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err = tc.HandshakeContext(hctx); err != nil {
			c.Close()
		}
		cancel()
		c = tc
	}
	<-sem
	if err != nil {
		return ctx.Err() == nil
	}
	s.dialled.Add(1)
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(aLongTimeAgo) })
	defer stop()
	first, next := s.kind.frames()
	if _, err := c.Write(first); err != nil {
		return ctx.Err() == nil
	}
	// Read in the background: the proxy closing the connection (EOF, or
	// its 400 for the timed-out head) ends the attack on it.
	closed := make(chan struct{})
	go func() { io.Copy(io.Discard, c); close(closed) }()
	for {
		select {
		case <-closed:
		case <-ctx.Done():
			<-closed
			return false
		case <-time.After(100 * time.Millisecond):
			if _, err := c.Write(next); err == nil {
				continue
			}
			<-closed
		}
		if ctx.Err() != nil {
			return false
		}
		return true
	}
}

// frames returns what a connection of kind k sends first, and then every
// 100 ms.
func (k lorisKind) frames() (first, next []byte) {
	switch k {
	case lorisH2Idle, lorisH2Headers:
		var b bytes.Buffer
		b.WriteString(http2.ClientPreface)
		fr := http2.NewFramer(&b, nil)
		fr.WriteSettings()
		if k == lorisH2Idle {
			first = bytes.Clone(b.Bytes())
			b.Reset()
			fr.WritePing(false, [8]byte{'l', 'o', 'r', 'i', 's'})
			return first, b.Bytes()
		}
		var hb bytes.Buffer
		enc := hpack.NewEncoder(&hb)
		for _, f := range []hpack.HeaderField{{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "http"},
			{Name: ":path", Value: "/slow"}, {Name: ":authority", Value: "svc"}} {
			enc.WriteField(f)
		}
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndStream: true})
		first = bytes.Clone(b.Bytes())
		b.Reset()
		hb.Reset()
		enc.WriteField(hpack.HeaderField{Name: "x-loris", Value: "a"})
		fr.WriteContinuation(1, false, hb.Bytes())
		return first, b.Bytes()
	}
	return []byte("GET /slow HTTP/1.1\r\nHost: svc\r\n"), []byte("X-Loris: a\r\n")
}

// wait waits until every attack connection has ended by itself (closed
// by the proxy), at most until the attack's context ends.
func (s *slowLoris) wait() { s.wg.Wait() }

// stop ends the attack and waits for its goroutines.
func (s *slowLoris) stop() {
	s.cancel()
	s.wg.Wait()
}
