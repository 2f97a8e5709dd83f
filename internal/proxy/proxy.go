// Package proxy wires the Weft proxy together: the certificate manager
// gets the workload's certificate from the control plane's CA, the xDS
// client (over TLS, presenting that certificate) feeds the data plane,
// whose mutual TLS reads the same certificate (the SDS secrets default
// and ROOTCA), and the admin endpoint reports on all of them. It owns their lifecycle:
// New binds and builds, Run serves until its context ends and then shuts
// down in order (stop taking config, drain traffic, close admin).
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc/credentials"

	"weft.dev/weft/internal/proxy/admin"
	"weft.dev/weft/internal/proxy/certs"
	"weft.dev/weft/internal/proxy/dataplane"
	"weft.dev/weft/internal/proxy/dns"
	"weft.dev/weft/internal/proxy/overload"
	"weft.dev/weft/internal/proxy/sdscreds"
	"weft.dev/weft/internal/proxy/secretdir"
	"weft.dev/weft/internal/proxy/telemetry"
	"weft.dev/weft/internal/proxy/xdsclient"
	"weft.dev/weft/internal/residency"
	"weft.dev/weft/internal/xds/contract"
)

// Defaults for zero Options fields.
const (
	DefaultAdminAddress = "127.0.0.1:15000"
	DefaultDrainTimeout = 5 * time.Second
	// DefaultListenerDrain is how long a removed listener keeps serving.
	DefaultListenerDrain = dataplane.DefaultListenerDrain
)

// Options configure a Proxy. Identity.ID and XDSAddress are required, and
// RootCertPEM unless Plaintext. Identity.AdminAddress, when empty, is
// filled in with the bound admin address (see AdminAddress).
type Options struct {
	Identity contract.Identity
	// XDSAddress is the control plane's secure port (host:port), or its
	// plaintext port with Plaintext.
	XDSAddress string
	// Plaintext dials XDSAddress without TLS and runs without a workload
	// certificate, and so without mutual TLS (the node does not say
	// WEFT_MTLS): for a control plane's plaintext port in local
	// development. Otherwise the proxy does mutual TLS with its
	// certificate.
	Plaintext bool
	// RootCertPEM is the mesh's trust root: the control plane, and the
	// certificates the CA issues, must chain up to it.
	RootCertPEM []byte
	// TrustDomain of the proxy's SPIFFE ID (and the control plane's);
	// default cluster.local.
	TrustDomain string
	// Token returns the bootstrap token for the first certificate; see
	// certs.Options.Token.
	Token func() (string, error)
	// CertDir, when set, keeps the key and certificate across restarts.
	CertDir string
	// Certs tunes the certificate manager (backoff); Identity, Address,
	// RootPEM, Token, Dir and Logger are filled in by New.
	Certs certs.Options
	// AdminAddress is where the admin endpoint listens; default
	// 127.0.0.1:15000, ":0" or "127.0.0.1:0" for an ephemeral port.
	AdminAddress string
	Logger       *slog.Logger // default slog.Default()
	// DrainTimeout bounds how long in-flight requests may take to finish
	// on shutdown (default 5s).
	DrainTimeout time.Duration
	// ListenerDrain is how long a listener that the control plane removed
	// keeps serving while clients learn of the change (default
	// DefaultListenerDrain, 5s). Shutdown does not wait for it.
	ListenerDrain time.Duration
	// MaxConnectionsPerListener bounds the connections each listener
	// holds open at once; 0 means no limit (Envoy's default). See
	// dataplane.Options.
	MaxConnectionsPerListener int
	// MaxConnections bounds the connections all listeners together hold
	// open at once; 0 means no limit. See dataplane.Options.
	MaxConnections int
	// OverloadMemoryLimit turns the overload guard on: past 90 % of it
	// (Go heap objects and goroutine stacks) new connections are closed
	// at once, past 95 % every response closes its connection
	// (internal/proxy/overload). 0: off.
	OverloadMemoryLimit uint64
	// Concurrency is the worker threads (GOMAXPROCS) of the process as
	// weft-proxy --concurrency resolved it; 0: the runtime's own choice.
	// It is process-wide, so the command applies it before New (as it
	// applies the GC limit of OverloadMemoryLimit); the proxy reports
	// runtime.GOMAXPROCS in its start log line.
	Concurrency int
	// ConcurrencyMin is weft-proxy --concurrency-min as resolved: the
	// fewest Ps the command's package procscale runs the process on
	// while it is lightly loaded; 0: the Ps stay at Concurrency.
	ConcurrencyMin int
	// GCHeadroom is weft-proxy --gc-headroom: the bound on the Go heap's
	// growth above its live heap between collections (package gctune);
	// 0: off. Process-wide, so the command applies it.
	GCHeadroom uint64
	// GCHeadroomMin is weft-proxy --gc-headroom-min: with it below
	// GCHeadroom, the bound follows the allocation rate (what is
	// allocated in a second), between the two.
	GCHeadroomMin uint64
	// GCHeadroomIntake is the bound while a large configuration is taken
	// in (a quarter of GCHeadroom, or half of a --gc-headroom-min
	// given); 0: a quarter of GCHeadroom.
	GCHeadroomIntake uint64
	// HeapProfiler is weft-proxy --heap-profiler: the Go heap profiler
	// samples allocations from the start. Process-wide, so the command
	// applies it (runtime.MemProfileRate), and the proxy's start log
	// line reports the rate in force (heap_profile_rate; 0: off).
	HeapProfiler bool
	// PageOutStartup pages out the executable's start-up-only pages once
	// the first config is in force (package residency). The weft-proxy
	// command sets it (unless --keep-startup-pages); a proxy embedded in
	// another program, whose executable is not its own, leaves it off.
	PageOutStartup bool
	// DNSServers ("host:port") resolve the names of the STRICT_DNS and
	// LOGICAL_DNS clusters (ServiceEntries with resolution DNS), queried
	// in order by the proxy's DNS client, which reads the records' TTLs;
	// empty means the system's resolver (no TTLs).
	DNSServers []string
	// XDS tunes the xDS client; Address, Node, Applier and Logger are
	// filled in by New. Zero for defaults.
	XDS xdsclient.Options
	// CredentialDir, for a gateway, is the directory of TLS credentials
	// its Gateways name by credentialName (see internal/proxy/secretdir);
	// read again every CredentialPoll (default secretdir.DefaultPoll).
	CredentialDir  string
	CredentialPoll time.Duration
}

