package dataplane

import (
	stdmaps "maps"
	"testing"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"weft.dev/weft/internal/proxy/proxytest"
	"weft.dev/weft/internal/testenv"
	"weft.dev/weft/internal/xds/contract"
)

// h2specKnownFailures are the h2spec (v2.2.1) cases every listener
// fails, by "<section>/<case>" as h2spec numbers them, each with why: none
// now. Three that Go's HTTP/2 server fails by itself — a SETTINGS frame
// repeating a parameter (6.5.3/1) and requests with connection-specific
// header fields (8.1.2.2/1 and /2) — pass through the read side of
// Weft's own (h2guard; docs/proxy.md, "HTTP/2 conformance"). The test
// fails on any case not listed, and reports listed cases that pass (so
// the list shrinks).
var h2specKnownFailures = map[string]string{}

// h2specKnownFailuresH2C are the cases only a plaintext listener fails:
// it serves HTTP/1.1 and h2c (prior knowledge) on one port, as Envoy's
// codec_type AUTO does, so bytes that are not the HTTP/2 preface are an
// HTTP/1.1 request, answered 400 by HTTP/1.1, not a closed connection.
var h2specKnownFailuresH2C = map[string]string{
	"http2/3.5/2": "an invalid connection preface: answered as HTTP/1.1 (400), by design",
}

// TestH2Spec runs h2spec, the HTTP/2 conformance suite, against an
// inbound listener speaking h2c (prior knowledge) and a TLS listener
// offering h2 by ALPN, both forwarding to a real upstream; it logs the
// score and fails on a failure that is not a known one. h2spec comes
// from hack/tools.sh (skipped when missing, failed with
// WEFT_REQUIRE_TOOLS=1).
func TestH2Spec(t *testing.T) {
	ca := proxytest.NewMeshCA(t)
	id := proxytest.SPIFFE("default", "reviews")
	d, _ := mtlsProxy(t, ca, "reviews", id, nil)
	app := echoUpstream(t, "reviews-app", false)
	plain := inboundResources(t, proxytest.Disable, app)
	tlsL := proxytest.InboundListener(t, "in-tls", proxytest.Disable, routeConfig("inbound|9080||",
		vhost("inbound|http|9080", []string{"*"}, toCluster("default", prefixMatch("/"), "inbound|9080||"))))
	// TLS without a client certificate (a gateway's SIMPLE mode): h2spec
	// has none to present.
	tlsL.FilterChains[0].TransportSocket = proxytest.TLSSocket(t, &tlsv3.DownstreamTlsContext{
		CommonTlsContext: &tlsv3.CommonTlsContext{
			AlpnProtocols:                  []string{"h2", "http/1.1"},
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{proxytest.SDSSecret(contract.SecretDefault)},
		}})
	plain.Listeners[tlsL.Name] = tlsL
	mustApply(t, d, plain)

	for _, tc := range []struct {
		name, listener string
		tls            bool
		known          map[string]string
	}{
		{"h2c", "in", false, h2specKnownFailuresH2C},
		{"tls-alpn-h2", "in-tls", true, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			known := stdmaps.Clone(h2specKnownFailures)
			stdmaps.Copy(known, tc.known)
			results := testenv.H2Spec(t, addrPort(d.ListenerAddr(tc.listener)).Port(), tc.tls)
			testenv.CheckH2Spec(t, results, known)
		})
	}
}
