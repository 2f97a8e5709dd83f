package mesh

import (
	"slices"

	"weft.dev/weft/internal/config"
)

// RateLimitIndex finds the RateLimit (networking.weft.dev) of a workload,
// the way Istio's Telemetry API picks the most specific resource: one of
// the workload's namespace whose selector matches its labels, else the
// namespace's without selector, else the root namespace's without
// selector; the oldest where several apply at one level. Only one applies:
// a RateLimit is a whole policy, not merged with others. Immutable after
// construction.
type RateLimitIndex struct {
	rootNS string
	byNS   map[string][]*config.RateLimit // oldest first
}

func newRateLimitIndex(rls []*config.RateLimit, rootNS string) *RateLimitIndex {
	idx := &RateLimitIndex{rootNS: rootNS, byNS: map[string][]*config.RateLimit{}}
	for _, rl := range rls {
		if rl.Spec != nil {
			idx.byNS[rl.Namespace] = append(idx.byNS[rl.Namespace], rl)
		}
	}
	for _, list := range idx.byNS {
		slices.SortFunc(list, config.FirstSeen)
	}
	return idx
}

// For returns the RateLimit of a workload of namespace ns with these
// labels, or nil.
func (i *RateLimitIndex) For(ns string, labels map[string]string) *config.RateLimit {
	if i == nil {
		return nil
	}
	for _, rl := range i.byNS[ns] {
		if config.HasSelector(rl.Spec.GetSelector()) && config.Selects(rl.Spec.GetSelector(), labels) {
			return rl
		}
	}
	for _, n := range []string{ns, i.rootNS} {
		for _, rl := range i.byNS[n] {
			if !config.HasSelector(rl.Spec.GetSelector()) {
				return rl
			}
		}
	}
	return nil
}
