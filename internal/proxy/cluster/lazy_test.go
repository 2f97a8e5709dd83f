package cluster

import (
	"strings"
	"sync"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"

	"weft.dev/weft/internal/proxy/xdswire"
)

// wireBuild builds c with assignment a as the xDS client hands them over:
// encodings only.
func wireBuild(t testing.TB, b *Builder, c *clusterv3.Cluster, a *endpointv3.ClusterLoadAssignment, prev *Cluster) (*Cluster, error) {
	t.Helper()
	enc := func(m proto.Message) xdswire.Packed {
		out, err := xdswire.Pack(m)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	ct, err := b.BuildWire(enc(c), func() (*clusterv3.Cluster, error) { return c, nil },
		AssignmentMaps{Encodings: map[string]xdswire.Packed{a.GetClusterName(): enc(a)}}, prev)
	if err == nil {
		t.Cleanup(ct.CloseIdle)
	}
	return ct, err
}

// TestPickerBuiltAtFirstPick: an EDS cluster built from encodings checks
// its endpoints when built but builds its picker at the first pick (once,
// however many pick at once); its membership gauges are right before; an
// endpoint update carries the wait over until the cluster has served, and
// builds at once after; an invalid assignment is still refused when it
// arrives.
func TestPickerBuiltAtFirstPick(t *testing.T) {
	b := testBuilder(t)
	c := edsCluster(t, "svc", false, "")
	a := cla("svc", ep{Addr: "10.0.0.1:80"}, ep{Addr: "10.0.0.2:80", Health: core.HealthStatus_UNHEALTHY})

	first, err := wireBuild(t, b, c, a, nil)
	if err != nil {
		t.Fatal(err)
	}
	if first.picker != nil || first.lazy == nil || first.lazy.built() {
		t.Fatalf("a cluster that never served: picker %v, lazy %v; want it waiting", first.picker, first.lazy)
	}
	if total, healthy := first.Membership(); total != 2 || healthy != 1 {
		t.Errorf("membership before the first pick: %d, %d healthy; want 2, 1", total, healthy)
	}
	first.RetainConnections()
	if first.lazy.built() {
		t.Error("RetainConnections built the picker of a cluster that never served")
	}

	// An update of the endpoints before any request: still waiting.
	a2 := cla("svc", ep{Addr: "10.0.0.3:80"})
	moved, err := wireBuild(t, b, c, a2, first)
	if err != nil {
		t.Fatal(err)
	}
	if moved.lazy == nil || moved.lazy == first.lazy || !moved.SharesState(first) {
		t.Fatalf("an endpoint update of a cluster that never served: lazy %v (was %v), shares state %v", moved.lazy, first.lazy, moved.SharesState(first))
	}

	// Many first picks at once build one picker.
	var wg sync.WaitGroup
	got := make([]*Endpoint, 8)
	for i := range got {
		wg.Go(func() { got[i] = moved.Pick(HashKey{}) })
	}
	wg.Wait()
	for _, e := range got {
		if e == nil || e.Addr() != "10.0.0.3:80" || e != got[0] {
			t.Fatalf("first picks: %v, want one endpoint 10.0.0.3:80", got)
		}
	}
	if !moved.lazy.built() || moved.lazy.from != nil {
		t.Error("after the first pick the picker is not kept, or its source is")
	}
	if e := got[0]; e.Conns() == nil || moved.cell.get().up.Built() == nil {
		t.Fatal("the endpoint picked has no connections")
	}
	if total, healthy := moved.Membership(); total != 1 || healthy != 1 {
		t.Errorf("membership after the first pick: %d, %d healthy; want 1, 1", total, healthy)
	}

	// Once served, an update builds at once and keeps the connections of
	// the endpoint that stays.
	conns := got[0].Conns()
	a3 := cla("svc", ep{Addr: "10.0.0.3:80"}, ep{Addr: "10.0.0.4:80"})
	served, err := wireBuild(t, b, c, a3, moved)
	if err != nil {
		t.Fatal(err)
	}
	if served.picker == nil || served.lazy != nil {
		t.Fatalf("an update of a cluster that served: picker %v, lazy %v; want it built", served.picker, served.lazy)
	}
	served.RetainConnections()
	for _, e := range served.picker.endpoints {
		if e.Addr() == "10.0.0.3:80" && e.conns.Load() != conns {
			t.Error("the endpoint that stayed lost its connections")
		}
	}

	// A cluster that never served but whose state has a pool (a request
	// raced the update) builds when its connections are retained.
	other := edsCluster(t, "other", false, "")
	o1, err := wireBuild(t, b, other, cla("other", ep{Addr: "10.0.1.1:80"}), nil)
	if err != nil {
		t.Fatal(err)
	}
	o2, err := wireBuild(t, b, other, cla("other", ep{Addr: "10.0.1.2:80"}), o1)
	if err != nil {
		t.Fatal(err)
	}
	if o1.Pick(HashKey{}).Conns() == nil || o2.lazy == nil || o2.lazy.built() {
		t.Fatal("setup: want the old cluster served and the new one waiting")
	}
	o2.RetainConnections()
	if !o2.lazy.built() {
		t.Error("RetainConnections on a cluster whose pool is built left its picker unbuilt")
	}

	// An invalid assignment is refused when it arrives, not at the first pick.
	bad := cla("svc", ep{Addr: "10.0.0.9:0"})
	bad.Endpoints[0].LbEndpoints[0].GetEndpoint().GetAddress().GetSocketAddress().Address = ""
	if _, err := wireBuild(t, b, edsCluster(t, "svc", false, ""), bad, nil); err == nil || !strings.Contains(err.Error(), "address") {
		t.Errorf("an assignment with an empty address: %v, want an error naming the address", err)
	}
}

// TestStateBuiltAtFirstUse: an EDS cluster built from encodings builds
// its state (pool, breakers, outlier detection) at its first use, once
// however many ask at once, with the configured thresholds; an endpoint
// update carries the waiting state over; retaining connections, a config
// dump and closing do not build it, and a state built after its cluster
// was closed is closed; a circuit breaker the proxy cannot run is still
// refused when the cluster arrives.
func TestStateBuiltAtFirstUse(t *testing.T) {
	b := testBuilder(t)
	c := edsCluster(t, "svc", false, "")
	c.CircuitBreakers = thresholds(100, 100, 7, 3).CircuitBreakers
	c.OutlierDetection = istioOD(5, 100)
	a := cla("svc", ep{Addr: "10.0.0.1:80"})

	first, err := wireBuild(t, b, c, a, nil)
	if err != nil {
		t.Fatal(err)
	}
	if first.cell.built() != nil || first.cell.from != first {
		t.Fatalf("a cluster that never served: state %v, built from %p; want it waiting on itself", first.cell.built(), first.cell.from)
	}
	first.RetainConnections()
	first.DumpAssignment(a)
	if first.Broken() != nil || first.IsOriginalDst() || first.cell.built() != nil {
		t.Fatal("RetainConnections, DumpAssignment, Broken or IsOriginalDst built the state")
	}

	moved, err := wireBuild(t, b, c, cla("svc", ep{Addr: "10.0.0.2:80"}), first)
	if err != nil {
		t.Fatal(err)
	}
	if !moved.SharesState(first) || moved.cell.from != moved {
		t.Fatalf("an endpoint update: shares state %v, built from %p (the update is %p)", moved.SharesState(first), moved.cell.from, moved)
	}

	var wg sync.WaitGroup
	got := make([]*Breaker, 8)
	for i := range got {
		wg.Go(func() { got[i] = moved.Breaker() })
	}
	wg.Wait()
	for _, br := range got {
		if br == nil || br != got[0] {
			t.Fatalf("first uses: breakers %v, want one", got)
		}
	}
	st := moved.cell.built()
	if st == nil || moved.cell.from != nil || st.outlier == nil || got[0].maxRequests != 7 {
		t.Fatalf("after the first use: state %v (source kept %v), outlier %v, max requests %d; want 7", st, moved.cell.from != nil, st.outlier, got[0].maxRequests)
	}
	if first.Breaker() != got[0] || first.Upstream() != moved.Upstream() {
		t.Error("the Clusters sharing the state see different ones")
	}

	// Closed before its first use (its configuration replaced while a
	// request was starting on it): built closed.
	other := edsCluster(t, "other", false, "")
	retired, err := wireBuild(t, b, other, cla("other", ep{Addr: "10.0.1.1:80"}), nil)
	if err != nil {
		t.Fatal(err)
	}
	retired.CloseIdle()
	if retired.cell.built() != nil {
		t.Fatal("CloseIdle built the state")
	}
	pool := retired.Upstream()
	if st := retired.cell.built(); st == nil || st.up.Built() != pool || !st.up.Closed() {
		t.Error("a state built after CloseIdle is not closed")
	}

	// Checked when it arrives, not at the first use.
	bad := edsCluster(t, "bad", false, "")
	bad.CircuitBreakers = thresholds(1, 1, 1, 1).CircuitBreakers
	bad.CircuitBreakers.Thresholds[0].RetryBudget = &clusterv3.CircuitBreakers_Thresholds_RetryBudget{}
	if _, err := wireBuild(t, b, bad, cla("bad", ep{Addr: "10.0.2.1:80"}), nil); err == nil || !strings.Contains(err.Error(), "retry_budget") {
		t.Errorf("a retry budget: %v, want it refused naming retry_budget", err)
	}
}

// BenchmarkFirstPick is what a cluster's first request pays to build its
// picker: an Istio EDS cluster (outlier detection, circuit breakers) and
// an assignment of three endpoints, decoded from their encodings.
func BenchmarkFirstPick(b *testing.B) {
	bl := testBuilder(b)
	c := edsCluster(b, "svc", true, "")
	c.OutlierDetection = istioOD(5, 100)
	a := cla("svc", ep{Addr: "10.0.0.1:80"}, ep{Addr: "10.0.0.2:80"}, ep{Addr: "10.0.0.3:80"})
	ct, err := wireBuild(b, bl, c, a, nil)
	if err != nil || ct.lazy == nil {
		b.Fatalf("setup: %v, lazy %v", err, ct.lazy)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ct.buildPicker(); err != nil {
			b.Fatal(err)
		}
	}
}
