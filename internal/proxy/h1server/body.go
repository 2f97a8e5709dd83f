package h1server

import (
	"bufio"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
)

var chunkedTE = []string{"chunked"}

// Errors of a malformed chunked body: the client's protocol error, not
// a connection failure (they are neither net.Error nor
// io.ErrUnexpectedEOF, which mean the client went away).
var (
	errChunkSize    = errors.New("malformed chunked encoding: invalid chunk size")
	errChunkLine    = errors.New("malformed chunked encoding: a chunk line does not end in CRLF")
	errChunkEnd     = errors.New("malformed chunked encoding: chunk data does not end in CRLF")
	errTrailer      = errors.New("malformed chunked encoding: invalid trailer field")
	errTrailerFold  = errors.New("malformed chunked encoding: obsolete line folding in the trailer")
	errTrailerLarge = errors.New("malformed chunked encoding: trailer section too large")
)

// setBody gives r its body as its Content-Length and Transfer-Encoding
// say, and handles Expect.
func (c *conn) setBody(r *http.Request) error {
	h := r.Header
	te, hasTE := h["Transfer-Encoding"]
	if hasTE {
		delete(h, "Transfer-Encoding")
		if r.ProtoMinor == 0 {
			// net/http ignores it and reads the body by Content-Length:
			// the bytes of a chunked body would then be read as the
			// next request of a kept-alive connection, after a front
			// end that honours chunked passed them on as a body.
			return errTE10
		}
		if len(te) != 1 || !strings.EqualFold(te[0], "chunked") {
			return &requestError{code: http.StatusNotImplemented, msg: "unsupported transfer encoding"}
		}
	}
	cl, hasCL := h["Content-Length"]
	if hasCL && hasTE {
		if !c.o.AllowChunkedLength {
			return errCLTE
		}
		delete(h, "Content-Length")
		hasCL = false
	}
	var n int64
	if hasCL {
		first := trimOWS(cl[0])
		for _, v := range cl[1:] {
			if trimOWS(v) != first {
				return badRequest("message cannot contain multiple Content-Length headers")
			}
		}
		if len(cl) > 1 {
			h["Content-Length"] = cl[:1]
		}
		var ok bool
		if n, ok = parseLength(first); !ok {
			return badRequest("bad Content-Length " + first)
		}
	}
	r.Trailer = nil
	switch {
	case hasTE:
		r.TransferEncoding = chunkedTE
		r.ContentLength = -1
		if tv, ok := h["Trailer"]; ok {
			delete(h, "Trailer") // as net/http: the declared names are r.Trailer's keys
			r.Trailer = http.Header{}
			for _, v := range tv {
				for _, k := range strings.Split(v, ",") {
					if k = trimOWS(k); k != "" {
						switch k = http.CanonicalHeaderKey(k); k {
						case "Transfer-Encoding", "Trailer", "Content-Length":
							return badRequest("bad trailer key " + k)
						}
						r.Trailer[k] = nil
					}
				}
			}
		}
	case n > 0:
		r.ContentLength = n
	default:
		r.ContentLength = 0
		r.Body = http.NoBody
	}
	if ev, ok := h["Expect"]; ok {
		if len(ev) == 1 && strings.EqualFold(ev[0], "100-continue") {
			delete(h, "Expect")
		} else {
			return &requestError{code: http.StatusExpectationFailed}
		}
		if r.ProtoMinor == 0 || r.Body == http.NoBody {
			// Nothing to continue to.
			if r.Body != http.NoBody {
				r.Body = c.newBody(r, false)
			}
			return nil
		}
		r.Body = c.newBody(r, true)
		return nil
	}
	if r.Body == nil {
		r.Body = c.newBody(r, false)
	}
	return nil
}

func parseLength(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int64(s[i]-'0')
	}
	return n, true
}

// body is a request body read from the connection. Its reads may come
// from any goroutine, one at a time; the connection's goroutine reads
// what the handler left (finish).
type body struct {
	c         *conn
	req       *http.Request
	mu        sync.Mutex
	chunked   bool
	remaining int64       // of the body (Content-Length) or of the current chunk
	inChunk   bool        // chunked: in a chunk's data
	expect    atomic.Bool // "100 Continue" is still to be sent before the first read
	eof       bool
	err       error // a read error: the connection cannot serve another request
	closed    bool
}

func (c *conn) newBody(r *http.Request, expect bool) *body {
	b := &body{c: c, req: r, chunked: r.ContentLength < 0, remaining: r.ContentLength}
	b.expect.Store(expect)
	return b
}

// Read implements io.Reader.
func (b *body) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	return b.readLocked(p)
}

