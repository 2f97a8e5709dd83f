package generate

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxy "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry"
	"weft.dev/weft/internal/xds/contract"
)

// VirtualService tcp and tls routes on a captured sidecar's virtual
// outbound listener, with the meaning Istio gives them
// (buildSidecarOutboundTCPFilterChainOpts and
// buildSidecarOutboundTLSFilterChainOpts in pilot/pkg/networking/core).
//
// What Istio decides when it generates the config is decided here too:
// a match applies to this proxy and service port when its port is 0 or
// the port, its sourceLabels are among the proxy's labels, its
// sourceNamespace is the proxy's, and its gateways are empty or name
// "mesh". What the proxy decides per connection — the destination
// address against destinationSubnets, the TLS server name against
// sniHosts — becomes filter_chain_match prefix_ranges and server_names.
//
// Istio gives a service with a virtual IP a listener of its own
// (VIP:port), whose filter chains see only connections to that VIP. Weft
// has one virtual listener, so a service's chains match its VIPs as
// single-address prefixes, and what Istio's per-VIP listener would pick
// is worked out per VIP here:
//
//   - tcp routes (TCP ports and ports whose protocol is sniffed): the
//     first route whose applicable match has no destinationSubnets (or
//     a route without match) catches every connection; before it, routes
//     whose destinationSubnets contain the VIP take its connections, the
//     longest prefix first (Envoy's prefix_ranges); else the service's
//     own cluster.
//   - tls routes (TLS and HTTPS ports): each applicable match is a chain
//     by its sniHosts ("*": any name); connections whose server name no
//     chain names are closed (BlackHoleCluster), as Istio's VIP listener
//     has no chain for them. Without an applicable tls match, the
//     service's own cluster takes every connection.
//
// A service without a virtual IP is reached at addresses no listener of
// Weft's knows; its routes apply where a match says which connections
// are its: destinationSubnets (as prefix_ranges on the port) or sniHosts
// (server_names on the port). Other connections to such a service pass
// through to where the client was going, as before.

// l4Target is where a chain's tcp_proxy sends connections.
type l4Target struct {
	statPrefix string
	clusters   []*tcpproxy.TcpProxy_WeightedCluster_ClusterWeight // one: a plain cluster
	idle       *durationpb.Duration                               // the DestinationRule's connectionPool.tcp.idleTimeout; nil: Envoy's default
	maxDur     *durationpb.Duration                               // its maxConnectionDuration; nil: none
	sourceIP   bool                                               // hash_policy source_ip: its consistentHash.useSourceIp
}

// l4Rule is one applicable match of a tcp or tls route, reduced to what
// the proxy decides per connection.
type l4Rule struct {
	subnets []netip.Prefix // destinationSubnets; empty: any destination
	names   []string       // sniHosts (tls only); empty: any name
	target  int            // index into l4Plan.targets
	origin  string         // spec path, for the chain's name
}

// l4Plan is what a service port's routes say, before it meets the
// service's addresses.
type l4Plan struct {
	targets []l4Target
	rules   []l4Rule
	// catchAll is the target of a tcp route that takes every remaining
	// connection (-1: none); tls is whether the port's routes are tls
	// routes with at least one applicable match.
	catchAll int
	tls      bool
}

// isTLSPort reports whether Istio routes the port by tls routes.
func isTLSPort(p registry.Port) bool {
	return p.Protocol == registry.TLS || p.Protocol == registry.HTTPS
}

