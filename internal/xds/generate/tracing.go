package generate

import (
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tracingtype "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	xdstype "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry"
	"weft.dev/weft/internal/xds/contract"
)

// OpenTelemetryTracer is Envoy's name of the OpenTelemetry tracer.
const OpenTelemetryTracer = "envoy.tracers.opentelemetry"

// Istio's proxy labels for a workload's canonical service and revision.
const (
	labelCanonicalName     = "service.istio.io/canonical-name"
	labelCanonicalRevision = "service.istio.io/canonical-revision"
)

// withTracing adds the tracing of the workload id to its resources, as
// Istio's sidecars get it: every HTTP connection manager's tracing (the
// OpenTelemetry tracer exporting to the provider's collector,
// random_sampling, Istio's service tags and the custom tags), the inbound
// routes' decorators ("<service host>:<port>/*", the server spans'
// names), and the collector's cluster when the proxy has none by that
// name. The outbound routes' decorators come with the shared routes
// (decorateRoutes). Nothing changes when the workload does not trace.
func withTracing(s *mesh.Snapshot, id contract.Identity, r *Resources) {
	// Each side (server: inbound listeners, client: outbound) may trace
	// differently, or not at all.
	type side struct {
		t       *mesh.Tracing
		tr      *hcm.HttpConnectionManager_Tracing
		cluster string
	}
	var sides [2]side // [0] client, [1] server
	for i := range sides {
		t := s.TracingFor(id.Namespace, id.Labels, i == 1)
		if t == nil {
			continue
		}
		c := contract.ClusterName(contract.Outbound, t.Provider.Port, "", t.Provider.Service)
		sides[i] = side{t: t, tr: hcmTracing(s, id, t, c), cluster: c}
	}
	if sides[0].t == nil && sides[1].t == nil {
		return
	}
	hosts := inboundHosts(s, id)
	for i, res := range r.Listeners {
		l := res.(*listener.Listener)
		inbound := l.GetTrafficDirection() == core.TrafficDirection_INBOUND
		sd := sides[0]
		if inbound {
			sd = sides[1]
		}
		if sd.t == nil {
			continue
		}
		l = proto.Clone(l).(*listener.Listener)
		changed := false
		chains := slices.Clone(l.GetFilterChains())
		if l.GetDefaultFilterChain() != nil {
			chains = append(chains, l.GetDefaultFilterChain())
		}
		for _, fc := range chains {
			for _, f := range fc.GetFilters() {
				if f.GetName() != wellknown.HTTPConnectionManager {
					continue
				}
				var m hcm.HttpConnectionManager
				if err := f.GetTypedConfig().UnmarshalTo(&m); err != nil {
					continue
				}
				m.Tracing = sd.tr
				if inbound {
					decorateInbound(m.GetRouteConfig(), hosts)
				}
				f.ConfigType = &listener.Filter_TypedConfig{TypedConfig: mustAny(&m)}
				changed = true
			}
		}
		if changed {
			r.Listeners[i] = l
		}
	}
	have := func(name string) bool {
		return hasCluster(r.ClusterParts.Shared, name) || hasLazy(r.ClusterParts.Lazy, name) || hasCluster(r.ClusterParts.Own, name)
	}
	merged := r.Clusters != nil
	added := false
	for _, sd := range sides {
		if sd.t != nil && !have(sd.cluster) {
			// Not a service of the mesh (whose cluster would serve): the
			// proxy's own, in both the list (when there is one) and its
			// parts.
			c := collectorCluster(sd.cluster, sd.t.Provider)
			if merged {
				r.Clusters = append(r.Clusters, c)
			}
			r.ClusterParts.Own = append(slices.Clone(r.ClusterParts.Own), c)
			sortByName(r.ClusterParts.Own) // sorted for have
			added = true
		}
	}
	if added {
		sortByName(r.Clusters)
	}
}

// hasCluster reports whether the sorted list cs has a cluster named name.
func hasCluster(cs []types.Resource, name string) bool {
	_, ok := slices.BinarySearchFunc(cs, name, func(r types.Resource, n string) int {
		return strings.Compare(r.(*cluster.Cluster).GetName(), n)
	})
	return ok
}

