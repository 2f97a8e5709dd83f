package dataplane

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/types/known/durationpb"

	"weft.dev/weft/internal/proxy/proxytest"
	"weft.dev/weft/internal/xds/contract"
)

// TestSlowLorisHTTP2ClosedWhileServing attacks a listener with slow
// HTTP/2 connections — h2c (prior knowledge) and TLS with ALPN h2 — of
// both kinds (lorisKind): the preface, SETTINGS and then only PINGs, or
// a header block never ended, a CONTINUATION frame every 100 ms. Go's
// HTTP/2 server alone would hold each until the idle timeout (1 h);
// with request_headers_timeout (1 s here) every one is closed by the
// proxy (h2guard) and counted in envoy_listener_http2_header_timeout,
// while clients with connections opened before the attack — HTTP/1.1 and
// HTTP/2 — go on being answered. Bounded in count (200 attack
// connections per case, 100 normal requests) and time (a context);
// no timing is asserted.
func TestSlowLorisHTTP2ClosedWhileServing(t *testing.T) {
	if testing.Short() {
		t.Skip("opens hundreds of connections")
	}
	const (
		attempts   = 200
		normalReqs = 100
	)
	headersTimeout := func(m *hcmT) { m.RequestHeadersTimeout = durationpb.New(time.Second) }
	reg := newRegistry()
	ca := proxytest.NewMeshCA(t)
	d, _ := mtlsProxy(t, ca, "reviews", proxytest.SPIFFE("default", "reviews"), reg)
	app := echoUpstream(t, "reviews-app", false)
	res := inboundResources(t, proxytest.Disable, app)
	res.Listeners["in"] = withHCM(t, res.Listeners["in"], headersTimeout)
	tlsL := proxytest.InboundListener(t, "in-tls", proxytest.Disable, routeConfig("inbound|9080||",
		vhost("inbound|http|9080", []string{"*"}, toCluster("default", prefixMatch("/"), "inbound|9080||"))))
	tlsL.FilterChains[0].TransportSocket = proxytest.TLSSocket(t, &tlsv3.DownstreamTlsContext{
		CommonTlsContext: &tlsv3.CommonTlsContext{
			AlpnProtocols:                  []string{"h2", "http/1.1"},
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{proxytest.SDSSecret(contract.SecretDefault)},
		}})
	res.Listeners["in-tls"] = withHCM(t, tlsL, headersTimeout)
	mustApply(t, d, res)
	plain, secure := d.ListenerAddr("in").String(), d.ListenerAddr("in-tls").String()

	for _, tc := range []struct {
		name string
		kind lorisKind
		tls  bool
	}{
		{"h2c-idle", lorisH2Idle, false},
		{"h2c-headers", lorisH2Headers, false},
		{"tls-h2-idle", lorisH2Idle, true},
		{"tls-h2-headers", lorisH2Headers, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, scheme := plain, "http"
			var attackTLS *tls.Config
			var normal []*http.Client
			if tc.tls {
				addr, scheme = secure, "https"
				attackTLS = &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}} //nolint:gosec // test client
				normal = []*http.Client{mtlsClient(t, nil, true), mtlsClient(t, nil, false)}
			} else {
				normal = []*http.Client{client(t, true), client(t, false)}
			}
			url := scheme + "://" + addr + "/ok"
			// The normal clients' connections are open before the attack.
			for _, c := range normal {
				if r := do(t, c, "GET", url, "svc", nil); r.code != 200 {
					t.Fatalf("before the attack: status %d", r.code)
				}
			}
			before := counterFamily(t, reg, "envoy_listener_http2_header_timeout")

			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			attack := newSlowLoris(ctx, addr, attempts, false, tc.kind, attackTLS)
			defer attack.stop()
			for i := 0; i < 500 && attack.dialled.Load() < attempts/2; i++ {
				time.Sleep(10 * time.Millisecond)
			}
			for i := range normalReqs {
				if r := do(t, normal[i%len(normal)], "GET", url, "svc", nil); r.code != 200 {
					t.Fatalf("normal request %d during the attack: status %d (%d attack connections dialled)", i, r.code, attack.dialled.Load())
				}
				if i%10 == 0 {
					time.Sleep(5 * time.Millisecond) // spread over the attack
				}
			}
			// The attack ends when the proxy has closed every one of its
			// connections: an attacker never closes one itself.
			attack.wait()
			if ctx.Err() != nil {
				t.Fatalf("the proxy did not close every slow HTTP/2 connection within 60 s (%d dialled)", attack.dialled.Load())
			}
			timedOut := counterFamily(t, reg, "envoy_listener_http2_header_timeout") - before
			t.Logf("slow HTTP/2 (%s): %d dialled, %v closed by request_headers_timeout", tc.kind, attack.dialled.Load(), timedOut)
			if attack.dialled.Load() != attempts {
				t.Errorf("%d of %d attack connections were dialled", attack.dialled.Load(), attempts)
			}
			if timedOut != attempts {
				t.Errorf("envoy_listener_http2_header_timeout grew by %v, want %d (one per attack connection)", timedOut, attempts)
			}
			// And the normal clients are still served, on the
			// connections they had or new ones.
			for _, c := range normal {
				if r := do(t, c, "GET", url, "svc", nil); r.code != 200 {
					t.Fatalf("after the attack: status %d", r.code)
				}
			}
		})
	}
}

