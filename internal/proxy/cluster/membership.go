package cluster

import (
	"bufio"
	"maps"
	"slices"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	"weft.dev/weft/internal/proxy/telemetry"
)

// Envoy's cluster membership gauges, computed when scraped from the
// clusters of the running configuration (StatVecs.SetCurrent), so they
// are exact whatever changed them: an EDS update, an ejection by outlier
// detection, a return from one.
const (
	membershipTotal   = "envoy_cluster_membership_total"
	membershipHealthy = "envoy_cluster_membership_healthy"
	helpTotal         = "Envoy cluster statistic membership_total: endpoints of the cluster."
	helpHealthy       = "Envoy cluster statistic membership_healthy: endpoints healthy per EDS and not ejected by outlier detection."
)

var (
	descMembershipTotal   = prometheus.NewDesc(membershipTotal, helpTotal, []string{NameLabel}, nil)
	descMembershipHealthy = prometheus.NewDesc(membershipHealthy, helpHealthy, []string{NameLabel}, nil)
)

// membership exports the membership gauges: as two families of a
// telemetry.Registry (FamilySource, written straight as text when a
// scrape is), or as a collector on another registry.
type membership struct {
	cur atomic.Pointer[members]
}

// members are the running clusters with a membership to report (every
// one but ORIGINAL_DST clusters, whose hosts are the destinations
// clients dial), by name and in name order.
type members struct {
	byName map[string]*Cluster
	names  []string
}

var (
	_ telemetry.TextFamilySource = (*membership)(nil)
	_ prometheus.Collector       = (*membership)(nil)
)

func newMembership() *membership { return &membership{} }

// SetCurrent tells the membership gauges which clusters run now, by
// name; clusters must not be modified afterwards. Called by the data
// plane after each configuration swap (from the goroutine that applies
// configurations).
func (v *StatVecs) SetCurrent(clusters map[string]*Cluster) {
	m := &members{byName: clusters}
	for _, n := range slices.Sorted(maps.Keys(clusters)) {
		if !clusters[n].IsOriginalDst() {
			m.names = append(m.names, n)
		}
	}
	v.members.cur.Store(m)
}

// each calls f with each running cluster's name, in name order, and its
// number of endpoints, all or the healthy ones.
func (m *membership) each(healthy bool, f func(name *string, v float64)) {
	cur := m.cur.Load()
	if cur == nil {
		return
	}
	for i := range cur.names {
		total, ok := cur.byName[cur.names[i]].Membership()
		if healthy {
			f(&cur.names[i], float64(ok))
		} else {
			f(&cur.names[i], float64(total))
		}
	}
}

// Names implements telemetry.FamilySource.
func (m *membership) Names() []string { return []string{membershipHealthy, membershipTotal} }

// Family implements telemetry.FamilySource.
func (m *membership) Family(name string) *dto.MetricFamily {
	if name != membershipHealthy && name != membershipTotal {
		return nil
	}
	out := &dto.MetricFamily{Name: proto.String(name), Type: dto.MetricType_GAUGE.Enum(), Help: proto.String(helpTotal)}
	if name == membershipHealthy {
		out.Help = proto.String(helpHealthy)
	}
	m.each(name == membershipHealthy, func(n *string, v float64) {
		out.Metric = append(out.Metric, &dto.Metric{Label: []*dto.LabelPair{{Name: nameLabel, Value: n}}, Gauge: &dto.Gauge{Value: &v}})
	})
	if len(out.Metric) == 0 {
		return nil
	}
	return out
}

// WriteFamilyText implements telemetry.TextFamilySource.
func (m *membership) WriteFamilyText(w *bufio.Writer, name string) bool {
	help := helpTotal
	switch name {
	case membershipTotal:
	case membershipHealthy:
		help = helpHealthy
	default:
		return false
	}
	pair := dto.LabelPair{Name: nameLabel}
	labels := []*dto.LabelPair{&pair}
	wrote := false
	m.each(name == membershipHealthy, func(n *string, v float64) {
		if !wrote {
			telemetry.WriteTextHeader(w, name, help, dto.MetricType_GAUGE)
			wrote = true
		}
		pair.Value = n
		telemetry.WriteTextSample(w, name, "", labels, false, 0, v)
	})
	return wrote
}

func (m *membership) Describe(ch chan<- *prometheus.Desc) {
	ch <- descMembershipTotal
	ch <- descMembershipHealthy
}

func (m *membership) Collect(ch chan<- prometheus.Metric) {
	cur := m.cur.Load()
	if cur == nil {
		return
	}
	for _, name := range cur.names {
		total, healthy := cur.byName[name].Membership()
		ch <- prometheus.MustNewConstMetric(descMembershipTotal, prometheus.GaugeValue, float64(total), name)
		ch <- prometheus.MustNewConstMetric(descMembershipHealthy, prometheus.GaugeValue, float64(healthy), name)
	}
}

// Membership returns the number of endpoints of the cluster and of those
// that may be picked: healthy per EDS and not ejected. Safe for
// concurrent use; O(endpoints).
func (c *Cluster) Membership() (total, healthy int) {
	if c.lazy != nil {
		if total, healthy, ok := c.lazy.membership(); ok {
			return total, healthy // not built yet, and not built for a scrape
		}
	}
	for _, e := range c.pick().endpoints {
		total++
		if e.available() {
			healthy++
		}
	}
	return total, healthy
}
