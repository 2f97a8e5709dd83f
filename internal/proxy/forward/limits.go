package forward

import "net/http"

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
