package h2wire

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"

	"golang.org/x/net/http2"
)

// ConnError is an HTTP/2 connection error (RFC 9113 §5.4.1): the
// connection is sent GOAWAY with its code and closed.
type ConnError struct {
	Code http2.ErrCode
	Msg  string
}

func (e ConnError) Error() string { return fmt.Sprintf("http2 %v: %s", e.Code, e.Msg) }

// FrameHeader is a frame's 9-byte header (RFC 9113 §4.1).
type FrameHeader struct {
	Length   int
	Type     http2.FrameType
	Flags    http2.Flags
	StreamID uint32
}

// FrameBuffered reports whether a whole frame is in br's buffer, so
// reading and handling it does not wait for the connection. A reader
// defers what it would tell other goroutines (a stream's news, a
// handler's start) while this holds, so that frames that came together
// are seen together.
func FrameBuffered(br *bufio.Reader) bool {
	n := br.Buffered()
	if n < 9 {
		return false
	}
	h, _ := br.Peek(9) // buffered: no read, no error
	return n >= 9+(int(h[0])<<16|int(h[1])<<8|int(h[2]))
}

// ReadFrameHeader reads the next frame's header into buf and parses it.
func ReadFrameHeader(r io.Reader, buf *[9]byte) (FrameHeader, error) {
	if _, err := io.ReadFull(r, buf[:]); err != nil {
		return FrameHeader{}, err
	}
	return FrameHeader{
		Length:   int(buf[0])<<16 | int(buf[1])<<8 | int(buf[2]),
		Type:     http2.FrameType(buf[3]),
		Flags:    http2.Flags(buf[4]),
		StreamID: binary.BigEndian.Uint32(buf[5:]) & (1<<31 - 1),
	}, nil
}

// ParseSettings calls fn with each parameter of a SETTINGS frame's
// payload, in order, after checking the values RFC 9113 §6.5.2 bounds;
// an invalid one is a ConnError.
func ParseSettings(p []byte, fn func(id http2.SettingID, v uint32)) error {
	if len(p)%6 != 0 {
		return ConnError{http2.ErrCodeFrameSize, "bad SETTINGS"}
	}
	for ; len(p) > 0; p = p[6:] {
		id := http2.SettingID(binary.BigEndian.Uint16(p))
		v := binary.BigEndian.Uint32(p[2:])
		switch {
		case id == http2.SettingInitialWindowSize && v > 1<<31-1:
			return ConnError{http2.ErrCodeFlowControl, "initial window too large"}
		case id == http2.SettingEnablePush && v > 1:
			return ConnError{http2.ErrCodeProtocol, "bad SETTINGS_ENABLE_PUSH"}
		case id == http2.SettingMaxFrameSize && (v < 16<<10 || v > 1<<24-1):
			return ConnError{http2.ErrCodeProtocol, "bad SETTINGS_MAX_FRAME_SIZE"}
		}
		fn(id, v)
	}
	return nil
}

// ConnErr is ConnError{code, msg}.
func ConnErr(code http2.ErrCode, msg string) ConnError { return ConnError{Code: code, Msg: msg} }
