package generate

import (
	"net/http"
	"strconv"
	"strings"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	previoushosts "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	previouspriorities "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/priority/previous_priorities/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"
)

// Timeouts, retries and fault injection, as Istio's route builder emits them
// (pilot/pkg/networking/core/route: setTimeout, retry.ConvertPolicy,
// TranslateFault).

const (
	faultFilterName            = "envoy.filters.http.fault"
	previousHostsPredicateName = "envoy.retry_host_predicates.previous_hosts"
	previousPrioritiesName     = "envoy.retry_priorities.previous_priorities"
)

// applyResilience sets the route timeout and retry policy of an http route's
// action (nil h: the default route); call it after the hash policy is set. Istio always sets the timeout — 0s,
// "none", when the VirtualService gives none — because Envoy's own default
// is 15s. Safe on a nil action (redirects, direct responses).
func applyResilience(a *route.Route_Route, h *networking.HTTPRoute) {
	if a == nil || a.Route == nil {
		return
	}
	a.Route.Timeout = durationpb.New(0)
	if t := h.GetTimeout(); t != nil {
		a.Route.Timeout = t
	}
	// As Istio: with consistent hashing a retry may go back to the hashed
	// host (no previous_hosts predicate).
	a.Route.RetryPolicy = retryPolicy(h.GetRetries(), len(a.Route.GetHashPolicy()) > 0)
}

// retryPolicy is Istio's retry.ConvertPolicy: the default policy when in is
// nil, none when attempts is 0, else the default with the given fields
// overridden. hashPolicy (consistent-hash load balancing) drops the
// previous_hosts predicate so a retry stays on the hashed host.
func retryPolicy(in *networking.HTTPRetry, hashPolicy bool) *route.RetryPolicy {
	out := &route.RetryPolicy{
		NumRetries:                    wrapperspb.UInt32(2),
		RetryOn:                       "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
		RetriableStatusCodes:          []uint32{http.StatusServiceUnavailable},
		HostSelectionRetryMaxAttempts: 5,
	}
	if !hashPolicy {
		out.RetryHostPredicate = []*route.RetryPolicy_RetryHostPredicate{previousHostsPredicate()}
	}
	if in == nil {
		return out
	}
	if in.GetAttempts() <= 0 {
		return nil // retries explicitly disabled
	}
	out.NumRetries = wrapperspb.UInt32(uint32(in.GetAttempts()))
	if in.GetRetryOn() != "" {
		out.RetryOn, out.RetriableStatusCodes = parseRetryOn(in.GetRetryOn())
		if len(out.RetriableStatusCodes) > 0 && !strings.Contains(out.RetryOn, "retriable-status-codes") {
			out.RetryOn += ",retriable-status-codes"
		}
	}
	if in.GetPerTryTimeout() != nil {
		out.PerTryTimeout = in.GetPerTryTimeout()
	}
	if v := in.GetRetryIgnorePreviousHosts(); v != nil {
		out.RetryHostPredicate = nil
		if v.GetValue() {
			out.RetryHostPredicate = []*route.RetryPolicy_RetryHostPredicate{previousHostsPredicate()}
		}
	}
	if in.GetRetryRemoteLocalities().GetValue() {
		out.RetryPriority = &route.RetryPolicy_RetryPriority{
			Name:       previousPrioritiesName,
			ConfigType: &route.RetryPolicy_RetryPriority_TypedConfig{TypedConfig: mustAny(&previouspriorities.PreviousPrioritiesConfig{UpdateFrequency: 2})},
		}
	}
	if in.GetBackoff() != nil {
		out.RetryBackOff = &route.RetryPolicy_RetryBackOff{BaseInterval: in.GetBackoff()}
	}
	return out
}

func previousHostsPredicate() *route.RetryPolicy_RetryHostPredicate {
	return &route.RetryPolicy_RetryHostPredicate{
		Name:       previousHostsPredicateName,
		ConfigType: &route.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: mustAny(&previoushosts.PreviousHostsPredicate{})},
	}
}

