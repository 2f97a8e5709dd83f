package upstream

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"

	"weft.dev/weft/internal/proxy/reqctx"
)

// Requests sent as bytes (the request path's byte path,
// forward/bytepath.go).
//
// A bodyless GET or HEAD whose head the request path wrote as bytes goes
// out as RoundTrip would send it, on the same pooled connections, with
// the same replacement of a stale pooled connection. Its response head
// is left in the connection's buffer: a length-framed HTTP/1.1 response
// the caller can relay as bytes is handed over as a HeadResponse;
// anything else becomes the *http.Response RoundTrip would have
// returned.

// HeadResponse is a length-framed HTTP/1.1 response whose head is still
// in its connection's buffer. The caller relays it (Relay) or turns it
// into an *http.Response (Response); one of the two, once.
type HeadResponse struct {
	// Status is the response's status code (200 or more, not 101).
	Status int
	// Length is the body's length: its Content-Length, or 0 when the
	// response has no body (a HEAD request's, 204, 304).
	Length int64

	fields [MaxHeadFields]Field
	n      int

	method string
	e      *Conns
	pc     *h1Conn
	stop   reqctx.Stop
	keep   bool // both sides allow keep-alive
	head   int  // the head's bytes in pc.br, the empty line included
}

// BytesOK reports whether RoundTripHead can send on e: not an endpoint
// whose TLS server name follows each request's host.
func (e *Conns) BytesOK() bool { return !e.autoSNI }

// MaxHeadFields is the most fields a HeadResponse has; a longer head
// comes back as an *http.Response.
const MaxHeadFields = 32

// Field is a header field of a HeadResponse: its name as received and
// its value without the whitespace around it. Views of the connection's
// buffer.
type Field struct{ Name, Value []byte }

// Fields are the response's header fields, in order. Valid until Relay,
// Response or Close.
func (hr *HeadResponse) Fields() []Field { return hr.fields[:hr.n] }

// RoundTripHead sends head, the whole head of a bodyless request with
// this method (GET or HEAD), on one of e's connections and reads the
// response head. A length-framed HTTP/1.1 final response comes back as
// hr, stored in s; any other response as resp, as RoundTrip returns it.
func (e *Conns) RoundTripHead(ctx context.Context, head []byte, method string, s *Scratch) (hr *HeadResponse, resp *http.Response, err error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	if e.autoSNI {
		return nil, nil, errors.New("upstream: RoundTripHead on an endpoint with per-host SNI")
	}
	pc, reused := e.get(), true
	if pc == nil {
		if pc, err = e.dial(ctx); err != nil {
			return nil, nil, err
		}
		reused = false
	}
	hr, resp, err = e.sendHead(ctx, pc, head, method, reused, s)
	if err == errRetry {
		if pc, err = e.dial(ctx); err != nil {
			return nil, nil, err
		}
		hr, resp, err = e.sendHead(ctx, pc, head, method, false, s)
	}
	return hr, resp, err
}

