package cluster

import (
	"fmt"
	"slices"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"weft.dev/weft/internal/xds/contract"
)

// translateEndpoints returns the endpoints grouped by priority, lowest
// (most preferred) first, empty priorities left out. Every endpoint is
// kept, healthy or not: the unhealthy ones count in their priority's
// health share (Envoy's priority load) but are never picked.
//
// With localityWeighted (common_lb_config.locality_weighted_lb_config) a
// locality's load_balancing_weight is folded into its endpoints' weights,
// so each locality gets its weight's share and each endpoint its share of
// that; a locality without a weight gets no traffic, as in Envoy.
//
// An endpoint's metric labels name labels' service and its own workload
// (istio metadata), interned at its first request (Endpoint.Dst).
func translateEndpoints(cla *endpointv3.ClusterLoadAssignment, labels *dstLabels, localityWeighted bool) ([][]*Endpoint, error) {
	byPrio := map[uint32][]*Endpoint{}
	for i, loc := range cla.GetEndpoints() {
		var locWeight, sumWeight uint64
		if localityWeighted {
			if locWeight = uint64(loc.GetLoadBalancingWeight().GetValue()); locWeight == 0 {
				continue
			}
			for _, lbe := range loc.GetLbEndpoints() {
				sumWeight += uint64(max(lbe.GetLoadBalancingWeight().GetValue(), 1))
			}
		}
		for j, lbe := range loc.GetLbEndpoints() {
			where := fmt.Sprintf("endpoints[%d].lb_endpoints[%d]", i, j)
			sa := lbe.GetEndpoint().GetAddress().GetSocketAddress()
			if sa == nil {
				return nil, fmt.Errorf("%s.endpoint.address: want a socket_address", where)
			}
			if sa.GetProtocol() != core.SocketAddress_TCP {
				return nil, fmt.Errorf("%s.endpoint.address.socket_address.protocol: only TCP", where)
			}
			if _, ok := sa.GetPortSpecifier().(*core.SocketAddress_PortValue); !ok || sa.GetPortValue() == 0 {
				return nil, fmt.Errorf("%s.endpoint.address.socket_address: want a port_value", where)
			}
			if sa.GetAddress() == "" {
				return nil, fmt.Errorf("%s.endpoint.address.socket_address.address: empty", where)
			}
			w := uint32(1)
			if lw := lbe.GetLoadBalancingWeight(); lw != nil {
				if lw.GetValue() == 0 {
					return nil, fmt.Errorf("%s.load_balancing_weight: must be >= 1", where)
				}
				w = lw.GetValue()
			}
			if localityWeighted && sumWeight > 0 {
				w = uint32(min(max((locWeight*uint64(w)*1000+sumWeight-1)/sumWeight, 1), 1<<31))
			}
			hs := lbe.GetHealthStatus()
			ep := &Endpoint{
				addr:     endpointKey(sa.GetAddress(), sa.GetPortValue()),
				weight:   w,
				healthy:  hs == core.HealthStatus_UNKNOWN || hs == core.HealthStatus_HEALTHY,
				md:       lbe.GetMetadata(),
				labels:   labels,
				workload: lbe.GetMetadata().GetFilterMetadata()[contract.FilterMetadataIstio].GetFields()[contract.MetaEndpointWorkload].GetStringValue(),
			}
			p := loc.GetPriority()
			byPrio[p] = append(byPrio[p], ep)
		}
	}
	prios := make([]uint32, 0, len(byPrio))
	for p := range byPrio {
		prios = append(prios, p)
	}
	slices.Sort(prios)
	out := make([][]*Endpoint, 0, len(prios))
	for _, p := range prios {
		out = append(out, byPrio[p])
	}
	return out, nil
}

// overprovisioning is the assignment's overprovisioning factor in percent
// (policy.overprovisioning_factor, Envoy's default 140 = 1.4).
func overprovisioning(cla *endpointv3.ClusterLoadAssignment) uint64 {
	if f := cla.GetPolicy().GetOverprovisioningFactor(); f != nil && f.GetValue() > 0 {
		return uint64(f.GetValue())
	}
	return defaultOverprovisioning
}
