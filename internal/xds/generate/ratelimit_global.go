package generate

import (
	"cmp"
	"net"
	"strconv"
	"strings"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rlconf "github.com/envoyproxy/go-control-plane/envoy/config/ratelimit/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	grl "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	weftnet "weft.dev/weft/api/networking/v1alpha1"
	"weft.dev/weft/internal/xds/contract"
)

const (
	// globalRateLimitName is Envoy's envoy.filters.http.ratelimit.
	globalRateLimitName = "envoy.filters.http.ratelimit"
	// globalRateLimitTimeout is Envoy's default timeout of the call.
	globalRateLimitTimeout = 20 * time.Millisecond
)

// globalRateLimitFilter is the http_filters entry of g: the domain, the
// service as the outbound cluster of its host and port (Envoy's
// envoy_grpc: through the proxy's own cluster, endpoints and TLS),
// failure mode, timeout and headers. The descriptors are per route
// (globalRateLimitPerRoute). shadow and enforcedPercent apply as to
// the local limits: filter_enforced.
func globalRateLimitFilter(spec *weftnet.RateLimit) *hcm.HttpFilter {
	g := spec.GetGlobal()
	host, port, _ := net.SplitHostPort(g.GetService()) // validated
	p, _ := strconv.ParseUint(port, 10, 32)
	c := &grl.RateLimit{
		Domain:          g.GetDomain(),
		FailureModeDeny: g.GetFailureModeDeny(),
		Timeout:         durationpb.New(globalRateLimitTimeout),
		RateLimitService: &rlconf.RateLimitServiceConfig{
			GrpcService: &core.GrpcService{TargetSpecifier: &core.GrpcService_EnvoyGrpc_{EnvoyGrpc: &core.GrpcService_EnvoyGrpc{
				ClusterName: contract.ClusterName(contract.Outbound, uint32(p), "", host),
			}}},
			TransportApiVersion: core.ApiVersion_V3,
		},
	}
	if g.GetTimeout() != nil {
		c.Timeout = g.GetTimeout()
	}
	if g.GetRateLimitHeaders() {
		c.EnableXRatelimitHeaders = grl.RateLimit_DRAFT_VERSION_03
	}
	switch {
	case spec.GetShadow():
		c.FilterEnforced = runtimePercent(0, "ratelimit.http_filter_enforcing")
	case spec.EnforcedPercent != nil:
		c.FilterEnforced = runtimePercent(uint32(spec.GetEnforcedPercent()*10_000+0.5), "ratelimit.http_filter_enforcing")
	}
	return &hcm.HttpFilter{Name: globalRateLimitName, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(c)}}
}

// globalRateLimitPerRoute is a route's RateLimitPerRoute: the rate
// limit actions of ds, one config.route.v3.RateLimit per descriptor
// (none: the route sends nothing to the service).
func globalRateLimitPerRoute(ds []*weftnet.GlobalDescriptor) *anypb.Any {
	c := &grl.RateLimitPerRoute{}
	for _, d := range ds {
		rl := &route.RateLimit{}
		for _, a := range d.GetActions() {
			rl.Actions = append(rl.Actions, globalAction(a))
		}
		c.RateLimits = append(c.RateLimits, rl)
	}
	return mustAny(c)
}

// globalAction is Envoy's rate limit action for a.
func globalAction(a *weftnet.GlobalAction) *route.RateLimit_Action {
	switch {
	case a.GetRequestHeader() != nil:
		h := strings.ToLower(a.GetRequestHeader().GetHeader())
		return &route.RateLimit_Action{ActionSpecifier: &route.RateLimit_Action_RequestHeaders_{RequestHeaders: &route.RateLimit_Action_RequestHeaders{
			HeaderName: h, DescriptorKey: cmp.Or(a.GetRequestHeader().GetKey(), h), SkipIfAbsent: a.GetRequestHeader().GetSkipIfAbsent(),
		}}}
	case a.GetClientIp():
		return &route.RateLimit_Action{ActionSpecifier: &route.RateLimit_Action_RemoteAddress_{RemoteAddress: &route.RateLimit_Action_RemoteAddress{}}}
	case a.GetGenericKey() != nil:
		return &route.RateLimit_Action{ActionSpecifier: &route.RateLimit_Action_GenericKey_{GenericKey: &route.RateLimit_Action_GenericKey{
			DescriptorKey: a.GetGenericKey().GetKey(), DescriptorValue: a.GetGenericKey().GetValue(),
		}}}
	default:
		m := a.GetHeaderValueMatch()
		hv := &route.RateLimit_Action_HeaderValueMatch{
			DescriptorKey: m.GetKey(), DescriptorValue: m.GetValue(), Headers: headerMatchers(m.GetHeaders(), false),
		}
		if m.ExpectMatch != nil {
			hv.ExpectMatch = wrapperspb.Bool(m.GetExpectMatch())
		}
		return &route.RateLimit_Action{ActionSpecifier: &route.RateLimit_Action_HeaderValueMatch_{HeaderValueMatch: hv}}
	}
}

// hasLocalRateLimit: spec limits anything locally (a limit, descriptors,
// or a rule with either).
func hasLocalRateLimit(spec *weftnet.RateLimit) bool {
	return spec.Limit != nil || len(spec.GetDescriptors()) > 0 || rulesHaveLocal(spec.GetRules())
}

func rulesHaveLocal(rs []*weftnet.Rule) bool {
	for _, r := range rs {
		if r.Limit != nil || len(r.GetDescriptors()) > 0 {
			return true
		}
	}
	return false
}

// rateLimitFilters are the http_filters entries spec needs: the local
// rate limit filter, then the global one (the cheap refusal first).
func rateLimitFilters(fs []*hcm.HttpFilter, spec *weftnet.RateLimit) []*hcm.HttpFilter {
	if hasLocalRateLimit(spec) {
		fs = insertBeforeRouter(fs, rateLimitFilter())
	}
	if spec.Global != nil {
		fs = insertBeforeRouter(fs, globalRateLimitFilter(spec))
	}
	return fs
}
