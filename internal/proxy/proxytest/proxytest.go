// Package proxytest builds the xDS resources the proxy's tests feed it:
// listeners, route configurations, clusters and endpoint assignments,
// small enough to read in a table test. It is for tests only (the proxy
// binary never links it); builders that can fail take a testing.TB and
// fail the test.
package proxytest

import (
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	httpinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/http_inspector/v3"
	originaldstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	upstreamhttp "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"weft.dev/weft/internal/proxy/xdsclient"
	"weft.dev/weft/internal/xds/contract"
)

// Envoy's names the builders use.
const (
	HCMFilterName          = "envoy.filters.network.http_connection_manager"
	RouterFilterName       = "envoy.filters.http.router"
	HTTPProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
)

// MustAny wraps m in an Any or fails the test.
func MustAny(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// SockAddr is a TCP socket address.
func SockAddr(ip string, port uint32) *core.Address {
	return &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
		Address: ip, PortSpecifier: &core.SocketAddress_PortValue{PortValue: port}}}}
}

// HTTPListener builds a listener on 127.0.0.1:0 whose HTTP connection
// manager has only the router and uses RDS rds, or the inline route
// configuration when inline is non-nil.
func HTTPListener(t testing.TB, name string, dir core.TrafficDirection, rds string, inline *route.RouteConfiguration) *listener.Listener {
	return HTTPListenerWithFilters(t, name, dir, rds, inline)
}

// HTTPListenerWithFilters is HTTPListener with filters placed before the
// router, in order.
func HTTPListenerWithFilters(t testing.TB, name string, dir core.TrafficDirection, rds string, inline *route.RouteConfiguration, filters ...*hcm.HttpFilter) *listener.Listener {
	m := &hcm.HttpConnectionManager{
		StatPrefix: name,
		HttpFilters: append(slices.Clone(filters), &hcm.HttpFilter{Name: RouterFilterName,
			ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: MustAny(t, &routerv3.Router{})}}),
	}
	if inline != nil {
		m.RouteSpecifier = &hcm.HttpConnectionManager_RouteConfig{RouteConfig: inline}
	} else {
		m.RouteSpecifier = &hcm.HttpConnectionManager_Rds{Rds: &hcm.Rds{RouteConfigName: rds}}
	}
	return &listener.Listener{
		Name:             name,
		Address:          SockAddr("127.0.0.1", 0),
		TrafficDirection: dir,
		FilterChains: []*listener.FilterChain{{Filters: []*listener.Filter{{
			Name: HCMFilterName, ConfigType: &listener.Filter_TypedConfig{TypedConfig: MustAny(t, m)}}}}},
	}
}

// HTTPFilter is an http_filters entry with a typed config.
func HTTPFilter(t testing.TB, name string, config proto.Message) *hcm.HttpFilter {
	return &hcm.HttpFilter{Name: name, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: MustAny(t, config)}}
}

// RouteConfig is a route configuration of virtual hosts.
func RouteConfig(name string, vhs ...*route.VirtualHost) *route.RouteConfiguration {
	return &route.RouteConfiguration{Name: name, VirtualHosts: vhs}
}

// VHost is a virtual host serving domains with routes.
func VHost(name string, domains []string, routes ...*route.Route) *route.VirtualHost {
	return &route.VirtualHost{Name: name, Domains: domains, Routes: routes}
}

// PrefixMatch matches paths starting with p.
func PrefixMatch(p string) *route.RouteMatch {
	return &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: p}}
}

// ToCluster is a route sending what m matches to cluster.
func ToCluster(name string, m *route.RouteMatch, cluster string) *route.Route {
	return &route.Route{Name: name, Match: m, Action: &route.Route_Route{Route: &route.RouteAction{
		ClusterSpecifier: &route.RouteAction_Cluster{Cluster: cluster}}}}
}

