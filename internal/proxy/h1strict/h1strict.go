// Package h1strict checks the framing of the HTTP/1.1 requests a client
// sends on a connection as the bytes are read, before Go's HTTP/1.1
// server parses them, and refuses three things Envoy's codec refuses and
// net/http accepts without leaving a trace a handler could see:
//
//   - a request with both Content-Length and Transfer-Encoding (RFC 9112
//     §6.1 allows a server to refuse it; Envoy does, unless
//     allow_chunked_length);
//   - obsolete line folding: a header line starting with a space or tab
//     (RFC 9112 §5.2: a server must refuse it or unfold it; Envoy
//     refuses);
//   - a bare LF ending the request line or a header line (RFC 9112 §2.2
//     lets a server accept it; Envoy does not).
//
// A Conn follows each request to its end — through its Content-Length or
// chunked body — to find where the next request's head starts, so it
// checks every request of a keep-alive or pipelined connection. When it
// finds one of these, net/http reads the bytes before the offending one
// and then a head it must refuse (see refusal): it answers "400 Bad
// Request" and closes the connection, so neither that request nor
// anything after it is ever served. Anything else it does not
// understand (a malformed chunk, an invalid Content-Length) it leaves to
// net/http, which refuses those itself, and stops checking. It stops too
// where a connection leaves HTTP/1.1: HTTP/2's preface, CONNECT, and a
// request with an Upgrade header to a protocol other than h2c (the proxy
// answers such a request with a 101 and a tunnel, or closes the
// connection after its answer; an h2c upgrade is served as a plain
// request, so the connection stays HTTP/1.1 and checked).
//
// The check costs one pass over the bytes of each request head and of each
// chunk-size line, most of it in bytes.IndexByte; body bytes of known
// length are skipped, not scanned. BenchmarkScanHead: 0.4–0.6 µs for a
// 400-byte head on this project's 2-core machine.
package h1strict

import (
	"bytes"
	"net"
)

// Error is the violation a Conn found: what, and at which byte of the
// connection's stream.
type Error struct {
	What   string
	Offset int64
}

func (e *Error) Error() string { return "malformed HTTP/1.1 request: " + e.What }

// Options are the exceptions a connection manager may allow, and who
// hears of a refusal.
type Options struct {
	// AllowChunkedLength accepts a request with both Content-Length and
	// Transfer-Encoding: chunked, reading it as chunked (Envoy's
	// http_protocol_options.allow_chunked_length).
	AllowChunkedLength bool
	// Refused, if set, is called (on the reading goroutine) with the
	// violation a connection is refused for.
	Refused func(*Error)
}

// refusal is what net/http reads in place of the offending bytes and
// everything after them: a NUL, which no request line, header name or
// header value may hold, then the head's end, so that net/http refuses
// the head at once (400 Bad Request, the connection closed) rather than
// wait for more. What the client sent after is discarded.
//
// Forging bytes, rather than failing the read, keeps net/http's own
// connection handling intact: its background read — one byte, while a
// request pipelined before the bad one is being served — then reads a
// byte as it would have, and does not cancel that request, which a read
// error would.
const refusal = "\x00\r\n\r\n"

// Conn is a net.Conn whose reads are checked. The methods other than
// Read are the wrapped connection's.
type Conn struct {
	net.Conn
	s    scanner
	err  *Error // the violation found
	tail string // what is left of refusal to read after it
}

// NewConn checks the requests read from c.
func NewConn(c net.Conn, o Options) *Conn {
	return &Conn{Conn: c, s: scanner{opts: o}}
}

