package h2rpc

import (
	"bytes"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"weft.dev/weft/internal/h2wire"
)

// rawClient speaks HTTP/2 frames to the server directly, for what a
// well-behaved gRPC client never does.
type rawClient struct {
	t  *testing.T
	nc net.Conn
	fr *http2.Framer
}

func rawDial(t *testing.T, addr string) *rawClient {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := nc.Write([]byte(h2wire.Preface)); err != nil {
		t.Fatal(err)
	}
	c := &rawClient{t: t, nc: nc, fr: http2.NewFramer(nc, nc)}
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.AllowIllegalWrites = true // the tests write what clients must not
	if err := c.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return c
}

// next reads frames until one that match accepts; it fails the test at
// the connection's end.
func (c *rawClient) next(match func(http2.Frame) bool) http2.Frame {
	c.t.Helper()
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			c.t.Fatalf("reading frames: %v", err)
		}
		if match(f) {
			return f
		}
	}
}

// closed waits for the server to close the connection.
func (c *rawClient) closed() {
	c.t.Helper()
	for {
		if _, err := c.fr.ReadFrame(); err != nil {
			return
		}
	}
}

func isGoAway(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok }

func (c *rawClient) headers(id uint32, end bool, fields ...string) {
	c.t.Helper()
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	for i := 0; i < len(fields); i += 2 {
		_ = enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	if err := c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: buf.Bytes(), EndHeaders: true, EndStream: end}); err != nil {
		c.t.Fatal(err)
	}
}

// TestKeepaliveClosesSilentPeer: a quiet connection is pinged, and closed
// when the ping is not answered.
func TestKeepaliveClosesSilentPeer(t *testing.T) {
	addr := serve(t, &Server{KeepaliveTime: 100 * time.Millisecond, KeepaliveTimeout: 100 * time.Millisecond})
	c := rawDial(t, addr)
	c.next(func(f http2.Frame) bool { p, ok := f.(*http2.PingFrame); return ok && !p.IsAck() })
	c.closed()
}

// TestKeepaliveAnswered: a peer that answers pings stays connected.
func TestKeepaliveAnswered(t *testing.T) {
	addr := serve(t, &Server{KeepaliveTime: 50 * time.Millisecond, KeepaliveTimeout: 50 * time.Millisecond})
	c := rawDial(t, addr)
	for range 5 {
		p := c.next(func(f http2.Frame) bool { p, ok := f.(*http2.PingFrame); return ok && !p.IsAck() }).(*http2.PingFrame)
		if err := c.fr.WritePing(true, p.Data); err != nil {
			t.Fatal(err)
		}
	}
}

// TestTooManyPings: a client pinging faster than allowed is sent GOAWAY
// ENHANCE_YOUR_CALM "too_many_pings", as gRPC-Go's server does.
func TestTooManyPings(t *testing.T) {
	addr := serve(t, &Server{MinPingInterval: time.Hour})
	c := rawDial(t, addr)
	for range 4 {
		if err := c.fr.WritePing(false, [8]byte{1}); err != nil {
			t.Fatal(err)
		}
	}
	g := c.next(isGoAway).(*http2.GoAwayFrame)
	if g.ErrCode != http2.ErrCodeEnhanceYourCalm || string(g.DebugData()) != "too_many_pings" {
		t.Fatalf("GOAWAY %v %q", g.ErrCode, g.DebugData())
	}
	c.closed()
}

// TestProtocolErrors: a connection error is answered with GOAWAY and its
// code, then the connection is closed.
func TestProtocolErrors(t *testing.T) {
	addr := serve(t, &Server{})
	for name, tc := range map[string]struct {
		send func(c *rawClient)
		code http2.ErrCode
	}{
		"DATA on stream 0": {func(c *rawClient) { _ = c.fr.WriteData(0, false, []byte("x")) }, http2.ErrCodeProtocol},
		"even stream": {func(c *rawClient) {
			c.headers(2, false, ":method", "POST", ":path", "/a/b", ":scheme", "http", "content-type", "application/grpc")
		}, http2.ErrCodeProtocol},
		"PUSH_PROMISE": {func(c *rawClient) {
			_ = c.fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, EndHeaders: true})
		}, http2.ErrCodeProtocol},
		"bad HPACK": {func(c *rawClient) {
			_ = c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0xff, 0xff, 0xff, 0xff}, EndHeaders: true})
		}, http2.ErrCodeCompression},
		"window overflow":    {func(c *rawClient) { _ = c.fr.WriteWindowUpdate(0, 1<<31-1) }, http2.ErrCodeFlowControl},
		"CONTINUATION alone": {func(c *rawClient) { _ = c.fr.WriteContinuation(1, true, []byte{0x82}) }, http2.ErrCodeProtocol},
	} {
		t.Run(name, func(t *testing.T) {
			c := rawDial(t, addr)
			tc.send(c)
			g := c.next(isGoAway).(*http2.GoAwayFrame)
			if g.ErrCode != tc.code {
				t.Fatalf("GOAWAY %v (%q), want %v", g.ErrCode, g.DebugData(), tc.code)
			}
			c.closed()
		})
	}
}

