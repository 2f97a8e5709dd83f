// Package guard is Weft's traffic-impact guard. It judges every config
// change before it is applied: a change that would send traffic that is
// served today (a route, or a weighted share of one, that ordinary
// requests reach) to a destination with no endpoints — a host no registry
// knows, a subset whose labels select nothing — is held back, and the
// version in force keeps serving. The change applies by itself once the
// destination has endpoints (the store judges it again on every load and
// every registry change), or at once when the resource carries the
// annotation AllowUnservedAnnotation. Routes are judged as sidecars use
// them (per host) and as gateway proxies do (per Gateway and bound
// VirtualService).
//
// The guard plugs into config.Store as Options.Admit. Its analysis of
// which routes ordinary traffic reaches and where it goes (Outcomes) is
// also what `weft analyze` reports on.
package guard

import (
	"fmt"
	"slices"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry"
)

// AllowUnservedAnnotation, set to "true" on a VirtualService or
// DestinationRule, applies a change of it even though it sends served
// traffic to a destination with no endpoints (the guard then warns
// instead of holding the change).
const AllowUnservedAnnotation = "weft.dev/allow-unserved"

// Guard holds back changes that would break served traffic.
type Guard struct {
	// Registry returns the registry a config snapshot yields: the static
	// registry built from its ServiceEntries and WorkloadEntries, joined
	// with every other registry source. It must be deterministic and must
	// not block for long.
	Registry func(*config.Snapshot) *registry.Snapshot
	// DomainSuffix expands short host names; "" means cluster.local.
	DomainSuffix string

	// meshes keeps the meshes used last for judging, most recently used
	// first: the one in force and the candidate (the candidate of one
	// change is the config in force at the next, so each is built once).
	// Each holds a whole config and registry: with three kept, and a
	// fourth still reachable past the slice's end, 5–6 generations of a
	// 1,000-service mesh's config and endpoints stayed alive.
	mu     sync.Mutex
	meshes []*mesh.Snapshot
}

// keptMeshes is how many meshes the Guard keeps: the one in force and
// the candidate.
const keptMeshes = 2

// meshOf is the mesh cfg makes, built once per (config, registry) pair
// while it is in force or the candidate.
func (g *Guard) meshOf(cfg *config.Snapshot) *mesh.Snapshot {
	reg := g.Registry(cfg)
	g.mu.Lock()
	defer g.mu.Unlock()
	for i, m := range g.meshes {
		if m.Config == cfg && m.Registry == reg {
			copy(g.meshes[1:i+1], g.meshes[:i]) // a rejected candidate cannot push the one in force out
			g.meshes[0] = m
			return m
		}
	}
	m := mesh.New(cfg, reg, g.DomainSuffix)
	g.meshes = append([]*mesh.Snapshot{m}, g.meshes...)
	if len(g.meshes) > keptMeshes {
		clear(g.meshes[keptMeshes:])
		g.meshes = g.meshes[:keptMeshes]
	}
	return m
}

// Admit is a config.Options.Admit: see the package comment. It compares
// the mesh the proposed config makes with the mesh in force.
func (g *Guard) Admit(proposed, inForce *config.Snapshot) []config.Finding {
	if inForce == nil || inForce.Version == 0 {
		return nil // nothing is served before the first config
	}
	now := g.meshOf(inForce)
	next := g.meshOf(proposed)
	return judge(now, next)
}

