package generate

import (
	"regexp"
	"strconv"
	"strings"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry"
	"weft.dev/weft/internal/xds/contract"
)

// withRouteActions completes one generated route with what an http route
// says besides its destinations, as Istio's translateRoute does: a
// redirect or direct response replaces the route action; rewrite,
// headers (per route and per destination) and corsPolicy decorate it.
func withRouteActions(s *mesh.Snapshot, ns string, h *networking.HTTPRoute, svc *registry.Service, p registry.Port, r *route.Route) *route.Route {
	ops := headersOperations(h.GetHeaders())
	r.RequestHeadersToAdd, r.RequestHeadersToRemove = ops.reqAdd, ops.reqRemove
	r.ResponseHeadersToAdd, r.ResponseHeadersToRemove = ops.respAdd, ops.respRemove
	switch {
	case h.GetRedirect() != nil:
		r.Action = redirectAction(h.GetRedirect(), p.Number)
	case h.GetDirectResponse() != nil:
		r.Action = directResponseAction(h.GetDirectResponse())
	default:
		if a := r.GetRoute(); a != nil {
			applyRewrite(a, h.GetRewrite(), ops.authority)
			applyDestinationHeaders(s, ns, h, svc, p, r, a)
		}
	}
	if c := h.GetCorsPolicy(); c != nil {
		if r.TypedPerFilterConfig == nil {
			r.TypedPerFilterConfig = map[string]*anypb.Any{}
		}
		r.TypedPerFilterConfig[wellknown.CORS] = mustAny(corsPolicy(c))
	}
	return r
}

// headerOps is Istio's HeadersOperations: set → OVERWRITE_IF_EXISTS_OR_ADD,
// add → APPEND_IF_EXISTS_OR_ADD, each sorted by name; Host/:authority in
// request set/add becomes a host rewrite instead.
type headerOps struct {
	reqAdd, respAdd       []*core.HeaderValueOption
	reqRemove, respRemove []string
	authority             string
}

func headersOperations(h *networking.Headers) headerOps {
	var ops headerOps
	if h == nil {
		return ops
	}
	set, setAuth := headerValueOptions(h.GetRequest().GetSet(), false)
	add, addAuth := headerValueOptions(h.GetRequest().GetAdd(), true)
	ops.reqAdd = append(set, add...)
	ops.authority = addAuth
	if setAuth != "" {
		ops.authority = setAuth
	}
	rset, _ := headerValueOptions(h.GetResponse().GetSet(), false)
	radd, _ := headerValueOptions(h.GetResponse().GetAdd(), true)
	ops.respAdd = append(rset, radd...)
	ops.reqRemove = dropInternalHeaders(h.GetRequest().GetRemove())
	ops.respRemove = dropInternalHeaders(h.GetResponse().GetRemove())
	return ops
}

func headerValueOptions(hs map[string]string, appendValue bool) ([]*core.HeaderValueOption, string) {
	authority := ""
	var out []*core.HeaderValueOption
	for _, k := range sortedKeys(hs) {
		v := hs[k]
		if isAuthorityHeader(k) {
			authority = v
		}
		if isInternalHeader(k) {
			continue
		}
		action := core.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
		if appendValue {
			action = core.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
		}
		out = append(out, &core.HeaderValueOption{Header: &core.HeaderValue{Key: k, Value: v}, AppendAction: action})
	}
	return out, authority
}

func isInternalHeader(k string) bool {
	return strings.HasPrefix(k, ":") || strings.EqualFold(k, "host")
}

func isAuthorityHeader(k string) bool {
	return strings.EqualFold(k, ":authority") || strings.EqualFold(k, "host")
}

func dropInternalHeaders(keys []string) []string {
	var out []string
	for _, k := range keys {
		if !isInternalHeader(k) {
			out = append(out, k)
		}
	}
	return out
}

// applyRewrite sets the path and authority rewrites: uriRegexRewrite →
// regex_rewrite, else uri → prefix_rewrite (Envoy replaces the matched
// prefix, or the whole path for exact and regex matches); authority (or a
// Host/:authority header set) → host_rewrite_literal.
func applyRewrite(a *route.RouteAction, rw *networking.HTTPRewrite, authority string) {
	if rr := rw.GetUriRegexRewrite(); rr != nil {
		if _, err := regexp.Compile(rr.GetMatch()); err == nil {
			a.RegexRewrite = &matcher.RegexMatchAndSubstitute{
				Pattern:      &matcher.RegexMatcher{Regex: rr.GetMatch()},
				Substitution: rr.GetRewrite(),
			}
		}
	} else if uri := rw.GetUri(); uri != "" {
		a.PrefixRewrite = uri
	}
	if rw.GetAuthority() != "" {
		authority = rw.GetAuthority()
	}
	if authority != "" {
		a.HostRewriteSpecifier = &route.RouteAction_HostRewriteLiteral{HostRewriteLiteral: authority}
	}
}

