package h2rpc

import (
	"crypto/tls"
	"net"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc/credentials"

	"weft.dev/weft/internal/proxy/proxytest"
	"weft.dev/weft/internal/testenv"
)

// h2specKnownFailures are the h2spec (v2.2.1) cases the xDS ports fail,
// each with why.
var h2specKnownFailures = map[string]string{
	// A request that is not gRPC is answered at once (415), before its
	// body: a content-length that its DATA frames then contradict is not
	// seen. gRPC requests carry no content-length.
	"http2/8.1.2.6/1": "content-length unequal to the DATA: answered before the body",
	"http2/8.1.2.6/2": "content-length unequal to the sum of the DATA: answered before the body",
	// The answer (above) ends the stream before h2spec's WINDOW_UPDATEs
	// overflow its window; passes when they arrive first.
	"http2/6.9.1/3": "a stream's window overflow after the stream ended",
	// Failed about one run in 80: the SETTINGS ACK could follow the DATA
	// the larger window released, and h2spec reads them in the other
	// order. Since 2026-12-06 the ACK is queued before the window
	// changes (as Go's server does), and 40 runs passed; listed until it
	// has passed for longer.
	"http2/6.9.2/1": "SETTINGS_INITIAL_WINDOW_SIZE changed while the answer is on its way",
}

// TestH2Spec runs h2spec, the HTTP/2 conformance suite, against the
// server in cleartext (h2c, prior knowledge, as gRPC) and over TLS (h2
// by ALPN), and fails on any failure not known.
func TestH2Spec(t *testing.T) {
	if testing.Short() {
		t.Skip("h2spec runs 145 cases per port")
	}
	cert := proxytest.NewMeshCA(t).Issue(t, "", time.Hour, "server")
	for _, tc := range []struct {
		name string
		s    *Server
		tls  bool
	}{
		{"h2c", &Server{}, false},
		{"tls-alpn-h2", &Server{Credentials: credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{*cert}})}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, port, _ := net.SplitHostPort(serve(t, tc.s))
			p, _ := strconv.Atoi(port)
			testenv.CheckH2Spec(t, testenv.H2Spec(t, uint16(p), tc.tls), h2specKnownFailures)
		})
	}
}