// Proxy is one running sidecar or gateway. Ready, AdminAddr and Registry
// may be called from any goroutine; Run once.
type Proxy struct {
	opts     Options
	log      *slog.Logger
	registry *telemetry.Registry // the envoy_cluster_* families are built family by family at scrape time
	dp       *dataplane.Dataplane
	xds      *xdsclient.Client
	certs    *certs.Manager  // nil with Plaintext
	creds    *secretdir.Dir  // nil without CredentialDir
	sdsCreds *sdscreds.Store // a gateway's credentials sent over ADS; nil for a sidecar or with Plaintext
	adminLn  net.Listener
	adminSrv *http.Server
	overload *overload.Manager // runs while Run does; inactive without OverloadMemoryLimit

	running  atomic.Bool
	freeing  atomic.Bool // a config dump's memory is being handed back (adminSource)
	stopping atomic.Bool
	applied  chan struct{} // closed once the first config is applied
}

// New builds the data plane and the xDS client, registers metrics in a
// registry of its own (several proxies may share a process) and binds the
// admin listener. Nothing is served until Run. If New fails, nothing is
// left open.
func New(opts Options) (*Proxy, error) {
	if opts.Identity.ID == "" {
		return nil, errors.New("proxy: Identity.ID is required")
	}
	if opts.XDSAddress == "" {
		return nil, errors.New("proxy: XDSAddress is required")
	}
	if opts.AdminAddress == "" {
		opts.AdminAddress = DefaultAdminAddress
	}
	if opts.DrainTimeout <= 0 {
		opts.DrainTimeout = DefaultDrainTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	p := &Proxy{opts: opts, log: opts.Logger.With("component", "proxy"), registry: telemetry.NewRegistry(),
		applied: make(chan struct{})}
	p.registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)

	// The admin listener is bound first: the node tells the control plane
	// where it is, so operator commands can reach the proxy by name.
	var err error
	if p.adminLn, err = net.Listen("tcp", opts.AdminAddress); err != nil {
		return nil, fmt.Errorf("proxy: admin listener on %s: %w", opts.AdminAddress, err)
	}
	if opts.Identity.AdminAddress == "" {
		opts.Identity.AdminAddress = advertisedAdmin(p.adminLn.Addr(), opts.Identity.IPs)
		p.opts.Identity.AdminAddress = opts.Identity.AdminAddress
	}
	// With a workload certificate the proxy does mutual TLS: it says so
	// in its node (WEFT_MTLS) and serves the SDS secrets its listeners'
	// and clusters' TLS contexts name from the certificate manager.
	if p.overload, err = overload.New(overload.Options{MemoryLimit: opts.OverloadMemoryLimit, Registerer: p.registry, Logger: opts.Logger}); err != nil {
		p.adminLn.Close()
		return nil, fmt.Errorf("proxy: %w", err)
	}
	dpo := dataplane.Options{Metrics: p.registry, Logger: opts.Logger, ListenerDrain: opts.ListenerDrain,
		MaxConnectionsPerListener: opts.MaxConnectionsPerListener, MaxConnections: opts.MaxConnections, Overload: p.overload}
	if len(opts.DNSServers) > 0 {
		dpo.Resolver = &dns.Client{Servers: opts.DNSServers}
	}
	if !opts.Plaintext {
		if p.certs, err = newCerts(opts); err != nil {
			p.adminLn.Close()
			return nil, fmt.Errorf("proxy: %w", err)
		}
		opts.Identity.MTLS = true
		p.opts.Identity.MTLS = true
		dpo.Secrets, dpo.Principal = secrets{p.certs}, p.certs.Identity().String()
	}
	if opts.CredentialDir != "" {
		// A gateway's credentials (credentialName) beside the workload
		// certificate: the data plane's Secrets serve both.
		if p.creds, err = secretdir.Open(opts.CredentialDir, opts.Logger); err != nil {
			p.adminLn.Close()
			return nil, fmt.Errorf("proxy: %w", err)
		}
	}
	if opts.Identity.Router() && !opts.Plaintext {
		// And those the control plane sends over ADS: it sends them only
		// to a gateway whose identity it verified (the secure port).
		p.sdsCreds = sdscreds.New(opts.Logger)
	}
	if p.creds != nil || p.sdsCreds != nil {
		dpo.Secrets = withCredentials{Secrets: orNoSecrets(dpo.Secrets), dir: p.creds, sds: p.sdsCreds}
	}
	dpo.Identity = opts.Identity
	dp, err := dataplane.New(dpo)
	if err != nil {
		p.adminLn.Close()
		return nil, fmt.Errorf("proxy: %w", err)
	}
	p.dp = dp
	xo := opts.XDS
	xo.Address, xo.Node, xo.Applier, xo.Logger = opts.XDSAddress, opts.Identity.Node(), p.firstApplied(dp), opts.Logger
	if p.sdsCreds != nil {
		xo.Secrets = p.sdsCreds
	}
	if p.certs != nil {
		xo.Credentials = credentials.NewTLS(p.certs.ControlPlaneTLS())
	}
	if p.xds, err = xdsclient.New(xo); err != nil {
		p.closeDataplane()
		return nil, fmt.Errorf("proxy: %w", err)
	}
	if err := p.registry.Register(&xdsCollector{p: p}); err != nil {
		p.closeDataplane()
		return nil, fmt.Errorf("proxy: registering xds metrics: %w", err)
	}
	if p.certs != nil {
		if err := p.registry.Register(certCollector{p.certs}); err != nil {
			p.closeDataplane()
			return nil, fmt.Errorf("proxy: registering certificate metrics: %w", err)
		}
	}

	p.adminSrv = &http.Server{
		Handler: admin.Handler(adminSource{p}, p.registry,
			admin.WithDrain(func() { p.stopping.Store(true) }),
			admin.WithCerts(p.certificates),
			admin.WithLogger(opts.Logger)),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(opts.Logger.Handler(), slog.LevelWarn),
	}
	return p, nil
}