// l4Routes reads the tcp (or, on a TLS port, tls) routes of the
// VirtualService for svc that apply to proxy id on port p.
func l4Routes(s *mesh.Snapshot, id contract.Identity, svc *registry.Service, p registry.Port) l4Plan {
	plan := l4Plan{catchAll: -1}
	for _, vs := range s.Routes.ForHostIn(svc.Hostname, id.Namespace) {
		if isTLSPort(p) {
			handled := map[string]bool{} // Istio's hashRuntimeTLSMatchPredicates
			for i, r := range vs.Spec.GetTls() {
				if len(r.GetRoute()) == 0 {
					continue
				}
				target := -1
				for k, m := range r.GetMatch() {
					if !l4MatchApplies(id, p.Number, m.GetPort(), m.GetSourceLabels(), m.GetSourceNamespace(), m.GetGateways()) {
						continue
					}
					key := strings.Join(m.GetSniHosts(), ",") + "|" + strings.Join(m.GetDestinationSubnets(), ",")
					if handled[key] {
						continue
					}
					handled[key] = true
					if target < 0 {
						target = plan.addTarget(s, drView(s, id), vs, r.GetRoute(), svc, p)
					}
					rule := l4Rule{subnets: parseSubnets(m.GetDestinationSubnets()), target: target, origin: fmt.Sprintf("tls_%d_%d", i, k)}
					if !slices.Contains(m.GetSniHosts(), "*") { // "*": any name, as Istio
						for _, h := range m.GetSniHosts() {
							rule.names = append(rule.names, strings.ToLower(h))
						}
					}
					plan.rules = append(plan.rules, rule)
					plan.tls = true
				}
			}
			continue
		}
		for i, r := range vs.Spec.GetTcp() {
			if len(r.GetRoute()) == 0 {
				continue
			}
			if len(r.GetMatch()) == 0 {
				plan.catchAll = plan.addTarget(s, drView(s, id), vs, r.GetRoute(), svc, p)
				return plan
			}
			var subnets []netip.Prefix
			for _, m := range r.GetMatch() {
				if !l4MatchApplies(id, p.Number, m.GetPort(), m.GetSourceLabels(), m.GetSourceNamespace(), m.GetGateways()) {
					continue
				}
				if len(m.GetDestinationSubnets()) == 0 {
					plan.catchAll = plan.addTarget(s, drView(s, id), vs, r.GetRoute(), svc, p)
					return plan
				}
				subnets = append(subnets, parseSubnets(m.GetDestinationSubnets())...)
			}
			if len(subnets) > 0 {
				plan.rules = append(plan.rules, l4Rule{subnets: subnets, target: plan.addTarget(s, drView(s, id), vs, r.GetRoute(), svc, p), origin: fmt.Sprintf("tcp_%d", i)})
			}
		}
	}
	return plan
}

// l4MatchApplies is Istio's matchTCP and matchTLS: what is decided for
// the proxy and port when the config is generated.
func l4MatchApplies(id contract.Identity, port, matchPort uint32, sourceLabels map[string]string, sourceNamespace string, gateways []string) bool {
	if matchPort != 0 && matchPort != port {
		return false
	}
	if sourceNamespace != "" && sourceNamespace != id.Namespace {
		return false
	}
	for k, v := range sourceLabels {
		if got, ok := id.Labels[k]; !ok || got != v {
			return false
		}
	}
	return mesh.AppliesToMesh(gateways)
}

// parseSubnets parses destinationSubnets (validated: an address or a
// CIDR), masked and unmapped.
func parseSubnets(ss []string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, netip.PrefixFrom(p.Addr().Unmap(), min(p.Bits(), p.Addr().Unmap().BitLen())).Masked())
		} else if a, err := netip.ParseAddr(s); err == nil {
			a = a.Unmap()
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return out
}