// judge lists the findings of the change from mesh now to mesh next.
func judge(now, next *mesh.Snapshot) []config.Finding {
	var out []config.Finding
	seen := map[string]bool{}
	add := func(f config.Finding) {
		k := f.Key + "|" + f.Path + "|" + string(f.Code)
		if !seen[k] {
			seen[k] = true
			out = append(out, f)
		}
	}
	// compare adds the findings of one unit of routing (a host on
	// sidecars, a VirtualService on a gateway) that ordinary requests reach
	// today (before) and after the change (after).
	compare := func(what string, before, after []Outcome) {
		if !served(before) {
			return // nothing served today: nothing to protect
		}
		for _, o := range after {
			if !o.Ordinary || o.Share == 0 || o.Endpoints > 0 || o.Direct {
				continue
			}
			if slices.ContainsFunc(before, func(b Outcome) bool {
				return b.Ordinary && b.Share > 0 && b.Endpoints == 0 && !b.Direct && b.Dest == o.Dest
			}) {
				continue // unserved before this change too: not this change's doing
			}
			for _, f := range blame(now, next, what, o) {
				add(f)
			}
		}
	}
	for _, host := range hosts(next) {
		compare("the requests to "+host, Outcomes(now, host), Outcomes(next, host))
	}
	for _, gw := range next.Config.Gateways {
		if _, translated := gw.Annotations[config.AnnotationGeneratedFrom]; translated {
			// Translated from the Gateway API: its VirtualServices are not
			// resources of the store that could be held back.
			continue
		}
		ref := gw.Namespace + "/" + gw.Name
		for _, vs := range next.Gateways.Bound(gw, gw.Namespace) {
			was := boundBefore(now, gw, vs)
			if was == nil {
				continue // not served at this gateway today
			}
			what := fmt.Sprintf("the requests to %s at gateway %s", strings.Join(vs.Spec.GetHosts(), ", "), ref)
			compare(what, GatewayOutcomes(now, ref, was), GatewayOutcomes(next, ref, vs))
		}
	}
	return out
}

// boundBefore returns the version in force in mesh now of VirtualService
// vs, when it was bound to gateway gw (as proposed) then too; else nil.
func boundBefore(now *mesh.Snapshot, gw *config.Gateway, vs *config.VirtualService) *config.VirtualService {
	for _, g := range now.Config.Gateways {
		if g.Key() != gw.Key() {
			continue
		}
		for _, was := range now.Gateways.Bound(g, g.Namespace) {
			if was.Key() == vs.Key() {
				return was
			}
		}
	}
	return nil
}

// hosts lists every host a mesh routes: its services and the hosts of its
// VirtualServices, sorted.
func hosts(m *mesh.Snapshot) []string {
	set := map[string]bool{}
	for _, s := range m.Registry.Services() {
		set[s.Hostname] = true
	}
	for _, h := range m.Routes.Hosts() {
		set[h] = true
	}
	out := make([]string, 0, len(set))
	for h := range set {
		out = append(out, h)
	}
	slices.Sort(out)
	return out
}

// served reports whether ordinary requests to a host get an answer today:
// some route they reach has a destination with endpoints, or answers by
// itself (redirect, direct response).
func served(os []Outcome) bool {
	return slices.ContainsFunc(os, func(o Outcome) bool {
		return o.Ordinary && o.Share > 0 && (o.Endpoints > 0 || o.Direct)
	})
}

// Destination is where a route sends requests.
type Destination struct {
	Host   string // FQDN
	Subset string // "" for the whole service
	Port   uint32 // the destination's port.number; 0 when it names none
}

func (d Destination) String() string {
	s := d.Host
	if d.Port != 0 {
		s = fmt.Sprintf("%s port %d", d.Host, d.Port)
	}
	if d.Subset == "" {
		return s
	}
	return fmt.Sprintf("subset %s of %s", d.Subset, s)
}

// Outcome is one destination of one route of a host, as ordinary traffic
// sees it.
type Outcome struct {
	// VS is the VirtualService of the route; nil for the default route of
	// a host without one.
	VS *config.VirtualService
	// Rule is the index of the route in spec.http; Route the index of the
	// destination in its route list; both -1 for the default route.
	Rule, Route int
	// Ordinary is set when requests without special headers reach the
	// route: it has no match, or a match that asks for no header, query
	// parameter or source label. A route behind a header match only takes
	// the requests that opt in.
	Ordinary bool
	// CatchAll is set for a route with no match: the routes after it are
	// never reached.
	CatchAll bool
	Dest     Destination
	// Share is the destination's share of the route's requests, 0 to 1.
	Share float64
	// Endpoints counts the healthy endpoints of the destination.
	Endpoints int
	// Direct is set for a route that answers by itself (redirect, direct
	// response); Dest is then empty.
	Direct bool
}

