package dataplane

import (
	"context"
	"crypto/tls"
	"net/http"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
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
