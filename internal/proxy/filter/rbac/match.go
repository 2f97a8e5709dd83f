package rbac

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

// This file holds the leaf matchers Envoy's RBAC builds on: string matchers
// (envoy.type.matcher.v3.StringMatcher), header matchers
// (envoy.config.route.v3.HeaderMatcher) and metadata value matchers
// (envoy.type.matcher.v3.ValueMatcher). All are compiled once and never
// change, so any number of goroutines may use them at once.

type strKind uint8

const (
	strExact strKind = iota
	strPrefix
	strSuffix
	strContains
	strRegex
)

// stringMatch is a compiled StringMatcher. Case folding is ASCII only, as
// Envoy's (absl::EqualsIgnoreCase and friends).
type stringMatch struct {
	kind       strKind
	value      string // lower-cased for strContains with ignoreCase
	ignoreCase bool
	re         *regexp.Regexp
}

func compileStringMatcher(path string, m *matcherv3.StringMatcher) (stringMatch, error) {
	if m == nil {
		return stringMatch{}, fmt.Errorf("%s: missing string matcher", path)
	}
	sm := stringMatch{ignoreCase: m.GetIgnoreCase()}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		sm.kind, sm.value = strExact, p.Exact
	case *matcherv3.StringMatcher_Prefix:
		sm.kind, sm.value = strPrefix, p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		sm.kind, sm.value = strSuffix, p.Suffix
	case *matcherv3.StringMatcher_Contains:
		sm.kind, sm.value = strContains, p.Contains
		if sm.ignoreCase {
			sm.value = lowerASCII(sm.value)
		}
	case *matcherv3.StringMatcher_SafeRegex:
		if sm.ignoreCase {
			// Envoy refuses this combination rather than silently ignoring it.
			return sm, fmt.Errorf("%s: ignore_case has no effect for safe_regex", path)
		}
		re, err := compileFull(p.SafeRegex.GetRegex())
		if err != nil {
			return sm, fmt.Errorf("%s.safe_regex: %w", path, err)
		}
		sm.kind, sm.re = strRegex, re
	case *matcherv3.StringMatcher_Custom:
		return sm, fmt.Errorf("%s.custom: custom string matcher extensions are not supported", path)
	default:
		return sm, fmt.Errorf("%s: missing match pattern", path)
	}
	return sm, nil
}

// compileFull compiles an RE2 expression that must match the whole input,
// as Envoy's safe_regex (RE2::FullMatch) does.
func compileFull(expr string) (*regexp.Regexp, error) {
	if expr == "" {
		return nil, errors.New("empty regex")
	}
	return regexp.Compile(`^(?:` + expr + `)$`)
}

func (m *stringMatch) match(v string) bool {
	switch m.kind {
	case strExact:
		if m.ignoreCase {
			return equalFoldASCII(v, m.value)
		}
		return v == m.value
	case strPrefix:
		if m.ignoreCase {
			return len(v) >= len(m.value) && equalFoldASCII(v[:len(m.value)], m.value)
		}
		return strings.HasPrefix(v, m.value)
	case strSuffix:
		if m.ignoreCase {
			return len(v) >= len(m.value) && equalFoldASCII(v[len(v)-len(m.value):], m.value)
		}
		return strings.HasSuffix(v, m.value)
	case strContains:
		if m.ignoreCase {
			return containsFoldASCII(v, m.value)
		}
		return strings.Contains(v, m.value)
	case strRegex:
		return m.re.MatchString(v)
	}
	return false
}

func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		ca, cb := a[i], b[i]
		if ca == cb {
			continue
		}
		if 'A' <= ca && ca <= 'Z' {
			ca += 'a' - 'A'
		}
		if 'A' <= cb && cb <= 'Z' {
			cb += 'a' - 'A'
		}
		if ca != cb {
			return false
		}
	}
	return true
}

// containsFoldASCII reports whether s contains lowerSub (already lower case)
// ignoring ASCII case, without allocating.
func containsFoldASCII(s, lowerSub string) bool {
	n := len(lowerSub)
	for i := 0; i+n <= len(s); i++ {
		if equalFoldASCII(s[i:i+n], lowerSub) {
			return true
		}
	}
	return false
}

// headerName says where a header matcher looks: a pseudo-header the data
// plane keeps in a Request field, or an ordinary header by canonical key.
type headerName struct {
	pseudo pseudoHeader
	key    string // canonical MIME key when pseudo == notPseudo
}

type pseudoHeader uint8

const (
	notPseudo pseudoHeader = iota
	pseudoMethod
	pseudoPath
	pseudoAuthority
	pseudoScheme
)

func compileHeaderName(name string) headerName {
	switch strings.ToLower(name) {
	case ":method":
		return headerName{pseudo: pseudoMethod}
	case ":path":
		return headerName{pseudo: pseudoPath}
	case ":authority", "host":
		// Envoy keeps Host as :authority (its HTTP/1 codec maps one to the
		// other); gRPC's xDS RBAC (gRFC A41) maps "host" the same way.
		return headerName{pseudo: pseudoAuthority}
	case ":scheme":
		return headerName{pseudo: pseudoScheme}
	}
	return headerName{key: http.CanonicalHeaderKey(name)}
}

