package h1server

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"weft.dev/weft/internal/proxy/urlpath"
)

// requestError is a request refused before the handler: the status, and
// what was wrong (net/http's wording where it has one).
type requestError struct {
	code int
	msg  string
}

func (e *requestError) Error() string { return "malformed HTTP/1.1 request: " + e.msg }

// response is the answer net/http gives a request it refuses.
func (e *requestError) response() string {
	body := strconv.Itoa(e.code) + " " + http.StatusText(e.code)
	switch e.code {
	case http.StatusBadRequest:
		if e.msg != "" {
			body += ": " + e.msg
		}
	case http.StatusNotImplemented:
		body = "Unsupported transfer encoding"
	}
	return "HTTP/1.1 " + strconv.Itoa(e.code) + " " + http.StatusText(e.code) +
		"\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n" + body
}

func badRequest(msg string) error { return &requestError{code: http.StatusBadRequest, msg: msg} }

// The refusals Envoy's codec makes and net/http does not.
var (
	errFold = badRequest("obsolete line folding: a header line starts with a space or tab")
	errCLTE = badRequest("both Content-Length and Transfer-Encoding are set")
	// RFC 9112 section 6.1: an HTTP/1.0 message with Transfer-Encoding
	// has faulty framing, whatever its Content-Length says.
	errTE10   = badRequest("Transfer-Encoding on an HTTP/1.0 request")
	errTooBig = &requestError{code: http.StatusRequestHeaderFieldsTooLarge}
)

// readHead reads the next request head, up to and including its empty
// line, and returns it as one string. first: the connection's first
// request, whose header deadline was set when the connection started.
func (c *conn) readHead(first bool) (string, error) {
	limit := c.s.maxHeadBytes()
	from := 0 // where the line being scanned starts
	inBig := false
	deadline := first || c.s.ReadHeaderTimeout <= 0
	for {
		var b []byte
		if inBig {
			b = c.big
		} else {
			b, _ = c.br.Peek(c.br.Buffered())
		}
		end, next := headEnd(b, from)
		if end >= 0 {
			if end > limit {
				return "", errTooBig
			}
			s := string(b[:end])
			if !inBig {
				c.br.Discard(end)
			} else {
				c.big = c.big[:0]
			}
			return s, nil
		}
		from = next
		if len(b) > limit {
			return "", errTooBig
		}
		if !deadline {
			// The head did not come whole: it has ReadHeaderTimeout
			// from now (about its first byte) to come.
			deadline = true
			c.setWant(time.Now().Add(c.s.ReadHeaderTimeout))
		}
		if inBig {
			if _, err := c.br.Peek(1); err != nil {
				return "", err
			}
			n := c.br.Buffered()
			p, _ := c.br.Peek(n)
			c.big = append(c.big, p...)
			c.br.Discard(n)
			continue
		}
		if c.br.Buffered() == c.br.Size() {
			// Longer than the buffer: gather it in big.
			inBig = true
			c.big = append(c.big[:0], b...)
			c.br.Discard(len(b))
			continue
		}
		if _, err := c.br.Peek(c.br.Buffered() + 1); err != nil {
			if c.br.Buffered() > 0 && errors.Is(err, errEOF) {
				return "", badRequest("unexpected EOF in the request head")
			}
			return "", err
		}
	}
}

// headEnd scans b from from, the start of a line, for the empty line
// that ends a head. It returns the offset just past it, or -1 and the
// start of the first incomplete line. A line ends in LF, with or without
// a CR before it (RFC 9112 section 2.2 lets a recipient take a bare LF as
// a line's end, and net/http and Envoy do); an empty first line is not
// the end.
func headEnd(b []byte, from int) (end, next int) {
	for {
		i := bytes.IndexByte(b[from:], '\n')
		if i < 0 {
			return -1, from
		}
		lf := from + i
		if from > 0 && (i == 0 || i == 1 && b[lf-1] == '\r') {
			return lf + 1, 0
		}
		from = lf + 1
	}
}

// trimCR is line without the CR that may end it.
func trimCR(line string) string {
	if n := len(line); n > 0 && line[n-1] == '\r' {
		return line[:n-1]
	}
	return line
}

// maxReusedHeader is the most fields a request header map kept for the
// connection's next request may have held.
const maxReusedHeader = 32

// readRequest reads and parses the next request into c.tmpl.
func (c *conn) readRequest(first bool) (*http.Request, error) {
	head, err := c.readHead(first)
	if err != nil {
		return nil, err
	}
	c.setWant(time.Time{}) // no deadline while the request is served (a stale one is put right)
	return c.parseRequest(head)
}

