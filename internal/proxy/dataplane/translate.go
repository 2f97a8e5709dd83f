package dataplane

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"time"
	"weft.dev/weft/internal/proxy/xdswire"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	httpinspector "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/http_inspector/v3"
	originaldst "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	tlsinspector "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"weft.dev/weft/internal/proxy/accesslog"
	"weft.dev/weft/internal/proxy/cluster"
	"weft.dev/weft/internal/proxy/filter"
	"weft.dev/weft/internal/proxy/filter/cors"
	"weft.dev/weft/internal/proxy/filter/extauthz"
	"weft.dev/weft/internal/proxy/filter/fault"
	"weft.dev/weft/internal/proxy/filter/globalratelimit"
	"weft.dev/weft/internal/proxy/filter/jwt"
	"weft.dev/weft/internal/proxy/filter/oauth2"
	"weft.dev/weft/internal/proxy/filter/ratelimit"
	"weft.dev/weft/internal/proxy/filter/rbac"
	"weft.dev/weft/internal/proxy/forward"
	"weft.dev/weft/internal/proxy/route"
	"weft.dev/weft/internal/proxy/tcpproxy"
	"weft.dev/weft/internal/proxy/telemetry"
	"weft.dev/weft/internal/proxy/tlssocket"
	"weft.dev/weft/internal/proxy/tracing"
	"weft.dev/weft/internal/proxy/xdsclient"
	"weft.dev/weft/internal/xds/contract"
)

const (
	hcmFilterName     = "envoy.filters.network.http_connection_manager"
	routerFilterName  = "envoy.filters.http.router"
	tlsInspectorName  = "envoy.filters.listener.tls_inspector"
	httpInspectorName = "envoy.filters.listener.http_inspector"
	originalDstName   = "envoy.filters.listener.original_dst"
	// defaultListenerFiltersTimeout is Envoy's listener_filters_timeout:
	// how long the TLS inspector waits for a client's first bytes.
	defaultListenerFiltersTimeout = 15 * time.Second
)

// runtime is one translated, validated Resources set. It is immutable once
// published through Dataplane.rt; request goroutines read it without locks
// and keep using the runtime they started on.
type runtime struct {
	listeners map[string]*listenerConfig
	routes    map[string]*route.Table // RDS route configurations by name
	// What each route table was compiled from, to tell an unchanged one:
	// its encoding (xdsclient.Resources.Wire), or the message when the
	// set came without one.
	routeWire map[string]xdswire.Packed
	routeCfgs map[string]proto.Message
	clusters  map[string]*cluster.Cluster
	// res is the applied set for ConfigDump: its encodings, and only the
	// messages that came without one (retained); the others are decoded
	// again when dumped.
	res     *xdsclient.Resources
	filters filter.Registry // the data plane's HTTP filters (newHTTPFilters)
	// tracers are the span exporters the listeners' tracing uses
	// (tracing.go); the others are shut down once this runtime is applied.
	tracers map[tracing.ExporterKey]bool
}

// newHTTPFilters lists the HTTP filters the proxy implements, besides the
// router. Each Dataplane has its own (the security filters count and log
// with the proxy's registry and logger, and the JWT filter reuses the
// keys of the filters it compiled before); the zero filterOptions give
// filters that count and log nothing. Immutable.
func newHTTPFilters(o filterOptions) filter.Registry {
	return filter.NewRegistry(cors.Factory{}, fault.Factory{},
		jwt.NewFactory(o.log), rbac.Factory{Stats: o.rbacStats, Logger: o.log},
		ratelimit.NewFactory(o.rateLimitStats), globalratelimit.Factory{Stats: o.globalRateLimitStats},
		extauthz.Factory{Stats: o.extAuthzStats},
		oauth2.Factory{Secrets: o.secrets, Logger: o.log})
}

