package dataplane

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"weft.dev/weft/internal/proxy/proxytest"
	"weft.dev/weft/internal/xds/contract"
)

// recordingUpstream is a real HTTP/1.1 server that records the requests
// that reached it whole (headers and a body read to its end), by path.
type recordingUpstream struct {
	addr string
	mu   sync.Mutex
	seen []string // "METHOD path body-bytes"
}

func newRecordingUpstream(t *testing.T) *recordingUpstream {
	u := &recordingUpstream{}
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return // not a whole request
		}
		u.mu.Lock()
		u.seen = append(u.seen, fmt.Sprintf("%s %s %d", r.Method, r.URL.Path, len(b)))
		u.mu.Unlock()
		io.WriteString(w, "upstream")
	}))
	t.Cleanup(s.Close)
	u.addr = s.Listener.Addr().String()
	return u
}

func (u *recordingUpstream) take() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := u.seen
	u.seen = nil
	return s
}

// rawExchange sends raw bytes to addr and reads the responses the proxy
// sends back (at most two: the answer, and one to a request pipelined
// after it) until the connection closes or is quiet for a while. Bounded
// by a deadline.
func rawExchange(t *testing.T, addr, raw string) []*http.Response {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	go func() { io.WriteString(c, raw) }() // a large head may not be read whole before the answer
	br := bufio.NewReader(c)
	var out []*http.Response
	for range 2 {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			break
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body = io.NopCloser(strings.NewReader(string(b)))
		out = append(out, resp)
		if resp.Close {
			break
		}
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond)) // a second answer comes at once, if at all
	}
	return out
}

const smuggled = "GET /smuggled HTTP/1.1\r\nHost: svc\r\n\r\n"

// strictCase is one malformed (or boundary) request and the answer Weft
// gives it.
type strictCase struct {
	name string
	raw  string // with the Host "svc"
	code int    // the proxy's answer
	// counted: istio_requests_total and the access log record one
	// request with DPE (a refusal, whether the request path or the
	// HTTP/1.1 server made it).
	counted bool
	// reaches lists what a whole request reaching the upstream looks
	// like ("METHOD path body-bytes"); none for a refused request.
	reaches []string
	// open: the connection stays open after the answer (a local reply
	// of the connection manager to a request without a body).
	open bool
	// then is the answer to a second request pipelined behind the
	// first, which closes the connection; 0: no second answer is checked.
	then int
}

