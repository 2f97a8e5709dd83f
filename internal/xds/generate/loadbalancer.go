package generate

import (
	"math"
	"sort"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	xdstype "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry"
	"weft.dev/weft/internal/xds/contract"
)

// DestinationRule trafficPolicy.loadBalancer, as Istio maps it
// (pilot/pkg/networking/core/cluster_traffic_policy.go applyLoadBalancer,
// loadbalancer/loadbalancer.go for locality priorities and weights, and
// route.go consistentHashToHashPolicy for the route's hash_policy).

// Envoy's defaults Istio relies on.
const defaultMinRingSize = 1024

// withLoadBalancer applies the DestinationRule's loadBalancer to an
// outbound cluster of svc's port p (subset may be empty) and returns c.
func withLoadBalancer(s *mesh.Snapshot, dv mesh.DRView, svc *registry.Service, p registry.Port, subset string, c *cluster.Cluster) *cluster.Cluster {
	policy := mergedTrafficPolicy(s, dv, svc.Hostname, p.Number, subset)
	applyLoadBalancer(c, policy.GetLoadBalancer())
	if l, force := effectiveLocalityLB(s, svc.Hostname, policy.GetLoadBalancer()); localityWeighted(l, force || policy.GetOutlierDetection() != nil) {
		if c.CommonLbConfig == nil {
			c.CommonLbConfig = &cluster.Cluster_CommonLbConfig{}
		}
		c.CommonLbConfig.LocalityConfigSpecifier = &cluster.Cluster_CommonLbConfig_LocalityWeightedLbConfig_{
			LocalityWeightedLbConfig: &cluster.Cluster_CommonLbConfig_LocalityWeightedLbConfig{},
		}
	}
	return c
}

// applyLoadBalancer sets lb_policy and its config. Without a loadBalancer,
// or with simple UNSPECIFIED, the cluster keeps LEAST_REQUEST, Istio's
// default.
func applyLoadBalancer(c *cluster.Cluster, lb *networking.LoadBalancerSettings) {
	if lb == nil {
		return
	}
	switch lb.GetSimple() {
	case networking.LoadBalancerSettings_LEAST_CONN, networking.LoadBalancerSettings_LEAST_REQUEST:
		c.LbPolicy = cluster.Cluster_LEAST_REQUEST
		if ss := slowStart(lb); ss != nil {
			c.LbConfig = &cluster.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &cluster.Cluster_LeastRequestLbConfig{SlowStartConfig: ss}}
		}
	case networking.LoadBalancerSettings_RANDOM:
		c.LbPolicy = cluster.Cluster_RANDOM
	case networking.LoadBalancerSettings_ROUND_ROBIN:
		c.LbPolicy = cluster.Cluster_ROUND_ROBIN
		if ss := slowStart(lb); ss != nil {
			c.LbConfig = &cluster.Cluster_RoundRobinLbConfig_{RoundRobinLbConfig: &cluster.Cluster_RoundRobinLbConfig{SlowStartConfig: ss}}
		}
	}
	ch := lb.GetConsistentHash()
	if ch == nil {
		return
	}
	switch {
	case ch.GetMaglev() != nil:
		c.LbPolicy = cluster.Cluster_MAGLEV
		c.LbConfig = nil
		if n := ch.GetMaglev().GetTableSize(); n != 0 {
			c.LbConfig = &cluster.Cluster_MaglevLbConfig_{MaglevLbConfig: &cluster.Cluster_MaglevLbConfig{TableSize: wrapperspb.UInt64(n)}}
		}
	case ch.GetRingHash() != nil:
		c.LbPolicy = cluster.Cluster_RING_HASH
		c.LbConfig = nil
		if n := ch.GetRingHash().GetMinimumRingSize(); n != 0 {
			c.LbConfig = &cluster.Cluster_RingHashLbConfig_{RingHashLbConfig: &cluster.Cluster_RingHashLbConfig{MinimumRingSize: wrapperspb.UInt64(n)}}
		}
	default: // the deprecated minimumRingSize, Envoy's 1024 when unset
		n := ch.GetMinimumRingSize() //nolint:staticcheck // still honoured, as Istio does
		if n == 0 {
			n = defaultMinRingSize
		}
		c.LbPolicy = cluster.Cluster_RING_HASH
		c.LbConfig = &cluster.Cluster_RingHashLbConfig_{RingHashLbConfig: &cluster.Cluster_RingHashLbConfig{MinimumRingSize: wrapperspb.UInt64(n)}}
	}
}

