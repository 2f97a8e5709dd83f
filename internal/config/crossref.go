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

// collectServiceEntryHosts resolves the hosts of every candidate ServiceEntry.
func (c *crossChecker) collectServiceEntryHosts() {
	c.seHosts = nil
	for _, k := range c.keys(KindServiceEntry) {
		cand := c.cands[k]
		for _, h := range cand.spec.(*networking.ServiceEntry).GetHosts() {
			c.seHosts = append(c.seHosts, registry.ResolveHost(h, cand.meta.Namespace, c.suffix, c.knownHost))
		}
	}
}

// drDefines reports whether the DestinationRule e, resolved in its own
// namespace, defines subset for fqdn.
func (c *crossChecker) drDefines(e *entry, fqdn, subset string) bool {
	dr := e.spec.(*networking.DestinationRule)
	if !hostMatches(c.resolve(dr.GetHost(), e.meta.Namespace), fqdn) {
		return false
	}
	for _, s := range dr.GetSubsets() {
		if s.GetName() == subset {
			return true
		}
	}
	return false
}

func (c *crossChecker) subsetDefined(fqdn, subset string) bool {
	for _, k := range c.keys(KindDestinationRule) {
		if c.drDefines(&c.cands[k].entry, fqdn, subset) {
			return true
		}
	}
	return false
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

// badRef is a subset reference no candidate DestinationRule defines.
type badRef struct {
	destRef
	fqdn string
}

// badRefs returns the subset references of the VirtualService cand that no
// candidate DestinationRule defines.
func (c *crossChecker) badRefs(cand *candidate) []badRef {
	var bad []badRef
	for _, r := range destinations(cand.spec.(*networking.VirtualService)) {
		if r.dest.GetSubset() == "" {
			continue
		}
		fqdn := c.resolve(r.dest.GetHost(), cand.meta.Namespace)
		if !c.subsetDefined(fqdn, r.dest.GetSubset()) {
			bad = append(bad, badRef{r, fqdn})
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
		for _, b := range bad {
			c.report(SeverityError, cand.meta, b.path+".subset",
				fmt.Sprintf("subset %q is not defined by any DestinationRule for %s", b.dest.GetSubset(), b.fqdn))
		}
	}
}

// blameDestinationRules reverts the DestinationRule changes (edits or
// deletions) that removed subsets the in-force VirtualService vs still uses.
// It reports whether it reverted anything.
func (c *crossChecker) blameDestinationRules(vs *candidate, bad []badRef) bool {
	var drKeys []string
	for k, e := range c.inForce {
		if e.meta.Kind == KindDestinationRule {
			drKeys = append(drKeys, k)
		}
	}
	sort.Strings(drKeys)
	reverted := false
	for _, b := range bad {
		for _, k := range drKeys {
			prev := c.inForce[k]
			if !c.drDefines(prev, b.fqdn, b.dest.GetSubset()) {
				continue
			}
			cur := c.cands[k]
			if cur != nil && !cur.changed() {
				continue
			}
			at, what := prev.meta, "deleting this DestinationRule"
			if cur != nil {
				at, what = cur.meta, "this change"
			}
			c.report(SeverityError, at, "spec.subsets", fmt.Sprintf(
				"subset %q is still used by VirtualService %s/%s at %s.subset; %s is rejected and the last good version stays in force",
				b.dest.GetSubset(), vs.meta.Namespace, vs.meta.Name, b.path, what))
			c.cands[k] = &candidate{entry: *prev, prev: prev}
			reverted = true
		}
	}
	return reverted
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