// filterOptions are what the HTTP filters need of the proxy.
type filterOptions struct {
	log       *slog.Logger
	rbacStats *rbac.Stats
	// rateLimitStats count the local rate limit filters (per stat prefix).
	rateLimitStats *ratelimit.Stats
	// globalRateLimitStats count the global rate limit filters (per
	// route target cluster).
	globalRateLimitStats *globalratelimit.Stats
	// extAuthzStats count the external authorization checks.
	extAuthzStats *extauthz.Stats
	// secrets serve the OAuth2 filter's generic secrets (a gateway's
	// credential directory); nil: none.
	secrets oauth2.Secrets
}

// httpFilters parse per-route filter configs for operator tools
// (MatchRoute), which serve no request.
var httpFilters = newHTTPFilters(filterOptions{})

// listenerConfig is a translated Listener: where it binds, how it picks a
// filter chain for a new connection (listener_filters, filter chains'
// filter_chain_match: chainmatch.go) and, for each chain, its transport
// socket and what its HTTP connection manager or TCP proxy does.
type listenerConfig struct {
	name string
	addr string // host:port as configured (port may be 0 in tests)
	// useOriginalDst: a connection's local address is restored to the
	// destination its client dialled before an iptables REDIRECT
	// delivered it here (use_original_dst, envoy.filters.listener.original_dst).
	useOriginalDst bool
	// inspectTLS: the listener runs envoy.filters.listener.tls_inspector,
	// which reads a new connection's first bytes to tell TLS from
	// plaintext; without it every connection's transport protocol is
	// raw_buffer. inspectHTTP: envoy.filters.listener.http_inspector,
	// which tells HTTP/1.1 and h2c (prior knowledge) from other plaintext
	// by the first bytes (the application protocol chains match on).
	// Both wait at most inspectTimeout (listener_filters_timeout; 0: no
	// limit), and run only for the destination ports their
	// filter_disabled predicate leaves (listenerfilter.go).
	inspectTLS, inspectHTTP inspector
	// readHello: the TLS inspector reads the whole ClientHello (its SNI
	// and ALPN list), because a chain matches on server_names or
	// application_protocols.
	readHello         bool
	inspectTimeout    time.Duration
	continueOnTimeout bool // continue_on_listener_filters_timeout: a silent client is matched as it is
	chains            []*chainConfig
	index             *chainIndex  // filter_chains
	def               *chainConfig // default_filter_chain; nil: none
	// server is what the listener's http.Server allows: the most
	// permissive of its HTTP chains' limits (hcm.go). Applied when the
	// listener is bound.
	server serverLimits
}

// connFilter is one network filter deciding a TCP chain's connections:
// one of the two is set.
type connFilter struct {
	rbac  *rbac.ConnFilter
	authz *extauthz.ConnChecker
}

// chainConfig is one translated filter chain: an HTTP connection manager
// (http and its routes) or a TCP proxy (tcp).
type chainConfig struct {
	match  chainMatch        // filter_chain_match
	tls    *tlssocket.Server // its transport socket; nil: plaintext
	rds    string            // RDS route configuration name, when inline is nil
	inline *route.Table      // inline route_config
	http   forward.Listener
	tcp    *tcpproxy.Config // envoy.filters.network.tcp_proxy; nil for an HTTP chain
	// connFilters are the network filters that decide a connection
	// before a tcp_proxy (RBAC, ext_authz), in order: a connection any of
	// them refuses is closed.
	connFilters []connFilter
	limits      serverLimits // what its connection manager needs of the listener's server (HTTP chains)
	// allowChunkedLength is http_protocol_options.allow_chunked_length:
	// a request with both Content-Length and chunked Transfer-Encoding is
	// read as chunked instead of refused.
	allowChunkedLength bool
}

// match returns the chain a connection to dst with TLS server name sni
// ("": none), of transport protocol transport ("tls" or "raw_buffer")
// and application protocols apps (the ClientHello's ALPN list, or the
// HTTP inspector's verdict; none when nothing was detected) takes, or
// nil (Envoy's no_filter_chain_match).
func (lc *listenerConfig) match(dst netip.AddrPort, sni, transport string, apps []string) *chainConfig {
	if cc := lc.index.match(dst, sni, transport, apps); cc != nil {
		return cc
	}
	return lc.def
}

