package server

import (
	"time"

	"google.golang.org/grpc"

	"weft.dev/weft/internal/xds/h2rpc"
)

// transport is an endpoint's HTTP/2 server: ADS streams are served by
// the stream engine through h2rpc, with no goroutine per idle stream and
// one per connection (wirestream.go); any other call (the CA's, on the
// secure port) by a gRPC server of the endpoint's other services.
//
// The keepalive is the one gRPC-Go's server had: the server pings a
// connection quiet for KeepaliveTime and closes it when the ack does
// not come within KeepaliveTimeout; connections are moved on after
// MaxConnectionAge (±10 %) with a minute's grace. Clients may ping
// every 5 s (weft-proxy pings every 10 s, gRPC-Go's minimum), even
// between streams.
func (s *Server) transport(ep Endpoint) *h2rpc.Server {
	gs := grpc.NewServer()
	if ep.Register != nil {
		ep.Register(gs)
	}
	return &h2rpc.Server{
		Open:                  func(st *h2rpc.Stream) h2rpc.StreamHandler { return s.openStream(st, ep) },
		Fallback:              gs,
		Credentials:           ep.Credentials,
		KeepaliveTime:         s.opts.KeepaliveTime,
		KeepaliveTimeout:      s.opts.KeepaliveTimeout,
		MaxConnectionAge:      s.opts.MaxConnectionAge,
		MaxConnectionAgeGrace: time.Minute,
		MinPingInterval:       5 * time.Second,
		Log:                   s.log,
	}
}