func strictCorpus() []strictCase {
	hdrs := func(n int) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, "X-H%d: v\r\n", i)
		}
		return b.String()
	}
	return []strictCase{
		{name: "well-formed chunked body", raw: "POST /ok HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
			code: 200, reaches: []string{"POST /ok 5"}},
		{name: "invalid chunk size, request pipelined after it",
			raw:  "POST /bad HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n" + smuggled,
			code: 400, counted: true},
		{name: "chunk data longer than its size",
			raw:  "POST /bad HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n" + smuggled,
			code: 400, counted: true},
		{name: "chunk line ending in a bare LF",
			raw:  "POST /bad HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n" + smuggled,
			code: 400, counted: true},
		{name: "two differing Content-Length", raw: "POST /bad HTTP/1.1\r\nHost: svc\r\nContent-Length: 5\r\nContent-Length: 41\r\n\r\nhello" + smuggled,
			code: 400, counted: true},
		{name: "Content-Length not a number", raw: "POST /bad HTTP/1.1\r\nHost: svc\r\nContent-Length: +5\r\n\r\nhello" + smuggled,
			code: 400, counted: true},
		{name: "Transfer-Encoding other than chunked", raw: "POST /bad HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n" + smuggled,
			code: 501, counted: true},
		{name: "control character in a header name", raw: "GET /bad HTTP/1.1\r\nHost: svc\r\nX\x01Y: v\r\n\r\n", code: 400, counted: true},
		{name: "space in a header name", raw: "GET /bad HTTP/1.1\r\nHost: svc\r\nX Y: v\r\n\r\n", code: 400, counted: true},
		{name: "control character in a header value", raw: "GET /bad HTTP/1.1\r\nHost: svc\r\nX: a\x01b\r\n\r\n", code: 400, counted: true},
		{name: "NUL in a header value", raw: "GET /bad HTTP/1.1\r\nHost: svc\r\nX: a\x00b\r\n\r\n", code: 400, counted: true},
		{name: "a method Envoy does not know", raw: "FOO /bad HTTP/1.1\r\nHost: svc\r\n\r\n", code: 400, counted: true},
		{name: "a byte over 0x7e in the path", raw: "GET /caf\xc3\xa9 HTTP/1.1\r\nHost: svc\r\n\r\n", code: 400, counted: true},
		{name: "an absolute target without a scheme", raw: "GET svc/bad HTTP/1.1\r\nHost: svc\r\n\r\n", code: 400, counted: true},
		{name: "two Host headers", raw: "GET /bad HTTP/1.1\r\nHost: svc\r\nHost: other\r\n\r\n", code: 400, counted: true},
		{name: "request line over 64 KiB", raw: "GET /" + strings.Repeat("a", 70<<10) + " HTTP/1.1\r\nHost: svc\r\n\r\n", code: 431, counted: true},
		{name: "headers just over 60 KiB", raw: "GET /bad HTTP/1.1\r\nHost: svc\r\nX: " + strings.Repeat("a", 60<<10) + "\r\n\r\n",
			code: 431, counted: true},
		{name: "headers at 60 KiB", raw: "GET /ok HTTP/1.1\r\nHost: svc\r\nX: " + strings.Repeat("a", 60<<10-len("hostsvcx")) + "\r\n\r\n",
			code: 200, reaches: []string{"GET /ok 0"}},
		{name: "headers over 64 KiB", raw: "GET /bad HTTP/1.1\r\nHost: svc\r\nX: " + strings.Repeat("a", 100<<10) + "\r\n\r\n", code: 431, counted: true},
		{name: "101 header fields", raw: "GET /bad HTTP/1.1\r\nHost: svc\r\n" + hdrs(100) + "\r\n", code: 431, counted: true},
		{name: "100 header fields", raw: "GET /ok HTTP/1.1\r\nHost: svc\r\n" + hdrs(99) + "\r\n", code: 200, reaches: []string{"GET /ok 0"}},

		// What net/http accepts and Envoy's codec refuses: refused by
		// the proxy's HTTP/1.1 server (h1server) while it reads the head,
		// before a request exists; counted all the same.
		{name: "Content-Length and Transfer-Encoding",
			raw:  "POST /clte HTTP/1.1\r\nHost: svc\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled,
			code: 400, counted: true},
		{name: "obsolete line folding", raw: "GET /fold HTTP/1.1\r\nHost: svc\r\nX: a\r\n b\r\n\r\n", code: 400, counted: true},
		{name: "obsolete line folding in a trailer",
			raw:  "POST /bad HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX: 1\r\n 2\r\n\r\n" + smuggled,
			code: 400, counted: true},
		{name: "Transfer-Encoding on an HTTP/1.0 request", // RFC 9112 6.1: faulty framing
			raw:  "POST /bad HTTP/1.0\r\nHost: svc\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n" + smuggled,
			code: 400, counted: true},

		// What Envoy's connection manager answers itself, without a
		// response flag: HTTP/1.0 unless accept_http_10 (Istio's
		// default), and the connection closes.
		{name: "HTTP/1.0 without accept_http_10", raw: "GET /old HTTP/1.0\r\nHost: svc\r\nConnection: keep-alive\r\n\r\n" + smuggled, code: 426},
		// Istio's "http10 to http" test: bare LFs, and Envoy's 426.
		{name: "HTTP/1.0 in bare LFs", raw: "GET / HTTP/1.0\n\n", code: 426},

		// An HTTP/1.1 request without Host: Envoy's connection manager
		// answers 400 with an empty body (missing_host_header), a local
		// reply without a flag, not the codec's protocol error, and a
		// request without a body leaves the connection open.
		{name: "HTTP/1.1 without Host", raw: "GET /nohost HTTP/1.1\r\n\r\n", code: 400, open: true},
		{name: "HTTP/1.1 with an empty Host", raw: "GET /nohost HTTP/1.1\r\nHost:\r\n\r\n", code: 400, open: true},

		// Lines of a head may end in a bare LF (RFC 9112 section 2.2),
		// as net/http and Envoy take them; a chunk line may not (above).
		{name: "bare LF line endings in the head", raw: "GET /lf HTTP/1.1\nHost: svc\nX: y\n\n", code: 200, reaches: []string{"GET /lf 0"}},
		{name: "a refused request pipelined behind a good one",
			raw:  "GET /ok HTTP/1.1\r\nHost: svc\r\n\r\nGET /fold HTTP/1.1\r\nHost: svc\r\nX: a\r\n b\r\n\r\n" + smuggled,
			code: 200, reaches: []string{"GET /ok 0"}, then: 400, counted: true},
	}
}