// closeDataplane undoes New after the data plane was built.
func (p *Proxy) closeDataplane() {
	p.adminLn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = p.dp.Close(ctx)
}

// advertisedAdmin is the admin address the proxy tells the control plane
// (node metadata WEFT_ADMIN_ADDRESS): the bound address, with an
// unspecified host (0.0.0.0, ::) replaced by the first instance IP, or by
// loopback when there is none, so the address can be dialed.
func advertisedAdmin(bound net.Addr, ips []string) string {
	tcp, ok := bound.(*net.TCPAddr)
	if !ok {
		return bound.String()
	}
	host := tcp.IP.String()
	if tcp.IP == nil || tcp.IP.IsUnspecified() {
		host = "127.0.0.1"
		if len(ips) > 0 {
			host = ips[0]
		}
	}
	return net.JoinHostPort(host, strconv.Itoa(tcp.Port))
}

// AdminAddr is the bound admin address (useful with port 0).
func (p *Proxy) AdminAddr() net.Addr { return p.adminLn.Addr() }

// Ready reports whether the proxy has its workload certificate (unless
// Plaintext), has applied a complete first config, and is not shutting
// down or drained. Lock-free.
func (p *Proxy) Ready() bool {
	return !p.stopping.Load() && (p.certs == nil || p.certs.Ready()) && p.dp.Ready()
}

