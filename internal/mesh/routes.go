package mesh

import (
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"weft.dev/weft/internal/config"
)

// GatewayMesh is the reserved gateway name meaning "every sidecar".
const GatewayMesh = "mesh"

// RouteIndex finds the VirtualServices that apply to a host on sidecars.
// It is immutable after construction.
type RouteIndex struct {
	byHost map[string][]*config.VirtualService
}

// newRouteIndex indexes the VirtualServices that bind to sidecars (no
// gateways, or "mesh" among them) by resolved FQDN host. Wildcard hosts
// ("*.example.com") are matched against the registry's services. Within a
// host the order is namespace/name, as in the config snapshot, which is the
// order Istio evaluates them in.
func newRouteIndex(vss []*config.VirtualService, r resolver) *RouteIndex {
	idx := &RouteIndex{byHost: map[string][]*config.VirtualService{}}
	for _, vs := range sortedByMeta(vss) {
		if vs.Spec == nil || !appliesToMesh(vs.Spec.GetGateways()) {
			continue
		}
		seen := map[string]bool{} // a VS listing a host twice counts once
		add := func(fqdn string) {
			if !seen[fqdn] {
				seen[fqdn] = true
				idx.byHost[fqdn] = append(idx.byHost[fqdn], vs)
			}
		}
		for _, h := range vs.Spec.GetHosts() {
			fqdn := r.resolve(h, vs.Namespace)
			if strings.HasPrefix(fqdn, "*") {
				for _, svc := range r.reg.Services() {
					if hostMatchesWildcard(svc.Hostname, fqdn) {
						add(svc.Hostname)
					}
				}
				continue
			}
			add(fqdn)
		}
	}
	return idx
}

// ForHost returns the VirtualServices for an FQDN in evaluation order. The
// slice is shared; do not modify it.
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
func appliesToMesh(gateways []string) bool {
	return len(gateways) == 0 || slices.Contains(gateways, GatewayMesh)
}

// AppliesToMesh is appliesToMesh for generators looking at match.gateways.
func AppliesToMesh(gateways []string) bool { return appliesToMesh(gateways) }

// hostMatchesWildcard reports whether host matches pattern "*" or "*.suffix".
func hostMatchesWildcard(host, pattern string) bool {
	if pattern == "*" {
		return true
	}
	return strings.HasSuffix(host, strings.TrimPrefix(pattern, "*"))
}

// sortedByMeta returns rs ordered by namespace, then name. Config snapshots
// are already in that order; sorting again keeps the index correct for
// snapshots built by hand.
func sortedByMeta[T proto.Message](rs []*config.Resource[T]) []*config.Resource[T] {
	out := slices.Clone(rs)
	slices.SortStableFunc(out, func(a, b *config.Resource[T]) int {
		ma, mb := a.Meta, b.Meta
		if c := strings.Compare(ma.Namespace, mb.Namespace); c != 0 {
			return c
		}
		return strings.Compare(ma.Name, mb.Name)
	})
	return out
}
