package xdsclient

import (
	"context"
	"slices"
	"strings"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"weft.dev/weft/internal/xds/contract"
)

// vhdsSnapshot is listener l1 -> route configuration r1, which takes its
// virtual hosts by VHDS and holds a catch-all of its own; vhosts are r1's
// virtual hosts by VHDS, each (name, cluster) with the name as its domain.
func (g *gcpServer) setVHDS(ctx context.Context, version string, vhosts ...[2]string) {
	g.t.Helper()
	rc := withMatch(routeTo("r1", "c1"))
	rc.VirtualHosts[0].Name, rc.VirtualHosts[0].Domains = "catch-all", []string{"*"}
	rc.Vhds = &route.Vhds{ConfigSource: &core.ConfigSource{ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}}}}
	res := map[resource.Type][]types.Resource{
		resource.ListenerType: {rdsListener(g.t, "l1", "r1")},
		resource.RouteType:    {rc},
		resource.ClusterType:  {edsCluster("c1"), edsCluster("c2")},
		resource.EndpointType: {claN("c1", 1), claN("c2", 1)},
	}
	for _, v := range vhosts {
		vh := withMatch(routeTo("x", v[1])).VirtualHosts[0]
		vh.Name, vh.Domains = contract.VirtualHostName("r1", v[0]), []string{v[0]}
		res[resource.VirtualHostType] = append(res[resource.VirtualHostType], vh)
	}
	s, err := cache.NewSnapshot(version, res)
	if err != nil {
		g.t.Fatal(err)
	}
	if err := g.snaps.SetSnapshot(ctx, testNode, s); err != nil {
		g.t.Fatal(err)
	}
}

// withMatch gives rc's routes a prefix match: routeTo's have none, which
// the validation of a decoded virtual host refuses.
func withMatch(rc *route.RouteConfiguration) *route.RouteConfiguration {
	for _, vh := range rc.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			r.Match = &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}}
		}
	}
	return rc
}

// vhostsOf is the applied route configuration r1's virtual hosts: name
// -> the cluster of its first route.
func vhostsOf(t *testing.T, r *Resources) [][2]string {
	t.Helper()
	rc, err := r.Route("r1")
	if err != nil || rc == nil {
		t.Fatalf("route configuration r1: %v, %v", rc, err)
	}
	if rc.GetVhds() != nil {
		t.Errorf("the applied route configuration still says vhds: %v", rc.GetVhds())
	}
	var out [][2]string
	for _, vh := range rc.GetVirtualHosts() {
		out = append(out, [2]string{vh.GetName(), vh.GetRoutes()[0].GetRoute().GetCluster()})
	}
	return out
}

// TestDeltaVHDS: against go-control-plane's delta server, the client says
// it takes VHDS, subscribes to every virtual host, and hands the data
// plane route configuration r1 merged with its virtual hosts (sorted,
// unprefixed, before r1's own catch-all); a changed virtual host arrives
// alone — no route configuration — and is merged in, a removed one taken
// out.
func TestDeltaVHDS(t *testing.T) {
	ctx := testCtx(t)
	g := startGCP(t, "127.0.0.1:0")
	g.setVHDS(ctx, "1", [2]string{"b", "c2"}, [2]string{"a", "c1"})
	c, rec := startDeltaClient(t, g.addr)
	res := rec.next(ctx, t)
	want := [][2]string{{"a", "c1"}, {"b", "c2"}, {"catch-all", "c1"}}
	if got := vhostsOf(t, res); !slices.Equal(got, want) {
		t.Fatalf("first applied r1: %v, want %v", got, want)
	}
	reqs := g.requests()
	if len(reqs) == 0 || !slices.Contains(reqs[0].GetNode().GetClientFeatures(), contract.FeatureVHDS) {
		t.Errorf("the node does not list %q in its client features", contract.FeatureVHDS)
	}

	before := received(c)
	g.setVHDS(ctx, "2", [2]string{"b", "c1"}, [2]string{"a", "c1"})
	res = nextWith(ctx, t, rec, "b routed to c1", func(r *Resources) bool { return slices.Contains(vhostsOf(t, r), [2]string{"b", "c1"}) })
	if got := diff(received(c), before); got["virtual host"] != 1 || got["route configuration"] != 0 {
		t.Errorf("resources received for one virtual host's change: %v, want one virtual host", got)
	}

	g.setVHDS(ctx, "3", [2]string{"b", "c1"})
	res = nextWith(ctx, t, rec, "a removed", func(r *Resources) bool { return len(vhostsOf(t, r)) == 2 })
	if got, want := vhostsOf(t, res), [][2]string{{"b", "c1"}, {"catch-all", "c1"}}; !slices.Equal(got, want) {
		t.Errorf("after removing a: %v, want %v", got, want)
	}
	if s := c.Stats(); s.NACKs != 0 {
		t.Errorf("Stats = %+v", s)
	}
}

// TestVirtualHostNameChecked: a virtual host whose name does not say its
// route configuration ("<rc>/<vh>") is refused with an error naming it.
func TestVirtualHostNameChecked(t *testing.T) {
	vh := withMatch(routeTo("x", "c1")).VirtualHosts[0]
	for _, name := range []string{"no-slash", "r1/"} {
		vh.Name = name
		d := &decoded{typeURL: TypeVirtualHost, vhosts: map[string]*held{}}
		_, err := d.add(mustAny(t, vh))
		if err == nil || !strings.Contains(err.Error(), `virtual host "`+name+`"`) {
			t.Errorf("name %q: err = %v, want one naming it", name, err)
		}
	}
	vh.Name = "r1/a"
	d := &decoded{typeURL: TypeVirtualHost, vhosts: map[string]*held{}}
	if _, err := d.add(mustAny(t, vh)); err != nil {
		t.Errorf("r1/a: %v", err)
	}
}