// appMatters reports whether the application protocol the HTTP inspector
// would find can change the chain a plaintext connection to dst takes.
// When it cannot (a captured sidecar's connection to a port without an
// HTTP chain: passthrough, black hole, a TCP service), the inspector is
// skipped: its verdict would change nothing, and waiting for the first
// bytes would hold a server-first protocol (or a client that only
// listens) for the listener filter timeout, and drop it uncounted if the
// client gave up first. Istio's per-port listeners run no HTTP inspector
// there either.
func (lc *listenerConfig) appMatters(dst netip.AddrPort) bool {
	c := lc.match(dst, "", transportRaw, nil)
	return lc.match(dst, "", transportRaw, protosHTTP11) != c || lc.match(dst, "", transportRaw, protosH2C) != c
}

// Transport protocols, as tls_inspector names them.
const (
	transportTLS = "tls"
	transportRaw = "raw_buffer"
)

// table returns the route table the chain uses in rt, or nil.
func (cc *chainConfig) table(rt *runtime) *route.Table {
	if cc.inline != nil {
		return cc.inline
	}
	return rt.routes[cc.rds]
}

// translate validates r and builds a new runtime. prev (may be nil) supplies
// state to carry over: cluster pools and compiled route tables. It is called
// only from Apply, under d.mu.
func (d *Dataplane) translate(r *xdsclient.Resources, prev *runtime) (*runtime, error) {
	rt := &runtime{
		listeners: map[string]*listenerConfig{},
		routes:    map[string]*route.Table{},
		routeWire: map[string]xdswire.Packed{},
		routeCfgs: map[string]proto.Message{},
		clusters:  map[string]*cluster.Cluster{},
		res:       r,
		filters:   d.filters,
		tracers:   map[tracing.ExporterKey]bool{},
	}
	var wire xdsclient.Wire // all nil without r.Wire
	if r.Wire != nil {
		wire = *r.Wire
	}
	// A message the xDS client did not decode for this set (nil) is
	// decoded only when what was built from its encoding cannot be
	// carried over.
	eps := cluster.AssignmentMaps{Messages: r.Endpoints, Encodings: wire.Endpoints}
	for _, name := range sortedKeys(r.Clusters) {
		var old *cluster.Cluster
		if prev != nil {
			old = prev.clusters[name]
		}
		decode := func() (*clusterv3.Cluster, error) {
			c, err := r.Cluster(name)
			if err == nil && c.GetName() != name {
				err = fmt.Errorf("name %q does not match its key", c.GetName())
			}
			if err == nil {
				c.Name = name // the xDS client's string, not a copy (sharedNames)
			}
			return c, err
		}
		ct, err := d.clusters.BuildWire(wire.Clusters[name], decode, eps, old)
		if err != nil {
			return nil, fmt.Errorf("cluster %q: %w", name, err)
		}
		if !ct.SharesState(old) {
			for _, err := range ct.Broken() {
				d.log.Warn("cluster's TLS cannot work on this host: its connections fail", "cluster", name, "err", err)
			}
		}
		rt.clusters[name] = ct
	}
	for _, name := range sortedKeys(r.Routes) {
		rc := r.Routes[name] // nil: only its encoding, rw
		rw := wire.Routes[name]
		tab := prev.unchangedRoute(name, rw, rc)
		if tab == nil {
			var err error
			if rc, err = r.Route(name); err != nil {
				return nil, fmt.Errorf("route %q: %w", name, err)
			}
			if rc.GetName() != name {
				return nil, fmt.Errorf("route %q: name %q does not match its key", name, rc.GetName())
			}
			sharedNames(rc, rt.clusters)
			if tab, err = route.Compile(rc, rt.filters); err != nil {
				return nil, fmt.Errorf("route %q: %w", name, err)
			}
		}
		rt.routes[name] = tab
		if !rw.IsZero() {
			rt.routeWire[name] = rw
		} else {
			rt.routeCfgs[name] = rc
		}
	}
	addrs := map[string]string{}
	for _, name := range sortedKeys(r.Listeners) {
		l, err := r.Listener(name)
		if err != nil {
			return nil, fmt.Errorf("listener %q: %w", name, err)
		}
		if l.GetName() != name {
			return nil, fmt.Errorf("listener %q: name %q does not match its key", name, l.GetName())
		}
		var prevLC *listenerConfig
		if prev != nil {
			prevLC = prev.listeners[name]
		}
		lc, err := d.translateListener(l, rt, prevLC)
		if err != nil {
			return nil, fmt.Errorf("listener %q: %w", name, err)
		}
		if other, dup := addrs[lc.addr]; dup && !isPortZero(lc.addr) {
			return nil, fmt.Errorf("listener %q: address %s already used by listener %q", name, lc.addr, other)
		}
		addrs[lc.addr] = name
		rt.listeners[name] = lc
	}
	rt.res = retained(r)
	return rt, nil
}

