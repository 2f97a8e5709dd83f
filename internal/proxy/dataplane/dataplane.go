// Package dataplane is the Go proxy's data plane orchestrator: it
// translates one complete set of xDS resources (xdsclient.Resources) into
// an immutable runtime — listeners with their filter chains, TLS
// (tlssocket) and HTTP filters (filter/...), route tables (route),
// clusters (cluster) — carrying over what an update leaves unchanged, and
// swaps it in atomically. It binds the listeners, picks each new
// connection's filter chain as Envoy does (the original destination, the
// TLS and HTTP inspectors, Envoy's match order, mutual TLS handshakes:
// serve.go, chainmatch.go) and hands each request to the request path
// (forward) with the runtime it started on, or a tcp_proxy chain's
// connection to the TCP proxy (tcpproxy). A listener that an update removes drains: it keeps serving
// on its last runtime for Options.ListenerDrain, telling clients to
// reconnect elsewhere, before it closes (listeners.go). It also renders
// the config dump and answers, for weft explain, which route a request
// takes (MatchRoute).
//
// Threading: Apply, Close, ListenerAddr and ConfigDump may be called from any
// goroutine (Apply is serialized internally). Request handling never takes a
// global lock: it loads the current runtime from an atomic pointer and keeps
// using that runtime until the request ends.
package dataplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"weft.dev/weft/internal/proxy/accesslog"
	"weft.dev/weft/internal/proxy/cluster"
	"weft.dev/weft/internal/proxy/filter"
	"weft.dev/weft/internal/proxy/filter/extauthz"
	"weft.dev/weft/internal/proxy/filter/globalratelimit"
	"weft.dev/weft/internal/proxy/filter/oauth2"
	"weft.dev/weft/internal/proxy/filter/ratelimit"
	"weft.dev/weft/internal/proxy/filter/rbac"
	"weft.dev/weft/internal/proxy/forward"
	"weft.dev/weft/internal/proxy/origdst"
	"weft.dev/weft/internal/proxy/tcpproxy"
	"weft.dev/weft/internal/proxy/telemetry"
	"weft.dev/weft/internal/proxy/tlssocket"
	"weft.dev/weft/internal/proxy/tracing"
	"weft.dev/weft/internal/proxy/upstream"
	"weft.dev/weft/internal/proxy/xdsclient"
	"weft.dev/weft/internal/xds/contract"
)

// Options configures a Dataplane.
type Options struct {
	Identity contract.Identity     // this proxy's own identity (workload, namespace, labels, IPs…)
	Metrics  prometheus.Registerer // where istio_* metrics go; nil = a private registry
	Logger   *slog.Logger          // nil = discard
	// ListenerDrain is how long a listener removed by an update keeps
	// accepting and serving, on the configuration it was last part of,
	// while clients learn of the change; every response meanwhile carries
	// Connection: close (HTTP/1.1) or a GOAWAY (HTTP/2). Zero means
	// DefaultListenerDrain.
	ListenerDrain time.Duration
	// Secrets serve the SDS secrets "default" (the workload certificate)
	// and "ROOTCA" (the mesh root) the listeners' and clusters' TLS
	// contexts name, read at every handshake; nil for a proxy without a
	// certificate (its TLS handshakes fail).
	Secrets tlssocket.Secrets
	// Principal is the SPIFFE ID of the proxy's workload certificate ("" without one):
	// By= in x-forwarded-client-cert, this side in the security metric labels.
	Principal string
	// MaxConnectionsPerListener bounds the connections each listener
	// holds open at once (0: no limit, Envoy's default). A connection
	// accepted over the limit is closed at once, without a response, and
	// counted in envoy_listener_downstream_cx_overflow, as Envoy's
	// per-listener limit (runtime
	// envoy.resource_limits.listener.<name>.connection_limit) does.
	MaxConnectionsPerListener int
	// MaxConnections bounds the connections all listeners together hold
	// open at once (0: no limit), as Envoy's overload manager's
	// global_downstream_max_connections: a connection accepted over it
	// is closed at once and counted in
	// envoy_listener_downstream_global_cx_overflow.
	MaxConnections int
	// Overload, when set, sheds load while the proxy is short of memory:
	// new connections are closed at once (counted in
	// envoy_listener_downstream_cx_overload_reject) while
	// RejectIncomingConnections, and every response closes its
	// connection while DisableHTTPKeepalive (overload.Manager).
	Overload Overload
	// OriginalDst returns the destination a redirected connection's
	// client dialled, for listeners with use_original_dst; nil means
	// origdst.OriginalDst (SO_ORIGINAL_DST). Tests set it to fake a
	// redirect. Called on the connection's setup goroutine.
	OriginalDst func(net.Conn) (netip.AddrPort, error)
	// Resolver resolves the names of STRICT_DNS and LOGICAL_DNS clusters
	// (ServiceEntries with resolution DNS); nil means the system's
	// (cluster.SystemResolver).
	Resolver cluster.Resolver
}