// header returns the value Envoy's header map would give for name: the
// pseudo-header field, or every value of the header joined with ",", as
// Envoy's HeaderUtility::getAllOfHeaderAsString does. ok is false when the
// header is absent. Only a header sent several times allocates.
func (r *Request) header(h headerName) (string, bool) {
	var v string
	switch h.pseudo {
	case pseudoMethod:
		v = r.Method
	case pseudoPath:
		v = r.Path
	case pseudoAuthority:
		v = r.Authority
	case pseudoScheme:
		v = r.Scheme
	default:
		vals := r.Header[h.key]
		switch len(vals) {
		case 0:
			return "", false
		case 1:
			return vals[0], true
		}
		return strings.Join(vals, ","), true
	}
	return v, v != ""
}

type hmKind uint8

const (
	hmExact hmKind = iota // deprecated exact_match: an empty value matches any
	hmRegex
	hmRange
	hmPresent
	hmPrefix
	hmSuffix
	hmContains
	hmString
)

// headerMatch is a compiled route.v3.HeaderMatcher with Envoy's semantics
// (HeaderUtility::matchHeaders), including invert_match and
// treat_missing_header_as_empty.
type headerMatch struct {
	name           headerName
	kind           hmKind
	value          string
	re             *regexp.Regexp
	start, end     int64
	present        bool
	str            stringMatch
	invert         bool
	missingIsEmpty bool
}

func compileHeaderMatcher(path string, h *routev3.HeaderMatcher) (headerMatch, error) {
	if h == nil {
		return headerMatch{}, fmt.Errorf("%s: missing header matcher", path)
	}
	if h.GetName() == "" {
		return headerMatch{}, fmt.Errorf("%s.name: must not be empty", path)
	}
	hm := headerMatch{
		name:           compileHeaderName(h.GetName()),
		invert:         h.GetInvertMatch(),
		missingIsEmpty: h.GetTreatMissingHeaderAsEmpty(),
	}
	switch s := h.GetHeaderMatchSpecifier().(type) {
	case *routev3.HeaderMatcher_ExactMatch:
		hm.kind, hm.value = hmExact, s.ExactMatch
	case *routev3.HeaderMatcher_SafeRegexMatch:
		re, err := compileFull(s.SafeRegexMatch.GetRegex())
		if err != nil {
			return hm, fmt.Errorf("%s.safe_regex_match: %w", path, err)
		}
		hm.kind, hm.re = hmRegex, re
	case *routev3.HeaderMatcher_RangeMatch:
		hm.kind, hm.start, hm.end = hmRange, s.RangeMatch.GetStart(), s.RangeMatch.GetEnd()
	case *routev3.HeaderMatcher_PresentMatch:
		hm.kind, hm.present = hmPresent, s.PresentMatch
	case *routev3.HeaderMatcher_PrefixMatch:
		hm.kind, hm.value = hmPrefix, s.PrefixMatch
	case *routev3.HeaderMatcher_SuffixMatch:
		hm.kind, hm.value = hmSuffix, s.SuffixMatch
	case *routev3.HeaderMatcher_ContainsMatch:
		hm.kind, hm.value = hmContains, s.ContainsMatch
	case *routev3.HeaderMatcher_StringMatch:
		sm, err := compileStringMatcher(path+".string_match", s.StringMatch)
		if err != nil {
			return hm, err
		}
		hm.kind, hm.str = hmString, sm
	case nil:
		// Envoy: no specifier means "the header is present".
		hm.kind, hm.present = hmPresent, true
	default:
		return hm, fmt.Errorf("%s: unsupported header match specifier %T", path, s)
	}
	return hm, nil
}

func (h *headerMatch) matchRequest(r *Request) bool {
	v, ok := r.header(h.name)
	if !ok && !h.missingIsEmpty {
		// An absent header matches only present_match: false, or its
		// inversion present_match: true with invert_match.
		return h.kind == hmPresent && h.present == h.invert
	}
	var m bool
	switch h.kind {
	case hmExact:
		m = h.value == "" || v == h.value
	case hmRegex:
		m = h.re.MatchString(v)
	case hmRange:
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		m = err == nil && n >= h.start && n < h.end
	case hmPresent:
		m = h.present
	case hmPrefix:
		m = strings.HasPrefix(v, h.value)
	case hmSuffix:
		m = strings.HasSuffix(v, h.value)
	case hmContains:
		m = strings.Contains(v, h.value)
	case hmString:
		m = h.str.match(v)
	}
	return m != h.invert
}

