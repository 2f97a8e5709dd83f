// Package gctune bounds the garbage collector's heap headroom. With
// GOGC=100 the Go runtime lets the heap grow to about twice the live heap
// before it collects: 4 MB of garbage on top of a sidecar's 4 MB live
// heap, but 17 MB on top of the 17 MB of a sidecar that holds a
// 1,000-service mesh, and what the heap grows to stays resident. A
// collection's cost grows with the live heap, not with the headroom, so
// a large heap can collect more often for a small share of its CPU.
//
// Start lowers GOGC after each collection so that the headroom — the
// heap goal minus the live heap — stays near a bound: GOGC = 100 ×
// bound / (live heap + stacks + globals), the runtime's own goal
// formula solved for GOGC, kept between a floor and the GOGC the process
// started with. A heap whose headroom at that GOGC is below the bound is
// left alone.
//
// With Options.MinHeadroom the bound follows the allocation rate: the
// headroom is what the process allocates in Options.Interval (measured
// over the last cycle), between MinHeadroom and Headroom. A proxy under
// little load then collects a large heap on a small headroom, and one
// under heavy load is not collected more often than about once an
// interval until the headroom reaches Headroom: the collector's CPU
// stays bounded by the live heap's marking once an interval, where a
// fixed small headroom would collect more often the more requests come.
// With Options.MaxPercent above the starting GOGC the same holds for a
// heap too small to reach the bound: while it allocates more in an
// Interval than its headroom at the starting GOGC, GOGC is raised (up to
// MaxPercent) so that the headroom is what it allocates in an Interval,
// at most Headroom. A small sidecar under thousands of requests a second
// otherwise collects several times a second, and a request that arrives
// while a collection marks waits for a processor the collector holds:
// those waits are the latency tail. Lightly loaded it keeps the starting
// GOGC, and its memory.
//
// Tight narrows the headroom to Options.TightHeadroom while a burst of
// work builds long-lived state (a proxy taking in a large configuration).
// Go's collector does not move objects: what such a burst keeps is laid
// down among what it throws away (decoded messages, scratch), and once
// the garbage is collected the kept objects are left spread over spans
// that are mostly free but cannot be returned — 5.8 MiB of them in a
// sidecar holding a 1,000-service mesh. Collected every TightHeadroom
// bytes, the burst reuses the slots of its own garbage and what it keeps
// ends up packed.
//
// ReleaseWhenQuiet is for a process whose work comes in bursts (a control
// plane pushing to thousands of proxies): once it has been quiet for a
// while, the garbage the last burst left is handed back to the operating
// system rather than kept resident until the next.
package gctune

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"
)

// Options configure Start.
type Options struct {
	// Headroom is the bound on the heap goal above the live heap, in
	// bytes. 0: Start does nothing.
	Headroom uint64
	// MinHeadroom, when set below Headroom, makes the bound follow the
	// allocation rate: what is allocated in Interval, at least
	// MinHeadroom, at most Headroom. 0: the bound is Headroom.
	MinHeadroom uint64
	// Interval is the time between collections MinHeadroom aims at
	// (0: DefaultInterval).
	Interval time.Duration
	// MinPercent is the lowest GOGC Start sets; 0: DefaultMinPercent.
	MinPercent int
	// MaxPercent, with MinHeadroom, is the highest GOGC Start sets for a
	// busy heap too small to reach the bound (package comment); at most
	// the starting GOGC (never raised) when not above it.
	MaxPercent int
	// TightHeadroom is the bound while Tight is in force; 0:
	// DefaultTightHeadroom. GOGC then goes as low as TightMinPercent.
	TightHeadroom uint64
	// OnChange, if set, is called with the old and new GOGC after each
	// change (from the runtime's cleanup goroutine, or Tight's caller;
	// keep it short).
	OnChange func(old, new int)
}

// DefaultTightHeadroom is Options.TightHeadroom unless told.
const DefaultTightHeadroom = 1 << 20