// Certs is the proxy's certificate manager (the workload certificate and
// the trust root, for TLS code), or nil with Plaintext.
func (p *Proxy) Certs() *certs.Manager { return p.certs }

// ListenerAddr is the bound address of a data plane listener by xDS name,
// or nil.
func (p *Proxy) ListenerAddr(name string) net.Addr { return p.dp.ListenerAddr(name) }

// XDSStats reports the xDS client's counters.
func (p *Proxy) XDSStats() xdsclient.Stats { return p.xds.Stats() }

// XDSReceived reports what the control plane has sent, by type.
func (p *Proxy) XDSReceived() xdsclient.ReceiveStats { return p.xds.Received() }

// Run serves the admin endpoint and runs the xDS client until ctx is done,
// then shuts down gracefully: readiness fails at once, the xDS client
// stops, the data plane drains for at most DrainTimeout, and the admin
// server closes last. All goroutines have ended when it returns. It
// returns nil after a clean shutdown, or the error that ended it early
// (the admin server failing). Run may be called once.
func (p *Proxy) Run(ctx context.Context) error {
	if !p.running.CompareAndSwap(false, true) {
		return errors.New("proxy: Run called more than once")
	}
	p.log.Info("proxy starting", "node", p.opts.Identity.ID, "xds_address", p.opts.XDSAddress, "admin_address", p.AdminAddr().String(),
		"gomaxprocs", runtime.GOMAXPROCS(0), "heap_profile_rate", runtime.MemProfileRate)

	adminErr := make(chan error, 1)
	go func() {
		err := p.adminSrv.Serve(p.adminLn)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		adminErr <- err
	}()
	// The overload guard watches until the data plane has drained.
	octx, stopOverload := context.WithCancel(context.Background())
	overloadDone := make(chan struct{})
	go func() { defer close(overloadDone); p.overload.Run(octx) }()
	defer func() { stopOverload(); <-overloadDone }()
	xctx, stopXDS := context.WithCancel(ctx)
	defer stopXDS()
	certsDone := make(chan error, 1)
	if p.certs != nil {
		go func() { certsDone <- p.certs.Run(xctx) }()
	} else {
		certsDone <- nil
	}
	credsDone := make(chan struct{})
	if p.creds != nil {
		go func() { defer close(credsDone); p.creds.Run(xctx, p.opts.CredentialPoll) }()
	} else {
		close(credsDone)
	}
	peakDone := make(chan struct{})
	go func() { defer close(peakDone); p.returnStartupPeak(xctx) }()
	xdsErr := make(chan error, 1)
	go func() {
		// ADS needs the workload certificate: the secure port admits a
		// stream only with it.
		if p.certs != nil {
			if err := p.certs.Wait(xctx); err != nil {
				xdsErr <- nil
				return
			}
		}
		xdsErr <- p.xds.Run(xctx)
	}()

	var runErr error
	xdsDone, adminDone := false, false
	select {
	case <-ctx.Done():
	case err := <-adminErr:
		adminDone = true
		runErr = fmt.Errorf("proxy: admin server on %s: %w", p.AdminAddr(), err)
	case err := <-xdsErr:
		xdsDone = true
		if err != nil {
			runErr = fmt.Errorf("proxy: %w", err)
		}
	}

	p.stopping.Store(true)
	p.log.Info("proxy shutting down", "drain_timeout", p.opts.DrainTimeout)
	stopXDS()
	if !xdsDone {
		if err := <-xdsErr; err != nil {
			p.log.Error("xds client", "error", err)
		}
	}
	if err := <-certsDone; err != nil {
		p.log.Error("certificate manager", "error", err)
	}
	<-credsDone
	<-peakDone
	dctx, cancel := context.WithTimeout(context.Background(), p.opts.DrainTimeout)
	defer cancel()
	if err := p.dp.Close(dctx); err != nil {
		p.log.Warn("data plane drain cut short", "error", err)
	}
	sctx, cancel2 := context.WithTimeout(context.Background(), time.Second)
	defer cancel2()
	if err := p.adminSrv.Shutdown(sctx); err != nil {
		p.adminSrv.Close()
	}
	if !adminDone {
		if err := <-adminErr; err != nil {
			p.log.Error("admin server", "error", err)
		}
	}
	p.log.Info("proxy stopped")
	return runErr
}

