package mesh

import (
	"maps"
	"slices"
	"strings"
	"sync"

	"weft.dev/weft/internal/config"
)

// GatewayMesh is the reserved gateway name meaning "every sidecar".
const GatewayMesh = config.GatewayMesh

// RouteIndex finds the VirtualServices that apply to a host on sidecars.
// It is immutable after construction (its per-namespace views are built
// once, on first use).
//
// exportTo decides which VirtualServices a sidecar of namespace ns may
// use, as in Istio's virtualServiceIndex: those its own namespace keeps
// to itself or exports to ns explicitly ("private"), then those from
// other namespaces exported to ns by name, then the public ones (no
// exportTo, or "*"); a host goes to the first of these groups that has a
// VirtualService for it, so a namespace can override the mesh's route
// for its own clients ("consumer override").
type RouteIndex struct {
	byHost map[string][]*config.VirtualService // the mesh-wide view: public first, then restricted
	public map[string][]*config.VirtualService // the view of a namespace no restricted VirtualService reaches

	r          resolver
	ordered    []*config.VirtualService // mesh VirtualServices, first seen first
	restricted map[string]bool          // namespaces some restricted VirtualService is visible in
	scopedHost map[string]bool          // FQDNs (or wildcard patterns) a restricted VirtualService names
	views      sync.Map                 // namespace → map[string][]*config.VirtualService
}

// newRouteIndex gives each host the VirtualService that routes it on
// sidecars (no gateways, or "mesh" among them), as Istio does: one per
// host. A VirtualService naming the host exactly wins over one whose
// wildcard host ("*.example.com") covers it, a more specific wildcard over
// a broader one, and among equals the one seen first (config.FirstSeen),
// so adding a VirtualService never takes a host over from the one in
// force. Config validation reports the losers.
func newRouteIndex(vss []*config.VirtualService, r resolver) *RouteIndex {
	ordered := make([]*config.VirtualService, 0, len(vss))
	for _, vs := range vss {
		if vs.Spec != nil && appliesToMesh(vs.Spec.GetGateways()) {
			ordered = append(ordered, vs)
		}
	}
	slices.SortFunc(ordered, config.FirstSeen)
	idx := &RouteIndex{r: r, ordered: ordered, restricted: map[string]bool{}, scopedHost: map[string]bool{}}
	var public []*config.VirtualService
	for _, vs := range ordered {
		ex := vs.Spec.GetExportTo()
		if isPublic(ex) {
			public = append(public, vs)
			continue
		}
		for _, e := range ex {
			if e == "." {
				e = vs.Namespace
			}
			idx.restricted[e] = true
		}
		for _, h := range vs.Spec.GetHosts() {
			idx.scopedHost[r.resolve(h, vs.Namespace)] = true
		}
	}
	idx.public = pickPerHost(public, r)
	idx.byHost = idx.public
	if len(public) < len(ordered) {
		// The mesh-wide view: the public choice, and for hosts only
		// restricted VirtualServices route, theirs.
		idx.byHost = maps.Clone(idx.public)
		var restricted []*config.VirtualService
		for _, vs := range ordered {
			if !isPublic(vs.Spec.GetExportTo()) {
				restricted = append(restricted, vs)
			}
		}
		for h, vss := range pickPerHost(restricted, r) {
			if _, ok := idx.byHost[h]; !ok {
				idx.byHost[h] = vss
			}
		}
	}
	return idx
}

// isPublic reports whether exportTo makes a VirtualService visible in
// every namespace (none given, or "*").
func isPublic(exportTo []string) bool {
	return len(exportTo) == 0 || slices.Contains(exportTo, "*")
}

// pickPerHost applies the one-VirtualService-per-host rule to vss (mesh
// VirtualServices, first seen first).
func pickPerHost(vss []*config.VirtualService, r resolver) map[string][]*config.VirtualService {
	byHost := map[string][]*config.VirtualService{}
	exact := map[string]bool{}
	type wildcard struct {
		pattern string
		vs      *config.VirtualService
	}
	var wilds []wildcard
	for _, vs := range vss {
		for _, h := range vs.Spec.GetHosts() {
			fqdn := r.resolve(h, vs.Namespace)
			if strings.HasPrefix(fqdn, "*") {
				wilds = append(wilds, wildcard{fqdn, vs})
				continue
			}
			if !exact[fqdn] {
				exact[fqdn] = true
				byHost[fqdn] = []*config.VirtualService{vs}
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
				byHost[svc.Hostname] = []*config.VirtualService{w.vs}
				break
			}
		}
	}
	return byHost
}

// ForHost returns the VirtualService that routes an FQDN on sidecars in
// the mesh-wide view, whatever its exportTo (what status, analysis and
// the config guard look at), as a slice of at most one. The slice is
// shared; do not modify it.
func (i *RouteIndex) ForHost(fqdn string) []*config.VirtualService {
	if i == nil {
		return nil
	}
	return i.byHost[fqdn]
}

// ForHostIn returns the VirtualService that routes an FQDN for the
// sidecars of namespace ns, as exportTo lets them see it. The slice is
// shared; do not modify it.
func (i *RouteIndex) ForHostIn(fqdn, ns string) []*config.VirtualService {
	if i == nil {
		return nil
	}
	return i.view(ns)[fqdn]
}

// DependsOnNamespace reports whether the VirtualService routing fqdn can
// differ between namespaces (a VirtualService with a restricted exportTo
// names it or a pattern covering it): what is built from ForHostIn for
// one namespace may then not be reused for another.
func (i *RouteIndex) DependsOnNamespace(fqdn string) bool {
	if i == nil || len(i.scopedHost) == 0 {
		return false
	}
	if i.scopedHost[fqdn] {
		return true
	}
	for h := range i.scopedHost {
		if strings.HasPrefix(h, "*") && hostMatchesWildcard(fqdn, h) {
			return true
		}
	}
	return false
}

// view is the per-host choice for the sidecars of ns.
func (i *RouteIndex) view(ns string) map[string][]*config.VirtualService {
	if !i.restricted[ns] {
		return i.public
	}
	if v, ok := i.views.Load(ns); ok {
		return v.(map[string][]*config.VirtualService)
	}
	var private, exported, public []*config.VirtualService
	for _, vs := range i.ordered {
		ex := vs.Spec.GetExportTo()
		switch {
		case isPublic(ex):
			public = append(public, vs)
		case vs.Namespace == ns && (slices.Contains(ex, ".") || slices.Contains(ex, ns)):
			private = append(private, vs)
		case slices.Contains(ex, ns):
			exported = append(exported, vs)
		}
	}
	v := pickPerHost(private, i.r)
	for _, group := range [][]*config.VirtualService{exported, public} {
		for h, vss := range pickPerHost(group, i.r) {
			if _, taken := v[h]; !taken {
				v[h] = vss
			}
		}
	}
	actual, _ := i.views.LoadOrStore(ns, v)
	return actual.(map[string][]*config.VirtualService)
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
