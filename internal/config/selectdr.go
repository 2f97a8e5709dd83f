package config

import (
	"cmp"
	"maps"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"weft.dev/weft/internal/registry"
)

// HostNamespace is the namespace a service host belongs to when choosing
// its DestinationRule: serviceNamespace (the namespace of the registry
// service or ServiceEntry that defines fqdn; "" when none does), else the
// namespace label of a cluster-local name (name.ns.svc.<domainSuffix>),
// else "". An empty domainSuffix means cluster.local.
func HostNamespace(fqdn, serviceNamespace, domainSuffix string) string {
	if serviceNamespace != "" {
		return serviceNamespace
	}
	if domainSuffix == "" {
		domainSuffix = registry.DefaultDomainSuffix
	}
	if base, ok := strings.CutSuffix(fqdn, ".svc."+domainSuffix); ok {
		if dot := strings.LastIndexByte(base, '.'); dot >= 0 {
			return base[dot+1:]
		}
	}
	return ""
}

// RuleSet is the DestinationRule in force for one service host and the
// rules it was made of.
type RuleSet struct {
	// Rule is what applies: the only rule for the host, or the rules of
	// one namespace merged (a new Spec; the Meta of the oldest of them).
	Rule *DestinationRule
	// From lists the rules merged into Rule, oldest first (Rule itself when
	// there is one).
	From []*DestinationRule
	// Ignored lists the rules for the host that are not used at all:
	// those of other namespaces than the one that won.
	Ignored []*DestinationRule
}

// SelectDestinationRule returns the DestinationRule in force for the
// service fqdn among drs, for the clients of namespace clientNS ("": a
// namespace with no rules of its own and named by no rule's exportTo), or
// nil when none applies. It is the only rule deciding this: the xDS
// generators (through mesh) use the subsets and policies of the rule it
// returns and nothing else, and validation accepts a subset reference only
// if that same rule defines the subset.
//
// See SelectDestinationRules for how it is chosen.
func SelectDestinationRule(fqdn, hostNamespace, rootNamespace, clientNS string, drs []*DestinationRule, resolve func(host, namespace string) string) *DestinationRule {
	return SelectDestinationRules(fqdn, hostNamespace, rootNamespace, clientNS, drs, resolve).Rule
}

// SelectDestinationRules decides which DestinationRules govern the service
// fqdn for the clients of namespace clientNS, as Istio does:
//
// resolve expands a rule's spec.host, written in the rule's namespace,
// into an FQDN. A rule applies when its resolved host is fqdn, or is a
// wildcard that matches it ("*.example.com" matches api.example.com and
// the wildcard service *.api.example.com; "*.local" and "*" match every
// cluster-local service), as DestinationRuleMatches says, and when its
// exportTo makes it visible in clientNS (no exportTo or "*": everywhere;
// "." its own namespace; else the namespaces listed; clientNS "" sees only
// rules exported everywhere). The rules that apply are grouped by
// namespace, and one namespace's group wins: clientNS's own (a
// "client-side" rule, Istio's first choice), else hostNamespace's (see
// HostNamespace), else rootNamespace's (the mesh-wide defaults, Istio's
// istio-system), else the group whose oldest rule was seen first
// (Meta.Seq, then namespace/name; Istio would apply none). Within the
// group the most specific host is used, as Istio's MostSpecificHostMatch:
// a rule of exactly fqdn, else the longest matching wildcard; the rules of
// that one host are merged in first-seen order, as Istio merges them:
// subsets are concatenated, and a subset whose name an older rule already
// defines is dropped; the oldest traffic policy wins (a rule without one
// takes the next rule's). The order of drs does not matter, a rule listed
// twice counts once, and rules with a nil Spec are skipped.
//
// RuleSet.Ignored lists the visible rules of exactly fqdn in the
// namespaces that lost; a wildcard rule that loses is a default that
// another rule overrides, not a conflict, and is not listed. (A rule
// ignored here may still be used by the clients of another namespace: see
// DestinationRuleViews.)
func SelectDestinationRules(fqdn, hostNamespace, rootNamespace, clientNS string, drs []*DestinationRule, resolve func(host, namespace string) string) RuleSet {
	return SelectDestinationRulesFor(fqdn, hostNamespace, rootNamespace, clientNS, nil, drs, resolve)
}

