package server

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/encoding"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

func codecResources() []*anypb.Any {
	var out []*anypb.Any
	for _, n := range []int{0, 1, 200, inlineBelow - 1, inlineBelow, 5000, 300000} {
		out = append(out, &anypb.Any{TypeUrl: resource.RouteType, Value: bytes.Repeat([]byte{byte(n)}, n)})
	}
	out = append(out, &anypb.Any{}, &anypb.Any{Value: []byte("x")})
	return out
}

// TestWireCodecMatchesProto: the codec writes the bytes the proto codec
// writes, for delta and state-of-the-world responses, and hands other
// messages and responses with fields it does not write to the proto codec.
func TestWireCodecMatchesProto(t *testing.T) {
	var deltaRes []*discovery.Resource
	for i, a := range codecResources() {
		deltaRes = append(deltaRes, &discovery.Resource{Name: strings.Repeat("n", i), Version: strings.Repeat("v", i%3), Resource: a})
	}
	deltaRes = append(deltaRes, &discovery.Resource{Name: "no-body"})
	// Small resources only, over poolBelow in all: encoded whole into a
	// buffer of the codec's own pool.
	var smallRes []*discovery.Resource
	for i := range 300 {
		smallRes = append(smallRes, &discovery.Resource{Name: fmt.Sprint("c", i), Version: "1",
			Resource: &anypb.Any{TypeUrl: resource.ClusterType, Value: bytes.Repeat([]byte{byte(i)}, 500)}})
	}
	cases := []proto.Message{
		&discovery.DeltaDiscoveryResponse{},
		&discovery.DeltaDiscoveryResponse{SystemVersionInfo: "abc", TypeUrl: resource.RouteType, Nonce: "7",
			Resources: deltaRes, RemovedResources: []string{"gone", "", "also-gone"}},
		&discovery.DeltaDiscoveryResponse{TypeUrl: resource.ClusterType, Nonce: "8", Resources: smallRes},
		&discovery.DiscoveryResponse{},
		&discovery.DiscoveryResponse{VersionInfo: "v1", Resources: codecResources(), Canary: true, TypeUrl: resource.ClusterType, Nonce: "9"},
		// Fields Weft does not set: written by the proto codec.
		&discovery.DeltaDiscoveryResponse{Nonce: "1", ControlPlane: &corev3.ControlPlane{Identifier: "cp"}},
		&discovery.DeltaDiscoveryResponse{Resources: []*discovery.Resource{{Name: "a", Ttl: durationpb.New(1)}}},
		&discovery.DiscoveryResponse{Nonce: "1", ControlPlane: &corev3.ControlPlane{Identifier: "cp"}},
		&discovery.DeltaDiscoveryRequest{TypeUrl: resource.ClusterType, ResourceNamesSubscribe: []string{"a"}},
	}
	c := newWireCodec()
	for _, m := range cases {
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		bs, err := c.Marshal(m)
		if err != nil {
			t.Fatalf("%T: %v", m, err)
		}
		got := bs.Materialize()
		if !bytes.Equal(got, want) {
			t.Errorf("%T: codec wrote %d bytes, proto %d, and they differ", m, len(got), len(want))
		}
		back := m.ProtoReflect().New().Interface()
		if err := c.Unmarshal(bs, back); err != nil || !proto.Equal(back, m) {
			t.Errorf("%T: does not read back: %v", m, err)
		}
		bs.Free()
	}
	// A response whose resources are a shared diff's encoded body: the
	// same bytes again.
	for _, m := range cases[:3] {
		m := m.(*discovery.DeltaDiscoveryResponse)
		want, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		bs, err := c.Marshal(&deltaWithBody{resp: m, body: encodeResources(m.Resources)})
		if err != nil {
			t.Fatal(err)
		}
		if got := bs.Materialize(); !bytes.Equal(got, want) {
			t.Errorf("with an encoded body (%d resources): codec wrote %d bytes, proto %d, and they differ", len(m.Resources), len(got), len(want))
		}
		bs.Free()
	}
	// The framing buffer is sized once: it never grows (and copies) while
	// written.
	var w wireWriter
	m := cases[1].(*discovery.DeltaDiscoveryResponse)
	if !w.plan(len(m.SystemVersionInfo)+len(m.TypeUrl)+len(m.Nonce), deltaAnys(m)) {
		t.Fatal("a response with large resources was not planned for references")
	}
	for _, r := range m.RemovedResources {
		w.bound += 16 + len(r)
	}
	if !w.delta(m) || len(w.buf) > w.bound {
		t.Errorf("framing %d bytes, planned at most %d", len(w.buf), w.bound)
	}
}