// Path is the field path of the outcome's destination in its VirtualService.
func (o Outcome) Path() string {
	switch {
	case o.VS == nil:
		return ""
	case o.Direct:
		return fmt.Sprintf("spec.http[%d]", o.Rule)
	}
	return fmt.Sprintf("spec.http[%d].route[%d].destination", o.Rule, o.Route)
}

// Outcomes lists, for one host of mesh m, every destination of every HTTP
// route of its VirtualService up to and including the first catch-all,
// with its share and its endpoints; for a host without a VirtualService,
// the default route to the whole service.
func Outcomes(m *mesh.Snapshot, host string) []Outcome {
	vss := m.Routes.ForHost(host)
	if len(vss) == 0 {
		return []Outcome{{Rule: -1, Route: -1, Ordinary: true, CatchAll: true, Dest: Destination{Host: host},
			Share: 1, Endpoints: Endpoints(m, Destination{Host: host})}}
	}
	vs := vss[0]
	var out []Outcome
	for i, r := range vs.Spec.GetHttp() {
		if !appliesToSidecars(r) {
			continue
		}
		ordinary, catchAll := ordinary(r, config.AppliesToMesh)
		out = routeOutcomes(m, vs, i, ordinary, catchAll, out)
		if catchAll {
			break
		}
	}
	return out
}

// GatewayOutcomes is Outcomes for VirtualService vs bound to the gateway
// "<namespace>/<name>" gw: every destination of every HTTP route of vs
// used on that gateway (a match without gateways applies to each of vs's
// gateways, one with gateways to those it names), up to and including
// the first catch-all.
func GatewayOutcomes(m *mesh.Snapshot, gw string, vs *config.VirtualService) []Outcome {
	onGateway := func(gateways []string) bool {
		if len(gateways) == 0 {
			return true
		}
		return slices.ContainsFunc(gateways, func(g string) bool { return config.GatewayRef(g, vs.Namespace) == gw })
	}
	var out []Outcome
	for i, r := range vs.Spec.GetHttp() {
		if len(r.GetMatch()) > 0 && !slices.ContainsFunc(r.GetMatch(), func(mr *networking.HTTPMatchRequest) bool {
			return onGateway(mr.GetGateways())
		}) {
			continue
		}
		ordinary, catchAll := ordinary(r, onGateway)
		out = routeOutcomes(m, vs, i, ordinary, catchAll, out)
		if catchAll {
			break
		}
	}
	return out
}

// routeOutcomes appends the outcomes of route i of vs to out.
func routeOutcomes(m *mesh.Snapshot, vs *config.VirtualService, i int, ordinary, catchAll bool, out []Outcome) []Outcome {
	r := vs.Spec.GetHttp()[i]
	if r.GetRedirect() != nil || r.GetDirectResponse() != nil {
		out = append(out, Outcome{VS: vs, Rule: i, Route: -1, Ordinary: ordinary, CatchAll: catchAll, Share: 1, Direct: true})
	}
	weights := effectiveWeights(r.GetRoute())
	for j, d := range r.GetRoute() {
		dest := Destination{Host: m.ResolveHost(d.GetDestination().GetHost(), vs.Namespace), Subset: d.GetDestination().GetSubset(),
			Port: d.GetDestination().GetPort().GetNumber()}
		out = append(out, Outcome{VS: vs, Rule: i, Route: j, Ordinary: ordinary, CatchAll: catchAll,
			Dest: dest, Share: weights[j], Endpoints: Endpoints(m, dest)})
	}
	return out
}

// appliesToSidecars reports whether a route is used on sidecars: at least
// one of its matches (or the route, with none) is not bound to gateways
// only.
func appliesToSidecars(r *networking.HTTPRoute) bool {
	if len(r.GetMatch()) == 0 {
		return true
	}
	return slices.ContainsFunc(r.GetMatch(), func(m *networking.HTTPMatchRequest) bool {
		return config.AppliesToMesh(m.GetGateways())
	})
}

