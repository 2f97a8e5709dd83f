package ratelimit

import (
	"sync"
	"sync/atomic"
	"time"
)

// clock is the time buckets run on: monotonic nanoseconds since the
// package started. A plain int64 keeps a bucket's state one atomic word.
var clockBase = time.Now()

func now() int64 { return int64(time.Since(clockBase)) }

// bucket is a token bucket (Envoy's TokenBucket) refilled continuously at
// tokensPerFill per fillInterval, as Envoy's atomic token bucket: a token
// accrues every perToken nanoseconds, up to max. Safe for concurrent use
// without locks: its whole state is t, the instant at which the bucket
// would have been empty had nothing been taken since; the tokens
// available at now are (now-t)/perToken, capped at max. Taking one is a
// compare-and-swap that moves t forward by perToken.
type bucket struct {
	max      int64
	perToken int64 // nanoseconds per token, ≥ 1
	t        atomic.Int64
}

func newBucket(p bucketParams, at int64) *bucket {
	b := &bucket{max: p.max, perToken: p.perToken}
	b.t.Store(at - p.max*p.perToken) // full
	return b
}

// bucketParams are a compiled TokenBucket.
type bucketParams struct {
	max, perToken int64
}

// rate is the bucket's fill rate in tokens per second, for ordering
// descriptors (the most restrictive is tried first).
func (p bucketParams) rate() float64 { return float64(time.Second) / float64(p.perToken) }

// take takes one token at instant at. It reports whether there was one,
// and the tokens left after the take.
func (b *bucket) take(at int64) (ok bool, remaining int64) {
	for {
		t := b.t.Load()
		base := t
		if floor := at - b.max*b.perToken; base < floor {
			base = floor // full: tokens beyond max are not kept
		}
		avail := (at - base) / b.perToken
		if avail < 1 {
			return false, 0
		}
		if b.t.CompareAndSwap(t, base+b.perToken) {
			return true, avail - 1
		}
	}
}

// resetSeconds is how long until the bucket holds one more token than it
// does at instant at, in whole seconds rounded up (0 when it is full):
// the x-ratelimit-reset of draft-polli-ratelimit-headers-03.
func (b *bucket) resetSeconds(at int64) int64 {
	elapsed := at - b.t.Load()
	if elapsed >= b.max*b.perToken {
		return 0
	}
	wait := b.perToken - elapsed%b.perToken
	if elapsed < 0 {
		wait = -elapsed + b.perToken
	}
	return (wait + int64(time.Second) - 1) / int64(time.Second)
}

// dynamicBuckets are the buckets of a wildcard descriptor (an entry with
// no value): one per distinct value seen, the max most recently used
// kept (Envoy's max_dynamic_descriptors LRU). A value evicted and seen
// again starts with a full bucket, as in Envoy; memory stays bounded by
// max buckets whatever the number of clients. A short mutex guards the
// map and recency list; the bucket itself is taken outside it.
type dynamicBuckets struct {
	params bucketParams
	max    int

	mu         sync.Mutex
	byValue    map[string]*lruEntry
	head, tail *lruEntry // most recently used first
}

type lruEntry struct {
	value      string
	b          *bucket
	prev, next *lruEntry
}

func newDynamicBuckets(p bucketParams, max int) *dynamicBuckets {
	return &dynamicBuckets{params: p, max: max, byValue: make(map[string]*lruEntry, min(max, 1024))}
}

// get returns the bucket of value, creating it (full) at instant at.
func (d *dynamicBuckets) get(value string, at int64) *bucket {
	d.mu.Lock()
	defer d.mu.Unlock()
	if e := d.byValue[value]; e != nil {
		d.unlink(e)
		d.pushFront(e)
		return e.b
	}
	e := &lruEntry{value: value, b: newBucket(d.params, at)}
	if len(d.byValue) >= d.max {
		old := d.tail
		d.unlink(old)
		delete(d.byValue, old.value)
	}
	d.byValue[value] = e
	d.pushFront(e)
	return e.b
}

// len is how many values have a bucket.
func (d *dynamicBuckets) len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.byValue)
}

func (d *dynamicBuckets) unlink(e *lruEntry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		d.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		d.tail = e.prev
	}
	e.prev, e.next = nil, nil
}

func (d *dynamicBuckets) pushFront(e *lruEntry) {
	e.next = d.head
	if d.head != nil {
		d.head.prev = e
	}
	d.head = e
	if d.tail == nil {
		d.tail = e
	}
}