// hasLazy reports whether the sorted list ls has a resource called name.
func hasLazy(ls []Lazy, name string) bool {
	_, ok := slices.BinarySearchFunc(ls, name, func(l Lazy, n string) int { return strings.Compare(l.Name, n) })
	return ok
}

// hcmTracing is HttpConnectionManager.tracing for t, as Istio's
// configureTracing builds it for an OpenTelemetry provider.
func hcmTracing(s *mesh.Snapshot, id contract.Identity, t *mesh.Tracing, clusterName string) *hcm.HttpConnectionManager_Tracing {
	oc := &tracev3.OpenTelemetryConfig{ServiceName: serviceCluster(id)}
	if p := t.Provider; p.HTTPPath != "" {
		path := p.HTTPPath
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		oc.HttpService = &core.HttpService{HttpUri: &core.HttpUri{
			Uri:              p.Address() + path,
			HttpUpstreamType: &core.HttpUri_Cluster{Cluster: clusterName},
			Timeout:          durationpb.New(5 * time.Second),
		}}
	} else {
		oc.GrpcService = &core.GrpcService{TargetSpecifier: &core.GrpcService_EnvoyGrpc_{
			EnvoyGrpc: &core.GrpcService_EnvoyGrpc{ClusterName: clusterName, Authority: p.Service},
		}}
	}
	tags := serviceTags(s, id)
	for _, c := range t.CustomTags {
		ct := &tracingtype.CustomTag{Tag: c.Tag}
		switch {
		case c.Environment != "":
			ct.Type = &tracingtype.CustomTag_Environment_{Environment: &tracingtype.CustomTag_Environment{Name: c.Environment, DefaultValue: c.Default}}
		case c.Header != "":
			ct.Type = &tracingtype.CustomTag_RequestHeader{RequestHeader: &tracingtype.CustomTag_Header{Name: c.Header, DefaultValue: c.Default}}
		default:
			v := c.Literal
			if v == "" {
				v = c.Default
			}
			ct.Type = &tracingtype.CustomTag_Literal_{Literal: &tracingtype.CustomTag_Literal{Value: v}}
		}
		tags = append(tags, ct)
	}
	slices.SortStableFunc(tags, func(a, b *tracingtype.CustomTag) int { return strings.Compare(a.GetTag(), b.GetTag()) })
	return &hcm.HttpConnectionManager_Tracing{
		ClientSampling:  &xdstype.Percent{Value: 100},
		RandomSampling:  &xdstype.Percent{Value: t.SamplingPercent},
		OverallSampling: &xdstype.Percent{Value: 100},
		CustomTags:      tags,
		Provider: &tracev3.Tracing_Http{
			Name:       OpenTelemetryTracer,
			ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: mustAny(oc)},
		},
	}
}

// serviceCluster is Istio's name of a workload's service in traces,
// "<canonical service>.<namespace>".
func serviceCluster(id contract.Identity) string {
	return canonicalService(id) + "." + id.Namespace
}

func canonicalService(id contract.Identity) string {
	for _, k := range []string{labelCanonicalName, "app.kubernetes.io/name", "app"} {
		if v := id.Labels[k]; v != "" {
			return v
		}
	}
	if id.WorkloadName != "" {
		return id.WorkloadName
	}
	return "unknown"
}

// serviceTags are the literal tags Istio puts on every span of a
// workload: istio.canonical_service, istio.canonical_revision,
// istio.mesh_id, istio.namespace, istio.cluster_id.
func serviceTags(s *mesh.Snapshot, id contract.Identity) []*tracingtype.CustomTag {
	rev := "latest"
	for _, k := range []string{labelCanonicalRevision, "app.kubernetes.io/version", "version"} {
		if v := id.Labels[k]; v != "" {
			rev = v
			break
		}
	}
	ns := id.Namespace
	if ns == "" {
		ns = "default"
	}
	lit := func(tag, v string) *tracingtype.CustomTag {
		return &tracingtype.CustomTag{Tag: tag, Type: &tracingtype.CustomTag_Literal_{Literal: &tracingtype.CustomTag_Literal{Value: v}}}
	}
	return []*tracingtype.CustomTag{
		lit("istio.canonical_revision", rev),
		lit("istio.canonical_service", canonicalService(id)),
		lit("istio.cluster_id", "Kubernetes"), // Istio's default cluster ID
		lit("istio.mesh_id", s.TrustDomain),   // Istio's default mesh ID is the trust domain
		lit("istio.namespace", ns),
	}
}