// sharedNames makes the cluster names rc's routes send to the strings of
// the clusters' own names, where there is such a cluster: a compiled
// route keeps the names it was compiled from, and a sidecar of a
// 1,000-service mesh routes to thousands of clusters (600 KB of names
// kept twice before).
func sharedNames(rc *routev3.RouteConfiguration, clusters map[string]*cluster.Cluster) {
	same := func(n *string) {
		if c := clusters[*n]; c != nil {
			*n = c.Name()
		}
	}
	for _, vh := range rc.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			a := r.GetRoute()
			if a == nil {
				continue
			}
			if c, ok := a.GetClusterSpecifier().(*routev3.RouteAction_Cluster); ok {
				same(&c.Cluster)
			}
			for _, wc := range a.GetWeightedClusters().GetClusters() {
				same(&wc.Name)
			}
		}
	}
}

// unchangedRoute returns rt's compiled table of route configuration name
// if rc (encoded as wire; zero: not known) is what it was compiled from,
// else nil. rt may be nil.
func (rt *runtime) unchangedRoute(name string, wire xdswire.Packed, rc proto.Message) *route.Table {
	if rt == nil || rt.routes[name] == nil {
		return nil
	}
	prevWire, hadWire := rt.routeWire[name]
	switch {
	case hadWire && !wire.IsZero():
		if !prevWire.Equal(wire) {
			return nil
		}
	case hadWire || !wire.IsZero():
		return nil
	case !xdswire.Equal(rt.routeCfgs[name], rc):
		return nil
	}
	return rt.routes[name]
}

// retained is what a runtime keeps of r for ConfigDump: the encodings
// of listeners and route configurations, and the messages that have none
// (an incomplete set's empty stand-ins, sets built by hand). The
// encodings of clusters and assignments are not kept here: the built
// clusters hold them (cluster.Cluster.Encodings), and a sidecar of a
// large mesh has thousands.
func retained(r *xdsclient.Resources) *xdsclient.Resources {
	if r.Wire == nil {
		return r
	}
	return &xdsclient.Resources{
		Listeners: withoutWire(r.Listeners, r.Wire.Listeners),
		Routes:    withoutWire(r.Routes, r.Wire.Routes),
		Clusters:  withoutWire(r.Clusters, r.Wire.Clusters),
		Endpoints: withoutWire(r.Endpoints, r.Wire.Endpoints),
		Versions:  r.Versions,
		Wire:      &xdsclient.Wire{Listeners: r.Wire.Listeners, Routes: r.Wire.Routes},
	}
}

func withoutWire[M any](ms map[string]M, wire map[string]xdswire.Packed) map[string]M {
	out := map[string]M{}
	for n, m := range ms {
		if _, ok := wire[n]; !ok {
			out[n] = m
		}
	}
	return out
}