// addTarget adds the tcp_proxy target of a route's destinations, as
// Istio's buildOutboundNetworkFilters: one destination is its cluster
// (stat prefix: the cluster), several are weighted clusters (those with
// a weight; stat prefix "<name>.<namespace>" of the VirtualService). The
// idle timeout is the first destination's DestinationRule's.
func (plan *l4Plan) addTarget(s *mesh.Snapshot, dv mesh.DRView, vs *config.VirtualService, dests []*networking.RouteDestination, svc *registry.Service, p registry.Port) int {
	cluster := func(d *networking.Destination) string {
		host := s.ResolveHost(d.GetHost(), vs.Namespace)
		port := d.GetPort().GetNumber()
		if port == 0 {
			port = p.Number // Istio's GetDestinationCluster: the listener's port, or the service's only one
			if dst := s.Registry.Service(host); dst != nil && len(dst.Ports) == 1 {
				port = dst.Ports[0].Number
			}
		}
		return contract.ClusterName(contract.Outbound, port, d.GetSubset(), host)
	}
	t := l4Target{}
	t.idle, t.maxDur = tcpDurations(s, dv, s.ResolveHost(dests[0].GetDestination().GetHost(), vs.Namespace))
	if len(dests) == 1 {
		t.sourceIP = useSourceIP(s, dv, s.ResolveHost(dests[0].GetDestination().GetHost(), vs.Namespace), dests[0].GetDestination().GetSubset())
		c := cluster(dests[0].GetDestination())
		t.statPrefix = c
		t.clusters = []*tcpproxy.TcpProxy_WeightedCluster_ClusterWeight{{Name: c, Weight: 1}}
	} else {
		t.sourceIP = useSourceIP(s, dv, s.ResolveHost(dests[0].GetDestination().GetHost(), vs.Namespace), "")
		t.statPrefix = vs.Name + "." + vs.Namespace
		for _, d := range dests {
			if d.GetWeight() > 0 {
				t.clusters = append(t.clusters, &tcpproxy.TcpProxy_WeightedCluster_ClusterWeight{Name: cluster(d.GetDestination()), Weight: uint32(d.GetWeight())})
			}
		}
		if len(t.clusters) == 0 { // validation requires weights; never leave a chain without a cluster
			t.clusters = []*tcpproxy.TcpProxy_WeightedCluster_ClusterWeight{{Name: cluster(dests[0].GetDestination()), Weight: 1}}
		}
	}
	plan.targets = append(plan.targets, t)
	return len(plan.targets) - 1
}

// tcpDurations are the DestinationRule's connectionPool.tcp idleTimeout
// and maxConnectionDuration for host (its top-level traffic policy, as
// Istio's tcp_proxy takes them), or nil.
func tcpDurations(s *mesh.Snapshot, dv mesh.DRView, host string) (idle, maxDur *durationpb.Duration) {
	dr := s.Subsets.Rules(dv, host).Rule
	if dr == nil {
		return nil, nil
	}
	t := dr.Spec.GetTrafficPolicy().GetConnectionPool().GetTcp()
	return t.GetIdleTimeout(), t.GetMaxConnectionDuration()
}

// useSourceIP is Istio's maybeSetHashPolicy: whether host's
// DestinationRule balances by consistent hash of the source IP — its
// top-level loadBalancer, or the subset's when the subset sets one.
func useSourceIP(s *mesh.Snapshot, dv mesh.DRView, host, subset string) bool {
	dr := s.Subsets.Rules(dv, host).Rule
	if dr == nil {
		return false
	}
	use := dr.Spec.GetTrafficPolicy().GetLoadBalancer().GetConsistentHash().GetUseSourceIp()
	for _, sub := range dr.Spec.GetSubsets() {
		if sub.GetName() == subset {
			if lb := sub.GetTrafficPolicy().GetLoadBalancer(); lb != nil {
				use = lb.GetConsistentHash().GetUseSourceIp()
			}
			break
		}
	}
	return use
}

// defaultTarget is the service port's own cluster.
func defaultTarget(s *mesh.Snapshot, dv mesh.DRView, svc *registry.Service, p registry.Port) l4Target {
	c := contract.ClusterName(contract.Outbound, p.Number, "", svc.Hostname)
	t := l4Target{statPrefix: c, clusters: []*tcpproxy.TcpProxy_WeightedCluster_ClusterWeight{{Name: c, Weight: 1}}}
	t.idle, t.maxDur = tcpDurations(s, dv, svc.Hostname)
	t.sourceIP = useSourceIP(s, dv, svc.Hostname, "")
	return t
}

