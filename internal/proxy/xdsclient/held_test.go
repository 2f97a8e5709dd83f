package xdsclient

import (
	"strconv"
	"testing"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
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

// TestResourcesHandOnce: a set hands out its decoded messages once and
// keeps none; the next set hands only the encodings (nil messages), from
// which Resources decodes equal messages; a resource sent again with the
// same bytes stays as held, while a changed one is handed out decoded.
func TestResourcesHandOnce(t *testing.T) {
	s := meshSet(t, 3)
	first := s.resources()
	for n, h := range s.clusters {
		if h.msg != nil {
			t.Fatalf("cluster %s: the set still holds the decoded message", n)
		}
	}
	second := s.resources()
	if len(second.Clusters) != 9 || len(second.Endpoints) != 9 || len(second.Wire.Clusters) != 9 {
		t.Fatalf("second set: %d clusters, %d assignments, %d encodings", len(second.Clusters), len(second.Endpoints), len(second.Wire.Clusters))
	}
	for n, c := range first.Clusters {
		if second.Clusters[n] != nil {
			t.Errorf("cluster %s: decoded again for the second set", n)
		}
		got, err := second.Cluster(n)
		if err != nil || got == c || !proto.Equal(got, c) {
			t.Errorf("cluster %s: decoded from its encoding as %v, %v (same pointer: %v), want an equal new message", n, got, err, got == c)
		}
	}

	// The same clusters sent again, one of them changed.
	again := meshSet(t, 3)
	name := "outbound|8080|v1|svc-1.ns.svc.cluster.local"
	h, err := hold(&cluster.Cluster{Name: name})
	if err != nil {
		t.Fatal(err)
	}
	again.clusters[name] = h
	s.take(&decoded{typeURL: TypeCluster, version: "2", clusters: again.clusters}, nil)
	third := s.resources()
	for n, c := range third.Clusters {
		if (c != nil) != (n == name) {
			t.Errorf("cluster %s: handed decoded %v, want only the changed one", n, c != nil)
		}
	}
}

// BenchmarkResources is what each apply costs the xDS client of a
// sidecar of a 1,000-service mesh: the set of 3,000 clusters and 3,000
// assignments handed over again, nothing decoded (before, every apply
// decoded them all again).
func BenchmarkResources(b *testing.B) {
	s := meshSet(b, 1000)
	s.resources() // hand out the messages hold kept
	b.ReportAllocs()
	for b.Loop() {
		s.resources()
	}
}