// valueMatcher is a compiled envoy.type.matcher.v3.ValueMatcher applied to a
// metadata value. Values are what encoding/json produces when decoding into
// any (map[string]any, []any, string, float64, bool, nil): the shape of a
// google.protobuf.Value. found is false when the metadata path does not
// exist (Envoy's Value with no kind set).
type valueMatcher interface {
	matchValue(v any, found bool) bool
}

type nullValue struct{}

func (nullValue) matchValue(v any, found bool) bool { return found && v == nil }

type doubleExact float64

func (d doubleExact) matchValue(v any, found bool) bool {
	f, ok := number(v)
	return found && ok && f == float64(d)
}

type doubleRange struct{ start, end float64 }

func (d doubleRange) matchValue(v any, found bool) bool {
	f, ok := number(v)
	return found && ok && d.start <= f && f < d.end
}

type stringValue struct{ m stringMatch }

func (s *stringValue) matchValue(v any, found bool) bool {
	str, ok := v.(string)
	return found && ok && s.m.match(str)
}

type boolValue bool

func (b boolValue) matchValue(v any, found bool) bool {
	x, ok := v.(bool)
	return found && ok && x == bool(b)
}

// presentValue matches any value that exists. Envoy's present_match: false
// never matches (PresentMatcher returns matcher_ && kind set); kept as is.
type presentValue bool

func (p presentValue) matchValue(_ any, found bool) bool { return bool(p) && found }

// listOneOf matches a list that has at least one element matching.
type listOneOf struct{ elem valueMatcher }

func (l listOneOf) matchValue(v any, found bool) bool {
	if !found {
		return false
	}
	switch list := v.(type) {
	case []any:
		for _, e := range list {
			if l.elem.matchValue(e, true) {
				return true
			}
		}
	case []string:
		for _, e := range list {
			if l.elem.matchValue(e, true) {
				return true
			}
		}
	}
	return false
}

type orValue []valueMatcher

func (o orValue) matchValue(v any, found bool) bool {
	for _, m := range o {
		if m.matchValue(v, found) {
			return true
		}
	}
	return false
}

// number converts a metadata number to float64 (protobuf Values hold
// doubles). JSON decoding gives float64; integers are accepted too so a
// data plane may build metadata by hand.
func number(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case float32:
		return float64(n), true
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	case int32:
		return float64(n), true
	case uint:
		return float64(n), true
	case uint64:
		return float64(n), true
	case uint32:
		return float64(n), true
	}
	return math.NaN(), false
}

func compileValueMatcher(path string, m *matcherv3.ValueMatcher) (valueMatcher, error) {
	if m == nil {
		return nil, fmt.Errorf("%s: missing value matcher", path)
	}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.ValueMatcher_NullMatch_:
		return nullValue{}, nil
	case *matcherv3.ValueMatcher_DoubleMatch:
		switch d := p.DoubleMatch.GetMatchPattern().(type) {
		case *matcherv3.DoubleMatcher_Exact:
			return doubleExact(d.Exact), nil
		case *matcherv3.DoubleMatcher_Range:
			return doubleRange{start: d.Range.GetStart(), end: d.Range.GetEnd()}, nil
		}
		return nil, fmt.Errorf("%s.double_match: missing match pattern", path)
	case *matcherv3.ValueMatcher_StringMatch:
		sm, err := compileStringMatcher(path+".string_match", p.StringMatch)
		if err != nil {
			return nil, err
		}
		return &stringValue{m: sm}, nil
	case *matcherv3.ValueMatcher_BoolMatch:
		return boolValue(p.BoolMatch), nil
	case *matcherv3.ValueMatcher_PresentMatch:
		return presentValue(p.PresentMatch), nil
	case *matcherv3.ValueMatcher_ListMatch:
		one := p.ListMatch.GetOneOf()
		if one == nil {
			return nil, fmt.Errorf("%s.list_match: only one_of is supported", path)
		}
		elem, err := compileValueMatcher(path+".list_match.one_of", one)
		if err != nil {
			return nil, err
		}
		return listOneOf{elem: elem}, nil
	case *matcherv3.ValueMatcher_OrMatch:
		var or orValue
		for i, vm := range p.OrMatch.GetValueMatchers() {
			c, err := compileValueMatcher(fmt.Sprintf("%s.or_match.value_matchers[%d]", path, i), vm)
			if err != nil {
				return nil, err
			}
			or = append(or, c)
		}
		return or, nil
	}
	return nil, fmt.Errorf("%s: missing match pattern", path)
}

// lookupMetadata walks filter_metadata[filter] along path as Envoy's
// Config::Metadata::metadataValue does: every step but the last must be a
// struct (map[string]any).
func lookupMetadata(md DynamicMetadata, filter string, path []string) (any, bool) {
	cur, ok := md[filter]
	if !ok || len(path) == 0 {
		return nil, false
	}
	for i, key := range path {
		v, ok := cur[key]
		if !ok {
			return nil, false
		}
		if i == len(path)-1 {
			return v, true
		}
		next, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		cur = next
	}
	return nil, false
}
