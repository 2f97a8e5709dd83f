package dataplane

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"weft.dev/weft/internal/proxy/h2guard"
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
// table, are answered by the upstream.
func TestMalformedHTTP2Requests(t *testing.T) {
	up := newRecordingUpstream(t)
	reg := newRegistry()
	d := newDataplane(t, contract.Identity{WorkloadName: "w", Namespace: "default"}, reg)
	mustApply(t, d, resourcesAny(staticCluster(t, "app", up.addr),
		httpListener(t, "in", core.TrafficDirection_INBOUND, "",
			routeConfig("inbound|8080||", vhost("inbound", []string{"*"}, toCluster("all", prefixMatch("/"), "app"))))))

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", d.ListenerAddr("in").String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	c.SetDeadline(deadline)
	if _, err := c.Write([]byte(h2guard.Preface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	send := func(stream uint32, fields ...string) {
		t.Helper()
		hb.Reset()
		fields = append([]string{":method", "GET", ":scheme", "http", ":authority", "w", ":path"}, fields...)
		for i := 0; i < len(fields); i += 2 {
			enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
		}
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: stream, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
	}
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}

	type want struct {
		stream uint32
		reset  bool // else answered 200
	}
	cases := []struct {
		fields []string
		want   want
	}{
		{[]string{"/ok-1", "x-a", "1"}, want{1, false}},
		{[]string{"/connection", "x-b", "2", "connection", "keep-alive"}, want{3, true}},
		{[]string{"/ok-2", "x-a", "1", "x-b", "2"}, want{5, false}},
		{[]string{"/upgrade", "upgrade", "websocket"}, want{7, true}},
		{[]string{"/te", "te", "gzip"}, want{9, true}},
		{[]string{"/transfer-encoding", "transfer-encoding", "chunked"}, want{11, true}},
		{[]string{"/grpc-te", "te", "trailers"}, want{13, false}},
		{[]string{"/ok-3", "x-b", "2"}, want{15, false}},
	}
	for _, tc := range cases {
		send(tc.want.stream, tc.fields...)
	}
	got := map[uint32]bool{} // stream -> reset
	for len(got) < len(cases) {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("after %d answers: %v", len(got), err)
		}
		switch f := f.(type) {
		case *http2.RSTStreamFrame:
			if f.ErrCode != http2.ErrCodeProtocol {
				t.Errorf("stream %d reset with %v, want PROTOCOL_ERROR", f.StreamID, f.ErrCode)
			}
			got[f.StreamID] = true
		case *http2.MetaHeadersFrame:
			if s := f.PseudoValue("status"); s != "200" {
				t.Errorf("stream %d answered %s, want 200", f.StreamID, s)
			}
			got[f.StreamID] = false
		case *http2.GoAwayFrame:
			t.Fatalf("GOAWAY %v: the connection ended", f.ErrCode)
		}
	}
	for _, tc := range cases {
		if r, ok := got[tc.want.stream]; !ok || r != tc.want.reset {
			t.Errorf("stream %d %v: reset %v, want %v", tc.want.stream, tc.fields[0], r, tc.want.reset)
		}
	}
	seen := map[string]bool{}
	for _, s := range up.take() {
		seen[s] = true
	}
	for _, p := range []string{"/ok-1", "/ok-2", "/grpc-te", "/ok-3"} {
		if !seen["GET "+p+" 0"] {
			t.Errorf("the upstream did not get %s", p)
		}
	}
	if len(seen) != 4 {
		t.Errorf("the upstream got %v, want the 4 well-formed requests only", seen)
	}
	if n := counterFamily(t, reg, "envoy_listener_http2_rx_messaging_error"); n != 4 {
		t.Errorf("envoy_listener_http2_rx_messaging_error = %v, want 4", n)
	}
}
