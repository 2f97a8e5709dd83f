package echo

import (
	"context"
	"sort"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/types/known/emptypb"
)

// ConformanceServiceName is the gRPC echo service of the Kubernetes
// Gateway API's conformance suite (its echo-basic grpcecho.proto). The
// echo app serves it too, so the suite's GRPCRoute tests run against this
// app: Echo, EchoTwo and EchoThree each answer an EchoResponse whose
// assertions name the method, the request's authority and headers, and
// the app (context.pod is its name).
const ConformanceServiceName = "gateway_api_conformance.echo_basic.grpcecho.GrpcEcho"

// conformanceServer is the HandlerType of conformanceDesc.
type conformanceServer interface {
	conformanceEcho(ctx context.Context, method string) *emptypb.Empty
}

var _ conformanceServer = (*echoService)(nil)

// conformanceDesc describes GrpcEcho by hand. Its messages are written
// and read with protowire (no generated code for a test protocol): the
// request, an EchoRequest, has no fields; the response is carried as the
// unknown fields of an Empty, which marshal as written.
var conformanceDesc = grpc.ServiceDesc{
	ServiceName: ConformanceServiceName,
	HandlerType: (*conformanceServer)(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "Echo", Handler: conformanceHandler("Echo")},
		{MethodName: "EchoTwo", Handler: conformanceHandler("EchoTwo")},
		{MethodName: "EchoThree", Handler: conformanceHandler("EchoThree")},
	},
	Metadata: "grpcecho.proto",
}

func conformanceHandler(method string) func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	return func(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
		if err := dec(new(emptypb.Empty)); err != nil {
			return nil, err
		}
		return srv.(conformanceServer).conformanceEcho(ctx, method), nil
	}
}

// conformanceEcho builds the EchoResponse of a GrpcEcho call:
//
//	EchoResponse { Assertions assertions = 1; }
//	Assertions { string fully_qualified_method = 1; repeated Header headers = 2;
//	             string authority = 3; Context context = 4; }
//	Header { string key = 1; string value = 2; }
//	Context { string namespace = 1; string ingress = 2; string service_name = 3; string pod = 4; }
func (e *echoService) conformanceEcho(ctx context.Context, method string) *emptypb.Empty {
	md, _ := metadata.FromIncomingContext(ctx)
	var a []byte
	a = protowire.AppendTag(a, 1, protowire.BytesType)
	a = protowire.AppendString(a, "/"+ConformanceServiceName+"/"+method)
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		var h []byte
		h = protowire.AppendTag(h, 1, protowire.BytesType)
		h = protowire.AppendString(h, k)
		h = protowire.AppendTag(h, 2, protowire.BytesType)
		h = protowire.AppendString(h, strings.Join(md[k], ","))
		a = protowire.AppendTag(a, 2, protowire.BytesType)
		a = protowire.AppendBytes(a, h)
	}
	if v := md.Get(":authority"); len(v) > 0 {
		a = protowire.AppendTag(a, 3, protowire.BytesType)
		a = protowire.AppendString(a, v[0])
	}
	var c []byte
	c = protowire.AppendTag(c, 4, protowire.BytesType)
	c = protowire.AppendString(c, e.s.name)
	a = protowire.AppendTag(a, 4, protowire.BytesType)
	a = protowire.AppendBytes(a, c)
	var resp []byte
	resp = protowire.AppendTag(resp, 1, protowire.BytesType)
	resp = protowire.AppendBytes(resp, a)
	out := &emptypb.Empty{}
	out.ProtoReflect().SetUnknown(resp)
	return out
}

// ConformancePod returns the context.pod of a GrpcEcho EchoResponse (the
// unknown fields of the Empty it was read into): the app that answered.
func ConformancePod(resp *emptypb.Empty) string {
	field := func(b []byte, num protowire.Number) []byte {
		for len(b) > 0 {
			n, typ, l := protowire.ConsumeTag(b)
			if l < 0 {
				return nil
			}
			b = b[l:]
			if typ != protowire.BytesType {
				l = protowire.ConsumeFieldValue(n, typ, b)
				if l < 0 {
					return nil
				}
				b = b[l:]
				continue
			}
			v, l := protowire.ConsumeBytes(b)
			if l < 0 {
				return nil
			}
			b = b[l:]
			if n == num {
				return v
			}
		}
		return nil
	}
	return string(field(field(field(resp.ProtoReflect().GetUnknown(), 1), 4), 4))
}
