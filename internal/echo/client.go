package echo

import (
	"context"
	"errors"
	"io"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/structpb"
)

// ServiceName is the fully-qualified name of the echo gRPC service.
const ServiceName = "weft.echo.v1.Echo"

// Full method names of the echo service.
const (
	echoMethod   = "/" + ServiceName + "/Echo"
	streamMethod = "/" + ServiceName + "/Stream"
)

// Call invokes the unary method Echo. Fields of req the server understands:
// "status" (a gRPC code number to fail with), "delay" (a Go duration string,
// at most 30s) and "echo" (any value, copied into the reply). The reply holds
// "name", "version", "metadata" (the incoming metadata, values joined by
// ", ") and "echo". It may block until ctx is done.
func Call(ctx context.Context, cc grpc.ClientConnInterface, req *structpb.Struct, opts ...grpc.CallOption) (*structpb.Struct, error) {
	out := new(structpb.Struct)
	if err := cc.Invoke(ctx, echoMethod, req, out, opts...); err != nil {
		return nil, err
	}
	return out, nil
}

// Stream invokes the server-streaming method Stream and collects its
// replies. Besides the fields Call understands, req may carry "count" (how
// many replies, default 1, at most 1000); each reply has an "index" field and
// the delay applies before each one. On error Stream returns the replies
// received so far together with the error, a gRPC status error when the
// server ended the stream with one.
func Stream(ctx context.Context, cc grpc.ClientConnInterface, req *structpb.Struct) ([]*structpb.Struct, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // releases the stream on early return
	cs, err := cc.NewStream(ctx, &serviceDesc.Streams[0], streamMethod)
	if err != nil {
		return nil, err
	}
	if err := cs.SendMsg(req); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	// On io.EOF from SendMsg the real error is reported by RecvMsg.
	if err := cs.CloseSend(); err != nil {
		return nil, err
	}
	var replies []*structpb.Struct
	for {
		msg := new(structpb.Struct)
		if err := cs.RecvMsg(msg); err != nil {
			if errors.Is(err, io.EOF) {
				return replies, nil
			}
			return replies, err
		}
		replies = append(replies, msg)
	}
}
