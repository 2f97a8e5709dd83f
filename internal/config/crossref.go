package config

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

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
	rootNS    string            // Options.RootNamespace
	seWild    []string          // resolved ServiceEntry hosts of the candidate set that are wildcards (the others are seNS's keys)
	seNS      map[string]string // resolved ServiceEntry host -> namespace of the first ServiceEntry defining it
	inForce   map[string]*entry // before this load
	cands     map[string]*candidate
	rejected  []*candidate // VirtualServices rejected for subset references, in order
	diags     []Diagnostic
}

func (c *crossChecker) known(fqdn string) bool {
	if _, ok := c.seNS[fqdn]; ok {
		return true
	}
	for _, h := range c.seWild {
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
// ServiceEntry and records which ServiceEntry defines each host: the one
// seen first (as the static registry decides), so a new ServiceEntry
// cannot take over a host in force. Every other claim of a host is
// reported.
func (c *crossChecker) collectServiceEntryHosts() {
	c.seWild, c.seNS = nil, map[string]string{}
	owner := map[string]*ServiceEntry{}
	var ses []*ServiceEntry
	for _, k := range c.keys(KindServiceEntry) {
		cand := c.cands[k]
		ses = append(ses, &ServiceEntry{Meta: cand.meta, Spec: cand.spec.(*networking.ServiceEntry), Pos: cand.pos})
	}
	slices.SortFunc(ses, FirstSeen)
	for _, se := range ses {
		for i, h := range se.Spec.GetHosts() {
			fqdn := registry.ResolveHost(h, se.Namespace, c.suffix, c.knownHost)
			first, taken := owner[fqdn]
			switch {
			case !taken:
				owner[fqdn] = se
				if strings.HasPrefix(fqdn, "*") {
					c.seWild = append(c.seWild, fqdn)
				}
				c.seNS[fqdn] = se.Namespace
			case first != se:
				c.report(SeverityError, CodeServiceEntryConflict, se.Meta, se.Pos, fmt.Sprintf("spec.hosts[%d]", i), fmt.Sprintf(
					"host %s is already defined by %s, which was there first and defines its ports and endpoints; this ServiceEntry is not used for %s (give its endpoints to that ServiceEntry, or use another host)",
					fqdn, where(first.Meta), fqdn))
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

// drIndex is the candidate DestinationRules by the host they resolve to,
// each list in candidateDRs' order, and those whose host is a wildcard:
// selecting the rule of a host costs the rules of that host and the
// wildcard rules, not every rule of the mesh.
type drIndex struct {
	byHost map[string][]*DestinationRule
	wild   []*DestinationRule
}

// forHost returns the rules that may apply to fqdn: its own and the
// wildcard ones (SelectDestinationRules picks among them).
func (ix drIndex) forHost(fqdn string) []*DestinationRule {
	own := ix.byHost[fqdn]
	if len(ix.wild) == 0 {
		return own
	}
	return append(slices.Clip(own), ix.wild...)
}

// candidateDRIndex indexes candidateDRs. Valid until the candidate
// DestinationRules change (a step's fallBack or blame).
func (c *crossChecker) candidateDRIndex() drIndex {
	ix := drIndex{byHost: map[string][]*DestinationRule{}}
	for _, dr := range c.candidateDRs() {
		if dr.Spec == nil {
			continue
		}
		h := c.resolve(dr.Spec.GetHost(), dr.Namespace)
		ix.byHost[h] = append(ix.byHost[h], dr)
		if strings.HasPrefix(h, "*") {
			ix.wild = append(ix.wild, dr)
		}
	}
	return ix
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
	return &DestinationRule{Meta: e.meta, Spec: e.spec.(*networking.DestinationRule), Pos: e.pos}
}

// selectDR is SelectDestinationRule for fqdn among drs, for the clients
// of namespace view, with the host namespaces of the candidate
// ServiceEntries: the rule mesh will use.
func (c *crossChecker) selectDR(fqdn, view string, drs []*DestinationRule) *DestinationRule {
	return c.selectDRs(fqdn, view, drs).Rule
}

// selectDRs is SelectDestinationRules for fqdn among drs.
func (c *crossChecker) selectDRs(fqdn, view string, drs []*DestinationRule) RuleSet {
	return SelectDestinationRules(fqdn, HostNamespace(fqdn, c.seNS[fqdn], c.suffix), c.rootNamespace(), view, drs, c.resolve)
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
	}
	return fmt.Sprintf("subset %q is not defined by any DestinationRule for %s", subset, b.fqdn)
}

// report records a diagnostic of the resource m, whose fields pos locates.
func (c *crossChecker) report(sev Severity, code Code, m Meta, pos Positions, path, msg string) {
	at := pos.Lookup(path)
	c.diags = append(c.diags, Diagnostic{
		Severity: sev, Code: code, File: m.File, Doc: m.Doc, Line: at.Line, Column: at.Column,
		Resource: m.String(), Path: path, Message: msg,
	})
}

// where names a resource and where it is written, for messages about
// another resource: "VirtualService default/reviews (routes.yaml:12)".
func where(m Meta) string {
	if m.Line > 0 {
		return fmt.Sprintf("%s (%s:%d)", m, m.File, m.Line)
	}
	if m.File != "" {
		return fmt.Sprintf("%s (%s)", m, m.File)
	}
	return m.String()
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
	c.reportVirtualServiceConflicts()
	c.reportDestinationRuleConflicts()
	c.reportPeerAuthenticationConflicts()
	c.warnUnknownHosts()
	c.warnUnknownGateways()
	c.warnPartialSubsets()
}

// badRef is a subset reference the DestinationRule in force for its host
// does not define.
type badRef struct {
	destRef
	fqdn    string
	view    string           // the client namespace whose rule was checked ("": any other)
	inForce *DestinationRule // selected for fqdn in view among the candidates; may be nil
}

// badRefs returns the subset references of the VirtualService cand that
// the DestinationRule selected for their host (SelectDestinationRule, as
// mesh selects it) does not define. Subsets of other rules for the host
// never become clusters, so they do not count. drs gives the candidate
// DestinationRules' index, built on first use.
func (c *crossChecker) badRefs(cand *candidate, drs func() drIndex) []badRef {
	var bad []badRef
	for _, r := range destinations(cand.spec.(*networking.VirtualService)) {
		if r.dest.GetSubset() == "" {
			continue
		}
		fqdn := c.resolve(r.dest.GetHost(), cand.meta.Namespace)
		views := clientViews(cand.meta.Namespace, cand.spec.(*networking.VirtualService).GetExportTo())
		ok := false
		for _, view := range views {
			if definesSubset(c.selectDR(fqdn, view, drs().forHost(fqdn)), r.dest.GetSubset()) ||
				c.selectedDefine(fqdn, view, r.dest.GetSubset(), drs().forHost(fqdn)) {
				ok = true
				break
			}
		}
		if !ok {
			bad = append(bad, badRef{r, fqdn, views[0], c.selectDR(fqdn, views[0], drs().forHost(fqdn))})
		}
	}
	return bad
}

// selectedDefine reports whether a rule with a workloadSelector in
// namespace view, for fqdn, defines subset: the sidecars it selects have
// the subset (SelectDestinationRulesFor).
func (c *crossChecker) selectedDefine(fqdn, view, subset string, drs []*DestinationRule) bool {
	for _, dr := range drs {
		if dr.Spec.GetWorkloadSelector() != nil && dr.Namespace == view &&
			DestinationRuleMatches(c.resolve(dr.Spec.GetHost(), dr.Namespace), fqdn) && definesSubset(dr, subset) {
			return true
		}
	}
	return false
}

// clientViews returns the client namespaces whose DestinationRules a
// VirtualService of namespace ns with exportTo may route by, its own
// first when it sees the VirtualService ("" stands for every namespace
// without rules of its own). Istio checks no subset; Weft rejects a
// reference that none of them defines: such a route could only answer
// 503.
func clientViews(ns string, exportTo []string) []string {
	var views []string
	if exportedTo(exportTo, ns, ns) {
		views = append(views, ns)
	}
	for _, e := range exportTo {
		if e != "*" && e != "." && e != "~" && e != ns {
			views = append(views, e)
		}
	}
	if exportedTo(exportTo, ns, "") {
		views = append(views, "")
	}
	if len(views) == 0 {
		views = append(views, "")
	}
	return views
}

func (c *crossChecker) step() (changed bool) {
	drs := sync.OnceValue(c.candidateDRIndex) // the step ends when the DestinationRules change
	for _, key := range c.keys(KindVirtualService) {
		cand := c.cands[key]
		bad := c.badRefs(cand, drs)
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
	drs := sync.OnceValue(c.candidateDRIndex) // only VirtualServices change below
	for _, cand := range c.rejected {
		key := cand.meta.Key()
		if settled[key] {
			continue
		}
		bad := c.badRefs(cand, drs)
		if len(bad) == 0 {
			c.cands[key] = cand
			settled[key] = true
			continue
		}
		drs := c.candidateDRs()
		for _, b := range bad {
			c.report(SeverityError, CodeUndefinedSubset, cand.meta, cand.pos, b.path+".subset", c.undefinedSubset(b, drs))
		}
	}
}

// blameDestinationRules reverts the DestinationRule changes (edits,
// deletions, new rules) that took away subsets the in-force VirtualService
// vs still uses. For each bad reference whose subset the rules in force
// before this load defined, it reverts the changes responsible: a deleted
// or edited rule of the winning set before that gave the subset (or left
// the host), and a changed rule that joined or replaced that set. A
// harmless edit of a rule in force (one that keeps the subset) stays. The
// caller checks again. It reports whether it reverted anything.
func (c *crossChecker) blameDestinationRules(vs *candidate, bad []badRef) bool {
	prevDRs := c.inForceDRs()
	reverted := false
	for _, b := range bad {
		subset := b.dest.GetSubset()
		was := c.selectDRs(b.fqdn, b.view, prevDRs)
		if !definesSubset(was.Rule, subset) {
			continue // not given by the rules in force before either: nothing to blame
		}
		now := c.selectDRs(b.fqdn, b.view, c.candidateDRs())
		if definesSubset(now.Rule, subset) {
			continue // fixed by a revert for an earlier reference
		}
		used := fmt.Sprintf("subset %q is still used by VirtualService %s/%s at %s.subset", subset, vs.meta.Namespace, vs.meta.Name, b.path)
		const keep = "this change is rejected and the last good version stays in force"
		inWas := map[string]bool{}
		for _, dr := range was.From {
			inWas[dr.Key()] = true
		}
		type blame struct {
			key, path, msg string
			e              *entry
		}
		var blamed, changed []blame
		seen := map[string]bool{}
		for _, dr := range append(slices.Clone(was.From), now.From...) {
			key := dr.Key()
			if seen[key] {
				continue
			}
			seen[key] = true
			cur, prev := c.cands[key], c.inForce[key]
			switch {
			case cur == nil && prev != nil:
				if definesSubset(asDestinationRule(prev), subset) {
					blamed = append(blamed, blame{key, "spec.subsets", used + "; deleting this DestinationRule is rejected and the last good version stays in force", prev})
				}
				continue
			case cur == nil || !cur.changed():
				continue
			}
			curDR := asDestinationRule(&cur.entry)
			changed = append(changed, blame{key, "spec.host", used + "; " + keep, &cur.entry})
			switch {
			case !inWas[key]:
				what := keep
				if prev == nil {
					what = "this DestinationRule is rejected"
				}
				blamed = append(blamed, blame{key, "spec.host", fmt.Sprintf(
					"%s, and this DestinationRule would replace %s as the one in force for %s without defining it; %s",
					used, was.Rule.Meta, b.fqdn, what), &cur.entry})
			case !DestinationRuleMatches(c.resolve(curDR.Spec.GetHost(), cur.meta.Namespace), b.fqdn):
				blamed = append(blamed, blame{key, "spec.host", used + "; " + keep, &cur.entry})
			case prev != nil && definesSubset(asDestinationRule(prev), subset) && !definesSubset(curDR, subset):
				blamed = append(blamed, blame{key, "spec.subsets", used + "; " + keep, &cur.entry})
			}
		}
		if len(blamed) == 0 {
			blamed = changed // no single culprit: undo every change to the host's rules
		}
		for _, bl := range blamed {
			c.report(SeverityError, CodeSubsetStillUsed, bl.e.meta, bl.e.pos, bl.path, bl.msg)
			c.revert(bl.key)
			reverted = true
		}
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
				c.report(SeverityWarning, CodeUnknownHost, cand.meta, cand.pos, r.path+".host",
					fmt.Sprintf("host %s is not known to any registry (no ServiceEntry or service defines it)", fqdn))
			}
		}
	}
}

// warnPartialSubsets warns where a current VirtualService exported to
// every namespace names a subset that only some namespaces' sidecars have
// (a client-side DestinationRule defines it; badRefs accepted it for
// them): the sidecars of the other namespaces it routes have no such
// cluster and answer 503 for that share of traffic.
func (c *crossChecker) warnPartialSubsets() {
	var ix drIndex
	for _, key := range c.keys(KindVirtualService) {
		cand := c.cands[key]
		vs := cand.spec.(*networking.VirtualService)
		if !cand.current || !exportedTo(vs.GetExportTo(), cand.meta.Namespace, "") {
			continue
		}
		for _, r := range destinations(vs) {
			subset := r.dest.GetSubset()
			if subset == "" {
				continue
			}
			if ix.byHost == nil {
				ix = c.candidateDRIndex()
			}
			fqdn := c.resolve(r.dest.GetHost(), cand.meta.Namespace)
			if definesSubset(c.selectDR(fqdn, "", ix.forHost(fqdn)), subset) {
				continue
			}
			for _, view := range clientViews(cand.meta.Namespace, vs.GetExportTo()) {
				if view == "" {
					continue
				}
				if dr := c.selectDR(fqdn, view, ix.forHost(fqdn)); definesSubset(dr, subset) {
					c.report(SeverityWarning, CodeUndefinedSubset, cand.meta, cand.pos, r.path+".subset", fmt.Sprintf(
						"subset %q of %s is defined for the sidecars of namespace %s only (by DestinationRule %s/%s); this VirtualService is exported to every namespace, and the sidecars of the others have no such subset: 503 for its share (export the VirtualService to %s only, or define the subset in a rule they use)",
						subset, fqdn, view, dr.Namespace, dr.Name, view))
					break
				}
			}
		}
	}
}

// warnUnknownGateways reports every gateway a current VirtualService (or
// one of its http matches) is bound to that no Gateway defines, as
// Istio's analyzer does (IST0101): the binding applies to no proxy.
func (c *crossChecker) warnUnknownGateways() {
	defined := map[string]*networking.Gateway{}
	for _, key := range c.keys(KindGateway) {
		cand := c.cands[key]
		if gw, ok := cand.spec.(*networking.Gateway); ok {
			defined[cand.meta.Namespace+"/"+cand.meta.Name] = gw
		}
	}
	for _, key := range c.keys(KindVirtualService) {
		cand := c.cands[key]
		if !cand.current {
			continue
		}
		vs := cand.spec.(*networking.VirtualService)
		check := func(path string, refs []string) {
			for i, g := range refs {
				if g == GatewayMesh {
					continue
				}
				ref := GatewayRef(g, cand.meta.Namespace)
				gw := defined[ref]
				if gw == nil {
					c.report(SeverityWarning, CodeGatewayNotFound, cand.meta, cand.pos, fmt.Sprintf("%s[%d]", path, i),
						fmt.Sprintf("gateway %s is not defined by any Gateway: this binding applies to no proxy until it is", ref))
					continue
				}
				if path == "spec.gateways" && !servesAny(gw, ref, cand.meta.Namespace, vs.GetHosts()) {
					c.report(SeverityWarning, CodeHostNotOnGateway, cand.meta, cand.pos, fmt.Sprintf("%s[%d]", path, i),
						fmt.Sprintf("no server of gateway %s serves any host of this VirtualService (%s) to namespace %s: it routes nothing there (Istio's analyzer: IST0132)", ref, strings.Join(vs.GetHosts(), ", "), cand.meta.Namespace))
				}
			}
		}
		check("spec.gateways", vs.GetGateways())
		for i, r := range vs.GetHttp() {
			for k, m := range r.GetMatch() {
				check(fmt.Sprintf("spec.http[%d].match[%d].gateways", i, k), m.GetGateways())
			}
		}
	}
}

// servesAny reports whether a server of gw (whose reference is ref,
// "<namespace>/<name>") admits VirtualServices of namespace ns for one of
// hosts: its host namespace part is "*", "." (gw's namespace) or ns, and
// its name and the host cover one another.
func servesAny(gw *networking.Gateway, ref, ns string, hosts []string) bool {
	gwNS, _, _ := strings.Cut(ref, "/")
	for _, srv := range gw.GetServers() {
		for _, sh := range srv.GetHosts() {
			sns, shost := ParseServerHost(sh)
			if sns != "*" && !(sns == "." && ns == gwNS) && sns != ns {
				continue
			}
			for _, h := range hosts {
				if hostMatches(shost, h) || hostMatches(h, shost) {
					return true
				}
			}
		}
	}
	return false
}

// GatewayRef resolves a VirtualService's reference to a Gateway as Istio
// does: "<namespace>/<name>", a bare name in the VirtualService's
// namespace ns, or the legacy "<name>.<namespace>[.svc.<domain>]".
func GatewayRef(ref, ns string) string {
	if strings.Contains(ref, "/") {
		return ref
	}
	if name, rest, ok := strings.Cut(ref, "."); ok {
		gwNS, _, _ := strings.Cut(rest, ".")
		return gwNS + "/" + name
	}
	return ns + "/" + ref
}

// changed reports whether the candidate differs from the version in force
// before this load (a new resource counts as changed).
func (c *candidate) changed() bool {
	return c.prev == nil || c.prev.meta.Key() != c.meta.Key() || !specEqual(c.prev.spec, c.spec)
}

// GatewayMesh is the reserved gateway name meaning "every sidecar".
const GatewayMesh = "mesh"

// AppliesToMesh reports whether a VirtualService (or one of its matches)
// bound to these gateways applies to sidecars.
func AppliesToMesh(gateways []string) bool {
	return len(gateways) == 0 || slices.Contains(gateways, GatewayMesh)
}

// reportVirtualServiceConflicts reports every VirtualService that claims a
// host another one, seen first, already has on sidecars: as in Istio, one
// VirtualService gives a host its routes there (mesh.RouteIndex keeps the
// first), and the others are not used for it. With exportTo, two of them
// conflict only where both are visible in the same group of Istio's
// order (private to a namespace, exported to it by name, public): a
// namespace's private override of a public VirtualService is no conflict.
func (c *crossChecker) reportVirtualServiceConflicts() {
	var vss []*VirtualService
	for _, k := range c.keys(KindVirtualService) {
		cand := c.cands[k]
		vs := &VirtualService{Meta: cand.meta, Spec: cand.spec.(*networking.VirtualService), Pos: cand.pos}
		if AppliesToMesh(vs.Spec.GetGateways()) {
			vss = append(vss, vs)
		}
	}
	slices.SortFunc(vss, FirstSeen)
	type claim struct{ host, group string }
	owner := map[claim]*VirtualService{}
	for _, vs := range vss {
		groups := visibilityGroups(vs)
		for i, h := range vs.Spec.GetHosts() {
			fqdn := c.resolve(h, vs.Namespace)
			for _, g := range groups {
				first, taken := owner[claim{fqdn, g}]
				if !taken {
					owner[claim{fqdn, g}] = vs
					continue
				}
				if first != vs {
					c.report(SeverityError, CodeVirtualServiceConflict, vs.Meta, vs.Pos, fmt.Sprintf("spec.hosts[%d]", i), fmt.Sprintf(
						"host %s already takes its routes from %s, which was there first; this VirtualService is not used for %s (on sidecars one VirtualService routes a host: merge the two, or delegate)",
						fqdn, where(first.Meta), fqdn))
					break
				}
			}
		}
	}
}

// visibilityGroups names where a VirtualService competes for its hosts
// (mesh.RouteIndex's order): "public" (no exportTo, or "*"), else
// "private/<ns>" for its own namespace and "exported/<ns>" for each other
// namespace it names.
func visibilityGroups(vs *VirtualService) []string {
	ex := vs.Spec.GetExportTo()
	if len(ex) == 0 || slices.Contains(ex, "*") {
		return []string{"public"}
	}
	var out []string
	for _, e := range ex {
		switch {
		case e == "." || e == vs.Namespace:
			out = append(out, "private/"+vs.Namespace)
		default:
			out = append(out, "exported/"+e)
		}
	}
	return out
}

// reportDestinationRuleConflicts explains, for every host with several
// DestinationRules, what SelectDestinationRules made of them: rules of
// another namespace than the one that won are not used; within it, rules
// are merged, and a subset or traffic policy an older rule already has is
// not used.
func (c *crossChecker) reportDestinationRuleConflicts() {
	ix := c.candidateDRIndex()
	for _, fqdn := range sortedKeys(ix.byHost) {
		set := DestinationRuleViews(fqdn, HostNamespace(fqdn, c.seNS[fqdn], c.suffix), c.rootNamespace(), ix.forHost(fqdn), c.resolve).Default
		if len(set.From) == 0 {
			continue
		}
		oldest := set.From[0]
		if c.resolve(oldest.Spec.GetHost(), oldest.Namespace) != fqdn {
			// A wildcard rule governs fqdn: the rules of fqdn itself in
			// other namespaces are not used; how the wildcard rules
			// merged is reported under their own host.
			for _, dr := range set.Ignored {
				c.report(SeverityError, CodeDestinationRuleConflict, dr.Meta, dr.Pos, "spec.host", fmt.Sprintf(
					"%s, for host %s, is in force for %s (%s); this DestinationRule, of namespace %s, is not used for it (Weft applies the rules of one namespace to a host)",
					where(oldest.Meta), oldest.Spec.GetHost(), fqdn, c.whyNamespace(fqdn, oldest), dr.Namespace))
			}
			continue
		}
		for _, dr := range set.Ignored {
			c.report(SeverityError, CodeDestinationRuleConflict, dr.Meta, dr.Pos, "spec.host", fmt.Sprintf(
				"%s is in force for %s (%s); this DestinationRule, of namespace %s, is not used for it (Weft applies the rules of one namespace to a host)",
				where(oldest.Meta), fqdn, c.whyNamespace(fqdn, oldest), dr.Namespace))
		}
		effects := mergeEffects(set.From)
		for _, dr := range set.From[1:] {
			eff := effects[dr]
			for k, j := range eff.dupSubsets {
				name := dr.Spec.GetSubsets()[j].GetName()
				c.report(SeverityError, CodeDestinationRuleConflict, dr.Meta, dr.Pos, fmt.Sprintf("spec.subsets[%d].name", j), fmt.Sprintf(
					"subset %q of %s is already defined by %s, which was there first; this definition is not used",
					name, fqdn, where(eff.dupOf[k].Meta)))
			}
			if eff.policyLost {
				c.report(SeverityError, CodeDestinationRuleConflict, dr.Meta, dr.Pos, "spec.trafficPolicy", fmt.Sprintf(
					"the traffic policy of %s comes from %s, which was there first; this one is not used (DestinationRules merged for one host take the first traffic policy)",
					fqdn, where(eff.policyOf.Meta)))
			}
			if len(eff.added) > 0 {
				c.report(SeverityInfo, CodeDestinationRulesMerged, dr.Meta, dr.Pos, "spec.host", fmt.Sprintf(
					"merged into %s for %s, as Istio merges the rules of one host: adds subsets %s",
					where(oldest.Meta), fqdn, strings.Join(eff.added, ", ")))
			}
		}
	}
}

// whyNamespace says why the rules of oldest's namespace govern fqdn.
func (c *crossChecker) whyNamespace(fqdn string, oldest *DestinationRule) string {
	if HostNamespace(fqdn, c.seNS[fqdn], c.suffix) == oldest.Namespace {
		return "its namespace is the service's"
	}
	if oldest.Namespace == c.rootNamespace() {
		return "its namespace is the root namespace, whose rules are the mesh's defaults"
	}
	return "it was there first"
}

// rootNamespace is Options.RootNamespace, defaulted.
func (c *crossChecker) rootNamespace() string {
	if c.rootNS == "" {
		return DefaultRootNamespace
	}
	return c.rootNS
}
