package cluster

import (
	"bufio"
	"io"
	"slices"
	"strconv"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"weft.dev/weft/internal/proxy/telemetry"
)

// TestStatsExposition checks what a scrape shows of the counter sets:
// every statistic of every cluster seen, zeros included, under Envoy's
// names, as when each was a Prometheus child of its own; the histogram
// of a cluster that never sent a request scrapes as an empty histogram.
// It runs on a prometheus.Registry (Collect) and on a telemetry.Registry
// (families built one at a time, as the proxy's admin endpoint scrapes).
func TestStatsExposition(t *testing.T) {
	for _, c := range []struct {
		name string
		reg  interface {
			prometheus.Registerer
			prometheus.Gatherer
		}
	}{
		{"prometheus.Registry", prometheus.NewPedanticRegistry()},
		{"telemetry.Registry", telemetry.NewRegistry()},
	} {
		t.Run(c.name, func(t *testing.T) { testStatsExposition(t, c.reg) })
	}
}

func testStatsExposition(t *testing.T, reg interface {
	prometheus.Registerer
	prometheus.Gatherer
}) {
	v, err := NewStatVecs(reg)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := NewStatVecs(reg); err != nil || again != v {
		t.Fatalf("a second NewStatVecs on the registry = %p, %v; want the first, %p", again, err, v)
	}
	// b is a cluster that never carried a request: its set is not
	// allocated, and it scrapes as zeros all the same.
	used, idle := v.For("outbound|80||a"), v.ref("outbound|80||b")
	if v.For("outbound|80||a") != used {
		t.Fatal("For returned a new set for a name seen before")
	}
	defer func() {
		if idle.s.Load() != nil {
			t.Error("scraping allocated the counter set of a cluster that counted nothing")
		}
	}()
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
	for _, name := range []string{used.clusterNm, idle.name} {
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

// BenchmarkScrapeClusterStats scrapes the statistics of 3,000 clusters
// (a sidecar of a 1,000-service mesh) as text to io.Discard, one scrape
// per op: through a prometheus.Registry's Gather (every series at once)
// and through a telemetry.Registry's GatherEach (one family at a time, as
// the admin endpoint does). Bytes and allocations per scrape are what a
// scrape costs; the peak is in the heap profile of bench/memory.sh.
func BenchmarkScrapeClusterStats(b *testing.B) {
	for _, c := range []struct {
		name string
		reg  interface {
			prometheus.Registerer
			prometheus.Gatherer
		}
	}{{"Gather", prometheus.NewRegistry()}, {"GatherEach", telemetry.NewRegistry()}} {
		b.Run(c.name, func(b *testing.B) {
			v, err := NewStatVecs(c.reg)
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
			each := func(emit func(*dto.MetricFamily) error) error {
				fams, err := c.reg.Gather()
				for _, f := range fams {
					if err := emit(f); err != nil {
						return err
					}
				}
				return err
			}
			if r, ok := c.reg.(*telemetry.Registry); ok {
				each = r.GatherEach
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := each(func(f *dto.MetricFamily) error {
					_, err := expfmt.MetricFamilyToText(io.Discard, f)
					return err
				}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestStatsFamiliesMatchCollect checks that the families a
// telemetry.Registry builds one at a time for a scrape are those Collect
// sends through a prometheus.Registry, line for line in the text format.
func TestStatsFamiliesMatchCollect(t *testing.T) {
	reg := telemetry.NewRegistry()
	v, err := NewStatVecs(reg)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := NewStatVecs(reg); err != nil || again != v {
		t.Fatalf("a second NewStatVecs on the registry = %p, %v; want the first, %p", again, err, v)
	}
	collected := prometheus.NewPedanticRegistry()
	collected.MustRegister(v)
	text := func(fams []*dto.MetricFamily) string {
		var b strings.Builder
		for _, f := range fams {
			if !slices.Contains(v.Names(), f.GetName()) {
				continue
			}
			if _, err := expfmt.MetricFamilyToText(&b, f); err != nil {
				t.Fatal(err)
			}
		}
		return b.String()
	}
	// No cluster yet: neither shows a family of the sets.
	if got := text(must(reg.Gather())); got != "" {
		t.Errorf("no cluster: the registry shows\n%s", got)
	}
	for i := range 30 {
		s := v.For("outbound|8080|v" + strconv.Itoa(i%3) + "|svc-" + strconv.Itoa(29-i) + ".ns.svc.cluster.local")
		for range i % 4 {
			s.RqTotal.Inc()
			s.RqTime.Observe(float64(i))
			s.Response(200 + 100*(i%4))
		}
		s.CxActive.Set(float64(i))
	}
	want, got := text(must(collected.Gather())), text(must(reg.Gather()))
	if want != got {
		t.Errorf("families built one at a time differ from Collect's:\n got %d bytes\nwant %d bytes", len(got), len(want))
		gl, wl := strings.Split(got, "\n"), strings.Split(want, "\n")
		for i := range min(len(gl), len(wl)) {
			if gl[i] != wl[i] {
				t.Fatalf("first difference, line %d:\n got %s\nwant %s", i+1, gl[i], wl[i])
			}
		}
	}
	if n := strings.Count(got, "\n"); n < 30*59 {
		t.Errorf("%d lines; want at least %d (59 series per cluster)", n, 30*59)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestMembershipFamiliesMatchCollect: the membership gauges are the same
// whether collected (a plain registry), built as families or written
// straight as text, in name order, and leave ORIGINAL_DST clusters out.
func TestMembershipFamiliesMatchCollect(t *testing.T) {
	b := testBuilder(t)
	reg := telemetry.NewRegistry()
	v, err := NewStatVecs(reg)
	if err != nil {
		t.Fatal(err)
	}
	running := map[string]*Cluster{}
	for i := range 12 {
		name := "outbound|80||svc-" + itoa(11-i) + ".ns.svc.cluster.local"
		var es []ep
		for j := range i % 4 {
			h := corev3.HealthStatus_HEALTHY
			if j == 1 {
				h = corev3.HealthStatus_UNHEALTHY
			}
			es = append(es, ep{Addr: "10.0.0." + itoa(j+1) + ":80", Health: h})
		}
		ct, err := b.Build(edsCluster(t, name, false, ""), map[string]*endpointv3.ClusterLoadAssignment{name: cla(name, es...)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		running[name] = ct
	}
	od, err := b.Build(&clusterv3.Cluster{Name: "PassthroughCluster", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbPolicy: clusterv3.Cluster_CLUSTER_PROVIDED}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	running[od.Name()] = od
	v.SetCurrent(running)

	collected := prometheus.NewPedanticRegistry()
	collected.MustRegister(v.members)
	var want strings.Builder
	for _, f := range must(collected.Gather()) {
		if _, err := expfmt.MetricFamilyToText(&want, f); err != nil {
			t.Fatal(err)
		}
	}
	var built, written strings.Builder
	w := bufio.NewWriter(&written)
	for _, n := range v.members.Names() {
		if _, err := expfmt.MetricFamilyToText(&built, v.members.Family(n)); err != nil {
			t.Fatal(err)
		}
		if !v.members.WriteFamilyText(w, n) {
			t.Errorf("WriteFamilyText(%s) wrote nothing", n)
		}
	}
	w.Flush()
	if built.String() != want.String() || written.String() != want.String() {
		t.Errorf("collected:\n%s\nbuilt:\n%s\nwritten:\n%s", want.String(), built.String(), written.String())
	}
	if n := strings.Count(want.String(), "\n"); n != 2*(12+2) {
		t.Errorf("%d lines, want two families of 12 clusters:\n%s", n, want.String())
	}
	if strings.Contains(want.String(), "PassthroughCluster") || !strings.Contains(want.String(), `envoy_cluster_membership_healthy{envoy_cluster_name="outbound|80||svc-0.ns.svc.cluster.local"} 2`) {
		t.Errorf("unexpected membership:\n%s", want.String())
	}
}
