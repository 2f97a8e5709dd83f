// Package h2wire is what Weft's HTTP/2 code that handles frames itself
// (the control plane's h2rpc, the proxy's h2server and h2client) shares:
// frames appended to byte slices (frame.go), header fields HPACK-encoded
// as literals (hpack.go), field names made canonical (canon.go), a writer
// that orders whole frames and queued control frames on a connection
// (writer.go), frame headers and settings read (read.go), and the checks
// of a request's header fields as an HPACK decoder emits them
// (fields.go).
package h2wire

import (
	"encoding/binary"

	"golang.org/x/net/http2"
)

// Preface is the client connection preface (RFC 9113 §3.4).
const Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// The frame functions append one frame (RFC 9113 §6) to b and return
// the extended slice.

// AppendHeader appends a frame header: n bytes of payload follow.
func AppendHeader(b []byte, n int, typ http2.FrameType, flags http2.Flags, id uint32) []byte {
	return append(b, byte(n>>16), byte(n>>8), byte(n), byte(typ), byte(flags),
		byte(id>>24), byte(id>>16), byte(id>>8), byte(id))
}

// AppendSettings appends a SETTINGS frame with settings.
func AppendSettings(b []byte, settings []http2.Setting) []byte {
	b = AppendHeader(b, 6*len(settings), http2.FrameSettings, 0, 0)
	for _, s := range settings {
		b = binary.BigEndian.AppendUint16(b, uint16(s.ID))
		b = binary.BigEndian.AppendUint32(b, s.Val)
	}
	return b
}

// AppendSettingsAck appends a SETTINGS frame acknowledging the peer's.
func AppendSettingsAck(b []byte) []byte {
	return AppendHeader(b, 0, http2.FrameSettings, http2.FlagSettingsAck, 0)
}

// AppendWindowUpdate appends a WINDOW_UPDATE of stream id (0: the
// connection).
func AppendWindowUpdate(b []byte, id, incr uint32) []byte {
	b = AppendHeader(b, 4, http2.FrameWindowUpdate, 0, id)
	return binary.BigEndian.AppendUint32(b, incr)
}

// AppendRST appends a RST_STREAM.
func AppendRST(b []byte, id uint32, code http2.ErrCode) []byte {
	b = AppendHeader(b, 4, http2.FrameRSTStream, 0, id)
	return binary.BigEndian.AppendUint32(b, uint32(code))
}

// AppendPing appends a PING (ack: the answer to the peer's).
func AppendPing(b []byte, ack bool, data [8]byte) []byte {
	var flags http2.Flags
	if ack {
		flags = http2.FlagPingAck
	}
	b = AppendHeader(b, 8, http2.FramePing, flags, 0)
	return append(b, data[:]...)
}

// AppendGoAway appends a GOAWAY naming the last stream processed.
func AppendGoAway(b []byte, last uint32, code http2.ErrCode, debug string) []byte {
	b = AppendHeader(b, 8+len(debug), http2.FrameGoAway, 0, 0)
	b = binary.BigEndian.AppendUint32(b, last)
	b = binary.BigEndian.AppendUint32(b, uint32(code))
	return append(b, debug...)
}

// AppendHeaders appends a header block in HEADERS and, past maxFrame
// bytes, CONTINUATION frames.
func AppendHeaders(b []byte, id uint32, endStream bool, block []byte, maxFrame int) []byte {
	flags := http2.Flags(0)
	if endStream {
		flags = http2.FlagHeadersEndStream
	}
	typ := http2.FrameHeaders
	for {
		n := min(len(block), maxFrame)
		f := flags
		if n == len(block) {
			f |= http2.FlagHeadersEndHeaders
		}
		b = AppendHeader(b, n, typ, f, id)
		b = append(b, block[:n]...)
		block = block[n:]
		if len(block) == 0 {
			return b
		}
		typ, flags = http2.FrameContinuation, 0
	}
}

// Unpad strips a DATA or HEADERS frame's padding (the PADDED flag is the
// same bit in both); ok is false when the padding is longer than the
// frame, a connection error of type PROTOCOL_ERROR.
func Unpad(flags http2.Flags, p []byte) (payload []byte, ok bool) {
	if !flags.Has(http2.FlagDataPadded) {
		return p, true
	}
	if len(p) == 0 || int(p[0]) >= len(p) {
		return nil, false
	}
	return p[1 : len(p)-int(p[0])], true
}
