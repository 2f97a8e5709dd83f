package generate

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	httpinspector "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/http_inspector/v3"
	originaldst "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxy "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry"
	"weft.dev/weft/internal/xds/contract"
)

// This file is a captured proxy's configuration (id.Captured(): the pod's
// traffic is redirected to it by iptables REDIRECT, weft-proxy capture).
// Instead of per-workload inbound listeners (the application binds those
// addresses itself) and the explicit outbound listener, it gets Istio's two
// virtual listeners, both with use_original_dst: the connection's local
// address is restored to where the client dialled, and the filter chains
// match on it.
//
// The outbound traffic policy (the proxy's Sidecar's, else
// s.OutboundTrafficPolicy) decides what happens to a destination the mesh
// does not know (or the proxy's Sidecar does not let it see): ALLOW_ANY (Istio's default) forwards it to where it was
// going (PassthroughCluster), REGISTRY_ONLY refuses it (BlackHoleCluster
// for TCP, a 502 for HTTP), as Istio.

// virtualOutboundListener is [::]:15001 (ipv4_compat: REDIRECT delivers
// IPv4 to 127.0.0.1 and IPv6 to ::1, one dual-stack socket gets both).
// Its filter chains, in Envoy's match order:
//
//   - per TCP service port P with virtual IPs: {destination_port: P,
//     prefix_ranges: the VIPs} → tcp_proxy to outbound|P||<host>, or
//     where the VirtualService's tcp routes send them; per TLS or HTTPS
//     port, chains by server name for its tls routes (the TLS inspector
//     runs on those ports only); services without VIPs get chains only
//     for routes whose match names subnets or server names
//     (tcproute.go);
//   - per sniffed service port P (protocol not declared) with virtual
//     IPs: the same chain, and before it {destination_port: P,
//     prefix_ranges: the VIPs, application_protocols: [http/1.1, h2c]}
//     → the HTTP connection manager of P;
//   - per HTTP or sniffed port P of any service: {destination_port: P,
//     application_protocols: [http/1.1, h2c]} → an HTTP connection
//     manager with RDS "P", which routes by Host (any destination IP on
//     the port, as Istio's 0.0.0.0_P listeners; an HTTP service's VIP
//     needs no chain of its own). As Istio's plaintextHTTPALPNs, the
//     chains take http/1.0 too when the proxy accepts HTTP/1.0; else
//     HTTP/1.0, like any bytes that are not HTTP, on a declared HTTP
//     port too, takes the default chain (Istio's fall-through chain);
//   - the default chain: tcp_proxy → PassthroughCluster, or
//     BlackHoleCluster under REGISTRY_ONLY (its stat prefix says which).
//
// The HTTP inspector runs only on the sniffed and the HTTP ports, so a
// server-first protocol elsewhere is never held waiting for its client's
// first bytes; there it waits for them without a time limit, as Istio's
// default protocolDetectionTimeout of 0: declare a server-first
// protocol's port (a "tcp-" name, appProtocol: tcp).
//
// It returns the listener and the route configurations its chains name.
func virtualOutboundListener(s *mesh.Snapshot, id contract.Identity) (*listener.Listener, []types.Resource) {
	vis := scopeOf(s, id)
	unknown := contract.ClusterPassthrough
	logs := tcpAccessLogs(s, id.Namespace, id.Labels, mesh.ModeClient)
	if vis.OutboundTrafficPolicy(s) == mesh.RegistryOnly {
		unknown = contract.ClusterBlackHole
	}
	l := &listener.Listener{
		Name:             contract.ListenerVirtualOutbound,
		Address:          dualStackAddress(contract.VirtualOutboundPort),
		TrafficDirection: core.TrafficDirection_OUTBOUND,
		UseOriginalDst:   wrapperspb.Bool(true),
		ListenerFilters:  []*listener.ListenerFilter{originalDstFilter()},
		DefaultFilterChain: &listener.FilterChain{
			Name:    unknown,
			Filters: []*listener.Filter{tcpProxyFilter(unknown, unknown, logs)},
		},
	}
	var httpPorts, sniffedPorts []uint32
	type vipChain struct {
		port    uint32
		name    string
		matchIP []*core.CidrRange
	}
	var sniffedVIPs []vipChain // HTTP chains to add once the port's HTTP connection manager exists
	claims := l4Claims{}
	tlsPorts := map[uint32]bool{} // ports with chains by server name: the TLS inspector runs there
	for _, svc := range s.Registry.Services() {
		vips := ownVIPs(s, svc)
		for _, p := range svc.Ports {
			if !vis.Port(svc, p.Number) {
				continue
			}
			switch {
			case p.Protocol.IsHTTP():
				httpPorts = appendNew(httpPorts, p.Number)
				continue
			case p.Protocol.Sniffed():
				sniffedPorts = appendNew(sniffedPorts, p.Number)
			}
			// tcp and tls routes (tcproute.go); a service without a
			// VIP gets chains only where a route's match says which
			// connections are its.
			for _, fc := range l4Chains(s, id, svc, p, vips, logs) {
				if !claims.take(fc) {
					continue
				}
				if len(fc.GetFilterChainMatch().GetServerNames()) > 0 {
					tlsPorts[p.Number] = true
				}
				l.FilterChains = append(l.FilterChains, fc)
			}
			if len(vips) == 0 {
				continue // headless or external: reached by its endpoints' own addresses, through the passthrough
			}
			if p.Protocol.Sniffed() {
				c := contract.ClusterName(contract.Outbound, p.Number, "", svc.Hostname)
				sniffedVIPs = append(sniffedVIPs, vipChain{port: p.Number, name: c + "_http", matchIP: hostRanges(vips)})
			}
		}
	}
	if len(tlsPorts) > 0 {
		l.ListenerFilters = append(l.ListenerFilters, inspectorOnly(tlsInspector(), sortedPorts(tlsPorts)))
	}
	// As in Istio, the HTTP chains of the wildcard listener take only
	// what the HTTP inspector found HTTP in (plaintextHTTPALPNs), on
	// declared HTTP ports as on sniffed ones: other bytes, on any port,
	// take the default chain to their original destination. HTTP/1.0 is
	// HTTP to the proxy only when it accepts it (hcmFilter); otherwise
	// the inspector's "http/1.0" matches no HTTP chain and goes there too,
	// not to a 426.
	http10 := id.HTTP10 || s.HTTP10()
	httpALPN := sniffedHTTP
	if http10 {
		httpALPN = sniffedHTTPAnd10
	}
	inspected := appendNew(slices.Clone(sniffedPorts), httpPorts...)
	if len(inspected) > 0 {
		slices.Sort(inspected)
		l.ListenerFilters = append(l.ListenerFilters, httpInspectorOnly(inspected))
	}
	if len(tlsPorts) > 0 || len(inspected) > 0 {
		l.ListenerFiltersTimeout = durationpb.New(0)
		l.ContinueOnListenerFiltersTimeout = true
	}
	routePorts := slices.Sorted(slices.Values(appendNew(slices.Clone(httpPorts), sniffedPorts...)))
	var rcs []types.Resource
	hcmChains := map[uint32]*listener.FilterChain{}
	for _, port := range routePorts {
		rc := outboundRoutesForPort(s, id, port)
		name := fmt.Sprintf("outbound_0.0.0.0_%d", port)
		fc := &listener.FilterChain{
			Name:             name,
			FilterChainMatch: &listener.FilterChainMatch{DestinationPort: wrapperspb.UInt32(port)},
			Filters: []*listener.Filter{hcmFilter(s, id, withAccessLogs(s, &hcm.HttpConnectionManager{
				StatPrefix: name,
				CodecType:  hcm.HttpConnectionManager_AUTO,
				RouteSpecifier: &hcm.HttpConnectionManager_Rds{Rds: &hcm.Rds{
					ConfigSource:    adsConfigSource(),
					RouteConfigName: rc.Name,
				}},
				HttpFilters: append(faultFilters(), routerFilters()...),
			}, id.Namespace, id.Labels, mesh.ModeClient))},
		}
		withCORSFilter(&listener.Listener{FilterChains: []*listener.FilterChain{fc}}, rc) // rewrites fc's connection manager
		hcmChains[port] = fc
		fc.FilterChainMatch.ApplicationProtocols = httpALPN
		if tlsPorts[port] {
			// The TLS inspector runs here too: a TLS client's ALPN
			// must not pick the plaintext HTTP chain.
			fc.FilterChainMatch.TransportProtocol = "raw_buffer"
		}
		l.FilterChains = append(l.FilterChains, fc)
		rcs = append(rcs, rc)
	}
	for _, v := range sniffedVIPs {
		fc := proto.Clone(hcmChains[v.port]).(*listener.FilterChain)
		fc.Name = v.name
		fc.FilterChainMatch = &listener.FilterChainMatch{
			DestinationPort:      wrapperspb.UInt32(v.port),
			PrefixRanges:         v.matchIP,
			ApplicationProtocols: httpALPN,
		}
		if tlsPorts[v.port] {
			fc.FilterChainMatch.TransportProtocol = "raw_buffer"
		}
		l.FilterChains = append(l.FilterChains, fc)
	}
	return l, rcs
}

