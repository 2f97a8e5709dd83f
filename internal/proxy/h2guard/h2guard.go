// Package h2guard is the read side of a server's HTTP/2 connection, ahead
// of Go's HTTP/2 server: it reads the client's bytes in blocks, follows
// its frames, and holds Go's server to three rules Go's server does not
// keep by itself.
//
// Header blocks are timed. Go's http.Server.ReadHeaderTimeout applies to
// HTTP/1.1 only, and a stream exists only once its header block is
// complete, so a client that sends the preface and then nothing, or a
// HEADERS frame it never ends (CONTINUATION frames a byte at a time),
// would hold its connection, a goroutine and buffers until the idle
// timeout. The connection is closed when no header block has been
// completed within the timeout of the preface, or a block (HEADERS and
// its CONTINUATION frames) has been open longer than the timeout
// (Envoy's request_headers_timeout). The whole connection, not the
// stream: RFC 9113 §6.10 makes a header block one unit no other frame
// may interrupt, and the HPACK state it was encoded against cannot be
// kept. Between requests a connection may be idle as long as the
// server's idle timeout allows.
//
// Malformed requests are stream errors. A header block with a
// connection-specific field (Connection, Keep-Alive, Proxy-Connection,
// Transfer-Encoding, Upgrade) or a TE other than "trailers" is malformed
// (RFC 9113 §8.2.2), and the stream must be reset with PROTOCOL_ERROR;
// Go's server instead answers it 400 itself (golang/go#26321). The guard
// decodes every header block with an HPACK decoder of its own, kept in
// step with the server's, and appends to a malformed block one field
// whose name Go's server refuses (it has upper-case letters): the server
// then resets the stream with PROTOCOL_ERROR, as for any field it
// refuses, and the request never reaches the handler. The appended
// field is a literal without indexing, so both decoders' tables stay as
// the client's encoder left them.
//
// A SETTINGS frame may set a parameter more than once; its values are
// applied in order (RFC 9113 §6.5.3). Go's server refuses any repeat as
// a connection error; the guard passes it only the last value of each
// parameter, which leaves the same settings (a window change applied
// twice adds up to the last value's), unless an earlier value is
// invalid, which is passed on to be refused.
//
// Reading in blocks (2 KiB, more while a large frame is held) also
// saves Go's server system calls: it reads a frame's 9-byte header and
// then its payload straight from the connection, two a frame.
package h2guard

import (
	"encoding/binary"
	"io"
	"net"
	"sync"
	"time"

	"golang.org/x/net/http2/hpack"
)

// Preface is the HTTP/2 client connection preface (RFC 9113 §3.4).
const Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// HTTP/2 frame types, flags and settings the guard reads (RFC 9113 §6).
const (
	frameHeaders      = 0x1
	frameSettings     = 0x4
	frameContinuation = 0x9
	flagEndHeaders    = 0x4 // HEADERS, CONTINUATION
	flagAck           = 0x1 // SETTINGS
	flagPadded        = 0x8 // HEADERS
	flagPriority      = 0x20
	frameHeaderLen    = 9

	settingEnablePush        = 0x2
	settingInitialWindowSize = 0x4
	settingMaxFrameSize      = 0x5
	settingEnableConnect     = 0x8

	// DefaultMaxFrameSize is the protocol's initial SETTINGS_MAX_FRAME_SIZE.
	DefaultMaxFrameSize = 16 << 10
	// DefaultHeaderTableSize is the protocol's initial
	// SETTINGS_HEADER_TABLE_SIZE, Go's server's default.
	DefaultHeaderTableSize = 4096

	// readSize is the read buffer: a request's HEADERS frame, and a
	// small body's DATA, in one read; larger payloads are read in place.
	// A buffer grown to hold a large frame is dropped once drained.
	readSize = 2 << 10
	// maxSettings is the most parameters Go's server takes in one
	// SETTINGS frame; it refuses a larger one as it is.
	maxSettings = 100
	// directRead: a payload read at least this large, with nothing
	// buffered, goes straight into the caller's buffer.
	directRead = 1 << 10
)

// malformedField is the field appended to a malformed header block: a
// literal without indexing whose name Go's server refuses for its
// upper-case letters, with an empty value.
var malformedField = func() []byte {
	const name = "Malformed-Request"
	return append([]byte{0x00, byte(len(name))}, name+"\x00"...)
}()