// TestWireCodecRefersToEncodings: a large resource's encoding is sent from
// where it is, not copied.
func TestWireCodecRefersToEncodings(t *testing.T) {
	big := &anypb.Any{TypeUrl: resource.RouteType, Value: make([]byte, 100000)}
	bs, err := newWireCodec().Marshal(&discovery.DeltaDiscoveryResponse{Resources: []*discovery.Resource{{Name: "r", Resource: big}}})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, b := range bs {
		if d := b.ReadOnlyData(); len(d) == len(big.Value) && &d[0] == &big.Value[0] {
			found = true
		}
	}
	if !found {
		t.Error("the resource's encoding was copied")
	}
}

// BenchmarkWireCodec marshals with the proto codec and with the wire
// codec a 1 MB delta response of 50 route configurations (referred to)
// and a 1.5 MB one of 3,000 clusters of 500 bytes (which the wire codec
// hands to the proto codec).
func BenchmarkWireCodec(b *testing.B) {
	response := func(n, size int, typ string) *discovery.DeltaDiscoveryResponse {
		m := &discovery.DeltaDiscoveryResponse{SystemVersionInfo: "v", TypeUrl: typ, Nonce: "1"}
		for i := range n {
			m.Resources = append(m.Resources, &discovery.Resource{Name: fmt.Sprintf("outbound|8080||svc-%04d.ns.svc.cluster.local", i),
				Version: "0123456789abcdef", Resource: &anypb.Any{TypeUrl: typ, Value: make([]byte, size)}})
		}
		return m
	}
	msgs := map[string]*discovery.DeltaDiscoveryResponse{
		"routes":   response(50, 20000, resource.RouteType),
		"clusters": response(3000, 500, resource.ClusterType),
	}
	for _, msg := range []string{"routes", "clusters"} {
		for _, name := range []string{"proto", "wire"} {
			var c encoding.CodecV2 = newWireCodec()
			if name == "proto" {
				c = newWireCodec().base
			}
			b.Run(msg+"/"+name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					bs, err := c.Marshal(msgs[msg])
					if err != nil {
						b.Fatal(err)
					}
					bs.Free()
				}
			})
		}
	}
}

// TestBoundedPool: a buffer is at most twice its length, idle buffers are
// reused, no more than the limit is kept idle, and drain drops them all.
func TestBoundedPool(t *testing.T) {
	p := newBoundedPool(16, 18, 256<<10) // 64, 128, 256 KiB; 256 KiB idle at most
	b := p.Get(70 << 10)
	if len(*b) != 70<<10 || cap(*b) != 128<<10 {
		t.Fatalf("Get(70 KiB): len %d cap %d, want 70 KiB in 128 KiB", len(*b), cap(*b))
	}
	p.Put(b)
	if again := p.Get(100 << 10); &(*again)[:1][0] != &(*b)[:1][0] {
		t.Error("an idle buffer of the class was not reused")
	}
	if big := p.Get(300 << 10); cap(*big) != 300<<10 {
		t.Errorf("Get(300 KiB) above the largest class: cap %d, want exactly its length", cap(*big))
	}
	var held []*[]byte
	for range 4 {
		held = append(held, p.Get(100<<10))
	}
	for _, h := range held {
		p.Put(h)
	}
	if got := p.held.Load(); got != 256<<10 {
		t.Errorf("idle bytes after returning 4 × 128 KiB: %d, want the limit %d", got, 256<<10)
	}
	p.Put(&[]byte{1, 2, 3}) // not of a class: dropped
	if got := p.held.Load(); got != 256<<10 {
		t.Errorf("a foreign buffer was kept: idle %d", got)
	}
	p.drain()
	if got := p.held.Load(); got != 0 {
		t.Errorf("idle bytes after drain: %d", got)
	}
	for _, c := range p.idle {
		if len(c) != 0 {
			t.Errorf("a class keeps %d buffers after drain", len(c))
		}
	}
}
