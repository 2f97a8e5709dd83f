package echo

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"
)

// MaxStreamCount bounds the "count" field of a Stream request.
const MaxStreamCount = 1000

// echoServer is the server side of weft.echo.v1.Echo. serviceDesc uses it as
// its HandlerType, so grpc.Server.RegisterService checks implementations
// against it.
type echoServer interface {
	echo(ctx context.Context, req *structpb.Struct) (*structpb.Struct, error)
	stream(req *structpb.Struct, ss grpc.ServerStream) error
}

var _ echoServer = (*echoService)(nil)

// serviceDesc describes weft.echo.v1.Echo by hand, as protoc-gen-go-grpc
// would, with google.protobuf.Struct for every message:
//
//	service Echo {
//	  rpc Echo(google.protobuf.Struct) returns (google.protobuf.Struct);
//	  rpc Stream(google.protobuf.Struct) returns (stream google.protobuf.Struct);
//	}
var serviceDesc = grpc.ServiceDesc{
	ServiceName: ServiceName,
	HandlerType: (*echoServer)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Echo",
		Handler:    echoHandler,
	}},
	Streams: []grpc.StreamDesc{{
		StreamName:    "Stream",
		Handler:       streamHandler,
		ServerStreams: true,
	}},
	Metadata: "weft/echo/v1/echo.proto",
}

func echoHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	req := new(structpb.Struct)
	if err := dec(req); err != nil {
		return nil, err
	}
	if interceptor == nil {
		return srv.(echoServer).echo(ctx, req)
	}
	info := &grpc.UnaryServerInfo{Server: srv, FullMethod: echoMethod}
	return interceptor(ctx, req, info, func(ctx context.Context, req any) (any, error) {
		return srv.(echoServer).echo(ctx, req.(*structpb.Struct))
	})
}

func streamHandler(srv any, ss grpc.ServerStream) error {
	req := new(structpb.Struct)
	if err := ss.RecvMsg(req); err != nil {
		return err
	}
	return srv.(echoServer).stream(req, ss)
}

// echoService implements echoServer for a Server.
type echoService struct{ s *Server }

// grpcControls are the behaviours a gRPC request asked for.
type grpcControls struct {
	code  codes.Code
	delay time.Duration
	count int
}

func parseGRPCControls(req *structpb.Struct) (grpcControls, error) {
	c := grpcControls{code: codes.OK, count: 1}
	f := req.GetFields()
	if v, ok := f["status"]; ok {
		n, ok := v.GetKind().(*structpb.Value_NumberValue)
		if !ok || n.NumberValue != math.Trunc(n.NumberValue) || n.NumberValue < 0 || n.NumberValue > 16 {
			return c, fmt.Errorf("status %v: want a gRPC code number in [0, 16]", v.AsInterface())
		}
		c.code = codes.Code(n.NumberValue)
	}
	if v, ok := f["delay"]; ok {
		d, err := time.ParseDuration(v.GetStringValue())
		if err != nil || d < 0 {
			return c, fmt.Errorf("delay %v: want a non-negative Go duration string such as \"200ms\"", v.AsInterface())
		}
		c.delay = min(d, MaxDelay)
	}
	if v, ok := f["count"]; ok {
		n, ok := v.GetKind().(*structpb.Value_NumberValue)
		if !ok || n.NumberValue != math.Trunc(n.NumberValue) || n.NumberValue < 0 {
			return c, fmt.Errorf("count %v: want a non-negative integer", v.AsInterface())
		}
		c.count = int(min(n.NumberValue, MaxStreamCount))
	}
	return c, nil
}

// reply builds the response message for req.
func (e *echoService) reply(ctx context.Context, req *structpb.Struct) *structpb.Struct {
	md, _ := metadata.FromIncomingContext(ctx)
	mdFields := make(map[string]*structpb.Value, len(md))
	for k, v := range md {
		mdFields[k] = structpb.NewStringValue(strings.Join(v, ", "))
	}
	fields := map[string]*structpb.Value{
		"name":     structpb.NewStringValue(e.s.name),
		"version":  structpb.NewStringValue(e.s.version),
		"metadata": structpb.NewStructValue(&structpb.Struct{Fields: mdFields}),
	}
	if v, ok := req.GetFields()["echo"]; ok {
		fields["echo"] = v
	}
	return &structpb.Struct{Fields: fields}
}

func (e *echoService) setHeader(ctx context.Context) {
	_ = grpc.SetHeader(ctx, metadata.Pairs("x-echo-name", e.s.name, "x-echo-version", e.s.version))
}

// echo waits for the requested delay, then answers with the requested status
// or, by default, a reply describing the call.
func (e *echoService) echo(ctx context.Context, req *structpb.Struct) (*structpb.Struct, error) {
	c, err := parseGRPCControls(req)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, "echo: "+err.Error())
	}
	e.setHeader(ctx)
	if err := sleep(ctx, c.delay); err != nil {
		return nil, status.FromContextError(err).Err()
	}
	if c.code != codes.OK {
		return nil, status.Error(c.code, "echo: requested status")
	}
	return e.reply(ctx, req), nil
}

// stream sends count replies, each preceded by the requested delay and
// numbered by an "index" field, then ends with the requested status.
func (e *echoService) stream(req *structpb.Struct, ss grpc.ServerStream) error {
	ctx := ss.Context()
	c, err := parseGRPCControls(req)
	if err != nil {
		return status.Error(codes.InvalidArgument, "echo: "+err.Error())
	}
	e.setHeader(ctx)
	for i := range c.count {
		if err := sleep(ctx, c.delay); err != nil {
			return status.FromContextError(err).Err()
		}
		msg := e.reply(ctx, req)
		msg.Fields["index"] = structpb.NewNumberValue(float64(i))
		if err := ss.SendMsg(msg); err != nil {
			return err
		}
	}
	if c.code != codes.OK {
		return status.Error(c.code, "echo: requested status")
	}
	return nil
}
