package forward

import (
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// This file is the HTTP connection manager's handling of the request path
// before routing and before the HTTP filters, as Envoy's
// ConnectionManagerUtility::maybeNormalizePath: a path with a fragment is
// refused; then, as the listener's HttpConnectionManager asks,
// path_with_escaped_slashes_action, normalize_path (RFC 3986 with
// Chromium's URL canonicalization, which Envoy uses) and merge_slashes.
// The result replaces the request's path for everything after it — route
// matching, the RBAC and JWT filters, and the path sent upstream — which is
// what Istio's path-based authorization relies on: "/public/../admin" and
// "/admin" must be the same path to a policy.

// EscapedSlashes is the HttpConnectionManager's
// path_with_escaped_slashes_action: what to do with %2F and %5C (either
// case) in the path.
type EscapedSlashes uint8

const (
	// KeepEscapedSlashes leaves them (KEEP_UNCHANGED, and Envoy's
	// IMPLEMENTATION_SPECIFIC_DEFAULT).
	KeepEscapedSlashes EscapedSlashes = iota
	// RejectEscapedSlashes answers 400 (REJECT_REQUEST).
	RejectEscapedSlashes
	// UnescapeAndRedirect answers 307 to the path with them unescaped
	// (UNESCAPE_AND_REDIRECT); a path without them goes on.
	UnescapeAndRedirect
	// UnescapeAndForward unescapes them and goes on (UNESCAPE_AND_FORWARD).
	UnescapeAndForward
)

// PathOptions is how a listener's HTTP connection manager treats request
// paths. The zero value changes no path (and still refuses fragments, as
// Envoy does). Immutable once in a Listener.
type PathOptions struct {
	// Normalize is normalize_path: dot segments resolved, backslashes as
	// slashes, percent-encoded unreserved characters decoded, characters
	// that must be escaped escaped; a path with %00 is refused (400).
	Normalize bool
	// MergeSlashes is merge_slashes: "//" becomes "/" in the path (not in
	// the query), after normalization.
	MergeSlashes bool
	// EscapedSlashes is path_with_escaped_slashes_action, applied first.
	EscapedSlashes EscapedSlashes
}

// pathVerdict is what the connection manager does with a request after
// looking at its path.
type pathVerdict uint8

const (
	pathContinue pathVerdict = iota
	pathReject               // 400
	pathRedirect             // 307 to the new path
)

// normalizeRequestPath applies o to r's path in place (r.URL.Path,
// RawPath and RequestURI), or answers the request when o says so. It
// reports whether the request goes on.
func normalizeRequestPath(w http.ResponseWriter, r *http.Request, o *PathOptions, q *request) bool {
	target := r.RequestURI
	if target == "" || target[0] != '/' {
		// Absolute form (a forward proxy request) or "*": the path is in r.URL.
		if r.URL.Path == "" || r.URL.Path == "*" {
			return true
		}
		target = r.URL.RequestURI()
	}
	if strings.IndexByte(target, '#') >= 0 {
		// Envoy's http_reject_path_with_fragment (on by default): a
		// fragment never belongs in a request target.
		localReply(w, q, http.StatusBadRequest, "", "")
		return false
	}
	if !o.Normalize && !o.MergeSlashes && o.EscapedSlashes == KeepEscapedSlashes {
		return true
	}
	path, query := target, ""
	if i := strings.IndexByte(target, '?'); i >= 0 {
		path, query = target[:i], target[i:]
	}
	np, verdict := o.apply(path)
	switch verdict {
	case pathReject:
		localReply(w, q, http.StatusBadRequest, "", "")
		return false
	case pathRedirect:
		w.Header()["Location"] = []string{np + query}
		localReply(w, q, http.StatusTemporaryRedirect, "", "")
		return false
	}
	if np == path {
		return true
	}
	dec, err := url.PathUnescape(np)
	if err != nil {
		localReply(w, q, http.StatusBadRequest, "", "")
		return false
	}
	r.URL.Path, r.URL.RawPath = dec, np
	r.RequestURI = np + query
	return true
}

// apply transforms path (no query) as Envoy's connection manager does, in
// Envoy's order: escaped slashes, then normalization, then merging
// slashes. It returns the new path (path itself when nothing changed) and
// whether to go on, refuse or redirect.
func (o *PathOptions) apply(path string) (string, pathVerdict) {
	verdict := pathContinue
	if o.EscapedSlashes != KeepEscapedSlashes {
		if p, found := unescapeSlashes(path); found {
			switch o.EscapedSlashes {
			case RejectEscapedSlashes:
				return path, pathReject
			case UnescapeAndRedirect:
				verdict = pathRedirect
			}
			path = p
		}
	}
	if o.Normalize {
		p, ok := canonicalPath(path)
		if !ok {
			return path, pathReject
		}
		path = p
	}
	if o.MergeSlashes {
		path = mergeSlashes(path)
	}
	return path, verdict
}

// unescapeSlashes replaces %2F and %5C (either case) with '/' and '\', as
// Envoy's PathUtil::unescapeSlashes, and reports whether it found any.
func unescapeSlashes(p string) (string, bool) {
	if !strings.Contains(p, "%") {
		return p, false
	}
	var b strings.Builder
	found := false
	for i := 0; i < len(p); i++ {
		if p[i] == '%' && i+2 < len(p) {
			switch {
			case p[i+1] == '2' && (p[i+2] == 'F' || p[i+2] == 'f'):
				if !found {
					b.Grow(len(p))
					b.WriteString(p[:i])
					found = true
				}
				b.WriteByte('/')
				i += 2
				continue
			case p[i+1] == '5' && (p[i+2] == 'C' || p[i+2] == 'c'):
				if !found {
					b.Grow(len(p))
					b.WriteString(p[:i])
					found = true
				}
				b.WriteByte('\\')
				i += 2
				continue
			}
		}
		if found {
			b.WriteByte(p[i])
		}
	}
	if !found {
		return p, false
	}
	return b.String(), true
}

// canonicalPath is Envoy's normalize_path: Chromium's path
// canonicalization (url::CanonicalizePath), which Envoy calls on the path
// without its query:
//
//   - the path starts with '/';
//   - '\' is a '/';
//   - %XX of an unreserved character (ALPHA, DIGIT, "-", ".", "_", "~")
//     is decoded, other escapes stay as sent (hex case kept), %00 makes
//     the path invalid, a '%' not followed by two hex digits stays;
//   - bytes that are not allowed in a path (controls, space, '"', '<',
//     '>', '`', '{', '}', DEL and non-ASCII) are escaped;
//   - "." and ".." segments (also as %2E) are resolved; ".." never goes
//     above the root.
//
// ok is false for an invalid path (Envoy answers 400).
func canonicalPath(p string) (string, bool) {
	if isCanonical(p) {
		return p, true
	}
	b := make([]byte, 0, len(p)+8)
	if p == "" || (p[0] != '/' && p[0] != '\\') {
		b = append(b, '/')
	}
	lastPct := -1 // where in b the last '%' that began no escape is
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '\\':
			b = append(b, '/')
		case c == '%':
			if i+2 < len(p) && isHex(p[i+1]) && isHex(p[i+2]) {
				v := unhex(p[i+1])<<4 | unhex(p[i+2])
				switch {
				case v == 0:
					return "", false
				case isUnreserved(v):
					b = append(b, v)
					if lastPct >= 0 && lastPct >= len(b)-3 {
						var fixed bool
						if b, fixed = nestedEscape(b, lastPct, p[i+3:]); fixed {
							lastPct = -1
						}
					}
				default:
					b = append(b, p[i:i+3]...)
				}
				i += 2
			} else {
				lastPct = len(b)
				b = append(b, '%')
			}
		case mustEscape(c):
			if c == 0 {
				return "", false
			}
			b = append(b, '%', upperHex[c>>4], upperHex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return removeDotSegments(b), true
}

// nestedEscape is Chromium's CheckForNestedEscapes: when the '%' at
// b[pct], which began no escape, is followed in b (or, for the second
// digit, in the input still to read) by two hex digits that decoding
// produced ("%%30%30"), it would read as an escape ("%00") the second
// time the path is read: it is written %25 instead. It reports whether it
// did.
func nestedEscape(b []byte, pct int, rest string) ([]byte, bool) {
	var d1, d2 byte
	switch len(b) - pct {
	case 2: // "%c": the next input byte would complete an escape
		if rest == "" || rest[0] >= 0x80 {
			return b, false
		}
		d1, d2 = b[pct+1], rest[0]
	case 3:
		d1, d2 = b[pct+1], b[pct+2]
	default:
		return b, false
	}
	if !isHex(d1) || !isHex(d2) {
		return b, false
	}
	return slices.Insert(b, pct+1, '2', '5'), true
}

// isCanonical reports, cheaply, that canonicalPath would return p
// unchanged: it starts with '/', has no '\', '%' or bytes to escape, and
// no segment that starts with '.'.
func isCanonical(p string) bool {
	if p == "" || p[0] != '/' {
		return false
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c == '\\' || c == '%' || mustEscape(c) || (c == '.' && p[i-1] == '/') {
			return false
		}
	}
	return true
}

// removeDotSegments resolves "." and ".." segments of a path that starts
// with '/' (RFC 3986 section 5.2.4; Chromium's results for absolute
// paths): "/a/b/../c" is "/a/c", "/a/." is "/a/", "/.." is "/".
func removeDotSegments(p []byte) string {
	out := make([]byte, 0, len(p))
	for i := 0; i < len(p); {
		j := i + 1
		for j < len(p) && p[j] != '/' {
			j++
		}
		seg := p[i+1 : j]
		last := j == len(p)
		switch {
		case len(seg) == 1 && seg[0] == '.':
			if last {
				out = append(out, '/')
			}
		case len(seg) == 2 && seg[0] == '.' && seg[1] == '.':
			for len(out) > 0 && out[len(out)-1] != '/' {
				out = out[:len(out)-1]
			}
			if len(out) > 0 {
				out = out[:len(out)-1] // the '/' before the dropped segment
			}
			if last {
				out = append(out, '/')
			}
		default:
			out = append(out, p[i:j]...)
		}
		i = j
	}
	if len(out) == 0 {
		return "/"
	}
	return string(out)
}

// mergeSlashes is Envoy's merge_slashes on a path without its query:
// empty segments dropped, the leading and trailing '/' kept.
func mergeSlashes(p string) string {
	if !strings.Contains(p, "//") {
		return p
	}
	var b strings.Builder
	b.Grow(len(p))
	if strings.HasPrefix(p, "/") {
		b.WriteByte('/')
	}
	first := true
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "" {
			continue
		}
		if !first {
			b.WriteByte('/')
		}
		b.WriteString(seg)
		first = false
	}
	if strings.HasSuffix(p, "/") {
		b.WriteByte('/') // so "//" stays "//", as Envoy's
	}
	return b.String()
}

const upperHex = "0123456789ABCDEF"

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// mustEscape reports the bytes Chromium escapes in a path.
func mustEscape(c byte) bool {
	switch c {
	case ' ', '"', '<', '>', '`', '{', '}', 0x7f:
		return true
	}
	return c < 0x20 || c >= 0x80
}