// translateListener translates l; prev is the same-named listener of the
// running configuration (nil: none), whose compiled TLS configurations
// are kept where unchanged (and with them their session ticket keys).
func (d *Dataplane) translateListener(l *listener.Listener, rt *runtime, prev *listenerConfig) (*listenerConfig, error) {
	sa := l.GetAddress().GetSocketAddress()
	if sa == nil {
		return nil, fmt.Errorf("address: want a socket_address")
	}
	if sa.GetProtocol() != core.SocketAddress_TCP {
		return nil, fmt.Errorf("address.socket_address.protocol: only TCP is supported")
	}
	if _, ok := sa.GetPortSpecifier().(*core.SocketAddress_PortValue); !ok {
		return nil, fmt.Errorf("address.socket_address: want a port_value")
	}
	if sa.GetAddress() == "" {
		return nil, fmt.Errorf("address.socket_address.address: empty")
	}
	lc := &listenerConfig{
		name: l.GetName(),
		addr: net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10)),
	}
	for i, lf := range l.GetListenerFilters() {
		var disabled portPredicate
		if p := lf.GetFilterDisabled(); p != nil {
			var err error
			if disabled, err = parsePredicate(p); err != nil {
				return nil, fmt.Errorf("listener_filters[%d].filter_disabled.%w", i, err)
			}
		}
		is := func(name string, m proto.Message) bool {
			return lf.GetName() == name || (lf.GetTypedConfig() != nil && lf.GetTypedConfig().MessageIs(m))
		}
		switch {
		case is(tlsInspectorName, (*tlsinspector.TlsInspector)(nil)):
			lc.inspectTLS = inspector{on: true, disabled: disabled}
		case is(httpInspectorName, (*httpinspector.HttpInspector)(nil)):
			lc.inspectHTTP = inspector{on: true, disabled: disabled}
		case is(originalDstName, (*originaldst.OriginalDst)(nil)):
			if disabled != nil {
				return nil, fmt.Errorf("listener_filters[%d].filter_disabled: not supported on %s", i, originalDstName)
			}
			lc.useOriginalDst = true
		default:
			return nil, fmt.Errorf("listener_filters[%d] (%s): unsupported listener filter (the proxy has %s, %s and %s)",
				i, lf.GetName(), tlsInspectorName, httpInspectorName, originalDstName)
		}
	}
	if l.GetUseOriginalDst().GetValue() {
		lc.useOriginalDst = true
	}
	lc.inspectTimeout = defaultListenerFiltersTimeout
	if t := l.GetListenerFiltersTimeout(); t != nil {
		if err := t.CheckValid(); err != nil || t.AsDuration() < 0 {
			return nil, fmt.Errorf("listener_filters_timeout: invalid")
		}
		lc.inspectTimeout = t.AsDuration()
	}
	lc.continueOnTimeout = l.GetContinueOnListenerFiltersTimeout()

	var prevTLS []*tlssocket.Server
	if prev != nil {
		for _, cc := range prev.chains {
			if cc.tls != nil {
				prevTLS = append(prevTLS, cc.tls)
			}
		}
	}
	chains := l.GetFilterChains()
	fields := make([]string, 0, len(chains))
	for i, fc := range chains {
		field := fmt.Sprintf("filter_chains[%d]", i)
		cc, err := d.translateChain(fc, field, l, rt, prevTLS)
		if err != nil {
			return nil, err
		}
		lc.chains = append(lc.chains, cc)
		fields = append(fields, field)
	}
	for _, cc := range lc.chains {
		if len(cc.match.appProtos) > 0 && cc.match.transport != transportRaw || len(cc.match.names) > 0 {
			lc.readHello = lc.inspectTLS.on
		}
	}
	var err error
	if lc.index, err = buildChainIndex(lc.chains, fields); err != nil {
		return nil, err
	}
	if dfc := l.GetDefaultFilterChain(); dfc != nil {
		if lc.def, err = d.translateChain(dfc, "default_filter_chain", l, rt, prevTLS); err != nil {
			return nil, err
		}
		if m := lc.def.match; m.port != 0 || len(m.prefixes) > 0 || len(m.names) > 0 || m.transport != "" || len(m.appProtos) > 0 {
			return nil, fmt.Errorf("default_filter_chain.filter_chain_match: must be empty")
		}
		lc.chains = append(lc.chains, lc.def)
	}
	if len(lc.chains) == 0 {
		return nil, fmt.Errorf("filter_chains: want at least one filter chain")
	}
	first := true
	for _, cc := range lc.chains {
		if cc.tcp != nil {
			continue
		}
		if first {
			lc.server, first = cc.limits, false
		} else {
			lc.server.widen(cc.limits)
		}
	}
	if first { // no HTTP chain: Envoy's defaults for the server that refuses plaintext HTTP
		lc.server, _ = chainLimits(new(forward.Limits), &hcm.HttpConnectionManager{}, "")
	}
	return lc, nil
}

