package mesh

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"testing"

	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/registry"
)

// TestReleaseCarry: a snapshot carries values over from the one it was
// built from until ReleaseCarry; after it, a value it had not taken is
// built anew, and the next snapshot still carries over what it took.
func TestReleaseCarry(t *testing.T) {
	cfg, reg := &config.Snapshot{Version: 1}, registry.NewSnapshot(nil, nil)
	type key struct{ n int }
	built := 0
	build := func() any { built++; v := built; return &v }
	first := Build(cfg, reg, Options{})
	a := first.MemoCarry(key{1}, nil, build)
	b := first.MemoCarry(key{2}, nil, build)

	second := BuildFrom(first, cfg, reg, Options{})
	if got := second.MemoCarry(key{1}, nil, build); got != a || built != 2 {
		t.Fatalf("before ReleaseCarry: value not carried over (built %d times)", built)
	}
	second.ReleaseCarry()
	if got := second.MemoCarry(key{2}, nil, build); got == b || built != 3 {
		t.Errorf("after ReleaseCarry: a value the snapshot had not taken was carried over (built %d times)", built)
	}
	third := BuildFrom(second, cfg, reg, Options{})
	if got := third.MemoCarry(key{1}, nil, build); got != a || built != 3 {
		t.Errorf("the next snapshot did not carry over what the released one had taken (built %d times)", built)
	}
}

// TestCarryKeptWhileGenerating: a snapshot generation started from (a
// push round serving it) keeps carrying from the one before when newer
// snapshots are built meanwhile — in a storm they come every few
// milliseconds, and losing the carry mid-round rebuilt, for every proxy
// not served yet, what would have been carried. A snapshot nothing was
// generated from is skipped, and keeps what it carries from when a
// snapshot built from it is dropped (a registry echo of the same
// version): it is what the next push serves.
func TestCarryKeptWhileGenerating(t *testing.T) {
	cfg, reg := &config.Snapshot{Version: 1}, registry.NewSnapshot(nil, nil)
	type key struct{ n int }
	built := 0
	build := func() any { built++; v := built; return &v }
	first := Build(cfg, reg, Options{})
	a := first.MemoCarry(key{1}, nil, build)
	b := first.MemoCarry(key{2}, nil, build)

	serving := BuildFrom(first, cfg, reg, Options{})
	if got := serving.MemoCarry(key{1}, nil, build); got != a {
		t.Fatal("not carried over")
	}
	skipped := BuildFrom(serving, cfg, reg, Options{}) // built while serving is pushed
	newest := BuildFrom(skipped, cfg, reg, Options{})  // skipped was never used
	if got := serving.MemoCarry(key{2}, nil, build); got != b || built != 2 {
		t.Errorf("the snapshot being served lost its carry when newer ones were built (built %d times)", built)
	}
	if got := newest.MemoCarry(key{1}, nil, build); got != a || built != 2 {
		t.Errorf("the newest snapshot does not carry from the one served (built %d times)", built)
	}
	_ = BuildFrom(newest, cfg, reg, Options{}) // an echo, dropped: newest stays current
	if got := newest.MemoCarry(key{2}, nil, build); got != b || built != 2 {
		t.Errorf("building from the newest snapshot cut what it carries from (built %d times)", built)
	}
}

// TestMemoDerive: over an endpoint change, a value is derived from the
// one the snapshot carries over from, told exactly the service ports
// whose endpoints changed (added, moved or gone); over a change of
// VirtualServices it is built anew, as after ReleaseCarry; MemoDeriveRoutes
// derives over both.
func TestMemoDerive(t *testing.T) {
	svcs := []*registry.Service{
		{Hostname: "a.ns.svc.cluster.local", Namespace: "ns", Ports: []registry.Port{{Number: 80}, {Number: 81}}},
		{Hostname: "b.ns.svc.cluster.local", Namespace: "ns", Ports: []registry.Port{{Number: 80}}},
	}
	ep := func(host string, port uint32, addr string) *registry.Endpoint {
		return &registry.Endpoint{ServiceHostname: host, ServicePort: port, Address: addr, Port: 8080}
	}
	regOf := func(eps ...*registry.Endpoint) *registry.Snapshot { return registry.NewSnapshot(svcs, eps) }
	cfg := &config.Snapshot{Version: 1}
	type key struct{}
	type derivedFrom struct {
		prev    any
		changed []string
	}
	ports := []struct {
		host string
		port uint32
	}{{"a.ns.svc.cluster.local", 80}, {"a.ns.svc.cluster.local", 81}, {"b.ns.svc.cluster.local", 80}}
	derive := func(prev any, changed func(string, uint32) bool) any {
		d := &derivedFrom{prev: prev}
		for _, p := range ports {
			if changed(p.host, p.port) {
				d.changed = append(d.changed, fmt.Sprintf("%s:%d", p.host, p.port))
			}
		}
		return d
	}
	built := 0
	build := func() any { built++; return &derivedFrom{} }

	first := Build(cfg, regOf(ep("a.ns.svc.cluster.local", 80, "10.0.0.1"), ep("a.ns.svc.cluster.local", 81, "10.0.0.1")), Options{})
	v1 := first.MemoDerive(key{}, derive, build)
	// a:80 moves, a:81 goes, b:80 comes.
	second := BuildFrom(first, cfg, regOf(ep("a.ns.svc.cluster.local", 80, "10.0.0.2"), ep("b.ns.svc.cluster.local", 80, "10.0.0.3")), Options{})
	v2 := second.MemoDerive(key{}, derive, build).(*derivedFrom)
	if v2.prev != v1 || built != 1 {
		t.Fatalf("not derived from the value before (built %d times)", built)
	}
	if want := []string{"a.ns.svc.cluster.local:80", "a.ns.svc.cluster.local:81", "b.ns.svc.cluster.local:80"}; !slices.Equal(v2.changed, want) {
		t.Errorf("changed %q, want %q", v2.changed, want)
	}
	if again := second.MemoDerive(key{}, derive, build); again != v2 {
		t.Error("a second use in the same snapshot derived again")
	}
	same := BuildFrom(second, cfg, regOf(ep("a.ns.svc.cluster.local", 80, "10.0.0.2"), ep("b.ns.svc.cluster.local", 80, "10.0.0.3")), Options{})
	if v := same.MemoDerive(key{}, derive, build).(*derivedFrom); v.prev != v2 || len(v.changed) != 0 {
		t.Errorf("nothing changed, yet told %q changed", v.changed)
	}

	routes := &config.Snapshot{Version: 2, VirtualServices: []*config.VirtualService{{Meta: config.Meta{Name: "vs", Namespace: "ns"}, Spec: &networking.VirtualService{Hosts: []string{"a"}}}}}
	routed := BuildFrom(same, routes, same.Registry, Options{})
	if v := routed.MemoDerive(key{}, derive, build).(*derivedFrom); v.prev != nil || built != 2 {
		t.Errorf("derived over a change of VirtualServices (built %d times)", built)
	}
	type setKey struct{}
	base := routed.MemoDeriveRoutes(setKey{}, func(prev any) any { return prev }, func() any { return "built" })
	next := BuildFrom(routed, &config.Snapshot{Version: 3}, routed.Registry, Options{})
	if v := next.MemoDeriveRoutes(setKey{}, func(prev any) any { return []any{prev} }, func() any { return "built" }); !reflect.DeepEqual(v, []any{base}) {
		t.Errorf("MemoDeriveRoutes over a change of VirtualServices gave %v", v)
	}
	next.ReleaseCarry()
	if v := next.MemoDerive(key{}, derive, build).(*derivedFrom); v.prev != nil {
		t.Error("derived after ReleaseCarry")
	}
}