// ToWeighted is a route splitting what m matches over clusters by weight,
// the clusters in name order.
func ToWeighted(name string, m *route.RouteMatch, weights map[string]uint32) *route.Route {
	wc := &route.WeightedCluster{}
	for _, c := range slices.Sorted(maps.Keys(weights)) {
		wc.Clusters = append(wc.Clusters, &route.WeightedCluster_ClusterWeight{Name: c, Weight: wrapperspb.UInt32(weights[c])})
	}
	return &route.Route{Name: name, Match: m, Action: &route.Route_Route{Route: &route.RouteAction{
		ClusterSpecifier: &route.RouteAction_WeightedClusters{WeightedClusters: wc}}}}
}

// EDSCluster is a ROUND_ROBIN EDS cluster (its service name is its own)
// speaking h2c when h2, HTTP/1.1 otherwise. A non-empty svcHost sets the
// cluster's Istio service metadata (host svcHost, name reviews, namespace
// default).
func EDSCluster(t testing.TB, name string, h2 bool, svcHost string) *cluster.Cluster {
	c := &cluster.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_EDS},
		EdsClusterConfig:     &cluster.Cluster_EdsClusterConfig{ServiceName: name},
		ConnectTimeout:       durationpb.New(2 * time.Second),
		LbPolicy:             cluster.Cluster_ROUND_ROBIN,
	}
	if h2 {
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{HTTPProtocolOptionsKey: MustAny(t, &upstreamhttp.HttpProtocolOptions{
			UpstreamProtocolOptions: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &core.Http2ProtocolOptions{}}}}})}
	}
	if svcHost != "" {
		md, err := structpb.NewStruct(map[string]any{"services": []any{map[string]any{"host": svcHost, "name": "reviews", "namespace": "default"}}})
		if err != nil {
			t.Fatal(err)
		}
		c.Metadata = &core.Metadata{FilterMetadata: map[string]*structpb.Struct{contract.FilterMetadataIstio: md}}
	}
	return c
}

// DownstreamProtocolCluster is an EDS cluster with
// use_downstream_protocol_config, as Istio's useClientProtocol generates it.
func DownstreamProtocolCluster(t testing.TB, name string) *cluster.Cluster {
	c := EDSCluster(t, name, false, "")
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{HTTPProtocolOptionsKey: MustAny(t, &upstreamhttp.HttpProtocolOptions{
		UpstreamProtocolOptions: &upstreamhttp.HttpProtocolOptions_UseDownstreamProtocolConfig{
			UseDownstreamProtocolConfig: &upstreamhttp.HttpProtocolOptions_UseDownstreamHttpConfig{
				HttpProtocolOptions:  &core.Http1ProtocolOptions{},
				Http2ProtocolOptions: &core.Http2ProtocolOptions{},
			},
		},
	})}
	return c
}

// StaticCluster is a STATIC HTTP/1.1 cluster of one endpoint, addr.
func StaticCluster(t testing.TB, name string, addr string) *cluster.Cluster {
	c := EDSCluster(t, name, false, "")
	c.ClusterDiscoveryType = &cluster.Cluster_Type{Type: cluster.Cluster_STATIC}
	c.EdsClusterConfig = nil
	c.LoadAssignment = CLA(name, Endpoint{Addr: addr})
	return c
}

// Endpoint describes one endpoint of CLA.
type Endpoint struct {
	Addr     string // host:port
	Weight   uint32 // 0: unset
	Health   core.HealthStatus
	Workload string // istio workload metadata: "workload;ns;app;version;cluster"
	Priority uint32
	// TLSMode, when set, is the endpoint's
	// filter_metadata["envoy.transport_socket_match"].tlsMode ("istio":
	// it has a sidecar, automatic mutual TLS).
	TLSMode string
}