// SelectDestinationRulesFor is SelectDestinationRules for the sidecars of
// namespace clientNS whose labels are clientLabels. A rule with a
// workloadSelector applies only to them: sidecars of its own namespace
// whose labels include its matchLabels (nil clientLabels: none). Among the
// rules of the winning namespace for the most specific host, selected
// rules win over the rules without a selector, as in Istio; those of one
// selector (the oldest selected rule's) are merged.
func SelectDestinationRulesFor(fqdn, hostNamespace, rootNamespace, clientNS string, clientLabels map[string]string, drs []*DestinationRule, resolve func(host, namespace string) string) RuleSet {
	type group struct {
		best  string // the most specific matching host of the namespace
		rules []*DestinationRule
		exact []*DestinationRule // rules of exactly fqdn
	}
	groups := map[string]*group{}
	for _, dr := range drs {
		if dr == nil || dr.Spec == nil || !exportedTo(dr.Spec.GetExportTo(), dr.Namespace, clientNS) {
			continue
		}
		if sel := dr.Spec.GetWorkloadSelector(); sel != nil &&
			(clientLabels == nil || dr.Namespace != clientNS || !labelsInclude(clientLabels, sel.GetMatchLabels())) {
			continue
		}
		host := resolve(dr.Spec.GetHost(), dr.Namespace)
		if !DestinationRuleMatches(host, fqdn) {
			continue
		}
		g := groups[dr.Namespace]
		if g == nil {
			g = &group{}
			groups[dr.Namespace] = g
		} else if slices.Contains(g.rules, dr) || slices.Contains(g.exact, dr) {
			continue // listed twice (as the host's own and as a wildcard)
		}
		if host == fqdn {
			g.exact = append(g.exact, dr)
		}
		switch {
		case g.rules == nil || moreSpecific(host, g.best, fqdn):
			g.best, g.rules = host, []*DestinationRule{dr}
		case host == g.best:
			g.rules = append(g.rules, dr)
		}
	}
	if len(groups) == 0 {
		return RuleSet{}
	}
	for _, g := range groups {
		slices.SortFunc(g.rules, FirstSeen)
		g.rules = bySelector(g.rules)
	}
	var win string
	switch {
	case clientNS != "" && groups[clientNS] != nil:
		win = clientNS
	case hostNamespace != "" && groups[hostNamespace] != nil:
		win = hostNamespace
	case rootNamespace != "" && groups[rootNamespace] != nil:
		win = rootNamespace
	default:
		for ns, g := range groups {
			if win == "" || FirstSeen(g.rules[0], groups[win].rules[0]) < 0 {
				win = ns
			}
		}
	}
	set := RuleSet{From: groups[win].rules, Rule: mergeRules(groups[win].rules)}
	for ns, g := range groups {
		if ns != win {
			set.Ignored = append(set.Ignored, g.exact...)
		}
	}
	slices.SortFunc(set.Ignored, FirstSeen)
	return set
}

// bySelector keeps, of rules (first seen first, one host), those of the
// oldest rule's workloadSelector when some rule has one, else all of them:
// a rule for selected workloads wins over the rules without a selector,
// and rules of different selectors are not merged.
func bySelector(rules []*DestinationRule) []*DestinationRule {
	i := slices.IndexFunc(rules, func(dr *DestinationRule) bool { return dr.Spec.GetWorkloadSelector() != nil })
	if i < 0 {
		return rules
	}
	want := rules[i].Spec.GetWorkloadSelector().GetMatchLabels()
	var out []*DestinationRule
	for _, dr := range rules {
		if sel := dr.Spec.GetWorkloadSelector(); sel != nil && maps.Equal(sel.GetMatchLabels(), want) {
			out = append(out, dr)
		}
	}
	return out
}

