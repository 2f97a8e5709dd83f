package h2guard

import (
	"io"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// FuzzRead: whatever a client sends after the preface — frames of any
// kind, order, size and padding, cut on the wire anywhere — the guard
// neither panics nor hangs, and Go's framer reading through it (as the
// HTTP/2 server does) ends when the bytes do. cut is where the bytes are
// split into reads (every cut-th byte; 0: one read).
func FuzzRead(f *testing.F) {
	c := newClient()
	c.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 100}, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1})
	c.headers(1, req("x-a", "1")...)
	c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: c.block(req("connection", "close")...), EndHeaders: true, PadLength: 3})
	c.fr.WriteData(3, true, []byte("body"))
	blk := c.block(req("te", "gzip")...)
	c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 5, BlockFragment: blk[:3], EndStream: true})
	c.fr.WriteContinuation(5, true, blk[3:])
	c.fr.WritePing(false, [8]byte{})
	body := c.buf.Bytes()[len(Preface):]
	f.Add(body, uint16(0))
	f.Add(body, uint16(1))
	f.Add(body, uint16(10))
	f.Add([]byte{0, 0, 5, 1, 0x28, 0, 0, 0, 1, 9, 0, 0, 0, 0}, uint16(0)) // padded, priority, pad too long
	f.Add([]byte{0, 0, 12, 4, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 5, 0, 2, 0, 0, 0, 0}, uint16(2))
	f.Fuzz(func(t *testing.T, b []byte, cut uint16) {
		in := append([]byte(Preface), b...)
		g := New(&chunkConn{chunks: chunked(in, int(cut))}, Options{OnMalformed: func(string) {}})
		pre := make([]byte, len(Preface))
		if _, err := io.ReadFull(g, pre); err != nil {
			t.Fatal(err)
		}
		fr := http2.NewFramer(io.Discard, g)
		fr.ReadMetaHeaders = hpack.NewDecoder(DefaultHeaderTableSize, nil)
		for range len(b) + 1 { // a frame takes 9 bytes at least: bounded
			if _, err := fr.ReadFrame(); err != nil {
				if _, ok := err.(http2.StreamError); ok {
					continue
				}
				return
			}
		}
		t.Fatalf("more frames read than %d bytes can hold", len(b))
	})
}
