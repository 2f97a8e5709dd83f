// Package fault is Envoy's envoy.filters.http.fault as Istio uses it
// (VirtualService http[].fault): per route, delay a share of the requests
// by a fixed time (response flag DI) and abort a share with an HTTP or
// gRPC status (FI). The listener-level HTTPFault is not used; a route
// without fault config passes untouched.
package fault

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"
	"weft.dev/weft/internal/proxy/xdswire"

	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"weft.dev/weft/internal/proxy/filter"
)

// Name is the filter's name in http_filters and typed_per_filter_config.
const Name = "envoy.filters.http.fault"

const bodyAbort = "fault filter abort"

// Factory makes the fault filter.
type Factory struct{}

var _ filter.Factory = Factory{}

// Name implements filter.Factory.
func (Factory) Name() string { return Name }

// New implements filter.Factory. The listener-level config is not used:
// faults are per route.
func (Factory) New(*anypb.Any) (filter.Filter, error) { return faultFilter{}, nil }

// ParsePerRoute implements filter.Factory: config is an HTTPFault.
func (Factory) ParsePerRoute(config *anypb.Any) (any, error) { return compile(config) }

// policy is a compiled per-route HTTPFault. Immutable.
type policy struct {
	delay     time.Duration
	delayPct  fraction
	abortHTTP int    // the HTTP status of an abort: the configured one, or the gRPC status mapped
	abortGRPC string // "" when the abort is HTTP or absent
	abortPct  fraction
	abort     bool
	body      string
}

// fraction is a FractionalPercent: numerator out of denominator.
type fraction struct{ num, den uint32 }

func (f fraction) hit() bool {
	return f.num > 0 && (f.num >= f.den || rand.Uint32N(f.den) < f.num)
}

func compileFraction(p *typev3.FractionalPercent) fraction {
	if p == nil {
		return fraction{0, 100} // an unset FractionalPercent is 0%
	}
	den := uint32(100)
	switch p.GetDenominator() {
	case typev3.FractionalPercent_TEN_THOUSAND:
		den = 10_000
	case typev3.FractionalPercent_MILLION:
		den = 1_000_000
	}
	return fraction{min(p.GetNumerator(), den), den}
}

func compile(a *anypb.Any) (*policy, error) {
	var hf faultv3.HTTPFault
	if err := xdswire.UnmarshalAny(a, &hf); err != nil {
		return nil, fmt.Errorf("want HTTPFault: %w", err)
	}
	switch {
	case len(hf.GetHeaders()) > 0 || len(hf.GetDownstreamNodes()) > 0 || hf.GetUpstreamCluster() != "":
		return nil, fmt.Errorf("headers/downstream_nodes/upstream_cluster conditions are unsupported")
	case hf.GetResponseRateLimit() != nil:
		return nil, fmt.Errorf("response_rate_limit: unsupported")
	}
	fc := &policy{}
	if d := hf.GetDelay(); d != nil {
		if d.GetHeaderDelay() != nil {
			return nil, fmt.Errorf("delay.header_delay: unsupported")
		}
		if err := d.GetFixedDelay().CheckValid(); err != nil {
			return nil, fmt.Errorf("delay.fixed_delay: %w", err)
		}
		fc.delay, fc.delayPct = d.GetFixedDelay().AsDuration(), compileFraction(d.GetPercentage())
	}
	if ab := hf.GetAbort(); ab != nil {
		switch ab.GetErrorType().(type) {
		case *faultv3.FaultAbort_HttpStatus:
			fc.abortHTTP = int(ab.GetHttpStatus())
			if fc.abortHTTP < 200 || fc.abortHTTP > 599 {
				return nil, fmt.Errorf("abort.http_status: %d out of range", fc.abortHTTP)
			}
		case *faultv3.FaultAbort_GrpcStatus:
			fc.abortGRPC = strconv.FormatUint(uint64(ab.GetGrpcStatus()), 10)
			fc.abortHTTP = httpStatusForGRPC(fc.abortGRPC)
		default:
			return nil, fmt.Errorf("abort: want http_status or grpc_status")
		}
		fc.abort, fc.abortPct, fc.body = true, compileFraction(ab.GetPercentage()), ab.GetResponseBody()
		if fc.body == "" {
			fc.body = bodyAbort
		}
	}
	return fc, nil
}

type faultFilter struct{}

var (
	_ filter.Filter       = faultFilter{}
	_ filter.PerRouteOnly = faultFilter{}
)

// PerRouteOnly implements filter.PerRouteOnly: routes without faults skip the filter.
func (faultFilter) PerRouteOnly() {}

// DecodeHeaders delays the request (flag DI) and may answer it with the
// configured abort (flag FI): as Envoy's local reply, a gRPC request gets
// a trailers-only response carrying the gRPC status (an HTTP status
// mapped), a plain HTTP request the HTTP status (a gRPC status mapped). A
// delay ends early when the client goes away, and then nothing is sent.
func (faultFilter) DecodeHeaders(s *filter.Stream) filter.Status {
	fc, _ := s.PerRoute.(*policy)
	if fc == nil {
		return filter.Continue
	}
	if fc.delay > 0 && fc.delayPct.hit() {
		s.AddResponseFlag("DI") // whatever happens to the request next
		if !sleepCtx(s.Request.Context(), fc.delay) {
			return filter.Stop // the client left
		}
	}
	if fc.abort && fc.abortPct.hit() {
		return s.SendLocalReply(filter.LocalReply{Status: fc.abortHTTP, GRPCStatus: fc.abortGRPC, Body: fc.body, Flag: "FI"})
	}
	return filter.Continue
}

// sleepCtx waits d or until ctx ends; it reports whether d elapsed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// httpStatusForGRPC maps a gRPC code to HTTP as Envoy's
// Grpc::Utility::grpcToHttpStatus.
func httpStatusForGRPC(code string) int {
	switch code {
	case "0":
		return 200
	case "1":
		return 499
	case "3", "9", "11":
		return 400
	case "4":
		return 504
	case "5":
		return 404
	case "6", "10":
		return 409
	case "7":
		return 403
	case "8":
		return 429
	case "12":
		return 501
	case "14":
		return 503
	case "16":
		return 401
	}
	return 500
}
