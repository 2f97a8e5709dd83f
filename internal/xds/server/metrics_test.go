package server

import (
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
)

// TestPilotMetrics: istiod's metric names count what the server did —
// responses sent by type, open connections, rejections by type — and a
// push is measured from the mesh change to the proxy's ACK.
func TestPilotMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	s, addr := start(t, Options{Metrics: reg, Debounce: time.Millisecond, DebounceMax: 10 * time.Millisecond})
	s.Update(testMesh(2))
	ctx := withDeadline(t)
	c := dial(t, ctx, addr, client.Node())
	got := c.sync()

	value := func(name string, labels map[string]string) float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
		next:
			for _, m := range mf.GetMetric() {
				have := map[string]string{}
				for _, lp := range m.GetLabel() {
					have[lp.GetName()] = lp.GetValue()
				}
				for k, v := range labels {
					if have[k] != v {
						continue next
					}
				}
				switch {
				case m.Counter != nil:
					return m.GetCounter().GetValue()
				case m.Gauge != nil:
					return m.GetGauge().GetValue()
				case m.Histogram != nil:
					return float64(m.GetHistogram().GetSampleCount())
				}
			}
		}
		return -1
	}
	for _, typ := range []string{"lds", "rds", "cds", "eds"} {
		if v := value("pilot_xds_pushes", map[string]string{"type": typ}); v != 1 {
			t.Errorf("pilot_xds_pushes{type=%q} = %v, want 1", typ, v)
		}
	}
	if v := value("pilot_xds", nil); v != 1 {
		t.Errorf("pilot_xds = %v, want 1", v)
	}
	if v := value("pilot_proxy_convergence_time", nil); v != 0 {
		t.Errorf("pilot_proxy_convergence_time count = %v after connecting, want 0 (no config change yet)", v)
	}

	// An endpoint change: EDS is pushed; once ACKed, the proxy converged.
	s.Update(testMesh(3))
	eds := c.expect(resource.EndpointType)
	if v := value("pilot_proxy_convergence_time", nil); v != 0 {
		t.Errorf("convergence observed before the ACK: count %v", v)
	}
	c.request(resource.EndpointType, c.subs[resource.EndpointType], eds)
	waitFor(t, ctx, "convergence observed", func() bool { return value("pilot_proxy_convergence_time", nil) == 1 })
	if v := value("pilot_xds_pushes", map[string]string{"type": "eds"}); v != 2 {
		t.Errorf("pilot_xds_pushes{type=eds} = %v, want 2", v)
	}

	// Another change, NACKed: counted by type, and no convergence.
	s.Update(testMesh(4))
	eds = c.expect(resource.EndpointType)
	if err := c.stream.Send(&discovery.DiscoveryRequest{TypeUrl: resource.EndpointType, ResourceNames: c.subs[resource.EndpointType],
		VersionInfo: got[resource.EndpointType].GetVersionInfo(), ResponseNonce: eds.GetNonce(),
		ErrorDetail: &rpcstatus.Status{Code: 3, Message: "refused for the test"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "rejection counted", func() bool { return value("pilot_total_xds_rejects", map[string]string{"type": "eds"}) == 1 })
	if v := value("pilot_proxy_convergence_time", nil); v != 1 {
		t.Errorf("pilot_proxy_convergence_time count = %v after a NACK, want still 1", v)
	}

	if err := c.stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "connection gone", func() bool { return value("pilot_xds", nil) == 0 })
}
