package config

import (
	"fmt"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/registry"
)

// destRef is one destination a VirtualService sends traffic to; path
// locates the Destination message ("spec.http[0].route[1].destination").
type destRef struct {
	path string
	dest *networking.Destination
}

// destinations lists every destination of vs in document order: HTTP
// routes, mirrors, TCP and TLS routes.
func destinations(vs *networking.VirtualService) []destRef {
	var out []destRef
	for i, r := range vs.GetHttp() {
		for j, d := range r.GetRoute() {
			out = append(out, destRef{fmt.Sprintf("spec.http[%d].route[%d].destination", i, j), d.GetDestination()})
		}
		if r.GetMirror() != nil {
			out = append(out, destRef{fmt.Sprintf("spec.http[%d].mirror", i), r.GetMirror()})
		}
		for j, m := range r.GetMirrors() {
			out = append(out, destRef{fmt.Sprintf("spec.http[%d].mirrors[%d].destination", i, j), m.GetDestination()})
		}
	}
	for i, r := range vs.GetTcp() {
		for j, d := range r.GetRoute() {
			out = append(out, destRef{fmt.Sprintf("spec.tcp[%d].route[%d].destination", i, j), d.GetDestination()})
		}
	}
	for i, r := range vs.GetTls() {
		for j, d := range r.GetRoute() {
			out = append(out, destRef{fmt.Sprintf("spec.tls[%d].route[%d].destination", i, j), d.GetDestination()})
		}
	}
	return out
}

// hostMatches reports whether pattern (an FQDN, "*" or "*.suffix") covers fqdn.
func hostMatches(pattern, fqdn string) bool {
	switch {
	case pattern == fqdn || pattern == "*":
		return true
	case strings.HasPrefix(pattern, "*."):
		return strings.HasSuffix(fqdn, pattern[1:])
	}
	return false
}

// crossChecker runs the checks that need the whole candidate set.
type crossChecker struct {
	suffix    string
	knownHost func(string) bool // from Options; may be nil
	seHosts   []string          // resolved ServiceEntry hosts of the candidate set
	seNS      map[string]string // resolved ServiceEntry host -> namespace of the first ServiceEntry defining it
	inForce   map[string]*entry // before this load
	cands     map[string]*candidate
	rejected  []*candidate // VirtualServices rejected for subset references, in order
	diags     []Diagnostic
}

func (c *crossChecker) known(fqdn string) bool {
	for _, h := range c.seHosts {
		if hostMatches(h, fqdn) {
			return true
		}
	}
	return c.knownHost != nil && c.knownHost(fqdn)
}

func (c *crossChecker) resolve(host, ns string) string {
	return registry.ResolveHost(host, ns, c.suffix, c.known)
}

