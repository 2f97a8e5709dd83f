package cluster

import (
	"strconv"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"

	"weft.dev/weft/internal/proxy/proxytest"
	"weft.dev/weft/internal/proxy/telemetry"
	"weft.dev/weft/internal/xds/contract"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	cla        = proxytest.CLA
	edsCluster = proxytest.EDSCluster
	istioOD    = proxytest.IstioOutlierDetection
	thresholds = proxytest.Thresholds
)

type ep = proxytest.Endpoint

// testBuilder is a Builder with its own registry.
func testBuilder(t testing.TB) *Builder {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := telemetry.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewStatVecs(reg)
	if err != nil {
		t.Fatal(err)
	}
	return &Builder{Metrics: m, Stats: s, Identity: contract.Identity{WorkloadName: "w", Namespace: "ns"}}
}

// testStats is a fresh counter set of cluster name.
func testStats(t *testing.T, name string) *Stats {
	t.Helper()
	v, err := NewStatVecs(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return v.For(name)
}

// metricValue reads one counter or gauge.
func metricValue(m any) float64 {
	switch m := m.(type) {
	case *Counter:
		return m.Value()
	case *Gauge:
		return m.Value()
	}
	var out dto.Metric
	if err := m.(prometheus.Metric).Write(&out); err != nil {
		panic(err)
	}
	if out.Counter != nil {
		return out.Counter.GetValue()
	}
	return out.Gauge.GetValue()
}

func itoa(i int) string { return strconv.Itoa(i) }

// refOf is a statRef whose counter set is s.
func refOf(s *Stats) *statRef {
	r := &statRef{name: s.clusterNm}
	r.s.Store(s)
	return r
}
