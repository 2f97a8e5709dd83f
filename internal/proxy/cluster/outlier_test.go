package cluster

import (
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	xdstype "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// testDetector returns a detector over n hosts (addresses "h0", "h1", …)
// with a settable clock. It never starts its sweep goroutine before a test
// ejects; tests call sweep directly and stop at cleanup.
func testDetector(t *testing.T, od *clusterv3.OutlierDetection, panicPct float64, n int) (*outlierDetector, []*hostHealth, *time.Time) {
	t.Helper()
	c := &clusterv3.Cluster{OutlierDetection: od}
	if panicPct >= 0 {
		c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &xdstype.Percent{Value: panicPct}}
	}
	cfg, err := parseOutlierDetection(c)
	if err != nil {
		t.Fatal(err)
	}
	cfg.interval = time.Hour // the test drives sweeps
	d := newOutlierDetector(cfg, refOf(testStats(t, "c")))
	now := time.Unix(1000, 0)
	d.now = func() time.Time { return now }
	t.Cleanup(d.stop)
	var addrs []string
	for i := range n {
		addrs = append(addrs, "h"+itoa(i))
	}
	return d, d.sync(addrs), &now
}

func TestOutlierConsecutive5xxEjectsAndReturns(t *testing.T) {
	d, hs, now := testDetector(t, istioOD(3, 100), 0, 3)
	h := hs[0]
	h.reportStatus(503)
	h.reportStatus(200) // resets
	h.reportStatus(500)
	h.reportStatus(503)
	if h.ejected() {
		t.Fatal("ejected after 2 consecutive errors")
	}
	h.reportStatus(502)
	if !h.ejected() {
		t.Fatal("not ejected after 3 consecutive 5xx")
	}
	if got := metricValue(&d.stats.get().OdEjectionsActive); got != 1 {
		t.Errorf("ejections_active = %v, want 1", got)
	}
	*now = now.Add(500 * time.Millisecond)
	d.sweep()
	if !h.ejected() {
		t.Fatal("back before base_ejection_time")
	}
	*now = now.Add(600 * time.Millisecond)
	d.sweep()
	if h.ejected() {
		t.Fatal("still ejected after base_ejection_time")
	}
	if got := metricValue(&d.stats.get().OdEjectionsActive); got != 0 {
		t.Errorf("ejections_active = %v, want 0", got)
	}
	// The second ejection lasts twice as long.
	for range 3 {
		h.reportStatus(500)
	}
	if !h.ejected() || h.ejectedUntil.Sub(*now) != 2*time.Second {
		t.Fatalf("second ejection: ejected=%v for %v, want 2s", h.ejected(), h.ejectedUntil.Sub(*now))
	}
	if got := metricValue(&d.stats.get().OdEjectionsTotal); got != 2 {
		t.Errorf("ejections_total = %v, want 2", got)
	}
}

func TestOutlierMaxEjectionPercent(t *testing.T) {
	d, hs, _ := testDetector(t, istioOD(1, 10), 0, 3)
	hs[0].reportStatus(500)
	hs[1].reportStatus(500)
	if !hs[0].ejected() || hs[1].ejected() {
		t.Fatalf("ejected %v %v, want only the first (10%% of 3 allows one)", hs[0].ejected(), hs[1].ejected())
	}
	if got := metricValue(&d.stats.get().OdEjectionsOverflow); got != 1 {
		t.Errorf("ejections_overflow = %v, want 1", got)
	}
}

func TestOutlierPanicThreshold(t *testing.T) {
	_, hs, _ := testDetector(t, istioOD(1, 100), 50, 2)
	hs[0].reportStatus(500)
	if !hs[0].ejected() {
		t.Fatal("not ejected at 50% healthy with threshold 50")
	}
	hs[1].reportStatus(500)
	if hs[0].ejected() || hs[1].ejected() {
		t.Fatal("0% healthy < 50%: panic mode, nothing should count as ejected")
	}
}