// applyDestinationHeaders places each destination's headers as Istio does:
// with one destination they are appended to the route's lists (so a
// destination `set` wins over a route `add`), with a weighted split they go
// on that destination's ClusterWeight.
func applyDestinationHeaders(s *mesh.Snapshot, ns string, h *networking.HTTPRoute, svc *registry.Service, p registry.Port, r *route.Route, a *route.RouteAction) {
	if wc := a.GetWeightedClusters(); wc != nil {
		next := 0
		for _, d := range h.GetRoute() {
			dst := d.GetDestination()
			if dst == nil || next >= len(wc.GetClusters()) {
				continue
			}
			host := s.ResolveHost(dst.GetHost(), ns)
			name := contract.ClusterName(contract.Outbound, destinationPort(s, host, dst.GetPort().GetNumber(), svc, p), dst.GetSubset(), host)
			cw := wc.GetClusters()[next]
			if cw.GetName() != name || (d.GetWeight() == 0 && cw.GetWeight().GetValue() != 1) {
				continue // a zero-weight destination that routeAction dropped
			}
			next++
			if d.GetHeaders() == nil {
				continue
			}
			ops := headersOperations(d.GetHeaders())
			cw.RequestHeadersToAdd, cw.RequestHeadersToRemove = ops.reqAdd, ops.reqRemove
			cw.ResponseHeadersToAdd, cw.ResponseHeadersToRemove = ops.respAdd, ops.respRemove
			if ops.authority != "" {
				cw.HostRewriteSpecifier = &route.WeightedCluster_ClusterWeight_HostRewriteLiteral{HostRewriteLiteral: ops.authority}
			}
		}
		return
	}
	for _, d := range h.GetRoute() {
		if d.GetDestination() == nil || d.GetHeaders() == nil {
			continue
		}
		if len(h.GetRoute()) > 1 && d.GetWeight() == 0 {
			continue // dropped by routeAction
		}
		ops := headersOperations(d.GetHeaders())
		r.RequestHeadersToAdd = append(r.RequestHeadersToAdd, ops.reqAdd...)
		r.RequestHeadersToRemove = append(r.RequestHeadersToRemove, ops.reqRemove...)
		r.ResponseHeadersToAdd = append(r.ResponseHeadersToAdd, ops.respAdd...)
		r.ResponseHeadersToRemove = append(r.ResponseHeadersToRemove, ops.respRemove...)
		if ops.authority != "" && a.HostRewriteSpecifier == nil {
			a.HostRewriteSpecifier = &route.RouteAction_HostRewriteLiteral{HostRewriteLiteral: ops.authority}
		}
	}
}

// redirectAction is Istio's ApplyRedirect for sidecars. A redirectCode
// Envoy cannot send (Istio's validation rejects it) becomes 301.
func redirectAction(rd *networking.HTTPRedirect, port uint32) *route.Route_Redirect {
	ra := &route.RedirectAction{HostRedirect: rd.GetAuthority()}
	switch {
	case rd.GetPrefixRewrite() != "":
		ra.PathRewriteSpecifier = &route.RedirectAction_PrefixRewrite{PrefixRewrite: rd.GetPrefixRewrite()}
	case rd.GetUri() != "":
		ra.PathRewriteSpecifier = &route.RedirectAction_PathRedirect{PathRedirect: rd.GetUri()}
	}
	if rd.GetScheme() != "" {
		ra.SchemeRewriteSpecifier = &route.RedirectAction_SchemeRedirect{SchemeRedirect: rd.GetScheme()}
	}
	if rd.GetRedirectPort() != nil {
		switch rp := rd.GetRedirectPort().(type) {
		case *networking.HTTPRedirect_DerivePort:
			// Envoy cannot derive the port from the request; the route is
			// generated for one port, so that is the request's port.
			if rp.DerivePort == networking.HTTPRedirect_FROM_REQUEST_PORT {
				ra.PortRedirect = port
			}
		case *networking.HTTPRedirect_Port:
			ra.PortRedirect = rp.Port
		}
		scheme := rd.GetScheme()
		if scheme == "" {
			scheme = "http"
		}
		if (ra.PortRedirect == 80 && scheme == "http") || (ra.PortRedirect == 443 && scheme == "https") {
			ra.PortRedirect = 0
		}
	}
	switch rd.GetRedirectCode() {
	case 302:
		ra.ResponseCode = route.RedirectAction_FOUND
	case 303:
		ra.ResponseCode = route.RedirectAction_SEE_OTHER
	case 307:
		ra.ResponseCode = route.RedirectAction_TEMPORARY_REDIRECT
	case 308:
		ra.ResponseCode = route.RedirectAction_PERMANENT_REDIRECT
	default:
		ra.ResponseCode = route.RedirectAction_MOVED_PERMANENTLY
	}
	return &route.Route_Redirect{Redirect: ra}
}

