package dataplane

import (
	"bytes"
	"slices"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"

	"weft.dev/weft/internal/proxy/cluster"
	"weft.dev/weft/internal/proxy/xdsclient"
	"weft.dev/weft/internal/proxy/xdswire"
	"weft.dev/weft/internal/xds/contract"
)

// withWire returns a copy of r as the xDS client hands it over: messages
// decoded afresh (no pointer shared with r) and their encodings.
func withWire(t *testing.T, r *xdsclient.Resources) *xdsclient.Resources {
	t.Helper()
	out := &xdsclient.Resources{Versions: r.Versions, Wire: &xdsclient.Wire{}}
	out.Listeners, out.Wire.Listeners = recoded(t, r.Listeners)
	out.Routes, out.Wire.Routes = recoded(t, r.Routes)
	out.Clusters, out.Wire.Clusters = recoded(t, r.Clusters)
	out.Endpoints, out.Wire.Endpoints = recoded(t, r.Endpoints)
	return out
}

func recoded[M proto.Message](t *testing.T, ms map[string]M) (map[string]M, map[string]xdswire.Packed) {
	msgs, wire := map[string]M{}, map[string]xdswire.Packed{}
	for n, m := range ms {
		p, err := xdswire.Pack(m)
		if err != nil {
			t.Fatal(err)
		}
		c := m.ProtoReflect().New().Interface().(M)
		if err := p.Unmarshal(c); err != nil {
			t.Fatal(err)
		}
		msgs[n], wire[n] = c, p
	}
	return msgs, wire
}

// TestWireKeepsEncodings: given the resources' encodings, the runtime
// keeps them instead of the decoded messages (those of clusters and
// assignments only in the clusters built from them), dumps the same config as
// from the messages, and carries over an unchanged cluster (its pool and
// picker) and route table by their bytes though every message is new.
func TestWireKeepsEncodings(t *testing.T) {
	items := func(path string) *xdsResources {
		return resourcesAny(edsCluster(t, "a", false, "reviews.default.svc.cluster.local"), cla("a", ep{Addr: "127.0.0.1:9"}),
			edsCluster(t, "b", false, "ratings.default.svc.cluster.local"), cla("b", ep{Addr: "127.0.0.1:10"}),
			routeConfig("r", vhost("v", []string{"*"}, toCluster("all", prefixMatch(path), "a"))),
			httpListener(t, "out", core.TrafficDirection_OUTBOUND, "r", nil))
	}
	plain := newDataplane(t, contract.Identity{}, nil)
	mustApply(t, plain, items("/"))
	d := newDataplane(t, contract.Identity{}, nil)
	mustApply(t, d, withWire(t, items("/")))

	want, err := plain.ConfigDump()
	if err != nil {
		t.Fatal(err)
	}
	got, err := d.ConfigDump()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("dump from encodings differs from the dump of the messages:\n%s\n---\n%s", got, want)
	}
	rt := d.rt.Load()
	if n := len(rt.res.Clusters) + len(rt.res.Endpoints) + len(rt.res.Routes) + len(rt.res.Listeners); n != 0 {
		t.Errorf("the runtime keeps %d decoded messages, want none", n)
	}
	if len(rt.routeCfgs) != 0 {
		t.Errorf("the runtime keeps %d route configurations, want their encodings only", len(rt.routeCfgs))
	}
	if rt.res.Wire.Clusters != nil || rt.res.Wire.Endpoints != nil {
		t.Error("the runtime keeps the clusters' and assignments' encodings beside the clusters built from them")
	}

	// The same set again, decoded anew: everything is carried over.
	mustApply(t, d, withWire(t, items("/")))
	next := d.rt.Load()
	for _, name := range []string{"a", "b"} {
		if !next.clusters[name].SharesState(rt.clusters[name]) {
			t.Errorf("unchanged cluster %s got a new state", name)
		}
	}
	if next.routes["r"] != rt.routes["r"] {
		t.Error("unchanged route configuration was compiled again")
	}
	// A changed route configuration is compiled again; clusters stay.
	mustApply(t, d, withWire(t, items("/x")))
	last := d.rt.Load()
	if last.routes["r"] == next.routes["r"] {
		t.Error("changed route configuration was carried over")
	}
	if !last.clusters["a"].SharesState(next.clusters["a"]) {
		t.Error("unchanged cluster a got a new state")
	}
}