// Overload is the state of the overload actions the data plane obeys.
// Its methods are called on every accepted connection and request, from
// many goroutines, and must be cheap and lock-free.
type Overload interface {
	RejectIncomingConnections() bool
	DisableHTTPKeepalive() bool
}

// dnsWarmTimeout bounds the first DNS lookups of the clusters an update
// adds, made before the update is applied (Envoy's cluster warming): a
// cluster whose names did not resolve in time starts without those hosts
// and keeps resolving.
const dnsWarmTimeout = 5 * time.Second

// Dataplane serves the listeners of the last applied configuration.
type Dataplane struct {
	opts     Options
	log      *slog.Logger
	clusters cluster.Builder    // builds clusters with this proxy's metrics and identity
	fwd      *forward.Forwarder // the request path
	tcp      *tcpproxy.Proxy    // tcp_proxy chains
	metrics  *telemetry.Metrics // istio_* label interning
	// originalDst is Options.OriginalDst or origdst.OriginalDst.
	originalDst func(net.Conn) (netip.AddrPort, error)
	filters     filter.Registry // the HTTP filters, with this proxy's metrics and logger

	listenerStats *listenerStats // envoy_listener_* (serve.go)
	// reg is where the metrics go; metric overrides (istio.stats) add
	// their series families there.
	reg       prometheus.Registerer
	exporters *tracing.Exporters // span exporters, kept across updates (tracing.go)
	// accessLogs are the access log files the connection managers write,
	// shared across configurations; closed by Close.
	accessLogs *accesslog.Sinks

	rt    atomic.Pointer[runtime] // never nil after New
	ready atomic.Bool

	// baseCtx is the parent of every request context; cancelled only when
	// Close gives up waiting. graceCtx ends the drain periods of removed
	// listeners (at Close); drainCtx then bounds their in-flight requests.
	baseCtx, graceCtx, drainCtx       context.Context
	cancelBase, endGrace, cancelDrain context.CancelFunc
	wg                                sync.WaitGroup // serve and drain goroutines
	listenerDrain                     time.Duration
	drainingCount                     atomic.Int64 // len(draining), for metrics
	// activeConns counts the connections all listeners hold, for
	// Options.MaxConnections (serve.go).
	activeConns atomic.Int64

	mu    sync.Mutex // serializes Apply, Close and ListenerAddr; never taken per request
	bound map[string]*boundListener
	// draining holds the removed listeners that still accept (listeners.go).
	draining map[*boundListener]struct{}
	closed   bool
	// retired pools may still carry requests that started before an update;
	// Close closes their connections once everything has drained.
	retired []retiredPool
}

// retiredPool is a cluster whose state (pool, outlier detection) no
// running configuration uses any more.
type retiredPool struct {
	c  *cluster.Cluster
	at time.Time
}

var _ xdsclient.Applier = (*Dataplane)(nil)

