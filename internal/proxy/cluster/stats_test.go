package cluster

import (
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"weft.dev/weft/internal/proxy/telemetry"
)

// TestStatsExposition checks what a scrape shows of the counter sets:
// every statistic of every cluster seen, zeros included, under Envoy's
// names, as when each was a Prometheus child of its own; the histogram
// of a cluster that never sent a request scrapes as an empty histogram.
func TestStatsExposition(t *testing.T) {
	reg := prometheus.NewRegistry()
	v, err := NewStatVecs(reg)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := NewStatVecs(reg); err != nil || again != v {
		t.Fatalf("a second NewStatVecs on the registry = %p, %v; want the first, %p", again, err, v)
	}
	used, idle := v.For("outbound|80||a"), v.For("outbound|80||b")
	if v.For("outbound|80||a") != used {
		t.Fatal("For returned a new set for a name seen before")
	}
	used.RqTotal.Inc()
	used.RqTotal.Inc()
	used.RqActive.Inc()
	used.RqActive.Dec()
	used.CxActive.Set(3)
	used.CxActive.Sub(1)
	used.RqTime.Observe(12)
	used.Response(503)

	fams, err := reg.Gather() // with the registry's checks of descriptions and labels
	if err != nil {
		t.Fatal(err)
	}
	series := map[string]map[string]float64{} // family -> labels -> value (histograms: their count)
	for _, f := range fams {
		series[f.GetName()] = map[string]float64{}
		for _, m := range f.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			val := m.GetCounter().GetValue() + m.GetGauge().GetValue() + float64(m.GetHistogram().GetSampleCount())
			series[f.GetName()][strings.Join(ls, ",")] = val
		}
	}
	for _, name := range []string{used.clusterNm, idle.clusterNm} {
		for _, n := range slices.Concat(clusterCounterNames, clusterGaugeNames, []string{"upstream_rq_time"}) {
			if _, ok := series["envoy_cluster_"+n][NameLabel+"="+name]; !ok {
				t.Errorf("no envoy_cluster_%s{%s=%q}", n, NameLabel, name)
			}
		}
		for _, c := range []string{"1", "2", "3", "4", "5"} {
			if _, ok := series["envoy_cluster_upstream_rq_xx"][NameLabel+"="+name+",envoy_response_code_class="+c]; !ok {
				t.Errorf("no envoy_cluster_upstream_rq_xx for %s, class %s", name, c)
			}
		}
	}
	for _, c := range []struct {
		family, labels string
		want           float64
	}{
		{"envoy_cluster_upstream_rq_total", NameLabel + "=outbound|80||a", 2},
		{"envoy_cluster_upstream_rq_total", NameLabel + "=outbound|80||b", 0},
		{"envoy_cluster_upstream_rq_active", NameLabel + "=outbound|80||a", 0},
		{"envoy_cluster_upstream_cx_active", NameLabel + "=outbound|80||a", 2},
		{"envoy_cluster_upstream_rq_time", NameLabel + "=outbound|80||a", 1},
		{"envoy_cluster_upstream_rq_time", NameLabel + "=outbound|80||b", 0},
		{"envoy_cluster_upstream_rq_xx", NameLabel + "=outbound|80||a,envoy_response_code_class=5", 1},
		{"envoy_cluster_upstream_rq", NameLabel + "=outbound|80||a,envoy_response_code=503", 1},
	} {
		if got, ok := series[c.family][c.labels]; !ok || got != c.want {
			t.Errorf("%s{%s} = %v (present: %v), want %v", c.family, c.labels, got, ok, c.want)
		}
	}
	// The empty histogram has every bucket of a used one.
	for _, f := range fams {
		if f.GetName() != "envoy_cluster_upstream_rq_time" {
			continue
		}
		for _, m := range f.GetMetric() {
			if n := len(m.GetHistogram().GetBucket()); n != len(telemetry.Buckets) {
				t.Errorf("upstream_rq_time of %v: %d buckets, want %d", m.GetLabel(), n, len(telemetry.Buckets))
			}
		}
	}
}

// BenchmarkScrapeClusterStats gathers the statistics of 3,000 clusters
// (a sidecar of a 1,000-service mesh), one scrape per op: bytes and
// allocations per scrape are what a scrape costs the sidecar's memory.
// The RSS of the clusters' sets is in the heap profile of bench/memory.sh.
func BenchmarkScrapeClusterStats(b *testing.B) {
	reg := prometheus.NewRegistry()
	v, err := NewStatVecs(reg)
	if err != nil {
		b.Fatal(err)
	}
	for i := range 3000 {
		s := v.For("outbound|8080|v" + strconv.Itoa(i%3) + "|svc-" + strconv.Itoa(i/3) + ".ns.svc.cluster.local")
		if i%100 == 0 {
			s.RqTotal.Inc()
			s.RqTime.Observe(1)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := reg.Gather(); err != nil {
			b.Fatal(err)
		}
	}
}