// TestEndpointDigestsKept: endpoint and service digests taken over from the snapshot before
// for the services whose endpoints are the same values are those of a
// snapshot built from scratch, and a service whose endpoints changed,
// even to equal values at other addresses in memory, is hashed anew.
func TestEndpointDigestsKept(t *testing.T) {
	svcs := []*registry.Service{
		{Hostname: "a.ns.svc.cluster.local", Namespace: "ns", Ports: []registry.Port{{Number: 80}, {Number: 81}}},
		{Hostname: "b.ns.svc.cluster.local", Namespace: "ns", Ports: []registry.Port{{Number: 80}}},
		{Hostname: "c.ns.svc.cluster.local", Namespace: "ns", Ports: []registry.Port{{Number: 80}}},
	}
	a80 := &registry.Endpoint{ServiceHostname: "a.ns.svc.cluster.local", ServicePort: 80, Address: "10.0.0.1", Port: 80}
	a81 := &registry.Endpoint{ServiceHostname: "a.ns.svc.cluster.local", ServicePort: 81, Address: "10.0.0.1", Port: 81}
	b := &registry.Endpoint{ServiceHostname: "b.ns.svc.cluster.local", ServicePort: 80, Address: "10.0.0.2", Port: 80}
	c := &registry.Endpoint{ServiceHostname: "c.ns.svc.cluster.local", ServicePort: 80, Address: "10.0.0.3", Port: 80, Labels: map[string]string{"v": "1"}}
	cfg := &config.Snapshot{Version: 1}
	first := Build(cfg, registry.NewSnapshot(svcs, []*registry.Endpoint{a80, a81, b, c}), Options{})

	b2 := *b
	b2.Address = "10.0.0.9"
	c2 := *c // equal content, another value
	for _, eps := range [][]*registry.Endpoint{
		{a80, a81, b, c},   // nothing changed
		{a80, a81, &b2, c}, // b moved
		{a80, b, &c2},      // a:81 gone, c the same but another value
		{a80, a81, c},      // b gone
	} {
		reg := registry.NewSnapshot(svcs, eps)
		got := BuildFrom(first, cfg, reg, Options{})
		want := Build(cfg, reg, Options{})
		if !maps.Equal(got.epDigests, want.epDigests) {
			t.Errorf("endpoints %v: digests kept from the snapshot before %v, from scratch %v", eps, got.epDigests, want.epDigests)
		}
		if got.Version != want.Version {
			t.Errorf("endpoints %v: version %s, from scratch %s", eps, got.Version, want.Version)
		}
	}

	// Service digests are taken over for the same service values only.
	b2svc := *svcs[1]
	b2svc.Ports = []registry.Port{{Number: 80}, {Number: 82}}
	for _, ss := range [][]*registry.Service{
		svcs,                       // the same values
		{svcs[0], &b2svc, svcs[2]}, // b changed
		{svcs[0], svcs[2]},         // b gone
		{svcs[0], svcs[1], svcs[2], {Hostname: "d.ns.svc.cluster.local", Namespace: "ns"}}, // d new
	} {
		reg := registry.NewSnapshot(ss, []*registry.Endpoint{a80, a81, b, c})
		got, want := BuildFrom(first, cfg, reg, Options{}), Build(cfg, reg, Options{})
		if got.servicesHash != want.servicesHash || got.Version != want.Version {
			t.Errorf("%d services: hash %s (version %s) kept from the snapshot before, %s (%s) from scratch", len(ss), got.servicesHash, got.Version, want.servicesHash, want.Version)
		}
	}
	if other := Build(cfg, registry.NewSnapshot([]*registry.Service{svcs[0], &b2svc, svcs[2]}, nil), Options{}); other.servicesHash == first.servicesHash {
		t.Error("a changed service left the services' hash as it was")
	}
}
