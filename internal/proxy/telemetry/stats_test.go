package telemetry

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"weft.dev/weft/internal/celexpr"
	"weft.dev/weft/internal/xds/contract"
)

type attrMap map[celexpr.Attr]string

func (a attrMap) Attr(x celexpr.Attr) (string, bool) { v, ok := a[x]; return v, ok }

// gathered returns the series of one metric family as label maps.
func gathered(t *testing.T, reg *prometheus.Registry, name string) []map[string]string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	var out []map[string]string
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			out = append(out, labelMap(m))
		}
	}
	return out
}

func labelMap(m *dto.Metric) map[string]string {
	l := map[string]string{}
	for _, p := range m.GetLabel() {
		l[p.GetName()] = p.GetValue()
	}
	return l
}

func testKey(m *Metrics) Key {
	src := m.InternSrc(SrcLabels{Workload: "web", Namespace: "shop", App: "web", Version: "v1"})
	dst := m.InternDst(DstLabels{Service: "cart.shop.svc.cluster.local", ServiceName: "cart", ServiceNamespace: "shop",
		Workload: "cart-v2", WorkloadNamespace: "shop", App: "cart", Version: "v2"})
	return Key{Src: src, Dst: dst, Code: 200}
}

// TestStatsOverrides: a dropped metric is not reported, a removed label
// is left out, a dimension is added from its expression ("unknown" when
// an attribute is absent) or replaces a standard label's value, and the
// standard and overridden series gather together without error.
func TestStatsOverrides(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	st, err := CompileStats(reg, contract.StatsConfig{Metrics: []contract.StatsMetric{
		{TagsToRemove: []string{"request_protocol"}}, // every metric
		{Name: contract.StatRequestBytes, Drop: true},
		{Name: contract.StatRequestsTotal, Dimensions: map[string]string{
			"user":                 "request.headers['x-user']",
			"destination_app":      "'_' + upstream_peer.app",
			"grpc_response_status": "'none'",
		}, TagsToRemove: []string{"grpc_response_status"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	k := testKey(m)
	m.RecordWith(st, k, attrMap{{ID: celexpr.RequestHeader, Key: "x-user"}: "alice", {ID: celexpr.UpstreamPeer, Key: "app"}: "cart"}, 3, 10, 20)
	m.RecordWith(st, k, attrMap{}, 3, 10, 20)  // no x-user, no peer
	m.Record(k, 3, 10, 20)                     // a listener without overrides
	m.RecordWith(nil, k, attrMap{}, 3, 10, 20) // the same

	reqs := gathered(t, reg, "istio_requests_total")
	if len(reqs) != 3 {
		t.Fatalf("istio_requests_total has %d series, want 3 (alice, unknown user, standard): %v", len(reqs), reqs)
	}
	var users []string
	for _, l := range reqs {
		if _, ok := l["user"]; !ok {
			if l["request_protocol"] != "http" || l["destination_app"] != "cart" {
				t.Errorf("standard series %v", l)
			}
			continue
		}
		users = append(users, l["user"]+"/"+l["destination_app"])
		if _, ok := l["request_protocol"]; ok {
			t.Errorf("request_protocol not removed: %v", l)
		}
		if _, ok := l["grpc_response_status"]; ok {
			t.Errorf("grpc_response_status: removed after its dimension in the same entry, still there: %v", l)
		}
	}
	if strings.Join(users, ",") != "alice/_cart,unknown/unknown" && strings.Join(users, ",") != "unknown/unknown,alice/_cart" {
		t.Errorf("users = %v", users)
	}
	if got := gathered(t, reg, "istio_request_bytes"); len(got) != 1 || got[0]["request_protocol"] != "http" {
		t.Errorf("istio_request_bytes = %v, want only the standard series (dropped where overridden)", got)
	}
	dur := gathered(t, reg, "istio_request_duration_milliseconds")
	if len(dur) != 2 {
		t.Errorf("istio_request_duration_milliseconds = %v, want the standard series and one without request_protocol", dur)
	}
}

// TestStatsStandardLabelsShareSeries: an override whose labels end up
// the standard ones records into the standard series.
func TestStatsStandardLabelsShareSeries(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	st, err := CompileStats(reg, contract.StatsConfig{Metrics: []contract.StatsMetric{{Name: contract.StatResponseBytes, Drop: false}}})
	if err != nil {
		t.Fatal(err)
	}
	k := testKey(m)
	m.RecordWith(st, k, attrMap{}, 1, 1, 1)
	m.Record(k, 1, 1, 1)
	if got := gathered(t, reg, "istio_response_bytes"); len(got) != 1 {
		t.Errorf("istio_response_bytes has %d series, want 1", len(got))
	}
}

// TestStatsTCP: TCP metrics dropped and relabelled per connection.
func TestStatsTCP(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	tm, err := NewTCPMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	st, err := CompileStats(reg, contract.StatsConfig{Metrics: []contract.StatsMetric{
		{Name: contract.StatTCPSentBytes, Drop: true},
		{Name: contract.StatTCPOpened, Dimensions: map[string]string{"port": "string(destination.port)"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	hk := testKey(m)
	s := tm.SeriesWith(st, TCPKey{Src: hk.Src, Dst: hk.Dst}, attrMap{{ID: celexpr.DestinationPort}: "5432"})
	s.Opened.Inc()
	s.Closed.Inc()
	s.Sent.Add(100)
	s.Received.Add(200)
	if got := gathered(t, reg, "istio_tcp_connections_opened_total"); len(got) != 1 || got[0]["port"] != "5432" {
		t.Errorf("opened = %v", got)
	}
	if got := gathered(t, reg, "istio_tcp_sent_bytes_total"); len(got) != 0 {
		t.Errorf("sent bytes reported though dropped: %v", got)
	}
	if got := gathered(t, reg, "istio_tcp_received_bytes_total"); len(got) != 1 {
		t.Errorf("received = %v", got)
	}
}

// TestCompileStatsErrors: the error names the entry and what is wrong.
func TestCompileStatsErrors(t *testing.T) {
	for _, c := range []struct {
		m    contract.StatsMetric
		want string
	}{
		{contract.StatsMetric{Dimensions: map[string]string{"user": "request.size"}}, `metrics[0].dimensions[user]: "request.size": column 1: unsupported attribute request.size`},
		{contract.StatsMetric{Dimensions: map[string]string{"bad-name": "'x'"}}, `metrics[0].dimensions: "bad-name" is not a Prometheus label name`},
	} {
		_, err := CompileStats(prometheus.NewRegistry(), contract.StatsConfig{Metrics: []contract.StatsMetric{c.m}})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("CompileStats(%+v) = %v, want %q", c.m, err, c.want)
		}
	}
}
