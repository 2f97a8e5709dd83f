// Package echo is the workload behind Weft's demo, end-to-end tests and
// benchmarks: a real server that answers HTTP/1.1, h2c (HTTP/2 over
// cleartext, both with prior knowledge and via "Upgrade: h2c") and gRPC on a
// single port, and describes every request it receives.
//
// HTTP requests of any method and path get a JSON [Reply]; query parameters or
// x-echo-* request headers ask for a status code, a delay, a connection or
// stream reset, a padded body and extra response headers. gRPC requests are
// served by the hand-written service [ServiceName] (see client.go for the
// client side) and by the standard gRPC health service.
package echo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// shutdownGrace bounds how long Run waits for in-flight requests after its
// context is done before it aborts them.
const shutdownGrace = 10 * time.Second

// Options configures a Server.
type Options struct {
	// Name is the workload name, echoed back in every reply.
	Name string
	// Version is the workload version (e.g. "v1"), echoed back in every reply.
	Version string
	// Address is the TCP listen address; "127.0.0.1:0" picks a free port.
	// Empty means "127.0.0.1:0".
	Address string
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
	// Upstream is the host:port of the outbound proxy (the sidecar's
	// outbound listener) through which the app calls other services when
	// a request asks it to (control "call", x-echo-call), forwarding the
	// trace headers as an instrumented application does. Empty: calls
	// are refused.
	Upstream string
}

// Server is an echo workload bound to one TCP port. Create it with New and
// serve with Run. Its methods are safe for concurrent use.
type Server struct {
	name, version string
	log           *slog.Logger
	ln            net.Listener
	http          *http.Server
	grpc          *grpc.Server
	health        *health.Server

	// base is the parent of every request context; cancelling it aborts
	// requests that outlive the shutdown grace period.
	base       context.Context
	cancelBase context.CancelFunc

	requests atomic.Uint64
	inFlight tracker // request handlers (HTTP and gRPC)
	conns    tracker // invocations of the top-level handler, including upgraded h2c connections

	mu       sync.Mutex
	hijacked map[net.Conn]struct{} // connections taken over from net/http (h2c upgrade, reset)

	started atomic.Bool

	upstreamAddr string       // Options.Upstream
	upstream     *http.Client // nil without Upstream (call.go)
}

// New validates opts and binds the listen address. The caller must then call
// Run, which owns the listener from then on.
func New(opts Options) (*Server, error) {
	addr := opts.Address
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "echo", "name", opts.Name, "version", opts.Version)

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("echo %s: listen on %q: %w", opts.Name, addr, err)
	}

	s := &Server{
		name:     opts.Name,
		version:  opts.Version,
		log:      logger,
		ln:       ln,
		hijacked: make(map[net.Conn]struct{}),
	}
	if opts.Upstream != "" {
		s.upstreamAddr, s.upstream = opts.Upstream, newUpstreamClient()
	}
	s.base, s.cancelBase = context.WithCancel(context.Background())

	s.grpc = grpc.NewServer()
	s.grpc.RegisterService(&serviceDesc, &echoService{s: s})
	s.grpc.RegisterService(&conformanceDesc, &echoService{s: s})
	s.health = health.NewServer()
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	s.health.SetServingStatus(ServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s.grpc, s.health)

	// net/http serves HTTP/1.1 and h2c with prior knowledge natively
	// (Protocols.SetUnencryptedHTTP2), but not the "Upgrade: h2c" dance; the
	// h2c wrapper (deprecated, but the only implementation of it) handles
	// just those requests, taking over their connection.
	upgrade := h2c.NewHandler(http.HandlerFunc(s.serveUpgraded), &http2.Server{})
	root := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isH2CUpgrade(r.Header) {
			upgrade.ServeHTTP(w, r)
			return
		}
		if r.URL.Path == WebSocketPath && websocket.IsWebSocketUpgrade(r) {
			s.serveWebSocket(w, r)
			return
		}
		s.serveRequest(w, r)
	})
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	s.http = &http.Server{
		Handler:           s.trackConn(root),
		Protocols:         protocols,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return s.base },
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, c)
		},
		ConnState: func(c net.Conn, st http.ConnState) {
			if st == http.StateHijacked {
				s.mu.Lock()
				s.hijacked[c] = struct{}{}
				s.mu.Unlock()
			}
		},
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}
	return s, nil
}

