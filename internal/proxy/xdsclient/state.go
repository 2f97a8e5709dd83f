package xdsclient

import (
	"fmt"
	"maps"
	"slices"
	"time"
	"weft.dev/weft/internal/proxy/xdswire"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"weft.dev/weft/internal/xds/contract"
)

// Type URLs of the resources the client subscribes to, in the order Envoy
// asks for them on a new stream.
const (
	TypeCluster  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	TypeEndpoint = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
	TypeListener = "type.googleapis.com/envoy.config.listener.v3.Listener"
	TypeRoute    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	// TypeVirtualHost is VHDS: a delta client takes the virtual hosts of
	// route configurations that say vhds this way (vhds.go).
	TypeVirtualHost = "type.googleapis.com/envoy.config.route.v3.VirtualHost"

	typeResource = "type.googleapis.com/envoy.service.discovery.v3.Resource"
	hcmName      = "envoy.filters.network.http_connection_manager"
	hcmTypeURL   = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
)

// typeOrder is the order of initial subscriptions: wildcard CDS and LDS
// first, then the named RDS and EDS subscriptions they imply.
var typeOrder = [...]string{TypeCluster, TypeListener, TypeEndpoint, TypeRoute}

// deltaOrder is typeOrder and, last, VHDS: the delta client's types (a
// state-of-the-world client takes route configurations whole).
var deltaOrder = [...]string{TypeCluster, TypeListener, TypeEndpoint, TypeRoute, TypeVirtualHost}

// wildcard reports whether a type is subscribed to as a whole (LDS, CDS,
// VHDS) rather than by name (RDS, EDS).
func wildcard(typeURL string) bool {
	return typeURL == TypeListener || typeURL == TypeCluster || typeURL == TypeVirtualHost
}

// resourceSet is the client's view of the config: what was received so far
// (the working set) or what was last applied. It is owned by the stream
// goroutine; clone before handing maps to anyone else.
type resourceSet struct {
	listeners map[string]*held
	routes    map[string]*held
	clusters  map[string]*held
	endpoints map[string]*held
	// vhds is what a delta client holds of route configurations that take
	// their virtual hosts by VHDS (vhds.go); nil until it gets one.
	vhds *vhdsSet
	// received marks the wildcard types (LDS, CDS, VHDS) for which a
	// response has been taken in; until LDS and CDS have, the set cannot
	// be complete.
	received map[string]bool
	versions map[string]string
	// canon, while the delta client takes a response in, makes the
	// cluster names a route configuration merged with its virtual hosts
	// routes to the strings the client already holds (vhds.go).
	canon func(*held)
}

func newResourceSet() *resourceSet {
	return &resourceSet{
		listeners: map[string]*held{},
		routes:    map[string]*held{},
		clusters:  map[string]*held{},
		endpoints: map[string]*held{},
		received:  map[string]bool{},
		versions:  map[string]string{},
	}
}

// clone copies the maps; the held resources are shared (only the stream
// goroutine touches them).
func (s *resourceSet) clone() *resourceSet {
	return &resourceSet{
		listeners: maps.Clone(s.listeners),
		routes:    maps.Clone(s.routes),
		clusters:  maps.Clone(s.clusters),
		endpoints: maps.Clone(s.endpoints),
		vhds:      s.vhds.clone(),
		received:  maps.Clone(s.received),
		versions:  maps.Clone(s.versions),
	}
}

