package upstream

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"net/textproto"

	"weft.dev/weft/internal/proxy/h2client"
)

// readResponse reads a response head from br as http.ReadResponse does,
// parsing the common case itself with fewer allocations and less work:
// an HTTP/1.1 response whose whole head is already buffered, with a
// status of 200–599 other than 204 and 304, one Content-Length, CRLF line
// ends, token header names and valid values, and none of the headers
// that change framing or the header itself (Transfer-Encoding, Trailer,
// Pragma, Connection: close), to a request other than HEAD. Anything
// else — nothing has been consumed then — goes to http.ReadResponse.
// wrap, when not nil, is room for the caller's wrapper of the body that
// came in the response's allocation. s, when not nil, lends the storage
// of the common case (Scratch).
func readResponse(br *bufio.Reader, req *http.Request, s *Scratch) (resp *http.Response, wrap *h1Body, err error) {
	if box := readSimpleResponse(br, req, s); box != nil {
		return &box.resp, &box.wrap, nil
	}
	resp, err = http.ReadResponse(br, req)
	return resp, nil, err
}

// responseBox is a response readSimpleResponse read, with its body and
// room for send's wrapper of the body: one allocation of the 240 bytes
// the three took apart. (The header values' slice stays apart: an array
// for the usual few in here made the box larger than the allocations it
// saved.)
type responseBox struct {
	resp http.Response
	body fixedBody
	wrap h1Body
}

// Scratch is storage a caller lends the round trips of one request, and
// takes back for its next request once nothing uses the last one's: the
// response of the synchronous HTTP/1.1 path and its header map, and the
// HTTP/2 client's response with the maps of its header and trailers
// (h2client.Storage), which would otherwise be allocated for every
// request. The response (and the
// header map, which the caller may change) are valid until the Scratch
// is lent again; a retry's response takes the place of the one before.
// The zero value is ready; a Scratch is not safe for concurrent use.
type Scratch struct {
	box    responseBox
	header http.Header
	h2     h2client.Storage // the HTTP/2 client's response
	head   HeadResponse     // the byte path's response (bytes.go)
	// held: an attempt went through a transport that may use the
	// request after its round trip returns (a body still being written
	// by a goroutine of its own): the request must not be reused. Set by
	// Pool.RoundTrip, cleared by Reset.
	held bool
}

// hold notes that a transport may still use the request (nil s: none
// lent).
func (s *Scratch) hold() {
	if s != nil {
		s.held = true
	}
}

// Reset makes s ready for the next request.
func (s *Scratch) Reset() {
	h := s.header
	if len(h) > maxScratchHeader {
		h = nil // a map grown for an unusual response is let go
	}
	clear(h)
	h2 := s.h2
	h2.Reset()
	*s = Scratch{header: h, h2: h2}
}

// h2Storage is s's storage for an HTTP/2 response (nil s: none lent).
func (s *Scratch) h2Storage() *h2client.Storage {
	if s == nil {
		return nil
	}
	return &s.h2
}

// Held reports whether a transport may still use the request a round
// trip was given after it returned: an HTTP/2 stream or an
// http.Transport still sending the body.
func (s *Scratch) Held() bool { return s.held }

// maxScratchHeader is the most fields a header map kept in a Scratch for
// the next request may have held.
const maxScratchHeader = 32

