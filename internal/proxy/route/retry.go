package route

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"weft.dev/weft/internal/proxy/xdswire"
)

// Envoy's retry defaults.
const (
	defaultRetryBase           = 25 * time.Millisecond // RetryBackOff.base_interval
	defaultHostSelectionTries  = 1                     // host_selection_retry_max_attempts unset
	previousHostsPredicateName = "envoy.retry_host_predicates.previous_hosts"
)

// retryOn is the set of retry_on conditions, as bits.
type retryOn uint32

const (
	retryOn5xx retryOn = 1 << iota
	retryOnGatewayError
	retryOnReset
	retryOnConnectFailure
	retryOnRefusedStream
	retryOnRetriable4xx
	retryOnRetriableStatusCodes
	retryOnGRPCCancelled
	retryOnGRPCDeadlineExceeded
	retryOnGRPCInternal
	retryOnGRPCResourceExhausted
	retryOnGRPCUnavailable
	retryOnResetBeforeRequest
	retryOnEnvoyRateLimited
)

var retryOnNames = map[string]retryOn{
	"5xx":                    retryOn5xx,
	"gateway-error":          retryOnGatewayError,
	"reset":                  retryOnReset,
	"reset-before-request":   retryOnResetBeforeRequest,
	"envoy-ratelimited":      retryOnEnvoyRateLimited,
	"connect-failure":        retryOnConnectFailure,
	"refused-stream":         retryOnRefusedStream,
	"retriable-4xx":          retryOnRetriable4xx,
	"retriable-status-codes": retryOnRetriableStatusCodes,
	"cancelled":              retryOnGRPCCancelled,
	"deadline-exceeded":      retryOnGRPCDeadlineExceeded,
	"internal":               retryOnGRPCInternal,
	"resource-exhausted":     retryOnGRPCResourceExhausted,
	"unavailable":            retryOnGRPCUnavailable,
}

// RetryPolicy is a compiled RouteAction.retry_policy. Immutable.
type RetryPolicy struct {
	// NumRetries is how many times a request may be retried.
	NumRetries int
	// PerTry bounds each attempt's wait for the response headers; 0: none.
	PerTry time.Duration
	// OtherHosts is the previous_hosts predicate: a retry prefers an
	// endpoint not tried yet.
	OtherHosts bool
	// PriorityUpdateFrequency is the previous_priorities retry priority's
	// update_frequency (cluster.PrevPriorities); 0: no retry priority.
	PriorityUpdateFrequency int

	on           retryOn
	statusCodes  []int
	base, max    time.Duration // jittered exponential backoff
	hostAttempts int           // host_selection_retry_max_attempts (at least 1); parsed, not used yet
}

// Failure is how an upstream attempt failed, in the terms of the retry_on
// conditions.
type Failure uint8

// The failures RetriableFailure knows.
const (
	ConnectFailure Failure = iota + 1 // the connection could not be made (UF)
	RefusedStream                     // reset with REFUSED_STREAM
	Reset                             // reset or disconnected before the response headers (UC)
	PerTryTimeout                     // the per-try timeout fired
)

// RetriableFailure reports whether an attempt that failed with f may be
// retried.
func (rp *RetryPolicy) RetriableFailure(f Failure) bool {
	switch f {
	case ConnectFailure:
		// Nothing reached the upstream, so reset-before-request applies
		// (Envoy: no byte sent). A stale pooled connection is retried by
		// the upstream pool itself, before it comes to this.
		return rp.on&(retryOn5xx|retryOnGatewayError|retryOnReset|retryOnConnectFailure|retryOnResetBeforeRequest) != 0
	case RefusedStream:
		return rp.on&(retryOn5xx|retryOnGatewayError|retryOnReset|retryOnRefusedStream) != 0
	case Reset, PerTryTimeout:
		return rp.on&(retryOn5xx|retryOnGatewayError|retryOnReset) != 0
	}
	return false
}

// retryPolicies are the retry policies compiled for one table, by their
// encoding: a mesh's routes mostly carry the same one (Istio's default),
// and a sidecar of a large mesh compiles thousands of routes.
type retryPolicies map[string]*RetryPolicy

// compile is compileRetryPolicy, returning the policy an equal
// retry_policy compiled to before, if any (rs nil: none kept).
func (rs retryPolicies) compile(p *route.RetryPolicy) (*RetryPolicy, error) {
	if p == nil || rs == nil {
		return compileRetryPolicy(p)
	}
	key, err := xdswire.Marshal(p)
	if err != nil {
		return compileRetryPolicy(p)
	}
	if rp, ok := rs[string(key)]; ok {
		return rp, nil
	}
	rp, err := compileRetryPolicy(p)
	if err != nil {
		return nil, err
	}
	rs[string(key)] = rp
	return rp, nil
}