// TestMalformedRequestCorpus sends each request of the corpus as raw bytes
// to an inbound and an outbound listener of a real data plane, in front of
// a real upstream that records what reaches it: each gets its answer, a
// refused request (and a request pipelined behind it) never reaches the
// upstream, and those the request path refused are counted as downstream
// protocol errors (DPE) in istio_requests_total and the access log.
func TestMalformedRequestCorpus(t *testing.T) {
	up := newRecordingUpstream(t)
	reg := newRegistry()
	d := newDataplane(t, contract.Identity{WorkloadName: "w", Namespace: "default"}, reg)
	logPath := filepath.Join(t.TempDir(), "access.log")
	in := withAccessLogs(t, httpListener(t, "in", core.TrafficDirection_INBOUND, "",
		routeConfig("inbound|8080||", vhost("inbound", []string{"*"}, toCluster("all", prefixMatch("/"), "app")))),
		fileLog(t, logPath, jsonFormat(t, map[string]any{"code": "%RESPONSE_CODE%", "flags": "%RESPONSE_FLAGS%", "path": "%REQ(:PATH)%"}), nil))
	out := httpListener(t, "out", core.TrafficDirection_OUTBOUND, "",
		routeConfig("80", vhost("svc", []string{"svc"}, toCluster("all", prefixMatch("/"), "app"))))
	mustApply(t, d, resourcesAny(staticCluster(t, "app", up.addr), in, out))

	for _, lis := range []string{"in", "out"} {
		addr := d.ListenerAddr(lis).String()
		for _, tc := range strictCorpus() {
			t.Run(lis+"/"+tc.name, func(t *testing.T) {
				dpe := counterValue(t, reg, map[string]string{"response_flags": "DPE"})
				resps := rawExchange(t, addr, tc.raw)
				if len(resps) == 0 {
					t.Fatalf("no answer, want %d", tc.code)
				}
				if got := resps[0].StatusCode; got != tc.code {
					b, _ := io.ReadAll(resps[0].Body)
					t.Fatalf("answer %d %q, want %d", got, b, tc.code)
				}
				if tc.code >= 400 && !tc.open && !resps[0].Close {
					t.Errorf("the connection stays open after %d; want it closed", tc.code)
				}
				if tc.then != 0 && (len(resps) != 2 || resps[1].StatusCode != tc.then || !resps[1].Close) {
					t.Errorf("%d answers, want a second one, %d, closing the connection", len(resps), tc.then)
				}
				got := up.take()
				if strings.Join(got, "|") != strings.Join(tc.reaches, "|") {
					t.Errorf("the upstream got %q, want %q", got, tc.reaches)
				}
				wantDPE := 0.0
				if tc.counted {
					wantDPE = 1
				}
				if n := counterValue(t, reg, map[string]string{"response_flags": "DPE"}) - dpe; n != wantDPE {
					t.Errorf("istio_requests_total{response_flags=\"DPE\"} grew by %v, want %v", n, wantDPE)
				}
				if n := counterValue(t, reg, map[string]string{"response_flags": "UC"}); n != 0 {
					t.Errorf("istio_requests_total{response_flags=\"UC\"} = %v: a downstream error counted as the upstream's", n)
				}
			})
		}
	}
	// The inbound listener's access log has a DPE line for each counted case.
	d.accessLogs.Close()
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, tc := range strictCorpus() {
		if tc.counted {
			want++
		}
	}
	if n := strings.Count(string(b), `"flags":"DPE"`); n != want {
		t.Errorf("access log has %d DPE lines, want %d:\n%s", n, want, b)
	}
}

