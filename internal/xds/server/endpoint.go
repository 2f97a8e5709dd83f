package server

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Endpoint is one listener the server serves ADS on.
type Endpoint struct {
	Listener net.Listener
	// Credentials secure the endpoint's connections (TLS); nil serves
	// plaintext.
	Credentials credentials.TransportCredentials
	// Register, when set, adds more gRPC services beside ADS on this
	// endpoint (the CA on the secure port).
	Register func(grpc.ServiceRegistrar)
	// AuthorizeNode, when set, decides whether an ADS stream may go on
	// with the node it sent: it is called with the stream's context (its
	// peer and TLS state) and the node of the stream's first request,
	// before anything is generated for it. An error ends the stream with
	// the error's gRPC status. A later request of the stream that carries
	// a different node ends the stream with PermissionDenied: a stream
	// cannot change who it is. Called from stream goroutines, concurrently.
	AuthorizeNode func(ctx context.Context, node *core.Node) error
}

// nodeRequest is what both ADS request kinds have in common.
type nodeRequest interface {
	proto.Message
	GetNode() *core.Node
}

// authorizeNodes is the stream interceptor of an endpoint with
// AuthorizeNode: it reads the first request of an ADS stream itself,
// authorizes its node, and hands it on to go-control-plane.
func authorizeNodes(authorize func(context.Context, *core.Node) error, log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		var first nodeRequest
		switch {
		case strings.HasSuffix(info.FullMethod, "/StreamAggregatedResources"):
			first = new(discovery.DiscoveryRequest)
		case strings.HasSuffix(info.FullMethod, "/DeltaAggregatedResources"):
			first = new(discovery.DeltaDiscoveryRequest)
		default:
			return handler(srv, ss) // not ADS (the CA authenticates its own callers)
		}
		if err := ss.RecvMsg(first); err != nil {
			return err
		}
		node := first.GetNode()
		if err := authorize(ss.Context(), node); err != nil {
			log.Warn("ADS stream refused", "node", node.GetId(), "error", err)
			if _, ok := status.FromError(err); !ok {
				err = status.Error(codes.PermissionDenied, err.Error())
			}
			return err
		}
		as := &authorizedStream{ServerStream: ss, ctx: context.WithValue(ss.Context(), nodeVerifiedKey{}, true), first: first, node: node}
		err := handler(srv, as)
		if perr := as.err.Load(); perr != nil {
			// go-control-plane ends a stream whose Recv failed without a
			// status; give the client the reason.
			log.Warn("ADS stream ended", "node", node.GetId(), "error", *perr)
			return *perr
		}
		return err
	}
}

// authorizedStream replays the first request, then checks that no later
// request names another node.
type authorizedStream struct {
	grpc.ServerStream
	ctx   context.Context
	first nodeRequest
	node  *core.Node
	err   atomic.Pointer[error] // why RecvMsg ended the stream
}

// Context carries the mark that the stream's node was verified.
func (s *authorizedStream) Context() context.Context { return s.ctx }

type nodeVerifiedKey struct{}

// nodeVerified reports whether ctx is an ADS stream's whose node its
// endpoint's AuthorizeNode admitted.
func nodeVerified(ctx context.Context) bool {
	v, _ := ctx.Value(nodeVerifiedKey{}).(bool)
	return v
}

func (s *authorizedStream) RecvMsg(m any) error {
	if s.first != nil {
		proto.Merge(m.(proto.Message), s.first)
		s.first = nil
		return nil
	}
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if r, ok := m.(nodeRequest); ok && r.GetNode() != nil && !proto.Equal(r.GetNode(), s.node) {
		err := status.Errorf(codes.PermissionDenied, "node %q: a stream may not change its node (it began as %q)", r.GetNode().GetId(), s.node.GetId())
		s.err.Store(&err)
		return err
	}
	return nil
}