// routeNames returns the RDS names the listeners reference, sorted.
func (s *resourceSet) routeNames() []string {
	set := map[string]struct{}{}
	for _, l := range s.listeners {
		for _, n := range l.rds {
			set[n] = struct{}{}
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// endpointNames returns the EDS names the clusters reference, sorted.
func (s *resourceSet) endpointNames() []string {
	set := map[string]struct{}{}
	for _, c := range s.clusters {
		if c.hasEDS {
			set[c.eds] = struct{}{}
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// missing returns the referenced RDS and EDS names that have not arrived.
// A set is complete when both LDS and CDS were received and nothing is
// missing.
func (s *resourceSet) missing(routeNames, edsNames []string) (routes, eds []string) {
	for _, n := range routeNames {
		if _, ok := s.routes[n]; !ok {
			routes = append(routes, n)
		}
	}
	for _, n := range edsNames {
		if _, ok := s.endpoints[n]; !ok {
			eds = append(eds, n)
		}
	}
	return routes, eds
}

// prune drops routes and assignments no longer referenced, as an Envoy
// does when a name leaves its subscription.
func (s *resourceSet) prune(routeNames, edsNames []string) {
	// Both lists are sorted, and long: a sidecar of a large mesh
	// subscribes to thousands of assignments.
	has := func(names []string, n string) bool {
		_, ok := slices.BinarySearch(names, n)
		return ok
	}
	for n := range s.routes {
		if !has(routeNames, n) {
			delete(s.routes, n)
		}
	}
	if s.vhds != nil {
		for n := range s.vhds.bases {
			if !has(routeNames, n) {
				delete(s.vhds.bases, n)
			}
		}
	}
	for n := range s.endpoints {
		if !has(edsNames, n) {
			delete(s.endpoints, n)
		}
	}
}

// resources renders the set for the Applier: the messages decoded since
// the last call, nil for the others, and every resource's encoding
// (Resources.Wire). Fresh maps: the Applier may keep them, and the client
// goes on mutating its own; the client keeps no decoded message it handed
// out.
func (s *resourceSet) resources() *Resources {
	r := &Resources{
		Listeners: make(map[string]*listener.Listener, len(s.listeners)),
		Routes:    make(map[string]*route.RouteConfiguration, len(s.routes)),
		Clusters:  make(map[string]*cluster.Cluster, len(s.clusters)),
		Endpoints: make(map[string]*endpoint.ClusterLoadAssignment, len(s.endpoints)),
		Versions:  maps.Clone(s.versions),
		Wire: &Wire{
			Listeners: make(map[string]xdswire.Packed, len(s.listeners)),
			Routes:    make(map[string]xdswire.Packed, len(s.routes)),
			Clusters:  make(map[string]xdswire.Packed, len(s.clusters)),
			Endpoints: make(map[string]xdswire.Packed, len(s.endpoints)),
		},
	}
	for n, h := range s.listeners {
		r.Listeners[n], r.Wire.Listeners[n] = fresh[*listener.Listener](h), h.wire
	}
	for n, h := range s.routes {
		r.Routes[n], r.Wire.Routes[n] = fresh[*route.RouteConfiguration](h), h.wire
	}
	for n, h := range s.clusters {
		r.Clusters[n], r.Wire.Clusters[n] = fresh[*cluster.Cluster](h), h.wire
	}
	for n, h := range s.endpoints {
		r.Endpoints[n], r.Wire.Endpoints[n] = fresh[*endpoint.ClusterLoadAssignment](h), h.wire
	}
	return r
}

// take merges one decoded response into the set. LDS and CDS responses are
// the state of the world and replace the type; RDS and EDS responses may
// carry a subset and are merged by name, keeping only subscribed names.
// A resource sent again with the same encoding stays as it was held: the
// Applier gets no decoded message of it again and carries over what it
// built (a state-of-the-world control plane sends every cluster on each
// change of one).
func (s *resourceSet) take(d *decoded, subscribed []string) {
	s.versions[d.typeURL] = d.version
	switch d.typeURL {
	case TypeListener:
		keepUnchanged(d.listeners, s.listeners)
		s.listeners = d.listeners
		s.received[TypeListener] = true
	case TypeCluster:
		keepUnchanged(d.clusters, s.clusters)
		s.clusters = d.clusters
		s.received[TypeCluster] = true
	case TypeRoute:
		for n, r := range d.routes {
			if slices.Contains(subscribed, n) && !r.sameAs(s.routes[n]) {
				s.routes[n] = r
			}
		}
	case TypeEndpoint:
		for n, e := range d.endpoints {
			if slices.Contains(subscribed, n) && !e.sameAs(s.endpoints[n]) {
				s.endpoints[n] = e
			}
		}
	}
}

// decoded is one response's resources, unmarshalled into their types.
type decoded struct {
	typeURL   string
	version   string
	listeners map[string]*held
	routes    map[string]*held
	clusters  map[string]*held
	endpoints map[string]*held
	vhosts    map[string]*held
}

// decode unmarshals and validates a response's resources. Any error names
// the type and the resource; the whole response is then NACKed.
func decode(r *discovery.DiscoveryResponse) (*decoded, error) {
	d := &decoded{typeURL: r.GetTypeUrl(), version: r.GetVersionInfo()}
	switch d.typeURL {
	case TypeListener:
		d.listeners = map[string]*held{}
	case TypeRoute:
		d.routes = map[string]*held{}
	case TypeCluster:
		d.clusters = map[string]*held{}
	case TypeEndpoint:
		d.endpoints = map[string]*held{}
	case TypeVirtualHost:
		d.vhosts = map[string]*held{}
	default:
		return nil, fmt.Errorf("unsupported type %q", d.typeURL)
	}
	seen := make(map[string]bool, len(r.GetResources()))
	for i, a := range r.GetResources() {
		if a.GetTypeUrl() == typeResource { // wrapped (TTL, heartbeats)
			var w discovery.Resource
			if err := xdswire.UnmarshalAny(a, &w); err != nil {
				return nil, fmt.Errorf("resources[%d]: decoding wrapper: %w", i, err)
			}
			if w.GetResource() == nil {
				continue // a heartbeat; nothing to decode
			}
			a = w.GetResource()
		}
		if a.GetTypeUrl() != d.typeURL {
			return nil, fmt.Errorf("resources[%d]: type %q in a %q response", i, a.GetTypeUrl(), d.typeURL)
		}
		name, err := d.add(a)
		if err != nil {
			return nil, fmt.Errorf("resources[%d]: %w", i, err)
		}
		if seen[name] {
			return nil, fmt.Errorf("%s %q: duplicate resource name", shortType(d.typeURL), name)
		}
		seen[name] = true
	}
	if err := checkHCMs(d); err != nil {
		return nil, err
	}
	return d, nil
}

// add decodes and validates one resource and stores it under its name.
func (d *decoded) add(a *anypb.Any) (string, error) {
	var (
		name string
		msg  proto.Message
		into map[string]*held
	)
	switch d.typeURL {
	case TypeListener:
		m := &listener.Listener{}
		msg, into = m, d.listeners
	case TypeRoute:
		m := &route.RouteConfiguration{}
		msg, into = m, d.routes
	case TypeCluster:
		m := &cluster.Cluster{}
		msg, into = m, d.clusters
	case TypeEndpoint:
		m := &endpoint.ClusterLoadAssignment{}
		msg, into = m, d.endpoints
	case TypeVirtualHost:
		m := &route.VirtualHost{}
		msg, into = m, d.vhosts
	}
	if err := unmarshal(a, msg); err != nil {
		return "", err
	}
	name = resourceName(msg)
	if name == "" {
		return "", fmt.Errorf("%s has no name", shortType(d.typeURL))
	}
	if _, vh, ok := contract.SplitVirtualHostName(name); d.typeURL == TypeVirtualHost && (!ok || vh == "") {
		// It could not be merged into any route configuration.
		return "", fmt.Errorf("virtual host %q: the name is not <route configuration>/<virtual host>", name)
	}
	if v, ok := msg.(interface{ Validate() error }); ok {
		if err := v.Validate(); err != nil {
			return "", fmt.Errorf("%s %q: %w", shortType(d.typeURL), name, err)
		}
	}
	h, err := hold(msg)
	if err != nil {
		return "", fmt.Errorf("%s %q: %w", shortType(d.typeURL), name, err)
	}
	into[name] = h
	return name, nil
}

func unmarshal(a *anypb.Any, m proto.Message) error {
	if err := xdswire.UnmarshalAny(a, m); err != nil {
		return fmt.Errorf("decoding %s: %w", shortType(a.GetTypeUrl()), err)
	}
	return nil
}

// checkHCMs decodes every HTTP connection manager so a malformed one is
// NACKed here, with the listener named, rather than found later.
func checkHCMs(d *decoded) error {
	for name, l := range d.listeners {
		if l.hcmErr != nil {
			return fmt.Errorf("listener %q: %w", name, l.hcmErr)
		}
	}
	return nil
}

// resourceName is the name of a decoded resource.
func resourceName(m proto.Message) string {
	switch m := m.(type) {
	case *listener.Listener:
		return m.GetName()
	case *route.RouteConfiguration:
		return m.GetName()
	case *cluster.Cluster:
		return m.GetName()
	case *endpoint.ClusterLoadAssignment:
		return m.GetClusterName()
	case *route.VirtualHost:
		return m.GetName()
	}
	return ""
}

// hcmRouteNames returns the route_config_name of every HTTP connection
// manager using RDS (one with an inline route_config needs none), and
// the SDS secrets over ADS its HTTP filters name (an OAuth2 filter's).
func hcmRouteNames(l *listener.Listener) (names, secrets []string, err error) {
	chains := l.GetFilterChains()
	if dc := l.GetDefaultFilterChain(); dc != nil {
		chains = append(slices.Clip(chains), dc)
	}
	for ci, fc := range chains {
		for fi, f := range fc.GetFilters() {
			tc := f.GetTypedConfig()
			if tc == nil || (f.GetName() != hcmName && tc.GetTypeUrl() != hcmTypeURL) {
				continue
			}
			if tc.GetTypeUrl() != hcmTypeURL {
				return nil, nil, fmt.Errorf("filter_chains[%d].filters[%d]: %s has typed_config %q", ci, fi, hcmName, tc.GetTypeUrl())
			}
			var m hcm.HttpConnectionManager
			if err := xdswire.UnmarshalAny(tc, &m); err != nil {
				return nil, nil, fmt.Errorf("filter_chains[%d].filters[%d]: decoding http_connection_manager: %w", ci, fi, err)
			}
			if rds := m.GetRds(); rds != nil {
				if rds.GetRouteConfigName() == "" {
					return nil, nil, fmt.Errorf("filter_chains[%d].filters[%d]: rds.route_config_name is empty", ci, fi)
				}
				names = append(names, rds.GetRouteConfigName())
			}
			secrets = appendFilterSecrets(secrets, m.GetHttpFilters())
		}
	}
	return names, secrets, nil
}

// edsName returns the EDS name an EDS cluster subscribes to.
func edsName(c *cluster.Cluster) (string, bool) {
	if c.GetType() != cluster.Cluster_EDS {
		return "", false
	}
	if n := c.GetEdsClusterConfig().GetServiceName(); n != "" {
		return n, true
	}
	return c.GetName(), true
}

// shortType turns a type URL into "Listener", "Cluster", … for messages.
func shortType(typeURL string) string {
	switch typeURL {
	case TypeListener:
		return "listener"
	case TypeRoute:
		return "route configuration"
	case TypeCluster:
		return "cluster"
	case TypeEndpoint:
		return "cluster load assignment"
	case TypeVirtualHost:
		return "virtual host"
	case TypeSecret:
		return "secret"
	}
	return typeURL
}

// dangling returns, sorted, the clusters that the set's routes still name
// and that prev (the last applied set) had, but that the set no longer has.
// The control plane sends clusters before routes, so when a change drops a
// cluster together with every route to it, the new clusters arrive while
// the old routes still point at the dropped one; applying that would answer
// 503 (NC) until the routes catch up. A cluster that prev did not have
// either is not dangling: waiting would not bring it (say, a route to an
// unknown host), and it must not hold other changes back.
func (s *resourceSet) dangling(prev *resourceSet) []string {
	var out []string
	for name := range s.routedClusters() {
		if _, have := s.clusters[name]; have {
			continue
		}
		if _, had := prev.clusters[name]; had {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// routedClusters returns the clusters named by the set's route
// configurations and by its listeners' inline ones.
func (s *resourceSet) routedClusters() map[string]struct{} {
	names := map[string]struct{}{}
	for _, hs := range []map[string]*held{s.routes, s.listeners} {
		for _, h := range hs {
			for _, c := range h.routed {
				names[c] = struct{}{}
			}
		}
	}
	return names
}

// inlineRouteConfigs returns the route_config of every HTTP connection
// manager of l that carries its routes inline. Malformed filters are
// skipped: decode already rejected them.
func inlineRouteConfigs(l *listener.Listener) []*route.RouteConfiguration {
	var out []*route.RouteConfiguration
	chains := l.GetFilterChains()
	if dc := l.GetDefaultFilterChain(); dc != nil {
		chains = append(slices.Clip(chains), dc)
	}
	for _, fc := range chains {
		for _, f := range fc.GetFilters() {
			tc := f.GetTypedConfig()
			if tc.GetTypeUrl() != hcmTypeURL {
				continue
			}
			var m hcm.HttpConnectionManager
			if xdswire.UnmarshalAny(tc, &m) == nil && m.GetRouteConfig() != nil {
				out = append(out, m.GetRouteConfig())
			}
		}
	}
	return out
}

// setToApply is the decision both state machines make on a working set:
// it is applied when complete (listeners and clusters received, every
// subscribed route configuration and assignment present, no removed
// cluster still routed), or — only after a first complete set was
// applied — incomplete, once force is set because the deadline passed;
// an incomplete set arms *deadline (IncompleteTimeout from now) when it is
// not armed. It returns the resources to apply, with empty stand-ins for
// what is missing, or nil when nothing is to be applied yet.
func (c *Client) setToApply(working, applied *resourceSet, everApplied bool, subs map[string][]string, deadline *time.Time, force bool) *Resources {
	missR, missE := working.missing(subs[TypeRoute], subs[TypeEndpoint])
	var dangling []string
	if everApplied {
		dangling = working.dangling(applied)
	}
	haveWorld := working.received[TypeListener] && working.received[TypeCluster]
	complete := haveWorld && len(missR) == 0 && len(missE) == 0 && len(dangling) == 0
	if !complete {
		if !everApplied || !haveWorld {
			return nil // the first config is applied only complete
		}
		if !force {
			if deadline.IsZero() {
				*deadline = time.Now().Add(c.opts.IncompleteTimeout)
			}
			return nil
		}
		c.log.Warn("config still incomplete after timeout; applying without the missing resources",
			"timeout", c.opts.IncompleteTimeout, "missing_routes", missR, "missing_endpoints", missE,
			"removed_clusters_still_routed", dangling)
	}
	*deadline = time.Time{}
	return withStandIns(working.resources(), missR, missE)
}

// withStandIns gives res an empty route configuration for each name of
// routes and an empty assignment for each name of eds, and returns it.
func withStandIns(res *Resources, routes, eds []string) *Resources {
	for _, n := range routes {
		res.Routes[n] = &route.RouteConfiguration{Name: n}
	}
	for _, n := range eds {
		res.Endpoints[n] = &endpoint.ClusterLoadAssignment{ClusterName: n}
	}
	return res
}