// Options are a guarded connection's rules.
type Options struct {
	// HeaderTimeout bounds header blocks as described above; 0: they are
	// not timed.
	HeaderTimeout time.Duration
	// OnTimeout, if set, is called (on a timer's goroutine) before the
	// connection is closed for a late header block.
	OnTimeout func()
	// OnMalformed, if set, is called on the reading goroutine for each
	// header block reset as malformed, with the field that made it so.
	OnMalformed func(field string)
	// MaxFrameSize is the server's SETTINGS_MAX_FRAME_SIZE (0:
	// DefaultMaxFrameSize): frames up to it are held whole when they must
	// be; a larger frame the server refuses anyway passes unchecked.
	MaxFrameSize uint32
	// HeaderTableSize is the server's SETTINGS_HEADER_TABLE_SIZE, the
	// most of its decoder's table the client may use (0:
	// DefaultHeaderTableSize).
	HeaderTableSize uint32
}

// Conn is a net.Conn whose reads are guarded. Read is called by one
// goroutine at a time (the HTTP/2 server's reader); Close may be called
// from any goroutine. The other methods are the wrapped connection's.
type Conn struct {
	net.Conn
	o Options

	// Read side, owned by the reading goroutine. buf[r:ready] has been
	// checked and is the reader's; buf[ready:w] is read but not yet.
	buf         []byte
	r, ready, w int
	rerr        error  // the wrapped connection's read error, once buf is drained
	pre         int    // bytes of the preface checked
	refused     bool   // not the preface: reads end
	remain      uint32 // payload bytes left of a frame passed through
	inBlock     bool   // a header block is open
	completed   bool   // a header block has been completed
	timerArmed  bool
	dec         *hpack.Decoder
	decodeOff   bool   // the decoder failed: the server will end the connection
	bad         string // the first malformed field of the open block
	te          int    // TE fields of the open block

	mu    sync.Mutex
	timer *time.Timer // nil until armed; stopped on Close
	shut  bool
}

// New guards c, a connection known to speak HTTP/2 (TLS with ALPN "h2",
// or a client that sent the preface, its bytes given back first): the
// clock for its first header block starts now.
func New(c net.Conn, o Options) *Conn {
	if o.MaxFrameSize == 0 {
		o.MaxFrameSize = DefaultMaxFrameSize
	}
	if o.HeaderTableSize == 0 {
		o.HeaderTableSize = DefaultHeaderTableSize
	}
	g := &Conn{Conn: c, o: o}
	g.arm()
	return g
}

// NetConn returns the wrapped connection.
func (c *Conn) NetConn() net.Conn { return c.Conn }

// Read implements net.Conn. Bytes that are not the preface end the
// reads (EOF): the server must close the connection (RFC 9113 §3.4).
func (c *Conn) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if c.r < c.ready {
			n := copy(p, c.buf[c.r:c.ready])
			c.r += n
			return n, nil
		}
		if c.refused {
			return 0, io.EOF
		}
		if c.advance() || c.refused {
			continue
		}
		if err := c.rerr; err != nil {
			c.rerr = nil // returned once: a deadline's error is not the end
			return 0, err
		}
		if c.r == c.w && c.remain >= directRead && len(p) >= directRead {
			// A large payload, nothing buffered: read it in place.
			n, err := c.Conn.Read(p[:min(uint32(len(p)), c.remain)])
			c.remain -= uint32(n)
			return n, err
		}
		c.fill()
	}
}

// fill reads once from the wrapped connection into buf, making room
// first: for at least the frame advance is waiting for.
func (c *Conn) fill() {
	if c.buf == nil {
		c.buf = make([]byte, readSize)
	}
	if c.r == c.w {
		c.r, c.ready, c.w = 0, 0, 0
		if len(c.buf) > readSize {
			c.buf = make([]byte, readSize) // what grew for one large frame does not stay
		}
	}
	need := c.w - c.r + 1
	if c.ready+frameHeaderLen <= c.w && c.remain == 0 {
		// A held frame not yet whole.
		need = max(need, c.ready-c.r+frameHeaderLen+int(frameLen(c.buf[c.ready:])))
	}
	if len(c.buf)-c.r < need || c.w == len(c.buf) {
		if need > len(c.buf) {
			nb := make([]byte, max(need, 2*len(c.buf)))
			c.w = copy(nb, c.buf[c.r:c.w])
			c.buf = nb
		} else {
			c.w = copy(c.buf, c.buf[c.r:c.w])
		}
		c.ready -= c.r
		c.r = 0
	}
	n, err := c.Conn.Read(c.buf[c.w:])
	c.w += n
	if err != nil {
		c.rerr = err
	} else if n == 0 {
		c.rerr = io.ErrNoProgress
	}
}

