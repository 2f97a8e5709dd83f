package generate

import (
	"net/netip"
	"strings"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	upstreamhttp "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry"
	"weft.dev/weft/internal/xds/contract"
)

const (
	connectTimeout = 10 * time.Second
	// httpProtocolOptionsKey is where Envoy looks for upstream HTTP options.
	httpProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
)

// outboundClusters returns an EDS cluster per service port the proxy id
// sees (mesh.ScopeIndex) and per DestinationRule subset of the service.
func outboundClusters(s *mesh.Snapshot, id contract.Identity) []types.Resource {
	var out []types.Resource
	eachOutboundCluster(s, id, func(_ string, k clusterKey, build func(*mesh.Snapshot) *cluster.Cluster) {
		out = append(out, sharedCluster(s, k, func() *cluster.Cluster { return build(s) }))
	})
	return out
}

// outboundClustersLazy is outboundClusters as Lazy resources, whose Key
// is what sharedCluster keys and checks the carried cluster by.
func outboundClustersLazy(s *mesh.Snapshot, id contract.Identity) []Lazy {
	var out []Lazy
	eachOutboundCluster(s, id, func(name string, k clusterKey, build func(*mesh.Snapshot) *cluster.Cluster) {
		out = append(out, Lazy{Name: name, Key: lazyClusterKey{k, s.EndpointsDigest(k.host, k.port)},
			Build: func(s *mesh.Snapshot) types.Resource { return build(s) }})
	})
	return out
}

// eachOutboundCluster calls yield with the name, the sharing key and the
// builder of every outbound cluster of id. A builder reads the snapshot
// it is given, which may be a later one than s that only endpoints set
// apart (Lazy.Build); what it keeps of s is the service and the subset.
func eachOutboundCluster(s *mesh.Snapshot, id contract.Identity, yield func(name string, k clusterKey, build func(*mesh.Snapshot) *cluster.Cluster)) {
	vis := scopeOf(s, id)
	build := func(s *mesh.Snapshot, svc *registry.Service, p registry.Port, subset string) *cluster.Cluster {
		var c *cluster.Cluster
		if svc.Resolution.ResolvedByDNS() {
			c = dnsCluster(s, id, svc, p, subset)
		} else {
			c = edsCluster(svc, p, subset, s.DomainSuffix)
		}
		c = withTrafficPolicy(s, drView(s, id), svc, p, subset, c)
		c = withLoadBalancer(s, drView(s, id), svc, p, subset, c)
		return withUpstreamTLS(s, id, svc, p, subset, c) // last: ALPN follows the protocol options
	}
	for _, svc := range s.Registry.Services() {
		for _, p := range svc.Ports {
			if !vis.Port(svc, p.Number) {
				continue
			}
			yield(contract.ClusterName(contract.Outbound, p.Number, "", svc.Hostname), clusterKeyOf(s, id, svc, p, ""),
				func(s *mesh.Snapshot) *cluster.Cluster { return build(s, svc, p, "") })
			for _, sub := range s.Subsets.SubsetsOf(drView(s, id), svc.Hostname) {
				yield(contract.ClusterName(contract.Outbound, p.Number, sub.GetName(), svc.Hostname), clusterKeyOf(s, id, svc, p, sub.GetName()),
					func(s *mesh.Snapshot) *cluster.Cluster { return build(s, svc, p, sub.GetName()) })
			}
		}
	}
}

func edsCluster(svc *registry.Service, p registry.Port, subset, suffix string) *cluster.Cluster {
	name := contract.ClusterName(contract.Outbound, p.Number, subset, svc.Hostname)
	c := &cluster.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_EDS},
		EdsClusterConfig:     &cluster.Cluster_EdsClusterConfig{EdsConfig: adsConfigSource(), ServiceName: name},
		// Istio's default when a DestinationRule sets no loadBalancer (or
		// simple: UNSPECIFIED); withLoadBalancer overrides it.
		LbPolicy:       cluster.Cluster_LEAST_REQUEST,
		ConnectTimeout: durationpb.New(connectTimeout),
		Metadata:       clusterMetadata([]*registry.Service{svc}, subset, suffix),
	}
	setProtocolOptions(c, p.Protocol)
	return c
}

// defaultDNSRefreshRate is Istio's default mesh config dnsRefreshRate.
const defaultDNSRefreshRate = 60 * time.Second

// dnsCluster is the cluster of a service whose endpoints the proxy
// resolves, as Istio's cluster builder makes it: resolution DNS is a
// STRICT_DNS cluster (every address of every endpoint name is a host),
// DNS_ROUND_ROBIN a LOGICAL_DNS one (one host: the first address of the
// latest answer), the endpoints inline in load_assignment (the subset's
// only), re-resolved every dns_refresh_rate (the mesh config's
// dnsRefreshRate, Istio's 60 s by default) or the records' TTL
// (respect_dns_ttl), IPv4 or IPv6 as the proxy's own addresses are
// (Istio's SelectDNSLookupFamily). Where Istio leaves out a cluster with
// no endpoints (a subset selecting none), Weft sends a STRICT_DNS
// cluster with none, so routes to it answer 503 as to an empty EDS
// cluster (Envoy takes no LOGICAL_DNS cluster without exactly one).
func dnsCluster(s *mesh.Snapshot, id contract.Identity, svc *registry.Service, p registry.Port, subset string) *cluster.Cluster {
	name := contract.ClusterName(contract.Outbound, p.Number, subset, svc.Hostname)
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
	typ := cluster.Cluster_STRICT_DNS
	if svc.Resolution == registry.DNSRoundRobin && len(eps) > 0 {
		typ = cluster.Cluster_LOGICAL_DNS
		eps = eps[:1] // validation allows one endpoint; a workloadSelector may pick more
	}
	refresh := s.Telemetry.MeshConfig().GetDnsRefreshRate()
	if refresh == nil || refresh.AsDuration() <= 0 {
		refresh = durationpb.New(defaultDNSRefreshRate)
	}
	c := &cluster.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &cluster.Cluster_Type{Type: typ},
		LbPolicy:             cluster.Cluster_LEAST_REQUEST, // as edsCluster; withLoadBalancer overrides it
		ConnectTimeout:       durationpb.New(connectTimeout),
		Metadata:             clusterMetadata([]*registry.Service{svc}, subset, s.DomainSuffix),
		DnsLookupFamily:      dnsLookupFamily(id.IPs),
		DnsRefreshRate:       refresh,
		RespectDnsTtl:        true,
		LoadAssignment: withLocalityLB(s, id, svc.Hostname, p.Number, subset, eps,
			loadAssignment(name, eps, mtlsCapable(s, drView(s, id), svc, p, subset))),
	}
	setProtocolOptions(c, p.Protocol)
	return c
}

