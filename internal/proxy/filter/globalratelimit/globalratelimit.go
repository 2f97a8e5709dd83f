// Package globalratelimit is Envoy's envoy.filters.http.ratelimit: for
// each request, the descriptors its rate_limits actions yield are sent to
// a rate limit service (envoy.service.ratelimit.v3.RateLimitService,
// ShouldRateLimit), whose shared counters decide for every proxy at once.
// OVER_LIMIT is answered 429 (or rate_limited_status) with
// x-envoy-ratelimited and flag RL; a service that cannot answer within
// the timeout lets the request pass (counted failure_mode_allowed), or
// with failure_mode_deny refuses it with status_on_error (500) and flag
// RLSE. Counted as Envoy's cluster.<route target
// cluster>.ratelimit.{ok,over_limit,error,failure_mode_allowed} (Stats).
//
// The actions come from the route's typed_per_filter_config
// (RateLimitPerRoute.rate_limits), else the filter's own rate_limits;
// RouteAction.rate_limits and VirtualHost.rate_limits are not read.
//
// The service is called as Envoy's envoy_grpc does: a unary gRPC call
// over HTTP/2 through the proxy's own cluster of that name
// (filter.Upstream: its endpoints, balancer, breakers and TLS), so the
// cluster must speak HTTP/2.
package globalratelimit

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"weft.dev/weft/internal/proxy/xdswire"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rlcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	grl "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	rls "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"weft.dev/weft/internal/proxy/filter"
	"weft.dev/weft/internal/proxy/filter/grpccall"
	"weft.dev/weft/internal/proxy/filter/rlaction"
	"weft.dev/weft/internal/xds/contract"
)

// Name is the filter's name in http_filters and typed_per_filter_config.
const Name = "envoy.filters.http.ratelimit"

const (
	method           = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
	defaultTimeout   = 20 * time.Millisecond // Envoy's
	flagRateLimited  = "RL"
	flagServiceError = "RLSE"
	grpcUnavailable  = "14"
	grpcExhausted    = "8"
	headerLimited    = "X-Envoy-Ratelimited"
	headerLimit      = "X-Ratelimit-Limit"
	headerRemaining  = "X-Ratelimit-Remaining"
	headerReset      = "X-Ratelimit-Reset"
)

// Factory makes global rate limit filters that count in Stats (nil:
// nothing).
type Factory struct {
	Stats *Stats
}

var _ filter.Factory = Factory{}

// Name implements filter.Factory.
func (Factory) Name() string { return Name }

// New implements filter.Factory: config is a RateLimit. Fields the proxy
// cannot honour are refused rather than ignored.
func (f Factory) New(config *anypb.Any) (filter.Filter, error) {
	if config == nil {
		return nil, fmt.Errorf("typed_config: required (a RateLimit with domain and rate_limit_service)")
	}
	var in grl.RateLimit
	if err := xdswire.UnmarshalAny(config, &in); err != nil {
		return nil, fmt.Errorf("want RateLimit: %w", err)
	}
	if in.GetDomain() == "" {
		return nil, fmt.Errorf("domain: required")
	}
	svc := in.GetRateLimitService()
	if svc.GetTransportApiVersion() != core.ApiVersion_V3 {
		return nil, fmt.Errorf("rate_limit_service.transport_api_version: must be V3")
	}
	eg := svc.GetGrpcService().GetEnvoyGrpc()
	if eg.GetClusterName() == "" {
		return nil, fmt.Errorf("rate_limit_service.grpc_service.envoy_grpc.cluster_name: required (google_grpc is unsupported)")
	}
	switch {
	case in.GetStage() != 0:
		return nil, fmt.Errorf("stage: unsupported (only stage 0)")
	case in.GetRequestType() != "" && in.GetRequestType() != "both":
		return nil, fmt.Errorf("request_type: %q unsupported (only both)", in.GetRequestType())
	case in.GetStatPrefix() != "":
		return nil, fmt.Errorf("stat_prefix: unsupported")
	case in.GetFailureModeDenyPercent() != nil:
		return nil, fmt.Errorf("failure_mode_deny_percent: unsupported")
	case in.GetEnableRetryAfterHeader():
		return nil, fmt.Errorf("enable_retry_after_header: unsupported")
	}
	c := &limiterConfig{
		domain:       in.GetDomain(),
		cluster:      eg.GetClusterName(),
		authority:    cmp.Or(eg.GetAuthority(), clusterHost(eg.GetClusterName())),
		timeout:      defaultTimeout,
		deny:         in.GetFailureModeDeny(),
		status:       http.StatusTooManyRequests,
		errStatus:    http.StatusInternalServerError,
		grpcStatus:   grpcUnavailable,
		xHeaders:     in.GetEnableXRatelimitHeaders() == grl.RateLimit_DRAFT_VERSION_03,
		limitedHdr:   !in.GetDisableXEnvoyRatelimitedHeader(),
		enabled:      compileFraction(in.GetFilterEnabled()),
		enforced:     compileFraction(in.GetFilterEnforced()),
		stats:        f.Stats,
		extraHeaders: in.GetResponseHeadersToAdd(),
	}
	if t := in.GetTimeout(); t != nil {
		if err := t.CheckValid(); err != nil {
			return nil, fmt.Errorf("timeout: %w", err)
		}
		c.timeout = t.AsDuration() // 0: none
	}
	if in.GetRateLimitedAsResourceExhausted() {
		c.grpcStatus = grpcExhausted
	}
	if st := in.GetRateLimitedStatus(); st != nil && st.GetCode() >= 400 {
		c.status = int(st.GetCode()) // below 400: Envoy uses 429
	}
	if st := in.GetStatusOnError(); st != nil {
		if c.errStatus = int(st.GetCode()); c.errStatus < 100 || c.errStatus > 599 {
			return nil, fmt.Errorf("status_on_error.code: %d is not an HTTP status", c.errStatus)
		}
	}
	for i, h := range c.extraHeaders {
		if h.GetHeader().GetKey() == "" {
			return nil, fmt.Errorf("response_headers_to_add[%d].header.key: required", i)
		}
	}
	var err error
	if c.actions, err = rlaction.CompileAll(in.GetRateLimits()); err != nil {
		return nil, err
	}
	return &httpFilter{c: c}, nil
}

