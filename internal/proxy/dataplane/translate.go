package dataplane

import (
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strconv"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"

	"weft.dev/weft/internal/proxy/cluster"
	"weft.dev/weft/internal/proxy/filter"
	"weft.dev/weft/internal/proxy/filter/cors"
	"weft.dev/weft/internal/proxy/filter/fault"
	"weft.dev/weft/internal/proxy/filter/jwt"
	"weft.dev/weft/internal/proxy/filter/rbac"
	"weft.dev/weft/internal/proxy/forward"
	"weft.dev/weft/internal/proxy/route"
	"weft.dev/weft/internal/proxy/xdsclient"
)

const (
	hcmFilterName    = "envoy.filters.network.http_connection_manager"
	routerFilterName = "envoy.filters.http.router"
)

// runtime is one translated, validated Resources set. It is immutable once
// published through Dataplane.rt; request goroutines read it without locks
// and keep using the runtime they started on.
type runtime struct {
	listeners map[string]*listenerConfig
	routes    map[string]*route.Table // RDS route configurations by name
	routeCfgs map[string]proto.Message
	clusters  map[string]*cluster.Cluster
	res       *xdsclient.Resources
	filters   filter.Registry // the data plane's HTTP filters (newHTTPFilters)
}

// newHTTPFilters lists the HTTP filters the proxy implements, besides the
// router. Each Dataplane has its own (the security filters count and log
// with the proxy's registry and logger, and the JWT filter reuses the
// keys of the filters it compiled before); the zero filterOptions give
// filters that count and log nothing. Immutable.
func newHTTPFilters(o filterOptions) filter.Registry {
	return filter.NewRegistry(cors.Factory{}, fault.Factory{},
		jwt.NewFactory(o.log), rbac.Factory{Stats: o.rbacStats, Logger: o.log})
}

// filterOptions are what the HTTP filters need of the proxy.
type filterOptions struct {
	log       *slog.Logger
	rbacStats *rbac.Stats
}

// httpFilters parse per-route filter configs for operator tools
// (MatchRoute), which serve no request.
var httpFilters = newHTTPFilters(filterOptions{})

// listenerConfig is a translated Listener: where it binds, how its HTTP
// connection manager finds its routes, and what the request path needs of
// it (direction, HTTP filters).
type listenerConfig struct {
	name   string
	addr   string       // host:port as configured (port may be 0 in tests)
	rds    string       // RDS route configuration name, when inline is nil
	inline *route.Table // inline route_config
	http   forward.Listener
}

// table returns the route table the listener uses in rt, or nil.
func (lc *listenerConfig) table(rt *runtime) *route.Table {
	if lc.inline != nil {
		return lc.inline
	}
	return rt.routes[lc.rds]
}

// translate validates r and builds a new runtime. prev (may be nil) supplies
// state to carry over: cluster pools and compiled route tables. It is called
// only from Apply, under d.mu.
func (d *Dataplane) translate(r *xdsclient.Resources, prev *runtime) (*runtime, error) {
	rt := &runtime{
		listeners: map[string]*listenerConfig{},
		routes:    map[string]*route.Table{},
		routeCfgs: map[string]proto.Message{},
		clusters:  map[string]*cluster.Cluster{},
		res:       r,
		filters:   d.filters,
	}
	for _, name := range sortedKeys(r.Clusters) {
		c := r.Clusters[name]
		if c.GetName() != name {
			return nil, fmt.Errorf("cluster %q: name %q does not match its key", name, c.GetName())
		}
		var old *cluster.Cluster
		if prev != nil {
			old = prev.clusters[name]
		}
		ct, err := d.clusters.Build(c, r.Endpoints, old)
		if err != nil {
			return nil, fmt.Errorf("cluster %q: %w", name, err)
		}
		rt.clusters[name] = ct
	}
	for _, name := range sortedKeys(r.Routes) {
		rc := r.Routes[name]
		if rc.GetName() != name {
			return nil, fmt.Errorf("route %q: name %q does not match its key", name, rc.GetName())
		}
		if prev != nil && prev.routes[name] != nil && proto.Equal(prev.routeCfgs[name], rc) {
			rt.routes[name], rt.routeCfgs[name] = prev.routes[name], rc
			continue
		}
		tab, err := route.Compile(rc, rt.filters)
		if err != nil {
			return nil, fmt.Errorf("route %q: %w", name, err)
		}
		rt.routes[name], rt.routeCfgs[name] = tab, rc
	}
	addrs := map[string]string{}
	for _, name := range sortedKeys(r.Listeners) {
		l := r.Listeners[name]
		if l.GetName() != name {
			return nil, fmt.Errorf("listener %q: name %q does not match its key", name, l.GetName())
		}
		lc, err := translateListener(l, rt)
		if err != nil {
			return nil, fmt.Errorf("listener %q: %w", name, err)
		}
		if other, dup := addrs[lc.addr]; dup && !isPortZero(lc.addr) {
			return nil, fmt.Errorf("listener %q: address %s already used by listener %q", name, lc.addr, other)
		}
		addrs[lc.addr] = name
		rt.listeners[name] = lc
	}
	return rt, nil
}

func translateListener(l *listener.Listener, rt *runtime) (*listenerConfig, error) {
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
		http: forward.Listener{
			Inbound:  l.GetTrafficDirection() == core.TrafficDirection_INBOUND,
			Outbound: l.GetTrafficDirection() == core.TrafficDirection_OUTBOUND,
		},
	}
	chains := l.GetFilterChains()
	field := "filter_chains[0]"
	if len(chains) == 0 && l.GetDefaultFilterChain() != nil {
		chains, field = []*listener.FilterChain{l.GetDefaultFilterChain()}, "default_filter_chain"
	}
	if len(chains) != 1 {
		return nil, fmt.Errorf("filter_chains: want exactly one filter chain, have %d", len(chains))
	}
	fc := chains[0]
	if fc.GetTransportSocket() != nil {
		return nil, fmt.Errorf("%s.transport_socket: TLS is unsupported", field)
	}
	if len(fc.GetFilters()) != 1 {
		return nil, fmt.Errorf("%s.filters: want exactly one %s, have %d filters", field, hcmFilterName, len(fc.GetFilters()))
	}
	f := fc.GetFilters()[0]
	var m hcm.HttpConnectionManager
	tc := f.GetTypedConfig()
	if tc == nil {
		return nil, fmt.Errorf("%s.filters[0] (%s): typed_config missing", field, f.GetName())
	}
	if err := tc.UnmarshalTo(&m); err != nil {
		return nil, fmt.Errorf("%s.filters[0] (%s): want %s: %w", field, f.GetName(), hcmFilterName, err)
	}
	where := field + ".filters[0].typed_config"
	if err := connectionManagerOptions(&lc.http, &m, where); err != nil {
		return nil, err
	}
	switch rs := m.GetRouteSpecifier().(type) {
	case *hcm.HttpConnectionManager_Rds:
		lc.rds = rs.Rds.GetRouteConfigName()
		if lc.rds == "" {
			return nil, fmt.Errorf("%s.rds.route_config_name: empty", where)
		}
		if rt.routes[lc.rds] == nil {
			return nil, fmt.Errorf("%s.rds: route configuration %q not found", where, lc.rds)
		}
	case *hcm.HttpConnectionManager_RouteConfig:
		tab, err := route.Compile(rs.RouteConfig, rt.filters)
		if err != nil {
			return nil, fmt.Errorf("%s.route_config (%s): %w", where, rs.RouteConfig.GetName(), err)
		}
		lc.inline = tab
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
			lc.http.AddFilter(f.GetName(), flt)
		}
	}
	return lc, nil
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
