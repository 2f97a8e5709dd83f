package dataplane

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// This file compiles Envoy route matchers into small immutable values. All
// matchers are built once at translation time and are safe for concurrent
// use by any number of request goroutines.

type pathKind uint8

const (
	pathPrefix pathKind = iota
	pathExact
	pathRegex
	pathSeparatedPrefix
)

// pathMatch is a compiled RouteMatch path specifier.
type pathMatch struct {
	kind          pathKind
	value         string
	caseSensitive bool
	re            *regexp.Regexp
}

func compilePath(m *route.RouteMatch) (pathMatch, error) {
	pm := pathMatch{caseSensitive: m.GetCaseSensitive() == nil || m.GetCaseSensitive().GetValue()}
	switch ps := m.GetPathSpecifier().(type) {
	case *route.RouteMatch_Prefix:
		pm.kind, pm.value = pathPrefix, ps.Prefix
	case *route.RouteMatch_Path:
		pm.kind, pm.value = pathExact, ps.Path
	case *route.RouteMatch_PathSeparatedPrefix:
		if strings.ContainsAny(ps.PathSeparatedPrefix, "?#") || strings.HasSuffix(ps.PathSeparatedPrefix, "/") {
			return pm, fmt.Errorf("path_separated_prefix %q: must not contain ? or # nor end with /", ps.PathSeparatedPrefix)
		}
		pm.kind, pm.value = pathSeparatedPrefix, ps.PathSeparatedPrefix
	case *route.RouteMatch_SafeRegex:
		expr := ps.SafeRegex.GetRegex()
		if !pm.caseSensitive {
			expr = "(?i)" + expr
		}
		re, err := compileFull(expr)
		if err != nil {
			return pm, fmt.Errorf("safe_regex: %w", err)
		}
		pm.kind, pm.re = pathRegex, re
	case nil:
		return pm, fmt.Errorf("missing path specifier")
	default:
		return pm, fmt.Errorf("unsupported path specifier %T", ps)
	}
	return pm, nil
}

// compileFull compiles an RE2 expression that must match the whole input, as
// Envoy's safe_regex does.
func compileFull(expr string) (*regexp.Regexp, error) {
	return regexp.Compile(`^(?:` + expr + `)$`)
}

// match reports whether path (without query) or, for prefixes, the full
// request target path?query matches.
func (p *pathMatch) match(path, rawQuery string) bool {
	switch p.kind {
	case pathPrefix:
		if strings.IndexByte(p.value, '?') >= 0 && rawQuery != "" {
			path = path + "?" + rawQuery
		}
		return hasPrefix(path, p.value, p.caseSensitive)
	case pathExact:
		if p.caseSensitive {
			return path == p.value
		}
		return strings.EqualFold(path, p.value)
	case pathSeparatedPrefix:
		if !hasPrefix(path, p.value, p.caseSensitive) {
			return false
		}
		return len(path) == len(p.value) || path[len(p.value)] == '/'
	case pathRegex:
		return p.re.MatchString(path)
	}
	return false
}