// ParsePerRoute implements filter.Factory: config is a RateLimitPerRoute;
// its rate_limits (when any) replace the filter's for the route, its
// domain (when set) the filter's.
func (Factory) ParsePerRoute(config *anypb.Any) (any, error) {
	var in grl.RateLimitPerRoute
	if err := xdswire.UnmarshalAny(config, &in); err != nil {
		return nil, fmt.Errorf("want RateLimitPerRoute: %w", err)
	}
	acts, err := rlaction.CompileAll(in.GetRateLimits())
	if err != nil {
		return nil, err
	}
	return &perRoute{domain: in.GetDomain(), actions: acts}, nil
}

// clusterHost is the service host of an Istio-style cluster name, the
// :authority of the call as the service's own sidecar routes it; the
// name itself otherwise.
func clusterHost(name string) string {
	if _, _, _, host, err := contract.ParseClusterName(name); err == nil && host != "" {
		return host
	}
	return name
}

// limiterConfig is a compiled RateLimit; immutable.
type limiterConfig struct {
	domain, cluster, authority string
	timeout                    time.Duration
	deny                       bool
	status, errStatus          int
	grpcStatus                 string
	xHeaders, limitedHdr       bool
	enabled, enforced          fraction
	stats                      *Stats
	extraHeaders               []*core.HeaderValueOption
	actions                    [][]rlaction.Action
}

// perRoute is a compiled RateLimitPerRoute; immutable.
type perRoute struct {
	domain  string
	actions [][]rlaction.Action
}

type httpFilter struct{ c *limiterConfig }

var _ filter.Filter = (*httpFilter)(nil)

// DecodeHeaders asks the service about the request's descriptors (none:
// the request passes without a call) and acts on its answer. It blocks
// for the call, at most the timeout or until the request's context ends.
func (f *httpFilter) DecodeHeaders(s *filter.Stream) filter.Status {
	c := f.c
	actions, domain := c.actions, c.domain
	if pr, _ := s.PerRoute.(*perRoute); pr != nil {
		if len(pr.actions) > 0 {
			actions = pr.actions
		}
		domain = cmp.Or(pr.domain, domain)
	}
	if len(actions) == 0 || !c.enabled.hit() {
		return filter.Continue
	}
	ds := descriptors(s, actions)
	if len(ds) == 0 {
		return filter.Continue
	}
	st := c.stats.forCluster(s.Cluster)
	resp, err := c.call(s, &rls.RateLimitRequest{Domain: domain, Descriptors: ds, HitsAddend: 1})
	if err != nil && s.Request.Context().Err() != nil {
		return filter.Stop // the client went away: nobody to answer, nothing to count
	}
	if err != nil {
		st.inc(statError)
		if c.deny {
			return s.SendLocalReply(filter.LocalReply{Status: c.errStatus, Flag: flagServiceError})
		}
		st.inc(statFailureModeAllowed)
		return filter.Continue
	}
	h := s.ResponseHeader()
	if c.xHeaders {
		setXRateLimitHeaders(h, resp.GetStatuses())
	}
	for _, hv := range resp.GetResponseHeadersToAdd() {
		h.Set(hv.GetKey(), hv.GetValue())
	}
	if resp.GetOverallCode() != rls.RateLimitResponse_OVER_LIMIT {
		st.inc(statOK)
		for _, hv := range resp.GetRequestHeadersToAdd() {
			s.Request.Header.Set(hv.GetKey(), hv.GetValue())
		}
		return filter.Continue
	}
	st.inc(statOverLimit)
	if !c.enforced.hit() {
		return filter.Continue
	}
	if c.limitedHdr {
		h[headerLimited] = []string{"true"}
	}
	for _, hv := range c.extraHeaders {
		h.Set(hv.GetHeader().GetKey(), hv.GetHeader().GetValue())
	}
	return s.SendLocalReply(filter.LocalReply{Status: c.status, GRPCStatus: c.grpcStatus, Body: string(resp.GetRawBody()), Flag: flagRateLimited})
}

