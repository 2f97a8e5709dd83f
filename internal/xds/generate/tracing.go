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

// tracingSide is how one side of a workload (client: its outbound
// listeners, server: its inbound ones) traces, or nothing (t nil).
type tracingSide struct {
	t       *mesh.Tracing
	tr      *hcm.HttpConnectionManager_Tracing
	cluster string
}

// tracingSides are the workload id's sides: [0] client, [1] server. Each
// may trace differently, or not at all.
func tracingSides(s *mesh.Snapshot, id contract.Identity) [2]tracingSide {
	var sides [2]tracingSide
	for i := range sides {
		t := s.TracingFor(id.Namespace, id.Labels, i == 1)
		if t == nil {
			continue
		}
		c := contract.ClusterName(contract.Outbound, t.Provider.Port, "", t.Provider.Service)
		sides[i] = tracingSide{t: t, tr: hcmTracing(s, id, t, c), cluster: c}
	}
	return sides
}

// traceListeners adds the tracing of the workload id to its listeners
// ls, as Istio's sidecars get it: every HTTP connection manager's tracing
// (the OpenTelemetry tracer exporting to the provider's collector,
// random_sampling, Istio's service tags and the custom tags) and the
// inbound routes' decorators ("<service host>:<port>/*", the server
// spans' names). A listener it changes is replaced in ls by a changed
// copy (listeners may be shared). The outbound routes' decorators come
// with the shared routes (decorateRoutes), the collector's cluster from
// withCollectorClusters. Nothing changes when the workload does not
// trace. Each listener is traced on its own, so the listeners of a proxy
// may be traced in parts (buildOutbound, buildInbound).
func traceListeners(s *mesh.Snapshot, id contract.Identity, ls []types.Resource) {
	if len(ls) == 0 {
		return
	}
	sides := tracingSides(s, id)
	if sides[0].t == nil && sides[1].t == nil {
		return
	}
	var hosts map[uint32]string // inboundHosts, when an inbound listener traces
	for i, res := range ls {
		l := res.(*listener.Listener)
		inbound := l.GetTrafficDirection() == core.TrafficDirection_INBOUND
		sd := sides[0]
		if inbound {
			sd = sides[1]
		}
		if sd.t == nil {
			continue
		}
		if inbound && hosts == nil {
			hosts = inboundHosts(s, id)
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
			ls[i] = l
		}
	}
}

// clientTracingKey is what traceListeners writes into the workload's
// outbound listeners: the encoding of its client side's tracing, "" when
// that side does not trace. Two workloads with equal keys (and equal
// outbound listeners before tracing) get equal traced listeners.
func clientTracingKey(s *mesh.Snapshot, id contract.Identity) string {
	t := s.TracingFor(id.Namespace, id.Labels, false)
	if t == nil {
		return ""
	}
	c := contract.ClusterName(contract.Outbound, t.Provider.Port, "", t.Provider.Service)
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(hcmTracing(s, id, t, c))
	if err != nil {
		panic(err) // a message built here always encodes
	}
	return string(b)
}

// collectorsNeeded names the clusters of the tracing collectors the
// workload id needs of its own (withCollectorClusters): a side's provider
// that is not a service of the mesh the proxy is sent (its outbound
// clusters, built or Lazy, which sharedOf gives when a side traces at
// all), whose cluster would serve. "" when it needs none.
func collectorsNeeded(s *mesh.Snapshot, id contract.Identity, sharedOf func() Parts) string {
	var need string
	var shared *Parts
	for i := range 2 {
		t := s.TracingFor(id.Namespace, id.Labels, i == 1)
		if t == nil {
			continue
		}
		if shared == nil {
			p := sharedOf()
			shared = &p
		}
		c := contract.ClusterName(contract.Outbound, t.Provider.Port, "", t.Provider.Service)
		if hasCluster(shared.Shared, c) || hasLazy(shared.Lazy, c) {
			continue
		}
		need += c + "\x00"
	}
	return need
}

// withCollectorClusters adds to own, the proxy's own clusters sorted by
// name, the cluster of each tracing collector the proxy needs of its own
// (collectorsNeeded), keeping it sorted. own is not modified.
func withCollectorClusters(s *mesh.Snapshot, id contract.Identity, shared Parts, own []types.Resource) []types.Resource {
	for _, sd := range tracingSides(s, id) {
		if sd.t == nil || hasCluster(shared.Shared, sd.cluster) || hasLazy(shared.Lazy, sd.cluster) || hasCluster(own, sd.cluster) {
			continue
		}
		// Not a service of the mesh (whose cluster would serve): the
		// proxy's own.
		own = append(slices.Clone(own), collectorCluster(sd.cluster, sd.t.Provider))
		sortByName(own) // sorted for hasCluster
	}
	return own
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
