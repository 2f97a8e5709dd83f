package generate

import (
	"strings"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry"
	"weft.dev/weft/internal/xds/contract"
)

// outboundEndpoints returns a ClusterLoadAssignment for every EDS cluster
// outboundClusters generates, so the set is always consistent. The
// clusters of services resolved by DNS carry their endpoints themselves.
func outboundEndpoints(s *mesh.Snapshot, id contract.Identity) []types.Resource {
	var out []types.Resource
	eachOutboundCLA(s, id, func(_ string, k claKey, build func(*mesh.Snapshot) *endpoint.ClusterLoadAssignment) {
		out = append(out, sharedCLA(s, k, func() *endpoint.ClusterLoadAssignment { return build(s) }))
	})
	return out
}

// outboundEndpointsLazy is outboundEndpoints as Lazy resources, whose Key
// is what sharedCLA keys and checks the carried assignment by.
func outboundEndpointsLazy(s *mesh.Snapshot, id contract.Identity) []Lazy {
	var out []Lazy
	eachOutboundCLA(s, id, func(name string, k claKey, build func(*mesh.Snapshot) *endpoint.ClusterLoadAssignment) {
		out = append(out, Lazy{Name: name, Key: lazyCLAKey{k, s.EndpointsDigest(k.host, k.port)},
			Build: func(s *mesh.Snapshot) types.Resource { return build(s) }})
	})
	return out
}

// eachOutboundCLA calls yield with the name, the sharing key and the
// builder of every outbound ClusterLoadAssignment of id. A builder reads
// the endpoints of the snapshot it is given, which may be a later one
// than s (Lazy.Build).
func eachOutboundCLA(s *mesh.Snapshot, id contract.Identity, yield func(name string, k claKey, build func(*mesh.Snapshot) *endpoint.ClusterLoadAssignment)) {
	vis := scopeOf(s, id)
	for _, svc := range s.Registry.Services() {
		if svc.Resolution.ResolvedByDNS() {
			continue
		}
		for _, p := range svc.Ports {
			if !vis.Port(svc, p.Number) {
				continue
			}
			name := contract.ClusterName(contract.Outbound, p.Number, "", svc.Hostname)
			yield(name, claKeyOf(s, id, svc.Hostname, p.Number, ""), func(s *mesh.Snapshot) *endpoint.ClusterLoadAssignment {
				eps := s.Registry.Endpoints(svc.Hostname, p.Number)
				return withLocalityLB(s, id, svc.Hostname, p.Number, "", eps,
					loadAssignment(name, eps, mtlsCapable(s, drView(s, id), svc, p, "")))
			})
			for _, sub := range s.Subsets.SubsetsOf(drView(s, id), svc.Hostname) {
				name := contract.ClusterName(contract.Outbound, p.Number, sub.GetName(), svc.Hostname)
				yield(name, claKeyOf(s, id, svc.Hostname, p.Number, sub.GetName()), func(s *mesh.Snapshot) *endpoint.ClusterLoadAssignment {
					var in []*registry.Endpoint
					for _, ep := range s.Registry.Endpoints(svc.Hostname, p.Number) {
						if labelsInclude(ep.Labels, sub.GetLabels()) {
							in = append(in, ep)
						}
					}
					return withLocalityLB(s, id, svc.Hostname, p.Number, sub.GetName(), in,
						loadAssignment(name, in, mtlsCapable(s, drView(s, id), svc, p, sub.GetName())))
				})
			}
		}
	}
}