// translateChain translates one filter chain of l: its match, transport
// socket and HTTP connection manager. field names it in errors.
func (d *Dataplane) translateChain(fc *listener.FilterChain, field string, l *listener.Listener, rt *runtime, prevTLS []*tlssocket.Server) (*chainConfig, error) {
	cc := &chainConfig{http: forward.Listener{
		Inbound:  l.GetTrafficDirection() == core.TrafficDirection_INBOUND,
		Outbound: l.GetTrafficDirection() == core.TrafficDirection_OUTBOUND,
	}}
	var err error
	if cc.match, err = parseChainMatch(fc.GetFilterChainMatch()); err != nil {
		return nil, fmt.Errorf("%s.filter_chain_match.%w", field, err)
	}
	sock, err := tlssocket.ParseSocket(fc.GetTransportSocket(), false)
	if err != nil {
		return nil, fmt.Errorf("%s.transport_socket.%w", field, err)
	}
	if sock.Downstream != nil {
		for _, p := range prevTLS {
			if p.Same(sock.Downstream) {
				cc.tls = p
				break
			}
		}
		if cc.tls == nil {
			if cc.tls, err = tlssocket.NewServer(sock.Downstream, d.opts.Secrets); err != nil {
				return nil, fmt.Errorf("%s.transport_socket.typed_config (DownstreamTlsContext): %w", field, err)
			}
			if err := cc.tls.Broken(); err != nil {
				d.log.Warn("listener's TLS cannot work on this host: its TLS connections fail", "listener", l.GetName(), "chain", field, "err", err)
			}
		}
	}
	filters := fc.GetFilters()
	if len(filters) == 0 {
		return nil, fmt.Errorf("%s.filters: want a %s or %s last, have no filters", field, hcmFilterName, tcpproxy.FilterName)
	}
	// Before the terminal filter, only Istio's stats filter (the
	// Telemetry API's TCP metric overrides) and, before a tcp_proxy, its
	// network RBAC filters (AuthorizationPolicy on TCP ports).
	var (
		tcpStats    *telemetry.Stats
		connFilters []connFilter
	)
	last := len(filters) - 1
	f := filters[last]
	isTCP := f.GetName() == tcpproxy.FilterName || (f.GetTypedConfig() != nil && f.GetTypedConfig().MessageIs((*tcpproxyv3.TcpProxy)(nil)))
	for i, f := range filters[:last] {
		switch {
		case f.GetName() == contract.StatsFilterName:
			if tcpStats, err = d.statsConfig(f.GetTypedConfig()); err != nil {
				return nil, fmt.Errorf("%s.filters[%d] (%s).%w", field, i, f.GetName(), err)
			}
		case f.GetName() == rbac.NetworkFilterName && isTCP:
			fac, _ := rt.filters[rbac.FilterName].(rbac.Factory)
			cf, err := fac.NewNetwork(f.GetTypedConfig())
			if err != nil {
				return nil, fmt.Errorf("%s.filters[%d] (%s).typed_config.%w", field, i, f.GetName(), err)
			}
			connFilters = append(connFilters, connFilter{rbac: cf})
		case f.GetName() == extauthz.NetworkFilterName && isTCP:
			fac, _ := rt.filters[extauthz.Name].(extauthz.Factory)
			cc, err := fac.NewNetwork(f.GetTypedConfig())
			if err != nil {
				return nil, fmt.Errorf("%s.filters[%d] (%s).typed_config.%w", field, i, f.GetName(), err)
			}
			connFilters = append(connFilters, connFilter{authz: cc})
		default:
			return nil, fmt.Errorf("%s.filters[%d] (%s): unsupported network filter; want %s, or %s after %s, %s and %s filters", field, i, f.GetName(),
				hcmFilterName, tcpproxy.FilterName, rbac.NetworkFilterName, extauthz.NetworkFilterName, contract.StatsFilterName)
		}
	}
	if isTCP {
		if cc.tcp, err = tcpproxy.Parse(f.GetTypedConfig(), d.accessLogs); err != nil {
			return nil, fmt.Errorf("%s.filters[%d] (%s).typed_config.%w", field, last, f.GetName(), err)
		}
		cc.tcp.Stats = tcpStats
		cc.connFilters = connFilters
		return cc, nil
	}
	var m hcm.HttpConnectionManager
	tc := f.GetTypedConfig()
	if tc == nil {
		return nil, fmt.Errorf("%s.filters[0] (%s): typed_config missing", field, f.GetName())
	}
	if err := xdswire.UnmarshalAny(tc, &m); err != nil {
		return nil, fmt.Errorf("%s.filters[0] (%s): want %s: %w", field, f.GetName(), hcmFilterName, err)
	}
	where := field + ".filters[0].typed_config"
	if err := connectionManagerOptions(&cc.http, &m, where); err != nil {
		return nil, err
	}
	h1 := m.GetHttpProtocolOptions()
	cc.allowChunkedLength = h1.GetAllowChunkedLength()
	cc.http.AcceptHTTP10, cc.http.DefaultHostHTTP10 = h1.GetAcceptHttp_10(), h1.GetDefaultHostForHttp_10()
	if cc.limits, err = chainLimits(&cc.http.Limits, &m, where); err != nil {
		return nil, err
	}
	if cc.http.ForwardClientCert, cc.http.ClientCertDetails, err = clientCertConfig(&m); err != nil {
		return nil, fmt.Errorf("%s.%w", where, err)
	}
	var tk tracing.ExporterKey
	if cc.http.Tracing, tk, err = d.tracingConfig(&m, cc.http.Inbound, rt.res, where); err != nil {
		return nil, err
	} else if cc.http.Tracing != nil {
		rt.tracers[tk] = true
	}
	for i, al := range m.GetAccessLog() {
		lg, err := accesslog.Parse(al, d.accessLogs)
		if err != nil {
			return nil, fmt.Errorf("%s.access_log[%d] (%s).%w", where, i, al.GetName(), err)
		}
		cc.http.AccessLogs = append(cc.http.AccessLogs, lg)
	}
	switch rs := m.GetRouteSpecifier().(type) {
	case *hcm.HttpConnectionManager_Rds:
		cc.rds = rs.Rds.GetRouteConfigName()
		if cc.rds == "" {
			return nil, fmt.Errorf("%s.rds.route_config_name: empty", where)
		}
		if rt.routes[cc.rds] == nil {
			return nil, fmt.Errorf("%s.rds: route configuration %q not found", where, cc.rds)
		}
	case *hcm.HttpConnectionManager_RouteConfig:
		tab, err := route.Compile(rs.RouteConfig, rt.filters)
		if err != nil {
			return nil, fmt.Errorf("%s.route_config (%s): %w", where, rs.RouteConfig.GetName(), err)
		}
		cc.inline = tab
	case nil:
		return nil, fmt.Errorf("%s: rds or route_config required", where)
	default:
		return nil, fmt.Errorf("%s: route specifier %T is unsupported", where, rs)
	}
	hf := m.GetHttpFilters()
	if len(hf) == 0 {
		return nil, fmt.Errorf("%s.http_filters: must end with %s", where, routerFilterName)
	}
	for i, f := range hf {
		last := i == len(hf)-1
		isRouter := f.GetName() == routerFilterName || (f.GetTypedConfig() != nil && f.GetTypedConfig().MessageIs((*routerv3.Router)(nil)))
		switch {
		case last && !isRouter:
			return nil, fmt.Errorf("%s.http_filters[%d] (%s): the last filter must be %s", where, i, f.GetName(), routerFilterName)
		case !last && isRouter:
			return nil, fmt.Errorf("%s.http_filters[%d]: %s must be last", where, i, routerFilterName)
		case f.GetName() == contract.StatsFilterName:
			if cc.http.Stats, err = d.statsConfig(f.GetTypedConfig()); err != nil {
				return nil, fmt.Errorf("%s.http_filters[%d] (%s).%w", where, i, f.GetName(), err)
			}
		case !last:
			fac := rt.filters[f.GetName()]
			if fac == nil {
				if !f.GetIsOptional() {
					return nil, fmt.Errorf("%s.http_filters[%d] (%s): unsupported filter", where, i, f.GetName())
				}
				continue
			}
			flt, err := fac.New(f.GetTypedConfig())
			if err != nil {
				return nil, fmt.Errorf("%s.http_filters[%d] (%s): %w", where, i, f.GetName(), err)
			}
			cc.http.AddFilter(f.GetName(), flt)
		}
	}
	return cc, nil
}