// slowStart is Envoy's slow_start_config for warmup (warmup.duration with
// minimumPercent and aggression) or the older warmupDurationSecs.
func slowStart(lb *networking.LoadBalancerSettings) *cluster.Cluster_SlowStartConfig {
	if w := lb.GetWarmup(); w != nil && w.GetDuration() != nil {
		ss := &cluster.Cluster_SlowStartConfig{SlowStartWindow: w.GetDuration()}
		if a := w.GetAggression(); a != nil {
			ss.Aggression = &core.RuntimeDouble{DefaultValue: a.GetValue(), RuntimeKey: "upstream.slow_start.aggression"}
		}
		if m := w.GetMinimumPercent(); m != nil {
			ss.MinWeightPercent = &xdstype.Percent{Value: m.GetValue()}
		}
		return ss
	}
	if d := lb.GetWarmupDurationSecs(); d != nil {
		return &cluster.Cluster_SlowStartConfig{SlowStartWindow: d}
	}
	return nil
}

// effectiveLocalityLB is the locality setting that applies to a cluster
// of service host whose loadBalancer is lb, as Istio's
// GetEffectiveLbSetting resolves it: the DestinationRule's
// localityLbSetting; else the service's trafficDistribution, which fails
// over without outlier detection (force: it relies on endpoint health,
// as Kubernetes' own implementations do); else the mesh config's
// (Istio's default, and Weft's: {enabled: true}). nil when the one that
// applies is disabled (enabled: false), or when the rule sets a
// zoneAwareLbSetting instead (which Weft does not apply).
func effectiveLocalityLB(s *mesh.Snapshot, host string, lb *networking.LoadBalancerSettings) (l *networking.LocalityLoadBalancerSetting, force bool) {
	if lb.GetZoneAwareLbSetting() != nil {
		return nil, false
	}
	l = lb.GetLocalityLbSetting()
	if l == nil {
		if svc := s.Registry.Service(host); svc != nil {
			switch svc.TrafficDistribution {
			case registry.TrafficPreferSameZone:
				return preferSameZone, true
			case registry.TrafficPreferSameNode:
				return preferSameNode, true
			}
		}
		l = s.Telemetry.MeshConfig().GetLocalityLbSetting()
	}
	if l == nil || (l.GetEnabled() != nil && !l.GetEnabled().GetValue()) {
		return nil, false
	}
	return l, false
}

// preferSameZone and preferSameNode are Istio's settings for a service's
// trafficDistribution: failover by the proxy's network, region and zone
// (and for the node, its subzone and node name, kubernetes.io/hostname,
// where the proxy's and the endpoints' labels carry it). Read only.
var (
	preferSameZone = &networking.LocalityLoadBalancerSetting{
		Enabled:          wrapperspb.Bool(true),
		FailoverPriority: []string{topologyNetworkLabel, labelRegion, labelZone},
	}
	preferSameNode = &networking.LocalityLoadBalancerSetting{
		Enabled:          wrapperspb.Bool(true),
		FailoverPriority: []string{topologyNetworkLabel, labelRegion, labelZone, labelSubzone, "kubernetes.io/hostname"},
	}
)

// localityWeighted is Istio's rule for a cluster's
// locality_weighted_lb_config under locality setting l: set when l
// distributes traffic by weights, or fails over by region or by labels
// on a cluster with outlier detection. Otherwise it is left out: it would
// make the cluster pick a locality first, then an endpoint in it, which
// changes what LEAST_REQUEST and the other policies choose among.
func localityWeighted(l *networking.LocalityLoadBalancerSetting, outlier bool) bool {
	return l != nil && (len(l.GetDistribute()) > 0 || outlier && (len(l.GetFailover()) > 0 || len(l.GetFailoverPriority()) > 0))
}

