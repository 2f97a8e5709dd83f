package dataplane

import (
	"fmt"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	previouspriorities "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/priority/previous_priorities/v3"
)

// previousPrioritiesName is the one retry_priority the proxy implements
// (Istio's retryRemoteLocalities).
const previousPrioritiesName = "envoy.retry_priorities.previous_priorities"

// compileRetryPriority returns the update_frequency of a
// previous_priorities retry_priority; 0 when there is none.
func compileRetryPriority(rp *route.RetryPolicy_RetryPriority) (int, error) {
	if rp == nil {
		return 0, nil
	}
	if rp.GetName() != previousPrioritiesName {
		return 0, fmt.Errorf("retry_priority (%s): unsupported", rp.GetName())
	}
	var cfg previouspriorities.PreviousPrioritiesConfig
	if tc := rp.GetTypedConfig(); tc != nil {
		if err := tc.UnmarshalTo(&cfg); err != nil {
			return 0, fmt.Errorf("retry_priority (%s): %w", rp.GetName(), err)
		}
	}
	if cfg.GetUpdateFrequency() <= 0 {
		return 0, fmt.Errorf("retry_priority (%s): update_frequency must be greater than 0", rp.GetName())
	}
	return int(min(cfg.GetUpdateFrequency(), 1<<20)), nil
}

// prevPriorities is one request's state of Envoy's previous_priorities
// retry priority: every freq attempted hosts, the priorities of the hosts
// attempted so far are left out of the priority load, so retries move on
// to the next priority with available endpoints. When that leaves nothing
// available, the exclusions are dropped and counting starts over, as
// Envoy does. The zero value is ready; it lives on the forwarding
// goroutine's stack and is only touched on retries.
type prevPriorities struct {
	skip uint64 // levels left out (bit i: level i)
	from int    // index in tried of the first host attempted since the last reset
}

// update returns the levels to leave out of the priority load for the next
// attempt, given the endpoints attempted so far (in order).
func (pp *prevPriorities) update(p *picker, tried []*endpoint, freq int) uint64 {
	n := len(tried) - pp.from // hosts attempted since the last reset
	switch {
	case n < freq:
		return 0 // too few attempts yet: the unmodified priority load
	case n%freq != 0:
		return pp.skip // between updates: the last adjusted load
	}
	for _, e := range tried[pp.from:] {
		if i := p.level(e); i >= 0 && i < 64 {
			pp.skip |= 1 << i
		}
	}
	var buf [8]uint64
	if p.priorityLoadsExcept(buf[:0], pp.skip) == nil {
		// Every priority with an available endpoint was attempted: fall
		// back to the unmodified load rather than fail the retry.
		pp.skip, pp.from = 0, len(tried)
	}
	return pp.skip
}

// level is the index of e's priority level, -1 when e is not in the picker
// (the endpoints changed since it was attempted).
func (p *picker) level(e *endpoint) int {
	for i, l := range p.levels {
		for _, x := range l.all {
			if x == e {
				return i
			}
		}
	}
	return -1
}