// Read reads from the connection and checks what it read. After a
// violation it returns the bytes before it, then refusal, and then
// nothing more.
func (c *Conn) Read(p []byte) (int, error) {
	if c.err != nil {
		if c.tail != "" {
			n := copy(p, c.tail)
			c.tail = c.tail[n:]
			return n, nil
		}
		// What the client sends after a refused head is never served:
		// discard it until the connection fails or is closed, or a
		// deadline passes. (An error of our own here would tell net/http
		// the client has gone, and cancel a request it is serving.)
		for {
			if _, err := c.Conn.Read(p); err != nil {
				return 0, err
			}
		}
	}
	n, err := c.Conn.Read(p)
	if n > 0 && !c.s.off {
		if k, bad := c.s.scan(p[:n]); bad != "" {
			c.err = &Error{What: bad, Offset: c.s.pos}
			if c.s.opts.Refused != nil {
				c.s.opts.Refused(c.err)
			}
			m := copy(p[k:], refusal)
			c.tail = refusal[m:]
			return k + m, nil
		}
	}
	return n, err
}

// Violation is the violation the connection was refused for, or nil.
func (c *Conn) Violation() *Error { return c.err }

// CloseWrite half-closes the connection when the wrapped one can, as
// net/http does before it closes a connection it has answered.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// NetConn returns the wrapped connection.
func (c *Conn) NetConn() net.Conn { return c.Conn }

// The scanner's states.
const (
	lineStart   = iota // at the start of a line of a request head or trailer section
	inLine             // inside a line, after its first byte
	headEnd            // an empty line: its CR seen, LF expected
	body               // in a body of known length (remaining)
	chunkSize          // in a chunk-size line: hex digits
	chunkExt           // in a chunk-size line, after the digits (extensions, CR)
	chunkData          // in a chunk's data (remaining)
	chunkDataCR        // after a chunk's data: CR expected
	chunkDataLF        // after a chunk's data and CR: LF expected
)

// Headers whose value the scanner reads.
const (
	hdrOther = iota
	hdrContentLength
	hdrUpgrade
)

// maxChunkSizeDigits bounds a chunk size (15 hex digits fit an int64).
const maxChunkSizeDigits = 15

// bareLF and obsFold are the violations of a head's lines.
const (
	bareLF  = "a bare LF ends a line of the request head (want CRLF)"
	obsFold = "obsolete line folding: a header line starts with a space or tab"
	clAndTE = "both Content-Length and Transfer-Encoding are set"
)

// scanner follows the requests of one connection byte by byte. Its state
// is a few words whatever the size of a head.
type scanner struct {
	opts  Options
	off   bool  // stopped checking: the connection left HTTP/1.1, or net/http will refuse what it got
	pos   int64 // bytes scanned
	state int
	cr    bool // the byte before was a CR

	// Of the head (or trailer section) being read.
	line      int  // lines before this one (0: the request line)
	trailer   bool // a chunked body's trailer section, not a head
	method    [8]byte
	methodLen int // bytes of the method so far; -1 once the request line's first space is seen

	// Of the header line being read.
	name    [len("transfer-encoding")]byte // while it fits (a name split across reads)
	nameLen int
	inName  bool // before the line's colon
	value   int  // which header the value is of (hdr*)
	digits  bool // the Content-Length value has digits
	bad     bool // the Content-Length value is not a number
	n       int64
	// An Upgrade value, its spaces left out, while it fits: h2c does
	// not switch the connection.
	up    [len("h2c")]byte
	upLen int

	// Of the request.
	hasCL, hasTE, upgrade bool
	cl                    int64
	remaining             int64 // of a body of known length, or of a chunk
	size                  int64 // the chunk size being read
	sizeLen               int
}

