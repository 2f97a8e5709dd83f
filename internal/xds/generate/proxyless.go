package generate

import (
	"net"
	"strconv"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry"
	"weft.dev/weft/internal/xds/contract"
)

// Names are the resources a client subscribed to, per type, as its
// requests name them. A nil or empty list means none of that type.
type Names struct {
	Listeners, Routes, Clusters, Endpoints []string
}

// ForProxyless generates, for a proxyless gRPC client id
// (id.Proxyless()), exactly the resources it names that exist in s, in
// the form gRPC's xDS client accepts (gRFCs A27, A28, A31, A33, A44):
//
//   - a listener per dial target ("host:port", the host in any form a
//     client in id.Namespace may use: "backend", "backend.shop",
//     "backend.shop.svc", the FQDN, or a ServiceEntry host; ":port" may be
//     left out for a service with one port), an api_listener whose
//     HttpConnectionManager has the fault filter and the router and takes
//     its routes over RDS from a RouteConfiguration of the same name;
//   - that RouteConfiguration: one virtual host ("*") with the service
//     port's routes as a sidecar gets them, per-route configs of filters
//     gRPC does not run (CORS) left out, and a route's timeout also as
//     max_stream_duration, which is the field gRPC reads;
//   - clusters by their Istio name ("outbound|8080|v1|backend.shop.svc.cluster.local"),
//     without TLS (no certificate provider yet) and with a load balancer
//     gRPC has (ROUND_ROBIN, LEAST_REQUEST, RING_HASH; others become
//     ROUND_ROBIN);
//   - endpoints by cluster name, every LocalityLbEndpoints with a locality
//     (empty when the endpoints have none) and a non-zero weight.
//
// A name that does not resolve is left out: gRPC reports such a resource
// as not found after its resource timeout (15 s by default). Like
// ForProxy, it never fails and output is sorted by name.
func ForProxyless(s *mesh.Snapshot, id contract.Identity, n Names) Resources {
	var r Resources
	for _, name := range n.Listeners {
		if _, _, ok := proxylessTarget(s, id, name); ok {
			r.Listeners = append(r.Listeners, apiListener(name))
		}
	}
	for _, name := range n.Routes {
		if svc, p, ok := proxylessTarget(s, id, name); ok {
			r.Routes = append(r.Routes, proxylessRoutes(s, id, name, svc, p))
		}
	}
	for _, name := range n.Clusters {
		if svc, p, subset, ok := proxylessCluster(s, drView(s, id), name); ok {
			c := edsCluster(svc, p, subset, s.DomainSuffix)
			c = withTrafficPolicy(s, drView(s, id), svc, p, subset, c)
			c = withLoadBalancer(s, drView(s, id), svc, p, subset, c)
			r.Clusters = append(r.Clusters, forGRPC(c))
		}
	}
	for _, name := range n.Endpoints {
		if svc, p, subset, ok := proxylessCluster(s, drView(s, id), name); ok {
			r.Endpoints = append(r.Endpoints, proxylessEndpoints(s, id, svc, p, subset))
		}
	}
	sortByName(r.Listeners)
	sortByName(r.Routes)
	sortByName(r.Clusters)
	sortByName(r.Endpoints)
	return r
}

// proxylessTarget resolves a dial target ("host:port", or "host" for a
// service with a single port) seen from id's namespace to a service port.
func proxylessTarget(s *mesh.Snapshot, id contract.Identity, target string) (*registry.Service, registry.Port, bool) {
	host, port := target, uint64(0)
	if h, ps, err := net.SplitHostPort(target); err == nil {
		p, err := strconv.ParseUint(ps, 10, 32)
		if err != nil || p == 0 {
			return nil, registry.Port{}, false
		}
		host, port = h, p
	}
	svc := s.Registry.Service(s.ResolveHost(host, id.Namespace))
	if svc == nil {
		return nil, registry.Port{}, false
	}
	if port == 0 {
		if len(svc.Ports) != 1 {
			return nil, registry.Port{}, false
		}
		return svc, svc.Ports[0], true
	}
	p, ok := svc.Port(uint32(port))
	return svc, p, ok
}

// proxylessCluster resolves an outbound cluster name to its service port
// and subset; the subset must be one of the service's DestinationRule's.
func proxylessCluster(s *mesh.Snapshot, dv mesh.DRView, name string) (*registry.Service, registry.Port, string, bool) {
	dir, port, subset, host, err := contract.ParseClusterName(name)
	if err != nil || dir != contract.Outbound {
		return nil, registry.Port{}, "", false
	}
	svc := s.Registry.Service(host)
	if svc == nil {
		return nil, registry.Port{}, "", false
	}
	p, ok := svc.Port(port)
	if !ok {
		return nil, registry.Port{}, "", false
	}
	if subset == "" {
		return svc, p, "", true
	}
	for _, sub := range s.Subsets.SubsetsOf(dv, host) {
		if sub.GetName() == subset {
			return svc, p, subset, true
		}
	}
	return nil, registry.Port{}, "", false
}

