package mesh

import (
	"slices"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/jwks"
)

// LoginIndex finds the OIDCLogins of a gateway proxy and the discovered
// endpoints of their issuers: those of the gateway's namespace, then of
// the root namespace, whose selector matches its labels, oldest first
// within a namespace. Immutable after construction.
type LoginIndex struct {
	rootNS    string
	byNS      map[string][]*config.OIDCLogin
	discovery map[string]jwks.Discovery // by issuer; fetched by the control plane
}

func newLoginIndex(ls []*config.OIDCLogin, rootNS string, discovery map[string]jwks.Discovery) *LoginIndex {
	idx := &LoginIndex{rootNS: rootNS, byNS: map[string][]*config.OIDCLogin{}, discovery: discovery}
	for _, l := range ls {
		if l.Spec != nil {
			idx.byNS[l.Namespace] = append(idx.byNS[l.Namespace], l)
		}
	}
	for _, list := range idx.byNS {
		slices.SortFunc(list, config.FirstSeen)
	}
	return idx
}

// For returns the OIDCLogins that apply to a gateway proxy of namespace
// ns with these labels, its namespace's first.
func (i *LoginIndex) For(ns string, labels map[string]string) []*config.OIDCLogin {
	if i == nil {
		return nil
	}
	var out []*config.OIDCLogin
	namespaces := []string{ns}
	if ns != i.rootNS {
		namespaces = append(namespaces, i.rootNS)
	}
	for _, n := range namespaces {
		for _, l := range i.byNS[n] {
			if config.Selects(l.Spec.GetSelector(), labels) {
				out = append(out, l)
			}
		}
	}
	return out
}

// Discovery returns what OpenID discovery found for issuer; ok is false
// until the control plane has fetched it (a login then refuses every
// request of its hosts rather than let them through).
func (i *LoginIndex) Discovery(issuer string) (d jwks.Discovery, ok bool) {
	if i == nil {
		return d, false
	}
	d, ok = i.discovery[issuer]
	return d, ok
}