// sendHead is send for a request head given as bytes (GET and HEAD are
// idempotent: a reused connection closed or reset before any response
// byte is replaced).
func (e *Conns) sendHead(ctx context.Context, pc *h1Conn, head []byte, method string, reused bool, s *Scratch) (*HeadResponse, *http.Response, error) {
	stop := reqctx.AfterFunc(ctx, pc.interrupt)
	fail := func(err error, retry bool) (*HeadResponse, *http.Response, error) {
		stop.Stop()
		pc.nc.Close()
		if retry && reused && ctx.Err() == nil {
			return nil, nil, errRetry
		}
		return nil, nil, err
	}
	_, err := pc.bw.Write(head)
	if retry, err := pc.awaitResponse(err, true); err != nil {
		return fail(err, retry)
	}
	if hr := s.headResponse(pc.br, method); hr != nil {
		hr.e, hr.pc, hr.stop = e, pc, stop
		return hr, nil, nil
	}
	req := &http.Request{Method: method, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
	resp, err := e.readFinal(pc, req, stop, s)
	if err != nil {
		return fail(err, false)
	}
	return nil, resp, nil
}

// readFinal reads the final response to req on pc, skipping
// informational ones, and wraps its body to give pc back (send's tail).
func (e *Conns) readFinal(pc *h1Conn, req *http.Request, stop reqctx.Stop, s *Scratch) (*http.Response, error) {
	var resp *http.Response
	var wrap *h1Body
	var err error
	for n := 0; ; n++ {
		if resp, wrap, err = readResponse(pc.br, req, s); err != nil {
			return nil, err
		}
		if resp.StatusCode >= 200 {
			break
		}
		if resp.StatusCode == http.StatusSwitchingProtocols || n == 5 {
			return nil, fmt.Errorf("upstream sent unexpected %d response", resp.StatusCode)
		}
	}
	if wrap == nil {
		wrap = new(h1Body)
	}
	*wrap = h1Body{rc: resp.Body, e: e, pc: pc, stop: stop, keepAlive: !resp.Close && !req.Close && resp.ProtoAtLeast(1, 1)}
	resp.Body = wrap
	return resp, nil
}

// headResponse returns the response head buffered in br as s's
// HeadResponse when it is whole in the buffer, HTTP/1.1, final and
// length-framed with valid fields; else nil, with nothing consumed.
func (s *Scratch) headResponse(br *bufio.Reader, method string) *HeadResponse {
	b, _ := br.Peek(br.Buffered())
	for {
		end := bytes.Index(b, crlfcrlf)
		if end >= 0 {
			b = b[:end+4]
			break
		}
		if len(b) == br.Size() {
			return nil // a long head: the general reader
		}
		if _, err := br.Peek(len(b) + 1); err != nil {
			return nil // the general reader reports it
		}
		b, _ = br.Peek(br.Buffered())
	}
	line, fields, ok := bytes.Cut(b, crlf)
	if !ok || len(line) < 12 || !bytes.HasPrefix(line, http11) || len(line) > 12 && line[12] != ' ' {
		return nil
	}
	status := 0
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return nil
		}
		status = status*10 + int(c-'0')
	}
	if status < 200 || status > 599 || status == http.StatusSwitchingProtocols || hasCTLBytes(line) {
		return nil
	}
	fields = fields[:len(fields)-2] // the empty line
	length := int64(-1)
	keep := true
	hr := &s.head
	hr.n = 0
	for rest := fields; len(rest) > 0; {
		i := bytes.Index(rest, crlf)
		if i < 0 {
			return nil // a bare LF: the general reader
		}
		f := rest[:i]
		rest = rest[i+2:]
		c := bytes.IndexByte(f, ':')
		if c <= 0 {
			return nil
		}
		name, value := f[:c], bytes.Trim(f[c+1:], " \t")
		for _, ch := range name {
			if !isTokenByte(ch) {
				return nil
			}
		}
		if !validValue(value) || hr.n == MaxHeadFields {
			return nil
		}
		hr.fields[hr.n] = Field{name, value}
		hr.n++
		switch {
		case equalFold(name, "Content-Length"):
			v := parseLength(value)
			if v < 0 || length >= 0 && v != length {
				return nil
			}
			length = v
		case equalFold(name, "Transfer-Encoding"):
			return nil
		case equalFold(name, "Connection"):
			if hasCloseBytes(value) {
				keep = false
			}
		}
	}
	if method == http.MethodHead || status == http.StatusNoContent || status == http.StatusNotModified {
		length = 0
	} else if length < 0 {
		return nil // read to the connection's end: the general reader
	}
	hr.Status, hr.Length, hr.method, hr.keep, hr.head = status, length, method, keep, len(b)
	return hr
}

var (
	crlf   = []byte("\r\n")
	http11 = []byte("HTTP/1.1 ")
)

// Relay writes the response's body to w (the caller has written the
// head it made of Fields) and gives the connection back when the body
// ended cleanly and both sides keep it alive. It returns the body bytes
// written; an error is the upstream's (the body ended early) or w's.
func (hr *HeadResponse) Relay(w *bufio.Writer) (int64, error) {
	pc := hr.pc
	hr.pc = nil
	pc.br.Discard(hr.head)
	hr.n = 0
	var n int64
	for n < hr.Length {
		if pc.br.Buffered() == 0 {
			if _, err := pc.br.Peek(1); err != nil {
				hr.stop.Stop()
				pc.nc.Close()
				return n, err
			}
		}
		p, _ := pc.br.Peek(int(min(int64(pc.br.Buffered()), hr.Length-n)))
		m, err := w.Write(p)
		pc.br.Discard(m)
		n += int64(m)
		if err != nil {
			hr.stop.Stop()
			pc.nc.Close()
			return n, err
		}
	}
	if hr.stop.Stop() && hr.keep && pc.br.Buffered() == 0 {
		hr.e.put(pc)
	} else {
		pc.nc.Close()
	}
	return n, nil
}

// Response turns the response into the *http.Response RoundTrip would
// have returned, its body giving the connection back as RoundTrip's.
func (hr *HeadResponse) Response(s *Scratch) (*http.Response, error) {
	pc, e := hr.pc, hr.e
	hr.pc, hr.n = nil, 0
	req := &http.Request{Method: hr.method, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
	resp, err := e.readFinal(pc, req, hr.stop, s)
	if err != nil {
		hr.stop.Stop()
		pc.nc.Close()
		return nil, err
	}
	return resp, nil
}

// Close ends the response without reading it: its connection is closed.
func (hr *HeadResponse) Close() {
	if pc := hr.pc; pc != nil {
		hr.pc = nil
		hr.stop.Stop()
		pc.nc.Close()
	}
}