func directResponseAction(dr *networking.HTTPDirectResponse) *route.Route_DirectResponse {
	a := &route.DirectResponseAction{Status: dr.GetStatus()}
	switch b := dr.GetBody().GetSpecifier().(type) {
	case *networking.HTTPBody_String_:
		a.Body = &core.DataSource{Specifier: &core.DataSource_InlineString{InlineString: b.String_}}
	case *networking.HTTPBody_Bytes:
		a.Body = &core.DataSource{Specifier: &core.DataSource_InlineBytes{InlineBytes: b.Bytes}}
	}
	return &route.Route_DirectResponse{DirectResponse: a}
}

// corsPolicy is Istio's TranslateCORSPolicy: the per-route config of the
// envoy.filters.http.cors filter.
func corsPolicy(in *networking.CorsPolicy) *corsv3.CorsPolicy {
	out := &corsv3.CorsPolicy{
		// Forward preflights from origins that do not match unless told to
		// IGNORE them (Envoy's behaviour before 1.30, Istio's default).
		ForwardNotMatchingPreflights: wrapperspb.Bool(in.GetUnmatchedPreflights() != networking.CorsPolicy_IGNORE),
		FilterEnabled: &core.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{
			Numerator: 100, Denominator: typev3.FractionalPercent_HUNDRED,
		}},
		AllowCredentials: in.GetAllowCredentials(),
		AllowHeaders:     strings.Join(in.GetAllowHeaders(), ","),
		AllowMethods:     strings.Join(in.GetAllowMethods(), ","),
		ExposeHeaders:    strings.Join(in.GetExposeHeaders(), ","),
	}
	for _, o := range in.GetAllowOrigins() {
		if sm := stringMatcher(o); sm != nil {
			out.AllowOriginStringMatch = append(out.AllowOriginStringMatch, sm)
		}
	}
	//nolint:staticcheck // the deprecated allowOrigin still works in Istio
	if len(in.GetAllowOrigins()) == 0 && len(in.GetAllowOrigin()) > 0 {
		for _, o := range in.GetAllowOrigin() { //nolint:staticcheck
			out.AllowOriginStringMatch = append(out.AllowOriginStringMatch, &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: o}})
		}
	}
	if in.GetMaxAge() != nil {
		out.MaxAge = strconv.FormatInt(in.GetMaxAge().GetSeconds(), 10)
	}
	return out
}

// withCORSFilter puts envoy.filters.http.cors before the fault filter (or,
// without one, the router) in the listener's HTTP connection manager when any route of rc carries a CORS
// policy; Envoy applies a per-route CorsPolicy only with the filter in the
// chain. Listeners are returned unchanged otherwise.
func withCORSFilter(l *listener.Listener, rc *route.RouteConfiguration) *listener.Listener {
	if l == nil || !hasCORS(rc) {
		return l
	}
	for _, fc := range l.GetFilterChains() {
		for _, f := range fc.GetFilters() {
			var m hcm.HttpConnectionManager
			if f.GetTypedConfig() == nil || f.GetTypedConfig().UnmarshalTo(&m) != nil {
				continue
			}
			var hf []*hcm.HttpFilter
			inserted := false
			for _, x := range m.GetHttpFilters() {
				// Istio's order: cors, fault, router.
				if !inserted && (x.GetName() == wellknown.Fault || x.GetName() == wellknown.Router) {
					inserted = true
					hf = append(hf, &hcm.HttpFilter{
						Name:       wellknown.CORS,
						ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(&corsv3.Cors{})},
					})
				}
				hf = append(hf, x)
			}
			m.HttpFilters = hf
			f.ConfigType = &listener.Filter_TypedConfig{TypedConfig: mustAny(&m)}
		}
	}
	return l
}

func hasCORS(rc *route.RouteConfiguration) bool {
	for _, vh := range rc.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			if _, ok := r.GetTypedPerFilterConfig()[wellknown.CORS]; ok {
				return true
			}
		}
	}
	return false
}
