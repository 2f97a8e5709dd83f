// Package controlplane wires Weft's control plane together: a watched
// config directory feeds the config store (with the traffic-impact guard
// judging every change), the static registry is built from it, the JWT
// keys the RequestAuthentications name are fetched (internal/jwks), they
// become a mesh snapshot, and the xDS server pushes it to proxies. The
// mesh CA signs workload certificates; ADS and the CA are served over TLS
// on the secure port (plaintext ADS only when asked for). A small HTTP
// endpoint reports status and Prometheus metrics and issues bootstrap
// tokens to local operators.
package controlplane

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	meshconfig "istio.io/api/mesh/v1alpha1"
	security "istio.io/api/security/v1beta1"

	"weft.dev/weft/internal/ca"
	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/credentials"
	"weft.dev/weft/internal/gctune"
	"weft.dev/weft/internal/guard"
	"weft.dev/weft/internal/inject/webhook"
	"weft.dev/weft/internal/jwks"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry"
	"weft.dev/weft/internal/registry/aggregate"
	"weft.dev/weft/internal/registry/autoreg"
	"weft.dev/weft/internal/residency"
	"weft.dev/weft/internal/xds/server"
)

// Default listen addresses.
const (
	// DefaultXDSAddress is the secure port: ADS and the CA over TLS.
	DefaultXDSAddress    = "127.0.0.1:15012"
	DefaultStatusAddress = "127.0.0.1:15014"
	// StatusDisabled as Options.StatusAddress turns the status endpoint off.
	StatusDisabled = "-"
)

// Options configure a ControlPlane.
type Options struct {
	// ConfigDir holds the Istio YAML files; "" means none (config comes
	// only from ConfigSources, which must then be given).
	ConfigDir string
	// XDSAddress is the secure port, where ADS and the CA are served over
	// TLS with the control plane's serving certificate; "" means
	// DefaultXDSAddress.
	XDSAddress string
	// XDSPlaintextAddress, when set, also serves ADS without TLS (no CA,
	// no identity check): for local development only.
	XDSPlaintextAddress string
	// CADir keeps the CA's root and key (see ca.Options.Dir); "" keeps a
	// new root in memory, so a restart makes a new trust root.
	CADir string
	// TrustDomain of the mesh's identities; "" means cluster.local.
	TrustDomain string
	// WorkloadCertTTL is the lifetime of workload certificates; zero means
	// 24h. `weft serve` refuses less than a minute; anything from
	// ca.MinWorkloadCertTTL up is accepted here (tests).
	WorkloadCertTTL time.Duration
	// StatusAddress serves /status, /metrics and /debug/*; ""
	// means DefaultStatusAddress, StatusDisabled means none.
	StatusAddress string
	// DomainSuffix is the cluster domain; "" means cluster.local.
	DomainSuffix string
	// RootNamespace holds mesh-wide policies (PeerAuthentication,
	// AuthorizationPolicy, RequestAuthentication); "" means istio-system.
	RootNamespace string
	// OutboundTrafficPolicy is what captured proxies do with traffic to
	// destinations the mesh does not know; "" means mesh.AllowAny.
	OutboundTrafficPolicy mesh.OutboundTrafficPolicy
	// EgressScope is what a proxy without a Sidecar resource is sent; ""
	// means mesh.EgressScopeMesh (every service).
	EgressScope mesh.EgressScope
	// HTTP10 makes every proxy accept HTTP/1.0 requests (Istio's
	// PILOT_HTTP10); otherwise only those whose node asks, and the
	// others answer them 426 Upgrade Required.
	HTTP10 bool
	// Tracing is the mesh's default tracing (mesh config
	// defaultProviders.tracing and its opentelemetry provider); nil: the
	// proxies trace nothing. New validates it.
	Tracing *mesh.Tracing
	// MeshConfig is Istio's mesh config (config.LoadMeshConfig): the
	// telemetry providers Telemetry resources name. nil means
	// config.DefaultMeshConfig(). Not modified after New.
	MeshConfig *meshconfig.MeshConfig
	// JWKSRefresh is how often the JWT keys of jwksUri are fetched again;
	// 0 means jwks.DefaultRefresh (20m, as Istio).
	JWKSRefresh time.Duration
	// ConfigSources supply config besides ConfigDir (the Kubernetes API
	// server's Istio objects): their virtual files are loaded together
	// with the directory's. A source that also implements config.Reporter
	// is told the outcome of every load.
	ConfigSources []config.Source
	// Registries supply services, endpoints and workloads besides the
	// config's ServiceEntries (Kubernetes, Consul); see
	// internal/registry/aggregate for how they merge.
	Registries []registry.Source
	// Credentials, when set, supply the Secrets gateways name by
	// credentialName (the Kubernetes API's); the xDS server sends each
	// verified gateway those of its namespace it asks for.
	Credentials credentials.Source
	// Authenticators are tried by the CA after client certificates and
	// bootstrap tokens (Kubernetes service-account tokens).
	Authenticators []ca.Authenticator
	// RootPublishers distribute the mesh's root certificate (to every
	// Kubernetes namespace, for pods to mount); each runs with the root
	// until the control plane stops.
	RootPublishers []RootPublisher
	// AutoRegistrationGrace is how long a VM registered by WorkloadGroup
	// stays after its proxy disconnects; 0 means autoreg.DefaultGrace.
	AutoRegistrationGrace time.Duration
	// SourceSyncTimeout bounds the wait for ConfigSources and Registries
	// to sync before the first mesh is served; 0 means
	// DefaultSourceSyncTimeout.
	SourceSyncTimeout time.Duration
	// Injection, when set, serves the sidecar injection webhook
	// (internal/inject/webhook) on its own TLS listener, with a serving
	// certificate from the mesh CA. It needs Injection.Client.
	Injection *webhook.Options
	// Debounce and DebounceMax tune xDS push debouncing (see server.Options).
	Debounce, DebounceMax time.Duration
	// PageOutStartup pages out the executable's start-up-only pages
	// StartupPagesDelay after the first config is published (package
	// residency). `weft serve` sets it (unless --keep-startup-pages); a
	// control plane embedded in another program leaves it off.
	PageOutStartup bool
	// ReleaseWhenQuiet, when positive, hands the heap's free memory back
	// to the operating system once the xDS server has sent nothing and
	// been given nothing for this long (gctune.ReleaseWhenQuiet): after a
	// push to thousands of proxies the garbage it left would otherwise
	// stay resident until the next. `weft serve` sets
	// DefaultReleaseWhenQuiet unless told otherwise.
	ReleaseWhenQuiet time.Duration
	Logger           *slog.Logger
}

