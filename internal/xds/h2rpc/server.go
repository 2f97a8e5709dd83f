// Package h2rpc is a lean gRPC server over HTTP/2 for a control plane's
// long-lived streams. gRPC-Go's server keeps four goroutines for each
// connection with one stream — the connection's reader, its writer, its
// keepalive, and the stream's handler blocked in Recv — ~31 KiB of stacks
// per proxy, 62 MB at 2,000 proxies (docs/benchmarks.md, "Goroutine
// stacks per connection"). Here a connection has one goroutine, its
// reader; a stream the caller serves itself (Server.Open) is driven by
// callbacks from that reader and written to by whichever goroutine sends,
// so an idle ADS stream costs no goroutine at all. Keepalive and the
// connection's maximum age are runtime timers, not goroutines.
//
// Everything else — methods Open does not take, such as the CA's unary
// calls — is handed to an http.Handler (a grpc.Server's ServeHTTP), with a
// request and a response writer over the same HTTP/2 stream, so a port
// keeps serving every gRPC service it registered.
//
// What it implements of HTTP/2 (RFC 9113) is what a gRPC server needs:
// the connection preface and settings, HPACK header blocks with
// CONTINUATION, DATA with flow control in both directions, RST_STREAM,
// PING (both ways, with gRPC's enforcement of clients' ping rate),
// GOAWAY for a graceful stop and a connection's maximum age, and stream
// limits. Responses never use HPACK's dynamic table, so a connection
// keeps no encoder state.
package h2rpc

import (
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"
)

// StreamHandler receives a stream's requests. Its methods are called on
// the connection's reader goroutine and must not block.
type StreamHandler interface {
	// Message is called with each request message, in order; b is the
	// callee's to keep.
	Message(b []byte)
	// Closed is called once when the client has ended its side: io.EOF
	// when it half-closed (the stream may still send, and should Finish),
	// another error when the stream was reset or its connection lost
	// (the stream is over; Send fails).
	Closed(err error)
}

// Server serves gRPC over HTTP/2 on the listeners given to Serve.
type Server struct {
	// Open is called on a connection's reader goroutine for each new
	// stream; it returns the stream's handler, or nil to hand the stream
	// to Fallback. It must not block.
	Open func(st *Stream) StreamHandler
	// Fallback serves the streams Open does not take (a grpc.Server's
	// ServeHTTP); nil answers them Unimplemented.
	Fallback http.Handler
	// Credentials, when set, secure each connection (TLS, with ALPN h2);
	// nil serves HTTP/2 in cleartext (prior knowledge, as gRPC does).
	Credentials credentials.TransportCredentials
	// KeepaliveTime: a connection quiet this long is pinged, and closed
	// when the ack does not come within KeepaliveTimeout. 0: never.
	KeepaliveTime, KeepaliveTimeout time.Duration
	// MaxConnectionAge: a connection is sent GOAWAY after about this long
	// (±10 %, so connections made together do not all move together) and
	// closed MaxConnectionAgeGrace later. 0: never.
	MaxConnectionAge, MaxConnectionAgeGrace time.Duration
	// MinPingInterval: a client that pings more often than this more than
	// twice in a row is sent GOAWAY (ENHANCE_YOUR_CALM, "too_many_pings"),
	// as gRPC-Go's enforcement policy does. 0: any rate.
	MinPingInterval time.Duration
	Log             *slog.Logger

	mu      sync.Mutex
	lis     []*net.Listener
	conns   map[*conn]struct{}
	stopped bool // Stop or GracefulStop was called
	drained *sync.Cond
}

// ErrServerStopped is what Serve returns when called after a stop.
var ErrServerStopped = errors.New("h2rpc: server stopped")

const (
	handshakeTimeout = 10 * time.Second // TLS handshake and client preface
)

func (s *Server) init() {
	if s.conns == nil {
		s.conns = map[*conn]struct{}{}
		s.drained = sync.NewCond(&s.mu)
	}
	if s.Log == nil {
		s.Log = slog.New(slog.DiscardHandler)
	}
}

// Serve accepts connections on lis and serves each on a goroutine of its
// own, until lis fails or the server stops (then it returns nil).
func (s *Server) Serve(lis net.Listener) error {
	s.mu.Lock()
	s.init()
	if s.stopped {
		s.mu.Unlock()
		lis.Close()
		return ErrServerStopped
	}
	lp := &lis
	s.lis = append(s.lis, lp)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.lis = slices.DeleteFunc(s.lis, func(l *net.Listener) bool { return l == lp })
		s.mu.Unlock()
	}()

	var delay time.Duration
	for {
		nc, err := lis.Accept()
		if err != nil {
			s.mu.Lock()
			stopped := s.stopped
			s.mu.Unlock()
			if stopped {
				return nil
			}
			var te interface{ Temporary() bool }
			if errors.As(err, &te) && te.Temporary() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		go s.serveConn(nc)
	}
}

// serveConn is the connection's goroutine: the handshake, then its
// reader, to the end.
func (s *Server) serveConn(nc net.Conn) {
	var auth credentials.AuthInfo
	if s.Credentials != nil {
		_ = nc.SetDeadline(time.Now().Add(handshakeTimeout))
		tc, info, err := s.Credentials.ServerHandshake(nc)
		if err != nil {
			s.Log.Debug("TLS handshake failed", "remote", nc.RemoteAddr().String(), "error", err)
			nc.Close()
			return
		}
		_ = nc.SetDeadline(time.Time{})
		nc, auth = tc, info
	}
	c := newConn(s, nc, auth)
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		nc.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()

	c.serve()

	s.mu.Lock()
	delete(s.conns, c)
	s.drained.Broadcast()
	s.mu.Unlock()
}

// stopAccepting marks the server stopped and closes its listeners.
func (s *Server) stopAccepting() []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	s.stopped = true
	for _, l := range s.lis {
		(*l).Close()
	}
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	return conns
}

// GracefulStop stops accepting, sends every connection GOAWAY, and
// waits until each has no stream left (then it is closed).
func (s *Server) GracefulStop() {
	for _, c := range s.stopAccepting() {
		c.goAway(errCodeNo, "server stopping", true)
	}
	s.wait()
}

// Stop closes every listener and connection and waits for their
// goroutines' cleanup.
func (s *Server) Stop() {
	for _, c := range s.stopAccepting() {
		c.kill(errServerClosed)
	}
	s.wait()
}

func (s *Server) wait() {
	s.mu.Lock()
	for len(s.conns) > 0 {
		s.drained.Wait()
	}
	s.mu.Unlock()
}

// ageJitter is a connection's maximum age, ±10 %.
func ageJitter(d time.Duration) time.Duration {
	j := int64(d) / 10
	if j <= 0 {
		return d
	}
	return d + time.Duration(rand.Int64N(2*j)-j)
}
