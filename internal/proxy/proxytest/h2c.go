package proxytest

import (
	"bytes"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// H2C is a raw HTTP/2 client connection (h2c, prior knowledge) driven
// frame by frame, for tests that send what a well-behaved client would
// not: header fields Go's client refuses to send, several streams at
// once. One HPACK encoder serves the connection, as a client's does, so
// later requests refer to fields earlier ones indexed.
type H2C struct {
	t   testing.TB
	fr  *http2.Framer
	hb  bytes.Buffer
	enc *hpack.Encoder
}

// DialH2C opens an h2c connection to addr, sends the preface and an
// empty SETTINGS frame; every read and write ends by deadline. The
// connection is closed when the test ends.
func DialH2C(t testing.TB, addr string, deadline time.Time) *H2C {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Until(deadline))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(deadline)
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	h := &H2C{t: t, fr: http2.NewFramer(c, c)}
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	h.enc = hpack.NewEncoder(&h.hb)
	if err := h.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return h
}

// Get sends a GET for authority and path on stream, with the extra
// fields (name, value pairs) after the pseudo-headers, its end of stream
// on the HEADERS frame.
func (h *H2C) Get(stream uint32, authority, path string, extra ...string) {
	h.t.Helper()
	h.hb.Reset()
	fields := append([]string{":method", "GET", ":scheme", "http", ":authority", authority, ":path", path}, extra...)
	for i := 0; i < len(fields); i += 2 {
		h.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: stream, BlockFragment: h.hb.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		h.t.Fatal(err)
	}
}

// Post sends a POST for authority and path on stream, with the extra
// fields, then body in a DATA frame that ends the stream.
func (h *H2C) Post(stream uint32, authority, path string, body []byte, extra ...string) {
	h.t.Helper()
	h.hb.Reset()
	fields := append([]string{":method", "POST", ":scheme", "http", ":authority", authority, ":path", path}, extra...)
	for i := 0; i < len(fields); i += 2 {
		h.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
	}
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: stream, BlockFragment: h.hb.Bytes(), EndHeaders: true}); err != nil {
		h.t.Fatal(err)
	}
	if err := h.fr.WriteData(stream, true, body); err != nil {
		h.t.Fatal(err)
	}
}

// Answers reads until n streams are answered and returns, by stream,
// the response's :status or the RST_STREAM error code ("PROTOCOL_ERROR").
// A GOAWAY, or a read that fails first, fails the test.
func (h *H2C) Answers(n int) map[uint32]string {
	h.t.Helper()
	got := map[uint32]string{}
	for len(got) < n {
		f, err := h.fr.ReadFrame()
		if err != nil {
			h.t.Fatalf("h2c: after %v: %v", got, err)
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			got[f.StreamID] = f.PseudoValue("status")
		case *http2.RSTStreamFrame:
			got[f.StreamID] = f.ErrCode.String()
		case *http2.GoAwayFrame:
			h.t.Fatalf("h2c: GOAWAY %v after %v", f.ErrCode, got)
		}
	}
	return got
}