// DefaultReleaseWhenQuiet is `weft serve`'s Options.ReleaseWhenQuiet.
const DefaultReleaseWhenQuiet = 30 * time.Second

// StartupPagesDelay is how long after the first config is published the
// control plane pages out the executable's pages that only start-up used:
// time for its proxies to connect, or reconnect after a restart, and get
// their first config.
const StartupPagesDelay = 30 * time.Second

// RootPublisher distributes the mesh's root certificate (see
// internal/ca/kuberoot). Run returns nil once ctx is done.
type RootPublisher interface {
	Run(ctx context.Context, rootPEM []byte) error
}

// ControlPlane is one running control plane. Create it with New, run it
// once with Run.
type ControlPlane struct {
	opts       Options
	log        *slog.Logger
	store      *config.Store
	xds        *server.Server
	jwks       *jwks.Fetcher
	metrics    *prometheus.Registry
	ca         *ca.CA
	serving    *ca.ServingCert
	autoreg    *autoreg.Registry // VMs registered by WorkloadGroup
	inject     *webhook.Server   // nil without Options.Injection
	regMemo    registryMemo      // the last registries built (buildRegistry)
	staticMemo staticMemo        // the last static registry built (buildRegistry)
	// portsOf is knownHosts' port list of each service it last saw; only
	// runConfig's goroutine uses it.
	portsOf map[*registry.Service]string

	// publishMu serializes building and pushing mesh snapshots: config
	// changes (apply) and JWT key changes (keysChanged) both do.
	publishMu sync.Mutex
	lastCfg   *config.Snapshot // guarded by publishMu
	// lastConflicts are the registry conflicts of the mesh in force;
	// guarded by publishMu.
	lastConflicts []aggregate.Conflict
	runCtx        context.Context // set by Run before anything calls apply

	xdsLis, plainLis, statusLis net.Listener
	current                     atomic.Pointer[mesh.Snapshot]
	conflicts                   atomic.Pointer[[]string] // registry conflicts in force, for /status
	running                     atomic.Bool
	published                   chan struct{} // closed by the first publish (publishedOnce)
	publishedOnce               sync.Once
}