// TestStreamIdleTimeoutHTTP2: an HTTP/2 client that opens streams and
// then lets nothing move — it never opens the flow-control window for
// the responses (SETTINGS_INITIAL_WINDOW_SIZE 0) or never sends the body
// it announced — has each stream reset after stream_idle_timeout (1 s
// here; Envoy's default is 5 min) — counted in
// envoy_listener_http2_stream_idle_timeout when the proxy was still
// working on it — while another client is served. Bounded: 40 streams, a 30 s deadline on the connection; no
// timing is asserted.
func TestStreamIdleTimeoutHTTP2(t *testing.T) {
	const gets, posts = 20, 20
	d, reg := limitedDataplane(t, Options{}, func(m *hcmT) { m.StreamIdleTimeout = durationpb.New(time.Second) })
	addr := d.ListenerAddr("out").String()

	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(c, http2.ClientPreface)
	fr := http2.NewFramer(c, c)
	fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0})
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	block := func(method string) []byte {
		hb.Reset()
		for _, f := range []hpack.HeaderField{{Name: ":method", Value: method}, {Name: ":scheme", Value: "http"},
			{Name: ":path", Value: "/idle"}, {Name: ":authority", Value: "svc"}, {Name: "content-length", Value: "10"}} {
			if method == "GET" && f.Name == "content-length" {
				continue
			}
			enc.WriteField(f)
		}
		return bytes.Clone(hb.Bytes())
	}
	streams := map[uint32]string{}
	for i := range gets + posts {
		id := uint32(2*i + 1)
		method := "GET"
		if i >= gets {
			method = "POST" // announces a body it never sends
		}
		streams[id] = method
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block(method), EndHeaders: true, EndStream: method == "GET"}); err != nil {
			t.Fatal(err)
		}
	}

	// Another client is served meanwhile.
	if r := do(t, client(t, true), "GET", "http://"+addr+"/ok", "svc", nil); r.code != 200 {
		t.Fatalf("another client: status %d", r.code)
	}

	reset := map[uint32]bool{}
	for len(reset) < len(streams) {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("after %d of %d streams reset (%v): %v", len(reset), len(streams), reset, err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.RSTStreamFrame:
			reset[f.StreamID] = true
		case *http2.DataFrame:
			if len(f.Data()) > 0 {
				t.Errorf("stream %d: %d bytes of DATA with a window of 0", f.StreamID, len(f.Data()))
			}
		case *http2.GoAwayFrame:
			t.Fatalf("GOAWAY %v after %d streams reset", f.ErrCode, len(reset))
		}
	}
	// The GETs' small responses were written before the window stopped
	// them: they wait for it after the proxy is done. h2server's sweep
	// resets them as it resets the POSTs (whose bodies the proxy waits
	// for), and counts them; with Go's server (WEFT_HTTP2_SERVER=go) the
	// write deadline resets them, uncounted.
	if n := counterFamily(t, reg, "envoy_listener_http2_stream_idle_timeout"); n < posts {
		t.Errorf("envoy_listener_http2_stream_idle_timeout = %v, want at least %d", n, posts)
	}
	if r := do(t, client(t, true), "GET", "http://"+addr+"/ok", "svc", nil); r.code != 200 {
		t.Fatalf("after the resets: status %d", r.code)
	}
}

