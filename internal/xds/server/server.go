// Package server serves xDS over gRPC: the aggregated discovery service,
// state of the world and delta, with go-control-plane's protos and its
// resource helpers but a stream engine of its own (ads.go). It learns each
// proxy's identity from the xDS node on its first request, generates that
// proxy's resources with internal/xds/generate, and serves them from a
// per-node snapshot made of shared, pre-encoded per-type sets
// (snapshot.go): proxies that receive the same resources share one copy,
// encoded once. Mesh updates are debounced, versions are content hashes
// (an endpoint-only change sends only EDS; in delta, only the changed
// assignments), per-proxy generation is bounded by a concurrency limit,
// and config a proxy rejected is not sent to it again until its snapshot
// changes.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/prometheus/client_golang/prometheus"

	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/xds/contract"
)

// Defaults for Options.
const (
	DefaultDebounce        = 100 * time.Millisecond
	DefaultDebounceMax     = time.Second
	DefaultPushConcurrency = 8
	// DefaultKeepaliveTime is Istio's: weft-proxy pings every 10 s itself
	// (which the server counts as activity), so the server pings only peers
	// that go quiet, such as proxyless gRPC clients. At 10 s the server
	// pinged every connection 10 s after each push, all at once, and each
	// ping held a 32 KiB write buffer: ~50 MB at 2,000 proxies
	// (docs/benchmarks.md, the keepalive burst).
	DefaultKeepaliveTime    = 30 * time.Second
	DefaultKeepaliveTimeout = 5 * time.Second
	DefaultMaxConnectionAge = 30 * time.Minute
	// gracefulStopTimeout bounds how long Serve waits for streams to finish
	// before closing them hard.
	gracefulStopTimeout = 5 * time.Second
)

// Options configure a Server. The zero value is usable.
type Options struct {
	// Debounce is the quiet period after an Update before a push starts;
	// DebounceMax bounds how long a stream of Updates can delay a push.
	Debounce, DebounceMax time.Duration
	// PushConcurrency bounds how many proxies' resources are generated at once.
	PushConcurrency int
	// MaxBytesInFlight bounds the bytes of responses sent and not yet
	// answered by their proxies, across all streams (flight.go); 0 means
	// DefaultMaxBytesInFlight, a negative value no bound.
	MaxBytesInFlight int64
	Logger           *slog.Logger
	// Metrics, when set, receives the server's Prometheus collectors.
	Metrics prometheus.Registerer

	// KeepaliveTime is how long a connection may be idle before the server
	// pings the peer; KeepaliveTimeout how long it waits for the ack before
	// closing it. Together they bound how long a dead peer goes unnoticed.
	KeepaliveTime, KeepaliveTimeout time.Duration
	// MaxConnectionAge closes connections after about this long (grpc-go
	// adds ±10% jitter) so proxies rebalance across control plane replicas.
	MaxConnectionAge time.Duration

	// OnConnect, when set, is called when a proxy (a node id with an
	// identity) opens its first stream; OnDisconnect when its last stream
	// closes. A node that reconnects with another identity gets OnConnect
	// for the new one only. On the secure port the identity's namespace
	// and service account were verified against the proxy's certificate.
	// They are called from stream goroutines, never with the server's
	// locks held, and must not block for long.
	OnConnect, OnDisconnect func(contract.Identity)
}

