package dataplane

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

const (
	faultFilterName = "envoy.filters.http.fault"
	bodyFaultAbort  = "fault filter abort"
)

// faultConfig is a compiled per-route HTTPFault. Immutable.
type faultConfig struct {
	delay     time.Duration
	delayPct  fraction
	abortHTTP int    // 0 when the abort is gRPC or absent
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

// compileFault reads typed_per_filter_config["envoy.filters.http.fault"];
// nil when the route has none.
func compileFault(cfgs map[string]*anypb.Any) (*faultConfig, error) {
	a := cfgs[faultFilterName]
	if a == nil {
		return nil, nil
	}
	var hf faultv3.HTTPFault
	if err := a.UnmarshalTo(&hf); err != nil {
		return nil, fmt.Errorf("typed_per_filter_config[%s]: want HTTPFault: %w", faultFilterName, err)
	}
	where := "typed_per_filter_config[" + faultFilterName + "]"
	switch {
	case len(hf.GetHeaders()) > 0 || len(hf.GetDownstreamNodes()) > 0 || hf.GetUpstreamCluster() != "":
		return nil, fmt.Errorf("%s: headers/downstream_nodes/upstream_cluster conditions are unsupported", where)
	case hf.GetResponseRateLimit() != nil:
		return nil, fmt.Errorf("%s.response_rate_limit: unsupported", where)
	}
	fc := &faultConfig{}
	if d := hf.GetDelay(); d != nil {
		if d.GetHeaderDelay() != nil {
			return nil, fmt.Errorf("%s.delay.header_delay: unsupported", where)
		}
		if err := d.GetFixedDelay().CheckValid(); err != nil {
			return nil, fmt.Errorf("%s.delay.fixed_delay: %w", where, err)
		}
		fc.delay, fc.delayPct = d.GetFixedDelay().AsDuration(), compileFraction(d.GetPercentage())
	}
	if ab := hf.GetAbort(); ab != nil {
		switch ab.GetErrorType().(type) {
		case *faultv3.FaultAbort_HttpStatus:
			fc.abortHTTP = int(ab.GetHttpStatus())
			if fc.abortHTTP < 200 || fc.abortHTTP > 599 {
				return nil, fmt.Errorf("%s.abort.http_status: %d out of range", where, fc.abortHTTP)
			}
		case *faultv3.FaultAbort_GrpcStatus:
			fc.abortGRPC = strconv.FormatUint(uint64(ab.GetGrpcStatus()), 10)
		default:
			return nil, fmt.Errorf("%s.abort: want http_status or grpc_status", where)
		}
		fc.abort, fc.abortPct, fc.body = true, compileFraction(ab.GetPercentage()), ab.GetResponseBody()
		if fc.body == "" {
			fc.body = bodyFaultAbort
		}
	}
	return fc, nil
}

// apply runs the fault filter for one request, before the router: it may
// delay the request (flag DI) and may answer it itself (flag FI), in which
// case it returns true. Delays end early when the client goes away.
func (fc *faultConfig) apply(w http.ResponseWriter, r *http.Request, q *request) (answered bool) {
	if fc.delay > 0 && fc.delayPct.hit() {
		q.delayed = true // recordRequest adds DI to whatever happens next
		if !sleepCtx(r.Context(), fc.delay) {
			q.flags = "DC"
			return true
		}
	}
	if fc.abort && fc.abortPct.hit() {
		faultReply(w, q, fc, "FI")
		return true
	}
	return false
}

// faultReply answers with the configured abort, as Envoy's local reply: a
// gRPC request gets a trailers-only response carrying the gRPC status (an
// HTTP status is mapped); a plain HTTP request gets the HTTP status (a gRPC
// status is mapped to HTTP).
func faultReply(w http.ResponseWriter, q *request, fc *faultConfig, flags string) {
	if fc.abortHTTP != 0 {
		localReply(w, q, fc.abortHTTP, fc.body, flags)
		return
	}
	q.flags = flags
	h := w.Header()
	if q.grpc {
		q.code, q.grpcCode = http.StatusOK, fc.abortGRPC
		h["Content-Type"] = []string{"application/grpc"}
		h["Grpc-Status"] = []string{fc.abortGRPC}
		h["Grpc-Message"] = []string{fc.body}
		q.reply.apply(h) // CORS, as for every local reply (localreply.go)
		w.WriteHeader(http.StatusOK)
		return
	}
	q.code = httpStatusForGRPC(fc.abortGRPC)
	h["Content-Type"] = []string{"text/plain"}
	h["Content-Length"] = []string{strconv.Itoa(len(fc.body))}
	q.reply.apply(h)
	w.WriteHeader(q.code)
	io.WriteString(w, fc.body)
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