// consistentHashToHashPolicy is Istio's mapping of consistentHash's key to
// a RouteAction hash policy; nil for none.
func consistentHashToHashPolicy(ch *networking.LoadBalancerSettings_ConsistentHashLB) *route.RouteAction_HashPolicy {
	switch ch.GetHashKey().(type) {
	case *networking.LoadBalancerSettings_ConsistentHashLB_HttpHeaderName:
		return &route.RouteAction_HashPolicy{PolicySpecifier: &route.RouteAction_HashPolicy_Header_{
			Header: &route.RouteAction_HashPolicy_Header{HeaderName: ch.GetHttpHeaderName()},
		}}
	case *networking.LoadBalancerSettings_ConsistentHashLB_HttpCookie:
		c := ch.GetHttpCookie()
		return &route.RouteAction_HashPolicy{PolicySpecifier: &route.RouteAction_HashPolicy_Cookie_{
			Cookie: &route.RouteAction_HashPolicy_Cookie{Name: c.GetName(), Path: c.GetPath(), Ttl: c.GetTtl()},
		}}
	case *networking.LoadBalancerSettings_ConsistentHashLB_UseSourceIp:
		return &route.RouteAction_HashPolicy{PolicySpecifier: &route.RouteAction_HashPolicy_ConnectionProperties_{
			ConnectionProperties: &route.RouteAction_HashPolicy_ConnectionProperties{SourceIp: ch.GetUseSourceIp()},
		}}
	case *networking.LoadBalancerSettings_ConsistentHashLB_HttpQueryParameterName:
		return &route.RouteAction_HashPolicy{PolicySpecifier: &route.RouteAction_HashPolicy_QueryParameter_{
			QueryParameter: &route.RouteAction_HashPolicy_QueryParameter{Name: ch.GetHttpQueryParameterName()},
		}}
	}
	return nil
}

// withHashPolicy sets the route's hash_policy from the consistentHash of
// the DestinationRule governing its destination cluster (for weighted
// clusters, the first destination that has one), and returns a.
func withHashPolicy(s *mesh.Snapshot, dv mesh.DRView, a *route.Route_Route) *route.Route_Route {
	if a == nil || a.Route == nil {
		return a
	}
	var names []string
	switch cs := a.Route.GetClusterSpecifier().(type) {
	case *route.RouteAction_Cluster:
		names = []string{cs.Cluster}
	case *route.RouteAction_WeightedClusters:
		for _, c := range cs.WeightedClusters.GetClusters() {
			names = append(names, c.GetName())
		}
	}
	for _, n := range names {
		_, port, subset, host, err := contract.ParseClusterName(n)
		if err != nil {
			continue
		}
		ch := mergedTrafficPolicy(s, dv, host, port, subset).GetLoadBalancer().GetConsistentHash()
		if hp := consistentHashToHashPolicy(ch); hp != nil {
			a.Route.HashPolicy = []*route.RouteAction_HashPolicy{hp}
			return a
		}
	}
	return a
}

// Locality labels Istio adds to proxy and endpoint labels, so
// failoverPriority can name them.
const (
	labelRegion  = "topology.kubernetes.io/region"
	labelZone    = "topology.kubernetes.io/zone"
	labelSubzone = "topology.istio.io/subzone"
	// topologyNetworkLabel is Istio's network label, which a first
	// failoverPriority entry treats apart (applyFailoverPriorities).
	topologyNetworkLabel = "topology.istio.io/network"
)

// withRouteHashPolicy is withHashPolicy for a whole route; it returns r.
func withRouteHashPolicy(s *mesh.Snapshot, dv mesh.DRView, r *route.Route) *route.Route {
	if a, ok := r.GetAction().(*route.Route_Route); ok {
		withHashPolicy(s, dv, a)
	}
	return r
}