// scan checks b, the next bytes of the connection. It returns how many of
// them come before a violation and what it is, or len(b) and "".
func (s *scanner) scan(b []byte) (int, string) {
	for i := 0; i < len(b); i++ {
		if s.off {
			s.pos += int64(len(b) - i)
			return len(b), ""
		}
		if s.state == body || s.state == chunkData {
			// Skip what remains of the body or chunk in one step.
			n := min(int64(len(b)-i), s.remaining)
			s.remaining -= n
			s.pos += n
			i += int(n) - 1
			if s.remaining == 0 {
				if s.state == body {
					s.newHead()
				} else {
					s.state = chunkDataCR
				}
			}
			continue
		}
		if s.state == inLine && s.inName && !s.cr {
			// The rest of a header name: find its colon, and the name
			// among the three that matter.
			if j := bytes.IndexByte(b[i:], ':'); j >= 0 && bytes.IndexByte(b[i:i+j], '\n') < 0 && bytes.IndexByte(b[i:i+j], '\r') < 0 {
				s.inName = false
				if n := s.nameLen + j; n <= len(s.name) {
					copy(s.name[s.nameLen:], b[i:i+j])
					s.header(s.name[:n])
				}
				s.pos += int64(j + 1)
				i += j
				continue
			}
		}
		if s.state == inLine && !s.inName && s.value == hdrOther && (s.line > 0 || s.methodLen < 0) {
			// The rest of a line whose bytes do not matter: jump to its
			// LF. A CR anywhere but before it (a lone CR) is net/http's
			// to refuse, as on the byte-by-byte path.
			j := bytes.IndexByte(b[i:], '\n')
			end := i + j
			if j < 0 {
				end = len(b)
			}
			seg := b[i:end]
			if k := bytes.IndexByte(seg, '\r'); (s.cr && len(seg) > 0) || (k >= 0 && k != len(seg)-1) {
				s.off = true
				s.pos += int64(len(b) - i)
				return len(b), ""
			}
			if len(seg) > 0 {
				s.cr = seg[len(seg)-1] == '\r'
			}
			s.pos += int64(len(seg))
			if j < 0 {
				return len(b), ""
			}
			i = end
		}
		if bad := s.byte(b[i]); bad != "" {
			// The bytes before the offending one are returned: net/http,
			// inside the head, waits for the rest and gets the error.
			return i, bad
		}
		s.pos++
	}
	return len(b), ""
}

// byte advances the scanner by one byte outside a body's data and returns
// the violation the byte makes, if any.
func (s *scanner) byte(c byte) string {
	switch s.state {
	case lineStart:
		switch {
		case c == '\r':
			if s.hasCL && s.hasTE && !s.trailer && !s.opts.AllowChunkedLength {
				return clAndTE // refused at the head's end, the whole head seen
			}
			s.state, s.cr = headEnd, true
			return ""
		case c == '\n':
			return bareLF
		case (c == ' ' || c == '\t') && s.line > 0:
			return obsFold
		}
		s.state, s.cr = inLine, false
		s.inName = s.line > 0 && !s.trailer
		s.nameLen, s.value, s.digits, s.bad, s.n = 0, hdrOther, false, false, 0
		return s.lineByte(c)
	case inLine:
		return s.lineByte(c)
	case headEnd:
		switch {
		case c != '\n':
			s.off = true // a lone CR: net/http refuses it
		case s.trailer:
			s.newHead() // the end of a chunked body
		case s.line == 0:
			s.off = true // an empty line before the request line: net/http's business
		default:
			s.endHead()
		}
		return ""
	case chunkSize:
		if v, ok := unhex(c); ok {
			if s.sizeLen++; s.sizeLen > maxChunkSizeDigits {
				s.off = true // too large: net/http refuses it
				return ""
			}
			s.size = s.size<<4 | int64(v)
			return ""
		}
		if s.sizeLen == 0 {
			s.off = true // no digits: net/http refuses it
			return ""
		}
		s.state = chunkExt
		return s.byte(c)
	case chunkExt:
		switch {
		case c == '\r' && !s.cr:
			s.cr = true
		case c == '\n' && s.cr:
			s.cr = false
			if s.size == 0 {
				s.state, s.trailer, s.line = lineStart, true, 1
			} else {
				s.state, s.remaining = chunkData, s.size
			}
		case s.cr || c == '\n':
			s.off = true // a lone CR or LF: net/http refuses it
		}
		return ""
	case chunkDataCR, chunkDataLF:
		want := byte('\r')
		if s.state == chunkDataLF {
			want = '\n'
		}
		switch {
		case c != want:
			s.off = true // data longer than its size: net/http refuses it
		case s.state == chunkDataCR:
			s.state = chunkDataLF
		default:
			s.state, s.size, s.sizeLen = chunkSize, 0, 0
		}
	}
	return ""
}

