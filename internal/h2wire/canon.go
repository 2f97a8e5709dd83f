package h2wire

import (
	"net/textproto"
	"strings"
)

// Canon turns the lower-case field names of HTTP/2 header blocks into
// net/http's canonical header keys without allocating for the common
// ones or for names seen on the connection before. One per connection,
// used by its reader; the zero value is ready.
type Canon struct{ seen map[string]string }

// maxCachedNames bounds the names a Canon keeps beyond the common ones.
const maxCachedNames = 64

// Key is the canonical form of name (lower case).
func (c *Canon) Key(name string) string {
	if k, ok := commonHeaders[name]; ok {
		return k
	}
	if k, ok := c.seen[name]; ok {
		return k
	}
	k := textproto.CanonicalMIMEHeaderKey(name)
	if c.seen == nil {
		c.seen = map[string]string{}
	}
	if len(c.seen) < maxCachedNames {
		c.seen[name] = k
	}
	return k
}

var commonHeaders = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{
		"Accept", "Accept-Charset", "Accept-Encoding", "Accept-Language", "Accept-Ranges",
		"Access-Control-Allow-Credentials", "Access-Control-Allow-Headers",
		"Access-Control-Allow-Methods", "Access-Control-Allow-Origin", "Access-Control-Expose-Headers",
		"Access-Control-Max-Age", "Age", "Allow", "Authorization", "Cache-Control",
		"Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
		"Content-Location", "Content-Range", "Content-Type", "Cookie", "Date", "Etag",
		"Expect", "Expires", "From", "Grpc-Accept-Encoding", "Grpc-Encoding", "Grpc-Message",
		"Grpc-Status", "Grpc-Status-Details-Bin", "Grpc-Timeout", "Host", "If-Match",
		"If-Modified-Since", "If-None-Match", "If-Range", "If-Unmodified-Since", "Last-Modified",
		"Link", "Location", "Origin", "Pragma", "Range", "Referer", "Refresh", "Retry-After",
		"Server", "Set-Cookie", "Strict-Transport-Security", "Te", "Trailer", "User-Agent",
		"Vary", "Via", "Www-Authenticate", "X-B3-Parentspanid", "X-B3-Sampled", "X-B3-Spanid",
		"X-B3-Traceid", "X-Envoy-Attempt-Count", "X-Envoy-Upstream-Service-Time",
		"X-Forwarded-Client-Cert", "X-Forwarded-For", "X-Forwarded-Proto", "X-Request-Id",
		"Traceparent", "Tracestate",
	} {
		m[strings.ToLower(k)] = k
	}
	return m
}()
