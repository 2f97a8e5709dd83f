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

// TestResourcesDecodeAgain: a set hands out its decoded messages once
// and keeps none; the next call decodes equal messages from the
// encodings.
func TestResourcesDecodeAgain(t *testing.T) {
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
		if second.Clusters[n] == c || !proto.Equal(second.Clusters[n], c) {
			t.Errorf("cluster %s: decoded again as %v (same pointer: %v), want an equal new message", n, second.Clusters[n], second.Clusters[n] == c)
		}
	}
}

// BenchmarkResources is what each apply costs the xDS client of a
// sidecar of a 1,000-service mesh since it keeps encodings: decoding
// 3,000 clusters and 3,000 assignments again (before, it handed out the
// messages it kept).
func BenchmarkResources(b *testing.B) {
	s := meshSet(b, 1000)
	s.resources() // hand out the messages hold kept
	b.ReportAllocs()
	for b.Loop() {
		s.resources()
	}
}
