package cluster

// PrevPriorities is one request's state of Envoy's previous_priorities
// retry priority: every freq attempted hosts, the priorities of the hosts
// attempted so far are left out of the priority load, so retries move on
// to the next priority with available endpoints. When that leaves nothing
// available, the exclusions are dropped and counting starts over, as
// Envoy does. The zero value is ready; it lives on the forwarding
// goroutine's stack and is only touched on retries.
type PrevPriorities struct {
	skip uint64 // levels left out (bit i: level i)
	from int    // index in tried of the first host attempted since the last reset
}

// Update returns the levels to leave out of c's priority load for the
// next attempt (PickExcept's skip), given the endpoints attempted so far,
// in order, and the retry priority's update_frequency.
func (pp *PrevPriorities) Update(c *Cluster, tried []*Endpoint, freq int) uint64 {
	return pp.update(c.pick(), tried, freq)
}

// update returns the levels to leave out of the priority load for the next
// attempt, given the endpoints attempted so far (in order).
func (pp *PrevPriorities) update(p *picker, tried []*Endpoint, freq int) uint64 {
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
func (p *picker) level(e *Endpoint) int {
	for i, l := range p.levels {
		for _, x := range l.all {
			if x == e {
				return i
			}
		}
	}
	return -1
}