// sniffedHTTP are the application protocols the HTTP inspector reports
// that the HTTP chains of sniffed ports take; sniffedHTTPAnd10 also
// HTTP/1.0, for a proxy that accepts it (Istio's plaintextHTTPALPNs).
var (
	sniffedHTTP      = []string{"http/1.1", "h2c"}
	sniffedHTTPAnd10 = []string{"http/1.0", "http/1.1", "h2c"}
)

// mtlsHTTP are the ALPN protocols a sidecar offers when it carries HTTP
// over mutual TLS (a byte stream offers neither).
var mtlsHTTP = []string{"h2", "http/1.1"}

// appendNew appends the values of vs not already in s.
func appendNew(s []uint32, vs ...uint32) []uint32 {
	for _, v := range vs {
		if !slices.Contains(s, v) {
			s = append(s, v)
		}
	}
	return s
}

// outboundRoutesForPort is a captured proxy's route configuration for
// HTTP port port, named "<port>": the virtual hosts of the services on
// that port (as in http_proxy), then Istio's last virtual host for any
// other Host: allow_any, to where the client was going
// (PassthroughCluster), or under REGISTRY_ONLY block_all, a 502.
func outboundRoutesForPort(s *mesh.Snapshot, id contract.Identity, port uint32) *route.RouteConfiguration {
	vhs := outboundVirtualHosts(s, id, port)
	last := &route.Route{
		Name:  contract.RouteAllowAny,
		Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
		Action: &route.Route_Route{Route: &route.RouteAction{
			ClusterSpecifier: &route.RouteAction_Cluster{Cluster: contract.ClusterPassthrough},
			Timeout:          durationpb.New(0), // a passthrough stream may be long-lived, as Istio
		}},
	}
	if scopeOf(s, id).OutboundTrafficPolicy(s) == mesh.RegistryOnly {
		last = &route.Route{
			Name:   contract.RouteBlockAll,
			Match:  &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
			Action: &route.Route_DirectResponse{DirectResponse: &route.DirectResponseAction{Status: 502}},
		}
	}
	vhs = append(vhs, &route.VirtualHost{Name: last.Name, Domains: []string{"*"}, Routes: []*route.Route{last}})
	return &route.RouteConfiguration{
		Name:         contract.OutboundRouteName(port),
		VirtualHosts: vhs,
		// As Istio's sidecar routes: the client dialled the port, so a
		// port in its Host (its own, or a NodePort's) does not choose
		// the virtual host; every domain has a port-less form here.
		IgnorePortInHostMatching: true,
	}
}