// withLocalityLB applies the locality setting in force
// (effectiveLocalityLB: the DestinationRule's localityLbSetting, else the
// mesh config's, enabled by default) to an outbound assignment for the
// proxy, as Istio's ApplyLocalityLoadBalancer: distribute sets locality
// weights; otherwise, when the cluster has outlier detection (Envoy would
// never fail over without it), failoverPriority and failover (or the
// default region/zone/subzone proximity) set priorities. So, as in Istio,
// a DestinationRule with outlierDetection alone keeps a proxy's traffic
// in its own zone while the zone has healthy endpoints. eps are the
// registry endpoints of cla, in its order within each locality.
func withLocalityLB(s *mesh.Snapshot, id contract.Identity, host string, port uint32, subset string, eps []*registry.Endpoint, cla *endpoint.ClusterLoadAssignment) *endpoint.ClusterLoadAssignment {
	policy := mergedTrafficPolicy(s, drView(s, id), host, port, subset)
	l, force := effectiveLocalityLB(s, host, policy.GetLoadBalancer())
	if l == nil {
		return cla
	}
	outlier := force || policy.GetOutlierDetection() != nil
	if localityWeighted(l, outlier) {
		// The cluster has locality_weighted_lb_config, under which Envoy
		// sends nothing to a locality without a weight: give each Istio's,
		// the sum of its endpoints' weights.
		for _, le := range cla.Endpoints {
			var w uint32
			for _, e := range le.GetLbEndpoints() {
				w += max(e.GetLoadBalancingWeight().GetValue(), 1)
			}
			le.LoadBalancingWeight = wrapperspb.UInt32(w)
		}
	}
	if id.Locality == "" {
		return cla
	}
	proxyLoc := contract.NodeLocality(id.Locality)
	if len(l.GetDistribute()) > 0 {
		applyLocalityWeights(proxyLoc, cla, l.GetDistribute())
		return cla
	}
	if !outlier {
		return cla
	}
	if len(l.GetFailoverPriority()) > 0 {
		applyFailoverPriorities(cla, eps, localityLabels(id.Labels, id.Locality), l.GetFailoverPriority())
		if len(l.GetFailover()) > 0 {
			applyLocalityFailover(proxyLoc, cla, l.GetFailover())
		}
		return cla
	}
	applyLocalityFailover(proxyLoc, cla, l.GetFailover())
	return cla
}

// localityLabels is labels plus the topology labels of loc.
func localityLabels(labels map[string]string, loc string) map[string]string {
	out := make(map[string]string, len(labels)+3)
	for k, v := range labels {
		out[k] = v
	}
	if l := contract.NodeLocality(loc); l != nil {
		out[labelRegion], out[labelZone], out[labelSubzone] = l.GetRegion(), l.GetZone(), l.GetSubZone()
	}
	return out
}

// lbPriority is Istio's LbPriority: 0 same subzone, 1 same zone, 2 same
// region, 3 other region.
func lbPriority(proxy, ep *core.Locality) int {
	switch {
	case proxy.GetRegion() != ep.GetRegion():
		return 3
	case proxy.GetZone() != ep.GetZone():
		return 2
	case proxy.GetSubZone() != ep.GetSubZone():
		return 1
	}
	return 0
}

// applyLocalityFailover sets each locality's priority by proximity to the
// proxy; a region with a failover rule ranks every other region but its
// target last (4). Existing priorities (from failoverPriority) are kept as
// the major key. Priorities are then renumbered 0..N without gaps.
func applyLocalityFailover(proxy *core.Locality, cla *endpoint.ClusterLoadAssignment, failover []*networking.LocalityLoadBalancerSetting_Failover) {
	byPrio := map[int][]int{}
	for i, le := range cla.Endpoints {
		p := lbPriority(proxy, le.GetLocality())
		if p == 3 {
			for _, f := range failover {
				if f.GetFrom() == proxy.GetRegion() {
					if le.GetLocality().GetRegion() != f.GetTo() {
						p = 4
					}
					break
				}
			}
		}
		p += int(le.Priority) * 5
		le.Priority = uint32(p)
		byPrio[p] = append(byPrio[p], i)
	}
	renumber(cla, byPrio)
}

// renumber maps the priorities in byPrio (priority -> indexes into
// cla.Endpoints) to 0..N in order.
func renumber(cla *endpoint.ClusterLoadAssignment, byPrio map[int][]int) {
	prios := make([]int, 0, len(byPrio))
	for p := range byPrio {
		prios = append(prios, p)
	}
	sort.Ints(prios)
	for i, p := range prios {
		for _, idx := range byPrio[p] {
			cla.Endpoints[idx].Priority = uint32(i)
		}
	}
}