// ordinary reports whether requests without special headers can reach a
// route where applies says a match's gateways apply, and whether it
// catches everything there.
func ordinary(r *networking.HTTPRoute, applies func(gateways []string) bool) (ordinary, catchAll bool) {
	if len(r.GetMatch()) == 0 {
		return true, true
	}
	for _, m := range r.GetMatch() {
		if len(m.GetHeaders()) == 0 && len(m.GetQueryParams()) == 0 && len(m.GetWithoutHeaders()) == 0 &&
			len(m.GetSourceLabels()) == 0 && m.GetSourceNamespace() == "" && applies(m.GetGateways()) {
			ordinary = true
			if isEmptyMatch(m) {
				catchAll = true
			}
		}
	}
	return ordinary, catchAll
}

// isEmptyMatch reports whether a match accepts every request (a bare
// prefix "/" counts, as it matches every path).
func isEmptyMatch(m *networking.HTTPMatchRequest) bool {
	c := proto.CloneOf(m)
	c.Name = ""
	if p, ok := c.GetUri().GetMatchType().(*networking.StringMatch_Prefix); ok && p.Prefix == "/" {
		c.Uri = nil
	}
	return proto.Size(c) == 0
}

// effectiveWeights turns route weights into shares as the generators do:
// a zero weight gets nothing unless every weight is zero (then they share
// equally).
func effectiveWeights(route []*networking.HTTPRouteDestination) []float64 {
	out := make([]float64, len(route))
	var total float64
	for _, d := range route {
		total += float64(max(d.GetWeight(), 0))
	}
	for i, d := range route {
		switch {
		case total == 0:
			out[i] = 1 / float64(len(route))
		default:
			out[i] = float64(max(d.GetWeight(), 0)) / total
		}
	}
	return out
}

// Endpoints counts the healthy endpoints of a destination in m: those of
// its service whose labels include its subset's labels (a subset no rule
// defines has none).
func Endpoints(m *mesh.Snapshot, d Destination) int {
	if svc := m.Registry.Service(d.Host); svc != nil && d.Port != 0 {
		if _, ok := svc.Port(d.Port); !ok {
			return 0 // no such cluster: every request gets 503 (NC)
		}
	}
	var labels map[string]string
	if d.Subset != "" {
		s, ok := m.Subsets.Subset(d.Host, d.Subset)
		if !ok {
			return 0
		}
		labels = s.GetLabels()
	}
	n := 0
	for _, ep := range m.Registry.Endpoints(d.Host, 0) {
		if ep.Health != registry.Healthy {
			continue
		}
		if registry.HasLabels(ep.Labels, labels) {
			n++
		}
	}
	return n
}

// blame names the changed resources that make outcome o of what ("the
// requests to <host>", or at a gateway) unserved
// and holds them: the VirtualService routing the host, if it changed;
// else the changed DestinationRules that define the subset. When neither
// changed (endpoints left, a ServiceEntry or WorkloadEntry changed), it
// warns on the VirtualService instead: registries change underneath the
// config, and the guard does not hold them.
func blame(now, next *mesh.Snapshot, what string, o Outcome) []config.Finding {
	share := Percent(o.Share)
	reach := fmt.Sprintf("%s that reach %s", what, ruleName(o))
	why := whyNoEndpoints(next, o.Dest)
	const applied = "the version in force keeps serving; this change applies by itself once the destination has endpoints, or at once with the annotation " + AllowUnservedAnnotation + `: "true"`

	if o.VS != nil && changed(now.Config.VirtualServices, o.VS) {
		msg := fmt.Sprintf("held: this change would send %s of %s to %s, which has no endpoints (%s); %s", share, reach, o.Dest, why, applied)
		return []config.Finding{hold(o.VS.Meta, o.VS.Annotations, o.Path(), msg, fmt.Sprintf(
			"%s of %s go to %s, which has no endpoints (%s): applied anyway, as %s asks; these requests fail with 503",
			share, reach, o.Dest, why, AllowUnservedAnnotation))}
	}
	var out []config.Finding
	if o.Dest.Subset != "" {
		for _, dr := range next.Subsets.RulesFor(o.Dest.Host).From {
			if !changed(now.Config.DestinationRules, dr) {
				continue
			}
			path := "spec.subsets"
			for k, s := range dr.Spec.GetSubsets() {
				if s.GetName() == o.Dest.Subset {
					path = fmt.Sprintf("spec.subsets[%d].labels", k)
				}
			}
			msg := fmt.Sprintf("held: with this change %s selects no endpoint (%s), and %s of %s go to it; %s", o.Dest, why, share, reach, applied)
			out = append(out, hold(dr.Meta, dr.Annotations, path, msg, fmt.Sprintf(
				"%s selects no endpoint (%s), and %s of %s go to it: applied anyway, as %s asks; these requests fail with 503",
				o.Dest, why, share, reach, AllowUnservedAnnotation)))
		}
	}
	if len(out) == 0 && o.VS != nil {
		out = append(out, config.Finding{
			Key: o.VS.Key(), Severity: config.SeverityWarning, Code: config.CodeUnservedTraffic, Path: o.Path(),
			Message: fmt.Sprintf("%s of %s go to %s, which has no endpoints any more (%s); they fail with 503 until it has", share, reach, o.Dest, why),
		})
	}
	return out
}