// parseRetryOn splits Istio's retryOn into Envoy's retry_on and the
// integers in it, which are retriable status codes.
func parseRetryOn(s string) (string, []uint32) {
	var on []string
	var codes []uint32
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if n, err := strconv.Atoi(part); err == nil && http.StatusText(n) != "" {
			codes = append(codes, uint32(n))
			continue
		}
		on = append(on, part)
	}
	return strings.Join(on, ","), codes
}

// withFault puts the http route's fault injection on r as the per-route
// config of envoy.filters.http.fault; r unchanged when there is none.
func withFault(h *networking.HTTPRoute, r *route.Route) *route.Route {
	f := httpFault(h.GetFault())
	if f == nil {
		return r
	}
	if r.TypedPerFilterConfig == nil {
		r.TypedPerFilterConfig = map[string]*anypb.Any{}
	}
	r.TypedPerFilterConfig[faultFilterName] = mustAny(f)
	return r
}

// httpFault is Istio's TranslateFault; nil when nothing is injected.
func httpFault(in *networking.HTTPFaultInjection) *faultv3.HTTPFault {
	if in == nil {
		return nil
	}
	out := &faultv3.HTTPFault{}
	if d := in.GetDelay(); d != nil && d.GetFixedDelay() != nil {
		out.Delay = &faultcommon.FaultDelay{
			FaultDelaySecifier: &faultcommon.FaultDelay_FixedDelay{FixedDelay: d.GetFixedDelay()},
			Percentage:         fractionalPercent(d.GetPercentage(), d.GetPercent()), //nolint:staticcheck // Istio still honours percent
		}
	}
	if a := in.GetAbort(); a != nil {
		ab := &faultv3.FaultAbort{Percentage: fractionalPercent(a.GetPercentage(), -1)}
		switch {
		case a.GetHttpStatus() != 0:
			ab.ErrorType = &faultv3.FaultAbort_HttpStatus{HttpStatus: uint32(a.GetHttpStatus())}
		case a.GetGrpcStatus() != "":
			code, ok := grpcCodes[strings.ToUpper(a.GetGrpcStatus())]
			if !ok {
				ab = nil
				break
			}
			ab.ErrorType = &faultv3.FaultAbort_GrpcStatus{GrpcStatus: code}
		default:
			ab = nil // http2Error is not supported by Istio either
		}
		out.Abort = ab
	}
	if out.Delay == nil && out.Abort == nil {
		return nil
	}
	return out
}

// fractionalPercent is Istio's translation of a Percent (0–100,
// fractional) to millionths; without one, the deprecated integer percent
// (delay only; deprecated < 0 means none: nil, which Envoy reads as 0%, so
// an abort without a percentage aborts nothing, as Istio documents).
func fractionalPercent(p *networking.Percent, deprecated int32) *typev3.FractionalPercent {
	switch {
	case p != nil:
		return &typev3.FractionalPercent{Numerator: uint32(p.GetValue() * 10000), Denominator: typev3.FractionalPercent_MILLION}
	case deprecated >= 0:
		return &typev3.FractionalPercent{Numerator: uint32(deprecated), Denominator: typev3.FractionalPercent_HUNDRED}
	}
	return nil
}

// grpcCodes maps Istio's grpcStatus names to gRPC codes.
var grpcCodes = map[string]uint32{
	"OK": 0, "CANCELLED": 1, "UNKNOWN": 2, "INVALID_ARGUMENT": 3, "DEADLINE_EXCEEDED": 4,
	"NOT_FOUND": 5, "ALREADY_EXISTS": 6, "PERMISSION_DENIED": 7, "RESOURCE_EXHAUSTED": 8,
	"FAILED_PRECONDITION": 9, "ABORTED": 10, "OUT_OF_RANGE": 11, "UNIMPLEMENTED": 12,
	"INTERNAL": 13, "UNAVAILABLE": 14, "DATA_LOSS": 15, "UNAUTHENTICATED": 16,
}

// faultFilters are the HTTP filters that go before the router on the
// outbound listener: envoy.filters.http.fault with an empty config (the
// faults are per route), as Istio's sidecar outbound chain has it.
func faultFilters() []*hcm.HttpFilter {
	return []*hcm.HttpFilter{{
		Name:       faultFilterName,
		ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(&faultv3.HTTPFault{})},
	}}
}
