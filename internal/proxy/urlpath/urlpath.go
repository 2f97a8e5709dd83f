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

// ParseRequestURI parses a request target as url.ParseRequestURI does,
// into u: the target of most requests — an absolute path of bytes Go
// leaves unescaped in a path (letters, digits, "-._~$&+,/:;=@"), then
// optionally '?' and a query — is split in place, with neither an
// allocation nor a second pass over the path; any other goes through
// url.ParseRequestURI, whose result (or error) it is.
func ParseRequestURI(raw string, u *url.URL) error {
	if path, query, ok := plainTarget(raw); ok {
		*u = url.URL{Path: path, RawQuery: query}
		return nil
	}
	p, err := url.ParseRequestURI(raw)
	if err != nil {
		return err
	}
	*u = *p
	return nil
}

// plainTarget splits raw into its path and query when ParseRequestURI
// may: the path starts with '/' and holds only pathSafe bytes, and the
// query, if any, is not empty and holds no control byte.
func plainTarget(raw string) (path, query string, ok bool) {
	if raw == "" || raw[0] != '/' {
		return "", "", false
	}
	i := 1
	for ; i < len(raw) && pathSafe[raw[i]]; i++ {
	}
	if i == len(raw) {
		return raw, "", true
	}
	if raw[i] != '?' || i == len(raw)-1 {
		return "", "", false // a byte Go escapes, or "?" alone (ForceQuery)
	}
	query = raw[i+1:]
	for j := 0; j < len(query); j++ {
		if c := query[j]; c < 0x20 || c == 0x7f {
			return "", "", false // url.ParseRequestURI's error
		}
	}
	return raw[:i], query, true
}

// pathSafe holds the bytes url.URL keeps as they are in a path (its
// shouldEscape in path mode): with only these, Path is the target's path
// and RawPath is empty.
var pathSafe = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "-._~$&+,/:;=@" {
		t[c] = true
	}
	return t
}()