// applyFailoverPriorities splits each locality by how many of the
// failoverPriority labels (in order) an endpoint shares with the proxy:
// all of them is priority 0, a mismatch at label j is len-j.
func applyFailoverPriorities(cla *endpoint.ClusterLoadAssignment, eps []*registry.Endpoint, proxyLabels map[string]string, labels []string) {
	byLoc := map[string][]*registry.Endpoint{}
	for _, ep := range eps {
		byLoc[ep.Locality] = append(byLoc[ep.Locality], ep)
	}
	// As Istio's applyFailoverPriorityPerLocality: a label neither side
	// has matches (both values are empty), and a first label of
	// topology.istio.io/network that differs does not stop the ranking:
	// the endpoint is ranked by the other labels, below every endpoint of
	// the proxy's network.
	network := len(labels) > 0 && labels[0] == topologyNetworkLabel
	var out []*endpoint.LocalityLbEndpoints
	for _, le := range cla.Endpoints {
		reg := byLoc[contract.LocalityString(le.GetLocality())]
		groups := map[int]*endpoint.LocalityLbEndpoints{}
		for i, lbe := range le.GetLbEndpoints() {
			p := 0
			if i < len(reg) {
				epLabels := localityLabels(reg[i].Labels, reg[i].Locality)
				adjust := 0
				for j, k := range labels {
					if proxyLabels[k] != epLabels[k] {
						if j == 0 && network {
							adjust = len(labels)
							continue
						}
						p = len(labels) - j
						break
					}
				}
				p += adjust
			}
			g := groups[p]
			if g == nil {
				g = &endpoint.LocalityLbEndpoints{Locality: le.GetLocality(), Priority: uint32(p)}
				groups[p] = g
			}
			g.LbEndpoints = append(g.LbEndpoints, lbe)
			g.LoadBalancingWeight = wrapperspb.UInt32(g.GetLoadBalancingWeight().GetValue() + max(lbe.GetLoadBalancingWeight().GetValue(), 1))
		}
		keys := make([]int, 0, len(groups))
		for p := range groups {
			keys = append(keys, p)
		}
		sort.Ints(keys)
		for _, p := range keys {
			out = append(out, groups[p])
		}
	}
	cla.Endpoints = out
	byPrio := map[int][]int{}
	for i, le := range out {
		byPrio[int(le.Priority)] = append(byPrio[int(le.Priority)], i)
	}
	renumber(cla, byPrio)
}

// applyLocalityWeights is Istio's distribute: the first rule whose from
// matches the proxy sets each matching locality's weight (a wildcard target
// matching several localities shares its weight in proportion to theirs);
// localities no rule names get no traffic (their endpoints are dropped).
func applyLocalityWeights(proxy *core.Locality, cla *endpoint.ClusterLoadAssignment, distribute []*networking.LocalityLoadBalancerSetting_Distribute) {
	for _, d := range distribute {
		if d == nil || !localityMatch(proxy, d.GetFrom()) {
			continue
		}
		unmatched := map[int]bool{}
		for i := range cla.Endpoints {
			unmatched[i] = true
		}
		to := d.GetTo()
		keys := make([]string, 0, len(to))
		for k := range to {
			keys = append(keys, k)
		}
		sort.Strings(keys) // deterministic when wildcards overlap
		for _, loc := range keys {
			weight := to[loc]
			orig := map[int]uint32{}
			var total uint32
			for i, le := range cla.Endpoints {
				if unmatched[i] && localityMatch(le.GetLocality(), loc) {
					delete(unmatched, i)
					orig[i] = max(le.GetLoadBalancingWeight().GetValue(), 1)
					total += orig[i]
				}
			}
			for i, w := range orig {
				if dw := float64(w*weight) / float64(total); dw > 0 {
					cla.Endpoints[i].LoadBalancingWeight = wrapperspb.UInt32(uint32(math.Ceil(dw)))
				}
			}
		}
		for i := range unmatched {
			cla.Endpoints[i].LbEndpoints = nil
		}
		break
	}
}

// localityMatch is Istio's util.LocalityMatch: rule is region/zone/subzone
// with "*" wildcards; missing trailing parts match anything.
func localityMatch(l *core.Locality, rule string) bool {
	r := contract.NodeLocality(rule)
	if r == nil {
		return false
	}
	return (r.GetRegion() == "*" || r.GetRegion() == l.GetRegion()) &&
		(r.GetZone() == "*" || r.GetZone() == "" || r.GetZone() == l.GetZone()) &&
		(r.GetSubZone() == "*" || r.GetSubZone() == "" || r.GetSubZone() == l.GetSubZone())
}
