package generate

import (
	"fmt"
	"slices"
	"strings"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rlcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	lrl "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	weftnet "weft.dev/weft/api/networking/v1alpha1"
	"weft.dev/weft/internal/config"
)

const (
	// localRateLimitName is Envoy's envoy.filters.http.local_ratelimit.
	localRateLimitName = "envoy.filters.http.local_ratelimit"
	// rateLimitStatPrefix is the stat prefix Istio's local rate limit
	// examples use, so dashboards built on
	// envoy_http_local_rate_limiter_http_local_rate_limit_rate_limited work
	// unchanged; a rule's stats add "_<rule>".
	rateLimitStatPrefix = "http_local_rate_limiter"
	// rateLimitShadowHeader marks requests over a limit that is not
	// enforced (shadow, or enforcedPercent below 100), for the application.
	rateLimitShadowHeader = "x-weft-rate-limited"
	// maxDynamicDescriptors bounds the buckets of each per-value
	// descriptor (per client IP, per header value) in one proxy: the most
	// recently seen values keep theirs. About 100 bytes each.
	maxDynamicDescriptors = 10000
)

// withRateLimit applies RateLimit rl (nil: none) to connection manager m
// for workload port port: the local rate limit filter before the router,
// and on every virtual host of m's inline route configuration, the
// RateLimit's limit on each route (typed_per_filter_config) and its
// rules as routes of their own in front of each route they can narrow
// (rateLimitRoutes). Reusable for any connection manager with an inline
// route configuration (a gateway's too); one with RDS applies
// rateLimitRoutes to its RouteConfiguration and adds rateLimitFilter
// itself. Returns m.
func withRateLimit(m *hcm.HttpConnectionManager, rl *config.RateLimit, port uint32) *hcm.HttpConnectionManager {
	if rl == nil || !rateLimitCoversPort(rl.Spec, port) {
		return m
	}
	m.HttpFilters = rateLimitFilters(m.HttpFilters, rl.Spec)
	if rc := m.GetRouteConfig(); rc != nil {
		for _, vh := range rc.GetVirtualHosts() {
			vh.Routes = rateLimitRoutes(vh.GetRoutes(), rl.Spec)
		}
	}
	return m
}

// rateLimitCoversPort: spec.ports lists port, or is empty.
func rateLimitCoversPort(spec *weftnet.RateLimit, port uint32) bool {
	return len(spec.GetPorts()) == 0 || slices.Contains(spec.GetPorts(), port)
}

// rateLimitFilter is the http_filters entry: only a stat prefix, as in
// Istio's examples; the limits are per route.
func rateLimitFilter() *hcm.HttpFilter {
	return &hcm.HttpFilter{
		Name:       localRateLimitName,
		ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(&lrl.LocalRateLimit{StatPrefix: rateLimitStatPrefix})},
	}
}

// insertBeforeRouter puts f just before the last filter (the router).
func insertBeforeRouter(fs []*hcm.HttpFilter, f *hcm.HttpFilter) []*hcm.HttpFilter {
	if len(fs) == 0 {
		return []*hcm.HttpFilter{f}
	}
	return slices.Insert(fs, len(fs)-1, f)
}

// rateLimitRoutes returns routes with spec applied, in order: for each
// route, first one route per rule match (in rule order) that narrows it —
// a copy of the route whose match is the route's AND the rule's, carrying
// the rule's limit — then the route itself with the RateLimit's own
// limit. A rule match whose path condition cannot be combined with the
// route's (both set, the route's not the catch-all prefix "/") is left
// out for that route.
func rateLimitRoutes(routes []*route.Route, spec *weftnet.RateLimit) []*route.Route {
	local, global := hasLocalRateLimit(spec), spec.Global != nil
	def := mustAny(localRateLimitConfig(rateLimitStatPrefix, spec.GetLimit(), spec.GetDescriptors(), spec))
	var globalDef *anypb.Any
	if global {
		globalDef = globalRateLimitPerRoute(spec.GetGlobal().GetDescriptors())
	}
	var out []*route.Route
	for _, r := range routes {
		for i, rule := range spec.GetRules() {
			name := rule.GetName()
			if name == "" {
				name = fmt.Sprintf("rule-%d", i)
			}
			cfg := mustAny(localRateLimitConfig(rateLimitStatPrefix+"_"+strings.ReplaceAll(name, "-", "_"), rule.GetLimit(), rule.GetDescriptors(), spec))
			// A rule replaces the global descriptors too: none, and the
			// route asks the service nothing.
			globalCfg := globalRateLimitPerRoute(rule.GetGlobalDescriptors())
			matches := rule.GetMatch()
			if len(matches) == 0 {
				matches = []*networking.HTTPMatchRequest{{}}
			}
			for _, m := range matches {
				rm, ok := narrowMatch(r.GetMatch(), routeMatch(m))
				if !ok {
					continue
				}
				nr := proto.Clone(r).(*route.Route)
				nr.Name = "ratelimit/" + name
				nr.Match = rm
				if local {
					setPerFilter(nr, localRateLimitName, cfg)
				}
				if global {
					setPerFilter(nr, globalRateLimitName, globalCfg)
				}
				out = append(out, nr)
			}
		}
		if local {
			setPerFilter(r, localRateLimitName, def)
		}
		if global {
			setPerFilter(r, globalRateLimitName, globalDef)
		}
		out = append(out, r)
	}
	return out
}