// parseRequest parses the request head head into c.tmpl.
func (c *conn) parseRequest(head string) (*http.Request, error) {
	r := &c.tmpl
	// The last request's header map is filled again: its handler has
	// returned (as with the response's map, a handler does not keep the
	// request's past that), and a map that held a head has its slots.
	*r = http.Request{Header: c.reqHeader, URL: &c.url}
	err := parseHead(r, head, &c.o)
	c.reqHeader = nil
	if len(r.Header) <= maxReusedHeader {
		c.reqHeader = r.Header
	}
	if err != nil {
		return nil, err
	}
	r.RemoteAddr = c.remote
	r.TLS = c.o.TLS
	return r, c.setBody(r)
}

// parseHead parses a request head (CRLF line ends, checked by headEnd)
// into r. r.Header, when not nil, is a map to clear and fill; r.URL,
// when not nil, a URL to fill.
func parseHead(r *http.Request, head string, o *ConnOptions) error {
	// Lines end in LF or CRLF (headEnd); the head ends in an empty one.
	i := strings.IndexByte(head, '\n')
	line := trimCR(head[:i])
	end := len(head) - 1
	if head[end-1] == '\r' {
		end--
	}
	rest := head[i+1 : end] // the header lines, each ending in LF or CRLF
	method, line, ok1 := strings.Cut(line, " ")
	uri, proto, ok2 := strings.Cut(line, " ")
	if !ok1 || !ok2 {
		return badRequest("malformed HTTP request " + strconv.Quote(trimCR(head[:i])))
	}
	if !validToken(method) {
		return badRequest("invalid method " + strconv.Quote(method))
	}
	major, minor, ok := parseVersion(proto)
	if !ok {
		return badRequest("malformed HTTP version " + strconv.Quote(proto))
	}
	if major != 1 {
		return &requestError{code: http.StatusHTTPVersionNotSupported, msg: "unsupported protocol version"}
	}
	r.Method, r.RequestURI, r.Proto, r.ProtoMajor, r.ProtoMinor = method, uri, proto, major, minor
	raw := uri
	authority := method == http.MethodConnect && !strings.HasPrefix(uri, "/")
	if authority {
		raw = "http://" + raw
	}
	u := r.URL
	if u == nil {
		u = new(url.URL)
	}
	if err := urlpath.ParseRequestURI(raw, u); err != nil {
		r.URL = nil
		return badRequest(err.Error())
	}
	if authority {
		u.Scheme = ""
	}
	r.URL = u

	// Headers: one []string for all values, each key's a slice of it.
	n := strings.Count(rest, "\n")
	h := r.Header
	if h == nil {
		h = make(http.Header, n)
	} else {
		clear(h)
	}
	vals := make([]string, n)
	for rest != "" {
		j := strings.IndexByte(rest, '\n')
		kv := trimCR(rest[:j])
		rest = rest[j+1:]
		if kv[0] == ' ' || kv[0] == '\t' {
			return errFold
		}
		colon := strings.IndexByte(kv, ':')
		if colon <= 0 {
			return badRequest("malformed MIME header line: " + strconv.Quote(kv))
		}
		name := kv[:colon]
		if !validToken(name) {
			return badRequest("invalid header name " + strconv.Quote(name))
		}
		v := trimOWS(kv[colon+1:])
		if !validValue(v) {
			return badRequest("invalid header value for " + strconv.Quote(name))
		}
		key := canonicalKey(name)
		if vv, ok := h[key]; ok {
			h[key] = append(vv, v)
		} else {
			vals[0] = v
			h[key] = vals[:1:1]
			vals = vals[1:]
		}
	}
	r.Header = h

	hosts, haveHost := h["Host"]
	switch {
	case len(hosts) > 1:
		return badRequest("too many Host headers")
	case haveHost && !validHost(hosts[0]):
		return badRequest("malformed Host header")
	}
	r.Host = u.Host
	if r.Host == "" && haveHost {
		r.Host = hosts[0]
	}
	delete(h, "Host")
	if pc, ok := h["Pragma"]; ok && len(pc) > 0 && pc[0] == "no-cache" {
		if _, ok := h["Cache-Control"]; !ok {
			h["Cache-Control"] = []string{"no-cache"}
		}
	}
	conn := h["Connection"]
	hasClose := containsToken(conn, "close")
	if minor == 0 {
		r.Close = hasClose || !containsToken(conn, "keep-alive")
	} else {
		r.Close = hasClose
	}
	return nil
}

