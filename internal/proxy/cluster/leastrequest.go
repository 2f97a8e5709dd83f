package cluster

import (
	"fmt"
	"math/big"
	"math/rand/v2"
	"sync/atomic"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
)

// leastRequest is Envoy's LEAST_REQUEST with equal weights: power of
// choice_count random choices (default 2), the one with the fewest requests
// in flight wins. With unequal weights the comparison is active/weight (as
// Envoy's active_request_bias 1.0 does via weight/(active+1)).
type leastRequest struct {
	endpoints []*Endpoint
	choices   int
}

var _ balancer = (*leastRequest)(nil)

func (p *leastRequest) pick(_ HashKey, ok func(*Endpoint) bool) *Endpoint {
	n := len(p.endpoints)
	if n == 0 {
		return nil
	}
	var best *Endpoint
	for range p.choices {
		e := p.endpoints[rand.IntN(n)]
		if !ok(e) || !e.accept() {
			continue
		}
		if best == nil || less(e, best) {
			best = e
		}
	}
	if best == nil {
		return randomAvailable(p.endpoints, ok)
	}
	return best
}

// less reports whether a is less loaded than b: (active+1)/weight.
func less(a, b *Endpoint) bool {
	return (a.active.Load()+1)*int64(max(b.weight, 1)) < (b.active.Load()+1)*int64(max(a.weight, 1))
}

// lbConfig is a cluster's lb_policy with its settings.
type lbConfig struct {
	policy      clusterv3.Cluster_LbPolicy
	choices     int    // LEAST_REQUEST choice_count
	minRing     uint64 // RING_HASH
	maxRing     uint64
	maglevTable uint64           // MAGLEV
	slowStart   *slowStartConfig // ROUND_ROBIN, LEAST_REQUEST; nil for none
}

// parseLBConfig reads lb_policy and its lb_config.
func parseLBConfig(c *clusterv3.Cluster) (lbConfig, error) {
	cfg := lbConfig{policy: c.GetLbPolicy(), choices: 2, minRing: defaultMinRingSize, maxRing: defaultMaxRingSize, maglevTable: defaultMaglevSize}
	switch cfg.policy {
	case clusterv3.Cluster_ROUND_ROBIN, clusterv3.Cluster_RANDOM:
	case clusterv3.Cluster_LEAST_REQUEST:
		if n := c.GetLeastRequestLbConfig().GetChoiceCount(); n != nil {
			if n.GetValue() < 2 {
				return cfg, fmt.Errorf("least_request_lb_config.choice_count: must be >= 2")
			}
			cfg.choices = int(min(n.GetValue(), 100))
		}
	case clusterv3.Cluster_RING_HASH:
		rh := c.GetRingHashLbConfig()
		if rh.GetHashFunction() != clusterv3.Cluster_RingHashLbConfig_XX_HASH {
			return cfg, fmt.Errorf("ring_hash_lb_config.hash_function: only XX_HASH")
		}
		if v := rh.GetMinimumRingSize(); v != nil {
			cfg.minRing = v.GetValue()
		}
		if v := rh.GetMaximumRingSize(); v != nil {
			cfg.maxRing = v.GetValue()
		}
		if cfg.minRing == 0 || cfg.minRing > defaultMaxRingSize || cfg.maxRing < cfg.minRing || cfg.maxRing > defaultMaxRingSize {
			return cfg, fmt.Errorf("ring_hash_lb_config: want 0 < minimum_ring_size <= maximum_ring_size <= %d", defaultMaxRingSize)
		}
	case clusterv3.Cluster_MAGLEV:
		if v := c.GetMaglevLbConfig().GetTableSize(); v != nil {
			cfg.maglevTable = v.GetValue()
		}
		if cfg.maglevTable > 5000011 || !big.NewInt(int64(cfg.maglevTable)).ProbablyPrime(0) {
			return cfg, fmt.Errorf("maglev_lb_config.table_size: %d must be a prime <= 5000011", cfg.maglevTable)
		}
	default:
		return cfg, fmt.Errorf("lb_policy: %s is unsupported", cfg.policy)
	}
	var err error
	if cfg.slowStart, err = parseSlowStart(c); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// newBalancer builds the balancer for one priority's healthy endpoints.
func (c lbConfig) newBalancer(eps []*Endpoint, next *atomic.Uint64) balancer {
	switch c.policy {
	case clusterv3.Cluster_RANDOM:
		return newRandom(eps)
	case clusterv3.Cluster_LEAST_REQUEST:
		return &leastRequest{endpoints: eps, choices: c.choices}
	case clusterv3.Cluster_RING_HASH:
		return newRingHash(eps, c.minRing, c.maxRing)
	case clusterv3.Cluster_MAGLEV:
		return newMaglev(eps, c.maglevTable)
	default:
		return newRoundRobin(eps, next)
	}
}