// dnsLookupFamily is Istio's SelectDNSLookupFamily without dual stack:
// IPv6 only for a proxy whose addresses are all IPv6, else IPv4 only.
func dnsLookupFamily(ips []string) cluster.Cluster_DnsLookupFamily {
	if len(ips) == 0 {
		return cluster.Cluster_V4_ONLY
	}
	for _, ip := range ips {
		if a, err := netip.ParseAddr(ip); err != nil || a.Unmap().Is4() {
			return cluster.Cluster_V4_ONLY
		}
	}
	return cluster.Cluster_V6_ONLY
}

// inboundCluster forwards a workload port to the local application.
func inboundCluster(port uint32, appAddr string, proto registry.Protocol, svcs []*registry.Service, suffix string) *cluster.Cluster {
	name := contract.ClusterName(contract.Inbound, port, "", "")
	ip, appPort, ok := splitHostPort(appAddr)
	if !ok { // ParseAppPorts accepted it but it is not host:port: use the default
		ip, appPort = "127.0.0.1", port
	}
	c := &cluster.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_STATIC},
		LbPolicy:             cluster.Cluster_ROUND_ROBIN,
		ConnectTimeout:       durationpb.New(connectTimeout),
		Metadata:             clusterMetadata(svcs, "", suffix),
		LoadAssignment: &endpoint.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*endpoint.LocalityLbEndpoints{{
				LbEndpoints: []*endpoint.LbEndpoint{{
					HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{Address: socketAddress(ip, appPort)}},
				}},
			}},
		},
	}
	setProtocolOptions(c, proto)
	return c
}

// setProtocolOptions pins the upstream HTTP version: h2c for HTTP2/GRPC,
// HTTP/1.1 for HTTP; a sniffed port's upstream speaks what the
// downstream spoke (Istio's use_downstream_protocol for auto-detected
// ports; a byte stream ignores it); nothing for other protocols.
func setProtocolOptions(c *cluster.Cluster, p registry.Protocol) {
	var opts *upstreamhttp.HttpProtocolOptions
	switch {
	case p.IsHTTP2():
		opts = &upstreamhttp.HttpProtocolOptions{UpstreamProtocolOptions: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &core.Http2ProtocolOptions{}},
			},
		}}
	case p.IsHTTP():
		opts = &upstreamhttp.HttpProtocolOptions{UpstreamProtocolOptions: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &upstreamhttp.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &core.Http1ProtocolOptions{}},
			},
		}}
	case p.Sniffed():
		opts = &upstreamhttp.HttpProtocolOptions{UpstreamProtocolOptions: &upstreamhttp.HttpProtocolOptions_UseDownstreamProtocolConfig{
			UseDownstreamProtocolConfig: &upstreamhttp.HttpProtocolOptions_UseDownstreamHttpConfig{
				HttpProtocolOptions:  &core.Http1ProtocolOptions{},
				Http2ProtocolOptions: &core.Http2ProtocolOptions{},
			},
		}}
	default:
		return
	}
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptionsKey: mustAny(opts)}
}

// clusterMetadata is filter_metadata.istio {services: [{host, name,
// namespace}], subset}, where Istio puts it.
func clusterMetadata(svcs []*registry.Service, subset, suffix string) *core.Metadata {
	list := make([]any, 0, len(svcs))
	for _, svc := range svcs {
		list = append(list, map[string]any{
			"host":      svc.Hostname,
			"name":      serviceName(svc, suffix),
			"namespace": svc.Namespace,
		})
	}
	fields := map[string]any{contract.MetaClusterServices: list}
	if subset != "" {
		fields[contract.MetaClusterSubset] = subset
	}
	st, err := structpb.NewStruct(fields)
	if err != nil { // strings, lists and maps only: cannot fail
		panic(err)
	}
	return &core.Metadata{FilterMetadata: map[string]*structpb.Struct{contract.FilterMetadataIstio: st}}
}

// serviceName is the short name of a cluster-local service
// (reviews.default.svc.cluster.local -> reviews); other hosts are their own name.
func serviceName(svc *registry.Service, suffix string) string {
	if suffix == "" {
		suffix = registry.DefaultDomainSuffix
	}
	if rest, ok := strings.CutSuffix(svc.Hostname, "."+svc.Namespace+".svc."+suffix); ok && rest != "" {
		return rest
	}
	return svc.Hostname
}