// TestHeaderLimitsFromConnectionManager: max_request_headers_kb and
// common_http_protocol_options.max_headers_count of the connection
// manager replace Envoy's defaults, per listener.
func TestHeaderLimitsFromConnectionManager(t *testing.T) {
	up := newRecordingUpstream(t)
	d := newDataplane(t, contract.Identity{}, nil)
	l := httpListener(t, "out", core.TrafficDirection_OUTBOUND, "",
		routeConfig("80", vhost("svc", []string{"svc"}, toCluster("all", prefixMatch("/"), "app"))))
	l = withHCM(t, l, func(m *hcmT) {
		m.MaxRequestHeadersKb = wrapperspb.UInt32(96)
		m.CommonHttpProtocolOptions = &core.HttpProtocolOptions{MaxHeadersCount: wrapperspb.UInt32(5)}
	})
	mustApply(t, d, resourcesAny(staticCluster(t, "app", up.addr), l))
	addr := d.ListenerAddr("out").String()
	for _, tc := range []struct {
		name, raw string
		code      int
	}{
		{"80 KiB of headers: under 96 KiB", "GET / HTTP/1.1\r\nHost: svc\r\nX: " + strings.Repeat("a", 80<<10) + "\r\n\r\n", 200},
		{"97 KiB of headers", "GET / HTTP/1.1\r\nHost: svc\r\nX: " + strings.Repeat("a", 97<<10) + "\r\n\r\n", 431},
		{"5 fields", "GET / HTTP/1.1\r\nHost: svc\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\n\r\n", 200},
		{"6 fields", "GET / HTTP/1.1\r\nHost: svc\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\n\r\n", 431},
	} {
		resps := rawExchange(t, addr, tc.raw)
		if len(resps) == 0 || resps[0].StatusCode != tc.code {
			t.Errorf("%s: answers %v, want %d", tc.name, resps, tc.code)
		}
	}

	bad := withHCM(t, httpListener(t, "bad", core.TrafficDirection_OUTBOUND, "", routeConfig("81")), func(m *hcmT) {
		m.MaxRequestHeadersKb = wrapperspb.UInt32(9000)
	})
	err := d.Apply(resourcesAny(staticCluster(t, "app", up.addr), bad))
	if err == nil || !strings.Contains(err.Error(), "max_request_headers_kb: 9000 out of range") {
		t.Errorf("Apply with max_request_headers_kb 9000: %v, want out of range", err)
	}
}

type hcmT = hcm.HttpConnectionManager

// withHCM changes l's (first chain's) connection manager with edit.
func withHCM(t testing.TB, l *listener.Listener, edit func(*hcm.HttpConnectionManager)) *listener.Listener {
	t.Helper()
	f := l.FilterChains[0].Filters[0]
	var m hcm.HttpConnectionManager
	if err := f.GetTypedConfig().UnmarshalTo(&m); err != nil {
		t.Fatal(err)
	}
	edit(&m)
	f.ConfigType = &listener.Filter_TypedConfig{TypedConfig: mustAny(t, &m)}
	return l
}

// TestMalformedBodyIsNotRetried: a request whose chunked body is
// malformed gets 400 DPE even on a route that retries resets and connect
// failures: no retry, and the endpoint is not blamed.
func TestMalformedBodyIsNotRetried(t *testing.T) {
	up := newRecordingUpstream(t)
	reg := newRegistry()
	d := newDataplane(t, contract.Identity{}, reg)
	r := withRetry(toCluster("all", prefixMatch("/"), "app"),
		&routev3.RetryPolicy{RetryOn: "reset,connect-failure,5xx", NumRetries: wrapperspb.UInt32(3)}, 0)
	mustApply(t, d, resourcesAny(staticCluster(t, "app", up.addr),
		httpListener(t, "out", core.TrafficDirection_OUTBOUND, "", routeConfig("80", vhost("svc", []string{"svc"}, r)))))
	resps := rawExchange(t, d.ListenerAddr("out").String(),
		"POST /bad HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n"+smuggled)
	if len(resps) != 1 || resps[0].StatusCode != 400 {
		t.Fatalf("answers %v, want one 400", resps)
	}
	if b, _ := io.ReadAll(resps[0].Body); string(b) != "Bad Request" {
		t.Errorf("body %q, want Envoy's %q", b, "Bad Request")
	}
	if got := up.take(); len(got) != 0 {
		t.Errorf("the upstream got %q", got)
	}
	if n := counterFamily(t, reg, "envoy_cluster_upstream_rq_retry"); n != 0 {
		t.Errorf("upstream_rq_retry = %v, want 0", n)
	}
	if n := counterValue(t, reg, map[string]string{"response_code": "400", "response_flags": "DPE"}); n != 1 {
		t.Errorf("istio_requests_total{response_code=400,response_flags=DPE} = %v, want 1", n)
	}
}