// CLA is the endpoint assignment of cluster name: one locality per
// priority, in the order the priorities first appear.
func CLA(name string, eps ...Endpoint) *endpointv3.ClusterLoadAssignment {
	out := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	byPrio := map[uint32]*endpointv3.LocalityLbEndpoints{}
	for _, e := range eps {
		host, port, err := net.SplitHostPort(e.Addr)
		if err != nil {
			panic(err)
		}
		p, _ := strconv.Atoi(port)
		lbe := &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: SockAddr(host, uint32(p))}},
			HealthStatus:   e.Health,
		}
		if e.Weight > 0 {
			lbe.LoadBalancingWeight = wrapperspb.UInt32(e.Weight)
		}
		if e.Workload != "" || e.TLSMode != "" {
			lbe.Metadata = &core.Metadata{FilterMetadata: map[string]*structpb.Struct{}}
		}
		if e.Workload != "" {
			lbe.Metadata.FilterMetadata[contract.FilterMetadataIstio] = &structpb.Struct{
				Fields: map[string]*structpb.Value{contract.MetaEndpointWorkload: structpb.NewStringValue(e.Workload)}}
		}
		if e.TLSMode != "" {
			lbe.Metadata.FilterMetadata[contract.FilterMetadataTransportSocketMatch] = &structpb.Struct{
				Fields: map[string]*structpb.Value{contract.MetaTLSMode: structpb.NewStringValue(e.TLSMode)}}
		}
		loc := byPrio[e.Priority]
		if loc == nil {
			loc = &endpointv3.LocalityLbEndpoints{Priority: e.Priority}
			byPrio[e.Priority] = loc
			out.Endpoints = append(out.Endpoints, loc)
		}
		loc.LbEndpoints = append(loc.LbEndpoints, lbe)
	}
	return out
}

// Resources assembles a resource set from loose listeners, route
// configurations, clusters and endpoint assignments (any other item
// panics), keyed by name as the xDS client keys them.
func Resources(items ...proto.Message) *xdsclient.Resources {
	r := &xdsclient.Resources{
		Listeners: map[string]*listener.Listener{},
		Routes:    map[string]*route.RouteConfiguration{},
		Clusters:  map[string]*cluster.Cluster{},
		Endpoints: map[string]*endpointv3.ClusterLoadAssignment{},
		Versions:  map[string]string{"test": "1"},
	}
	for _, it := range items {
		switch v := it.(type) {
		case *listener.Listener:
			r.Listeners[v.Name] = v
		case *route.RouteConfiguration:
			r.Routes[v.Name] = v
		case *cluster.Cluster:
			r.Clusters[v.Name] = v
		case *endpointv3.ClusterLoadAssignment:
			r.Endpoints[v.ClusterName] = v
		default:
			panic(fmt.Sprintf("unexpected %T", it))
		}
	}
	return r
}

// Thresholds is a cluster with only circuit breaker thresholds for the
// default priority.
func Thresholds(conns, pending, requests, retries uint32) *cluster.Cluster {
	return &cluster.Cluster{CircuitBreakers: &cluster.CircuitBreakers{Thresholds: []*cluster.CircuitBreakers_Thresholds{{
		MaxConnections: wrapperspb.UInt32(conns), MaxPendingRequests: wrapperspb.UInt32(pending),
		MaxRequests: wrapperspb.UInt32(requests), MaxRetries: wrapperspb.UInt32(retries),
	}}}}
}

// IstioOutlierDetection is outlier detection as Istio writes it for a
// DestinationRule with consecutive5xxErrors and maxEjectionPercent (base
// ejection time 1s).
func IstioOutlierDetection(consec5xx uint32, maxPct uint32) *cluster.OutlierDetection {
	return &cluster.OutlierDetection{
		Consecutive_5Xx: wrapperspb.UInt32(consec5xx), EnforcingConsecutive_5Xx: wrapperspb.UInt32(100),
		BaseEjectionTime: durationpb.New(time.Second), MaxEjectionPercent: wrapperspb.UInt32(maxPct),
		EnforcingSuccessRate: wrapperspb.UInt32(0),
	}
}

