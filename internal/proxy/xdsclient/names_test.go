package xdsclient

import (
	"log/slog"
	"testing"
	"unsafe"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"

	"weft.dev/weft/internal/xds/contract"
)

// TestClusterNamesHeldOnce: a delta client keeps each cluster's name as
// one string — the key its assignment is held under and the names the
// route configurations and virtual hosts routing to it hold are the
// cluster's own, not copies decoded from each response. A sidecar of a
// 1,000-service mesh holds 3,000 clusters, each named that way three or
// four times.
func TestClusterNamesHeldOnce(t *testing.T) {
	s := newDeltaState(&Client{opts: Options{Node: &core.Node{Id: "sidecar"}}})
	response := func(typeURL string, ms ...proto.Message) *discovery.DeltaDiscoveryResponse {
		r := &discovery.DeltaDiscoveryResponse{TypeUrl: typeURL}
		for _, m := range ms {
			r.Resources = append(r.Resources, &discovery.Resource{Resource: mustAny(t, m), Version: "1"})
		}
		return r
	}
	take := func(r *discovery.DeltaDiscoveryResponse) {
		t.Helper()
		d, versions, err := decodeDelta(r)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.take(d, versions, nil); err != nil {
			t.Fatal(err)
		}
	}
	take(response(TypeCluster, edsCluster("c1"), edsCluster("c2")))
	// The subscriptions resubscribe would send: the clusters' EDS names.
	s.subs[TypeEndpoint], s.subs[TypeRoute] = s.working.endpointNames(), []string{"r1"}
	take(response(TypeEndpoint, claN("c1", 1), claN("c2", 1)))
	rc := withMatch(routeTo("r1", "c1"))
	rc.Vhds = &route.Vhds{ConfigSource: &core.ConfigSource{ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}}}}
	take(response(TypeRoute, rc))
	vh := withMatch(routeTo("x", "c2")).VirtualHosts[0]
	vh.Name, vh.Domains = contract.VirtualHostName("r1", "a"), []string{"a"}
	take(response(TypeVirtualHost, vh))

	own := map[string]*byte{}
	for _, n := range s.subs[TypeEndpoint] {
		own[n] = unsafe.StringData(n)
	}
	same := func(what, n string) {
		t.Helper()
		if p, ok := own[n]; !ok || p != unsafe.StringData(n) {
			t.Errorf("%s names %q with a copy of the cluster's name", what, n)
		}
	}
	for n := range s.working.endpoints {
		same("an assignment's key", n)
	}
	for n := range s.rv[TypeEndpoint] {
		same("an assignment's version's key", n)
	}
	for _, h := range s.working.vhds.vhosts {
		for _, n := range h.routed {
			same("a virtual host", n)
		}
	}
	merged := s.working.routes["r1"]
	if merged == nil || len(merged.routed) != 2 {
		t.Fatalf("merged route configuration r1: %+v", merged)
	}
	for _, n := range merged.routed {
		same("the merged route configuration", n)
	}
}

// TestAppliedSetSharedUntilChanged: once a set is applied, the delta
// client holds it once — working and applied are one set — and the next
// response changes a copy: the applied set, against which the next one
// is checked (clusters removed while routes still name them), keeps what
// was applied.
func TestAppliedSetSharedUntilChanged(t *testing.T) {
	var applied []*Resources
	c, err := New(Options{Address: "127.0.0.1:1", Node: &core.Node{Id: "sidecar"}, Logger: slog.New(slog.DiscardHandler),
		Applier: ApplierFunc(func(r *Resources) error { applied = append(applied, r); return nil })})
	if err != nil {
		t.Fatal(err)
	}
	s := newDeltaState(c)
	take := func(typeURL string, removed []string, ms ...proto.Message) {
		t.Helper()
		r := &discovery.DeltaDiscoveryResponse{TypeUrl: typeURL, RemovedResources: removed}
		for _, m := range ms {
			r.Resources = append(r.Resources, &discovery.Resource{Resource: mustAny(t, m), Version: "1"})
		}
		d, versions, err := decodeDelta(r)
		if err != nil {
			t.Fatal(err)
		}
		changed, err := s.take(d, versions, removed)
		if err != nil {
			t.Fatal(err)
		}
		s.dirty = s.dirty || changed
	}
	take(TypeListener, nil)
	take(TypeCluster, nil, edsCluster("c1"), edsCluster("c2"))
	s.subs[TypeEndpoint] = s.working.endpointNames()
	take(TypeEndpoint, nil, claN("c1", 1), claN("c2", 1))
	if err := s.maybeApply(false); err != nil || len(applied) != 1 {
		t.Fatalf("first set: %d applies, %v", len(applied), err)
	}
	if s.working != s.applied {
		t.Error("after an apply the working set is a copy of the applied one")
	}
	take(TypeCluster, []string{"c2"})
	if s.working == s.applied {
		t.Fatal("a response changed the applied set")
	}
	if _, ok := s.applied.clusters["c2"]; !ok {
		t.Error("removing c2 from the working set removed it from the applied one")
	}
	if _, ok := s.working.clusters["c2"]; ok {
		t.Error("c2 still in the working set")
	}
}