// labelsInclude reports whether labels has every key and value of want.
func labelsInclude(labels, want map[string]string) bool {
	for k, v := range want {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// Views is what DestinationRuleViews decides for one service host.
type Views struct {
	// Default is the rule set of the clients of every namespace not in
	// ByNamespace. Its Ignored lists the rules of exactly the host that
	// no namespace's clients use.
	Default RuleSet
	// ByNamespace holds the client namespaces whose rule set differs from
	// Default (Ignored left empty): namespaces with rules of their own
	// for the host, or named by a rule's exportTo.
	ByNamespace map[string]RuleSet
}

// DestinationRuleViews is SelectDestinationRules for every client
// namespace at once: the rule set of a namespace that has no rule for
// fqdn and that no rule's exportTo names, and the namespaces that differ
// from it. Those can only be the namespaces of the rules that apply to
// fqdn and the namespaces their exportTo lists. Rules with a
// workloadSelector are left to SelectDestinationRulesFor (they depend on
// the sidecar's labels) and are never reported as ignored.
func DestinationRuleViews(fqdn, hostNamespace, rootNamespace string, drs []*DestinationRule, resolve func(host, namespace string) string) Views {
	v := Views{Default: SelectDestinationRules(fqdn, hostNamespace, rootNamespace, "", drs, resolve)}
	special := map[string]bool{}
	for _, dr := range drs {
		if dr == nil || dr.Spec == nil || !DestinationRuleMatches(resolve(dr.Spec.GetHost(), dr.Namespace), fqdn) {
			continue
		}
		special[dr.Namespace] = true
		for _, e := range dr.Spec.GetExportTo() {
			if e != "*" && e != "." && e != "~" {
				special[e] = true
			}
		}
	}
	used := map[*DestinationRule]bool{}
	for _, dr := range v.Default.From {
		used[dr] = true
	}
	for _, ns := range slices.Sorted(maps.Keys(special)) {
		set := SelectDestinationRules(fqdn, hostNamespace, rootNamespace, ns, drs, resolve)
		for _, dr := range set.From {
			used[dr] = true
		}
		if slices.Equal(set.From, v.Default.From) {
			continue
		}
		set.Ignored = nil
		if v.ByNamespace == nil {
			v.ByNamespace = map[string]RuleSet{}
		}
		v.ByNamespace[ns] = set
	}
	// The default's Ignored lists only rules exported everywhere; a rule of
	// the host that no namespace's clients use is ignored, whatever its
	// exportTo.
	v.Default.Ignored = nil
	for _, dr := range drs {
		if dr != nil && dr.Spec != nil && dr.Spec.GetWorkloadSelector() == nil && !used[dr] &&
			resolve(dr.Spec.GetHost(), dr.Namespace) == fqdn && !slices.Contains(v.Default.Ignored, dr) {
			v.Default.Ignored = append(v.Default.Ignored, dr)
		}
	}
	slices.SortFunc(v.Default.Ignored, FirstSeen)
	return v
}

// exportedTo reports whether a resource of namespace ns with exportTo is
// visible to the clients of namespace to: everywhere by default or with
// "*", "." is its own namespace, else the namespaces listed. The clients
// of no particular namespace (to "") see only what is exported
// everywhere.
func exportedTo(exportTo []string, ns, to string) bool {
	if len(exportTo) == 0 {
		return true
	}
	for _, e := range exportTo {
		if e == "*" || to != "" && (e == to || e == "." && ns == to) {
			return true
		}
	}
	return false
}

// DestinationRuleMatches reports whether a DestinationRule whose resolved
// host is ruleHost applies to the service host fqdn: the same name, or a
// wildcard rule host that covers it ("*" covers every host,
// "*.example.com" covers api.example.com, a.b.example.com and the
// wildcard *.api.example.com).
func DestinationRuleMatches(ruleHost, fqdn string) bool {
	switch {
	case ruleHost == fqdn || ruleHost == "*":
		return true
	case strings.HasPrefix(ruleHost, "*."):
		suffix := ruleHost[1:] // ".example.com"
		name := strings.TrimPrefix(fqdn, "*")
		return len(name) > len(suffix) && strings.HasSuffix(name, suffix)
	}
	return false
}

// moreSpecific reports whether the rule host a is a more specific match
// for fqdn than b: exactly fqdn beats any wildcard, a longer wildcard
// beats a shorter one.
func moreSpecific(a, b, fqdn string) bool {
	if (a == fqdn) != (b == fqdn) {
		return a == fqdn
	}
	return len(a) > len(b)
}

// FirstSeen orders resources by Meta.Seq (0, for resources not loaded by
// a store, last), then namespace/name: the order in which conflicts are
// decided, the oldest first. Use it with slices.SortFunc.
func FirstSeen[T proto.Message](a, b *Resource[T]) int {
	if (a.Seq == 0) != (b.Seq == 0) {
		if a.Seq == 0 {
			return 1
		}
		return -1
	}
	return cmp.Or(cmp.Compare(a.Seq, b.Seq), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
}

// mergeRules merges rules (oldest first) into one; see SelectDestinationRules.
func mergeRules(rules []*DestinationRule) *DestinationRule {
	if len(rules) == 1 {
		return rules[0]
	}
	first := rules[0]
	spec := proto.CloneOf(first.Spec)
	names := map[string]bool{}
	for _, s := range spec.GetSubsets() {
		names[s.GetName()] = true
	}
	for _, dr := range rules[1:] {
		for _, s := range dr.Spec.GetSubsets() {
			if !names[s.GetName()] {
				names[s.GetName()] = true
				spec.Subsets = append(spec.Subsets, s)
			}
		}
		if spec.TrafficPolicy == nil && dr.Spec.GetTrafficPolicy() != nil {
			spec.TrafficPolicy = dr.Spec.GetTrafficPolicy()
		}
	}
	merged := *first
	merged.Spec = spec
	return &merged
}

// mergeEffect is what merging did with one rule, for diagnostics.
type mergeEffect struct {
	added      []string // subsets the rule adds
	dupSubsets []int    // indexes of its subsets an older rule already defines
	dupOf      []*DestinationRule
	policyLost bool // its traffic policy is not used: an older rule's is
	policyOf   *DestinationRule
}

// mergeEffects explains, for each rule of a group after the first, what
// merging it did.
func mergeEffects(rules []*DestinationRule) map[*DestinationRule]mergeEffect {
	out := map[*DestinationRule]mergeEffect{}
	definedBy := map[string]*DestinationRule{}
	var policyFrom *DestinationRule
	for i, dr := range rules {
		var eff mergeEffect
		for j, s := range dr.Spec.GetSubsets() {
			if by, ok := definedBy[s.GetName()]; ok {
				if by != dr {
					eff.dupSubsets = append(eff.dupSubsets, j)
					eff.dupOf = append(eff.dupOf, by)
				}
				continue
			}
			definedBy[s.GetName()] = dr
			eff.added = append(eff.added, s.GetName())
		}
		if dr.Spec.GetTrafficPolicy() != nil {
			if policyFrom == nil {
				policyFrom = dr
			} else {
				eff.policyLost, eff.policyOf = true, policyFrom
			}
		}
		if i > 0 {
			out[dr] = eff
		}
	}
	return out
}