// virtualInboundListener is [::]:15006: per workload port P (the ports of
// the endpoints registered on id.IPs), the chains an inbound listener of
// P has (inboundChains: STRICT, PERMISSIVE, DISABLE per the port's
// PeerAuthentication), each also matching destination_port P; HTTP ports
// get the inbound HTTP connection manager, other ports tcp_proxy to
// inbound|P||. Any other port goes to the application unchanged
// (InboundPassthroughClusterIpv4; for a proxy with an IPv6 address, a
// chain matching ::/0 sends IPv6 destinations to
// InboundPassthroughClusterIpv6), as Istio does for undeclared ports,
// with the mutual TLS the workload's PeerAuthentication asks for
// (undeclaredPortChains). It returns the listener and the inbound clusters,
// passthrough included.
func virtualInboundListener(s *mesh.Snapshot, id contract.Identity) (*listener.Listener, []types.Resource) {
	l := &listener.Listener{
		Name:             contract.ListenerVirtualInbound,
		Address:          dualStackAddress(contract.VirtualInboundPort),
		TrafficDirection: core.TrafficDirection_INBOUND,
		UseOriginalDst:   wrapperspb.Bool(true),
		ListenerFilters:  []*listener.ListenerFilter{originalDstFilter(), tlsInspector()},
	}
	ports := workloadPorts(s, id, true)
	pass := undeclaredPortChains(s, id, ports, contract.ClusterInboundPassthroughIPv4, nil)
	if len(pass) == 1 && pass[0].FilterChainMatch == nil && pass[0].TransportSocket == nil {
		// Plaintext on every undeclared port: the default chain.
		l.DefaultFilterChain = pass[0]
	} else {
		l.FilterChains = append(l.FilterChains, pass...)
	}
	var (
		cs      []types.Resource
		sniffed []uint32
	)
	sniffedALPN := sniffedHTTP
	if id.HTTP10 || s.HTTP10() {
		sniffedALPN = sniffedHTTPAnd10
	}
	for _, wp := range ports {
		name := fmt.Sprintf("0.0.0.0_%d", wp.port)
		mode := s.PeerAuthn.Mode(wp.w.namespace, wp.w.labels, wp.port)
		httpChain := func() *listener.FilterChain {
			return &listener.FilterChain{Filters: []*listener.Filter{hcmFilter(s, id, inboundHCM(s, wp.w, name, wp.port))}}
		}
		tcpChain := func() *listener.FilterChain {
			c := contract.ClusterName(contract.Inbound, wp.port, "", "")
			return &listener.FilterChain{Filters: append(tcpRBACFilters(s, wp.w),
				tcpProxyFilter("inbound_"+name, c, tcpAccessLogs(s, wp.w.namespace, wp.w.labels, mesh.ModeServer)))}
		}
		var chains []*listener.FilterChain
		switch {
		case wp.proto.IsHTTP():
			_, chains = inboundChains(mode, id.MTLS, httpChain())
		case wp.proto.Sniffed() && mode == config.MTLSPermissive && id.MTLS:
			// PERMISSIVE: the sniffed chains below, the mutual TLS ones
			// for the sidecars' SNI only, and TLS of anyone else relayed
			// as it came (foreignTLS).
			sniffed = append(sniffed, wp.port)
			names := meshServerNames(s, wp)
			_, chains = inboundChains(mode, id.MTLS, httpChain())
			for _, fc := range chains {
				fc.FilterChainMatch.ApplicationProtocols = sniffedALPN
				if fc.TransportSocket != nil {
					fc.FilterChainMatch.ApplicationProtocols = mtlsHTTP
					fc.FilterChainMatch.ServerNames = names
				}
			}
			_, tcp := inboundChains(mode, id.MTLS, tcpChain())
			chains = append(chains, foreignTLS(tcp, names, tcpChain)...)
		case wp.proto.Sniffed():
			// HTTP when the client says so: the HTTP inspector's verdict
			// on plaintext, the ALPN a sidecar offers over mutual TLS
			// (it offers none for a byte stream); TCP otherwise.
			sniffed = append(sniffed, wp.port)
			_, chains = inboundChains(mode, id.MTLS, httpChain())
			for _, fc := range chains {
				if fc.FilterChainMatch == nil {
					fc.FilterChainMatch = &listener.FilterChainMatch{}
				}
				fc.FilterChainMatch.ApplicationProtocols = sniffedALPN
				if fc.TransportSocket != nil {
					fc.FilterChainMatch.ApplicationProtocols = mtlsHTTP
				}
			}
			_, tcp := inboundChains(mode, id.MTLS, tcpChain())
			chains = append(chains, tcp...)
		default:
			_, chains = inboundChains(mode, id.MTLS, tcpChain())
			if mode == config.MTLSPermissive && id.MTLS {
				chains = foreignTLS(chains, meshServerNames(s, wp), tcpChain)
			}
		}
		for _, fc := range chains {
			if fc.FilterChainMatch == nil {
				fc.FilterChainMatch = &listener.FilterChainMatch{}
			}
			fc.FilterChainMatch.DestinationPort = wrapperspb.UInt32(wp.port)
			fc.Name = "inbound_" + name
			if tp := fc.FilterChainMatch.GetTransportProtocol(); tp != "" {
				fc.Name += "_" + tp
				if tp == "tls" && fc.TransportSocket == nil {
					fc.Name += "_relayed" // foreignTLS
				}
			}
			if len(fc.FilterChainMatch.GetApplicationProtocols()) > 0 {
				fc.Name += "_http"
			}
			l.FilterChains = append(l.FilterChains, fc)
		}
		cs = append(cs, wp.cluster(s, id))
	}
	if len(sniffed) > 0 {
		slices.Sort(sniffed)
		l.ListenerFilters = append(l.ListenerFilters, httpInspectorOnly(sniffed))
	}
	cs = append(cs, inboundPassthroughCluster(contract.ClusterInboundPassthroughIPv4, contract.InboundPassthroughSourceIPv4))
	if hasIPv6(id.IPs) {
		l.FilterChains = append(l.FilterChains, undeclaredPortChains(s, id, ports, contract.ClusterInboundPassthroughIPv6,
			[]*core.CidrRange{{AddressPrefix: "::", PrefixLen: wrapperspb.UInt32(0)}})...)
		cs = append(cs, inboundPassthroughCluster(contract.ClusterInboundPassthroughIPv6, contract.InboundPassthroughSourceIPv6))
	}
	return l, cs
}