func (b *body) readLocked(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.eof {
		return 0, io.EOF
	}
	if b.expect.Load() {
		b.expect.Store(false)
		if err := b.c.writeContinue(); err != nil {
			b.err = err
			return 0, err
		}
	}
	var n int
	var err error
	if b.chunked {
		n, err = b.readChunked(p)
	} else {
		n, err = b.readLength(p)
	}
	if err == io.EOF {
		b.eof = true
		b.c.bodyEOF()
	} else if err != nil {
		b.err = err
	}
	return n, err
}

func (b *body) readLength(p []byte) (int, error) {
	if int64(len(p)) > b.remaining {
		p = p[:b.remaining]
	}
	n, err := b.c.br.Read(p)
	b.remaining -= int64(n)
	if b.remaining == 0 {
		return n, io.EOF
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

func (b *body) readChunked(p []byte) (int, error) {
	br := b.c.br
	for !b.inChunk {
		line, err := b.line()
		if err != nil {
			return 0, err
		}
		size, ok := chunkSize(line)
		if !ok {
			return 0, errChunkSize
		}
		if size == 0 {
			return 0, b.readTrailer()
		}
		b.remaining, b.inChunk = size, true
	}
	if len(p) == 0 {
		return 0, nil
	}
	if int64(len(p)) > b.remaining {
		p = p[:b.remaining]
	}
	n, err := br.Read(p)
	b.remaining -= int64(n)
	if b.remaining == 0 {
		b.inChunk = false
		var crlf [2]byte
		if _, err := io.ReadFull(br, crlf[:]); err != nil {
			return n, unexpected(err)
		}
		if crlf != [2]byte{'\r', '\n'} {
			return n, errChunkEnd
		}
		return n, nil
	}
	return n, unexpected(err)
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// line reads a chunk-size or trailer line without its CRLF.
func (b *body) line() (string, error) {
	s, err := b.c.br.ReadSlice('\n')
	if err != nil {
		if err == io.EOF {
			return "", io.ErrUnexpectedEOF
		}
		if err == io.ErrShortBuffer || errors.Is(err, bufio.ErrBufferFull) {
			return "", errChunkSize
		}
		return "", err
	}
	if len(s) < 2 || s[len(s)-2] != '\r' {
		return "", errChunkLine
	}
	return string(s[:len(s)-2]), nil
}

// chunkSize parses a chunk-size line: hex digits, then optional
// whitespace and extensions.
func chunkSize(line string) (int64, bool) {
	var n int64
	i := 0
	for ; i < len(line); i++ {
		v, ok := unhex(line[i])
		if !ok {
			break
		}
		if i >= 15 {
			return 0, false
		}
		n = n<<4 | int64(v)
	}
	if i == 0 {
		return 0, false
	}
	rest := trimOWS(line[i:])
	if rest != "" && rest[0] != ';' {
		return 0, false
	}
	return n, validValue(rest)
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

// readTrailer reads the trailer section after the last chunk into
// req.Trailer, and returns io.EOF when it is whole.
func (b *body) readTrailer() error {
	total := 0
	limit := b.c.s.maxHeadBytes()
	for {
		line, err := b.line()
		if err != nil {
			return err
		}
		if line == "" {
			return io.EOF
		}
		if total += len(line); total > limit {
			return errTrailerLarge
		}
		if line[0] == ' ' || line[0] == '\t' {
			return errTrailerFold
		}
		name, v, ok := strings.Cut(line, ":")
		if !ok || !validToken(name) {
			return errTrailer
		}
		v = trimOWS(v)
		if !validValue(v) {
			return errTrailer
		}
		if b.req.Trailer == nil {
			b.req.Trailer = http.Header{}
		}
		k := canonicalKey(name)
		b.req.Trailer[k] = append(b.req.Trailer[k], v)
	}
}

// InMemory reports whether the rest of the body is already read from the
// connection (a length-framed body that arrived with its head), so that
// reading it to the end cannot block: the upstream can then send it with
// the request head in one write (upstream.InMemoryBody).
func (b *body) InMemory() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || b.err != nil || b.chunked || b.expect.Load() {
		return false
	}
	return b.eof || int64(b.c.br.Buffered()) >= b.remaining
}

// Close implements io.Closer: later reads fail. What is left is read by
// finish.
func (b *body) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return nil
}

// finish reads and discards what the handler left of the body (at most
// maxPostHandlerReadBytes) and reports whether the connection can serve
// another request. Called on the connection's goroutine after the
// handler returned.
func (b *body) finish() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	if b.eof {
		return true
	}
	if b.err != nil || b.expect.Load() {
		return false // broken, or the client waits for a 100 Continue that never came
	}
	var buf [4096]byte
	left := maxPostHandlerReadBytes
	for left > 0 {
		n, err := b.readLocked(buf[:min(len(buf), left)])
		left -= n
		if err == io.EOF {
			return true
		}
		if err != nil {
			return false
		}
	}
	return false
}