// TightMinPercent is the lowest GOGC Tight sets: at it a 20 MB live heap
// is still collected once per MB allocated.
const TightMinPercent = 5

// DefaultMinPercent is the lowest GOGC Start sets unless told: at it a
// live heap is collected each time it has grown by a quarter, which
// bounds the collection CPU however large the heap.
const DefaultMinPercent = 25

// DefaultInterval is Options.Interval unless told.
const DefaultInterval = time.Second

// tuner is one Start's state.
type tuner struct {
	o    Options
	base int // GOGC at Start: the most Start sets, restored by stop

	mu      sync.Mutex
	stopped bool
	cur     int
	tight   int              // Tight calls not yet released
	scanned uint64           // what the last collection scanned (live heap, stacks, globals); 0: none yet
	bound   uint64           // the headroom the last collection chose, outside Tight
	busy    uint64           // what was allocated per Interval over the last cycle, at most Headroom (MinHeadroom mode; 0: unknown)
	samples []metrics.Sample // sampleLive... below
	// The previous collection's end and the bytes allocated by then, for
	// the allocation rate (MinHeadroom).
	last       time.Time
	lastAllocs uint64
}

// The samples afterGC reads: what the collector scans, and the bytes
// allocated since the start.
const (
	sampleLive = iota
	sampleStacks
	sampleGlobals
	sampleAllocs
)

// Start bounds the heap headroom as the package comment says, until ctx
// is done or stop is called; then GOGC is what it was at Start. It does
// nothing (stop is a no-op) when o.Headroom is 0 or the collector is off
// (GOGC=off). GOGC is process-wide: one Start at a time.
func Start(ctx context.Context, o Options) (stop func()) {
	base := Percent()
	if o.Headroom == 0 || base <= 0 {
		return func() {}
	}
	if o.MinPercent <= 0 {
		o.MinPercent = DefaultMinPercent
	}
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.TightHeadroom == 0 {
		o.TightHeadroom = DefaultTightHeadroom
	}
	t := &tuner{o: o, base: base, cur: base, samples: []metrics.Sample{
		sampleLive:    {Name: "/gc/heap/live:bytes"},
		sampleStacks:  {Name: "/gc/scan/stack:bytes"},
		sampleGlobals: {Name: "/gc/scan/globals:bytes"},
		sampleAllocs:  {Name: "/gc/heap/allocs:bytes"},
	}}
	t.arm()
	active.Store(t)
	var once sync.Once
	stop = func() { once.Do(t.stop) }
	context.AfterFunc(ctx, stop)
	return stop
}

// Percent is the collector's current GOGC (negative: off).
func Percent() int {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 100
	}
	return int(int64(s[0].Value.Uint64()))
}

// sentinel is allocated for each collection to come: its cleanup runs
// once a collection has found it unreachable. Large enough not to be a
// tiny allocation (those share a block, and their cleanups may not run).
type sentinel [32]byte

// arm sets up the call of afterGC at the end of the next collection.
func (t *tuner) arm() {
	runtime.AddCleanup(new(sentinel), (*tuner).afterGC, t)
}

// afterGC sets GOGC from the collection just ended, and arms the next.
// Runs on the runtime's cleanup goroutine.
func (t *tuner) afterGC() {
	t.mu.Lock()
	if t.stopped {
		t.mu.Unlock()
		return
	}
	metrics.Read(t.samples)
	u := func(i int) uint64 {
		if v := t.samples[i].Value; v.Kind() == metrics.KindUint64 {
			return v.Uint64()
		}
		return 0
	}
	scanned := u(sampleLive) + u(sampleStacks) + u(sampleGlobals)
	now, allocs := time.Now(), u(sampleAllocs)
	headroom, busy := t.o.Headroom, uint64(0)
	if t.o.MinHeadroom > 0 && t.o.MinHeadroom < t.o.Headroom && !t.last.IsZero() && allocs >= t.lastAllocs {
		headroom = headroomFor(allocs-t.lastAllocs, now.Sub(t.last), t.o.Interval, t.o.MinHeadroom, t.o.Headroom)
		busy = headroomFor(allocs-t.lastAllocs, now.Sub(t.last), t.o.Interval, 0, t.o.Headroom)
	}
	t.busy = busy
	t.last, t.lastAllocs = now, allocs
	t.scanned, t.bound = scanned, headroom
	old, p := t.set()
	t.mu.Unlock()
	if p != old && t.o.OnChange != nil {
		t.o.OnChange(old, p)
	}
	t.arm()
}