func readSimpleResponse(br *bufio.Reader, req *http.Request, s *Scratch) *responseBox {
	if req.Method == http.MethodHead {
		return nil
	}
	buf, err := br.Peek(br.Buffered())
	if err != nil {
		return nil
	}
	end := bytes.Index(buf, crlfcrlf)
	if end < 0 {
		return nil // not all here yet
	}
	end += len(crlfcrlf)
	head := buf[:end]
	// The status line: "HTTP/1.1 ddd" then the end or " reason".
	if len(head) < 14 || string(head[:9]) != "HTTP/1.1 " {
		return nil
	}
	eol := bytes.IndexByte(head, '\n')
	if eol < 13 || head[eol-1] != '\r' {
		return nil
	}
	code := 0
	for _, c := range head[9:12] {
		if c < '0' || c > '9' {
			return nil
		}
		code = code*10 + int(c-'0')
	}
	if code < 200 || code > 599 || code == http.StatusNoContent || code == http.StatusNotModified {
		return nil
	}
	if eol > 13 && head[12] != ' ' || hasCTLBytes(head[12:eol-1]) {
		return nil
	}
	// Count the header lines and check them before allocating.
	lines := 0
	length := int64(-1)
	for rest := head[eol+1 : end-2]; len(rest) > 0; {
		i := bytes.IndexByte(rest, '\n')
		if i < 1 || rest[i-1] != '\r' {
			return nil
		}
		line := rest[:i-1]
		rest = rest[i+1:]
		k, v, ok := bytes.Cut(line, colon)
		if !ok || len(k) == 0 || !validValue(v) {
			return nil
		}
		for _, c := range k {
			if !isTokenByte(c) {
				return nil // a space, folding or worse: net/http's to judge
			}
		}
		switch {
		case equalFold(k, "Transfer-Encoding"), equalFold(k, "Trailer"), equalFold(k, "Pragma"):
			return nil
		case equalFold(k, "Connection"):
			if hasCloseBytes(v) {
				return nil // net/http closes and drops the header
			}
		case equalFold(k, "Content-Length"):
			if length >= 0 {
				return nil // repeated: net/http checks they agree
			}
			if length = parseLength(bytes.Trim(v, " \t")); length < 0 {
				return nil
			}
		}
		lines++
	}
	if length < 0 {
		return nil
	}
	// One string holds the whole head; the status, names and values are
	// pieces of it.
	hs := string(head)
	var h http.Header
	if s != nil && s.header != nil {
		h = s.header
		clear(h) // a retry's: the response before it is no longer used
	} else {
		h = make(http.Header, lines)
		if s != nil {
			s.header = h
		}
	}
	vals := make([]string, lines)
	rest := hs[eol+1 : end-2]
	for i := 0; len(rest) > 0; i++ {
		j := indexByteString(rest, '\n')
		line := rest[:j-1]
		rest = rest[j+1:]
		c := indexByteString(line, ':')
		k := textproto.CanonicalMIMEHeaderKey(line[:c])
		v := trimSpace(line[c+1:])
		if vv := h[k]; vv != nil {
			h[k] = append(vv, v)
			continue
		}
		vals[i] = v
		h[k] = vals[i : i+1 : i+1]
	}
	if _, err := br.Discard(end); err != nil {
		return nil // cannot happen: the bytes are buffered
	}
	var box *responseBox
	if s != nil {
		box = &s.box
		*box = responseBox{}
	} else {
		box = new(responseBox)
	}
	box.resp = http.Response{
		Status: hs[9 : eol-1], StatusCode: code,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, ContentLength: length, Request: req,
	}
	if length == 0 {
		box.resp.Body = http.NoBody
	} else {
		box.body = fixedBody{br: br, n: length}
		box.resp.Body = &box.body
	}
	return box
}

var crlfcrlf = []byte("\r\n\r\n")
var colon = []byte(":")

// fixedBody is a response body of known length, read as net/http's:
// io.EOF with the last bytes, io.ErrUnexpectedEOF if the connection ends
// before them.
type fixedBody struct {
	br *bufio.Reader
	n  int64
}

func (b *fixedBody) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := b.br.Read(p)
	b.n -= int64(n)
	if b.n == 0 {
		return n, io.EOF
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (b *fixedBody) Close() error { return nil }

// parseLength parses a Content-Length value: digits only, at most 18 of
// them; -1 otherwise.
func parseLength(v []byte) int64 {
	if len(v) == 0 || len(v) > 18 {
		return -1
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return -1
		}
		n = n*10 + int64(c-'0')
	}
	return n
}

// isTokenByte reports whether c may be in a header name (RFC 9110 token).
func isTokenByte(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

// validValue reports whether every byte of a header value is one
// net/textproto accepts: visible ASCII, space, tab, or obs-text.
func validValue(v []byte) bool {
	for _, c := range v {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false
		}
	}
	return true
}

// hasCTLBytes reports whether b has a control byte (a reason phrase
// net/textproto would still accept but this path leaves to it).
func hasCTLBytes(b []byte) bool {
	for _, c := range b {
		if c < ' ' && c != '\t' || c == 0x7f {
			return true
		}
	}
	return false
}

func indexByteString(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}

// trimSpace trims spaces and tabs, as net/textproto trims a value.
func trimSpace(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// equalFold reports whether the header name b is name, ASCII case
// insensitively.
func equalFold(b []byte, name string) bool {
	if len(b) != len(name) {
		return false
	}
	for i := range len(b) {
		c, n := b[i], name[i]
		if c|0x20 != n|0x20 {
			return false
		}
	}
	return true
}

// hasCloseBytes reports whether a Connection value lists close.
func hasCloseBytes(v []byte) bool {
	for f := range bytes.SplitSeq(v, comma) {
		if equalFold(bytes.Trim(f, " \t"), "close") {
			return true
		}
	}
	return false
}

var comma = []byte(",")