// New creates a data plane with an empty configuration: no listener is bound
// until the first successful Apply.
func New(opts Options) (*Dataplane, error) {
	d := &Dataplane{opts: opts, log: opts.Logger, bound: map[string]*boundListener{},
		draining: map[*boundListener]struct{}{}, listenerDrain: opts.ListenerDrain}
	if d.listenerDrain <= 0 {
		d.listenerDrain = DefaultListenerDrain
	}
	if d.log == nil {
		d.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	d.log = d.log.With("component", "dataplane")
	d.exporters = tracing.NewExporters(d.log)
	reg := opts.Metrics
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	d.reg = reg
	metrics, err := telemetry.NewMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("dataplane: metrics: %w", err)
	}
	clusterStats, err := cluster.NewStatVecs(reg)
	if err != nil {
		return nil, fmt.Errorf("dataplane: metrics: %w", err)
	}
	d.clusters = cluster.Builder{Metrics: metrics, Stats: clusterStats, Identity: opts.Identity, Secrets: opts.Secrets,
		Resolver: opts.Resolver, Logger: d.log}
	if d.listenerStats, err = newListenerStats(reg); err != nil {
		return nil, fmt.Errorf("dataplane: metrics: %w", err)
	}
	if err := reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "weft_proxy_listeners_draining",
		Help: "Listeners removed by an update that still serve while clients learn of the change.",
	}, func() float64 { return float64(d.drainingCount.Load()) })); err != nil {
		return nil, fmt.Errorf("dataplane: metrics: %w", err)
	}
	if err := reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "envoy_server_total_connections",
		Help: "Downstream connections all listeners hold open (Envoy's server.total_connections).",
	}, func() float64 { return float64(d.activeConns.Load()) })); err != nil {
		return nil, fmt.Errorf("dataplane: metrics: %w", err)
	}
	if d.accessLogs, err = accesslog.NewSinks(accesslog.SinksOptions{Registerer: reg, Logger: d.log}); err != nil {
		return nil, fmt.Errorf("dataplane: metrics: %w", err)
	}
	rbacStats, err := rbac.NewStats(reg)
	if err != nil {
		return nil, fmt.Errorf("dataplane: metrics: %w", err)
	}
	rateLimitStats, err := ratelimit.NewStats(reg)
	if err != nil {
		return nil, fmt.Errorf("dataplane: metrics: %w", err)
	}
	globalRateLimitStats, err := globalratelimit.NewStats(reg)
	if err != nil {
		return nil, fmt.Errorf("dataplane: metrics: %w", err)
	}
	extAuthzStats, err := extauthz.NewStats(reg)
	if err != nil {
		return nil, fmt.Errorf("dataplane: metrics: %w", err)
	}
	genericSecrets, _ := opts.Secrets.(oauth2.Secrets) // a gateway's credential directory
	d.filters = newHTTPFilters(filterOptions{log: d.log, rbacStats: rbacStats, rateLimitStats: rateLimitStats,
		globalRateLimitStats: globalRateLimitStats, extAuthzStats: extAuthzStats, secrets: genericSecrets})
	if d.fwd, err = forward.New(forward.Options{Identity: opts.Identity, Metrics: metrics,
		ClusterStats: clusterStats, Registerer: reg, Logger: d.log, Principal: opts.Principal}); err != nil {
		return nil, fmt.Errorf("dataplane: %w", err)
	}
	tcpMetrics, err := telemetry.NewTCPMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("dataplane: metrics: %w", err)
	}
	d.metrics = metrics
	self := metrics.InternSrc(telemetry.IdentitySrc(opts.Identity))
	unknownPeer := metrics.InternSrc(telemetry.SrcLabels{Workload: telemetry.Unknown, Namespace: telemetry.Unknown,
		App: telemetry.Unknown, Version: telemetry.Unknown})
	d.tcp = &tcpproxy.Proxy{Metrics: tcpMetrics, Self: self, Peer: unknownPeer, Logger: d.log, Node: telemetry.NewNode(opts.Identity)}
	d.originalDst = opts.OriginalDst
	if d.originalDst == nil {
		d.originalDst = origdst.OriginalDst
	}
	d.baseCtx, d.cancelBase = context.WithCancel(context.Background())
	d.graceCtx, d.endGrace = context.WithCancel(context.Background())
	d.drainCtx, d.cancelDrain = context.WithCancel(context.Background())
	d.rt.Store(&runtime{res: &xdsclient.Resources{}})
	return d, nil
}

