package xdswire

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// Codec is gRPC's protobuf codec with this package's encoder and decoder:
// pass it with grpc.ForceCodecV2 on a connection to a control plane.
type Codec struct{}

var _ encoding.CodecV2 = Codec{}

// Name is the content subtype: the messages are protobuf's.
func (Codec) Name() string { return "proto" }

// Marshal encodes v, a proto.Message.
func (Codec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("xdswire: cannot encode %T: not a protobuf message", v)
	}
	b, err := Marshal(m)
	if err != nil {
		return nil, err
	}
	return mem.BufferSlice{mem.SliceBuffer(b)}, nil
}

// Sized is what a receiver passes to a stream's RecvMsg to learn how many
// bytes the message it receives was encoded in: Codec decodes into Msg
// and sets Len, the length gRPC already knows, at no cost (where Size
// would encode the decoded message again to measure it).
type Sized struct {
	Msg proto.Message
	Len int
}

// Unmarshal decodes data into v, a proto.Message or a *Sized. The message
// keeps no reference to data (strings and bytes are copied), so its
// buffers go back to gRPC's pool.
func (Codec) Unmarshal(data mem.BufferSlice, v any) error {
	if s, ok := v.(*Sized); ok {
		s.Len = data.Len()
		v = s.Msg
	}
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("xdswire: cannot decode into %T: not a protobuf message", v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	return Unmarshal(buf.ReadOnlyData(), m)
}