// encodedOnly is r (as withWire returns it) as the xDS client hands a
// later set over: only the messages named in fresh decoded, the others
// nil beside their encodings.
func encodedOnly(r *xdsclient.Resources, fresh ...string) *xdsclient.Resources {
	out := &xdsclient.Resources{Versions: r.Versions, Wire: r.Wire}
	out.Listeners = keepOnly(r.Listeners, fresh)
	out.Routes = keepOnly(r.Routes, fresh)
	out.Clusters = keepOnly(r.Clusters, fresh)
	out.Endpoints = keepOnly(r.Endpoints, fresh)
	return out
}

func keepOnly[M proto.Message](ms map[string]M, names []string) map[string]M {
	out := make(map[string]M, len(ms))
	for n, m := range ms {
		var zero M
		out[n] = zero
		if slices.Contains(names, n) {
			out[n] = m
		}
	}
	return out
}

// TestDecodeOnlyWhatChanged: resources handed over as encodings only
// (nil messages) are carried over when unchanged — the same clusters and
// route table, nothing decoded — and decoded when they are not: a first
// set of encodings only, an assignment changed beside unchanged ones. The
// dump is the same as from the messages.
func TestDecodeOnlyWhatChanged(t *testing.T) {
	items := func(addrA string) *xdsResources {
		return resourcesAny(edsCluster(t, "a", false, "reviews.default.svc.cluster.local"), cla("a", ep{Addr: addrA}),
			edsCluster(t, "b", false, "ratings.default.svc.cluster.local"), cla("b", ep{Addr: "127.0.0.1:10"}),
			routeConfig("r", vhost("v", []string{"*"}, toCluster("all", prefixMatch("/"), "a"))),
			httpListener(t, "out", core.TrafficDirection_OUTBOUND, "r", nil))
	}
	d := newDataplane(t, contract.Identity{}, nil)
	// Nothing decoded at all: the data plane decodes what it builds.
	mustApply(t, d, encodedOnly(withWire(t, items("127.0.0.1:9"))))
	first := d.rt.Load()
	if first.clusters["a"].Pick(cluster.HashKey{}).Addr() != "127.0.0.1:9" {
		t.Fatalf("cluster a built from its encodings picks %s", first.clusters["a"].Pick(cluster.HashKey{}).Addr())
	}
	// The same again: everything carried over as it is.
	mustApply(t, d, encodedOnly(withWire(t, items("127.0.0.1:9"))))
	same := d.rt.Load()
	for _, n := range []string{"a", "b"} {
		if same.clusters[n] != first.clusters[n] {
			t.Errorf("unchanged cluster %s was built again", n)
		}
	}
	if same.routes["r"] != first.routes["r"] {
		t.Error("unchanged route configuration was compiled again")
	}
	// One assignment changed, handed decoded; the rest encodings only.
	changed := withWire(t, items("127.0.0.1:11"))
	mustApply(t, d, encodedOnly(changed, "a"))
	next := d.rt.Load()
	if next.clusters["b"] != first.clusters["b"] {
		t.Error("cluster b, unchanged, was built again")
	}
	if !next.clusters["a"].SharesState(first.clusters["a"]) || next.clusters["a"] == first.clusters["a"] {
		t.Error("cluster a, whose assignment changed, did not keep its state with new endpoints")
	}
	if got := next.clusters["a"].Pick(cluster.HashKey{}).Addr(); got != "127.0.0.1:11" {
		t.Errorf("cluster a picks %s, want the changed assignment's endpoint", got)
	}
	plain := newDataplane(t, contract.Identity{}, nil)
	mustApply(t, plain, items("127.0.0.1:11"))
	want, err := plain.ConfigDump()
	if err != nil {
		t.Fatal(err)
	}
	got, err := d.ConfigDump()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("dump after sets of encodings differs from the dump of the messages:\n%s\n---\n%s", got, want)
	}
}
