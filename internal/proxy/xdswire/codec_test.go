package xdswire

import (
	"testing"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// TestCodecSized: a message received into a Sized decodes as it would
// alone, and Len is the length of the bytes it came in, split over
// several buffers as gRPC hands them.
func TestCodecSized(t *testing.T) {
	c, err := anypb.New(&cluster.Cluster{Name: "outbound|80||reviews.default.svc.cluster.local"})
	if err != nil {
		t.Fatal(err)
	}
	sent := &discovery.DiscoveryResponse{VersionInfo: "v1", TypeUrl: c.TypeUrl, Nonce: "1", Resources: []*anypb.Any{c, c}}
	enc, err := Codec{}.Marshal(sent)
	if err != nil {
		t.Fatal(err)
	}
	b := enc.Materialize()
	split := mem.BufferSlice{mem.SliceBuffer(b[:7]), mem.SliceBuffer(b[7:])}

	var in Sized
	in.Msg = &discovery.DiscoveryResponse{}
	if err := (Codec{}).Unmarshal(split, &in); err != nil {
		t.Fatal(err)
	}
	if in.Len != len(b) || in.Len != proto.Size(sent) {
		t.Errorf("Len = %d, want %d (proto.Size %d)", in.Len, len(b), proto.Size(sent))
	}
	if !proto.Equal(in.Msg, sent) {
		t.Errorf("decoded %v, want %v", in.Msg, sent)
	}
	if err := (Codec{}).Unmarshal(split, &Sized{Msg: nil}); err == nil {
		t.Error("decoding into a Sized without a message: no error")
	}
}