// OriginalDstCluster is an ORIGINAL_DST cluster (Istio's
// PassthroughCluster shape): lb_policy CLUSTER_PROVIDED, no endpoints;
// source, when not "", is its upstream_bind_config.source_address.
func OriginalDstCluster(name, source string) *cluster.Cluster {
	c := &cluster.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_ORIGINAL_DST},
		LbPolicy:             cluster.Cluster_CLUSTER_PROVIDED,
		ConnectTimeout:       durationpb.New(10 * time.Second),
	}
	if source != "" {
		c.UpstreamBindConfig = &core.BindConfig{SourceAddress: &core.SocketAddress{Address: source}}
	}
	return c
}

// BlackHoleCluster is Istio's BlackHoleCluster: STATIC with no endpoints.
func BlackHoleCluster(name string) *cluster.Cluster {
	return &cluster.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(10 * time.Second),
	}
}

// Listener filter names of a captured sidecar's virtual listeners.
const (
	OriginalDstFilterName   = "envoy.filters.listener.original_dst"
	HTTPInspectorFilterName = "envoy.filters.listener.http_inspector"
	TCPProxyFilterName      = "envoy.filters.network.tcp_proxy"
)

// TCPProxyChain is a filter chain with match m (nil: none) whose one
// filter is a tcp_proxy to cluster.
func TCPProxyChain(t testing.TB, m *listener.FilterChainMatch, cluster string) *listener.FilterChain {
	tp := &tcpproxyv3.TcpProxy{StatPrefix: cluster, ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: cluster}}
	return &listener.FilterChain{FilterChainMatch: m, Filters: []*listener.Filter{{
		Name: TCPProxyFilterName, ConfigType: &listener.Filter_TypedConfig{TypedConfig: MustAny(t, tp)}}}}
}

// HTTPChain is a filter chain with match m (nil: none) whose HTTP
// connection manager has only the router and routes with rc inline.
func HTTPChain(t testing.TB, m *listener.FilterChainMatch, rc *route.RouteConfiguration) *listener.FilterChain {
	fc := HTTPListener(t, "chain", core.TrafficDirection_OUTBOUND, "", rc).GetFilterChains()[0]
	fc.FilterChainMatch = m
	return fc
}

// VirtualListener is a captured sidecar's virtual listener on
// 127.0.0.1:0: use_original_dst, the original_dst and http_inspector
// listener filters, chains and the default chain def (nil: none).
func VirtualListener(t testing.TB, name string, dir core.TrafficDirection, def *listener.FilterChain, chains ...*listener.FilterChain) *listener.Listener {
	return &listener.Listener{
		Name:             name,
		Address:          SockAddr("127.0.0.1", 0),
		TrafficDirection: dir,
		UseOriginalDst:   wrapperspb.Bool(true),
		ListenerFilters: []*listener.ListenerFilter{
			{Name: OriginalDstFilterName, ConfigType: &listener.ListenerFilter_TypedConfig{TypedConfig: MustAny(t, &originaldstv3.OriginalDst{})}},
			{Name: HTTPInspectorFilterName, ConfigType: &listener.ListenerFilter_TypedConfig{TypedConfig: MustAny(t, &httpinspectorv3.HttpInspector{})}},
		},
		FilterChains:       chains,
		DefaultFilterChain: def,
	}
}

// Match is a filter_chain_match: destination port (0: any), prefix
// ranges as CIDRs ("10.0.0.0/8", "10.0.0.1" for /32), application
// protocols.
func Match(port uint32, prefixes []string, appProtos ...string) *listener.FilterChainMatch {
	m := &listener.FilterChainMatch{ApplicationProtocols: appProtos}
	if port != 0 {
		m.DestinationPort = wrapperspb.UInt32(port)
	}
	for _, p := range prefixes {
		addr, bits, ok := strings.Cut(p, "/")
		cr := &core.CidrRange{AddressPrefix: addr}
		if ok {
			n, _ := strconv.Atoi(bits)
			cr.PrefixLen = wrapperspb.UInt32(uint32(n))
		}
		m.PrefixRanges = append(m.PrefixRanges, cr)
	}
	return m
}
