package dataplane

import (
	"io"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"weft.dev/weft/internal/xds/contract"
)

// TestHTTP10: a connection manager with accept_http_10 serves HTTP/1.0
// requests, kept alive when they ask; one without a Host takes
// default_host_for_http_10, and without that either is answered 400
// (Envoy's missing_host_header); Transfer-Encoding on HTTP/1.0 is
// refused whatever the options. Without accept_http_10 the corpus of
// TestMalformedRequestCorpus has the 426.
func TestHTTP10(t *testing.T) {
	up := newRecordingUpstream(t)
	reg := newRegistry()
	d := newDataplane(t, contract.Identity{}, reg)
	route := routeConfig("80", vhost("svc", []string{"svc"}, toCluster("all", prefixMatch("/"), "app")))
	mustApply(t, d, resourcesAny(staticCluster(t, "app", up.addr),
		withHCM(t, httpListener(t, "on", core.TrafficDirection_OUTBOUND, "", route), func(m *hcmT) {
			m.HttpProtocolOptions = &core.Http1ProtocolOptions{AcceptHttp_10: true}
		}),
		withHCM(t, httpListener(t, "default-host", core.TrafficDirection_OUTBOUND, "", route), func(m *hcmT) {
			m.HttpProtocolOptions = &core.Http1ProtocolOptions{AcceptHttp_10: true, DefaultHostForHttp_10: "svc"}
		})))
	for _, tc := range []struct {
		name, listener, raw string
		codes               []int
		reaches             []string
	}{
		{"a request with a Host", "on", "GET /a HTTP/1.0\r\nHost: svc\r\n\r\n", []int{200}, []string{"GET /a 0"}},
		{"kept alive", "on", "GET /a HTTP/1.0\r\nHost: svc\r\nConnection: keep-alive\r\n\r\nPOST /b HTTP/1.0\r\nHost: svc\r\nContent-Length: 2\r\n\r\nhi",
			[]int{200, 200}, []string{"GET /a 0", "POST /b 2"}},
		{"no Host, no default host", "on", "GET /a HTTP/1.0\r\n\r\n", []int{400}, nil},
		{"no Host, the default host", "default-host", "GET /a HTTP/1.0\r\n\r\n", []int{200}, []string{"GET /a 0"}},
		{"a Host wins over the default host", "default-host", "GET /a HTTP/1.0\r\nHost: other\r\n\r\n", []int{404}, nil},
		{"Transfer-Encoding", "on", "POST /a HTTP/1.0\r\nHost: svc\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n" + smuggled, []int{400}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resps := rawExchange(t, d.ListenerAddr(tc.listener).String(), tc.raw)
			var codes []int
			for _, r := range resps {
				codes = append(codes, r.StatusCode)
			}
			if len(codes) != len(tc.codes) {
				t.Fatalf("answers %v, want %v", codes, tc.codes)
			}
			for i := range codes {
				if codes[i] != tc.codes[i] {
					b, _ := io.ReadAll(resps[i].Body)
					t.Fatalf("answers %v (%q), want %v", codes, b, tc.codes)
				}
			}
			if got := up.take(); len(got) != len(tc.reaches) || (len(got) > 0 && got[len(got)-1] != tc.reaches[len(tc.reaches)-1]) {
				t.Errorf("the upstream got %q, want %q", got, tc.reaches)
			}
		})
	}
	if n := counterValue(t, reg, map[string]string{"response_code": "400", "response_flags": "-"}); n != 1 {
		t.Errorf("istio_requests_total{response_code=400, response_flags=-} = %v, want 1 (the request without a Host; the refused framing is DPE)", n)
	}
}