// narrowMatch is route match r AND rule match m, when one Envoy match can
// say it.
func narrowMatch(r, m *route.RouteMatch) (*route.RouteMatch, bool) {
	out := proto.Clone(r).(*route.RouteMatch)
	if p, ok := m.GetPathSpecifier().(*route.RouteMatch_Prefix); !ok || p.Prefix != "/" {
		if rp, ok := r.GetPathSpecifier().(*route.RouteMatch_Prefix); !ok || rp.Prefix != "/" {
			return nil, false
		}
		out.PathSpecifier, out.CaseSensitive = m.GetPathSpecifier(), m.GetCaseSensitive()
	}
	out.Headers = append(out.Headers, m.GetHeaders()...)
	out.QueryParameters = append(out.QueryParameters, m.GetQueryParameters()...)
	return out, true
}

// localRateLimitConfig is the per-route LocalRateLimit of a limit and
// descriptors (either may be absent; with neither, the route is exempt:
// the filter is disabled on it), enforced as spec says.
func localRateLimitConfig(statPrefix string, limit *weftnet.Limit, ds []*weftnet.Descriptor, spec *weftnet.RateLimit) *lrl.LocalRateLimit {
	c := &lrl.LocalRateLimit{StatPrefix: statPrefix}
	if limit == nil && len(ds) == 0 {
		c.FilterEnabled = runtimePercent(0, "local_rate_limit_enabled")
		return c
	}
	c.FilterEnabled = runtimePercent(1_000_000, "local_rate_limit_enabled")
	enforced := uint32(1_000_000)
	switch {
	case spec.GetShadow():
		enforced = 0
	case spec.EnforcedPercent != nil:
		enforced = uint32(spec.GetEnforcedPercent()*10_000 + 0.5)
	}
	c.FilterEnforced = runtimePercent(enforced, "local_rate_limit_enforced")
	if enforced < 1_000_000 {
		c.RequestHeadersToAddWhenNotEnforced = []*core.HeaderValueOption{{
			Header:       &core.HeaderValue{Key: rateLimitShadowHeader, Value: "true"},
			AppendAction: core.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		}}
	}
	c.EnableXRatelimitHeaders = rlcommon.XRateLimitHeadersRFCVersion_DRAFT_VERSION_03
	if limit != nil {
		c.TokenBucket = tokenBucket(limit)
	}
	seenKey := map[string]bool{}
	wildcard := false
	for _, d := range ds {
		key, action := descriptorAction(d)
		if !seenKey[key] {
			seenKey[key] = true
			c.RateLimits = append(c.RateLimits, &route.RateLimit{Actions: []*route.RateLimit_Action{action}})
		}
		wildcard = wildcard || d.GetValue() == ""
		c.Descriptors = append(c.Descriptors, &rlcommon.LocalRateLimitDescriptor{
			Entries:     []*rlcommon.RateLimitDescriptor_Entry{{Key: key, Value: d.GetValue()}},
			TokenBucket: tokenBucket(d.GetLimit()),
		})
	}
	if wildcard {
		c.MaxDynamicDescriptors = wrapperspb.UInt32(maxDynamicDescriptors)
	}
	return c
}

// descriptorAction is the descriptor entry key of d and the rate limit
// action producing it: remote_address for the client's IP, or the header
// (lower-cased) keyed by its own name; a request without the header has
// no such descriptor.
func descriptorAction(d *weftnet.Descriptor) (string, *route.RateLimit_Action) {
	if d.GetClientIp() {
		return "remote_address", &route.RateLimit_Action{ActionSpecifier: &route.RateLimit_Action_RemoteAddress_{
			RemoteAddress: &route.RateLimit_Action_RemoteAddress{}}}
	}
	h := strings.ToLower(d.GetHeader())
	return h, &route.RateLimit_Action{ActionSpecifier: &route.RateLimit_Action_RequestHeaders_{
		RequestHeaders: &route.RateLimit_Action_RequestHeaders{HeaderName: h, DescriptorKey: h}}}
}

// tokenBucket: requestsPerUnit tokens per unit, holding burst (default
// requestsPerUnit).
func tokenBucket(l *weftnet.Limit) *typev3.TokenBucket {
	unit := time.Second
	switch l.GetUnit() {
	case weftnet.Limit_MINUTE:
		unit = time.Minute
	case weftnet.Limit_HOUR:
		unit = time.Hour
	}
	burst := l.GetBurst()
	if burst == 0 {
		burst = l.GetRequestsPerUnit()
	}
	return &typev3.TokenBucket{
		MaxTokens:     burst,
		TokensPerFill: wrapperspb.UInt32(l.GetRequestsPerUnit()),
		FillInterval:  durationpb.New(unit),
	}
}

// runtimePercent is a RuntimeFractionalPercent of num per million.
func runtimePercent(num uint32, key string) *core.RuntimeFractionalPercent {
	return &core.RuntimeFractionalPercent{
		DefaultValue: &typev3.FractionalPercent{Numerator: num, Denominator: typev3.FractionalPercent_MILLION},
		RuntimeKey:   key,
	}
}

// setPerFilter sets r's typed_per_filter_config for filter name.
func setPerFilter(r *route.Route, name string, cfg *anypb.Any) {
	if r.TypedPerFilterConfig == nil {
		r.TypedPerFilterConfig = map[string]*anypb.Any{}
	}
	r.TypedPerFilterConfig[name] = cfg
}
