package dataplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"weft.dev/weft/internal/proxy/upstream"
)

// Envoy's retry defaults.
const (
	defaultRetryBase           = 25 * time.Millisecond // RetryBackOff.base_interval
	defaultHostSelectionTries  = 1                     // host_selection_retry_max_attempts unset
	retryBodyBufferLimit       = 64 << 10              // per_request_buffer_limit_bytes Envoy applies to retried bodies
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
)

var retryOnNames = map[string]retryOn{
	"5xx":                    retryOn5xx,
	"gateway-error":          retryOnGatewayError,
	"reset":                  retryOnReset,
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

// retryPolicy is a compiled RouteAction.retry_policy. Immutable.
type retryPolicy struct {
	numRetries   int
	on           retryOn
	statusCodes  []int
	perTry       time.Duration // 0: none
	base, max    time.Duration // jittered exponential backoff
	otherHosts   bool          // previous_hosts predicate: retry on a host not tried yet
	hostAttempts int           // host_selection_retry_max_attempts (at least 1)
	prioFreq     int           // previous_priorities update_frequency; 0: no retry_priority (retrypriority.go)
}

// compileRetryPolicy translates a retry_policy; nil in, nil out. Unknown
// retry_on conditions (envoy-ratelimited, retriable-headers, …) never match,
// so they are accepted and ignored.
func compileRetryPolicy(p *route.RetryPolicy) (*retryPolicy, error) {
	if p == nil {
		return nil, nil
	}
	rp := &retryPolicy{numRetries: 1, base: defaultRetryBase, hostAttempts: defaultHostSelectionTries}
	if n := p.GetNumRetries(); n != nil {
		rp.numRetries = int(n.GetValue())
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
		rp.perTry = t.AsDuration()
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
		rp.otherHosts = true
	}
	if n := p.GetHostSelectionRetryMaxAttempts(); n > 0 {
		rp.hostAttempts = int(min(n, 100))
	}
	var err error
	if rp.prioFreq, err = compileRetryPriority(p.GetRetryPriority()); err != nil {
		return nil, err
	}
	return rp, nil
}

// backoff returns the wait before retry n (1-based): full jitter over an
// exponentially growing interval capped at max, as Envoy's
// JitteredExponentialBackOffStrategy.
func (rp *retryPolicy) backoff(n int) time.Duration {
	iv := rp.base << min(n-1, 30)
	if iv <= 0 || iv > rp.max {
		iv = rp.max
	}
	return time.Duration(rand.Int64N(int64(iv)))
}

// outcome classifies one upstream attempt.
type outcome uint8

const (
	outcomeResponse       outcome = iota // headers received
	outcomeConnectFailure                // UF
	outcomeRefusedStream                 // reset with REFUSED_STREAM
	outcomeReset                         // UC: reset/disconnect before headers
	outcomePerTryTimeout                 // UT on this attempt only
)

// retriableError reports whether a failed attempt may be retried.
func (rp *retryPolicy) retriableError(o outcome) bool {
	switch o {
	case outcomeConnectFailure:
		return rp.on&(retryOn5xx|retryOnGatewayError|retryOnReset|retryOnConnectFailure) != 0
	case outcomeRefusedStream:
		return rp.on&(retryOn5xx|retryOnGatewayError|retryOnReset|retryOnRefusedStream) != 0
	case outcomeReset:
		return rp.on&(retryOn5xx|retryOnGatewayError|retryOnReset) != 0
	case outcomePerTryTimeout:
		return rp.on&(retryOn5xx|retryOnGatewayError|retryOnReset) != 0
	}
	return false
}

// retriableResponse reports whether response headers call for a retry.
// grpcStatus is the grpc-status response header ("" when absent: only a
// trailers-only gRPC response can be retried).
func (rp *retryPolicy) retriableResponse(code int, grpcStatus string) bool {
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

// classify turns a RoundTrip error into an outcome. perTryFired tells a
// per-try timeout apart from other cancellations.
func classify(err error, perTryFired bool) outcome {
	switch {
	case perTryFired:
		return outcomePerTryTimeout
	case upstream.IsConnectError(err):
		return outcomeConnectFailure
	case strings.Contains(err.Error(), "REFUSED_STREAM"):
		return outcomeRefusedStream
	}
	return outcomeReset
}

// errStaleAttempt is what an abandoned attempt reads from the request body
// once a retry owns it.
var errStaleAttempt = errors.New("request body: a newer attempt owns the body")

// replayBody lets a request body be sent again on a retry, as Envoy does: it
// keeps what has been read so far while that stays within
// retryBodyBufferLimit. A retry is possible when nothing was read yet or the
// whole body was read and kept; a body that outgrew the buffer is never
// replayed. Safe for the concurrent use of overlapping attempts: only the
// attempt that owns the body reads the downstream body.
type replayBody struct {
	src io.Reader

	mu       sync.Mutex
	buf      []byte
	started  bool // a read from src has begun
	eof      bool // src is exhausted and buf holds all of it
	overflow bool // more than the limit was read: buf is dropped
	owner    *bodyView
}

// bodyView is one attempt's reader over a replayBody.
type bodyView struct {
	rb  *replayBody
	pos int
}

func newReplayBody(src io.Reader) *replayBody { return &replayBody{src: src} }

// attempt returns a fresh reader for a new attempt, or nil when the body can
// no longer be replayed.
func (rb *replayBody) attempt() *bodyView {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	if rb.owner != nil && rb.started && !rb.eof {
		return nil // part of the body went to an earlier attempt and is not complete here
	}
	if rb.overflow {
		return nil
	}
	v := &bodyView{rb: rb}
	rb.owner = v
	return v
}

func (v *bodyView) Read(p []byte) (int, error) {
	rb := v.rb
	rb.mu.Lock()
	if !rb.overflow && v.pos < len(rb.buf) {
		n := copy(p, rb.buf[v.pos:])
		v.pos += n
		rb.mu.Unlock()
		return n, nil
	}
	if rb.eof {
		rb.mu.Unlock()
		return 0, io.EOF
	}
	if rb.owner != v {
		rb.mu.Unlock()
		return 0, errStaleAttempt
	}
	rb.started = true
	rb.mu.Unlock()

	n, err := rb.src.Read(p)

	rb.mu.Lock()
	if n > 0 && !rb.overflow {
		if len(rb.buf)+n > retryBodyBufferLimit {
			rb.overflow, rb.buf = true, nil
		} else {
			rb.buf = append(rb.buf, p[:n]...)
			v.pos += n
		}
	}
	if err == io.EOF && !rb.overflow {
		rb.eof = true
	}
	rb.mu.Unlock()
	return n, err
}

// Close is a no-op: the server closes the downstream body when the handler
// returns, and an attempt that gives up must not end the body for a retry.
func (v *bodyView) Close() error { return nil }

// flagsOrder is the order Envoy prints response flags in.
var flagsOrder = []string{"UH", "UT", "UF", "UC", "UO", "NR", "DI", "FI", "URX"}

// joinFlags joins response flags in Envoy's order.
func joinFlags(flags ...string) string {
	var b strings.Builder
	for _, f := range flagsOrder {
		for _, g := range flags {
			if g == f {
				if b.Len() > 0 {
					b.WriteByte(',')
				}
				b.WriteString(f)
				break
			}
		}
	}
	return b.String()
}

// sleepCtx waits d or until ctx ends; it reports whether d elapsed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// grpcStatusHeader is the grpc-status of a trailers-only response, or "".
func grpcStatusHeader(h http.Header) string {
	if v := h["Grpc-Status"]; len(v) > 0 {
		if _, err := strconv.Atoi(v[0]); err == nil {
			return v[0]
		}
	}
	return ""
}
