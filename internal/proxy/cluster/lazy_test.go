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
	if e := got[0]; e.Conns() == nil || moved.state.up.Built() == nil {
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
