package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// Circuit breaking: Cluster.circuit_breakers (the DEFAULT priority
// thresholds), enforced as Envoy's resource manager does.
//
//   - max_requests bounds the requests in flight to the cluster (every
//     protocol).
//   - max_connections bounds the HTTP/1.1 connections in use: one request
//     per connection, so it is the upstream concurrency. A request that finds
//     every connection busy waits in the pending queue (upstream_cx_overflow
//     counts that the limit was hit), bounded by max_pending_requests.
//   - max_retries bounds the retries in flight.
//   - a TCP proxy's upstream connections count against max_connections
//     too (AdmitConn); past it the downstream connection is closed (UO).
//
// Past a limit the request is not queued: it overflows (answered at once
// with 503 and response flag UO; upstream_rq_pending_overflow, or
// upstream_rq_retry_overflow for a retry, which is then not made).
//
// The breaker lives in the cluster's state, so its in-flight counts survive
// updates that leave the Cluster unchanged. No lock: atomics and, only when
// max_connections is finite, a channel used as a semaphore.

// Envoy's thresholds when circuit_breakers (or a field of it) is absent.
const (
	envoyDefaultMaxConnections     = 1024
	envoyDefaultMaxPendingRequests = 1024
	envoyDefaultMaxRequests        = 1024
	envoyDefaultMaxRetries         = 3
	// maxSlots bounds the semaphore channel's buffer; larger finite
	// max_connections are treated as unlimited.
	maxSlots = 1 << 16
)

// ErrOverflow is Admit's error when a circuit breaker limit is reached.
var ErrOverflow = errors.New("upstream overflow")

// Breaker is a cluster's circuit breakers: its counts of requests,
// pending requests, connections and retries in flight against their
// limits. Safe for concurrent use; lock-free unless max_connections is
// finite and reached.
type Breaker struct {
	stats                               *statRef // allocated at the first count
	maxRequests, maxPending, maxRetries int64
	// slots holds one token per HTTP/1.1 connection in use; nil when the
	// connections are not limited (h2c clusters, or no finite limit).
	slots                    chan struct{}
	active, pending, retries atomic.Int64
}

// newBreaker reads circuit_breakers. h2 clusters multiplex, so
// max_connections and max_pending_requests do not bound their requests.
func newBreaker(c *clusterv3.Cluster, h2 bool, stats *statRef) (*Breaker, error) {
	b := &Breaker{stats: stats, maxRequests: envoyDefaultMaxRequests, maxPending: envoyDefaultMaxPendingRequests, maxRetries: envoyDefaultMaxRetries}
	maxConns := int64(envoyDefaultMaxConnections)
	for i, t := range c.GetCircuitBreakers().GetThresholds() {
		if t.GetPriority() != core.RoutingPriority_DEFAULT {
			continue // only the default priority is used by routes
		}
		if t.GetRetryBudget() != nil {
			return nil, fmt.Errorf("circuit_breakers.thresholds[%d].retry_budget: unsupported", i)
		}
		if v := t.GetMaxConnections(); v != nil {
			maxConns = int64(v.GetValue())
		}
		if v := t.GetMaxPendingRequests(); v != nil {
			b.maxPending = int64(v.GetValue())
		}
		if v := t.GetMaxRequests(); v != nil {
			b.maxRequests = int64(v.GetValue())
		}
		if v := t.GetMaxRetries(); v != nil {
			b.maxRetries = int64(v.GetValue())
		}
	}
	if !h2 && maxConns < maxSlots {
		b.slots = make(chan struct{}, max(maxConns, 0))
	}
	return b, nil
}

// Admission is one admitted upstream attempt; Release it when the attempt
// is over (its response streamed, or abandoned for a retry). The zero value
// releases nothing.
type Admission struct {
	b    *Breaker
	slot bool
}