// TestStreamIdleTimeoutKeepsMovingStreams: a response that keeps moving
// outlives the stream idle timeout many times over — the watch pushes the
// stream's write deadline (twice the timeout) on while it moves — and
// the last bytes, written as the handler returns, still arrive. 1 s
// timeout, a 4 s response of a chunk every 250 ms; no timing is asserted.
func TestStreamIdleTimeoutKeepsMovingStreams(t *testing.T) {
	const chunks = 16
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for i := range chunks {
			fmt.Fprintf(w, "chunk %d\n", i)
			w.(http.Flusher).Flush()
			select {
			case <-time.After(250 * time.Millisecond):
			case <-r.Context().Done():
				return
			}
		}
	}))
	t.Cleanup(up.Close)
	d := newDataplane(t, contract.Identity{WorkloadName: "client", Namespace: "default"}, nil)
	l := httpListener(t, "out", core.TrafficDirection_OUTBOUND, "",
		routeConfig("80", vhost("svc", []string{"svc"}, toCluster("all", prefixMatch("/"), "app"))))
	mustApply(t, d, resourcesAny(staticCluster(t, "app", up.Listener.Addr().String()),
		withHCM(t, l, func(m *hcmT) { m.StreamIdleTimeout = durationpb.New(time.Second) })))
	r := do(t, client(t, true), "GET", "http://"+d.ListenerAddr("out").String()+"/slow", "svc", nil)
	if r.code != 200 || strings.Count(r.body, "chunk ") != chunks {
		t.Fatalf("status %d, body %q: want all %d chunks", r.code, r.body, chunks)
	}
}

// TestStreamIdleTimeoutEndsUpstreamWait: an HTTP/2 stream whose upstream
// never answers is idle too. The watch resets it after
// stream_idle_timeout (1 s here), the client's request fails, and the
// upstream request is cancelled — its context ends — rather than held
// until the upstream gives up. Bounded: the upstream handler returns
// when its request ends or after 30 s.
func TestStreamIdleTimeoutEndsUpstreamWait(t *testing.T) {
	cancelled := make(chan struct{}, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
			cancelled <- struct{}{}
		case <-time.After(30 * time.Second):
		}
	}))
	t.Cleanup(up.Close)
	reg := newRegistry()
	d := newDataplane(t, contract.Identity{WorkloadName: "client", Namespace: "default"}, reg)
	l := httpListener(t, "out", core.TrafficDirection_OUTBOUND, "",
		routeConfig("80", vhost("svc", []string{"svc"}, toCluster("all", prefixMatch("/"), "app"))))
	mustApply(t, d, resourcesAny(staticCluster(t, "app", up.Listener.Addr().String()),
		withHCM(t, l, func(m *hcmT) { m.StreamIdleTimeout = durationpb.New(time.Second) })))
	req, _ := http.NewRequest("GET", "http://"+d.ListenerAddr("out").String()+"/hang", nil)
	req.Host = "svc"
	resp, err := client(t, true).Do(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("status %d: want the stream reset", resp.StatusCode)
	}
	select {
	case <-cancelled:
	case <-time.After(20 * time.Second):
		t.Fatal("the upstream request was not cancelled when the stream was reset")
	}
	if n := counterFamily(t, reg, "envoy_listener_http2_stream_idle_timeout"); n != 1 {
		t.Errorf("envoy_listener_http2_stream_idle_timeout = %v, want 1", n)
	}
}
