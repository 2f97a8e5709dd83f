// Package h2guard bounds how long an HTTP/2 client may take to send a
// request's headers, which Go's HTTP/2 server does not: its
// http.Server.ReadHeaderTimeout applies to HTTP/1.1 only, and a stream
// exists only once its header block is complete, so a client that sends
// the connection preface and then nothing, or a HEADERS frame it never
// ends (no END_HEADERS, then CONTINUATION frames a byte at a time), holds
// its connection, a goroutine and buffers until the connection's idle
// timeout (an hour by Envoy's default).
//
// A Conn watches the frames a client sends as the HTTP/2 server reads
// them — only the 9-byte frame headers; payloads are skipped, not
// scanned — and closes the connection when
//
//   - no header block has been completed within the timeout of the
//     connection preface (as Go's HTTP/1.1 server closes a connection
//     whose first request head has not arrived within
//     ReadHeaderTimeout), or
//   - a header block (HEADERS and its CONTINUATION frames, up to the end
//     of the frame that carries END_HEADERS) has been open longer than
//     the timeout (Envoy's request_headers_timeout).
//
// The whole connection is closed, not the stream: RFC 9113 §6.10 makes a
// header block one unit that no other frame may interrupt, and the
// HPACK state it was encoded against cannot be kept, so a connection
// with an unfinished header block can serve nothing else anyway.
//
// Once a connection has completed a header block it may stay idle between
// requests as long as the server's idle timeout allows; only header
// blocks are timed.
package h2guard

import (
	"io"
	"net"
	"sync"
	"time"
)

// Preface is the HTTP/2 client connection preface (RFC 9113 §3.4).
const Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// HTTP/2 frame types and flags the guard reads (RFC 9113 §6).
const (
	frameHeaders      = 0x1
	frameContinuation = 0x9
	flagEndHeaders    = 0x4
	frameHeaderLen    = 9
)

type mode uint8

const (
	modeDetect  mode = iota // plaintext: HTTP/2 only if the preface comes
	modeExpect              // negotiated h2 (ALPN): the preface must come
	modeH2                  // the preface was read: frames follow
	modeOff                 // not HTTP/2: reads pass through
	modeRefused             // negotiated h2 without the preface: reads end
)

// Conn is a net.Conn whose reads are watched for HTTP/2 header blocks.
// Read is called by one goroutine at a time (the HTTP server's reader);
// Close may be called from any goroutine. The other methods are the
// wrapped connection's.
type Conn struct {
	net.Conn
	timeout   time.Duration
	onTimeout func()

	// Read-side state, owned by the reading goroutine.
	mode       mode
	pre        int                  // bytes of the preface read
	hdr        [frameHeaderLen]byte // a frame header being read
	hn         int                  // bytes of hdr read
	remain     uint32               // payload bytes left of the current frame
	endsBlock  bool                 // the current frame carries END_HEADERS
	inBlock    bool                 // a header block is open
	completed  bool                 // a header block has been completed
	timerArmed bool

	mu    sync.Mutex
	timer *time.Timer // nil until armed; stopped on Close
	shut  bool
}

// NewConn watches c, a connection accepted by an HTTP server serving
// HTTP/1.1 and HTTP/2 with prior knowledge: if its client sends the
// HTTP/2 preface, header blocks are timed from then; otherwise it is
// left alone. timeout <= 0 returns c unwrapped.
//
// onTimeout, if set, is called (on a timer's goroutine) before the
// connection is closed for a late header block.
func NewConn(c net.Conn, timeout time.Duration, onTimeout func()) net.Conn {
	return newConn(c, timeout, onTimeout, modeDetect)
}

// NewH2Conn is NewConn for a connection known to speak HTTP/2 (TLS with
// ALPN "h2"): the clock for its first header block starts now.
func NewH2Conn(c net.Conn, timeout time.Duration, onTimeout func()) net.Conn {
	if timeout <= 0 {
		return c
	}
	g := newConn(c, timeout, onTimeout, modeExpect).(*Conn)
	g.arm()
	return g
}