func hasPrefix(s, prefix string, caseSensitive bool) bool {
	if caseSensitive {
		return strings.HasPrefix(s, prefix)
	}
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

type strKind uint8

const (
	strExact strKind = iota
	strPrefix
	strSuffix
	strContains
	strRegex
)

// stringMatch is a compiled envoy.type.matcher.v3.StringMatcher.
type stringMatch struct {
	kind       strKind
	value      string // lower-cased when ignoreCase
	ignoreCase bool
	re         *regexp.Regexp
}

func compileStringMatcher(m *matcher.StringMatcher) (stringMatch, error) {
	sm := stringMatch{ignoreCase: m.GetIgnoreCase()}
	switch p := m.GetMatchPattern().(type) {
	case *matcher.StringMatcher_Exact:
		sm.kind, sm.value = strExact, p.Exact
	case *matcher.StringMatcher_Prefix:
		sm.kind, sm.value = strPrefix, p.Prefix
	case *matcher.StringMatcher_Suffix:
		sm.kind, sm.value = strSuffix, p.Suffix
	case *matcher.StringMatcher_Contains:
		sm.kind, sm.value = strContains, p.Contains
	case *matcher.StringMatcher_SafeRegex:
		re, err := compileFull(p.SafeRegex.GetRegex())
		if err != nil {
			return sm, fmt.Errorf("safe_regex: %w", err)
		}
		sm.kind, sm.re = strRegex, re
	case nil:
		return sm, fmt.Errorf("missing match pattern")
	default:
		return sm, fmt.Errorf("unsupported match pattern %T", p)
	}
	if sm.ignoreCase {
		sm.value = strings.ToLower(sm.value)
	}
	return sm, nil
}

func (m *stringMatch) match(v string) bool {
	switch m.kind {
	case strExact:
		if m.ignoreCase {
			return strings.EqualFold(v, m.value)
		}
		return v == m.value
	case strPrefix:
		return hasPrefix(v, m.value, !m.ignoreCase)
	case strSuffix:
		if len(v) < len(m.value) {
			return false
		}
		if m.ignoreCase {
			return strings.EqualFold(v[len(v)-len(m.value):], m.value)
		}
		return strings.HasSuffix(v, m.value)
	case strContains:
		if m.ignoreCase {
			return strings.Contains(strings.ToLower(v), m.value)
		}
		return strings.Contains(v, m.value)
	case strRegex:
		return m.re.MatchString(v)
	}
	return false
}

// headerMatch is a compiled HeaderMatcher.
type headerMatch struct {
	name         string // canonical MIME key, or a pseudo-header (":path")
	present      *bool  // present_match
	str          stringMatch
	invert       bool
	missingEmpty bool
}

func compileHeaderMatcher(h *route.HeaderMatcher) (headerMatch, error) {
	name := strings.ToLower(h.GetName())
	if name == "" {
		return headerMatch{}, fmt.Errorf("missing name")
	}
	if !strings.HasPrefix(name, ":") {
		name = http.CanonicalHeaderKey(name)
	} else if name != ":path" && name != ":method" && name != ":authority" && name != ":scheme" {
		return headerMatch{}, fmt.Errorf("unsupported pseudo-header %q", name)
	}
	hm := headerMatch{name: name, invert: h.GetInvertMatch(), missingEmpty: h.GetTreatMissingHeaderAsEmpty()}
	var err error
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case *route.HeaderMatcher_StringMatch:
		hm.str, err = compileStringMatcher(s.StringMatch)
		if err != nil {
			err = fmt.Errorf("string_match: %w", err)
		}
	case *route.HeaderMatcher_PresentMatch:
		v := s.PresentMatch
		hm.present = &v
	case *route.HeaderMatcher_ExactMatch:
		hm.str = stringMatch{kind: strExact, value: s.ExactMatch}
	case *route.HeaderMatcher_PrefixMatch:
		hm.str = stringMatch{kind: strPrefix, value: s.PrefixMatch}
	case *route.HeaderMatcher_SuffixMatch:
		hm.str = stringMatch{kind: strSuffix, value: s.SuffixMatch}
	case *route.HeaderMatcher_ContainsMatch:
		hm.str = stringMatch{kind: strContains, value: s.ContainsMatch}
	case *route.HeaderMatcher_SafeRegexMatch:
		hm.str.kind = strRegex
		hm.str.re, err = compileFull(s.SafeRegexMatch.GetRegex())
		if err != nil {
			err = fmt.Errorf("safe_regex_match: %w", err)
		}
	case nil:
		// Envoy: no specifier means "header is present".
		v := true
		hm.present = &v
	default:
		err = fmt.Errorf("unsupported header match specifier %T", s)
	}
	return hm, err
}

// headerValue returns the request's value for the matcher's header; several
// values are joined with "," as Envoy does.
func headerValue(r *http.Request, name string) (string, bool) {
	switch name {
	case ":path":
		return r.URL.RequestURI(), true
	case ":method":
		return r.Method, true
	case ":authority":
		return r.Host, true
	case ":scheme":
		return "http", true
	}
	vs := r.Header[name]
	switch len(vs) {
	case 0:
		return "", false
	case 1:
		return vs[0], true
	}
	return strings.Join(vs, ","), true
}

func (h *headerMatch) match(r *http.Request) bool {
	v, ok := headerValue(r, h.name)
	var res bool
	switch {
	case h.present != nil:
		res = ok == *h.present
	case !ok && !h.missingEmpty:
		res = false
	default:
		res = h.str.match(v)
	}
	return res != h.invert
}

// queryMatch is a compiled QueryParameterMatcher.
type queryMatch struct {
	name    string
	present bool // present_match
	str     stringMatch
}

func compileQueryMatcher(q *route.QueryParameterMatcher) (queryMatch, error) {
	qm := queryMatch{name: q.GetName()}
	if qm.name == "" {
		return qm, fmt.Errorf("missing name")
	}
	switch s := q.GetQueryParameterMatchSpecifier().(type) {
	case *route.QueryParameterMatcher_StringMatch:
		var err error
		if qm.str, err = compileStringMatcher(s.StringMatch); err != nil {
			return qm, fmt.Errorf("string_match: %w", err)
		}
	case *route.QueryParameterMatcher_PresentMatch:
		if !s.PresentMatch {
			return qm, fmt.Errorf("present_match: false is not supported")
		}
		qm.present = true
	case nil:
		qm.present = true
	default:
		return qm, fmt.Errorf("unsupported query parameter match specifier %T", s)
	}
	return qm, nil
}

func (q *queryMatch) match(query url.Values) bool {
	vs, ok := query[q.name]
	if !ok {
		return false
	}
	if q.present {
		return true
	}
	return len(vs) > 0 && q.str.match(vs[0])
}
