package generate

import (
	"fmt"
	"slices"
	"strings"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry"
	"weft.dev/weft/internal/xds/contract"
)

// outboundRoutes is the http_proxy route configuration: one virtual host per
// HTTP service port, sorted by name, routes from the VirtualServices for the
// service (or a single default route).
func outboundRoutes(s *mesh.Snapshot, id contract.Identity) *route.RouteConfiguration {
	return &route.RouteConfiguration{Name: contract.RouteHTTPProxy, VirtualHosts: outboundVirtualHosts(s, id, 0)}
}

// outboundVirtualHosts are the virtual hosts of the HTTP service ports
// numbered port (every HTTP port when port is 0), sorted by name. With a
// port given, the port-less domains are always included: the client
// dialled that port, so "reviews" means "reviews:<port>"; and the ports
// whose protocol is sniffed are included, for the HTTP a captured
// sidecar detects on them (an explicit proxy, port 0, carries them as
// TCP).
func outboundVirtualHosts(s *mesh.Snapshot, id contract.Identity, port uint32) []*route.VirtualHost {
	var vhs []*route.VirtualHost
	used := map[string]bool{} // Envoy rejects a domain used by two virtual hosts
	vis := scopeOf(s, id)
	var svc *registry.Service
	routed := func(p registry.Port) bool {
		return (p.Protocol.IsHTTP() || port != 0 && p.Protocol.Sniffed()) && vis.Port(svc, p.Number)
	}
	for _, svc = range s.Registry.Services() {
		httpPorts := 0
		for _, p := range svc.Ports {
			if routed(p) {
				httpPorts++
			}
		}
		for _, p := range svc.Ports {
			if !routed(p) || port != 0 && p.Number != port {
				continue
			}
			vh := &route.VirtualHost{
				Name:    fmt.Sprintf("%s:%d", svc.Hostname, p.Number),
				Domains: domains(s, id, svc, p, httpPorts == 1 || port != 0, used),
				Routes:  sharedServiceRoutes(s, id, svc, p),
			}
			if len(vh.Domains) == 0 {
				continue
			}
			vhs = append(vhs, vh)
		}
	}
	slices.SortFunc(vhs, func(a, b *route.VirtualHost) int { return strings.Compare(a.Name, b.Name) })
	return vhs
}

// domains lists every name a client in the proxy's namespace may use for
// the service port (its short names, then its aliases), with ":port", and
// port-less when the port is 80 or the service's only HTTP port (or
// onlyHTTP says the port is known). Domains
// already taken are skipped.
func domains(s *mesh.Snapshot, id contract.Identity, svc *registry.Service, p registry.Port, onlyHTTP bool, used map[string]bool) []string {
	var out []string
	add := func(d string) {
		if !used[d] {
			used[d] = true
			out = append(out, d)
		}
	}
	for _, n := range slices.Concat(registry.ShortNames(svc.Hostname, id.Namespace, s.DomainSuffix), svc.Aliases) {
		if p.Number == 80 || onlyHTTP {
			add(n)
		}
		add(fmt.Sprintf("%s:%d", n, p.Number))
	}
	if id.Captured() {
		// A captured app may dial the service's virtual IP: its Host is
		// then the address, as Istio's domains include it.
		for _, a := range svc.Addresses {
			host := a.String()
			if a.Is6() && !a.Is4In6() {
				host = "[" + host + "]"
			}
			if p.Number == 80 || onlyHTTP {
				add(host)
			}
			add(fmt.Sprintf("%s:%d", host, p.Number))
		}
	}
	return out
}

// serviceRoutes builds the routes of one virtual host: every applicable
// match of every http route of the VirtualService for the host, in order,
// or the default route when none applies.
func serviceRoutes(s *mesh.Snapshot, id contract.Identity, svc *registry.Service, p registry.Port) []*route.Route {
	routes, _ := serviceRoutesWithOrigins(s, id, svc, p)
	return routes
}

// RouteOrigin is where a generated route came from.
type RouteOrigin struct {
	// VS is the VirtualService of the route; nil for the default route.
	VS *config.VirtualService
	// Rule is the route's index in spec.http, -1 for the default route;
	// Match the index of its match in the rule's match list, -1 when the
	// rule has none.
	Rule, Match int
}

// RouteOrigins returns the origin of each route of the virtual host of
// service host on port, in the order ForProxy generates them for proxy
// id: origins[i] is where routes[i] came from. It returns nil when the
// service or port is unknown.
func RouteOrigins(s *mesh.Snapshot, id contract.Identity, host string, port uint32) []RouteOrigin {
	svc := s.Registry.Service(host)
	if svc == nil {
		return nil
	}
	p, ok := svc.Port(port)
	if !ok {
		return nil
	}
	_, origins := serviceRoutesWithOrigins(s, id, svc, p)
	return origins
}

