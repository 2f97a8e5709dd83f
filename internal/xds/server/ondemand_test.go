package server

import (
	"slices"
	"testing"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry"
	"weft.dev/weft/internal/xds/contract"
)

func resourceNames(t *testing.T, r *discovery.DiscoveryResponse) []string {
	t.Helper()
	var out []string
	for _, a := range r.GetResources() {
		var l listener.Listener
		if err := a.UnmarshalTo(&l); err != nil {
			t.Fatal(err)
		}
		out = append(out, l.GetName())
	}
	slices.Sort(out)
	return out
}

// A proxyless gRPC client gets exactly the listeners it names, a name
// that does not exist gets an answer without it (instead of none, which
// is what a snapshot of every listener gets in ADS mode), and dropping a
// name is answered too.
func TestProxylessClientGetsWhatItNames(t *testing.T) {
	s, addr := start(t, Options{})
	s.Update(testMesh(2))
	ctx := withDeadline(t)
	id := client
	id.OutboundAddress, id.Generator = "", contract.GeneratorGRPC
	c := dial(t, ctx, addr, id.Node())

	c.request(resource.ListenerType, []string{"reviews:9080"}, nil)
	r := c.expect(resource.ListenerType)
	if got := resourceNames(t, r); !slices.Equal(got, []string{"reviews:9080"}) {
		t.Fatalf("listeners %v, want [reviews:9080]", got)
	}

	c.request(resource.ListenerType, []string{"nosuch:80", "reviews.default.svc.cluster.local:9080", "reviews:9080"}, r)
	r = c.expect(resource.ListenerType)
	if got := resourceNames(t, r); !slices.Equal(got, []string{"reviews.default.svc.cluster.local:9080", "reviews:9080"}) {
		t.Fatalf("listeners %v, want both forms of reviews and not nosuch:80", got)
	}

	c.request(resource.ListenerType, []string{"nosuch:80"}, r)
	r = c.expect(resource.ListenerType)
	if got := resourceNames(t, r); len(got) != 0 {
		t.Fatalf("listeners %v, want none", got)
	}

	c.request(resource.RouteType, []string{"reviews:9080"}, nil)
	if rt := c.expect(resource.RouteType); len(rt.GetResources()) != 1 {
		t.Fatalf("%d route configurations, want 1", len(rt.GetResources()))
	}
	c.request(resource.EndpointType, []string{contract.ClusterName(contract.Outbound, 9080, "", "reviews.default.svc.cluster.local")}, nil)
	if e := c.expect(resource.EndpointType); len(e.GetResources()) != 1 {
		t.Fatalf("%d load assignments, want 1", len(e.GetResources()))
	}
}

// grpc-go opens a stream per channel target, all with the same node: each
// gets what it names, and an update reaches both.
func TestProxylessStreamsOfOneNode(t *testing.T) {
	s, addr := start(t, Options{})
	s.Update(testMesh(2))
	ctx := withDeadline(t)
	id := client
	id.OutboundAddress, id.Generator = "", contract.GeneratorGRPC
	a, b := dial(t, ctx, addr, id.Node()), dial(t, ctx, addr, id.Node())
	a.request(resource.ListenerType, []string{"reviews:9080"}, nil)
	ra := a.expect(resource.ListenerType)
	a.request(resource.ListenerType, []string{"reviews:9080"}, ra)
	b.request(resource.ListenerType, []string{"reviews.default:9080"}, nil)
	rb := b.expect(resource.ListenerType)
	if got := resourceNames(t, rb); !slices.Equal(got, []string{"reviews.default:9080"}) {
		t.Fatalf("second stream got %v, want [reviews.default:9080]", got)
	}
	// The first stream is answered again (the node's names changed), with
	// its own listener only.
	ra2 := a.expect(resource.ListenerType)
	if got := resourceNames(t, ra2); !slices.Equal(got, []string{"reviews:9080"}) {
		t.Fatalf("first stream got %v, want [reviews:9080]", got)
	}
	a.request(resource.ListenerType, []string{"reviews:9080"}, ra2)
	b.request(resource.ListenerType, []string{"reviews.default:9080"}, rb)
	// The service going away is pushed to both streams.
	s.Update(mesh.New(&config.Snapshot{Version: 2}, registry.NewSnapshot(nil, nil), ""))
	if got := resourceNames(t, a.expect(resource.ListenerType)); len(got) != 0 {
		t.Errorf("first stream got %v after the service went, want none", got)
	}
	if got := resourceNames(t, b.expect(resource.ListenerType)); len(got) != 0 {
		t.Errorf("second stream got %v after the service went, want none", got)
	}
}
