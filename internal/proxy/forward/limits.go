package forward

import (
	"net/http"
	"strings"
)

// Envoy's defaults for the HTTP connection manager's request header limits.
const (
	// DefaultMaxRequestHeadersBytes is max_request_headers_kb's default,
	// 60 KiB.
	DefaultMaxRequestHeadersBytes = 60 << 10
	// DefaultMaxHeadersCount is
	// common_http_protocol_options.max_headers_count's default.
	DefaultMaxHeadersCount = 100
)

// Limits are the request header limits of one HTTP connection manager, as
// Envoy's codec enforces them: a request over either gets 431 as a
// downstream protocol error (DPE) and never reaches the router. The zero
// value means Envoy's defaults.
type Limits struct {
	// MaxRequestHeadersBytes bounds the request's header names and values,
	// Host included, summed (max_request_headers_kb × 1024).
	MaxRequestHeadersBytes int64
	// MaxHeadersCount bounds the number of request header fields, Host
	// included (common_http_protocol_options.max_headers_count).
	MaxHeadersCount int
}

// exceeded reports whether r's headers are over l (zero fields: Envoy's
// defaults), counted as Envoy's HTTP/1 codec counts them: every field
// name and value, and every field, the Host header included.
func (l *Limits) exceeded(r *http.Request) bool {
	maxBytes, maxCount := l.MaxRequestHeadersBytes, l.MaxHeadersCount
	if maxBytes <= 0 {
		maxBytes = DefaultMaxRequestHeadersBytes
	}
	if maxCount <= 0 {
		maxCount = DefaultMaxHeadersCount
	}
	n, size := 0, int64(0)
	if r.Host != "" {
		n, size = 1, int64(len("host")+len(r.Host))
	}
	for k, vv := range r.Header {
		n += len(vv)
		for _, v := range vv {
			size += int64(len(k) + len(v))
		}
	}
	return n > maxCount || size > maxBytes
}

// bodyHeadersTooLarge is Envoy's reply body for 431 (the status text).
const bodyHeadersTooLarge = "Request Header Fields Too Large"

// envoyMethods are the request methods Envoy's HTTP/1 codec accepts
// (http-parser's list, which its Balsa parser keeps); any other is a
// protocol error.
var envoyMethods = map[string]bool{
	"ACL": true, "BIND": true, "CHECKOUT": true, "CONNECT": true, "COPY": true, "DELETE": true, "GET": true,
	"HEAD": true, "LINK": true, "LOCK": true, "MERGE": true, "MKACTIVITY": true, "MKCALENDAR": true, "MKCOL": true,
	"MOVE": true, "MSEARCH": true, "NOTIFY": true, "OPTIONS": true, "PATCH": true, "POST": true, "PROPFIND": true,
	"PROPPATCH": true, "PURGE": true, "PUT": true, "REBIND": true, "REPORT": true, "SEARCH": true, "SOURCE": true,
	"SUBSCRIBE": true, "TRACE": true, "UNBIND": true, "UNLINK": true, "UNLOCK": true, "UNSUBSCRIBE": true,
}

// validHTTP1RequestLine reports whether Envoy's HTTP/1 codec would accept
// the method and request target of r: a method of its list, and a target
// of the characters http-parser allows (no byte outside '!'..'~' but tab
// and form feed in the path and query; a scheme of letters followed by
// "://" in the absolute form; the host's characters). net/http has
// already refused what is not a token, space or control characters.
func validHTTP1RequestLine(r *http.Request) bool {
	if r.ProtoMajor != 1 {
		return true // HTTP/2 pseudo-headers: the HTTP/2 codec's rules
	}
	if !envoyMethods[r.Method] {
		return false
	}
	u := r.RequestURI
	if u == "" {
		return false
	}
	pathChar := func(c byte) bool { return c == '\t' || c == '\f' || ('!' <= c && c <= '~') }
	allPath := func(s string) bool {
		for i := 0; i < len(s); i++ {
			if !pathChar(s[i]) {
				return false
			}
		}
		return true
	}
	if u[0] == '/' || u[0] == '*' {
		return allPath(u[1:])
	}
	if r.Method != http.MethodConnect {
		i := 0
		for i < len(u) && ('a' <= u[i]|0x20 && u[i]|0x20 <= 'z') {
			i++
		}
		if i == 0 || !strings.HasPrefix(u[i:], "://") {
			return false
		}
		u = u[i+3:]
	}
	end := strings.IndexAny(u, "/?")
	if end < 0 {
		end = len(u)
	}
	host := u[:end]
	if strings.Contains(host, "@@") {
		return false
	}
	for i := 0; i < len(host); i++ {
		if c := host[i]; !hostChar(c) {
			return false
		}
	}
	return allPath(u[end:])
}

// hostChar: the characters http-parser allows in a request target's host.
func hostChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!$%&'()*+,-.:;=@[]_~", c) >= 0
}
