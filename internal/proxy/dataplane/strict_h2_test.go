package dataplane

import (
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"weft.dev/weft/internal/proxy/proxytest"
	"weft.dev/weft/internal/xds/contract"
)

// TestMalformedHTTP2Requests sends HTTP/2 requests over one h2c
// connection, frame by frame, to a listener in front of a real upstream
// that records what reaches it. A request with a connection-specific
// header field or TE other than "trailers" (RFC 9113 §8.2.2) is reset
// with RST_STREAM(PROTOCOL_ERROR), as Envoy's codec does, and counted in
// envoy_listener_http2_rx_messaging_error; it never reaches the upstream
// (Go's HTTP/2 server alone answers such requests 400 itself). The
// connection goes on: the well-formed requests between and after them,
// whose header blocks refer to fields the malformed ones put in HPACK's
// table, are answered by the upstream — also after a malformed request
// with a body, whose DATA frames are dropped (with Go's HTTP/2 server,
// WEFT_HTTP2_SERVER=go, they end the connection).
func TestMalformedHTTP2Requests(t *testing.T) {
	up := newRecordingUpstream(t)
	reg := newRegistry()
	d := newDataplane(t, contract.Identity{WorkloadName: "w", Namespace: "default"}, reg)
	mustApply(t, d, resourcesAny(staticCluster(t, "app", up.addr),
		httpListener(t, "in", core.TrafficDirection_INBOUND, "",
			routeConfig("inbound|8080||", vhost("inbound", []string{"*"}, toCluster("all", prefixMatch("/"), "app"))))))

	h := proxytest.DialH2C(t, d.ListenerAddr("in").String(), time.Now().Add(20*time.Second))
	type h2case struct {
		stream uint32
		fields []string // path, then extra fields
		want   string   // :status or the reset's code
	}
	cases := []h2case{
		{1, []string{"/ok-1", "x-a", "1"}, "200"},
		{3, []string{"/connection", "x-b", "2", "connection", "keep-alive"}, "PROTOCOL_ERROR"},
		{5, []string{"/ok-2", "x-a", "1", "x-b", "2"}, "200"},
		{7, []string{"/upgrade", "upgrade", "websocket"}, "PROTOCOL_ERROR"},
		{9, []string{"/te", "te", "gzip"}, "PROTOCOL_ERROR"},
		{11, []string{"/transfer-encoding", "transfer-encoding", "chunked"}, "PROTOCOL_ERROR"},
		{13, []string{"/grpc-te", "te", "trailers"}, "200"},
		{15, []string{"/ok-3", "x-b", "2"}, "200"},
	}
	for _, tc := range cases {
		h.Get(tc.stream, "w", tc.fields[0], tc.fields[1:]...)
	}
	wellFormed := []string{"/ok-1", "/ok-2", "/grpc-te", "/ok-3"}
	if !goHTTP2 {
		h.Post(17, "w", "/malformed-with-body", []byte("body"), "connection", "close")
		h.Get(19, "w", "/ok-4")
		cases = append(cases, h2case{17, []string{"/malformed-with-body"}, "PROTOCOL_ERROR"}, h2case{19, []string{"/ok-4"}, "200"})
		wellFormed = append(wellFormed, "/ok-4")
	}
	// No :authority (empty) and no Host: not malformed for HTTP/2, but
	// Envoy's connection manager answers it 400 (missing_host_header).
	h.Get(21, "", "/no-authority")
	cases = append(cases, h2case{21, []string{"/no-authority"}, "400"})
	got := h.Answers(len(cases))
	for _, tc := range cases {
		if got[tc.stream] != tc.want {
			t.Errorf("stream %d %s: %q, want %q", tc.stream, tc.fields[0], got[tc.stream], tc.want)
		}
	}
	seen := map[string]bool{}
	for _, s := range up.take() {
		seen[s] = true
	}
	for _, p := range wellFormed {
		if !seen["GET "+p+" 0"] {
			t.Errorf("the upstream did not get %s", p)
		}
	}
	if len(seen) != len(wellFormed) {
		t.Errorf("the upstream got %v, want the %d well-formed requests only", seen, len(wellFormed))
	}
	malformed := 0
	for _, tc := range cases {
		if tc.want == "PROTOCOL_ERROR" {
			malformed++
		}
	}
	if n, want := counterFamily(t, reg, "envoy_listener_http2_rx_messaging_error"), float64(malformed); n != want {
		t.Errorf("envoy_listener_http2_rx_messaging_error = %v, want %v", n, want)
	}
}
