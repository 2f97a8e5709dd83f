package mesh

import (
	"slices"
	"strings"

	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/config"
)

// SubsetIndex finds the DestinationRule that governs a host. It is
// immutable after construction.
type SubsetIndex struct {
	byHost map[string]config.RuleSet
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
		if set := config.SelectDestinationRules(fqdn, hostNamespace(fqdn, r), rootNS, cands, r.resolve); set.Rule != nil {
			idx.byHost[fqdn] = set
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

// ForHost returns the DestinationRule for an FQDN (merged, when several
// apply), or nil.
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
