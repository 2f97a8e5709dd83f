package mesh

import (
	"slices"
	"strings"

	"weft.dev/weft/internal/config"
)

// GatewayMesh is the reserved gateway name meaning "every sidecar".
const GatewayMesh = config.GatewayMesh

// RouteIndex finds the VirtualServices that apply to a host on sidecars.
// It is immutable after construction.
type RouteIndex struct {
	byHost map[string][]*config.VirtualService
}

// newRouteIndex gives each host the VirtualService that routes it on
// sidecars (no gateways, or "mesh" among them), as Istio does: one per
// host. A VirtualService naming the host exactly wins over one whose
// wildcard host ("*.example.com") covers it, a more specific wildcard over
// a broader one, and among equals the one seen first (config.FirstSeen),
// so adding a VirtualService never takes a host over from the one in
// force. Config validation reports the losers.
func newRouteIndex(vss []*config.VirtualService, r resolver) *RouteIndex {
	idx := &RouteIndex{byHost: map[string][]*config.VirtualService{}}
	ordered := slices.Clone(vss)
	slices.SortFunc(ordered, config.FirstSeen)
	exact := map[string]bool{}
	type wildcard struct {
		pattern string
		vs      *config.VirtualService
	}
	var wilds []wildcard
	for _, vs := range ordered {
		if vs.Spec == nil || !appliesToMesh(vs.Spec.GetGateways()) {
			continue
		}
		for _, h := range vs.Spec.GetHosts() {
			fqdn := r.resolve(h, vs.Namespace)
			if strings.HasPrefix(fqdn, "*") {
				wilds = append(wilds, wildcard{fqdn, vs})
				continue
			}
			if !exact[fqdn] {
				exact[fqdn] = true
				idx.byHost[fqdn] = []*config.VirtualService{vs}
			}
		}
	}
	// Most specific pattern first; the sort is stable, so first seen
	// among equals.
	slices.SortStableFunc(wilds, func(a, b wildcard) int { return len(b.pattern) - len(a.pattern) })
	for _, svc := range r.reg.Services() {
		if exact[svc.Hostname] {
			continue
		}
		for _, w := range wilds {
			if hostMatchesWildcard(svc.Hostname, w.pattern) {
				idx.byHost[svc.Hostname] = []*config.VirtualService{w.vs}
				break
			}
		}
	}
	return idx
}

// ForHost returns the VirtualService that routes an FQDN on sidecars, as
// a slice of at most one. The slice is shared; do not modify it.
func (i *RouteIndex) ForHost(fqdn string) []*config.VirtualService {
	if i == nil {
		return nil
	}
	return i.byHost[fqdn]
}

// Hosts returns every indexed host, sorted.
func (i *RouteIndex) Hosts() []string {
	if i == nil {
		return nil
	}
	out := make([]string, 0, len(i.byHost))
	for h := range i.byHost {
		out = append(out, h)
	}
	slices.Sort(out)
	return out
}

// appliesToMesh reports whether a VirtualService (or one of its matches)
// with these gateways applies to sidecars.
func appliesToMesh(gateways []string) bool { return config.AppliesToMesh(gateways) }

// AppliesToMesh is appliesToMesh for generators looking at match.gateways.
func AppliesToMesh(gateways []string) bool { return appliesToMesh(gateways) }

// hostMatchesWildcard reports whether host matches pattern "*" or "*.suffix".
func hostMatchesWildcard(host, pattern string) bool {
	if pattern == "*" {
		return true
	}
	return strings.HasSuffix(host, strings.TrimPrefix(pattern, "*"))
}
