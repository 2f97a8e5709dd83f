package jwt

import (
	"fmt"
	"regexp"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// routeMatch is a compiled RequirementRule.match: the path part of a
// RouteMatch, which is what Istio's configs use (prefix "/"). The path is
// matched without its query string, as Envoy's jwt_authn matchers do.
type routeMatch struct {
	kind          matchKind
	value         string
	caseSensitive bool
	re            *regexp.Regexp
}

type matchKind uint8

const (
	matchPrefix matchKind = iota
	matchPath
	matchSeparatedPrefix
	matchRegex
)

func compileRouteMatch(path string, m *routev3.RouteMatch) (routeMatch, error) {
	if m == nil {
		return routeMatch{}, fmt.Errorf("%s: missing", path)
	}
	switch {
	case len(m.GetHeaders()) > 0:
		return routeMatch{}, fmt.Errorf("%s.headers: header conditions in JWT requirement rules are not supported", path)
	case len(m.GetQueryParameters()) > 0:
		return routeMatch{}, fmt.Errorf("%s.query_parameters: not supported in JWT requirement rules", path)
	case m.GetGrpc() != nil:
		return routeMatch{}, fmt.Errorf("%s.grpc: not supported in JWT requirement rules", path)
	case m.GetRuntimeFraction() != nil:
		return routeMatch{}, fmt.Errorf("%s.runtime_fraction: not supported in JWT requirement rules", path)
	case len(m.GetDynamicMetadata()) > 0:
		return routeMatch{}, fmt.Errorf("%s.dynamic_metadata: not supported in JWT requirement rules", path)
	case m.GetTlsContext() != nil:
		return routeMatch{}, fmt.Errorf("%s.tls_context: not supported in JWT requirement rules", path)
	case len(m.GetFilterState()) > 0:
		return routeMatch{}, fmt.Errorf("%s.filter_state: not supported in JWT requirement rules", path)
	case len(m.GetCookies()) > 0:
		return routeMatch{}, fmt.Errorf("%s.cookies: not supported in JWT requirement rules", path)
	}
	rm := routeMatch{caseSensitive: m.GetCaseSensitive() == nil || m.GetCaseSensitive().GetValue()}
	switch ps := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		rm.kind, rm.value = matchPrefix, ps.Prefix
	case *routev3.RouteMatch_Path:
		rm.kind, rm.value = matchPath, ps.Path
	case *routev3.RouteMatch_PathSeparatedPrefix:
		rm.kind, rm.value = matchSeparatedPrefix, ps.PathSeparatedPrefix
	case *routev3.RouteMatch_SafeRegex:
		expr := ps.SafeRegex.GetRegex()
		if !rm.caseSensitive {
			expr = "(?i)" + expr
		}
		re, err := regexp.Compile(`^(?:` + expr + `)$`)
		if err != nil {
			return rm, fmt.Errorf("%s.safe_regex: %w", path, err)
		}
		rm.kind, rm.re = matchRegex, re
	case nil:
		return rm, fmt.Errorf("%s: missing path specifier", path)
	default:
		return rm, fmt.Errorf("%s: path specifier %T is not supported in JWT requirement rules", path, ps)
	}
	return rm, nil
}

func (m *routeMatch) matches(r *Request) bool {
	p := r.Path
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		p = p[:i]
	}
	switch m.kind {
	case matchPrefix:
		return hasPrefix(p, m.value, m.caseSensitive)
	case matchPath:
		if m.caseSensitive {
			return p == m.value
		}
		return strings.EqualFold(p, m.value)
	case matchSeparatedPrefix:
		return hasPrefix(p, m.value, m.caseSensitive) && (len(p) == len(m.value) || p[len(m.value)] == '/')
	case matchRegex:
		return m.re.MatchString(p)
	}
	return false
}

func hasPrefix(s, prefix string, caseSensitive bool) bool {
	if caseSensitive {
		return strings.HasPrefix(s, prefix)
	}
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}