// foreignTLS splits the TLS of a PERMISSIVE TCP port: the mutual TLS
// chain of chains (inboundChains) takes only connections whose SNI a
// sidecar's mutual TLS to the port's services carries (names:
// meshServerNames), and TLS with any other SNI, or none, is relayed to
// the application as it came, on a chain built by plain with transport
// protocol "tls". That TLS is the application's own: an admission webhook
// the Kubernetes API server calls, an HTTPS port a client outside the
// mesh uses. Istio tells the two apart by the ALPN its sidecars add
// ("istio-peer-exchange", "istio"); Weft's sidecars do not add one, but
// always send Istio's SNI, "outbound_.<port>_.<subset>_.<host>", so this
// keeps working with sidecars of any Weft version. Without names, or
// without a mutual TLS chain, chains are returned unchanged.
func foreignTLS(chains []*listener.FilterChain, names []string, plain func() *listener.FilterChain) []*listener.FilterChain {
	if len(names) == 0 {
		return chains
	}
	split := false
	for _, fc := range chains {
		if fc.TransportSocket != nil && fc.GetFilterChainMatch().GetTransportProtocol() == "tls" {
			fc.FilterChainMatch.ServerNames = names
			split = true
		}
	}
	if !split {
		return chains
	}
	relay := plain()
	relay.FilterChainMatch = &listener.FilterChainMatch{TransportProtocol: "tls"}
	return append(chains, relay)
}