// Apply translates r and, if it is valid and every new listener could be
// bound, makes it the running configuration. On error nothing changes and
// the error (naming the resource and field) should be sent as a NACK.
// Implements xdsclient.Applier. Safe to call from any goroutine; calls are
// serialized. It never waits for requests.
func (d *Dataplane) Apply(r *xdsclient.Resources) error {
	if r == nil {
		return errors.New("dataplane: nil resources")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errors.New("dataplane: closed")
	}
	prev := d.rt.Load()
	rt, err := d.translate(r, prev)
	if err != nil {
		return err
	}
	// Names of new DNS clusters are resolved before they serve.
	wctx, cancel := context.WithTimeout(context.Background(), dnsWarmTimeout)
	cluster.Warm(wctx, rt.clusters)
	cancel()

	// Bind new listeners first: a bind failure leaves everything as it was
	// (except drains cut short for the address, see bindOverDrains). A
	// listener added back while it drains takes over its old socket.
	next := make(map[string]*boundListener, len(rt.listeners))
	var opened, reclaimed []*boundListener
	for _, name := range sortedKeys(rt.listeners) {
		lc := rt.listeners[name]
		if bl := d.bound[name]; bl != nil && bl.addr == lc.addr {
			next[name] = bl
			continue
		}
		if bl := d.reclaimable(name, lc.addr); bl != nil {
			reclaimed = append(reclaimed, bl)
			next[name] = bl
			continue
		}
		bl, err := d.bindOverDrains(lc)
		if err != nil {
			for _, o := range opened {
				o.ln.Close()
			}
			return fmt.Errorf("listener %q: bind %s: %w", name, lc.addr, err)
		}
		opened = append(opened, bl)
		next[name] = bl
	}
	for name, bl := range next {
		bl.last.Store(&listenerState{rt: rt, lc: rt.listeners[name]})
	}

	d.rt.Store(rt)
	d.exporters.Retain(rt.tracers)           // span exporters no listener uses any more
	d.clusters.Stats.SetCurrent(rt.clusters) // envoy_cluster_membership_*
	// Close pooled connections to endpoints that are gone.
	for _, c := range rt.clusters {
		c.RetainConnections()
	}

	for _, bl := range opened {
		bl.serve()
	}
	for _, bl := range reclaimed {
		d.reclaim(bl)
	}
	for name, bl := range d.bound {
		if next[name] != bl {
			bl.startDrain()
		}
	}
	d.bound = next
	// Pools no longer used: let idle connections go; busy ones finish their
	// requests and are reaped by IdleConnTimeout.
	now := time.Now()
	kept := d.retired[:0]
	for _, rp := range d.retired {
		if now.Sub(rp.at) < 2*upstream.IdleTimeout { // older ones have reaped their connections
			kept = append(kept, rp)
		}
	}
	d.retired = kept
	for name, c := range prev.clusters {
		if nc := rt.clusters[name]; nc == nil || !nc.SharesState(c) {
			c.CloseIdle()
			d.retired = append(d.retired, retiredPool{c, now})
		}
	}
	d.ready.Store(true)
	d.log.Info("applied configuration", "listeners", len(rt.listeners), "routes", len(rt.routes),
		"clusters", len(rt.clusters), "versions", r.Versions)
	return nil
}

// Ready reports whether a complete first configuration has been applied.
// Lock-free; safe from any goroutine.
func (d *Dataplane) Ready() bool { return d.ready.Load() }

// ListenerAddr returns the bound address of the listener with that xDS name,
// or nil if there is none.
func (d *Dataplane) ListenerAddr(name string) net.Addr {
	d.mu.Lock()
	defer d.mu.Unlock()
	if bl := d.bound[name]; bl != nil {
		return bl.ln.Addr()
	}
	return nil
}

// Close stops accepting connections, lets in-flight requests finish until
// ctx is done, then closes everything. When it returns, every goroutine the
// data plane started has ended. It returns ctx.Err() if it had to cut
// requests short. Later Applies fail.
func (d *Dataplane) Close(ctx context.Context) error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	bound := d.bound
	d.bound = map[string]*boundListener{}
	d.mu.Unlock()
	d.endGrace()  // draining listeners stop accepting now (listeners.go)
	d.fwd.Close() // shadows never hold up a shutdown

	var wg sync.WaitGroup
	var forced atomic.Bool
	for _, bl := range bound {
		wg.Go(func() {
			if err := bl.shutdown(ctx); err != nil {
				forced.Store(true)
				bl.closeNow()
			}
		})
	}
	wg.Wait()
	if forced.Load() {
		d.cancelBase()
	}
	// Draining listeners from earlier updates: give them until ctx is done.
	done := make(chan struct{})
	go func() { d.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		forced.Store(true)
		d.cancelDrain()
		d.cancelBase()
		<-done
	}
	d.endGrace()
	d.cancelDrain()
	d.cancelBase()
	// Upgraded connections (WebSockets) are no longer the HTTP servers':
	// they end as their listeners closed, and are recorded before the
	// access logs close.
	if err := d.fwd.WaitTunnels(ctx); err != nil {
		forced.Store(true)
	}
	d.mu.Lock()
	for _, c := range d.rt.Load().clusters {
		c.CloseIdle()
	}
	for _, rp := range d.retired {
		rp.c.CloseIdle()
	}
	d.retired = nil
	d.mu.Unlock()
	// Flush the spans still queued, briefly even when ctx is over.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	if err := d.exporters.Shutdown(fctx); err != nil {
		d.log.Warn("tracing: spans not flushed at shutdown", "err", err)
	}
	cancel()
	d.accessLogs.Close() // every request has ended: write what is queued
	if forced.Load() {
		return ctx.Err()
	}
	return nil
}