// inboundHosts maps each port of the endpoints this proxy fronts to the
// "<host>:<service port>" of the (first) service served there.
func inboundHosts(s *mesh.Snapshot, id contract.Identity) map[uint32]string {
	out := map[uint32]string{}
	for _, ep := range s.Registry.EndpointsAt(id.IPs) {
		if _, ok := out[ep.Port]; !ok && ep.ServiceHostname != "" {
			out[ep.Port] = ep.ServiceHostname + ":" + strconv.FormatUint(uint64(ep.ServicePort), 10)
		}
	}
	return out
}

// decorateInbound names the server spans of an inbound route
// configuration ("inbound|<port>||") as Istio does:
// "<service host>:<service port>/*", the name the client's span has.
func decorateInbound(rc *route.RouteConfiguration, hosts map[uint32]string) {
	if rc == nil {
		return
	}
	for _, vh := range rc.GetVirtualHosts() {
		for _, rt := range vh.GetRoutes() {
			_, port, _, _, err := contract.ParseClusterName(rt.GetRoute().GetCluster())
			if err != nil {
				continue
			}
			hp := hosts[port]
			if hp == "" {
				continue
			}
			rt.Decorator = &route.Decorator{Operation: hp + "/*"}
		}
	}
}

// decorateRoutes names the client spans of outbound routes as Istio's
// GetRouteOperation does: "<host>:<port><path>" of the route's one
// destination cluster, else of its virtual host ("<host>:<port>"), path
// being the match's prefix followed by "*" (or its exact path or regex).
// Only when the mesh traces, so nothing else changes otherwise. rs are
// the routes of svc's port, new (sharedServiceRoutes calls it before they
// are shared); the virtual host's name is "<host>:<port>".
func decorateRoutes(s *mesh.Snapshot, svc *registry.Service, port uint32, rs []*route.Route) {
	if !s.TracingEnabled() {
		return
	}
	vhost := svc.Hostname + ":" + strconv.FormatUint(uint64(port), 10)
	for _, rt := range rs {
		path := "/*"
		switch m := rt.GetMatch(); m.GetPathSpecifier().(type) {
		case *route.RouteMatch_Prefix:
			path = m.GetPrefix() + "*"
		case *route.RouteMatch_Path:
			path = m.GetPath()
		case *route.RouteMatch_SafeRegex:
			path = m.GetSafeRegex().GetRegex()
		}
		base := vhost
		if _, port, _, host, err := contract.ParseClusterName(rt.GetRoute().GetCluster()); err == nil && host != "" {
			base = host + ":" + strconv.FormatUint(uint64(port), 10)
		}
		rt.Decorator = &route.Decorator{Operation: base + path}
	}
}

// collectorCluster reaches a tracing provider outside the mesh's
// registry: STATIC for an IP address, STRICT_DNS for a host name; HTTP/2
// for OTLP/gRPC.
func collectorCluster(name string, p mesh.TracingProvider) types.Resource {
	typ := cluster.Cluster_STRICT_DNS
	if _, err := netip.ParseAddr(p.Service); err == nil {
		typ = cluster.Cluster_STATIC
	}
	c := &cluster.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &cluster.Cluster_Type{Type: typ},
		LbPolicy:             cluster.Cluster_ROUND_ROBIN,
		ConnectTimeout:       durationpb.New(connectTimeout),
		LoadAssignment: &endpoint.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*endpoint.LocalityLbEndpoints{{
				LbEndpoints: []*endpoint.LbEndpoint{{
					HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{Address: socketAddress(p.Service, p.Port)}},
				}},
			}},
		},
	}
	proto := registry.GRPC
	if p.HTTPPath != "" {
		proto = registry.HTTP
	}
	setProtocolOptions(c, proto)
	return c
}