// clientCertConfig reads forward_client_cert_details and
// set_current_client_cert_details.
func clientCertConfig(m *hcm.HttpConnectionManager) (forward.ForwardClientCert, forward.ClientCertDetails, error) {
	var mode forward.ForwardClientCert
	switch m.GetForwardClientCertDetails() {
	case hcm.HttpConnectionManager_SANITIZE:
		mode = forward.Sanitize
	case hcm.HttpConnectionManager_FORWARD_ONLY:
		mode = forward.ForwardOnly
	case hcm.HttpConnectionManager_APPEND_FORWARD:
		mode = forward.AppendForward
	case hcm.HttpConnectionManager_SANITIZE_SET:
		mode = forward.SanitizeSet
	case hcm.HttpConnectionManager_ALWAYS_FORWARD_ONLY:
		mode = forward.AlwaysForwardOnly
	default:
		return 0, 0, fmt.Errorf("forward_client_cert_details: unknown value %v", m.GetForwardClientCertDetails())
	}
	var det forward.ClientCertDetails
	if d := m.GetSetCurrentClientCertDetails(); d != nil {
		if d.GetSubject().GetValue() {
			det |= forward.DetailSubject
		}
		if d.GetUri() {
			det |= forward.DetailURI
		}
		if d.GetDns() {
			det |= forward.DetailDNS
		}
		if d.GetCert() {
			det |= forward.DetailCert
		}
		if d.GetChain() {
			det |= forward.DetailChain
		}
	}
	return mode, det, nil
}

func isPortZero(addr string) bool {
	_, p, err := net.SplitHostPort(addr)
	return err == nil && p == "0"
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// statsConfig compiles the typed_config of an istio.stats filter.
func (d *Dataplane) statsConfig(a *anypb.Any) (*telemetry.Stats, error) {
	cfg, err := contract.ParseStatsConfig(a)
	if err != nil {
		return nil, err
	}
	st, err := telemetry.CompileStats(d.reg, cfg)
	if err != nil {
		return nil, fmt.Errorf("typed_config.value.%w", err)
	}
	return st, nil
}
