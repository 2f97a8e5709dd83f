package globalratelimit

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Stats are the global rate limit filters' counters, Envoy's
// cluster.<route target cluster>.ratelimit.{ok,over_limit,error,
// failure_mode_allowed}, in Prometheus form as the proxy's other cluster
// stats (cluster.NameLabel): envoy_cluster_ratelimit_ok{envoy_cluster_name="outbound|9080||reviews…"}.
// Registered once per proxy; safe for concurrent use.
type Stats struct {
	vecs      [4]*prometheus.CounterVec
	byCluster sync.Map // cluster name -> *clusterStats: no lock on the request path once seen
}

// Stat indexes, in statNames order.
const (
	statOK = iota
	statOverLimit
	statError
	statFailureModeAllowed
)

var statNames = [4]struct{ name, help string }{
	{"ok", "Requests the rate limit service answered under the limit."},
	{"over_limit", "Requests the rate limit service answered over the limit."},
	{"error", "Requests for which the rate limit service could not be asked or answered with an error."},
	{"failure_mode_allowed", "Requests let through after an error because failure_mode_deny is false."},
}

// nameLabel is cluster.NameLabel (the filter does not import the
// cluster package).
const nameLabel = "envoy_cluster_name"

// NewStats registers the counters with reg.
func NewStats(reg prometheus.Registerer) (*Stats, error) {
	s := &Stats{}
	for i, n := range statNames {
		s.vecs[i] = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "envoy_cluster_ratelimit_" + n.name, Help: n.help}, []string{nameLabel})
		if err := reg.Register(s.vecs[i]); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// clusterStats are one cluster's counters; nil counts nothing.
type clusterStats struct {
	c [4]prometheus.Counter
}

// forCluster returns the counters labelled name, creating them. A
// cluster's counters stay once created (they are few: one set per route
// target cluster the filter has asked for).
func (s *Stats) forCluster(name string) *clusterStats {
	if s == nil {
		return nil
	}
	if c, ok := s.byCluster.Load(name); ok {
		return c.(*clusterStats)
	}
	c := &clusterStats{}
	for i, v := range s.vecs {
		c.c[i] = v.WithLabelValues(name)
	}
	actual, _ := s.byCluster.LoadOrStore(name, c)
	return actual.(*clusterStats)
}

func (c *clusterStats) inc(i int) {
	if c != nil {
		c.c[i].Inc()
	}
}