func TestOutlierLocalOrigin(t *testing.T) {
	tests := []struct {
		name   string
		od     *clusterv3.OutlierDetection
		report func(h *hostHealth)
		want   bool
	}{
		{"connect failures are gateway errors when not split",
			&clusterv3.OutlierDetection{ConsecutiveGatewayFailure: wrapperspb.UInt32(2), EnforcingConsecutiveGatewayFailure: wrapperspb.UInt32(100), Consecutive_5Xx: wrapperspb.UInt32(0)},
			func(h *hostHealth) { h.reportLocal(LocalConnectFailed); h.reportLocal(LocalConnectFailed) }, true},
		{"split: local failures use their own detector",
			&clusterv3.OutlierDetection{SplitExternalLocalOriginErrors: true, ConsecutiveLocalOriginFailure: wrapperspb.UInt32(2), Consecutive_5Xx: wrapperspb.UInt32(0)},
			func(h *hostHealth) { h.reportLocal(LocalConnectFailed); h.reportLocal(LocalTimeout) }, true},
		{"split: a response resets local failures",
			&clusterv3.OutlierDetection{SplitExternalLocalOriginErrors: true, ConsecutiveLocalOriginFailure: wrapperspb.UInt32(2), Consecutive_5Xx: wrapperspb.UInt32(0)},
			func(h *hostHealth) {
				h.reportLocal(LocalConnectFailed)
				h.reportStatus(500)
				h.reportLocal(LocalConnectFailed)
			}, false},
		{"gateway detector not enforced by default",
			&clusterv3.OutlierDetection{ConsecutiveGatewayFailure: wrapperspb.UInt32(1), Consecutive_5Xx: wrapperspb.UInt32(0)},
			func(h *hostHealth) { h.reportStatus(503) }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.od.MaxEjectionPercent = wrapperspb.UInt32(100)
			_, hs, _ := testDetector(t, tc.od, 0, 2)
			tc.report(hs[0])
			if got := hs[0].ejected(); got != tc.want {
				t.Errorf("ejected = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestOutlierSyncKeepsRemainingHosts(t *testing.T) {
	d, hs, _ := testDetector(t, istioOD(1, 100), 0, 3)
	hs[1].reportStatus(500)
	got := d.sync([]string{"h1", "h2", "h9"})
	if got[0] != hs[1] || !got[0].ejected() {
		t.Fatal("h1 lost its ejection across an endpoint update")
	}
	if got[1] != hs[2] || got[2] == nil || got[2].ejected() {
		t.Fatal("unexpected state for h2/h9")
	}
	d.sync([]string{"h2"})
	if got := metricValue(&d.stats.get().OdEjectionsActive); got != 0 {
		t.Errorf("ejections_active = %v after the ejected host left, want 0", got)
	}
}

func TestGRPCToHTTP(t *testing.T) {
	for in, want := range map[string]int{"0": 200, "14": 503, "4": 504, "13": 500, "x": 500} {
		if got := grpcToHTTP(in); got != want {
			t.Errorf("grpcToHTTP(%q) = %d, want %d", in, got, want)
		}
	}
}

// TestOutlierStateSurvivesPushes: an update that leaves the Cluster alone
// keeps the breaker and the detector; when only endpoints change, the ones
// that remain keep their ejection, and the config dump shows it; changing
// the Cluster starts afresh.
func TestOutlierStateSurvivesPushes(t *testing.T) {
	b := testBuilder(t)
	c := edsCluster(t, "c", false, "")
	c.OutlierDetection = istioOD(1, 100)
	c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &xdstype.Percent{Value: 0}}
	build := func(c *clusterv3.Cluster, prev *Cluster, eps ...ep) *Cluster {
		t.Helper()
		ct, err := b.Build(c, map[string]*endpointv3.ClusterLoadAssignment{"c": cla("c", eps...)}, prev)
		if err != nil {
			t.Fatal(err)
		}
		return ct
	}
	rt := build(c, nil, ep{Addr: "10.0.0.1:80"}, ep{Addr: "10.0.0.2:80"}, ep{Addr: "10.0.0.3:80"})
	t.Cleanup(rt.CloseIdle)
	var target *Endpoint
	for _, e := range rt.picker.endpoints {
		if e.addr == "10.0.0.2:80" {
			target = e
		}
	}
	target.ObserveResponse(503, nil)
	if target.available() {
		t.Fatal("endpoint not ejected")
	}
	// Endpoints change, the Cluster does not.
	rt2 := build(proto.Clone(c).(*clusterv3.Cluster), rt, ep{Addr: "10.0.0.2:80"}, ep{Addr: "10.0.0.4:80"})
	if !rt2.SharesState(rt) || rt2.cell.get().breaker != rt.cell.get().breaker || rt2.cell.get().outlier != rt.cell.get().outlier {
		t.Fatal("breaker or detector replaced by an endpoint-only update")
	}
	for _, e := range rt2.picker.endpoints {
		if want := e.addr == "10.0.0.2:80"; e.available() == want {
			t.Errorf("%s available=%v after the endpoint update", e.addr, e.available())
		}
	}
	dump, err := protojson.Marshal(rt2.DumpAssignment(rt2.cla))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(dump), `"healthStatus":"UNHEALTHY"`) || !strings.Contains(string(dump), `"ejected":true`) {
		t.Errorf("dumped assignment does not show the ejection:\n%s", dump)
	}
	if rt2.cla.GetEndpoints()[0].GetLbEndpoints()[0].GetMetadata() != nil {
		t.Error("DumpAssignment modified the assignment it was given")
	}
	// The Cluster changes: a new detector, the old one's gauge given back.
	c2 := proto.Clone(c).(*clusterv3.Cluster)
	c2.ConnectTimeout = durationpb.New(3 * time.Second)
	rt3 := build(c2, rt2, ep{Addr: "10.0.0.2:80"}, ep{Addr: "10.0.0.4:80"})
	t.Cleanup(rt3.CloseIdle)
	if rt3.SharesState(rt2) {
		t.Fatal("a changed Cluster kept its state")
	}
	rt2.CloseIdle() // what the data plane does with the state nothing uses any more
	for _, e := range rt3.picker.endpoints {
		if !e.available() {
			t.Errorf("%s still ejected after the cluster changed", e.addr)
		}
	}
	if got := metricValue(&b.Stats.For("c").OdEjectionsActive); got != 0 {
		t.Errorf("ejections_active = %v, want 0", got)
	}
}

// TestOutlierFailurePercentage: with failure_percentage_threshold
// enforced, the sweep ejects an endpoint whose interspersed failures
// reach the threshold — which consecutive-error detection never sees —
// once enough endpoints had enough attempts, and judges each interval
// afresh.
func TestOutlierFailurePercentage(t *testing.T) {
	od := istioOD(0, 100) // consecutive 5xx off
	od.FailurePercentageThreshold = wrapperspb.UInt32(50)
	od.EnforcingFailurePercentage = wrapperspb.UInt32(100)
	od.FailurePercentageMinimumHosts = wrapperspb.UInt32(3)
	od.FailurePercentageRequestVolume = wrapperspb.UInt32(10)
	d, hs, now := testDetector(t, od, 0, 4)
	// h0 fails every other attempt (60 %), the others never; h3 has too
	// few attempts to count.
	load := func(hosts []*hostHealth, n int) {
		for i := range n {
			for j, h := range hosts {
				switch {
				case j == 0 && i%5 < 3:
					h.reportStatus(503)
				default:
					h.reportStatus(200)
				}
			}
		}
	}
	load(hs[:3], 20)
	hs[3].reportStatus(200)
	if hs[0].ejected() {
		t.Fatal("ejected before the sweep")
	}
	d.sweep()
	if !hs[0].ejected() {
		t.Fatal("h0 (60% failures over 20 attempts, threshold 50%) not ejected at the sweep")
	}
	for _, h := range hs[1:] {
		if h.ejected() {
			t.Errorf("%s ejected without failures", h.addr)
		}
	}
	if got := metricValue(&d.stats.get().OdEjectionsEnforcedTotal); got != 1 {
		t.Errorf("ejections_enforced_total = %v, want 1", got)
	}

	// Too few endpoints with enough attempts: nothing is judged.
	*now = now.Add(2 * time.Second)
	d.sweep() // h0 back (base ejection 1 s)
	if hs[0].ejected() {
		t.Fatal("h0 still ejected after its base ejection time")
	}
	load(hs[:2], 20) // two loaded endpoints, minimum three
	d.sweep()
	if hs[0].ejected() {
		t.Error("ejected with fewer than failure_percentage_minimum_hosts endpoints loaded")
	}

	// The counts start again each interval: failures of an earlier
	// interval do not add to a clean one.
	load(hs[1:3], 20)
	for range 20 {
		hs[0].reportStatus(200)
	}
	d.sweep()
	if hs[0].ejected() {
		t.Error("ejected on an interval without failures")
	}
}

// TestOutlierFailurePercentageParse: Envoy's defaults (85 %, enforcing 0:
// off, 5 hosts, 50 attempts) and the range checks.
func TestOutlierFailurePercentageParse(t *testing.T) {
	cfg, err := parseOutlierDetection(&clusterv3.Cluster{OutlierDetection: &clusterv3.OutlierDetection{}})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.fpOn() || cfg.fpThreshold != 85 || cfg.fpMinHosts != 5 || cfg.fpVolume != 50 {
		t.Errorf("defaults: on=%v threshold %d, hosts %d, volume %d", cfg.fpOn(), cfg.fpThreshold, cfg.fpMinHosts, cfg.fpVolume)
	}
	if _, err := parseOutlierDetection(&clusterv3.Cluster{OutlierDetection: &clusterv3.OutlierDetection{FailurePercentageThreshold: wrapperspb.UInt32(101)}}); err == nil {
		t.Error("failure_percentage_threshold 101 accepted")
	}
}
