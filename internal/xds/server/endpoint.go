package server

import (
	"context"
	"net"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
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
	// Only a verified stream is sent secrets.
	AuthorizeNode func(ctx context.Context, node *core.Node) error
}

// nodeRequest is what both ADS request kinds have in common.
type nodeRequest interface {
	proto.Message
	GetNode() *core.Node
}
