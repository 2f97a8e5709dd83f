package cluster

import (
	"slices"
	"strconv"

	"github.com/cespare/xxhash/v2"
)

// Envoy's ring hash defaults and bounds.
const (
	defaultMinRingSize = 1024
	defaultMaxRingSize = 8 << 20
	defaultMaglevSize  = 65537
)

// ringHash is Envoy's RING_HASH (ketama-style, xxHash64): each endpoint
// owns points on a ring in proportion to its weight; a request takes the
// first point at or after its hash. Built once per endpoint set.
type ringHash struct {
	endpoints []*Endpoint
	hashes    []uint64 // sorted
	owners    []uint32 // owners[i] owns hashes[i]
}

var _ balancer = (*ringHash)(nil)

func newRingHash(eps []*Endpoint, minSize, maxSize uint64) *ringHash {
	r := &ringHash{endpoints: eps}
	if len(eps) == 0 {
		return r
	}
	var total float64
	minW := 1.0
	for _, e := range eps {
		total += float64(max(e.weight, 1))
	}
	for _, e := range eps {
		minW = min(minW, float64(max(e.weight, 1))/total)
	}
	// As Envoy: scale so the lightest endpoint gets at least one point and
	// the ring has at least minSize points, at most maxSize.
	scale := min(float64(maxSize), max(float64(minSize), 1/minW))
	type point struct {
		h uint64
		o uint32
	}
	var pts []point
	var target, current float64
	for i, e := range eps {
		target += float64(max(e.weight, 1)) / total * scale
		n := uint64(target - current + 0.5)
		current += float64(n)
		for j := range n {
			pts = append(pts, point{xxhash.Sum64String(e.addr + "_" + strconv.FormatUint(j, 10)), uint32(i)})
		}
	}
	slices.SortFunc(pts, func(a, b point) int {
		switch {
		case a.h < b.h:
			return -1
		case a.h > b.h:
			return 1
		}
		return int(a.o) - int(b.o)
	})
	r.hashes = make([]uint64, len(pts))
	r.owners = make([]uint32, len(pts))
	for i, p := range pts {
		r.hashes[i], r.owners[i] = p.h, p.o
	}
	return r
}

// pick walks clockwise from the request's point to the first available
// endpoint: the same endpoint a ring without the unavailable ones gives.
func (r *ringHash) pick(k HashKey, ok func(*Endpoint) bool) *Endpoint {
	n := len(r.hashes)
	if n == 0 {
		return nil
	}
	if !k.OK {
		return randomAvailable(r.endpoints, ok)
	}
	i, _ := slices.BinarySearch(r.hashes, k.Hash)
	for j := range n {
		if e := r.endpoints[r.owners[(i+j)%n]]; ok(e) {
			return e
		}
	}
	return nil
}

// maglev is Envoy's MAGLEV: a lookup table of a prime size in which each
// endpoint fills slots along its own permutation, in proportion to its
// weight. Built once per endpoint set.
type maglev struct {
	endpoints []*Endpoint
	table     []uint32
}

var _ balancer = (*maglev)(nil)

func newMaglev(eps []*Endpoint, size uint64) *maglev {
	m := &maglev{endpoints: eps}
	if len(eps) == 0 {
		return m
	}
	offset := make([]uint64, len(eps))
	skip := make([]uint64, len(eps))
	next := make([]uint64, len(eps))  // position in each endpoint's permutation
	count := make([]uint64, len(eps)) // slots each endpoint holds
	var maxW float64
	for i, e := range eps {
		offset[i] = xxhash.Sum64String(e.addr) % size
		skip[i] = xxhash.Sum64String(e.addr+"_skip")%(size-1) + 1
		maxW = max(maxW, float64(max(e.weight, 1)))
	}
	const empty = ^uint32(0)
	m.table = make([]uint32, size)
	for i := range m.table {
		m.table[i] = empty
	}
	filled := uint64(0)
	for round := 1.0; filled < size; round++ {
		for i, e := range eps {
			// Weighted: an endpoint takes a slot per round only while its
			// share (weight/max weight per round) is not used up.
			for float64(count[i]) < round*float64(max(e.weight, 1))/maxW && filled < size {
				// size is prime, so the permutation visits every slot.
				for {
					c := (offset[i] + next[i]*skip[i]) % size
					next[i]++
					if m.table[c] == empty {
						m.table[c] = uint32(i)
						filled++
						count[i]++
						break
					}
				}
			}
		}
	}
	return m
}

func (m *maglev) pick(k HashKey, ok func(*Endpoint) bool) *Endpoint {
	n := uint64(len(m.table))
	if n == 0 {
		return nil
	}
	if !k.OK {
		return randomAvailable(m.endpoints, ok)
	}
	i := k.Hash % n
	if e := m.endpoints[m.table[i]]; ok(e) {
		return e
	}
	// An unavailable endpoint's slots fall to the next slots in the table
	// (deterministic per key).
	for j := uint64(1); j < n; j++ {
		if e := m.endpoints[m.table[(i+j)%n]]; ok(e) {
			return e
		}
	}
	return nil
}