// blackHoleTarget closes the connection (Envoy finds no endpoint).
var blackHoleTarget = l4Target{statPrefix: contract.ClusterBlackHole, clusters: []*tcpproxy.TcpProxy_WeightedCluster_ClusterWeight{{Name: contract.ClusterBlackHole, Weight: 1}}}

// tcpProxyTo is a chain's tcp_proxy to t.
func tcpProxyTo(t l4Target, logs []*accesslogv3.AccessLog) *listener.Filter {
	tp := &tcpproxy.TcpProxy{StatPrefix: t.statPrefix, IdleTimeout: t.idle, MaxDownstreamConnectionDuration: t.maxDur, AccessLog: logs}
	if t.sourceIP {
		tp.HashPolicy = []*typev3.HashPolicy{{PolicySpecifier: &typev3.HashPolicy_SourceIp_{SourceIp: &typev3.HashPolicy_SourceIp{}}}}
	}
	if len(t.clusters) == 1 {
		tp.ClusterSpecifier = &tcpproxy.TcpProxy_Cluster{Cluster: t.clusters[0].Name}
	} else {
		tp.ClusterSpecifier = &tcpproxy.TcpProxy_WeightedClusters{WeightedClusters: &tcpproxy.TcpProxy_WeightedCluster{Clusters: t.clusters}}
	}
	return &listener.Filter{Name: wellknown.TCPProxy, ConfigType: &listener.Filter_TypedConfig{TypedConfig: mustAny(tp)}}
}

// l4Claims are the (port, prefix, server name) combinations chains of the
// virtual outbound listener already match: Envoy refuses two chains that
// match the same connections, so the later one gives up what is taken.
type l4Claims map[string]bool

func claimKey(port uint32, prefix, name string) string {
	return fmt.Sprintf("%d|%s|%s", port, prefix, name)
}

// take trims fc's match to what no earlier chain matches and claims it;
// false when nothing is left. A chain with server names keeps the names
// free on every one of its prefixes; one without keeps its free prefixes.
func (c l4Claims) take(fc *listener.FilterChain) bool {
	m := fc.GetFilterChainMatch()
	port := m.GetDestinationPort().GetValue()
	prefixes := []string{""}
	if len(m.GetPrefixRanges()) > 0 {
		prefixes = prefixes[:0]
		for _, r := range m.GetPrefixRanges() {
			prefixes = append(prefixes, fmt.Sprintf("%s/%d", r.GetAddressPrefix(), r.GetPrefixLen().GetValue()))
		}
	}
	if names := m.GetServerNames(); len(names) > 0 {
		var kept []string
		for _, n := range names {
			free := true
			for _, p := range prefixes {
				free = free && !c[claimKey(port, p, n)]
			}
			if free {
				kept = append(kept, n)
				for _, p := range prefixes {
					c[claimKey(port, p, n)] = true
				}
			}
		}
		m.ServerNames = kept
		return len(kept) > 0
	}
	var kept []*core.CidrRange
	free := false
	for i, p := range prefixes {
		if c[claimKey(port, p, "")] {
			continue
		}
		c[claimKey(port, p, "")] = true
		free = true
		if p != "" {
			kept = append(kept, m.GetPrefixRanges()[i])
		}
	}
	if len(m.GetPrefixRanges()) > 0 {
		m.PrefixRanges = kept
	}
	return free
}

