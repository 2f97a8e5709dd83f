package generate

import (
	"fmt"
	"net"
	"strconv"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	router "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	meshconfig "istio.io/api/mesh/v1alpha1"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry"
	"weft.dev/weft/internal/xds/contract"
)

// outboundListener is the proxy's outbound HTTP listener at
// id.OutboundAddress, routing by Host/:authority through RDS http_proxy; nil
// when the proxy has no (or an unparsable) outbound address.
func outboundListener(s *mesh.Snapshot, id contract.Identity) *listener.Listener {
	if id.OutboundAddress == "" {
		return nil
	}
	ip, port, ok := splitHostPort(id.OutboundAddress)
	if !ok {
		return nil
	}
	name := contract.ListenerName(ip, port)
	m := &hcm.HttpConnectionManager{
		StatPrefix: "outbound_" + name,
		CodecType:  hcm.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcm.HttpConnectionManager_Rds{Rds: &hcm.Rds{
			ConfigSource:    adsConfigSource(),
			RouteConfigName: contract.RouteHTTPProxy,
		}},
		HttpFilters: append(faultFilters(), routerFilters()...), // resilience.go: fault before the router
	}
	withAccessLogs(s, m, id.Namespace, id.Labels, mesh.ModeClient)
	return httpListener(s, id, name, ip, port, core.TrafficDirection_OUTBOUND, m)
}

// inbound returns a listener per distinct endpoint address:port this proxy
// fronts (endpoints registered on any of id.IPs) and a STATIC cluster per
// workload port forwarding to the local application. The cluster's
// metadata lists every service served on that port (one process may carry
// several), so the proxy can label destination-side metrics. A listener's
// mutual TLS and HTTP security filters follow the policies of the workload
// its first endpoint belongs to (security.go).
func inbound(s *mesh.Snapshot, id contract.Identity) ([]types.Resource, []types.Resource) {
	var ls, cs []types.Resource
	seenL := map[string]bool{}
	for _, ep := range s.Registry.EndpointsAt(id.IPs) {
		if !endpointProtocol(s, ep).IsHTTP() {
			continue // only HTTP is in the wire contract of explicit listeners
		}
		name := contract.ListenerName(ep.Address, ep.Port)
		if !seenL[name] {
			seenL[name] = true
			ls = append(ls, inboundListener(s, id, workloadOf(ep, id), name, ep.Address, ep.Port))
		}
	}
	for _, wp := range workloadPorts(s, id, false) {
		cs = append(cs, wp.cluster(s, id))
	}
	return ls, cs
}

// workloadPort is one port of the workloads this proxy fronts.
type workloadPort struct {
	port  uint32
	proto registry.Protocol
	// w is the workload of the first endpoint on the port.
	w workload
	// services are those served on the port, in endpoint order.
	services []*registry.Service
}

// workloadPorts are the ports of the endpoints registered on id.IPs, in
// the order EndpointsAt returns them; HTTP ports only unless tcp is set.
func workloadPorts(s *mesh.Snapshot, id contract.Identity, tcp bool) []*workloadPort {
	var out []*workloadPort
	byPort := map[uint32]*workloadPort{}
	seen := map[uint32]map[string]bool{}
	for _, ep := range s.Registry.EndpointsAt(id.IPs) {
		proto := endpointProtocol(s, ep)
		if !proto.IsHTTP() && !tcp {
			continue
		}
		wp, ok := byPort[ep.Port]
		if !ok {
			wp = &workloadPort{port: ep.Port, proto: proto, w: workloadOf(ep, id)}
			byPort[ep.Port] = wp
			seen[ep.Port] = map[string]bool{}
			out = append(out, wp)
		}
		if svc := s.Registry.Service(ep.ServiceHostname); svc != nil && !seen[ep.Port][svc.Hostname] {
			seen[ep.Port][svc.Hostname] = true
			wp.services = append(wp.services, svc)
		}
	}
	return out
}

// cluster is the STATIC cluster forwarding the port to the local
// application. Its metadata lists every service served on the port (one
// process may carry several), so the proxy can label destination-side
// metrics.
func (wp *workloadPort) cluster(s *mesh.Snapshot, id contract.Identity) *cluster.Cluster {
	return withInboundConnectionPool(s, s.Subsets.ViewFor(id.Namespace, nil), wp.port, wp.proto, wp.services,
		inboundCluster(wp.port, contract.AppAddress(id.AppPorts, wp.port), wp.proto, wp.services, s.DomainSuffix))
}

