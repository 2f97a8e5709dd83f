package h2client

import (
	"net/http"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"

	"weft.dev/weft/internal/h2wire"
)

// defaultUserAgent is what golang.org/x/net/http2's Transport sends for
// a request without User-Agent; kept so upstreams see what they saw.
const defaultUserAgent = "Go-http-client/2.0"

// appendRequestHead appends req's header block, HPACK literals without
// the dynamic table (pseudo-headers from the static table where it has
// them): :method, :scheme, :authority, :path, then the header less the
// fields HTTP/2 forbids (RFC 9113 §8.2.2: Connection and the fields it
// names were removed by the caller), content-length from ContentLength,
// and trailer naming req.Trailer's keys.
func appendRequestHead(b []byte, req *http.Request, scheme string, hasBody bool) []byte {
	switch req.Method {
	case "", http.MethodGet:
		b = append(b, 0x82)
	case http.MethodPost:
		b = append(b, 0x83)
	default:
		b = appendNamed(b, 2, req.Method)
	}
	switch scheme {
	case "https":
		b = append(b, 0x87)
	default:
		b = append(b, 0x86)
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	b = appendNamed(b, 1, host)
	b = appendPath(b, req)
	if _, ok := req.Header["User-Agent"]; !ok {
		b = h2wire.AppendLiteral(b, "user-agent", []byte(defaultUserAgent))
	}
	for k, vv := range req.Header {
		switch k {
		case "Host", "Content-Length", "Connection", "Proxy-Connection", "Keep-Alive", "Transfer-Encoding", "Upgrade", "Trailer":
			continue
		case "Te":
			// Only "trailers" may pass (RFC 9113 §8.2.2).
			if slices.ContainsFunc(vv, func(v string) bool { return strings.EqualFold(strings.TrimSpace(v), "trailers") }) {
				b = h2wire.AppendLiteral(b, "te", []byte("trailers"))
			}
			continue
		}
		if !httpguts.ValidHeaderFieldName(k) {
			continue // net/http's transports drop them too
		}
		b = h2wire.AppendFields(b, k, vv)
	}
	var nb [20]byte
	switch {
	case hasBody && req.ContentLength > 0:
		b = h2wire.AppendLiteral(b, "content-length", strconv.AppendInt(nb[:0], req.ContentLength, 10))
	case !hasBody && (req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch):
		b = h2wire.AppendLiteral(b, "content-length", []byte("0"))
	}
	if len(req.Trailer) > 0 {
		keys := make([]string, 0, len(req.Trailer))
		for k := range req.Trailer {
			if httpguts.ValidHeaderFieldName(k) {
				keys = append(keys, strings.ToLower(k))
			}
		}
		slices.Sort(keys)
		b = h2wire.AppendLiteral(b, "trailer", []byte(strings.Join(keys, ",")))
	}
	return b
}

// appendNamed appends a literal without indexing whose name is static
// table entry idx (< 15).
func appendNamed(b []byte, idx byte, value string) []byte {
	b = append(b, idx)
	b = h2wire.AppendInt(b, 7, uint64(len(value)))
	return append(b, value...)
}

// appendPath appends :path: the URL's escaped path (or its opaque part)
// and query, "/" when empty.
func appendPath(b []byte, req *http.Request) []byte {
	u := req.URL
	if u.Opaque != "" {
		return appendNamed(b, 4, u.RequestURI())
	}
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	query := u.ForceQuery || u.RawQuery != ""
	if path == "/" && !query {
		return append(b, 0x84)
	}
	n := len(path)
	if query {
		n += 1 + len(u.RawQuery)
	}
	b = append(b, 4)
	b = h2wire.AppendInt(b, 7, uint64(n))
	b = append(b, path...)
	if query {
		b = append(b, '?')
		b = append(b, u.RawQuery...)
	}
	return b
}

// appendTrailers appends the header block of the request's trailers;
// nil when none has a value.
func appendTrailers(b []byte, t http.Header) []byte {
	for k, vv := range t {
		if len(vv) == 0 || !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		if b == nil {
			b = make([]byte, 0, 256)
		}
		b = h2wire.AppendFields(b, k, vv)
	}
	return b
}