// hold is a finding that holds the resource back, or, when its
// annotations ask for it, one that only warns.
func hold(m config.Meta, annotations map[string]string, path, heldMsg, overrideMsg string) config.Finding {
	if strings.EqualFold(annotations[AllowUnservedAnnotation], "true") {
		return config.Finding{Key: m.Key(), Severity: config.SeverityWarning, Code: config.CodeGuardOverridden, Path: path, Message: overrideMsg}
	}
	return config.Finding{Key: m.Key(), Hold: true, Severity: config.SeverityError, Code: config.CodeTrafficHeld, Path: path, Message: heldMsg}
}

// changed reports whether resource r (of the proposed config) is new or
// different from its version in list (the config in force).
func changed[T proto.Message](list []*config.Resource[T], r *config.Resource[T]) bool {
	for _, old := range list {
		if old.Key() == r.Key() {
			return !proto.Equal(old.Spec, r.Spec)
		}
	}
	return true
}

// whyNoEndpoints explains why a destination has no endpoints.
func whyNoEndpoints(m *mesh.Snapshot, d Destination) string {
	if m.Registry.Service(d.Host) == nil {
		return "no registry knows the host " + d.Host
	}
	if svc := m.Registry.Service(d.Host); d.Port != 0 {
		if _, ok := svc.Port(d.Port); !ok {
			var ports []string
			for _, p := range svc.Ports {
				ports = append(ports, fmt.Sprint(p.Number))
			}
			return fmt.Sprintf("%s has no port %d (its ports: %s)", d.Host, d.Port, strings.Join(ports, ", "))
		}
	}
	all := len(m.Registry.Endpoints(d.Host, 0))
	if d.Subset == "" {
		return fmt.Sprintf("%s has no healthy endpoint", d.Host)
	}
	s, ok := m.Subsets.Subset(d.Host, d.Subset)
	if !ok {
		return fmt.Sprintf("no DestinationRule defines subset %s", d.Subset)
	}
	return fmt.Sprintf("none of the %d endpoints of %s has the labels %s", all, d.Host, registry.LabelString(s.GetLabels()))
}

// ruleName names the route an outcome belongs to.
func ruleName(o Outcome) string {
	if o.VS == nil {
		return "its default route"
	}
	r := o.VS.Spec.GetHttp()[o.Rule]
	name := fmt.Sprintf("VirtualService %s/%s spec.http[%d]", o.VS.Namespace, o.VS.Name, o.Rule)
	if r.GetName() != "" {
		name += fmt.Sprintf(" (%q)", r.GetName())
	}
	if o.CatchAll {
		name += ", its catch-all route"
	}
	return name
}

// Percent renders a share (0 to 1) as a percentage: "10%", "33.3%".
func Percent(f float64) string {
	p := f * 100
	if p == float64(int(p)) {
		return fmt.Sprintf("%d%%", int(p))
	}
	return fmt.Sprintf("%.1f%%", p)
}