// inboundListener serves one workload port: an HTTP connection manager
// with the workload's JWT and RBAC filters (security.go) before the router,
// forwarding the client certificate's identity to the application
// (x-forwarded-client-cert, as Istio's sidecars do), behind the transport
// the port's PeerAuthentication mode asks for (inboundChains).
func inboundListener(s *mesh.Snapshot, id contract.Identity, w workload, name, ip string, port uint32) *listener.Listener {
	l := httpListener(s, id, name, ip, port, core.TrafficDirection_INBOUND, inboundHCM(s, w, name, port))
	mode := s.PeerAuthn.Mode(w.namespace, w.labels, port)
	l.ListenerFilters, l.FilterChains = inboundChains(mode, id.MTLS, l.FilterChains[0])
	return l
}

// inboundHCM is the HTTP connection manager of workload port port, stat
// prefix "inbound_"+name: the workload's JWT and RBAC filters, then its
// local rate limit (ratelimit.go), before the router, one route to the
// inbound cluster (with a RateLimit's rules, more routes in front of it),
// the client certificate's identity forwarded to the application.
func inboundHCM(s *mesh.Snapshot, w workload, name string, port uint32) *hcm.HttpConnectionManager {
	cluster := contract.ClusterName(contract.Inbound, port, "", "")
	return withRateLimit(withAccessLogs(s, &hcm.HttpConnectionManager{
		StatPrefix: "inbound_" + name,
		CodecType:  hcm.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcm.HttpConnectionManager_RouteConfig{RouteConfig: &route.RouteConfiguration{
			Name: contract.InboundRouteName(port),
			VirtualHosts: []*route.VirtualHost{{
				Name:    fmt.Sprintf("inbound|http|%d", port),
				Domains: []string{"*"},
				Routes: []*route.Route{{
					Name:   "default",
					Match:  &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
					Action: &route.Route_Route{Route: &route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: cluster}}},
				}},
			}},
		}},
		HttpFilters:              append(inboundSecurityFilters(s, w), routerFilters()...),
		ForwardClientCertDetails: hcm.HttpConnectionManager_APPEND_FORWARD,
		SetCurrentClientCertDetails: &hcm.HttpConnectionManager_SetCurrentClientCertDetails{
			Subject: wrapperspb.Bool(true), Dns: true, Uri: true,
		},
	}, w.namespace, w.labels, mesh.ModeServer), s.RateLimits.For(w.namespace, w.labels), port)
}

// inboundChains returns the listener filters and filter chains of an
// inbound listener whose plaintext chain is plain, for a port in mode:
//
//   - STRICT: one chain, mutual TLS required (even when this proxy has no
//     certificate: then no connection completes, which is what STRICT
//     means);
//   - PERMISSIVE: the TLS inspector, a mutual TLS chain (transport
//     protocol "tls") and the plaintext chain ("raw_buffer"), both with
//     the same HTTP connection manager; plaintext only when the proxy has
//     no certificate (mtls false);
//   - DISABLE: plaintext only.
func inboundChains(mode config.MTLSMode, mtls bool, plain *listener.FilterChain) ([]*listener.ListenerFilter, []*listener.FilterChain) {
	secure := func() *listener.FilterChain {
		fc := proto.Clone(plain).(*listener.FilterChain)
		fc.TransportSocket = downstreamTLSSocket(istioMutualDownstream())
		return fc
	}
	switch {
	case mode == config.MTLSStrict:
		return nil, []*listener.FilterChain{secure()}
	case mode == config.MTLSPermissive && mtls:
		tlsChain := secure()
		tlsChain.FilterChainMatch = &listener.FilterChainMatch{TransportProtocol: "tls"}
		plain.FilterChainMatch = &listener.FilterChainMatch{TransportProtocol: "raw_buffer"}
		return []*listener.ListenerFilter{tlsInspector()}, []*listener.FilterChain{tlsChain, plain}
	}
	return nil, []*listener.FilterChain{plain}
}

// workload is who an inbound listener serves, for policy selection.
type workload struct {
	namespace string
	labels    map[string]string
}

// workloadOf is the workload of an endpoint this proxy fronts: its
// registry namespace and labels, else the proxy's own.
func workloadOf(ep *registry.Endpoint, id contract.Identity) workload {
	w := workload{namespace: ep.Namespace, labels: ep.Labels}
	if w.namespace == "" {
		w.namespace = id.Namespace
	}
	if w.labels == nil {
		w.labels = id.Labels
	}
	return w
}