func (c *crossChecker) keys(kind Kind) []string {
	var keys []string
	for k, cand := range c.cands {
		if cand.meta.Kind == kind {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys
}

// collectServiceEntryHosts resolves the hosts of every candidate
// ServiceEntry and records which namespace each host belongs to: that of
// the first ServiceEntry by namespace/name, as the static registry does.
func (c *crossChecker) collectServiceEntryHosts() {
	c.seHosts, c.seNS = nil, map[string]string{}
	var ses []*ServiceEntry
	for _, k := range c.keys(KindServiceEntry) {
		cand := c.cands[k]
		ses = append(ses, &ServiceEntry{Meta: cand.meta, Spec: cand.spec.(*networking.ServiceEntry)})
	}
	sortResources(ses)
	for _, se := range ses {
		for _, h := range se.Spec.GetHosts() {
			fqdn := registry.ResolveHost(h, se.Namespace, c.suffix, c.knownHost)
			c.seHosts = append(c.seHosts, fqdn)
			if _, ok := c.seNS[fqdn]; !ok {
				c.seNS[fqdn] = se.Namespace
			}
		}
	}
}

// candidateDRs returns the candidate DestinationRules, by namespace/name.
func (c *crossChecker) candidateDRs() []*DestinationRule {
	var drs []*DestinationRule
	for _, k := range c.keys(KindDestinationRule) {
		drs = append(drs, asDestinationRule(&c.cands[k].entry))
	}
	sortResources(drs)
	return drs
}

// inForceDRs returns the DestinationRules in force before this load.
func (c *crossChecker) inForceDRs() []*DestinationRule {
	var drs []*DestinationRule
	for _, e := range c.inForce {
		if e.meta.Kind == KindDestinationRule {
			drs = append(drs, asDestinationRule(e))
		}
	}
	sortResources(drs)
	return drs
}

func asDestinationRule(e *entry) *DestinationRule {
	return &DestinationRule{Meta: e.meta, Spec: e.spec.(*networking.DestinationRule)}
}

// selectDR is SelectDestinationRule for fqdn among drs, with the host
// namespaces of the candidate ServiceEntries: the rule mesh will use.
func (c *crossChecker) selectDR(fqdn string, drs []*DestinationRule) *DestinationRule {
	return SelectDestinationRule(fqdn, HostNamespace(fqdn, c.seNS[fqdn], c.suffix), drs, c.resolve)
}

// definesSubset reports whether dr (which may be nil) has a subset named name.
func definesSubset(dr *DestinationRule, name string) bool {
	if dr == nil {
		return false
	}
	for _, s := range dr.Spec.GetSubsets() {
		if s.GetName() == name {
			return true
		}
	}
	return false
}

// undefinedSubset explains why the DestinationRule in force for b.fqdn
// (b.inForce, maybe nil) does not give it subset b.dest.Subset: drs is the
// candidate DestinationRules, by namespace/name.
func (c *crossChecker) undefinedSubset(b badRef, drs []*DestinationRule) string {
	subset := b.dest.GetSubset()
	for _, dr := range drs {
		if dr == b.inForce || !definesSubset(dr, subset) {
			continue
		}
		host := c.resolve(dr.Spec.GetHost(), dr.Namespace)
		if !hostMatches(host, b.fqdn) {
			continue
		}
		if b.inForce != nil {
			return fmt.Sprintf("subset %q is defined by DestinationRule %s/%s, but DestinationRule %s/%s is the one in force for %s",
				subset, dr.Namespace, dr.Name, b.inForce.Namespace, b.inForce.Name, b.fqdn)
		}
		// A rule whose host is b.fqdn itself would be in force: this one is a wildcard.
		return fmt.Sprintf("subset %q is defined by DestinationRule %s/%s, but its wildcard host %s gives no subsets to %s (subsets are per service); define it in a DestinationRule for %s",
			subset, dr.Namespace, dr.Name, host, b.fqdn, b.fqdn)
	}
	return fmt.Sprintf("subset %q is not defined by any DestinationRule for %s", subset, b.fqdn)
}

func (c *crossChecker) report(sev Severity, m Meta, path, msg string) {
	c.diags = append(c.diags, Diagnostic{Severity: sev, File: m.File, Doc: m.Doc, Resource: m.String(), Path: path, Message: msg})
}

// run checks subset references until the candidate set is consistent. A
// changed VirtualService with a bad reference falls back to its last good
// version; an in-force VirtualService whose subset a DestinationRule change
// removed makes that change fall back instead. Each step moves a resource
// back towards the in-force set, so the loop ends.
func (c *crossChecker) run() {
	c.collectServiceEntryHosts()
	for limit := 2*len(c.cands) + len(c.inForce) + 2; limit > 0; limit-- {
		if !c.step() {
			break
		}
	}
	c.settleRejected()
	c.warnUnknownHosts()
}

// badRef is a subset reference the DestinationRule in force for its host
// does not define.
type badRef struct {
	destRef
	fqdn    string
	inForce *DestinationRule // selected for fqdn among the candidates; may be nil
}

// badRefs returns the subset references of the VirtualService cand that
// the DestinationRule selected for their host (SelectDestinationRule, as
// mesh selects it) does not define. Subsets of other rules for the host
// never become clusters, so they do not count.
func (c *crossChecker) badRefs(cand *candidate) []badRef {
	var (
		bad []badRef
		drs []*DestinationRule
	)
	for _, r := range destinations(cand.spec.(*networking.VirtualService)) {
		if r.dest.GetSubset() == "" {
			continue
		}
		if drs == nil {
			drs = c.candidateDRs()
		}
		fqdn := c.resolve(r.dest.GetHost(), cand.meta.Namespace)
		if sel := c.selectDR(fqdn, drs); !definesSubset(sel, r.dest.GetSubset()) {
			bad = append(bad, badRef{r, fqdn, sel})
		}
	}
	return bad
}

func (c *crossChecker) step() (changed bool) {
	for _, key := range c.keys(KindVirtualService) {
		cand := c.cands[key]
		bad := c.badRefs(cand)
		if len(bad) == 0 {
			continue
		}
		if cand.changed() || !c.blameDestinationRules(cand, bad) {
			c.rejected = append(c.rejected, cand)
			c.fallBack(key, cand)
		}
		return true
	}
	return false
}

// settleRejected judges the VirtualServices rejected on the way against
// the DestinationRules finally in force: one whose references all resolve
// now (a DestinationRule change it conflicted with was reverted) is
// accepted after all; the others are reported.
func (c *crossChecker) settleRejected() {
	settled := map[string]bool{}
	for _, cand := range c.rejected {
		key := cand.meta.Key()
		if settled[key] {
			continue
		}
		bad := c.badRefs(cand)
		if len(bad) == 0 {
			c.cands[key] = cand
			settled[key] = true
			continue
		}
		drs := c.candidateDRs()
		for _, b := range bad {
			c.report(SeverityError, cand.meta, b.path+".subset", c.undefinedSubset(b, drs))
		}
	}
}

// blameDestinationRules reverts the DestinationRule changes (edits,
// deletions, new rules) that took away subsets the in-force VirtualService
// vs still uses: for each bad reference whose subset the rule in force
// before this load defined, first a change to that rule, else the changed
// rule that would now take its place. It reverts at most one rule per
// reference; the caller checks again. It reports whether it reverted anything.
func (c *crossChecker) blameDestinationRules(vs *candidate, bad []badRef) bool {
	prevDRs := c.inForceDRs()
	reverted := false
	for _, b := range bad {
		subset := b.dest.GetSubset()
		was := c.selectDR(b.fqdn, prevDRs)
		if !definesSubset(was, subset) {
			continue // not given by the rules in force before either: nothing to blame
		}
		now := c.selectDR(b.fqdn, c.candidateDRs())
		if definesSubset(now, subset) {
			continue // fixed by a revert for an earlier reference
		}
		used := fmt.Sprintf("subset %q is still used by VirtualService %s/%s at %s.subset", subset, vs.meta.Namespace, vs.meta.Name, b.path)
		wasKey := was.Key()
		cur := c.cands[wasKey]
		var curForHost, curDefines bool // whether the rule's version of this load is for b.fqdn, and has the subset
		if cur != nil {
			dr := asDestinationRule(&cur.entry)
			curForHost = c.resolve(dr.Spec.GetHost(), dr.Namespace) == b.fqdn
			curDefines = definesSubset(dr, subset)
		}
		switch {
		case cur == nil:
			c.report(SeverityError, was.Meta, "spec.subsets",
				used+"; deleting this DestinationRule is rejected and the last good version stays in force")
		case cur.changed() && !curForHost:
			c.report(SeverityError, cur.meta, "spec.host", used+"; this change is rejected and the last good version stays in force")
		case cur.changed() && !curDefines:
			c.report(SeverityError, cur.meta, "spec.subsets", used+"; this change is rejected and the last good version stays in force")
		default:
			// The rule in force before still gives the subset: another
			// rule changed and now takes precedence for the host.
			if now == nil {
				continue
			}
			nowKey := now.Key()
			taker := c.cands[nowKey]
			if !taker.changed() {
				continue // not a config change of this load (a host moved namespace)
			}
			what := "this change is rejected and the last good version stays in force"
			if taker.prev == nil {
				what = "this DestinationRule is rejected"
			}
			c.report(SeverityError, taker.meta, "spec.host", fmt.Sprintf(
				"%s, and this DestinationRule would replace DestinationRule %s/%s as the one in force for %s without defining it; %s",
				used, was.Namespace, was.Name, b.fqdn, what))
			c.revert(nowKey)
			reverted = true
			continue
		}
		c.revert(wasKey)
		reverted = true
	}
	return reverted
}

// revert puts back the version of key in force before this load, or
// drops key when it was not in force.
func (c *crossChecker) revert(key string) {
	if prev := c.inForce[key]; prev != nil {
		c.cands[key] = &candidate{entry: *prev, prev: prev}
		return
	}
	delete(c.cands, key)
}

// fallBack replaces a rejected candidate with its last good version, or
// drops it when it has none or the last good version is what was rejected.
func (c *crossChecker) fallBack(key string, cand *candidate) {
	if cand.prev != nil && cand.changed() {
		c.cands[key] = &candidate{entry: *cand.prev, prev: cand.prev}
		return
	}
	delete(c.cands, key)
}

// warnUnknownHosts warns about destinations of accepted VirtualServices
// that no registry knows; they are still used.
func (c *crossChecker) warnUnknownHosts() {
	for _, key := range c.keys(KindVirtualService) {
		cand := c.cands[key]
		if !cand.current {
			continue
		}
		for _, r := range destinations(cand.spec.(*networking.VirtualService)) {
			fqdn := c.resolve(r.dest.GetHost(), cand.meta.Namespace)
			if !c.known(fqdn) {
				c.report(SeverityWarning, cand.meta, r.path+".host",
					fmt.Sprintf("host %s is not known to any registry (no ServiceEntry or service defines it)", fqdn))
			}
		}
	}
}

// changed reports whether the candidate differs from the version in force
// before this load (a new resource counts as changed).
func (c *candidate) changed() bool {
	return c.prev == nil || c.prev.meta.Key() != c.meta.Key() || !proto.Equal(c.prev.spec, c.spec)
}