func frameLen(h []byte) uint32 { return uint32(h[0])<<16 | uint32(h[1])<<8 | uint32(h[2]) }

// advance checks what it can of buf[ready:w], moving ready past it; it
// reports whether it did.
func (c *Conn) advance() bool {
	start := c.ready
	for c.ready < c.w {
		switch {
		case c.pre < len(Preface):
			k := min(c.w-c.ready, len(Preface)-c.pre)
			if string(c.buf[c.ready:c.ready+k]) != Preface[c.pre:c.pre+k] {
				c.refused = true
				c.w = c.ready
				c.stop()
				return c.ready > start
			}
			c.pre += k
			c.ready += k
		case c.remain > 0:
			k := min(uint32(c.w-c.ready), c.remain)
			c.ready += int(k)
			c.remain -= k
		default:
			if c.w-c.ready < frameHeaderLen {
				return c.ready > start
			}
			if !c.frame() {
				return c.ready > start
			}
		}
	}
	return c.ready > start
}

// frame handles the frame whose header is at buf[ready:]: a frame that
// is passed through has its header released; one that must be held whole
// is checked (and maybe rewritten) and released when all of it is in.
// False: a held frame is not whole yet.
func (c *Conn) frame() bool {
	h := c.buf[c.ready : c.ready+frameHeaderLen]
	length, typ, flags := frameLen(h), h[3], h[4]
	block := typ == frameHeaders || (typ == frameContinuation && c.inBlock)
	if block && !c.inBlock {
		c.inBlock = true
		c.bad, c.te = "", 0
		if c.completed {
			// The first block runs on the preface's clock; later ones on
			// their own.
			c.arm()
		}
	}
	streamID := binary.BigEndian.Uint32(h[5:]) & (1<<31 - 1)
	settings := typ == frameSettings && flags&flagAck == 0 && streamID == 0 && length%6 == 0
	if (!block && !settings) || length > c.o.MaxFrameSize {
		// Passed through as it comes (a block frame the server will
		// refuse for its size ends the connection; nothing to check).
		c.ready += frameHeaderLen
		c.remain = length
		if block && length > c.o.MaxFrameSize {
			c.decodeOff = true
		}
		if block && flags&flagEndHeaders != 0 {
			c.blockDone()
		}
		return true
	}
	end := c.ready + frameHeaderLen + int(length)
	if end > c.w {
		return false
	}
	if settings {
		c.settings()
	} else {
		c.headerBlock(typ, flags)
	}
	c.ready += frameHeaderLen + int(frameLen(c.buf[c.ready:]))
	return true
}

// blockDone ends the open header block.
func (c *Conn) blockDone() {
	c.inBlock, c.completed = false, true
	c.stop()
}

// headerBlock decodes the HEADERS or CONTINUATION frame at buf[ready:];
// at the block's end, a malformed block has malformedField inserted
// before the frame's padding.
func (c *Conn) headerBlock(typ, flags byte) {
	payload := c.buf[c.ready+frameHeaderLen : c.ready+frameHeaderLen+int(frameLen(c.buf[c.ready:]))]
	frag, pad := payload, 0
	if typ == frameHeaders {
		if flags&flagPadded != 0 {
			if len(frag) < 1 {
				c.decodeOff = true
			} else {
				pad = int(frag[0])
				frag = frag[1:]
			}
		}
		if flags&flagPriority != 0 {
			if len(frag) < 5 {
				c.decodeOff = true
			} else {
				frag = frag[5:]
			}
		}
		if pad > len(frag) {
			c.decodeOff = true
		}
	}
	if !c.decodeOff {
		if c.dec == nil {
			c.dec = hpack.NewDecoder(c.o.HeaderTableSize, c.field)
		}
		if _, err := c.dec.Write(frag[:len(frag)-pad]); err != nil {
			c.decodeOff = true
		}
	}
	if flags&flagEndHeaders == 0 {
		return
	}
	if !c.decodeOff && c.dec.Close() != nil {
		c.decodeOff = true
	}
	if c.bad != "" && !c.decodeOff {
		at := c.ready + frameHeaderLen + len(payload) - pad
		c.insert(at, malformedField)
		if c.o.OnMalformed != nil {
			c.o.OnMalformed(c.bad)
		}
	}
	c.blockDone()
}

