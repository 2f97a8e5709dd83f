// Package urlpath keeps a request's path as the client escaped it on its
// way through the proxy.
//
// Go's url.URL.EscapedPath returns RawPath only when every byte of it is
// one Go would leave unescaped; a path holding '|', '^', '{', '\\', '"' and
// the like is escaped again from the decoded Path instead, which also
// decodes %2F and %5C: "/admin%2Fx|y" would be routed and sent upstream
// as "/admin/x%7Cy", a different path from the one authorization saw.
// Envoy routes on, and forwards, the path as received (after the
// connection manager's normalization).
package urlpath

import (
	"net/url"
	"strings"
)

// Escaped returns u's path as escaped: RawPath when it is an escaping of
// Path, else u.EscapedPath().
func Escaped(u *url.URL) string {
	if u.RawPath != "" {
		if p, err := url.PathUnescape(u.RawPath); err == nil && p == u.Path {
			return u.RawPath
		}
	}
	return u.EscapedPath()
}

// Pin makes u.RequestURI() carry Escaped(u): where Go would escape the
// path again, the escaped path goes in u.Opaque, which RequestURI (and so
// the HTTP/1.1 and HTTP/2 clients) sends as it is. A path starting with
// "//" is left to Go (an Opaque "//x" would read as an authority).
func Pin(u *url.URL) {
	if u.RawPath == "" {
		return // the common case: Go's escaping is the path's own
	}
	p := Escaped(u)
	if p == u.EscapedPath() || strings.HasPrefix(p, "//") {
		return
	}
	u.Opaque = p
}
