package generate

import (
	"slices"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/xds/contract"
)

// statsListeners adds Istio's stats filter (contract.StatsFilterName) to the
// workload's connection managers and TCP proxies when its Telemetry
// resources override its metrics (mesh.TelemetryIndex.Metrics): an HTTP
// filter before the router, a network filter before tcp_proxy, as Istio's
// sidecars have them, configured for the side of the listener (outbound:
// CLIENT, inbound: SERVER). With no override nothing is added: the proxy
// reports the standard metrics without the filter, so a mesh without
// Telemetry metrics gets the same listeners as before. A listener it
// changes is replaced in ls by a changed copy (listeners may be shared);
// each listener is treated on its own, so a proxy's listeners may be
// treated in parts.
func statsListeners(s *mesh.Snapshot, id contract.Identity, ls []types.Resource) {
	set := s.Telemetry.For(id.Namespace, id.Labels)
	client := s.Telemetry.Metrics(set, mesh.ModeClient)
	server := s.Telemetry.Metrics(set, mesh.ModeServer)
	if len(client.Metrics) == 0 && len(server.Metrics) == 0 {
		return
	}
	for i, res := range ls {
		l := res.(*listener.Listener)
		cfg := client
		if l.GetTrafficDirection() == core.TrafficDirection_INBOUND {
			cfg = server
		}
		if len(cfg.Metrics) == 0 {
			continue
		}
		l = proto.Clone(l).(*listener.Listener)
		typed := cfg.Any()
		chains := slices.Clone(l.GetFilterChains())
		if l.GetDefaultFilterChain() != nil {
			chains = append(chains, l.GetDefaultFilterChain())
		}
		for _, fc := range chains {
			fc.Filters = withStatsFilters(fc.GetFilters(), typed)
		}
		ls[i] = l
	}
}

// withStatsFilters puts the stats filter in a chain's filters.
func withStatsFilters(filters []*listener.Filter, typed *anypb.Any) []*listener.Filter {
	var out []*listener.Filter
	for _, f := range filters {
		switch f.GetName() {
		case wellknown.TCPProxy:
			out = append(out, &listener.Filter{Name: contract.StatsFilterName, ConfigType: &listener.Filter_TypedConfig{TypedConfig: typed}})
		case wellknown.HTTPConnectionManager:
			var m hcm.HttpConnectionManager
			if err := f.GetTypedConfig().UnmarshalTo(&m); err == nil && len(m.GetHttpFilters()) > 0 {
				n := len(m.HttpFilters)
				stats := &hcm.HttpFilter{Name: contract.StatsFilterName, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: typed}}
				m.HttpFilters = append(slices.Clone(m.HttpFilters[:n-1]), stats, m.HttpFilters[n-1]) // before the router
				f = &listener.Filter{Name: f.GetName(), ConfigType: &listener.Filter_TypedConfig{TypedConfig: mustAny(&m)}}
			}
		}
		out = append(out, f)
	}
	return out
}