// call makes the unary gRPC call ShouldRateLimit through the proxy's
// cluster (grpccall).
func (c *limiterConfig) call(s *filter.Stream, in *rls.RateLimitRequest) (*rls.RateLimitResponse, error) {
	var out rls.RateLimitResponse
	if err := grpccall.Call(s.Request.Context(), s.Upstream, c.cluster, c.authority, method, c.timeout, in, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// setXRateLimitHeaders sets the draft 03 headers from the status closest
// to its limit, as Envoy: X-RateLimit-Limit lists each limit with its
// window ("10, 10;w=60"), Remaining and Reset are the closest one's.
func setXRateLimitHeaders(h http.Header, statuses []*rls.RateLimitResponse_DescriptorStatus) {
	var min *rls.RateLimitResponse_DescriptorStatus
	for _, st := range statuses {
		if st.GetCurrentLimit() == nil {
			continue
		}
		if min == nil || st.GetLimitRemaining() < min.GetLimitRemaining() {
			min = st
		}
	}
	if min == nil {
		return
	}
	var b strings.Builder
	b.WriteString(strconv.FormatUint(uint64(min.GetCurrentLimit().GetRequestsPerUnit()), 10))
	for _, st := range statuses {
		l := st.GetCurrentLimit()
		if l == nil {
			continue
		}
		fmt.Fprintf(&b, ", %d;w=%d", l.GetRequestsPerUnit(), unitSeconds(l.GetUnit()))
		if l.GetName() != "" {
			fmt.Fprintf(&b, ";name=%q", l.GetName())
		}
	}
	h[headerLimit] = []string{b.String()}
	h[headerRemaining] = []string{strconv.FormatUint(uint64(min.GetLimitRemaining()), 10)}
	if d := min.GetDurationUntilReset(); d != nil {
		h[headerReset] = []string{strconv.FormatInt(int64(d.AsDuration().Seconds()), 10)}
	}
}

func unitSeconds(u rls.RateLimitResponse_RateLimit_Unit) int64 {
	switch u {
	case rls.RateLimitResponse_RateLimit_SECOND:
		return 1
	case rls.RateLimitResponse_RateLimit_MINUTE:
		return 60
	case rls.RateLimitResponse_RateLimit_HOUR:
		return 3600
	case rls.RateLimitResponse_RateLimit_DAY:
		return 86400
	case rls.RateLimitResponse_RateLimit_WEEK:
		return 7 * 86400
	case rls.RateLimitResponse_RateLimit_MONTH:
		return 30 * 86400
	case rls.RateLimitResponse_RateLimit_YEAR:
		return 365 * 86400
	}
	return 0
}

// descriptors runs each rate_limits entry's actions on the request, as
// Envoy: an entry whose action yields nothing (a header absent without
// skip_if_absent, a header match that does not come out as expected)
// sends no descriptor.
func descriptors(s *filter.Stream, all [][]rlaction.Action) []*rlcommon.RateLimitDescriptor {
	var out []*rlcommon.RateLimitDescriptor
	var entries []rlaction.Entry
	for _, acts := range all {
		var ok bool
		if entries, ok = rlaction.Descriptor(s, acts, entries[:0]); !ok {
			continue
		}
		d := &rlcommon.RateLimitDescriptor{Entries: make([]*rlcommon.RateLimitDescriptor_Entry, len(entries))}
		for i, e := range entries {
			d.Entries[i] = &rlcommon.RateLimitDescriptor_Entry{Key: e.Key, Value: e.Value}
		}
		out = append(out, d)
	}
	return out
}

// fraction is a FractionalPercent: num out of den; unset is 100%, as
// the ratelimit filter's filter_enabled and filter_enforced default.
type fraction struct{ num, den uint32 }

func compileFraction(p *core.RuntimeFractionalPercent) fraction {
	if p == nil {
		return fraction{1, 1}
	}
	d := p.GetDefaultValue()
	den := uint32(100)
	switch d.GetDenominator() {
	case typev3.FractionalPercent_TEN_THOUSAND:
		den = 10_000
	case typev3.FractionalPercent_MILLION:
		den = 1_000_000
	}
	return fraction{min(d.GetNumerator(), den), den}
}

func (f fraction) hit() bool {
	return f.num > 0 && (f.num >= f.den || rand.Uint32N(f.den) < f.num)
}
