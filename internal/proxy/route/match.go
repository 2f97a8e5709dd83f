package route

import (
	"fmt"
	"regexp"
	"strings"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"weft.dev/weft/internal/proxy/matcher"
)

// This file compiles the path of an Envoy RouteMatch into a small immutable
// value (headers and query parameters use internal/proxy/matcher). It is
// built once at translation time and is safe for concurrent use by any
// number of request goroutines.

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
		re, err := matcher.CompileRegex(expr)
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
