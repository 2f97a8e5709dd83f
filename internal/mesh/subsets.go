package mesh

import (
	"slices"
	"strings"
	"sync"

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

	// For the rules with a workloadSelector, which depend on a sidecar's
	// labels and are chosen when a sidecar asks (Rules): selectors holds
	// them by namespace; selHosts, for each host one of them applies to,
	// its namespace and candidate rules; resolved, the FQDN of each
	// rule's host (no registry snapshot is kept: the index outlives it).
	selectors map[string][]*config.DestinationRule
	selHosts  map[string]selHost
	resolved  map[[2]string]string
	rootNS    string
	memo      sync.Map // selMemoKey → config.RuleSet
}

type selHost struct {
	hostNS string
	cands  []*config.DestinationRule
}

type selMemoKey struct{ view, fqdn string }

// DRView is which DestinationRules a sidecar's outbound clusters, load
// assignments and routes are built from: those of its namespace, and of
// its labels where a rule with a workloadSelector selects it
// (SubsetIndex.ViewFor). Key is what resources built from them are
// shared by: "" for the view of most namespaces.
type DRView struct {
	Key    string
	ns     string
	labels map[string]string // nil unless a rule's workloadSelector selects the sidecar
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
	idx := &SubsetIndex{byHost: make(map[string]config.RuleSet, len(byFQDN)), rootNS: rootNS}
	var selectors []*config.DestinationRule
	for _, dr := range drs {
		if dr.Spec != nil && dr.Spec.GetWorkloadSelector() != nil {
			selectors = append(selectors, dr)
		}
	}
	if len(selectors) > 0 {
		idx.selectors = map[string][]*config.DestinationRule{}
		idx.selHosts = map[string]selHost{}
		idx.resolved = map[[2]string]string{}
		for _, dr := range drs {
			if dr.Spec != nil {
				idx.resolved[[2]string{dr.Spec.GetHost(), dr.Namespace}] = r.resolve(dr.Spec.GetHost(), dr.Namespace)
			}
		}
		for _, dr := range selectors {
			idx.selectors[dr.Namespace] = append(idx.selectors[dr.Namespace], dr)
		}
	}
	for fqdn, cands := range byFQDN {
		if len(wild) > 0 {
			cands = append(slices.Clip(cands), wild...)
		}
		for _, dr := range selectors {
			if config.DestinationRuleMatches(r.resolve(dr.Spec.GetHost(), dr.Namespace), fqdn) {
				idx.selHosts[fqdn] = selHost{hostNS: hostNamespace(fqdn, r), cands: cands}
				break
			}
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

// ViewFor returns the view of a sidecar of namespace ns with these
// labels (outbound; inbound clusters take ViewFor(ns, nil), as Istio
// honours a rule's workloadSelector outbound only).
func (i *SubsetIndex) ViewFor(ns string, labels map[string]string) DRView {
	v := DRView{Key: i.View(ns), ns: ns}
	if i == nil || labels == nil {
		return v
	}
	var keys []string
	for _, dr := range i.selectors[ns] {
		if selects(dr.Spec.GetWorkloadSelector().GetMatchLabels(), labels) {
			keys = append(keys, dr.Key())
		}
	}
	if len(keys) > 0 {
		v.labels = labels
		v.Key = ns + "\x00" + strings.Join(keys, "\x00")
	}
	return v
}

// Rules returns the DestinationRules that govern an FQDN for a view,
// and what they were merged into.
func (i *SubsetIndex) Rules(v DRView, fqdn string) config.RuleSet {
	if i == nil {
		return config.RuleSet{}
	}
	if v.labels != nil {
		if sh, ok := i.selHosts[fqdn]; ok {
			k := selMemoKey{v.Key, fqdn}
			if set, ok := i.memo.Load(k); ok {
				return set.(config.RuleSet)
			}
			set := config.SelectDestinationRulesFor(fqdn, sh.hostNS, i.rootNS, v.ns, v.labels, sh.cands, i.resolve)
			set.Ignored = nil
			i.memo.Store(k, set)
			return set
		}
	}
	return i.RulesIn(v.ns, fqdn)
}

// SubsetsOf returns the subsets defined for an FQDN in a view, in the
// DestinationRule's order. The slice is shared; do not modify it.
func (i *SubsetIndex) SubsetsOf(v DRView, fqdn string) []*networking.Subset {
	dr := i.Rules(v, fqdn).Rule
	if dr == nil {
		return nil
	}
	return dr.Spec.GetSubsets()
}

func (i *SubsetIndex) resolve(host, ns string) string {
	if h, ok := i.resolved[[2]string{host, ns}]; ok {
		return h
	}
	return host
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