// adminSource adapts the Proxy to admin.Source.
type adminSource struct{ p *Proxy }

func (s adminSource) Ready() bool                 { return s.p.Ready() }
func (s adminSource) ConfigDump() ([]byte, error) { return s.p.dp.ConfigDump() }

// WriteConfigDump implements admin.DumpWriter. Rendering a large
// configuration churns through several times the proxy's live heap
// (a 1,000-service sidecar's 9.6 MB dump took its heap to ~30 MB), and
// Go's background scavenger hands that back over minutes; and it maps
// code serving never runs (protobuf's reflection, JSON), ~8 MiB of the
// binary. Once the dump is written both are handed back at once, as
// after start-up (returnStartupPeak), on a goroutine of its own so the
// response is not held up, one at a time.
func (s adminSource) WriteConfigDump(w io.Writer) error {
	err := s.p.dp.WriteConfigDump(w)
	if s.p.freeing.CompareAndSwap(false, true) {
		go func() {
			defer s.p.freeing.Store(false)
			debug.FreeOSMemory()
			if s.p.opts.PageOutStartup {
				residency.Release(s.p.log)
				residency.Settle(context.Background()) // ends by itself, seconds later
			}
		}()
	}
	return err
}

var _ admin.Source = adminSource{}

// xdsCollector exports the xDS client's counters at scrape time.
type xdsCollector struct{ p *Proxy }

var (
	descACKs       = prometheus.NewDesc("weft_proxy_xds_acks_total", "xDS responses ACKed (one per type per applied config).", nil, nil)
	descNACKs      = prometheus.NewDesc("weft_proxy_xds_nacks_total", "xDS responses NACKed.", nil, nil)
	descApplies    = prometheus.NewDesc("weft_proxy_xds_applies_total", "Complete configs applied to the data plane.", nil, nil)
	descReconnects = prometheus.NewDesc("weft_proxy_xds_reconnects_total", "ADS streams established after the first.", nil, nil)
	descConnected  = prometheus.NewDesc("weft_proxy_xds_connected", "1 while an ADS stream to the control plane is open.", nil, nil)
	descRecvRes    = prometheus.NewDesc("weft_proxy_xds_received_resources_total", "xDS resources received, by type (with delta xDS only those that changed).", []string{"type"}, nil)
	descRecvBytes  = prometheus.NewDesc("weft_proxy_xds_received_bytes_total", "Encoded size of the xDS responses received, by type.", []string{"type"}, nil)
	descReady      = prometheus.NewDesc("weft_proxy_ready", "1 once a complete first config is applied and the proxy is not draining.", nil, nil)
	descReplica    = prometheus.NewDesc("weft_proxy_xds_control_plane_info", "1 for the control plane replica (address) of the open ADS stream; absent while none is open.", []string{"address"}, nil)

	// Envoy's names where Envoy has the statistic (server.live,
	// control_plane.connected_state); Envoy-like ones, by xDS type
	// (lds, rds, cds, eds), for its per-subscription update_time,
	// update_success and update_rejected, and for the state of holding a
	// rejected config (docs/observability.md).
	descServerLive     = prometheus.NewDesc("envoy_server_live", "1 while the proxy serves and is not draining (Envoy's server.live).", nil, nil)
	descCPConnected    = prometheus.NewDesc("envoy_control_plane_connected_state", "1 while an ADS stream to the control plane is open (Envoy's control_plane.connected_state).", nil, nil)
	descUpdateTime     = prometheus.NewDesc("envoy_control_plane_xds_update_time", "When a response of the xDS type was last accepted, in milliseconds since the epoch (as Envoy's update_time); absent before the first.", []string{"type"}, nil)
	descUpdateSuccess  = prometheus.NewDesc("envoy_control_plane_xds_update_success", "Responses of the xDS type accepted (ACKed), as Envoy's update_success.", []string{"type"}, nil)
	descUpdateRejected = prometheus.NewDesc("envoy_control_plane_xds_update_rejected", "Responses of the xDS type refused (NACKed), as Envoy's update_rejected.", []string{"type"}, nil)
	descRejectedState  = prometheus.NewDesc("envoy_control_plane_xds_rejected_state", "1 while the last response of the xDS type was refused: the proxy holds an older config than the control plane sent.", []string{"type"}, nil)
)

