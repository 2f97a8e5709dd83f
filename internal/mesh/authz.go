package mesh

import (
	"slices"

	security "istio.io/api/security/v1beta1"

	"weft.dev/weft/internal/config"
)

// AuthzPolicies are the AuthorizationPolicies that apply to one workload,
// split by action, each list in Istio's order: the root namespace's
// policies, then the workload namespace's, oldest first.
type AuthzPolicies struct {
	Deny, Allow, Audit []*config.AuthorizationPolicy
	// Custom are the CUSTOM policies: an extension provider decides the
	// requests their rules match.
	Custom []*config.AuthorizationPolicy
}

// Empty reports whether no policy applies (every request is allowed).
func (p AuthzPolicies) Empty() bool { return len(p.Deny)+len(p.Allow)+len(p.Audit)+len(p.Custom) == 0 }

// AuthzIndex finds the AuthorizationPolicies of a workload, as Istio's
// ListAuthorizationPolicies does for a sidecar: the policies of the root
// namespace and of the workload's namespace whose selector matches its
// labels (no selector matches every workload). Policies attached with
// targetRef(s) apply to the proxies of the Gateway API Gateways they name
// (config.TargetsGateway), never to sidecars. It is immutable after
// construction.
type AuthzIndex struct {
	rootNS string
	byNS   map[string][]*config.AuthorizationPolicy
}

func newAuthzIndex(aps []*config.AuthorizationPolicy, rootNS string) *AuthzIndex {
	idx := &AuthzIndex{rootNS: rootNS, byNS: map[string][]*config.AuthorizationPolicy{}}
	for _, ap := range aps {
		if ap.Spec == nil {
			continue
		}
		idx.byNS[ap.Namespace] = append(idx.byNS[ap.Namespace], ap)
	}
	for _, list := range idx.byNS {
		slices.SortFunc(list, config.FirstSeen)
	}
	return idx
}

// For returns the policies that apply to a workload of namespace ns with
// these labels.
func (i *AuthzIndex) For(ns string, labels map[string]string) AuthzPolicies {
	var out AuthzPolicies
	if i == nil {
		return out
	}
	namespaces := []string{i.rootNS}
	if ns != i.rootNS {
		namespaces = append(namespaces, ns)
	}
	for _, n := range namespaces {
		for _, ap := range i.byNS[n] {
			if targets := config.PolicyTargets(ap.Spec.GetTargetRef(), ap.Spec.GetTargetRefs()); len(targets) > 0 {
				if !config.TargetsGateway(targets, ap.Namespace, ns, labels) {
					continue
				}
			} else if !config.Selects(ap.Spec.GetSelector(), labels) {
				continue
			}
			switch ap.Spec.GetAction() {
			case security.AuthorizationPolicy_ALLOW:
				out.Allow = append(out.Allow, ap)
			case security.AuthorizationPolicy_DENY:
				out.Deny = append(out.Deny, ap)
			case security.AuthorizationPolicy_AUDIT:
				out.Audit = append(out.Audit, ap)
			case security.AuthorizationPolicy_CUSTOM:
				out.Custom = append(out.Custom, ap)
			}
		}
	}
	return out
}