// TestNotGRPC: requests that are not gRPC are answered with an HTTP
// status, and the connection serves on.
func TestNotGRPC(t *testing.T) {
	addr := serve(t, &Server{})
	c := rawDial(t, addr)
	for i, tc := range []struct {
		fields []string
		status string
	}{
		{[]string{":method", "GET", ":path", "/a/b", ":scheme", "http"}, "405"},
		{[]string{":method", "POST", ":path", "/a/b", ":scheme", "http", "content-type", "text/plain"}, "415"},
	} {
		id := uint32(2*i + 1)
		c.headers(id, true, tc.fields...)
		h := c.next(func(f http2.Frame) bool { h, ok := f.(*http2.MetaHeadersFrame); return ok && h.StreamID == id }).(*http2.MetaHeadersFrame)
		if got := h.PseudoValue("status"); got != tc.status {
			t.Errorf("%v: status %q, want %s", tc.fields, got, tc.status)
		}
	}
}

// TestMaxConnectionAge: an old connection is sent GOAWAY NO_ERROR, then
// closed after the grace.
func TestMaxConnectionAge(t *testing.T) {
	addr := serve(t, &Server{MaxConnectionAge: 100 * time.Millisecond, MaxConnectionAgeGrace: 100 * time.Millisecond})
	c := rawDial(t, addr)
	g := c.next(isGoAway).(*http2.GoAwayFrame)
	if g.ErrCode != http2.ErrCodeNo {
		t.Fatalf("GOAWAY %v", g.ErrCode)
	}
	c.closed()
}

// TestMalformedRequests: a malformed request (RFC 9113 §8.1.1) is a
// stream error, PROTOCOL_ERROR; the connection serves on.
func TestMalformedRequests(t *testing.T) {
	addr := serve(t, &Server{})
	c := rawDial(t, addr)
	base := []string{":method", "POST", ":scheme", "http", ":path", echoMethod, "content-type", "application/grpc"}
	for i, fields := range [][]string{
		{":method", "POST", ":scheme", "http", "content-type", "application/grpc"}, // no :path
		append(append([]string{}, base...), ":authority", "late"),                  // pseudo after regular
		append(append([]string{}, base...), "Upper", "x"),                          // uppercase name
		append(append([]string{}, base...), "connection", "close"),                 // connection-specific
		append(append([]string{}, base...), "te", "gzip"),                          // te other than trailers
		append([]string{":method", "POST", ":method", "POST"}, base[2:]...),        // duplicated pseudo
		append([]string{":status", "200"}, base...),                                // a response's pseudo
	} {
		id := uint32(2*i + 1)
		c.headers(id, true, fields...)
		rst := c.next(func(f http2.Frame) bool { r, ok := f.(*http2.RSTStreamFrame); return ok && r.StreamID == id }).(*http2.RSTStreamFrame)
		if rst.ErrCode != http2.ErrCodeProtocol {
			t.Errorf("%v: RST_STREAM %v, want PROTOCOL_ERROR", fields, rst.ErrCode)
		}
	}
}

// TestInitialWindowChangeAppliesToOpenStreams: a SETTINGS change of the
// initial window moves the windows of streams already open by the
// difference (RFC 9113 §6.9.2): an answer held by a window of 0 goes out
// a byte at a time as the client raises it to 1, then the rest with a
// WINDOW_UPDATE.
func TestInitialWindowChangeAppliesToOpenStreams(t *testing.T) {
	addr := serve(t, &Server{})
	c := rawDial(t, addr)
	if err := c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}); err != nil {
		t.Fatal(err)
	}
	c.next(func(f http2.Frame) bool { s, ok := f.(*http2.SettingsFrame); return ok && s.IsAck() })
	c.headers(1, true, ":method", "GET", ":path", "/a/b", ":scheme", "http")
	c.next(func(f http2.Frame) bool { h, ok := f.(*http2.MetaHeadersFrame); return ok && h.StreamID == 1 })
	if err := c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1}); err != nil {
		t.Fatal(err)
	}
	d := c.next(func(f http2.Frame) bool { _, ok := f.(*http2.DataFrame); return ok }).(*http2.DataFrame)
	if len(d.Data()) != 1 || d.StreamEnded() {
		t.Fatalf("after a window of 1: DATA of %d bytes (end %v), want 1 byte", len(d.Data()), d.StreamEnded())
	}
	if err := c.fr.WriteWindowUpdate(1, 1<<16); err != nil {
		t.Fatal(err)
	}
	body := []byte{d.Data()[0]}
	for {
		d := c.next(func(f http2.Frame) bool { _, ok := f.(*http2.DataFrame); return ok }).(*http2.DataFrame)
		body = append(body, d.Data()...)
		if d.StreamEnded() {
			break
		}
	}
	if !bytes.HasPrefix(body, []byte("gRPC requires")) {
		t.Errorf("body %q", body)
	}
}