// serviceRoutesWithOrigins is serviceRoutes, with where each route came from.
func serviceRoutesWithOrigins(s *mesh.Snapshot, id contract.Identity, svc *registry.Service, p registry.Port) ([]*route.Route, []RouteOrigin) {
	var (
		out     []*route.Route
		origins []RouteOrigin
	)
	for _, vs := range s.Routes.ForHostIn(svc.Hostname, id.Namespace) {
		for i, h := range vs.Spec.GetHttp() {
			action := withHashPolicy(s, drView(s, id), routeAction(s, vs.Namespace, h, svc, p))
			addMirrors(action, s, vs.Namespace, h, svc, p)
			applyResilience(action, h) // resilience.go: timeout, retry_policy
			if action == nil && h.GetRedirect() == nil && h.GetDirectResponse() == nil {
				continue
			}
			if len(h.GetMatch()) == 0 {
				out = append(out, withFault(h, withRouteActions(s, vs.Namespace, h, svc, p, &route.Route{
					Name:   h.GetName(),
					Match:  &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
					Action: action,
				})))
				origins = append(origins, RouteOrigin{VS: vs, Rule: i, Match: -1})
				continue
			}
			for k, m := range h.GetMatch() {
				if !matchApplies(m, id, p.Number) {
					continue
				}
				out = append(out, withFault(h, withRouteActions(s, vs.Namespace, h, svc, p, &route.Route{Name: h.GetName(), Match: routeMatch(m), Action: action})))
				origins = append(origins, RouteOrigin{VS: vs, Rule: i, Match: k})
			}
		}
	}
	if len(out) == 0 {
		out = append(out, withRouteHashPolicy(s, drView(s, id), defaultRoute(svc.Hostname, p.Number)))
		origins = append(origins, RouteOrigin{Rule: -1, Match: -1})
	}
	return out, origins
}

func defaultRoute(host string, port uint32) *route.Route {
	action := &route.Route_Route{Route: &route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{
		Cluster: contract.ClusterName(contract.Outbound, port, "", host),
	}}}
	applyResilience(action, nil) // Istio's default timeout and retry policy
	return &route.Route{
		Name:   "default",
		Match:  &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
		Action: action,
	}
}

// routeAction maps an http route's destinations to a cluster or weighted
// clusters; nil when the route has no destination.
func routeAction(s *mesh.Snapshot, ns string, h *networking.HTTPRoute, svc *registry.Service, p registry.Port) *route.Route_Route {
	type wc struct {
		name   string
		weight uint32
	}
	var dests []wc
	allZero := true
	for _, d := range h.GetRoute() {
		dst := d.GetDestination()
		if dst == nil {
			continue
		}
		host := s.ResolveHost(dst.GetHost(), ns)
		port := destinationPort(s, host, dst.GetPort().GetNumber(), svc, p)
		w := uint32(max(d.GetWeight(), 0))
		if w != 0 {
			allZero = false
		}
		dests = append(dests, wc{contract.ClusterName(contract.Outbound, port, dst.GetSubset(), host), w})
	}
	if !allZero { // as Istio: a zero-weight destination gets no traffic
		dests = slices.DeleteFunc(dests, func(d wc) bool { return d.weight == 0 })
	}
	switch len(dests) {
	case 0:
		return nil
	case 1:
		return &route.Route_Route{Route: &route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: dests[0].name}}}
	}
	w := &route.WeightedCluster{}
	for _, d := range dests {
		weight := d.weight
		if allZero {
			weight = 1 // no weights given: split evenly
		}
		w.Clusters = append(w.Clusters, &route.WeightedCluster_ClusterWeight{Name: d.name, Weight: wrapperspb.UInt32(weight)})
	}
	return &route.Route_Route{Route: &route.RouteAction{ClusterSpecifier: &route.RouteAction_WeightedClusters{WeightedClusters: w}}}
}

// destinationPort picks the port of a destination that does not name one:
// the destination service's only port; else, for the service being routed,
// the port of this virtual host; else the same port number if the
// destination has it; else its first HTTP port; else the virtual host's.
func destinationPort(s *mesh.Snapshot, host string, given uint32, svc *registry.Service, p registry.Port) uint32 {
	if given != 0 {
		return given
	}
	dst := s.Registry.Service(host)
	switch {
	case dst == nil || host == svc.Hostname:
		return p.Number
	case len(dst.Ports) == 1:
		return dst.Ports[0].Number
	}
	if _, ok := dst.Port(p.Number); ok {
		return p.Number
	}
	for _, dp := range dst.Ports {
		if dp.Protocol.IsHTTP() {
			return dp.Number
		}
	}
	return p.Number
}