// TestMaxConnectionsPerListener: with Options.MaxConnectionsPerListener a
// listener holds at most that many connections; one more is closed at
// once without an answer and counted as an overflow, and a connection
// that closes makes room again.
func TestMaxConnectionsPerListener(t *testing.T) {
	up := newRecordingUpstream(t)
	reg := newRegistry()
	d, err := New(Options{Metrics: reg, MaxConnectionsPerListener: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		d.Close(ctx)
	})
	mustApply(t, d, resourcesAny(staticCluster(t, "app", up.addr),
		httpListener(t, "out", core.TrafficDirection_OUTBOUND, "", routeConfig("80", vhost("svc", []string{"svc"}, toCluster("all", prefixMatch("/"), "app"))))))
	addr := d.ListenerAddr("out").String()

	// open dials and makes one keep-alive request; it returns the open
	// connection, or nil when the proxy closed it without an answer.
	open := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "GET /ok HTTP/1.1\r\nHost: svc\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			c.Close()
			return nil
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		return c
	}
	a, b := open(), open()
	if a == nil || b == nil {
		t.Fatal("the first two connections were refused")
	}
	defer b.Close()
	if c := open(); c != nil {
		c.Close()
		t.Fatal("a third connection was served; want it closed")
	}
	if n := counterFamily(t, reg, "envoy_listener_downstream_cx_overflow"); n != 1 {
		t.Errorf("envoy_listener_downstream_cx_overflow = %v, want 1", n)
	}
	a.Close()
	// The proxy sees the close asynchronously: bounded retries.
	var c net.Conn
	for i := 0; i < 100 && c == nil; i++ {
		if c = open(); c == nil {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if c == nil {
		t.Fatal("no room after a connection closed")
	}
	c.Close()
}

// TestTruncatedBodyIsDownstreamDisconnect: a client that stops sending in
// the middle of a chunked body (and half-closes) gets no answer and is
// counted as a downstream disconnect (DC), as Envoy does, not as the
// upstream's failure or a protocol error.
func TestTruncatedBodyIsDownstreamDisconnect(t *testing.T) {
	up := newRecordingUpstream(t)
	reg := newRegistry()
	d := newDataplane(t, contract.Identity{}, reg)
	mustApply(t, d, resourcesAny(staticCluster(t, "app", up.addr),
		httpListener(t, "out", core.TrafficDirection_OUTBOUND, "", routeConfig("80", vhost("svc", []string{"svc"}, toCluster("all", prefixMatch("/"), "app"))))))
	c, err := net.Dial("tcp", d.ListenerAddr("out").String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "POST /cut HTTP/1.1\r\nHost: svc\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
	c.(*net.TCPConn).CloseWrite()
	if b, err := io.ReadAll(c); len(b) != 0 {
		t.Errorf("got %q (%v), want the connection closed without an answer", b, err)
	}
	if got := up.take(); len(got) != 0 {
		t.Errorf("the upstream got %q", got)
	}
	// The request is recorded after the connection closes: bounded wait.
	for i := 0; i < 100 && counterValue(t, reg, map[string]string{"response_flags": "DC"}) == 0; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if n := counterValue(t, reg, map[string]string{"response_flags": "DC", "response_code": "0"}); n != 1 {
		t.Errorf("istio_requests_total{response_flags=DC,response_code=0} = %v, want 1", n)
	}
	for _, f := range []string{"DPE", "UC"} {
		if n := counterValue(t, reg, map[string]string{"response_flags": f}); n != 0 {
			t.Errorf("istio_requests_total{response_flags=%s} = %v, want 0", f, n)
		}
	}
}

// TestConnectionTimeoutsFromConnectionManager: request_headers_timeout
// closes a connection whose request headers do not arrive in time, and
// common_http_protocol_options.idle_timeout one that stays idle after a
// request. (Bounded by a 10 s deadline; no timing is asserted.)
func TestConnectionTimeoutsFromConnectionManager(t *testing.T) {
	up := newRecordingUpstream(t)
	d := newDataplane(t, contract.Identity{}, nil)
	l := withHCM(t, httpListener(t, "out", core.TrafficDirection_OUTBOUND, "",
		routeConfig("80", vhost("svc", []string{"svc"}, toCluster("all", prefixMatch("/"), "app")))), func(m *hcmT) {
		m.RequestHeadersTimeout = durationpb.New(200 * time.Millisecond)
		m.CommonHttpProtocolOptions = &core.HttpProtocolOptions{IdleTimeout: durationpb.New(200 * time.Millisecond)}
	})
	mustApply(t, d, resourcesAny(staticCluster(t, "app", up.addr), l))
	addr := d.ListenerAddr("out").String()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		return c
	}

	slow := dial()
	defer slow.Close()
	io.WriteString(slow, "GET / HTTP/1.1\r\nHo")
	// net/http answers a request cut short by the timeout with its 400,
	// and closes the connection.
	if b, err := io.ReadAll(slow); err != nil || (len(b) != 0 && !strings.HasPrefix(string(b), "HTTP/1.1 400 ")) {
		t.Errorf("slow headers: read %q, %v; want the connection closed", b, err)
	}

	idle := dial()
	defer idle.Close()
	io.WriteString(idle, "GET / HTTP/1.1\r\nHost: svc\r\n\r\n")
	br := bufio.NewReader(idle)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 || resp.Close {
		t.Fatalf("first request: %v, %v", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	if b, err := io.ReadAll(br); err != nil || len(b) != 0 {
		t.Errorf("idle: read %q, %v; want the connection closed", b, err)
	}
}

// TestMalformedOverMutualTLS: HTTP/1.1 over mutual TLS gets the same
// framing check as plaintext — a head with a bare LF is refused with 400
// and never reaches the app — and a well-formed request on a new
// connection is served, with what the request path reads from TLS (the
// peer's identity in XFCC, x-forwarded-proto https) intact.
func TestMalformedOverMutualTLS(t *testing.T) {
	ca := proxytest.NewMeshCA(t)
	serverID, clientID := proxytest.SPIFFE("default", "reviews"), proxytest.SPIFFE("default", "productpage")
	d, _ := mtlsProxy(t, ca, "reviews", serverID, newRegistry())
	up := newRecordingUpstream(t)
	mustApply(t, d, inboundResources(t, proxytest.Strict, up.addr))
	addr := d.ListenerAddr("in").String()
	cert := ca.Issue(t, clientID, time.Hour)

	exchange := func(raw string) *http.Response {
		t.Helper()
		c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{*cert}, NextProtos: []string{"http/1.1"}}) //nolint:gosec // test client
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, raw); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	if resp := exchange("GET /fold HTTP/1.1\r\nHost: reviews\r\nX: a\r\n b\r\n\r\n"); resp.StatusCode != 400 || !resp.Close {
		t.Errorf("obsolete line folding over mutual TLS: %d (close %v), want 400 and the connection closed", resp.StatusCode, resp.Close)
	}
	if resp := exchange("GET /ok HTTP/1.1\r\nHost: reviews\r\nConnection: close\r\n\r\n"); resp.StatusCode != 200 {
		t.Errorf("a well-formed request over mutual TLS: %d", resp.StatusCode)
	}
	if got := up.take(); strings.Join(got, "|") != "GET /ok 0" {
		t.Errorf("the app got %q, want only the well-formed request", got)
	}
}
