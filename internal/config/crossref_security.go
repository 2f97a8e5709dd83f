package config

import (
	"fmt"
	"slices"

	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"

	"weft.dev/weft/internal/registry"
)

// knownWorkload is a workload the config declares, for conflict reports:
// a WorkloadEntry, or an inline endpoint of a ServiceEntry.
type knownWorkload struct {
	name, namespace string
	labels          map[string]string
}

// workloads lists the candidate WorkloadEntries and ServiceEntry inline
// endpoints, sorted by namespace and name.
func (c *crossChecker) workloads() []knownWorkload {
	var out []knownWorkload
	for _, k := range c.keys(KindWorkloadEntry) {
		cand := c.cands[k]
		out = append(out, knownWorkload{cand.meta.Name, cand.meta.Namespace, cand.spec.(*networking.WorkloadEntry).GetLabels()})
	}
	for _, k := range c.keys(KindServiceEntry) {
		cand := c.cands[k]
		for i, ep := range cand.spec.(*networking.ServiceEntry).GetEndpoints() {
			name := fmt.Sprintf("%s endpoint %d (%s)", cand.meta.Name, i, ep.GetAddress())
			out = append(out, knownWorkload{name, cand.meta.Namespace, ep.GetLabels()})
		}
	}
	return out
}

// reportPeerAuthenticationConflicts reports, as Istio resolves them
// (ComposePeerAuthentication), PeerAuthentications that are not used:
// every policy without a selector but the oldest of its namespace (the
// root namespace's is the mesh-wide one); a policy with a selector that
// loses to an older one of its namespace for a known workload, or that
// has the same selector as an older one; and (a warning) a policy with a
// selector in the root namespace, which Istio ignores for sidecars.
func (c *crossChecker) reportPeerAuthenticationConflicts() {
	rootNS := c.rootNS
	if rootNS == "" {
		rootNS = DefaultRootNamespace
	}
	var pas []*PeerAuthentication
	for _, k := range c.keys(KindPeerAuthentication) {
		cand := c.cands[k]
		pas = append(pas, &PeerAuthentication{Meta: cand.meta, Spec: cand.spec.(*security.PeerAuthentication), Pos: cand.pos})
	}
	slices.SortFunc(pas, FirstSeen)
	wide := map[string]*PeerAuthentication{}       // namespace -> its namespace-wide policy
	bySelector := map[string]*PeerAuthentication{} // namespace + selector -> first policy with it
	var selected []*PeerAuthentication
	for _, pa := range pas {
		sel := pa.Spec.GetSelector()
		switch {
		case !HasSelector(sel):
			scope := "namespace " + pa.Namespace
			if pa.Namespace == rootNS {
				scope = "the mesh (root namespace " + rootNS + ")"
			}
			if first := wide[pa.Namespace]; first != nil {
				c.report(SeverityError, CodePeerAuthnConflict, pa.Meta, pa.Pos, "spec", fmt.Sprintf(
					"%s already sets mutual TLS for %s and was there first; this PeerAuthentication is not used (keep one policy without a selector per namespace)",
					where(first.Meta), scope))
				continue
			}
			wide[pa.Namespace] = pa
		case pa.Namespace == rootNS:
			c.report(SeverityWarning, CodeInvalidValue, pa.Meta, pa.Pos, "spec.selector", fmt.Sprintf(
				"a PeerAuthentication with a selector in the root namespace %s applies to no workload (Istio ignores it for sidecars); put it in the workloads' namespace, or remove the selector to make it mesh-wide",
				rootNS))
		default:
			key := pa.Namespace + "\x00" + registry.LabelString(sel.GetMatchLabels())
			if first := bySelector[key]; first != nil {
				c.report(SeverityError, CodePeerAuthnConflict, pa.Meta, pa.Pos, "spec.selector", fmt.Sprintf(
					"%s has the same selector and was there first; this PeerAuthentication is not used for any workload",
					where(first.Meta)))
				continue
			}
			bySelector[key] = pa
			selected = append(selected, pa)
		}
	}
	// Different selectors that select one known workload: the oldest wins.
	reported := map[string]bool{}
	for _, w := range c.workloads() {
		var first *PeerAuthentication
		for _, pa := range selected {
			if pa.Namespace != w.namespace || !Selects(pa.Spec.GetSelector(), w.labels) {
				continue
			}
			if first == nil {
				first = pa
				continue
			}
			if key := pa.Key() + "\x00" + first.Key(); !reported[key] {
				reported[key] = true
				c.report(SeverityError, CodePeerAuthnConflict, pa.Meta, pa.Pos, "spec.selector", fmt.Sprintf(
					"workload %s/%s (labels %s) is also selected by %s, which was there first and sets its mutual TLS; this PeerAuthentication is not used for it (make the selectors disjoint)",
					w.namespace, w.name, registry.LabelString(w.labels), where(first.Meta)))
			}
		}
	}
}
