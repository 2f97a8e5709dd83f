package cluster

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
)

// Slow start (Cluster.{round_robin,least_request}_lb_config.slow_start_config,
// Istio's warmup): an endpoint new to the cluster gets a growing share of
// its weight for slow_start_window, as Envoy computes it:
//
//	factor = max(min_weight_percent/100, (max(secondsSinceAdded, 1)/window)^(1/aggression))
//
// The balancers apply the factor by rejection: a warming endpoint the
// schedule (round robin) or a random choice (least request) lands on is
// taken with probability factor, so its share of picks scales with it.
// When an endpoint was first seen lives in the cluster's state, so endpoint
// updates that keep it do not restart its warmup; every endpoint of a new
// cluster starts warming together, which (as in Envoy) changes nothing.

// slowStartConfig is a parsed slow_start_config.
type slowStartConfig struct {
	window     time.Duration
	aggression float64
	minFactor  float64
}

// parseSlowStart reads the policy's slow_start_config; nil when absent.
func parseSlowStart(c *clusterv3.Cluster) (*slowStartConfig, error) {
	var ss *clusterv3.Cluster_SlowStartConfig
	switch c.GetLbPolicy() {
	case clusterv3.Cluster_ROUND_ROBIN:
		ss = c.GetRoundRobinLbConfig().GetSlowStartConfig()
	case clusterv3.Cluster_LEAST_REQUEST:
		ss = c.GetLeastRequestLbConfig().GetSlowStartConfig()
	}
	if ss == nil || ss.GetSlowStartWindow() == nil {
		return nil, nil
	}
	if err := ss.GetSlowStartWindow().CheckValid(); err != nil {
		return nil, fmt.Errorf("slow_start_config.slow_start_window: %w", err)
	}
	cfg := &slowStartConfig{window: ss.GetSlowStartWindow().AsDuration(), aggression: 1, minFactor: 0.1}
	if cfg.window <= 0 {
		return nil, nil
	}
	if a := ss.GetAggression(); a != nil {
		if a.GetDefaultValue() <= 0 {
			return nil, fmt.Errorf("slow_start_config.aggression: must be > 0")
		}
		cfg.aggression = a.GetDefaultValue()
	}
	if m := ss.GetMinWeightPercent(); m != nil {
		if m.GetValue() < 0 || m.GetValue() > 100 {
			return nil, fmt.Errorf("slow_start_config.min_weight_percent: want 0..100")
		}
		cfg.minFactor = m.GetValue() / 100
	}
	return cfg, nil
}

// warming is one endpoint's slow start state.
type warming struct {
	cfg   *slowStartConfig
	added time.Time
	done  atomic.Bool // the window has passed: full weight from now on
}

// factor is the share of its weight the endpoint gets now, in (0, 1].
func (w *warming) factor(now time.Time) float64 {
	since := now.Sub(w.added)
	if since >= w.cfg.window {
		w.done.Store(true)
		return 1
	}
	t := max(since.Seconds(), 1) / w.cfg.window.Seconds()
	return min(1, max(w.cfg.minFactor, math.Pow(t, 1/w.cfg.aggression)))
}

// accept reports whether a pick that landed on e stands: always, unless e
// is warming, then with probability factor.
func (e *Endpoint) accept() bool {
	w := e.warm
	if w == nil || w.done.Load() {
		return true
	}
	return rand.Float64() < w.factor(time.Now())
}

// warmTracker remembers when each endpoint address joined the cluster.
type warmTracker struct {
	mu    sync.Mutex
	added map[string]time.Time
}

// attach gives each endpoint its warmup state (cfg nil: none) and forgets
// addresses that left. Called when translating, not on the request path.
func (t *warmTracker) attach(eps []*Endpoint, cfg *slowStartConfig) {
	if cfg == nil {
		return
	}
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.added == nil {
		t.added = map[string]time.Time{}
	}
	keep := make(map[string]time.Time, len(eps))
	for _, e := range eps {
		at, ok := t.added[e.addr]
		if !ok {
			at = now
		}
		keep[e.addr] = at
		if now.Sub(at) < cfg.window {
			e.warm = &warming{cfg: cfg, added: at}
		}
	}
	t.added = keep
}