// xdsTypes are the xDS types by their short names in metric labels.
var xdsTypes = []struct{ url, name, short string }{
	{xdsclient.TypeListener, "listener", "lds"}, {xdsclient.TypeRoute, "route", "rds"},
	{xdsclient.TypeCluster, "cluster", "cds"}, {xdsclient.TypeEndpoint, "endpoint", "eds"},
	{xdsclient.TypeVirtualHost, "virtual_host", "vhds"},
}

func (c *xdsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descACKs, descNACKs, descApplies, descReconnects, descConnected, descReady, descReplica, descRecvRes, descRecvBytes,
		descServerLive, descCPConnected, descUpdateTime, descUpdateSuccess, descUpdateRejected, descRejectedState} {
		ch <- d
	}
}

func (c *xdsCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.p.xds.Stats()
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	ch <- prometheus.MustNewConstMetric(descACKs, prometheus.CounterValue, float64(s.ACKs))
	ch <- prometheus.MustNewConstMetric(descNACKs, prometheus.CounterValue, float64(s.NACKs))
	ch <- prometheus.MustNewConstMetric(descApplies, prometheus.CounterValue, float64(s.Applies))
	ch <- prometheus.MustNewConstMetric(descReconnects, prometheus.CounterValue, float64(s.Reconnects))
	ch <- prometheus.MustNewConstMetric(descConnected, prometheus.GaugeValue, b(c.p.xds.Connected()))
	ch <- prometheus.MustNewConstMetric(descCPConnected, prometheus.GaugeValue, b(c.p.xds.Connected()))
	ch <- prometheus.MustNewConstMetric(descServerLive, prometheus.GaugeValue, b(c.p.running.Load() && !c.p.stopping.Load()))
	ch <- prometheus.MustNewConstMetric(descReady, prometheus.GaugeValue, b(c.p.Ready()))
	if s.Address != "" {
		ch <- prometheus.MustNewConstMetric(descReplica, prometheus.GaugeValue, 1, s.Address)
	}
	recv := c.p.xds.Received()
	types := c.p.xds.TypeStats()
	for _, t := range xdsTypes {
		ch <- prometheus.MustNewConstMetric(descRecvRes, prometheus.CounterValue, float64(recv.Resources[t.url]), t.name)
		ch <- prometheus.MustNewConstMetric(descRecvBytes, prometheus.CounterValue, float64(recv.Bytes[t.url]), t.name)
		ts := types[t.url]
		if !ts.LastACK.IsZero() {
			ch <- prometheus.MustNewConstMetric(descUpdateTime, prometheus.GaugeValue, float64(ts.LastACK.UnixMilli()), t.short)
		}
		ch <- prometheus.MustNewConstMetric(descUpdateSuccess, prometheus.CounterValue, float64(ts.ACKs), t.short)
		ch <- prometheus.MustNewConstMetric(descUpdateRejected, prometheus.CounterValue, float64(ts.NACKs), t.short)
		ch <- prometheus.MustNewConstMetric(descRejectedState, prometheus.GaugeValue, b(ts.Rejected), t.short)
	}
}

// firstApplied wraps the data plane's Apply to close p.applied once the
// first config is applied (for returnStartupPeak).
func (p *Proxy) firstApplied(a xdsclient.Applier) xdsclient.Applier {
	var done bool // the xDS client calls Apply from one goroutine
	return xdsclient.ApplierFunc(func(r *xdsclient.Resources) error {
		err := a.Apply(r)
		if err == nil && !done {
			done = true
			close(p.applied)
		}
		return err
	})
}

// startupPeakDelay is how long after the first config is applied the
// memory its translation used is handed back (returnStartupPeak): the
// xDS client has let go of the decoded set by then.
const startupPeakDelay = time.Second

// returnStartupPeak hands the memory that translating the first config
// needed, and the running config does not, back to the OS once, soon
// after it is applied. The first config of a sidecar of a large mesh is
// thousands of resources decoded and translated together; the heap peaks
// at several times what the runtime keeps, and Go's background scavenger
// would take minutes to return the difference. It costs one collection.
// It then pages out the executable's pages that only start-up touched
// (package residency), with Options.PageOutStartup.
// Returns when done or when ctx ends.
func (p *Proxy) returnStartupPeak(ctx context.Context) {
	if !residency.StartupOver(ctx, p.applied, startupPeakDelay) {
		return
	}
	debug.FreeOSMemory()
	if p.opts.PageOutStartup {
		residency.Release(p.log)
		residency.Settle(ctx)
	}
}