// meshServerNames are the SNIs of a sidecar's mutual TLS to the services
// served on wp: "*.<host>" for each (Istio's "outbound_.<port>_.<subset>_.<host>",
// whatever the port and subset), and the sni an ISTIO_MUTUAL
// DestinationRule of the service's (as most namespaces see it) sets
// instead, sorted.
func meshServerNames(s *mesh.Snapshot, wp *workloadPort) []string {
	var out []string
	for _, svc := range wp.services {
		out = append(out, "*."+svc.Hostname)
		dr := s.Subsets.ForHost(svc.Hostname)
		if dr == nil {
			continue
		}
		sni := func(tp *networking.TrafficPolicy) {
			if t := tp.GetTls(); t.GetMode() == networking.ClientTLSSettings_ISTIO_MUTUAL && t.GetSni() != "" {
				out = append(out, strings.ToLower(t.GetSni()))
			}
			for _, pl := range tp.GetPortLevelSettings() {
				if t := pl.GetTls(); t.GetMode() == networking.ClientTLSSettings_ISTIO_MUTUAL && t.GetSni() != "" {
					out = append(out, strings.ToLower(t.GetSni()))
				}
			}
		}
		sni(dr.Spec.GetTrafficPolicy())
		for _, sub := range dr.Spec.GetSubsets() {
			sni(sub.GetTrafficPolicy())
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// undeclaredPortChains are the chains of connections to ports no service
// declares (Istio's buildInboundPassthroughChains): relayed to the
// application as they came, through cluster, under the network RBAC of
// the proxy's own workload, and accepted as its PeerAuthentication says —
// its mode for any such port, and for each port of its portLevelMtls that
// no service declares, that port's mode on chains matching the port
// (Istio's ForPassthrough). So STRICT refuses plaintext on every port of
// the workload, not only on the ports its services name. PERMISSIVE (and
// DISABLE) relay the bytes as they came: TLS on a port no service
// declares is the application's own (an HTTPS endpoint, an admission
// webhook the API server calls), which Istio tells from its sidecars'
// mutual TLS by the ALPN they add; Weft's sidecars send mutual TLS only to
// declared ports, so none is terminated here. prefixes, when set, is the
// destination range the chains match (the IPv6 ones).
func undeclaredPortChains(s *mesh.Snapshot, id contract.Identity, declared []*workloadPort, cluster string, prefixes []*core.CidrRange) []*listener.FilterChain {
	self := workload{namespace: id.Namespace, labels: id.Labels}
	logs := tcpAccessLogs(s, id.Namespace, id.Labels, mesh.ModeServer)
	eff := s.PeerAuthn.Effective(id.Namespace, id.Labels)
	build := func(port uint32, mode config.MTLSMode) []*listener.FilterChain {
		if mode == config.MTLSPermissive {
			mode = config.MTLSDisable
		}
		plain := &listener.FilterChain{Filters: append(tcpRBACFilters(s, self), tcpProxyFilter(cluster, cluster, logs))}
		_, chains := inboundChains(mode, id.MTLS, plain)
		for _, fc := range chains {
			fc.Name = cluster
			if port != 0 || len(prefixes) > 0 {
				if fc.FilterChainMatch == nil {
					fc.FilterChainMatch = &listener.FilterChainMatch{}
				}
				fc.FilterChainMatch.PrefixRanges = prefixes
				if port != 0 {
					fc.FilterChainMatch.DestinationPort = wrapperspb.UInt32(port)
					fc.Name += fmt.Sprintf("_%d", port)
				}
			}
			if tp := fc.FilterChainMatch.GetTransportProtocol(); tp != "" {
				fc.Name += "_" + tp
			} else if fc.TransportSocket != nil {
				fc.Name += "_tls"
			}
		}
		return chains
	}
	out := build(0, eff.Mode)
	ports := make([]uint32, 0, len(eff.PerPort))
	for p := range eff.PerPort {
		if !slices.ContainsFunc(declared, func(wp *workloadPort) bool { return wp.port == p }) {
			ports = append(ports, p)
		}
	}
	slices.Sort(ports)
	for _, p := range ports {
		out = append(out, build(p, eff.PerPort[p])...)
	}
	return out
}

// hasIPv6 reports whether any of ips is an IPv6 address (not IPv4-mapped).
func hasIPv6(ips []string) bool {
	for _, ip := range ips {
		if a, err := netip.ParseAddr(ip); err == nil && a.Unmap().Is6() {
			return true
		}
	}
	return false
}

// passthroughClusters are Istio's outbound ones: PassthroughCluster (to
// the original destination) and BlackHoleCluster (nowhere).
func passthroughClusters() []types.Resource {
	return []types.Resource{
		originalDstCluster(contract.ClusterPassthrough),
		&cluster.Cluster{
			Name:                 contract.ClusterBlackHole,
			ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_STATIC},
			ConnectTimeout:       durationpb.New(connectTimeout),
		},
	}
}

// inboundPassthroughCluster forwards to the application on the original
// destination, from source (127.0.0.6, ::6), which the capture rules do
// not capture again.
func inboundPassthroughCluster(name, source string) *cluster.Cluster {
	c := originalDstCluster(name)
	c.UpstreamBindConfig = &core.BindConfig{SourceAddress: &core.SocketAddress{
		Address:       source,
		PortSpecifier: &core.SocketAddress_PortValue{PortValue: 0},
	}}
	return c
}

func originalDstCluster(name string) *cluster.Cluster {
	return &cluster.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_ORIGINAL_DST},
		LbPolicy:             cluster.Cluster_CLUSTER_PROVIDED,
		ConnectTimeout:       durationpb.New(connectTimeout),
	}
}

