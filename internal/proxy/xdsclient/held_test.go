package xdsclient

import (
	"maps"
	"strconv"
	"testing"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// meshSet is a set like a sidecar of an n-service mesh holds: three EDS
// clusters per service with Istio's metadata, and their assignments of
// two endpoints each.
func meshSet(tb testing.TB, n int) *resourceSet {
	tb.Helper()
	s := newResourceSet()
	md := func(kv ...string) *core.Metadata {
		f := map[string]any{}
		for i := 0; i < len(kv); i += 2 {
			f[kv[i]] = kv[i+1]
		}
		st, err := structpb.NewStruct(f)
		if err != nil {
			tb.Fatal(err)
		}
		return &core.Metadata{FilterMetadata: map[string]*structpb.Struct{"istio": st}}
	}
	put := func(into map[string]*held, name string, m proto.Message) {
		h, err := hold(m)
		if err != nil {
			tb.Fatal(err)
		}
		into[name] = h
	}
	for i := range n {
		host := "svc-" + strconv.Itoa(i) + ".ns.svc.cluster.local"
		for _, subset := range []string{"", "v1", "v2"} {
			name := "outbound|8080|" + subset + "|" + host
			put(s.clusters, name, &cluster.Cluster{Name: name, ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_EDS},
				EdsClusterConfig: &cluster.Cluster_EdsClusterConfig{ServiceName: name, EdsConfig: &core.ConfigSource{
					ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}}}},
				Metadata: md("services", host, "subset", subset, "default_original_port", "8080")})
			cla := &endpoint.ClusterLoadAssignment{ClusterName: name}
			le := &endpoint.LocalityLbEndpoints{}
			for j := range 2 {
				le.LbEndpoints = append(le.LbEndpoints, &endpoint.LbEndpoint{
					HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{Address: &core.Address{
						Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
							Address: "10.0." + strconv.Itoa(i%250) + "." + strconv.Itoa(j+1), PortSpecifier: &core.SocketAddress_PortValue{PortValue: 8080}}}}}},
					Metadata: md("workload", "svc-"+strconv.Itoa(i)+";ns;svc;v1;cluster"),
				})
			}
			cla.Endpoints = []*endpoint.LocalityLbEndpoints{le}
			put(s.endpoints, name, cla)
		}
	}
	return s
}

// TestResourcesHandOnce: route configurations, clusters and assignments
// are handed only as encodings (nil messages), from which Resources
// decodes equal messages, and a listener is handed decoded once, then as
// its encoding; a resource sent again with the same bytes stays as held,
// while a changed one is held anew.
func TestResourcesHandOnce(t *testing.T) {
	s := meshSet(t, 3)
	rc := &route.RouteConfiguration{Name: "8080", VirtualHosts: []*route.VirtualHost{{Name: "svc", Domains: []string{"*"}}}}
	rh, err := hold(rc)
	if err != nil {
		t.Fatal(err)
	}
	s.routes["8080"] = rh
	l := &listener.Listener{Name: "in", Address: &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
		Address: "10.0.0.1", PortSpecifier: &core.SocketAddress_PortValue{PortValue: 8080}}}}}
	lh, err := hold(l)
	if err != nil {
		t.Fatal(err)
	}
	s.listeners["in"] = lh
	first := s.resources()
	if first.Listeners["in"] != l {
		t.Errorf("first set: listener %v, want the decoded message", first.Listeners["in"])
	}
	if lh.msg != nil {
		t.Errorf("the set still holds the decoded listener")
	}
	second := s.resources()
	if second.Listeners["in"] != nil {
		t.Errorf("second set: the listener handed decoded again")
	}
	if got, err := second.Listener("in"); err != nil || !proto.Equal(got, l) {
		t.Errorf("second set: listener decoded as %v, %v, want %v", got, err, l)
	}
	for _, set := range []*Resources{first, second} {
		if set.Routes["8080"] != nil {
			t.Errorf("route configuration handed decoded")
		}
		if got, err := set.Route("8080"); err != nil || !proto.Equal(got, rc) {
			t.Errorf("route configuration decoded as %v, %v, want %v", got, err, rc)
		}
	}
	for _, set := range []*Resources{first, second} {
		if len(set.Clusters) != 9 || len(set.Endpoints) != 9 || len(set.Wire.Clusters) != 9 || len(set.Wire.Endpoints) != 9 {
			t.Fatalf("set: %d clusters, %d assignments, %d and %d encodings", len(set.Clusters), len(set.Endpoints), len(set.Wire.Clusters), len(set.Wire.Endpoints))
		}
		for n, c := range set.Clusters {
			if c != nil || set.Endpoints[n] != nil {
				t.Errorf("cluster %s: handed decoded", n)
			}
			got, err := set.Cluster(n)
			if err != nil || got.GetName() != n || got.GetEdsClusterConfig().GetServiceName() != n {
				t.Errorf("cluster %s: decoded from its encoding as %v, %v", n, got, err)
			}
			cla, err := set.Endpoint(n)
			if err != nil || cla.GetClusterName() != n || len(cla.GetEndpoints()[0].GetLbEndpoints()) != 2 {
				t.Errorf("assignment %s: decoded from its encoding as %v, %v", n, cla, err)
			}
		}
	}

	// The same clusters sent again, one of them changed.
	before := maps.Clone(s.clusters)
	again := meshSet(t, 3)
	name := "outbound|8080|v1|svc-1.ns.svc.cluster.local"
	h, err := hold(&cluster.Cluster{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	again.clusters[name] = h
	s.take(&decoded{typeURL: TypeCluster, version: "2", clusters: again.clusters}, nil)
	for n, h := range s.clusters {
		if (h != before[n]) != (n == name) {
			t.Errorf("cluster %s: held anew %v, want only the changed one", n, h != before[n])
		}
	}
	if got, err := s.resources().Cluster(name); err != nil || got.GetType() != cluster.Cluster_STATIC {
		t.Errorf("changed cluster decoded as %v, %v", got, err)
	}
}

// BenchmarkResources is what each apply costs the xDS client of a
// sidecar of a 1,000-service mesh: the set of 3,000 clusters and 3,000
// assignments handed over again, nothing decoded (before, every apply
// decoded them all again).
func BenchmarkResources(b *testing.B) {
	s := meshSet(b, 1000)
	b.ReportAllocs()
	for b.Loop() {
		s.resources()
	}
}