var errEOF = io.EOF

// parseVersion parses "HTTP/1.1" and the like.
func parseVersion(v string) (major, minor int, ok bool) {
	switch v {
	case "HTTP/1.1":
		return 1, 1, true
	case "HTTP/1.0":
		return 1, 0, true
	}
	if len(v) != len("HTTP/x.y") || !strings.HasPrefix(v, "HTTP/") || v[6] != '.' {
		return 0, 0, false
	}
	ma, mi := v[5], v[7]
	if ma < '0' || ma > '9' || mi < '0' || mi > '9' {
		return 0, 0, false
	}
	return int(ma - '0'), int(mi - '0'), true
}

// tokenTable marks the bytes of an RFC 9110 token.
var tokenTable = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !tokenTable[s[i]] {
			return false
		}
	}
	return true
}

// validValue: no control bytes but HTAB (obs-text, 0x80 and up, is
// allowed), as httpguts.ValidHeaderFieldValue.
func validValue(s string) bool {
	for i := 0; i < len(s); i++ {
		b := s[i]
		if (b < ' ' && b != '\t') || b == 0x7f {
			return false
		}
	}
	return true
}

// validHost is httpguts.ValidHostHeader: the bytes a Host may hold.
func validHost(h string) bool {
	for i := 0; i < len(h); i++ {
		if !validHostByte[h[i]] {
			return false
		}
	}
	return true
}

var validHostByte = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!$%&'()*+,-.:;=[]_~" {
		t[c] = true
	}
	return t
}()

func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// containsToken reports whether a comma-separated header value holds
// token (any case).
func containsToken(vv []string, token string) bool {
	for _, v := range vv {
		for v != "" {
			var t string
			t, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(trimOWS(t), token) {
				return true
			}
		}
	}
	return false
}

// canonicalKey is textproto.CanonicalMIMEHeaderKey for a valid token,
// without allocating for a name already canonical or a common one.
func canonicalKey(name string) string {
	upper := true
	canonical := true
	for i := 0; i < len(name); i++ {
		c := name[i]
		if (upper && 'a' <= c && c <= 'z') || (!upper && 'A' <= c && c <= 'Z') {
			canonical = false
			break
		}
		upper = c == '-'
	}
	if canonical {
		return name
	}
	var buf [64]byte
	var b []byte
	if len(name) <= len(buf) {
		b = buf[:len(name)]
	} else {
		b = make([]byte, len(name))
	}
	upper = true
	for i := 0; i < len(name); i++ {
		c := name[i]
		if upper && 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		} else if !upper && 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b[i] = c
		upper = c == '-'
	}
	if k, ok := commonKeys[string(b)]; ok {
		return k
	}
	return string(b)
}

var commonKeys = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{
		"Accept", "Accept-Charset", "Accept-Encoding", "Accept-Language", "Accept-Ranges", "Authorization",
		"B3", "Baggage", "Cache-Control", "Cf-Ray", "Connection", "Content-Disposition", "Content-Encoding",
		"Content-Language", "Content-Length", "Content-Type", "Cookie", "Date", "Dnt", "Etag", "Expect",
		"Expires", "From", "Grpc-Timeout", "Host", "If-Match", "If-Modified-Since", "If-None-Match",
		"If-Range", "If-Unmodified-Since", "Keep-Alive", "Last-Modified", "Link", "Location",
		"Max-Forwards", "Origin", "Pragma", "Proxy-Authorization", "Range", "Referer", "Te", "Trailer",
		"Traceparent", "Tracestate", "Transfer-Encoding", "Upgrade", "User-Agent", "Via",
		"X-B3-Parentspanid", "X-B3-Sampled", "X-B3-Spanid", "X-B3-Traceid", "X-Client-Trace-Id",
		"X-Envoy-Attempt-Count", "X-Envoy-Expected-Rq-Timeout-Ms", "X-Envoy-Peer-Metadata",
		"X-Envoy-Peer-Metadata-Id", "X-Forwarded-Client-Cert", "X-Forwarded-For", "X-Forwarded-Host",
		"X-Forwarded-Proto", "X-Ot-Span-Context", "X-Real-Ip", "X-Request-Id",
		"Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Protocol", "Sec-Websocket-Extensions",
	} {
		m[k] = k
	}
	return m
}()