// compileRetryPolicy translates a retry_policy; nil in, nil out. Unknown
// retry_on conditions (envoy-ratelimited, retriable-headers, …) never match,
// so they are accepted and ignored.
func compileRetryPolicy(p *route.RetryPolicy) (*RetryPolicy, error) {
	if p == nil {
		return nil, nil
	}
	rp := &RetryPolicy{NumRetries: 1, base: defaultRetryBase, hostAttempts: defaultHostSelectionTries}
	if n := p.GetNumRetries(); n != nil {
		rp.NumRetries = int(n.GetValue())
	}
	for f := range strings.SplitSeq(p.GetRetryOn(), ",") {
		rp.on |= retryOnNames[strings.TrimSpace(f)]
	}
	for _, c := range p.GetRetriableStatusCodes() {
		if c < 100 || c > 599 {
			return nil, fmt.Errorf("retriable_status_codes: %d is not an HTTP status", c)
		}
		rp.statusCodes = append(rp.statusCodes, int(c))
	}
	if t := p.GetPerTryTimeout(); t != nil {
		if err := t.CheckValid(); err != nil {
			return nil, fmt.Errorf("per_try_timeout: %w", err)
		}
		rp.PerTry = t.AsDuration()
	}
	if b := p.GetRetryBackOff(); b != nil {
		if err := b.GetBaseInterval().CheckValid(); err != nil || b.GetBaseInterval().AsDuration() <= 0 {
			return nil, fmt.Errorf("retry_back_off.base_interval: must be positive")
		}
		rp.base = b.GetBaseInterval().AsDuration()
		if m := b.GetMaxInterval(); m != nil {
			if err := m.CheckValid(); err != nil || m.AsDuration() < rp.base {
				return nil, fmt.Errorf("retry_back_off.max_interval: must be at least base_interval")
			}
			rp.max = m.AsDuration()
		}
	}
	if rp.max == 0 {
		rp.max = 10 * rp.base
	}
	for i, hp := range p.GetRetryHostPredicate() {
		if hp.GetName() != previousHostsPredicateName {
			return nil, fmt.Errorf("retry_host_predicate[%d] (%s): unsupported", i, hp.GetName())
		}
		rp.OtherHosts = true
	}
	if n := p.GetHostSelectionRetryMaxAttempts(); n > 0 {
		rp.hostAttempts = int(min(n, 100))
	}
	var err error
	if rp.PriorityUpdateFrequency, err = compileRetryPriority(p.GetRetryPriority()); err != nil {
		return nil, err
	}
	return rp, nil
}

// Backoff returns the wait before retry n (1-based): full jitter over an
// exponentially growing interval capped at the maximum, as Envoy's
// JitteredExponentialBackOffStrategy.
func (rp *RetryPolicy) Backoff(n int) time.Duration {
	iv := rp.base << min(n-1, 30)
	if iv <= 0 || iv > rp.max {
		iv = rp.max
	}
	return time.Duration(rand.Int64N(int64(iv)))
}

// RetriableResponse reports whether response headers call for a retry.
// grpcStatus is the grpc-status response header ("" when absent: only a
// trailers-only gRPC response can be retried); rateLimited is whether the
// response carries x-envoy-ratelimited (a proxy's rate limit refused it):
// as in Envoy, such a response is retried only under envoy-ratelimited,
// whatever its status.
func (rp *RetryPolicy) RetriableResponse(code int, grpcStatus string, rateLimited bool) bool {
	if rateLimited {
		return rp.on&retryOnEnvoyRateLimited != 0
	}
	switch {
	case rp.on&retryOn5xx != 0 && code >= 500:
		return true
	case rp.on&retryOnGatewayError != 0 && (code == 502 || code == 503 || code == 504):
		return true
	case rp.on&retryOnRetriable4xx != 0 && code == http.StatusConflict:
		return true
	}
	if rp.on&retryOnRetriableStatusCodes != 0 {
		for _, c := range rp.statusCodes {
			if c == code {
				return true
			}
		}
	}
	if grpcStatus != "" {
		var bit retryOn
		switch grpcStatus {
		case "1":
			bit = retryOnGRPCCancelled
		case "4":
			bit = retryOnGRPCDeadlineExceeded
		case "8":
			bit = retryOnGRPCResourceExhausted
		case "13":
			bit = retryOnGRPCInternal
		case "14":
			bit = retryOnGRPCUnavailable
		}
		return rp.on&bit != 0
	}
	return false
}
