// Package httpdate is the Date header value of responses the proxy's
// servers write, formatted once a second for all of them.
package httpdate

import (
	"net/http"
	"sync/atomic"
	"time"
)

var cache atomic.Pointer[value]

type value struct {
	sec int64
	b   []byte
}

// Now is the current time as an HTTP date (RFC 9110 §5.6.7). The slice
// is shared: never modify it.
func Now() []byte {
	now := time.Now()
	if d := cache.Load(); d != nil && d.sec == now.Unix() {
		return d.b
	}
	d := &value{sec: now.Unix(), b: now.UTC().AppendFormat(nil, http.TimeFormat)}
	cache.Store(d)
	return d.b
}