// Admit reserves room for one attempt. When every HTTP/1.1 connection is
// busy it waits in the pending queue until one frees up or ctx ends (then it
// returns ctx's error). It returns ErrOverflow, having counted it, when a
// limit is reached: the caller answers 503 UO. Safe for concurrent use.
func (b *Breaker) Admit(ctx context.Context) (Admission, error) {
	if n := b.active.Add(1); n > b.maxRequests {
		b.active.Add(-1)
		b.stats.get().CbRqOpen.Set(1)
		b.stats.get().RqPendingOverflow.Inc()
		return Admission{}, ErrOverflow
	} else if n == b.maxRequests {
		b.stats.get().CbRqOpen.Set(1)
	}
	b.stats.get().RqActive.Inc()
	a := Admission{b: b}
	if b.slots == nil {
		return a, nil
	}
	select {
	case b.slots <- struct{}{}:
		a.slot = true
		if len(b.slots) == cap(b.slots) {
			b.stats.get().CbCxOpen.Set(1)
		}
		return a, nil
	default:
	}
	// Every connection is busy: Envoy counts the connection overflow and
	// queues the request, if the pending queue has room.
	b.stats.get().CxOverflow.Inc()
	b.stats.get().CbCxOpen.Set(1)
	if n := b.pending.Add(1); n > b.maxPending {
		b.pending.Add(-1)
		b.stats.get().CbRqPendingOpen.Set(1)
		b.stats.get().RqPendingOverflow.Inc()
		a.Release()
		return Admission{}, ErrOverflow
	} else if n == b.maxPending {
		b.stats.get().CbRqPendingOpen.Set(1)
	}
	b.stats.get().RqPendingTotal.Inc()
	b.stats.get().RqPendingActive.Inc()
	defer func() {
		if b.pending.Add(-1) == b.maxPending-1 { // the gauges change on transitions only
			b.stats.get().CbRqPendingOpen.Set(0)
		}
		b.stats.get().RqPendingActive.Dec()
	}()
	select {
	case b.slots <- struct{}{}:
		a.slot = true
		if len(b.slots) == cap(b.slots) {
			b.stats.get().CbCxOpen.Set(1)
		}
		return a, nil
	case <-ctx.Done():
		a.Release()
		return Admission{}, ctx.Err()
	}
}

// AdmitConn reserves one of max_connections for a TCP proxy's upstream
// connection, without waiting (Envoy's tcp_proxy does not queue): false,
// counted as upstream_cx_overflow, when every connection is in use; the
// caller closes the downstream connection (response flag UO). Call
// release once the upstream connection is closed. Safe for concurrent
// use; nil b admits everything.
func (b *Breaker) AdmitConn() (release func(), ok bool) {
	if b == nil || b.slots == nil {
		return func() {}, true
	}
	select {
	case b.slots <- struct{}{}:
		if len(b.slots) == cap(b.slots) {
			b.stats.get().CbCxOpen.Set(1)
		}
		var once sync.Once
		return func() {
			once.Do(func() {
				<-b.slots
				if len(b.slots) == cap(b.slots)-1 {
					b.stats.get().CbCxOpen.Set(0)
				}
			})
		}, true
	default:
		b.stats.get().CxOverflow.Inc()
		b.stats.get().CbCxOpen.Set(1)
		return nil, false
	}
}

// Release ends the attempt. Idempotent.
func (a *Admission) Release() {
	b := a.b
	if b == nil {
		return
	}
	a.b = nil
	if a.slot {
		<-b.slots
		if len(b.slots) == cap(b.slots)-1 {
			b.stats.get().CbCxOpen.Set(0)
		}
	}
	if b.active.Add(-1) == b.maxRequests-1 {
		b.stats.get().CbRqOpen.Set(0)
	}
	b.stats.get().RqActive.Dec()
}

// RetryTokens are the retries one request holds against max_retries; they
// are given back (Release) when the request ends. The zero value holds
// none. Not safe for concurrent use: it belongs to one request.
type RetryTokens struct {
	b *Breaker
	n int64
}

// Take reserves one more retry against b. false means the retry must not be made
// (counted as upstream_rq_retry_overflow): the request ends with the last
// attempt's outcome.
func (t *RetryTokens) Take(b *Breaker) bool {
	if n := b.retries.Add(1); n > b.maxRetries {
		b.retries.Add(-1)
		b.stats.get().CbRqRetryOpen.Set(1)
		b.stats.get().RqRetryOverflow.Inc()
		return false
	} else if n == b.maxRetries {
		b.stats.get().CbRqRetryOpen.Set(1)
	}
	t.b = b
	t.n++
	return true
}

// Release gives the retries back. Idempotent.
func (t *RetryTokens) Release() {
	if b := t.b; b != nil && t.n > 0 {
		if after := b.retries.Add(-t.n); after < b.maxRetries && after+t.n >= b.maxRetries {
			b.stats.get().CbRqRetryOpen.Set(0)
		}
		t.n = 0
	}
}

// configureState gives new state its circuit breakers and outlier
// detector before any request uses it. Called while translating.
func configureState(p *state, c *clusterv3.Cluster, stats *statRef) error {
	var err error
	if p.breaker, err = newBreaker(c, p.up.HTTP2(), stats); err != nil {
		return err
	}
	odc, err := parseOutlierDetection(c)
	if err != nil {
		return err
	}
	if odc != nil {
		p.outlier = newOutlierDetector(odc, stats)
	}
	return nil
}