// lineByte takes a byte of a line of a head or trailer section after its
// first.
func (s *scanner) lineByte(c byte) string {
	switch {
	case c == '\n':
		if !s.cr {
			return bareLF
		}
		s.cr = false
		s.endLine()
		s.state = lineStart
		s.line++
		return ""
	case s.cr:
		s.off = true // a CR not followed by LF: net/http refuses it
		return ""
	case c == '\r':
		s.cr = true
		return ""
	case s.line == 0:
		if s.methodLen >= 0 {
			if c == ' ' {
				s.methodLen = -1 - s.methodLen // -(length+1)
			} else {
				if s.methodLen < len(s.method) {
					s.method[s.methodLen] = c
				}
				s.methodLen++
			}
		}
	case s.inName:
		if c == ':' {
			s.inName = false
			if s.nameLen <= len(s.name) {
				s.header(s.name[:s.nameLen])
			}
			return ""
		}
		if s.nameLen < len(s.name) {
			s.name[s.nameLen] = c
		}
		s.nameLen++
	case s.value == hdrUpgrade:
		if c != ' ' && c != '\t' {
			if s.upLen < len(s.up) {
				s.up[s.upLen] = c
			}
			s.upLen++
		}
	case s.value == hdrContentLength:
		switch {
		case c >= '0' && c <= '9' && s.n < (1<<62)/10:
			s.n, s.digits = s.n*10+int64(c-'0'), true
		case c == ' ' || c == '\t':
		default:
			s.bad = true
		}
	}
	return ""
}

// header notes the header whose name was just read (any case).
func (s *scanner) header(name []byte) {
	switch len(name) {
	case len("content-length"):
		if bytes.EqualFold(name, []byte("content-length")) {
			s.value = hdrContentLength
		}
	case len("transfer-encoding"):
		s.hasTE = s.hasTE || bytes.EqualFold(name, []byte("transfer-encoding"))
	case len("upgrade"):
		if bytes.EqualFold(name, []byte("upgrade")) {
			s.value, s.upLen = hdrUpgrade, 0
		}
	}
}

// endLine finishes a line of a head.
func (s *scanner) endLine() {
	switch {
	case s.trailer:
	case s.line == 0:
		if s.methodLen >= 0 {
			s.off = true // a request line without a space: net/http refuses it
			return
		}
		switch string(s.method[:min(-1-s.methodLen, len(s.method))]) {
		case "PRI", "CONNECT":
			s.off = true // HTTP/2's preface, or a tunnel: no longer HTTP/1.1
		}
	case s.inName:
		s.off = true // a header line without a colon: net/http refuses it
	case s.value == hdrUpgrade:
		if s.upLen != len(s.up) || !bytes.EqualFold(s.up[:], []byte("h2c")) {
			s.upgrade = true
		}
	case s.value == hdrContentLength:
		if !s.digits || s.bad || (s.hasCL && s.n != s.cl) {
			s.off = true // not a number, or differing values: net/http refuses them
			return
		}
		s.hasCL, s.cl = true, s.n
	}
}

// endHead finishes a request head and sets up its body.
func (s *scanner) endHead() {
	switch {
	case s.upgrade:
		s.off = true // it may switch protocols: no longer HTTP/1.1
	case s.hasTE:
		s.state, s.cr, s.size, s.sizeLen = chunkSize, false, 0, 0
	case s.hasCL && s.cl > 0:
		s.state, s.cr, s.remaining = body, false, s.cl
	default:
		s.newHead()
	}
}

// newHead expects the next request's head.
func (s *scanner) newHead() {
	*s = scanner{opts: s.opts, pos: s.pos}
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