// l4Chains are the virtual outbound listener's chains for TCP, TLS or
// sniffed service port p of svc (its own VIPs vips), in order; the
// chains with server_names need the TLS inspector.
func l4Chains(s *mesh.Snapshot, id contract.Identity, svc *registry.Service, p registry.Port, vips []netip.Addr, logs []*accesslogv3.AccessLog) []*listener.FilterChain {
	plan := l4Routes(s, id, svc, p)
	base := contract.ClusterName(contract.Outbound, p.Number, "", svc.Hostname)
	chain := func(name string, prefixes []*core.CidrRange, names []string, t l4Target) *listener.FilterChain {
		return &listener.FilterChain{
			Name: name,
			FilterChainMatch: &listener.FilterChainMatch{
				DestinationPort: wrapperspb.UInt32(p.Number),
				PrefixRanges:    prefixes,
				ServerNames:     names,
			},
			Filters: []*listener.Filter{tcpProxyTo(t, logs)},
		}
	}
	if len(vips) == 0 {
		var out []*listener.FilterChain
		for _, r := range plan.rules {
			if len(r.subnets) == 0 && len(r.names) == 0 {
				continue // it would take every connection on the port, to any address
			}
			out = append(out, chain(base+"_"+r.origin, prefixRanges(r.subnets), r.names, plan.targets[r.target]))
		}
		return out
	}

	// Per VIP, the rules Istio's VIP:port listener would reach: those
	// whose longest destination subnet containing the VIP is the longest
	// of all (Envoy matches the longest prefix, then never looks back),
	// else those without subnets.
	type pick struct {
		names  string // server names joined; "" for any
		target int    // into plan.targets; -1 the default, -2 the black hole
		origin string
	}
	var order []pick
	groups := map[pick][]netip.Addr{}
	add := func(pk pick, vip netip.Addr) {
		if _, ok := groups[pk]; !ok {
			order = append(order, pk)
		}
		groups[pk] = append(groups[pk], vip)
	}
	for _, vip := range vips {
		best := -1
		for _, r := range plan.rules {
			for _, sn := range r.subnets {
				if sn.Contains(vip) && sn.Bits() > best {
					best = sn.Bits()
				}
			}
		}
		var reached []l4Rule
		for _, r := range plan.rules {
			in := len(r.subnets) == 0 && best < 0
			for _, sn := range r.subnets {
				in = in || sn.Contains(vip) && sn.Bits() == best
			}
			if in {
				reached = append(reached, r)
			}
		}
		switch {
		case plan.tls:
			anyName := false
			for _, r := range reached {
				add(pick{names: strings.Join(r.names, ","), target: r.target, origin: r.origin}, vip)
				anyName = anyName || len(r.names) == 0
			}
			if !anyName {
				add(pick{target: -2, origin: "blackhole"}, vip)
			}
		case len(reached) > 0:
			add(pick{target: reached[0].target, origin: reached[0].origin}, vip)
		case plan.catchAll >= 0:
			add(pick{target: plan.catchAll, origin: "tcp"}, vip)
		default:
			add(pick{target: -1}, vip)
		}
	}
	var out []*listener.FilterChain
	used := map[string]int{}
	for _, pk := range order {
		t, name := blackHoleTarget, base
		switch {
		case pk.target == -1:
			t = defaultTarget(s, drView(s, id), svc, p)
		case pk.target >= 0:
			t = plan.targets[pk.target]
		}
		if pk.origin != "" {
			name += "_" + pk.origin
		}
		if used[name]++; used[name] > 1 {
			name += fmt.Sprintf("_%d", used[name])
		}
		var names []string
		if pk.names != "" {
			names = strings.Split(pk.names, ",")
		}
		out = append(out, chain(name, hostRanges(groups[pk]), names, t))
	}
	return out
}

// prefixRanges are ps as CIDR ranges.
func prefixRanges(ps []netip.Prefix) []*core.CidrRange {
	out := make([]*core.CidrRange, 0, len(ps))
	for _, p := range ps {
		out = append(out, &core.CidrRange{AddressPrefix: p.Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(p.Bits()))})
	}
	return out
}

// sortedPorts returns the ports in ps, ascending, once each.
func sortedPorts(ps map[uint32]bool) []uint32 {
	out := make([]uint32, 0, len(ps))
	for p := range ps {
		out = append(out, p)
	}
	slices.SortFunc(out, cmp.Compare)
	return out
}
