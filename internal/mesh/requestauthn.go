package mesh

import (
	"slices"

	"weft.dev/weft/internal/config"
)

// RequestAuthnIndex finds the RequestAuthentications of a workload, as
// Istio's GetJwtPoliciesForWorkload does for a sidecar: those of the
// workload's namespace, then of the root namespace, whose selector matches
// its labels, oldest first within a namespace; a gateway proxy's are
// chosen the same way, and also those attached with targetRef(s) to its
// Gateway API Gateway (config.TargetsGateway). It is immutable after
// construction.
type RequestAuthnIndex struct {
	rootNS string
	byNS   map[string][]*config.RequestAuthentication
}

func newRequestAuthnIndex(ras []*config.RequestAuthentication, rootNS string) *RequestAuthnIndex {
	idx := &RequestAuthnIndex{rootNS: rootNS, byNS: map[string][]*config.RequestAuthentication{}}
	for _, ra := range ras {
		if ra.Spec == nil {
			continue
		}
		idx.byNS[ra.Namespace] = append(idx.byNS[ra.Namespace], ra)
	}
	for _, list := range idx.byNS {
		slices.SortFunc(list, config.FirstSeen)
	}
	return idx
}

// For returns the RequestAuthentications that apply to a workload of
// namespace ns with these labels.
func (i *RequestAuthnIndex) For(ns string, labels map[string]string) []*config.RequestAuthentication {
	if i == nil {
		return nil
	}
	var out []*config.RequestAuthentication
	namespaces := []string{ns}
	if ns != i.rootNS {
		namespaces = append(namespaces, i.rootNS)
	}
	for _, n := range namespaces {
		for _, ra := range i.byNS[n] {
			targets := config.PolicyTargets(ra.Spec.GetTargetRef(), ra.Spec.GetTargetRefs())
			if len(targets) > 0 && config.TargetsGateway(targets, ra.Namespace, ns, labels) ||
				len(targets) == 0 && config.Selects(ra.Spec.GetSelector(), labels) {
				out = append(out, ra)
			}
		}
	}
	return out
}
