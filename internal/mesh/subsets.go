package mesh

import (
	"strings"

	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/config"
)

// SubsetIndex finds the DestinationRule that governs a host. It is
// immutable after construction.
type SubsetIndex struct {
	byHost map[string]*config.DestinationRule
}

// newSubsetIndex picks one DestinationRule per resolved FQDN host: the one
// in the host's own namespace wins; otherwise the first by namespace/name.
// Wildcard hosts are not expanded: subsets are per service.
func newSubsetIndex(drs []*config.DestinationRule, r resolver) *SubsetIndex {
	idx := &SubsetIndex{byHost: map[string]*config.DestinationRule{}}
	for _, dr := range sortedByMeta(drs) {
		if dr.Spec == nil {
			continue
		}
		fqdn := r.resolve(dr.Spec.GetHost(), dr.Namespace)
		cur, ok := idx.byHost[fqdn]
		switch {
		case !ok:
			idx.byHost[fqdn] = dr
		case cur.Namespace != hostNamespace(fqdn, r) && dr.Namespace == hostNamespace(fqdn, r):
			idx.byHost[fqdn] = dr
		}
	}
	return idx
}

// hostNamespace is the namespace a host belongs to: its registry service's
// namespace, else the second label of a cluster-local name, else "".
func hostNamespace(fqdn string, r resolver) string {
	if svc := r.reg.Service(fqdn); svc != nil && svc.Namespace != "" {
		return svc.Namespace
	}
	tail := ".svc." + r.suffix
	if base, ok := strings.CutSuffix(fqdn, tail); ok {
		if dot := strings.LastIndexByte(base, '.'); dot >= 0 {
			return base[dot+1:]
		}
	}
	return ""
}

// ForHost returns the DestinationRule for an FQDN, or nil.
func (i *SubsetIndex) ForHost(fqdn string) *config.DestinationRule {
	if i == nil {
		return nil
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
