package dataplane

import (
	"sort"
	"sync/atomic"
)

// maxSchedule bounds the length of a weighted round-robin schedule; larger
// weight sums are scaled down proportionally.
const maxSchedule = 1 << 16

// endpoint is one upstream host of a cluster. Immutable.
type endpoint struct {
	addr   string // host:port, dialled and used as the request URL host
	weight uint32
	dst    *dstLabels // outbound destination metric labels
	conns  *epConns   // idle HTTP/1.1 connections; nil for h2c clusters
}

// picker is a lock-free weighted round-robin balancer: an immutable schedule
// in which each endpoint appears in proportion to its weight, spread evenly
// (earliest-deadline-first order, like smooth weighted round robin), walked
// by an atomic counter that lives with the cluster so it survives endpoint
// updates. pick is safe for concurrent use.
type picker struct {
	endpoints []*endpoint // healthy endpoints of the chosen priority
	schedule  []uint32    // indexes into endpoints; nil when all weights are equal
	next      *atomic.Uint64
}

func newPicker(eps []*endpoint, next *atomic.Uint64) *picker {
	p := &picker{endpoints: eps, next: next}
	if len(eps) < 2 {
		return p
	}
	equal := true
	for _, e := range eps[1:] {
		if e.weight != eps[0].weight {
			equal = false
			break
		}
	}
	if equal {
		return p
	}
	p.schedule = buildSchedule(eps)
	return p
}

// buildSchedule lays out sum(weights) slots, interleaved so that no endpoint
// gets a burst: nginx's smooth weighted round robin when that is cheap
// (O(total·n)), else earliest-deadline-first where slot k of an endpoint with
// weight w has the virtual deadline (k+0.5)/w.
func buildSchedule(eps []*endpoint) []uint32 {
	weights := make([]uint64, len(eps))
	var total uint64
	for i, e := range eps {
		weights[i] = uint64(max(e.weight, 1))
		total += weights[i]
	}
	if total > maxSchedule {
		scaled := uint64(0)
		for i := range weights {
			weights[i] = max(weights[i]*maxSchedule/total, 1)
			scaled += weights[i]
		}
		total = scaled
	}
	if total*uint64(len(weights)) <= 1<<22 {
		return smoothSchedule(weights, total)
	}
	type slot struct {
		deadline float64
		idx      uint32
	}
	slots := make([]slot, 0, total)
	for i, w := range weights {
		for k := uint64(0); k < w; k++ {
			slots = append(slots, slot{(float64(k) + 0.5) / float64(w), uint32(i)})
		}
	}
	sort.SliceStable(slots, func(a, b int) bool { return slots[a].deadline < slots[b].deadline })
	out := make([]uint32, len(slots))
	for i, s := range slots {
		out[i] = s.idx
	}
	return out
}

// pick returns the next endpoint, or nil when there is no healthy endpoint.
func (p *picker) pick() *endpoint {
	switch n := len(p.endpoints); n {
	case 0:
		return nil
	case 1:
		return p.endpoints[0]
	default:
		i := p.next.Add(1)
		if p.schedule != nil {
			return p.endpoints[p.schedule[i%uint64(len(p.schedule))]]
		}
		return p.endpoints[i%uint64(n)]
	}
}

// smoothSchedule runs nginx's smooth weighted round robin for one full cycle.
func smoothSchedule(weights []uint64, total uint64) []uint32 {
	cur := make([]int64, len(weights))
	out := make([]uint32, total)
	for s := range out {
		best := 0
		for i, w := range weights {
			cur[i] += int64(w)
			if cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= int64(total)
		out[s] = uint32(best)
	}
	return out
}