// ownVIPs are the virtual IPs of svc that route to it: an address two
// services claim (overlapping ServiceEntries) belongs to the first by
// hostname, as registry.Snapshot.ServiceAt orders them; Envoy refuses two
// chains with the same match. Duplicates are dropped.
func ownVIPs(s *mesh.Snapshot, svc *registry.Service) []netip.Addr {
	var out []netip.Addr
	for _, a := range svc.Addresses {
		a = a.Unmap()
		if owners := s.Registry.ServiceAt(a); len(owners) == 0 || owners[0] != svc || slices.Contains(out, a) {
			continue
		}
		out = append(out, a)
	}
	return out
}

// hostRanges are single-address CIDR ranges (/32, /128) of addrs.
func hostRanges(addrs []netip.Addr) []*core.CidrRange {
	out := make([]*core.CidrRange, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, &core.CidrRange{AddressPrefix: a.String(), PrefixLen: wrapperspb.UInt32(uint32(a.BitLen()))})
	}
	return out
}

// dualStackAddress is [::]:port accepting IPv4 too (ipv4_compat).
func dualStackAddress(port uint32) *core.Address {
	a := socketAddress("::", port)
	a.GetSocketAddress().Ipv4Compat = true
	return a
}

// tcpProxyFilter relays a chain's connections to cluster, logging each
// one to logs when it ends (tcpAccessLogs).
func tcpProxyFilter(statPrefix, cluster string, logs []*accesslogv3.AccessLog) *listener.Filter {
	return &listener.Filter{
		Name: wellknown.TCPProxy,
		ConfigType: &listener.Filter_TypedConfig{TypedConfig: mustAny(&tcpproxy.TcpProxy{
			StatPrefix:       statPrefix,
			ClusterSpecifier: &tcpproxy.TcpProxy_Cluster{Cluster: cluster},
			AccessLog:        logs,
		})},
	}
}

