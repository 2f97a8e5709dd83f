package upstream

import (
	"bufio"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
)

// writeRequestHead writes req, which has no body, to bw as Request.Write
// would — the same bytes in the same order — without its per-request
// allocations (fmt formatting, a transfer writer, the request URI string,
// a sorted copy of the header). Requests it does not write the simple way
// (a body or a length, an opaque URL, a host or target Request.Write
// would rewrite or refuse) go to Request.Write itself.
//
// What Request.Write does for a bodyless request and this copies: the
// request line with URL.RequestURI; Host (req.Host, else URL.Host);
// User-Agent (the header's first value, Go's default when the header is
// absent, none when it is empty); Connection: close when req.Close;
// Content-Length: 0 for POST, PUT and PATCH; then the header sorted by
// name, without Host, User-Agent, Content-Length, Transfer-Encoding and
// Trailer and without invalid names, each value with CR and LF turned
// into spaces and trimmed.
func writeRequestHead(bw *bufio.Writer, req *http.Request) error {
	if !simpleHead(req) {
		return req.Write(bw)
	}
	return writeHead(bw, req, 0)
}

// writeHead writes the head of req, which plainHead accepts, as
// Request.Write would for a request with no body (length 0) or with a
// body of length bytes whose ContentLength says so and that Request.Write
// would not send chunked (a body it knows in memory). The caller writes
// the body.
func writeHead(bw *bufio.Writer, req *http.Request, length int64) error {
	method := req.Method
	if method == "" {
		method = http.MethodGet
	}
	u := req.URL
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	bw.WriteString(method)
	bw.WriteByte(' ')
	bw.WriteString(path)
	if u.ForceQuery || u.RawQuery != "" {
		bw.WriteByte('?')
		bw.WriteString(u.RawQuery)
	}
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(headHost(req))
	bw.WriteString("\r\n")
	ua := defaultUserAgent
	if v, ok := req.Header["User-Agent"]; ok {
		ua = ""
		if len(v) > 0 {
			ua = cleanValue(v[0])
		}
	}
	if ua != "" {
		bw.WriteString("User-Agent: ")
		bw.WriteString(ua)
		bw.WriteString("\r\n")
	}
	if req.Close && !hasCloseToken(req.Header["Connection"]) { // the first value, as Request.Write reads it
		bw.WriteString("Connection: close\r\n")
	}
	if length > 0 {
		var nb [20]byte
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(nb[:0], length, 10))
		bw.WriteString("\r\n")
	} else {
		switch method {
		case http.MethodPost, http.MethodPut, http.MethodPatch:
			bw.WriteString("Content-Length: 0\r\n")
		}
	}
	var keyBuf [32]string
	keys := keyBuf[:0]
	for k := range req.Header {
		switch k {
		case "Host", "User-Agent", "Content-Length", "Transfer-Encoding", "Trailer":
			continue
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if !httpguts.ValidHeaderFieldName(k) {
			continue // Request.Write drops them too
		}
		for _, v := range req.Header[k] {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(cleanValue(v))
			bw.WriteString("\r\n")
		}
	}
	_, err := bw.WriteString("\r\n")
	return err
}

// defaultUserAgent is what Request.Write sends when the header has no
// User-Agent.
const defaultUserAgent = "Go-http-client/1.1"

// simpleHead reports whether writeRequestHead writes req itself: no body
// and no framing to write, and a head plainHead accepts.
func simpleHead(req *http.Request) bool {
	if req.Body != nil && req.Body != http.NoBody || req.ContentLength != 0 || len(req.TransferEncoding) > 0 || len(req.Trailer) > 0 {
		return false
	}
	return plainHead(req)
}

// plainHead reports whether req's head is one writeHead writes: a plain
// path, and a host and target Request.Write would send unchanged.
func plainHead(req *http.Request) bool {
	u := req.URL
	if u == nil || u.Opaque != "" || req.Method == http.MethodConnect {
		return false
	}
	if hasCTL(u.EscapedPath()) || hasCTL(u.RawQuery) {
		return false // Request.Write refuses it
	}
	h := headHost(req)
	// Request.Write rewrites a non-ASCII host (punycode), an IPv6 zone
	// and an invalid host (sent empty).
	if strings.IndexByte(h, '%') >= 0 || !httpguts.ValidHostHeader(h) {
		return false
	}
	for i := 0; i < len(h); i++ {
		if h[i] >= 0x80 {
			return false
		}
	}
	return true
}

func headHost(req *http.Request) string {
	if req.Host != "" {
		return req.Host
	}
	return req.URL.Host
}

// hasCTL reports whether s has an ASCII control byte.
func hasCTL(s string) bool {
	for i := 0; i < len(s); i++ {
		if b := s[i]; b < ' ' || b == 0x7f {
			return true
		}
	}
	return false
}

// cleanValue is a header value as Request.Write sends it: CR and LF
// replaced by spaces, surrounding whitespace trimmed.
func cleanValue(v string) string {
	if strings.IndexByte(v, '\r') >= 0 || strings.IndexByte(v, '\n') >= 0 {
		v = crlfToSpace.Replace(v)
	}
	// Only spaces and tabs are left to trim.
	for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		v = v[:len(v)-1]
	}
	return v
}

var crlfToSpace = strings.NewReplacer("\n", " ", "\r", " ")

// hasCloseToken reports whether the first Connection header value
// already says close.
func hasCloseToken(vv []string) bool {
	if len(vv) == 0 {
		return false
	}
	for f := range strings.SplitSeq(vv[0], ",") {
		if strings.EqualFold(strings.TrimSpace(f), "close") {
			return true
		}
	}
	return false
}