// httpListener wraps m in a listener (see hcmFilter).
func httpListener(s *mesh.Snapshot, id contract.Identity, name, ip string, port uint32, dir core.TrafficDirection, m *hcm.HttpConnectionManager) *listener.Listener {
	return &listener.Listener{
		Name:             name,
		Address:          socketAddress(ip, port),
		TrafficDirection: dir,
		FilterChains:     []*listener.FilterChain{{Filters: []*listener.Filter{hcmFilter(s, id, m)}}},
	}
}

// hcmFilter packs m, a connection manager of the proxy id, as a network
// filter, with the path handling every connection manager gets
// (withPathNormalization) and, as Istio's buildHTTPConnectionManager
// gives every sidecar and gateway connection manager, WebSocket upgrades
// allowed and the stream idle timeout off (a quiet WebSocket stays
// open); HTTP/1.0 is accepted when the mesh or the proxy says so
// (mesh.Snapshot.HTTP10, contract.MetaHTTP10), as Istio's PILOT_HTTP10
// and ISTIO_META_HTTP10: otherwise it is answered 426, Envoy's default.
func hcmFilter(s *mesh.Snapshot, id contract.Identity, m *hcm.HttpConnectionManager) *listener.Filter {
	withPathNormalization(s, m)
	m.UpgradeConfigs = []*hcm.HttpConnectionManager_UpgradeConfig{{UpgradeType: websocketUpgrade}}
	m.StreamIdleTimeout = durationpb.New(0)
	if id.HTTP10 || s.HTTP10() {
		m.HttpProtocolOptions = &core.Http1ProtocolOptions{AcceptHttp_10: true}
	}
	return &listener.Filter{
		Name:       wellknown.HTTPConnectionManager,
		ConfigType: &listener.Filter_TypedConfig{TypedConfig: mustAny(m)},
	}
}

// withPathNormalization sets m's path handling from the mesh config's
// pathNormalization, as Istio's buildHTTPConnectionManager: by default
// (BASE) paths are normalized (RFC 3986: dot segments, backslashes,
// decoded unreserved characters) before routing and authorization,
// escaped slashes left alone; MERGE_SLASHES also merges "//";
// DECODE_AND_MERGE_SLASHES also decodes %2F and %5C first; NONE leaves
// paths as received. AuthorizationPolicy paths rely on it:
// "/public/../admin" must be "/admin" to a policy.
func withPathNormalization(s *mesh.Snapshot, m *hcm.HttpConnectionManager) {
	m.PathWithEscapedSlashesAction = hcm.HttpConnectionManager_KEEP_UNCHANGED
	m.NormalizePath = wrapperspb.Bool(true)
	var mc *meshconfig.MeshConfig
	if s != nil && s.Telemetry != nil {
		mc = s.Telemetry.MeshConfig()
	}
	switch mc.GetPathNormalization().GetNormalization() {
	case meshconfig.MeshConfig_ProxyPathNormalization_NONE:
		m.NormalizePath = wrapperspb.Bool(false)
	case meshconfig.MeshConfig_ProxyPathNormalization_MERGE_SLASHES:
		m.MergeSlashes = true
	case meshconfig.MeshConfig_ProxyPathNormalization_DECODE_AND_MERGE_SLASHES:
		m.MergeSlashes = true
		m.PathWithEscapedSlashesAction = hcm.HttpConnectionManager_UNESCAPE_AND_FORWARD
	}
}

// websocketUpgrade is the upgrade type of WebSocket (RFC 6455).
const websocketUpgrade = "websocket"

func routerFilters() []*hcm.HttpFilter {
	return []*hcm.HttpFilter{{
		Name:       wellknown.Router,
		ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(&router.Router{})},
	}}
}

// adsConfigSource says "this resource arrives over the same ADS stream".
func adsConfigSource() *core.ConfigSource {
	return &core.ConfigSource{
		ResourceApiVersion:    core.ApiVersion_V3,
		ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}},
	}
}

func socketAddress(ip string, port uint32) *core.Address {
	return &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
		Protocol:      core.SocketAddress_TCP,
		Address:       ip,
		PortSpecifier: &core.SocketAddress_PortValue{PortValue: port},
	}}}
}

func splitHostPort(hp string) (string, uint32, bool) {
	h, p, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, false
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return "", 0, false
	}
	return h, uint32(n), true
}

// mustAny packs a message into Any. Marshalling a message we just built
// cannot fail. The encoding is deterministic: resources are versioned by
// a hash of their bytes (a delta xDS proxy is sent a resource again only
// when its hash changes), and maps (RBAC policies, JWT providers) are
// otherwise encoded in a different order each time.
func mustAny(m proto.Message) *anypb.Any {
	a := &anypb.Any{}
	err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true})
	if err != nil {
		panic(fmt.Sprintf("generate: pack %T: %v", m, err))
	}
	return a
}
