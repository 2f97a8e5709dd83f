package xdswire

import (
	"bytes"
	"fmt"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
)

// meshCluster is a cluster as Istio sends one of many: EDS, metadata,
// circuit breakers.
func meshCluster(tb testing.TB, i int, subset string) *clusterv3.Cluster {
	tb.Helper()
	host := fmt.Sprintf("svc-%d.ns-%d.svc.cluster.local", i, i%7)
	name := "outbound|8080|" + subset + "|" + host
	md, err := structpb.NewStruct(map[string]any{"services": []any{map[string]any{"host": host, "name": fmt.Sprintf("svc-%d", i), "namespace": fmt.Sprintf("ns-%d", i%7)}}, "subset": subset, "default_original_port": "8080"})
	if err != nil {
		tb.Fatal(err)
	}
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{ServiceName: name, EdsConfig: &core.ConfigSource{
			ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}}, ResourceApiVersion: core.ApiVersion_V3}},
		ConnectTimeout: durationpb.New(10e9),
		CircuitBreakers: &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
			MaxConnections: nil, TrackRemaining: true,
		}}},
		Metadata: &core.Metadata{FilterMetadata: map[string]*structpb.Struct{"istio": md}},
	}
}

// TestPackedRoundTrip: a pack decodes to the message packed and gives
// back its deterministic encoding; many clusters of a mesh keep a
// fraction of their bytes.
func TestPackedRoundTrip(t *testing.T) {
	var raw, packed int
	for i := range 300 {
		c := meshCluster(t, i, []string{"", "v1", "v2"}[i%3])
		p, err := Pack(c)
		if err != nil {
			t.Fatal(err)
		}
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		got, err := p.Encoding()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("cluster %d: encoding %x, %v; want %x", i, got, err, want)
		}
		var back clusterv3.Cluster
		if err := p.Unmarshal(&back); err != nil || !proto.Equal(&back, c) {
			t.Fatalf("cluster %d: unpacked %v, %v; want %v", i, &back, err, c)
		}
		raw += len(want)
		packed += p.Len()
	}
	t.Logf("300 clusters: %d bytes encoded, %d packed (%.0f %%)", raw, packed, 100*float64(packed)/float64(raw))
	if packed*2 > raw {
		t.Errorf("300 clusters pack to %d bytes of %d: the dictionary does not work", packed, raw)
	}
}

// TestPackedEqual: equal messages have equal packs and different ones
// different, also when one was packed before its type had a dictionary
// or did not compress; the zero pack equals only itself.
func TestPackedEqual(t *testing.T) {
	a1, _ := Pack(meshCluster(t, 1, "v1"))
	a2, _ := Pack(meshCluster(t, 1, "v1"))
	b, _ := Pack(meshCluster(t, 2, "v1"))
	if !a1.Equal(a2) || a1.Equal(b) {
		t.Errorf("equal: same %v, different %v", a1.Equal(a2), a1.Equal(b))
	}
	// The same encoding kept as it is, as before a dictionary existed.
	enc, err := a1.Encoding()
	if err != nil {
		t.Fatal(err)
	}
	rawA := Packed{b: append([]byte{0}, enc...)}
	if !rawA.Equal(a1) || !a1.Equal(rawA) || rawA.Equal(b) {
		t.Errorf("kept as it is against packed: equal %v %v, different %v", rawA.Equal(a1), a1.Equal(rawA), rawA.Equal(b))
	}
	var zero Packed
	if !zero.Equal(Packed{}) || zero.Equal(a1) || a1.Equal(zero) || !zero.IsZero() || a1.IsZero() {
		t.Error("the zero pack")
	}
	// Short encodings are kept as they are.
	small, _ := Pack(&endpointv3.ClusterLoadAssignment{ClusterName: "x"})
	if small.b[0] != 0 {
		t.Errorf("a short encoding was compressed: %x", small.b)
	}
	var cla endpointv3.ClusterLoadAssignment
	if err := small.Unmarshal(&cla); err != nil || cla.GetClusterName() != "x" {
		t.Errorf("short encoding unpacked as %v, %v", &cla, err)
	}
}

// TestPackedCorrupt: damaged packs are errors, not panics or wrong
// messages.
func TestPackedCorrupt(t *testing.T) {
	p, _ := Pack(meshCluster(t, 3, ""))
	if p.b[0] == 0 {
		t.Fatal("not compressed")
	}
	for _, bad := range []Packed{
		{b: p.b[:len(p.b)/2]},
		{b: append([]byte{p.b[0]}, bytes.Repeat([]byte{0xff}, 20)...)},
		{b: append([]byte{200}, p.b[1:]...)},
	} {
		var c clusterv3.Cluster
		if err := bad.Unmarshal(&c); err == nil {
			t.Errorf("%x: unpacked as %v, want an error", bad.b, &c)
		}
	}
	if err := (Packed{}).Unmarshal(&clusterv3.Cluster{}); err == nil {
		t.Error("the zero pack unpacked")
	}
}

// BenchmarkPack is what holding one cluster costs the xDS client.
func BenchmarkPack(b *testing.B) {
	c := meshCluster(b, 1, "v1")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Pack(c); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUnpack is decoding one held cluster.
func BenchmarkUnpack(b *testing.B) {
	p, _ := Pack(meshCluster(b, 1, "v1"))
	b.ReportAllocs()
	for b.Loop() {
		var c clusterv3.Cluster
		if err := p.Unmarshal(&c); err != nil {
			b.Fatal(err)
		}
	}
}