// Addr returns the address the server is bound to.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Requests returns how many requests the server has accepted so far: HTTP
// requests of either version plus gRPC calls, health checks included.
func (s *Server) Requests() uint64 { return s.requests.Load() }

// InFlight returns how many requests are being handled right now.
func (s *Server) InFlight() int64 { return s.inFlight.count() }

// Run serves until ctx is done, then shuts down gracefully: it stops
// accepting connections, reports NOT_SERVING on the health service, lets
// in-flight requests finish for up to 10s, aborts the rest and returns once
// every goroutine it started has ended. It returns nil after a shutdown
// requested through ctx. Run may be called only once.
func (s *Server) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return fmt.Errorf("echo %s: Run called more than once", s.name)
	}
	s.log.Info("serving", "addr", s.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- s.http.Serve(s.ln) }()

	select {
	case err := <-errc:
		s.stop(context.Background())
		return fmt.Errorf("echo %s: serve: %w", s.name, err)
	case <-ctx.Done():
	}
	grace, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	s.stop(grace)
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("echo %s: serve: %w", s.name, err)
	}
	s.log.Info("stopped")
	return nil
}

// stop drains until grace is done, then aborts what is left and waits for
// all handlers to return.
func (s *Server) stop(grace context.Context) {
	s.health.Shutdown()
	// Closes the listener, sends GOAWAY on HTTP/2 connections and waits for
	// connections that net/http still owns.
	if err := s.http.Shutdown(grace); err != nil {
		s.log.Warn("graceful shutdown incomplete", "err", err)
	}
	// Requests on connections taken over by the h2c upgrade.
	if err := s.inFlight.wait(grace); err != nil {
		s.log.Warn("aborting in-flight requests", "in_flight", s.inFlight.count())
	}
	s.cancelBase()
	_ = s.http.Close()
	s.mu.Lock()
	for c := range s.hijacked {
		_ = c.Close()
	}
	s.mu.Unlock()
	s.grpc.Stop()
	_ = s.conns.wait(context.Background())
	_ = s.inFlight.wait(context.Background())
	if s.upstream != nil {
		s.upstream.CloseIdleConnections() // calls made for requests (call.go)
	}
}

type connKey struct{}

// isH2CUpgrade reports whether h asks to upgrade to h2c. It matches the h2c
// package's own test, so every request it selects is served over HTTP/2 (or
// refused by h2c when its HTTP2-Settings are malformed).
func isH2CUpgrade(h http.Header) bool {
	return httpguts.HeaderValuesContainsToken(h["Upgrade"], "h2c") &&
		httpguts.HeaderValuesContainsToken(h["Connection"], "HTTP2-Settings")
}

// serveUpgraded serves the requests of a connection upgraded to h2c. The
// upgrade request itself arrives as stream 1 still marked HTTP/1.1 and
// carrying the upgrade headers; it is presented as the HTTP/2 request it
// became, so replies agree with the protocol actually spoken.
func (s *Server) serveUpgraded(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 1 {
		r = r.WithContext(r.Context())
		r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/2.0", 2, 0
		r.Header = r.Header.Clone()
		for _, k := range []string{"Connection", "Upgrade", "Http2-Settings"} {
			r.Header.Del(k)
		}
	}
	s.serveRequest(w, r)
}

// trackConn wraps the top-level handler so that Run can wait for every
// invocation, including those that took over their connection, and forgets
// taken-over connections once their handler is done with them.
func (s *Server) trackConn(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.conns.add(1)
		defer s.conns.add(-1)
		defer func() {
			if c, ok := r.Context().Value(connKey{}).(net.Conn); ok {
				s.mu.Lock()
				delete(s.hijacked, c)
				s.mu.Unlock()
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// tracker counts running goroutines of one kind and lets a caller wait for
// the count to reach zero. Unlike sync.WaitGroup, add may be called at any
// time, also while wait is blocked.
type tracker struct {
	mu   sync.Mutex
	n    int64
	idle chan struct{} // closed while n == 0; nil means closed
}

func (t *tracker) add(d int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n == 0 && d > 0 {
		t.idle = make(chan struct{})
	}
	t.n += d
	if t.n == 0 && t.idle != nil {
		close(t.idle)
		t.idle = nil
	}
}

func (t *tracker) count() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n
}

// wait blocks until the count is zero or ctx is done.
func (t *tracker) wait(ctx context.Context) error {
	t.mu.Lock()
	ch := t.idle
	t.mu.Unlock()
	if ch == nil {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