// field checks one decoded field of the open block.
func (c *Conn) field(f hpack.HeaderField) {
	if c.bad != "" {
		return
	}
	switch f.Name {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		c.bad = f.Name
	case "te":
		// Go's server allows one TE, "trailers" or empty; so does this.
		if c.te++; c.te > 1 || (f.Value != "trailers" && f.Value != "") {
			c.bad = f.Name
		}
	}
}

// insert puts b into buf at position at (in the held frame starting at
// ready), moving what follows and growing the frame's length.
func (c *Conn) insert(at int, b []byte) {
	if c.w+len(b) > len(c.buf) {
		nb := make([]byte, c.w+len(b)+readSize)
		copy(nb, c.buf[:c.w])
		c.buf = nb
	}
	copy(c.buf[at+len(b):], c.buf[at:c.w])
	copy(c.buf[at:], b)
	c.w += len(b)
	c.setLen(frameLen(c.buf[c.ready:]) + uint32(len(b)))
}

func (c *Conn) setLen(n uint32) {
	h := c.buf[c.ready:]
	h[0], h[1], h[2] = byte(n>>16), byte(n>>8), byte(n)
}

// settings rewrites the SETTINGS frame at buf[ready:] when it sets a
// parameter more than once: each parameter once, at its last value, in
// the order of those last values; or, if any of its values is invalid,
// at the first invalid one, for the server to refuse.
func (c *Conn) settings() {
	n := int(frameLen(c.buf[c.ready:])) / 6
	if n < 2 || n > maxSettings {
		return // more than the server takes: it refuses the frame
	}
	p := c.buf[c.ready+frameHeaderLen:]
	id := func(i int) uint16 { return binary.BigEndian.Uint16(p[6*i:]) }
	val := func(i int) uint32 { return binary.BigEndian.Uint32(p[6*i+2:]) }
	dup := false
	for i := 1; i < n && !dup; i++ {
		for j := range i {
			if id(i) == id(j) {
				dup = true
				break
			}
		}
	}
	if !dup {
		return
	}
	// keep[i]: entry i is the one kept for its parameter.
	keep := make([]bool, n)
	for i := range n {
		chosen := -1
		for j := range n {
			if id(j) != id(i) {
				continue
			}
			if !validSetting(id(j), val(j)) {
				chosen = j
				break
			}
			chosen = j
		}
		keep[chosen] = true
	}
	out := 0
	for i := range n {
		if keep[i] {
			copy(p[6*out:6*out+6], p[6*i:6*i+6])
			out++
		}
	}
	drop := 6 * (n - out)
	end := c.ready + frameHeaderLen + 6*n
	copy(c.buf[end-drop:], c.buf[end:c.w])
	c.w -= drop
	c.setLen(uint32(6 * out))
}

// validSetting reports whether a SETTINGS value is one RFC 9113 §6.5.2
// (and RFC 8441) allows.
func validSetting(id uint16, v uint32) bool {
	switch id {
	case settingEnablePush, settingEnableConnect:
		return v <= 1
	case settingInitialWindowSize:
		return v <= 1<<31-1
	case settingMaxFrameSize:
		return v >= DefaultMaxFrameSize && v <= 1<<24-1
	}
	return true
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

// arm starts (or restarts) the clock.
func (c *Conn) arm() {
	if c.o.HeaderTimeout <= 0 {
		return
	}
	c.timerArmed = true
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.shut {
		return
	}
	if c.timer == nil {
		c.timer = time.AfterFunc(c.o.HeaderTimeout, c.expire)
		return
	}
	c.timer.Reset(c.o.HeaderTimeout)
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
	if c.o.OnTimeout != nil {
		c.o.OnTimeout()
	}
	c.Close()
}