// mtlsCapable reports which endpoints of a cluster (svc's port p, subset
// may be empty) take mutual TLS, as Istio's mtlsChecker decides: the
// DestinationRule's tls mode when it sets one (ISTIO_MUTUAL or not), else
// the workload is labelled security.istio.io/tlsMode: istio (it runs a
// sidecar) and its own PeerAuthentication for the port is not DISABLE.
// Such endpoints carry the metadata automatic mutual TLS matches on.
func mtlsCapable(s *mesh.Snapshot, dv mesh.DRView, svc *registry.Service, p registry.Port, subset string) func(*registry.Endpoint) bool {
	t := mergedTrafficPolicy(s, dv, svc.Hostname, p.Number, subset).GetTls()
	return func(ep *registry.Endpoint) bool {
		if ep.Labels[contract.TLSModeLabel] != contract.TLSModeIstio {
			return false
		}
		if t != nil {
			return t.GetMode() == networking.ClientTLSSettings_ISTIO_MUTUAL
		}
		ns := ep.Namespace
		if ns == "" {
			ns = svc.Namespace
		}
		return s.PeerAuthn.Mode(ns, ep.Labels, ep.Port) != config.MTLSDisable
	}
}

// loadAssignment groups endpoints by locality, localities sorted, endpoints
// in registry order (port, address); mtls marks the endpoints that take
// mutual TLS.
func loadAssignment(name string, eps []*registry.Endpoint, mtls func(*registry.Endpoint) bool) *endpoint.ClusterLoadAssignment {
	cla := &endpoint.ClusterLoadAssignment{ClusterName: name}
	byLoc := map[string]*endpoint.LocalityLbEndpoints{}
	for _, ep := range eps {
		l, ok := byLoc[ep.Locality]
		if !ok {
			l = &endpoint.LocalityLbEndpoints{Locality: locality(ep.Locality)}
			byLoc[ep.Locality] = l
		}
		l.LbEndpoints = append(l.LbEndpoints, lbEndpoint(ep, mtls != nil && mtls(ep)))
	}
	for _, k := range sortedKeys(byLoc) {
		cla.Endpoints = append(cla.Endpoints, byLoc[k])
	}
	return cla
}

func lbEndpoint(ep *registry.Endpoint, mtls bool) *endpoint.LbEndpoint {
	health := core.HealthStatus_HEALTHY
	switch ep.Health {
	case registry.Unhealthy:
		health = core.HealthStatus_UNHEALTHY
	case registry.Draining:
		health = core.HealthStatus_DRAINING
	}
	weight := ep.Weight
	if weight == 0 {
		weight = 1
	}
	wl := contract.WorkloadMetadata(ep.WorkloadName, ep.Namespace, ep.Labels["app"], ep.Labels["version"], "")
	md, err := structpb.NewStruct(map[string]any{contract.MetaEndpointWorkload: wl})
	if err != nil { // one string: cannot fail
		panic(err)
	}
	meta := &core.Metadata{FilterMetadata: map[string]*structpb.Struct{contract.FilterMetadataIstio: md}}
	if mtls {
		meta.FilterMetadata[contract.FilterMetadataTransportSocketMatch] = &structpb.Struct{Fields: map[string]*structpb.Value{
			contract.MetaTLSMode: structpb.NewStringValue(contract.TLSModeIstio),
		}}
	}
	return &endpoint.LbEndpoint{
		HostIdentifier:      &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{Address: socketAddress(ep.Address, ep.Port)}},
		HealthStatus:        health,
		LoadBalancingWeight: wrapperspb.UInt32(weight),
		Metadata:            meta,
	}
}

// locality parses "region/zone/subzone"; nil when empty.
func locality(s string) *core.Locality {
	if s == "" {
		return nil
	}
	f := strings.SplitN(s, "/", 3)
	f = append(f, make([]string, 3-len(f))...)
	return &core.Locality{Region: f[0], Zone: f[1], SubZone: f[2]}
}

// labelsInclude reports whether have contains every key/value of want.
func labelsInclude(have, want map[string]string) bool {
	for k, v := range want {
		if got, ok := have[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// endpointProtocol is the protocol of the service port an endpoint serves;
// HTTP when the service is unknown (the contract's default).
func endpointProtocol(s *mesh.Snapshot, ep *registry.Endpoint) registry.Protocol {
	if svc := s.Registry.Service(ep.ServiceHostname); svc != nil {
		if p, ok := svc.Port(ep.ServicePort); ok {
			return p.Protocol
		}
	}
	return registry.HTTP
}