func (o Options) withDefaults() Options {
	if o.Debounce <= 0 {
		o.Debounce = DefaultDebounce
	}
	if o.DebounceMax <= 0 {
		o.DebounceMax = DefaultDebounceMax
	}
	if o.DebounceMax < o.Debounce {
		o.DebounceMax = o.Debounce
	}
	if o.MaxBytesInFlight == 0 {
		o.MaxBytesInFlight = DefaultMaxBytesInFlight
	}
	if o.PushConcurrency <= 0 {
		o.PushConcurrency = DefaultPushConcurrency
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.KeepaliveTime <= 0 {
		o.KeepaliveTime = DefaultKeepaliveTime
	}
	if o.KeepaliveTimeout <= 0 {
		o.KeepaliveTimeout = DefaultKeepaliveTimeout
	}
	if o.MaxConnectionAge <= 0 {
		o.MaxConnectionAge = DefaultMaxConnectionAge
	}
	return o
}

// Server is an ADS server. Create it with New, feed it with Update from any
// goroutine, and run it with Serve.
type Server struct {
	discoverygrpc.UnimplementedAggregatedDiscoveryServiceServer

	opts      Options
	log       *slog.Logger
	sets      setCache // the typeSets proxies hold, by content
	flight    *flightBudget
	streamIDs atomic.Int64
	metrics   *metrics

	latest  atomic.Pointer[versioned] // newest Update; nil before the first
	seq     atomic.Uint64
	updated chan struct{} // capacity 1: "latest changed"
	sem     chan struct{} // PushConcurrency tokens

	mu      sync.Mutex
	proxies map[string]*proxy                     // by node id
	streams map[streamKey]*proxy                  // open streams that sent a valid node
	sent    map[streamKey]map[string]sentResponse // last response per stream and type

	serving  atomic.Bool
	serveCtx context.Context // set by Serve before any stream can start
}

func (s *Server) serveContext() context.Context { return s.serveCtx }

// New creates a server. It does not start anything; Serve does.
func New(opts Options) *Server {
	opts = opts.withDefaults()
	log := opts.Logger.With("component", "xds")
	s := &Server{
		opts:    opts,
		log:     log,
		metrics: newMetrics(opts.Metrics),
		flight:  newFlightBudget(opts.MaxBytesInFlight),
		updated: make(chan struct{}, 1),
		sem:     make(chan struct{}, opts.PushConcurrency),
		proxies: map[string]*proxy{},
		streams: map[streamKey]*proxy{},
		sent:    map[streamKey]map[string]sentResponse{},
	}
	return s
}

// Update hands the server a new mesh snapshot. It never blocks: the push
// happens later, after the debounce, from Serve's goroutine. Proxies that
// connect meanwhile are served from the newest snapshot. Safe for
// concurrent use; m must not be modified afterwards.
func (s *Server) Update(m *mesh.Snapshot) {
	if m == nil {
		return
	}
	s.latest.Store(&versioned{m: m, seq: s.seq.Add(1)})
	s.metrics.updates.Inc()
	s.metrics.activity.Add(1)
	select {
	case s.updated <- struct{}{}:
	default: // a push is already pending; it will read latest
	}
}

// Pushes returns how many debounced push rounds have run.
func (s *Server) Pushes() uint64 { return s.metrics.pushRounds.Load() }

// Activity is a count that moves while the server works: responses sent
// and mesh snapshots received. Equal readings apart in time mean it
// sent nothing and was given nothing in between.
func (s *Server) Activity() uint64 { return s.metrics.activity.Load() }

// DropIdleBuffers lets the garbage collector have the response buffers
// kept for reuse (up to 8 MiB): for a quiet server about to hand its free
// memory back (gctune.ReleaseWhenQuiet). The next large responses
// allocate anew.
func (s *Server) DropIdleBuffers() { wholePool.drain() }

// ConnectedProxies returns how many distinct nodes have an open stream.
func (s *Server) ConnectedProxies() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.proxies)
}

// Serve serves ADS in plaintext on lis until ctx is done; see
// ServeEndpoints.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	return s.ServeEndpoints(ctx, Endpoint{Listener: lis})
}

// ServeEndpoints serves ADS on every endpoint until ctx is done, then
// stops gracefully (open streams are ended; after a short grace period
// connections are closed) and returns nil. It returns an error if a
// listener fails. It may be called once per Server (Serve counts); it
// closes the listeners.
func (s *Server) ServeEndpoints(ctx context.Context, eps ...Endpoint) error {
	if !s.serving.CompareAndSwap(false, true) {
		return errors.New("xds server: Serve called twice")
	}
	if len(eps) == 0 {
		return errors.New("xds server: no endpoint to serve")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	s.serveCtx = ctx // streams end when it is done (runStream)

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.debounce(ctx)
	}()
	wg.Go(func() { s.flight.sweep(ctx) })

	errc := make(chan error, len(eps))
	for _, ep := range eps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- s.serveOne(ctx, cancel, ep)
		}()
	}
	wg.Wait()
	close(errc)
	var errs []error
	for err := range errc {
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// adsMethodPrefix is the full method name prefix of the ADS streams.
const adsMethodPrefix = "/envoy.service.discovery.v3.AggregatedDiscoveryService/"

// serveOne serves one endpoint until ctx is done or its listener fails
// (which cancels the others too): its ADS streams over h2rpc
// (transport.go), its other services (ep.Register) by a gRPC server
// behind it.
func (s *Server) serveOne(ctx context.Context, cancel context.CancelFunc, ep Endpoint) error {
	lis := ep.Listener
	if ep.Credentials == nil {
		lis = connListener{Listener: lis, userTimeout: s.opts.KeepaliveTimeout}
	} else {
		lis = connListener{Listener: lis, userTimeout: s.opts.KeepaliveTimeout, wrap: newRecordConn}
	}
	hs := s.transport(ep)
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(lis) }()
	s.log.Info("serving ADS", "address", lis.Addr().String(), "tls", ep.Credentials != nil)

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		err = fmt.Errorf("xds server on %s: %w", lis.Addr(), err)
		cancel()
	}
	// By now ctx is done, so every ADS stream has ended (a clean end of
	// stream); GracefulStop sends GOAWAY and waits for the rest. Proxies
	// go to another replica at once rather than when their connection
	// dies.
	stopped := make(chan struct{})
	go func() {
		hs.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(gracefulStopTimeout):
		hs.Stop()
		<-stopped
	}
	s.log.Info("stopped serving ADS", "address", lis.Addr().String())
	return err
}
