package generate

import (
	"strings"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/xds/contract"
)

// matchApplies reports whether an Istio match is generated at all for this
// proxy and virtual-host port: match.port, sourceLabels, sourceNamespace and
// match.gateways are decided here, at generation time, not by the proxy.
func matchApplies(m *networking.HTTPMatchRequest, id contract.Identity, port uint32) bool {
	if p := m.GetPort(); p != 0 && p != port {
		return false
	}
	if ns := m.GetSourceNamespace(); ns != "" && ns != id.Namespace {
		return false
	}
	for k, v := range m.GetSourceLabels() {
		if got, ok := id.Labels[k]; !ok || got != v {
			return false
		}
	}
	return mesh.AppliesToMesh(m.GetGateways())
}

// routeMatch translates the request conditions of one Istio match (AND'd).
func routeMatch(m *networking.HTTPMatchRequest) *route.RouteMatch {
	rm := &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}}
	switch u := m.GetUri().GetMatchType().(type) {
	case *networking.StringMatch_Exact:
		rm.PathSpecifier = &route.RouteMatch_Path{Path: u.Exact}
	case *networking.StringMatch_Prefix:
		rm.PathSpecifier = &route.RouteMatch_Prefix{Prefix: u.Prefix}
	case *networking.StringMatch_Regex:
		rm.PathSpecifier = &route.RouteMatch_SafeRegex{SafeRegex: &matcher.RegexMatcher{Regex: u.Regex}}
	}
	if m.GetIgnoreUriCase() {
		rm.CaseSensitive = wrapperspb.Bool(false)
	}
	rm.Headers = append(rm.Headers, headerMatchers(m.GetHeaders(), false)...)
	rm.Headers = append(rm.Headers, headerMatchers(m.GetWithoutHeaders(), true)...)
	if m.GetMethod() != nil {
		rm.Headers = append(rm.Headers, headerMatcher(":method", m.GetMethod(), false))
	}
	if m.GetAuthority() != nil {
		rm.Headers = append(rm.Headers, headerMatcher(":authority", m.GetAuthority(), false))
	}
	if m.GetScheme() != nil {
		rm.Headers = append(rm.Headers, headerMatcher(":scheme", m.GetScheme(), false))
	}
	for _, name := range sortedKeys(m.GetQueryParams()) {
		qm := &route.QueryParameterMatcher{Name: name}
		if sm := stringMatcher(m.GetQueryParams()[name]); sm != nil {
			qm.QueryParameterMatchSpecifier = &route.QueryParameterMatcher_StringMatch{StringMatch: sm}
		} else {
			qm.QueryParameterMatchSpecifier = &route.QueryParameterMatcher_PresentMatch{PresentMatch: true}
		}
		rm.QueryParameters = append(rm.QueryParameters, qm)
	}
	return rm
}

// headerMatchers matches headers by lower-cased name (HTTP/2 spelling),
// sorted by that name.
func headerMatchers(hs map[string]*networking.StringMatch, invert bool) []*route.HeaderMatcher {
	lower := make(map[string]*networking.StringMatch, len(hs))
	for k, v := range hs {
		lower[strings.ToLower(k)] = v
	}
	var out []*route.HeaderMatcher
	for _, name := range sortedKeys(lower) {
		out = append(out, headerMatcher(name, lower[name], invert))
	}
	return out
}

// headerMatcher matches a header's value, or its presence for `{}` and,
// as in Istio, for regex "*" (not RE2 there: "any value"). invert is for
// withoutHeaders.
func headerMatcher(name string, sm *networking.StringMatch, invert bool) *route.HeaderMatcher {
	hm := &route.HeaderMatcher{Name: name, InvertMatch: invert}
	if m := stringMatcher(sm); m != nil && sm.GetRegex() != "*" {
		hm.HeaderMatchSpecifier = &route.HeaderMatcher_StringMatch{StringMatch: m}
		// As Istio's withoutHeaders: a missing header is an empty value,
		// so `withoutHeaders: {h: {exact: v}}` matches a request without
		// h, and `{regex: ".*"}` matches none. (Envoy's inverted matcher
		// alone never matches a missing header.)
		hm.TreatMissingHeaderAsEmpty = invert
	} else {
		hm.HeaderMatchSpecifier = &route.HeaderMatcher_PresentMatch{PresentMatch: true}
	}
	return hm
}

// stringMatcher translates an Istio StringMatch; nil when it is empty.
func stringMatcher(sm *networking.StringMatch) *matcher.StringMatcher {
	switch v := sm.GetMatchType().(type) {
	case *networking.StringMatch_Exact:
		return &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: v.Exact}}
	case *networking.StringMatch_Prefix:
		return &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Prefix{Prefix: v.Prefix}}
	case *networking.StringMatch_Regex:
		return &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_SafeRegex{SafeRegex: &matcher.RegexMatcher{Regex: v.Regex}}}
	}
	return nil
}