func newConn(c net.Conn, timeout time.Duration, onTimeout func(), m mode) net.Conn {
	if timeout <= 0 {
		return c
	}
	return &Conn{Conn: c, timeout: timeout, onTimeout: onTimeout, mode: m}
}

// NetConn returns the wrapped connection.
func (c *Conn) NetConn() net.Conn { return c.Conn }

// IsHTTP2 reports whether the connection's client sent the HTTP/2
// preface. For the reading goroutine, or after reads have ended.
func (c *Conn) IsHTTP2() bool { return c.mode == modeH2 }

// Read implements net.Conn, watching what it returns. On a connection
// that negotiated h2, bytes that are not the preface end the reads (EOF):
// the server must close it (RFC 9113 §3.4), not read HTTP/1.1 there.
func (c *Conn) Read(p []byte) (int, error) {
	if c.mode == modeRefused {
		return 0, io.EOF
	}
	n, err := c.Conn.Read(p)
	if n > 0 && c.mode != modeOff {
		c.scan(p[:n])
		if c.mode == modeRefused {
			return 0, io.EOF
		}
	}
	return n, err
}

// Close stops the clock and closes the connection.
func (c *Conn) Close() error {
	c.mu.Lock()
	c.shut = true
	if c.timer != nil {
		c.timer.Stop()
	}
	c.mu.Unlock()
	return c.Conn.Close()
}

// CloseWrite half-closes the wrapped connection if it can, as net/http
// does before closing a connection it has answered.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// scan follows the frames in b, the next bytes the client sent.
func (c *Conn) scan(b []byte) {
	for len(b) > 0 {
		switch {
		case c.mode == modeOff:
			return
		case c.mode != modeH2:
			k := min(len(b), len(Preface)-c.pre)
			if string(b[:k]) != Preface[c.pre:c.pre+k] {
				if c.mode == modeExpect {
					c.mode = modeRefused
				} else {
					c.mode = modeOff
				}
				c.stop()
				return
			}
			c.pre += k
			b = b[k:]
			if c.pre == len(Preface) {
				if c.mode == modeDetect {
					c.arm()
				}
				c.mode = modeH2
			}
		case c.remain > 0:
			k := uint32(min(uint64(len(b)), uint64(c.remain)))
			c.remain -= k
			b = b[k:]
			if c.remain == 0 {
				c.frameDone()
			}
		default:
			k := copy(c.hdr[c.hn:], b)
			c.hn += k
			b = b[k:]
			if c.hn < frameHeaderLen {
				return
			}
			c.hn = 0
			c.frameStart()
			if c.remain == 0 {
				c.frameDone()
			}
		}
	}
}

// frameStart reads the frame header in c.hdr.
func (c *Conn) frameStart() {
	h := c.hdr
	c.remain = uint32(h[0])<<16 | uint32(h[1])<<8 | uint32(h[2])
	c.endsBlock = false
	if t := h[3]; t == frameHeaders || (t == frameContinuation && c.inBlock) {
		if !c.inBlock {
			c.inBlock = true
			if c.completed {
				// The first block runs on the preface's clock; later ones
				// on their own.
				c.arm()
			}
		}
		c.endsBlock = h[4]&flagEndHeaders != 0
	}
}

// frameDone is called when the current frame's last byte has been read.
func (c *Conn) frameDone() {
	if c.endsBlock {
		c.endsBlock, c.inBlock, c.completed = false, false, true
		c.stop()
	}
}

// arm starts (or restarts) the clock.
func (c *Conn) arm() {
	c.timerArmed = true
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.shut {
		return
	}
	if c.timer == nil {
		c.timer = time.AfterFunc(c.timeout, c.expire)
		return
	}
	c.timer.Reset(c.timeout)
}

// stop stops the clock.
func (c *Conn) stop() {
	if !c.timerArmed {
		return
	}
	c.timerArmed = false
	c.mu.Lock()
	if c.timer != nil {
		c.timer.Stop()
	}
	c.mu.Unlock()
}

// expire closes the connection: its header block is late.
func (c *Conn) expire() {
	c.mu.Lock()
	shut := c.shut
	c.mu.Unlock()
	if shut {
		return
	}
	if c.onTimeout != nil {
		c.onTimeout()
	}
	c.Close()
}
