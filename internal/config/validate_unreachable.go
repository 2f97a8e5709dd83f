package config

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
)

// warnUnreachableRules is Istio's analysis of a VirtualService's rules
// that can never take a request (VirtualServiceUnreachableRule and
// VirtualServiceIneffectiveMatch, warnings in Istio too): a rule after one
// without match conditions, a match identical to an earlier one, and an
// http uri prefix covered by an earlier prefix with the same other
// conditions.
func warnUnreachableRules(is *issues, vs *networking.VirtualService) {
	var prefixes []*prefixMatch
	unreachable(is, "http", len(vs.GetHttp()), func(i int) []proto.Message {
		ms := make([]proto.Message, len(vs.GetHttp()[i].GetMatch()))
		for k, m := range vs.GetHttp()[i].GetMatch() {
			ms[k] = m
		}
		return ms
	}, func(match string, m proto.Message) {
		if pm := newPrefixMatch(match, m.(*networking.HTTPMatchRequest)); pm != nil {
			prefixes = append(prefixes, pm)
		}
	})
	// Only an earlier match whose prefix is a proper prefix of b's can
	// cover b: look those up rather than comparing every pair.
	byPrefix := map[string][]int{}
	for j, b := range prefixes {
		for l := 1; l < len(b.prefix); l++ {
			for _, i := range byPrefix[b.prefix[:l]] {
				if a := prefixes[i]; a.covers(b) {
					is.warnCode(CodeUnreachableRoute, b.match, "this match is never used: its uri prefix %q is covered by %s (prefix %q) with the same other conditions", b.prefix, a.match, a.prefix)
				}
			}
		}
		byPrefix[b.prefix] = append(byPrefix[b.prefix], j)
	}
	unreachable(is, "tcp", len(vs.GetTcp()), func(i int) []proto.Message {
		ms := make([]proto.Message, len(vs.GetTcp()[i].GetMatch()))
		for k, m := range vs.GetTcp()[i].GetMatch() {
			ms[k] = m
		}
		return ms
	}, nil)
	unreachable(is, "tls", len(vs.GetTls()), func(i int) []proto.Message {
		ms := make([]proto.Message, len(vs.GetTls()[i].GetMatch()))
		for k, m := range vs.GetTls()[i].GetMatch() {
			ms[k] = m
		}
		return ms
	}, nil)
}

// unreachable warns about the rules of spec.<section> that an earlier rule
// always takes. matches returns rule i's matches; each match not already
// seen is passed to fresh (when non-nil).
func unreachable(is *issues, section string, n int, matches func(int) []proto.Message, fresh func(match string, m proto.Message)) {
	seen := map[string]string{} // a match's conditions -> the first rule with them
	catchAll := ""
	for i := range n {
		p := fmt.Sprintf("spec.%s[%d]", section, i)
		ms := matches(i)
		if catchAll != "" {
			is.warnCode(CodeUnreachableRoute, p, "this rule is never used: %s before it has no match conditions and takes every request; only the last rule may have none", catchAll)
			continue
		}
		if len(ms) == 0 {
			catchAll = p
			continue
		}
		dups := 0
		for k, m := range ms {
			mp := fmt.Sprintf("%s.match[%d]", p, k)
			key := matchKey(m)
			if first, ok := seen[key]; ok {
				is.warnCode(CodeUnreachableRoute, mp, "this match is never used: %s has the same conditions", first)
				dups++
				continue
			}
			seen[key] = p
			if fresh != nil {
				fresh(mp, m)
			}
		}
		if dups == len(ms) {
			is.warnCode(CodeUnreachableRoute, p, "this rule is never used: earlier rules take every one of its matches")
		}
	}
}

// matchKey is the conditions of a match, its name left out.
func matchKey(m proto.Message) string {
	if hm, ok := m.(*networking.HTTPMatchRequest); ok && hm.GetName() != "" {
		c := proto.Clone(hm).(*networking.HTTPMatchRequest)
		c.Name = ""
		m = c
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// prefixMatch is an http match with a uri prefix, reduced to what Istio's
// overlap analysis compares. Other conditions are "exact:<v>",
// "prefix:<v>" or "" (regex or absent).
type prefixMatch struct {
	match             string
	prefix            string
	port              uint32
	method, authority string
	headers, query    map[string]string
	without           map[string]string
}

func newPrefixMatch(match string, m *networking.HTTPMatchRequest) *prefixMatch {
	prefix := m.GetUri().GetPrefix()
	if prefix == "" {
		return nil
	}
	pm := &prefixMatch{
		match: match, prefix: prefix, port: m.GetPort(),
		method:    exactOrPrefix(m.GetMethod()),
		authority: exactOrPrefix(m.GetAuthority()),
		headers:   exactOrPrefixMap(m.GetHeaders()),
		query:     exactOrPrefixMap(m.GetQueryParams()),
		without:   exactOrPrefixMap(m.GetWithoutHeaders()),
	}
	if pm.method == "" {
		pm.method = "exact:GET" // as Istio assumes
	}
	return pm
}

func exactOrPrefix(sm *networking.StringMatch) string {
	switch {
	case sm.GetExact() != "":
		return "exact:" + sm.GetExact()
	case sm.GetPrefix() != "":
		return "prefix:" + sm.GetPrefix()
	}
	return ""
}

func exactOrPrefixMap(m map[string]*networking.StringMatch) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = exactOrPrefix(v)
	}
	return out
}

// covers is Istio's coveredValidation: b's prefix extends a's, and a's
// other conditions are the same as b's or prefixes of them.
func (a *prefixMatch) covers(b *prefixMatch) bool {
	if !strings.HasPrefix(b.prefix, a.prefix) || a.port != b.port {
		return false
	}
	if a.method != b.method && !strings.HasPrefix(a.method, b.method) {
		return false
	}
	if a.authority != b.authority && !strings.HasPrefix(a.authority, b.authority) {
		return false
	}
	return coversMap(a.headers, b.headers) && coversMap(a.query, b.query) && coversMap(a.without, b.without)
}

func coversMap(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, av := range a {
		bv, ok := b[k]
		if !ok || (av != bv && !strings.HasPrefix(av, bv)) {
			return false
		}
	}
	return true
}
