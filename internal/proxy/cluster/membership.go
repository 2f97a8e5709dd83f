package cluster

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Envoy's cluster membership gauges, computed when scraped from the
// clusters of the running configuration (StatVecs.SetCurrent), so they
// are exact whatever changed them: an EDS update, an ejection by outlier
// detection, a return from one.
var (
	descMembershipTotal = prometheus.NewDesc("envoy_cluster_membership_total",
		"Envoy cluster statistic membership_total: endpoints of the cluster.", []string{NameLabel}, nil)
	descMembershipHealthy = prometheus.NewDesc("envoy_cluster_membership_healthy",
		"Envoy cluster statistic membership_healthy: endpoints healthy per EDS and not ejected by outlier detection.", []string{NameLabel}, nil)
)

// membership is the collector of the membership gauges.
type membership struct {
	cur atomic.Pointer[map[string]*Cluster]
}

func newMembership() *membership { return &membership{} }

func (m *membership) Describe(ch chan<- *prometheus.Desc) {
	ch <- descMembershipTotal
	ch <- descMembershipHealthy
}

func (m *membership) Collect(ch chan<- prometheus.Metric) {
	p := m.cur.Load()
	if p == nil {
		return
	}
	for name, c := range *p {
		if c.IsOriginalDst() {
			continue // its hosts are the destinations clients dial: no membership to report
		}
		total, healthy := c.Membership()
		ch <- prometheus.MustNewConstMetric(descMembershipTotal, prometheus.GaugeValue, float64(total), name)
		ch <- prometheus.MustNewConstMetric(descMembershipHealthy, prometheus.GaugeValue, float64(healthy), name)
	}
}

// SetCurrent tells the membership gauges which clusters run now, by
// name; clusters must not be modified afterwards. Called by the data
// plane after each configuration swap (from the goroutine that applies
// configurations).
func (v *StatVecs) SetCurrent(clusters map[string]*Cluster) {
	v.members.cur.Store(&clusters)
}

// Membership returns the number of endpoints of the cluster and of those
// that may be picked: healthy per EDS and not ejected. Safe for
// concurrent use; O(endpoints).
func (c *Cluster) Membership() (total, healthy int) {
	for _, e := range c.pick().endpoints {
		total++
		if e.available() {
			healthy++
		}
	}
	return total, healthy
}