// set sets GOGC for the last collection's measurements and the mode
// (Tight or not), returning the old and new values. t.mu is held.
func (t *tuner) set() (old, p int) {
	old, p = t.cur, t.base
	switch {
	case t.scanned == 0:
		// No collection yet: the heap is the process's start-up, and
		// the base GOGC's goal small.
	case t.tight > 0:
		p = percentFor(t.o.TightHeadroom, t.scanned, TightMinPercent, t.base)
	default:
		p = percentFor(t.bound, t.scanned, t.o.MinPercent, t.base)
		if t.o.MaxPercent > t.base && p == t.base && t.busy > t.scanned*uint64(t.base)/100 {
			// A busy heap whose headroom at the base GOGC is less than
			// an Interval's allocation: raised, to collect once an
			// Interval.
			p = percentFor(t.busy, t.scanned, t.base, t.o.MaxPercent)
		}
	}
	if p != old {
		debug.SetGCPercent(p)
		t.cur = p
	}
	return old, p
}

// active is the running Start's tuner, for Tight.
var active atomic.Pointer[tuner]

// Tight bounds the headroom to Options.TightHeadroom until release is
// called (calls nest), as the package comment says: for a burst of work
// that builds long-lived state. Without a running Start it does nothing.
// The collections it brings cost CPU in proportion to the live heap per
// TightHeadroom allocated; keep it to bursts that are rare and keep much,
// not to every request.
func Tight() (release func()) {
	t := active.Load()
	if t == nil {
		return func() {}
	}
	t.change(+1)
	var once sync.Once
	return func() { once.Do(func() { t.change(-1) }) }
}

// change adds d to the Tight calls in force and sets GOGC when the mode
// changes.
func (t *tuner) change(d int) {
	t.mu.Lock()
	if t.stopped {
		t.mu.Unlock()
		return
	}
	was := t.tight > 0
	t.tight += d
	old, p := t.cur, t.cur
	if was != (t.tight > 0) {
		old, p = t.set()
	}
	t.mu.Unlock()
	if p != old && t.o.OnChange != nil {
		t.o.OnChange(old, p)
	}
}

// headroomFor is the headroom that allocating at the rate of allocated
// bytes in elapsed fills in interval, kept within [min, max]. No time
// measured: max.
func headroomFor(allocated uint64, elapsed, interval time.Duration, min, max uint64) uint64 {
	if elapsed <= 0 {
		return max
	}
	h := float64(allocated) * float64(interval) / float64(elapsed)
	switch {
	case h >= float64(max):
		return max
	case h <= float64(min):
		return min
	}
	return uint64(h)
}

// percentFor is the GOGC whose heap goal is headroom above the live heap,
// scanned being the live heap plus the stacks and globals the collector
// scans (the runtime's goal: live + scanned × GOGC/100), rounded down to
// a multiple of 5 so that small changes of the heap leave it be, and
// kept within [min, max].
func percentFor(headroom, scanned uint64, min, max int) int {
	if scanned == 0 {
		return max
	}
	p := headroom * 100 / scanned
	if p >= uint64(max) {
		return max
	}
	q := int(p) / 5 * 5
	if q < min {
		return min
	}
	return q
}

// stop ends the tuning and puts GOGC back.
func (t *tuner) stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.stopped {
		return
	}
	t.stopped = true
	active.CompareAndSwap(t, nil)
	if t.cur != t.base {
		debug.SetGCPercent(t.base)
		t.cur = t.base
	}
}