// New validates opts, loads or creates the CA and binds the listeners, so
// the caller can read XDSAddr and StatusAddr (useful with ":0" ports) and
// issue tokens before calling Run. It does not start serving. If Run is
// never called, the listeners leak; callers that give up must call Run
// with a cancelled context.
func New(opts Options) (*ControlPlane, error) {
	if opts.ConfigDir == "" && len(opts.ConfigSources) == 0 {
		return nil, errors.New("controlplane: a config directory or a config source (Kubernetes) is required")
	}
	if opts.Tracing != nil {
		if err := opts.Tracing.Validate(); err != nil {
			return nil, fmt.Errorf("controlplane: %w", err)
		}
	}
	if opts.XDSAddress == "" {
		opts.XDSAddress = DefaultXDSAddress
	}
	if opts.StatusAddress == "" {
		opts.StatusAddress = DefaultStatusAddress
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.RootNamespace == "" {
		opts.RootNamespace = config.DefaultRootNamespace
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	c := &ControlPlane{
		opts:      opts,
		log:       opts.Logger.With("component", "controlplane"),
		metrics:   reg,
		autoreg:   autoreg.New(autoreg.Options{Grace: opts.AutoRegistrationGrace, Logger: opts.Logger}),
		published: make(chan struct{}),
	}
	reg.MustRegister(conflictMetrics{c})
	c.xds = server.New(server.Options{
		Debounce:     opts.Debounce,
		DebounceMax:  opts.DebounceMax,
		Logger:       opts.Logger,
		Metrics:      reg,
		OnConnect:    c.autoreg.Connect,
		OnDisconnect: c.autoreg.Disconnect,
	})
	g := &guard.Guard{Registry: c.registryOf, DomainSuffix: opts.DomainSuffix}
	storeOpts := config.Options{DomainSuffix: opts.DomainSuffix, RootNamespace: opts.RootNamespace, Logger: opts.Logger, Admit: g.Admit}
	if len(opts.Registries) > 0 {
		storeOpts.KnownHost = c.knownHost
	}
	c.store = config.NewStore(storeOpts)
	c.jwks = jwks.NewFetcher(jwks.Options{Refresh: opts.JWKSRefresh, Logger: opts.Logger, OnChange: c.keysChanged})
	var err error
	if c.ca, err = ca.New(ca.Options{Dir: opts.CADir, TrustDomain: opts.TrustDomain, WorkloadCertTTL: opts.WorkloadCertTTL,
		Logger: opts.Logger}); err != nil {
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	if c.xdsLis, err = net.Listen("tcp", opts.XDSAddress); err != nil {
		return nil, fmt.Errorf("controlplane: xds listener on %s: %w", opts.XDSAddress, err)
	}
	host, _, _ := net.SplitHostPort(c.xdsLis.Addr().String())
	if c.serving, err = c.ca.ServingCert([]string{host}); err != nil {
		c.xdsLis.Close()
		return nil, fmt.Errorf("controlplane: %w", err)
	}
	if opts.XDSPlaintextAddress != "" {
		if c.plainLis, err = net.Listen("tcp", opts.XDSPlaintextAddress); err != nil {
			c.xdsLis.Close()
			return nil, fmt.Errorf("controlplane: plaintext xds listener on %s: %w", opts.XDSPlaintextAddress, err)
		}
	}
	if opts.StatusAddress != StatusDisabled {
		if c.statusLis, err = net.Listen("tcp", opts.StatusAddress); err != nil {
			c.xdsLis.Close()
			if c.plainLis != nil {
				c.plainLis.Close()
			}
			return nil, fmt.Errorf("controlplane: status listener on %s: %w", opts.StatusAddress, err)
		}
	}
	if opts.Injection != nil {
		if c.inject, err = webhook.New(*opts.Injection, c.ca); err != nil {
			for _, l := range []net.Listener{c.xdsLis, c.plainLis, c.statusLis} {
				if l != nil {
					l.Close()
				}
			}
			return nil, fmt.Errorf("controlplane: %w", err)
		}
	}
	return c, nil
}

// InjectionAddr is the bound injection webhook address, or nil when off.
func (c *ControlPlane) InjectionAddr() net.Addr {
	if c.inject == nil {
		return nil
	}
	return c.inject.Addr()
}

// XDSAddr is the bound secure (TLS) ADS and CA address.
func (c *ControlPlane) XDSAddr() net.Addr { return c.xdsLis.Addr() }

// XDSPlaintextAddr is the bound plaintext ADS address, or nil when off.
func (c *ControlPlane) XDSPlaintextAddr() net.Addr {
	if c.plainLis == nil {
		return nil
	}
	return c.plainLis.Addr()
}

// StatusAddr is the bound status address, or nil when disabled.
func (c *ControlPlane) StatusAddr() net.Addr {
	if c.statusLis == nil {
		return nil
	}
	return c.statusLis.Addr()
}

// Pushes is the number of debounced xDS push rounds so far.
func (c *ControlPlane) Pushes() uint64 { return c.xds.Pushes() }

// Run watches the config directory and serves xDS and status until ctx is
// done, then shuts everything down and returns nil once every goroutine it
// started has ended. It returns an error early if the config directory
// cannot be watched or a listener fails. Run may be called once.
func (c *ControlPlane) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("controlplane: Run called twice")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c.runCtx = ctx

	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	fail := func(err error) {
		if err != nil {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
			cancel()
		}
	}
	wg.Go(func() { fail(c.xds.ServeEndpoints(ctx, c.endpoints()...)) })
	if c.statusLis != nil {
		wg.Go(func() { fail(c.serveStatus(ctx)) })
	}
	wg.Go(func() { fail(c.jwks.Run(ctx)) })
	for _, p := range c.opts.RootPublishers {
		wg.Go(func() { fail(p.Run(ctx, c.ca.RootPEM())) })
	}
	if c.inject != nil {
		wg.Go(func() { fail(c.inject.Run(ctx)) })
	}
	if c.opts.PageOutStartup {
		wg.Go(func() { c.pageOutStartup(ctx) })
	}
	if c.opts.ReleaseWhenQuiet > 0 {
		wg.Go(func() {
			gctune.ReleaseWhenQuiet(ctx, c.xds.Activity, c.opts.ReleaseWhenQuiet, c.xds.DropIdleBuffers, func(before, after uint64) {
				c.log.Debug("quiet: heap memory handed back", "heap_resident_mib_before", before>>20, "after", after>>20)
			})
		})
	}
	wg.Go(func() {
		if err := c.runConfig(ctx); err != nil {
			fail(fmt.Errorf("controlplane: %w", err))
		}
	})
	plain := "off"
	if a := c.XDSPlaintextAddr(); a != nil {
		plain = a.String()
	}
	c.log.Info("control plane running", "config", c.opts.ConfigDir, "xds", c.XDSAddr().String(), "xds_plaintext", plain,
		"ca", c.ca.Mode(), "trust_domain", c.ca.TrustDomain())
	wg.Wait()
	c.log.Info("control plane stopped")
	return errors.Join(errs...)
}

// apply turns a config snapshot into a mesh snapshot and hands it to the
// xDS server, after fetching the JWT keys of jwksUris it names for the
// first time (bounded by each rule's timeout, so a new
// RequestAuthentication verifies tokens from its first push; a failure is
// reported and retried, never fails the config). Called from runConfig's
// goroutine, never concurrently.
func (c *ControlPlane) apply(cfg *config.Snapshot) {
	c.publishMu.Lock()
	defer c.publishMu.Unlock()
	c.jwks.Sync(c.runCtx, jwtSources(cfg))
	c.autoreg.SetGroups(cfg)
	c.lastCfg = cfg
	c.publish(cfg)
}

// keysChanged pushes the config in force again with the JWT keys the
// fetcher refreshed. Called from the fetcher's goroutine.
func (c *ControlPlane) keysChanged() {
	c.publishMu.Lock()
	defer c.publishMu.Unlock()
	if c.lastCfg != nil {
		c.publish(c.lastCfg)
	}
}

// publish builds the mesh snapshot of cfg with the keys fetched so far and
// pushes it. The caller holds publishMu.
func (c *ControlPlane) publish(cfg *config.Snapshot) {
	reg, conflicts := c.buildRegistry(cfg)
	c.recordConflicts(conflicts)
	prev := c.current.Load()
	m := mesh.BuildFrom(prev, cfg, reg, c.meshOptions())
	if prev != nil && prev.Version == m.Version {
		// Same config, services, endpoints and keys: nothing a proxy is
		// sent changed (a Pod that no Service selects yet, a registry
		// echo). No push round.
		return
	}
	c.current.Store(m)
	c.xds.Update(m)
	c.publishedOnce.Do(func() { close(c.published) })
	if prev == nil || prev.Config != cfg {
		c.log.Info("config applied", "version", m.Version, "services", len(reg.Services()), "diagnostics", len(cfg.Diagnostics))
		c.warnCustomProviders(m, cfg)
	} else {
		c.log.Debug("registry change pushed", "version", m.Version, "services", len(reg.Services()))
	}
}

// warnCustomProviders logs each CUSTOM AuthorizationPolicy whose
// extension provider cannot be used: the config store cannot tell (the
// providers are the mesh config's), and its requests are then denied.
func (c *ControlPlane) warnCustomProviders(m *mesh.Snapshot, cfg *config.Snapshot) {
	for _, ap := range cfg.AuthorizationPolicies {
		if ap.Spec.GetAction() != security.AuthorizationPolicy_CUSTOM {
			continue
		}
		if _, why := m.ExtAuthzProvider(ap.Spec.GetProvider().GetName()); why != "" {
			c.log.Warn("CUSTOM AuthorizationPolicy fails closed: the requests its rules match are denied",
				"policy", ap.Namespace+"/"+ap.Name, "file", ap.File, "reason", why)
		}
	}
}

// meshOptions are the settings every mesh snapshot is built with.
func (c *ControlPlane) meshOptions() mesh.Options {
	var creds *credentials.Set
	if c.opts.Credentials != nil {
		creds = c.opts.Credentials.Current()
	}
	return mesh.Options{DomainSuffix: c.opts.DomainSuffix, RootNamespace: c.opts.RootNamespace, TrustDomain: c.ca.TrustDomain(), JWKS: c.jwks.Keys(), OIDC: c.jwks.Discovered(),
		Credentials:           creds,
		OutboundTrafficPolicy: c.opts.OutboundTrafficPolicy, EgressScope: c.opts.EgressScope,
		MeshConfig: c.opts.MeshConfig, Tracing: c.opts.Tracing, HTTP10: c.opts.HTTP10}
}

// jwtSources lists the key sources of the JWT rules in force that do not
// carry their keys inline, with the rules that use each. Rules of
// policies attached with targetRef are left out unless a target is a
// Gateway API Gateway (the only targets Weft applies them to).
func jwtSources(cfg *config.Snapshot) []jwks.Want {
	var out []jwks.Want
	index := map[jwks.Source]int{}
	for _, ra := range cfg.RequestAuthentications {
		if targets := config.PolicyTargets(ra.Spec.GetTargetRef(), ra.Spec.GetTargetRefs()); len(targets) > 0 && !slices.ContainsFunc(targets, config.IsGatewayTarget) {
			continue
		}
		for i, r := range ra.Spec.GetJwtRules() {
			if r.GetJwks() != "" || (r.GetJwksUri() == "" && r.GetIssuer() == "") {
				continue
			}
			src := jwks.SourceOf(r.GetIssuer(), r.GetJwksUri())
			user := fmt.Sprintf("%s spec.jwtRules[%d]", ra.Meta, i)
			if j, ok := index[src]; ok {
				out[j].Users = append(out[j].Users, user)
				continue
			}
			index[src] = len(out)
			out = append(out, jwks.Want{Source: src, Users: []string{user}, Timeout: r.GetTimeout().AsDuration()})
		}
	}
	// A gateway login needs its issuer's endpoints and keys: both come
	// by OpenID discovery.
	for _, l := range cfg.OIDCLogins {
		if l.Spec.GetIssuer() == "" {
			continue
		}
		src := jwks.SourceOf(l.Spec.GetIssuer(), "")
		user := fmt.Sprintf("%s spec.issuer", l.Meta)
		if j, ok := index[src]; ok {
			out[j].Users = append(out[j].Users, user)
			continue
		}
		index[src] = len(out)
		out = append(out, jwks.Want{Source: src, Users: []string{user}})
	}
	return out
}

// serveStatus serves the status endpoint until ctx is done.
func (c *ControlPlane) serveStatus(ctx context.Context) error {
	srv := &http.Server{Handler: c.statusHandler(), ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(c.statusLis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("controlplane: status server on %s: %w", c.statusLis.Addr(), err)
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("controlplane: status server on %s: %w", c.statusLis.Addr(), err)
	}
	return nil
}

// pageOutStartup pages out the executable's pages that only start-up
// touched (package residency), once, StartupPagesDelay after the first
// config is published. The control plane links Kubernetes' and Consul's
// clients and every Envoy type it generates; much of their code and
// tables runs only while it starts. Returns when done or when ctx ends.
func (c *ControlPlane) pageOutStartup(ctx context.Context) {
	if residency.StartupOver(ctx, c.published, StartupPagesDelay) {
		residency.Release(c.log)
		residency.Settle(ctx)
	}
}
