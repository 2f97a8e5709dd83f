package mesh

import (
	"slices"
	"strings"

	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/config"
)

// SubsetIndex finds the DestinationRule that governs a host for the
// clients of a namespace. It is immutable after construction.
type SubsetIndex struct {
	// byHost is what the clients of most namespaces use (Views.Default).
	byHost map[string]config.RuleSet
	// byNS holds, per client namespace, the hosts whose rules differ
	// for its clients (Views.ByNamespace): client-side rules, exportTo.
	byNS map[string]map[string]config.RuleSet
}

// newSubsetIndex picks the DestinationRule of each service host with
// config.SelectDestinationRules, as validation does: of the rules for the
// host itself and the wildcard rules that cover it, those of the host's
// own namespace, else of the root namespace rootNS, else of the namespace
// whose rule was seen first; within it the most specific host, its rules
// merged as Istio merges them. Hosts a wildcard rule covers are the
// registry's services (a wildcard's subsets become clusters of each).
func newSubsetIndex(drs []*config.DestinationRule, rootNS string, r resolver) *SubsetIndex {
	byFQDN := map[string][]*config.DestinationRule{}
	var wild []*config.DestinationRule
	for _, dr := range drs {
		if dr.Spec == nil {
			continue
		}
		fqdn := r.resolve(dr.Spec.GetHost(), dr.Namespace)
		byFQDN[fqdn] = append(byFQDN[fqdn], dr)
		if strings.HasPrefix(fqdn, "*") {
			wild = append(wild, dr)
		}
	}
	if len(wild) > 0 {
		for _, svc := range r.reg.Services() {
			if _, ok := byFQDN[svc.Hostname]; ok {
				continue
			}
			for _, dr := range wild {
				if config.DestinationRuleMatches(r.resolve(dr.Spec.GetHost(), dr.Namespace), svc.Hostname) {
					byFQDN[svc.Hostname] = nil // the wildcards are added below
					break
				}
			}
		}
	}
	idx := &SubsetIndex{byHost: make(map[string]config.RuleSet, len(byFQDN))}
	for fqdn, cands := range byFQDN {
		if len(wild) > 0 {
			cands = append(slices.Clip(cands), wild...)
		}
		v := config.DestinationRuleViews(fqdn, hostNamespace(fqdn, r), rootNS, cands, r.resolve)
		if v.Default.Rule != nil {
			idx.byHost[fqdn] = v.Default
		}
		for ns, set := range v.ByNamespace {
			if idx.byNS == nil {
				idx.byNS = map[string]map[string]config.RuleSet{}
			}
			if idx.byNS[ns] == nil {
				idx.byNS[ns] = map[string]config.RuleSet{}
			}
			idx.byNS[ns][fqdn] = set // Rule nil: no rule for this namespace's clients
		}
	}
	return idx
}

// hostNamespace is the namespace a host belongs to (config.HostNamespace):
// its registry service's namespace, else the second label of a
// cluster-local name, else "".
func hostNamespace(fqdn string, r resolver) string {
	var svcNS string
	if svc := r.reg.Service(fqdn); svc != nil {
		svcNS = svc.Namespace
	}
	return config.HostNamespace(fqdn, svcNS, r.suffix)
}

// View returns ns when the clients of namespace ns use other
// DestinationRules than most namespaces' for some host, else "": what the
// resources built from the rules are shared by.
func (i *SubsetIndex) View(ns string) string {
	if i == nil || i.byNS[ns] == nil {
		return ""
	}
	return ns
}

// RulesIn returns the DestinationRules that govern an FQDN for the
// clients of namespace ns, and what they were merged into.
func (i *SubsetIndex) RulesIn(ns, fqdn string) config.RuleSet {
	if i == nil {
		return config.RuleSet{}
	}
	if set, ok := i.byNS[ns][fqdn]; ok {
		return set
	}
	return i.byHost[fqdn]
}

// ForHostIn returns the DestinationRule for an FQDN for the clients of
// namespace ns (merged, when several apply), or nil.
func (i *SubsetIndex) ForHostIn(ns, fqdn string) *config.DestinationRule {
	return i.RulesIn(ns, fqdn).Rule
}

// SubsetsIn returns the subsets defined for an FQDN for the clients of
// namespace ns, in the DestinationRule's order. The slice is shared; do
// not modify it.
func (i *SubsetIndex) SubsetsIn(ns, fqdn string) []*networking.Subset {
	dr := i.ForHostIn(ns, fqdn)
	if dr == nil {
		return nil
	}
	return dr.Spec.GetSubsets()
}

// ForHost returns the DestinationRule for an FQDN (merged, when several
// apply) that the clients of most namespaces use, or nil.
func (i *SubsetIndex) ForHost(fqdn string) *config.DestinationRule {
	if i == nil {
		return nil
	}
	return i.byHost[fqdn].Rule
}

// RulesFor returns the DestinationRules that govern an FQDN and what they
// were merged into.
func (i *SubsetIndex) RulesFor(fqdn string) config.RuleSet {
	if i == nil {
		return config.RuleSet{}
	}
	return i.byHost[fqdn]
}

// Subsets returns the subsets defined for an FQDN, in the DestinationRule's
// order. The slice is shared; do not modify it.
func (i *SubsetIndex) Subsets(fqdn string) []*networking.Subset {
	dr := i.ForHost(fqdn)
	if dr == nil {
		return nil
	}
	return dr.Spec.GetSubsets()
}

// Subset returns the named subset of an FQDN.
func (i *SubsetIndex) Subset(fqdn, name string) (*networking.Subset, bool) {
	for _, s := range i.Subsets(fqdn) {
		if s.GetName() == name {
			return s, true
		}
	}
	return nil, false
}