func originalDstFilter() *listener.ListenerFilter {
	return &listener.ListenerFilter{
		Name:       "envoy.filters.listener.original_dst",
		ConfigType: &listener.ListenerFilter_TypedConfig{TypedConfig: mustAny(&originaldst.OriginalDst{})},
	}
}

// httpInspectorOnly is the HTTP inspector, disabled for every
// destination port but ports (Istio's listenerPredicateIncludePorts).
func httpInspectorOnly(ports []uint32) *listener.ListenerFilter {
	return inspectorOnly(&listener.ListenerFilter{
		Name:       wellknown.HTTPInspector,
		ConfigType: &listener.ListenerFilter_TypedConfig{TypedConfig: mustAny(&httpinspector.HttpInspector{})},
	}, ports)
}

// inspectorOnly is the listener filter f, disabled for every destination
// port but ports: a server-first protocol elsewhere is never held
// waiting for its client's first bytes.
func inspectorOnly(f *listener.ListenerFilter, ports []uint32) *listener.ListenerFilter {
	rules := make([]*listener.ListenerFilterChainMatchPredicate, 0, len(ports))
	for _, p := range ports {
		rules = append(rules, &listener.ListenerFilterChainMatchPredicate{Rule: &listener.ListenerFilterChainMatchPredicate_DestinationPortRange{
			DestinationPortRange: &typev3.Int32Range{Start: int32(p), End: int32(p) + 1},
		}})
	}
	included := rules[0]
	if len(rules) > 1 {
		included = &listener.ListenerFilterChainMatchPredicate{Rule: &listener.ListenerFilterChainMatchPredicate_OrMatch{
			OrMatch: &listener.ListenerFilterChainMatchPredicate_MatchSet{Rules: rules},
		}}
	}
	f.FilterDisabled = &listener.ListenerFilterChainMatchPredicate{Rule: &listener.ListenerFilterChainMatchPredicate_NotMatch{
		NotMatch: included,
	}}
	return f
}
