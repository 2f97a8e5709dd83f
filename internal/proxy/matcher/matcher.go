// Package matcher compiles Envoy's string, header and query parameter
// matchers (envoy.type.matcher.v3.StringMatcher, config.route.v3
// HeaderMatcher and QueryParameterMatcher) into small immutable values,
// once, at translation time. Routes match requests with them, and so do
// the HTTP filters that take Envoy matchers in their configuration.
//
// Every compiled matcher is safe for concurrent use by any number of
// request goroutines; matching allocates nothing.
package matcher

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// CompileRegex compiles an RE2 expression that must match the whole input,
// as Envoy's safe_regex does.
func CompileRegex(expr string) (*regexp.Regexp, error) {
	return regexp.Compile(`^(?:` + expr + `)$`)
}

type strKind uint8

const (
	strExact strKind = iota
	strPrefix
	strSuffix
	strContains
	strRegex
)

// String is a compiled StringMatcher. The zero value matches only "".
type String struct {
	kind       strKind
	value      string // lower-cased when ignoreCase
	ignoreCase bool
	re         *regexp.Regexp
}

// CompileString compiles m. Errors name the field of m that is wrong.
func CompileString(m *matcherv3.StringMatcher) (String, error) {
	sm := String{ignoreCase: m.GetIgnoreCase()}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		sm.kind, sm.value = strExact, p.Exact
	case *matcherv3.StringMatcher_Prefix:
		sm.kind, sm.value = strPrefix, p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		sm.kind, sm.value = strSuffix, p.Suffix
	case *matcherv3.StringMatcher_Contains:
		sm.kind, sm.value = strContains, p.Contains
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := CompileRegex(p.SafeRegex.GetRegex())
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

// Match reports whether v matches.
func (m *String) Match(v string) bool {
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

func hasPrefix(s, prefix string, caseSensitive bool) bool {
	if caseSensitive {
		return strings.HasPrefix(s, prefix)
	}
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// Header is a compiled HeaderMatcher.
type Header struct {
	name         string // canonical MIME key, or a pseudo-header (":path")
	present      *bool  // present_match
	str          String
	invert       bool
	missingEmpty bool
}

// CompileHeader compiles h. The pseudo-headers :path, :method, :authority
// and :scheme are supported. Errors name the field of h that is wrong.
func CompileHeader(h *route.HeaderMatcher) (Header, error) {
	name := strings.ToLower(h.GetName())
	if name == "" {
		return Header{}, fmt.Errorf("missing name")
	}
	if !strings.HasPrefix(name, ":") {
		name = http.CanonicalHeaderKey(name)
	} else if name != ":path" && name != ":method" && name != ":authority" && name != ":scheme" {
		return Header{}, fmt.Errorf("unsupported pseudo-header %q", name)
	}
	hm := Header{name: name, invert: h.GetInvertMatch(), missingEmpty: h.GetTreatMissingHeaderAsEmpty()}
	var err error
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case *route.HeaderMatcher_StringMatch:
		hm.str, err = CompileString(s.StringMatch)
		if err != nil {
			err = fmt.Errorf("string_match: %w", err)
		}
	case *route.HeaderMatcher_PresentMatch:
		v := s.PresentMatch
		hm.present = &v
	case *route.HeaderMatcher_ExactMatch:
		hm.str = String{kind: strExact, value: s.ExactMatch}
	case *route.HeaderMatcher_PrefixMatch:
		hm.str = String{kind: strPrefix, value: s.PrefixMatch}
	case *route.HeaderMatcher_SuffixMatch:
		hm.str = String{kind: strSuffix, value: s.SuffixMatch}
	case *route.HeaderMatcher_ContainsMatch:
		hm.str = String{kind: strContains, value: s.ContainsMatch}
	case *route.HeaderMatcher_SafeRegexMatch:
		hm.str.kind = strRegex
		hm.str.re, err = CompileRegex(s.SafeRegexMatch.GetRegex())
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
		// The target as received (normalized), as Envoy's :path.
		if u := r.RequestURI; u != "" && u[0] == '/' {
			return u, true
		}
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

// Match reports whether r's headers match.
func (h *Header) Match(r *http.Request) bool {
	v, ok := headerValue(r, h.name)
	var res bool
	switch {
	case h.present != nil:
		res = ok == *h.present
	case !ok && !h.missingEmpty:
		// Envoy: a missing header never matches a value matcher, inverted
		// or not (treat_missing_header_as_empty makes it "").
		return false
	default:
		res = h.str.Match(v)
	}
	return res != h.invert
}

// Query is a compiled QueryParameterMatcher.
type Query struct {
	name    string
	present bool // present_match
	str     String
}

// CompileQuery compiles q. Errors name the field of q that is wrong.
func CompileQuery(q *route.QueryParameterMatcher) (Query, error) {
	qm := Query{name: q.GetName()}
	if qm.name == "" {
		return qm, fmt.Errorf("missing name")
	}
	switch s := q.GetQueryParameterMatchSpecifier().(type) {
	case *route.QueryParameterMatcher_StringMatch:
		var err error
		if qm.str, err = CompileString(s.StringMatch); err != nil {
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

// Match reports whether the parsed query matches: the parameter is there
// and, unless only its presence is asked for, its first value matches.
func (q *Query) Match(query url.Values) bool {
	vs, ok := query[q.name]
	if !ok {
		return false
	}
	if q.present {
		return true
	}
	return len(vs) > 0 && q.str.Match(vs[0])
}