// apiListener is the listener a gRPC client gets for a dial target: an
// api_listener (no address) whose connection manager takes its routes
// from the RouteConfiguration named like the listener. The fault filter
// is one gRPC implements; the router must be last.
func apiListener(name string) *listener.Listener {
	m := &hcm.HttpConnectionManager{
		StatPrefix: name,
		RouteSpecifier: &hcm.HttpConnectionManager_Rds{Rds: &hcm.Rds{
			ConfigSource:    adsConfigSource(),
			RouteConfigName: name,
		}},
		HttpFilters: append(faultFilters(), routerFilters()...),
	}
	return &listener.Listener{
		Name:        name,
		ApiListener: &listener.ApiListener{ApiListener: mustAny(m)},
	}
}

// proxylessRoutes is the RouteConfiguration of one dial target: a single
// virtual host matching any authority (the configuration serves one
// target), with the service port's routes adapted to gRPC.
func proxylessRoutes(s *mesh.Snapshot, id contract.Identity, name string, svc *registry.Service, p registry.Port) *route.RouteConfiguration {
	routes := serviceRoutes(s, id, svc, p)
	for _, r := range routes {
		grpcRoute(r)
	}
	return &route.RouteConfiguration{
		Name: name,
		VirtualHosts: []*route.VirtualHost{{
			Name:    name,
			Domains: []string{"*"},
			Routes:  routes,
		}},
	}
}

// grpcRoute adapts a sidecar route for gRPC in place: per-route configs
// of filters gRPC does not have would make it reject the whole
// configuration (only the fault filter's stays); the timeout is gRPC's
// max_stream_duration; a retry back-off of zero, which gRPC rejects, is
// dropped (gRPC then uses its 25 ms default).
func grpcRoute(r *route.Route) {
	for k := range r.TypedPerFilterConfig {
		if k != faultFilterName {
			delete(r.TypedPerFilterConfig, k)
		}
	}
	a := r.GetRoute()
	if a == nil {
		return
	}
	if t := a.GetTimeout(); t != nil && t.AsDuration() > 0 {
		a.MaxStreamDuration = &route.RouteAction_MaxStreamDuration{MaxStreamDuration: durationpb.New(t.AsDuration())}
	}
	if rp := a.GetRetryPolicy(); rp != nil {
		if b := rp.GetRetryBackOff(); b != nil && (b.GetBaseInterval().AsDuration() <= 0 || b.GetMaxInterval() != nil && b.GetMaxInterval().AsDuration() <= 0) {
			rp.RetryBackOff = nil
		}
	}
}

// forGRPC strips from a sidecar cluster what gRPC's xDS client would
// reject: TLS settings (it takes only certificate-provider TLS, which
// Weft does not serve yet) and load balancers it does not implement.
func forGRPC(c *cluster.Cluster) *cluster.Cluster {
	c.TransportSocket = nil
	c.TransportSocketMatches = nil
	switch c.LbPolicy {
	case cluster.Cluster_ROUND_ROBIN:
	case cluster.Cluster_LEAST_REQUEST:
		if cc := c.GetLeastRequestLbConfig().GetChoiceCount(); cc != nil && cc.GetValue() < 2 {
			c.LbConfig = nil
		}
	case cluster.Cluster_RING_HASH:
		if c.GetRingHashLbConfig().GetHashFunction() != cluster.Cluster_RingHashLbConfig_XX_HASH {
			c.LbConfig = nil
		}
	default:
		c.LbPolicy, c.LbConfig = cluster.Cluster_ROUND_ROBIN, nil
	}
	return c
}

// proxylessEndpoints is a cluster's ClusterLoadAssignment for gRPC: as a
// sidecar's (localities, priorities, weights), with every locality named
// (gRPC rejects one without) and weighted (gRPC ignores a locality of
// weight 0) and each address once (gRPC rejects duplicates).
func proxylessEndpoints(s *mesh.Snapshot, id contract.Identity, svc *registry.Service, p registry.Port, subset string) *endpoint.ClusterLoadAssignment {
	eps := s.Registry.Endpoints(svc.Hostname, p.Number)
	if subset != "" {
		var labels map[string]string
		for _, sub := range s.Subsets.SubsetsOf(drView(s, id), svc.Hostname) {
			if sub.GetName() == subset {
				labels = sub.GetLabels()
			}
		}
		var in []*registry.Endpoint
		for _, ep := range eps {
			if labelsInclude(ep.Labels, labels) {
				in = append(in, ep)
			}
		}
		eps = in
	}
	name := contract.ClusterName(contract.Outbound, p.Number, subset, svc.Hostname)
	cla := withLocalityLB(s, id, svc.Hostname, p.Number, subset, eps, loadAssignment(name, eps, nil))
	seen := map[string]bool{}
	for _, l := range cla.Endpoints {
		if l.Locality == nil {
			l.Locality = &core.Locality{}
		}
		var sum uint64
		kept := l.LbEndpoints[:0]
		for _, e := range l.LbEndpoints {
			a := e.GetEndpoint().GetAddress().GetSocketAddress()
			key := net.JoinHostPort(a.GetAddress(), strconv.FormatUint(uint64(a.GetPortValue()), 10))
			if seen[key] {
				continue
			}
			seen[key] = true
			kept = append(kept, e)
			sum += uint64(max(e.GetLoadBalancingWeight().GetValue(), 1))
		}
		l.LbEndpoints = kept
		if l.GetLoadBalancingWeight().GetValue() == 0 {
			l.LoadBalancingWeight = wrapperspb.UInt32(uint32(min(max(sum, 1), 1<<24)))
		}
	}
	return cla
}
