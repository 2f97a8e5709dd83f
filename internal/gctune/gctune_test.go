package gctune

import (
	"context"
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"testing"
	"time"
)

func TestPercentFor(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		headroom, scanned uint64
		want              int
	}{
		{8 * mib, 4 * mib, 100},   // a small heap: its headroom at GOGC=100 is under the bound
		{8 * mib, 8 * mib, 100},   // exactly at the bound
		{8 * mib, 17 * mib, 45},   // a 1,000-service sidecar: 47 rounded down
		{8 * mib, 160 * mib, 25},  // the floor
		{64 * mib, 160 * mib, 40}, // 40 exactly
		{8 * mib, 0, 100},         // nothing measured yet
		{8 * mib, 8*mib + 1, 95},  // just over: rounded down
		{1 << 40, 1 << 20, 100},   // a bound far above the heap
	} {
		if got := percentFor(tc.headroom, tc.scanned, 25, 100); got != tc.want {
			t.Errorf("percentFor(%d, %d) = %d, want %d", tc.headroom, tc.scanned, got, tc.want)
		}
	}
}

func TestHeadroomFor(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		allocated uint64
		elapsed   time.Duration
		want      uint64
	}{
		{2 * mib, time.Second, 4 * mib},                     // little load: the minimum
		{6 * mib, time.Second, 6 * mib},                     // a second's allocation
		{3 * mib, 500 * time.Millisecond, 6 * mib},          // the same rate over half a second
		{20 * mib, time.Second, 8 * mib},                    // heavy load: the bound
		{6 * mib, 0, 8 * mib},                               // no time measured: the bound
		{0, time.Minute, 4 * mib},                           // idle
		{1 << 62, time.Nanosecond, 8 * mib},                 // no overflow
		{8*mib - 1, time.Second, 8*mib - 1},                 // just under the bound
		{4 * mib, 2 * time.Second, 4 * mib},                 // at the minimum
		{12 * mib, 1500 * time.Millisecond, 8 * mib},        // over the bound
		{5 * mib, 1250 * time.Millisecond, 4 * mib},         // 4 MiB a second
		{4*mib + 4*mib/5, 1200 * time.Millisecond, 4 * mib}, // 4 MiB a second, rounded
	} {
		if got := headroomFor(tc.allocated, tc.elapsed, time.Second, 4*mib, 8*mib); got != tc.want {
			t.Errorf("headroomFor(%d, %v) = %d, want %d", tc.allocated, tc.elapsed, got, tc.want)
		}
	}
}

// live holds the test's live heap.
var live [][]byte

// waitPercent runs collections until GOGC is want (the tuner sets it
// after a collection, on the cleanup goroutine), for at most 5 s.
func waitPercent(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for Percent() != want {
		if time.Now().After(deadline) {
			t.Fatalf("GOGC = %d after 5 s of collections, want %d", Percent(), want)
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
}

func TestStartBoundsHeadroomAndRestores(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	for range 64 {
		live = append(live, make([]byte, 1<<20)) // 64 MiB live
	}
	defer func() { live = nil }()

	var changes atomic.Int32
	stop := Start(context.Background(), Options{Headroom: 16 << 20, OnChange: func(old, new int) { changes.Add(1) }})
	defer stop()
	// 16 MiB over 64 MiB and a little of stacks and globals: 24 %, under the floor.
	waitPercent(t, DefaultMinPercent)

	stop()
	if got := Percent(); got != 100 {
		t.Errorf("GOGC after stop = %d, want 100 back", got)
	}
	runtime.GC()
	time.Sleep(20 * time.Millisecond)
	if got := Percent(); got != 100 {
		t.Errorf("GOGC a collection after stop = %d, want 100: the tuner went on", got)
	}
	if changes.Load() == 0 {
		t.Error("OnChange never called")
	}
}

func TestStartFollowsTheLiveHeap(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	for range 32 {
		live = append(live, make([]byte, 1<<20))
	}
	defer func() { live = nil }()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	Start(ctx, Options{Headroom: 16 << 20, MinPercent: 10})
	// 16 MiB over 32 MiB and more: just under 50.
	waitPercent(t, 45)

	live = append([][]byte(nil), live[:4]...) // 4 MiB: its headroom at GOGC=100 is under the bound
	waitPercent(t, 100)

	cancel() // stops as stop does
	deadline := time.Now().Add(5 * time.Second)
	for range 3 {
		runtime.GC()
	}
	for Percent() != 100 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := Percent(); got != 100 {
		t.Errorf("GOGC after the context ended = %d, want 100", got)
	}
}

// TestStartFollowsTheAllocationRate: with MinHeadroom, a process that
// hardly allocates between collections gets the smaller headroom, and
// one that allocates fast the bound.
func TestStartFollowsTheAllocationRate(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	for range 32 {
		live = append(live, make([]byte, 1<<20))
	}
	defer func() { live = nil }()
	// An interval so short that what is allocated in it is nothing: the
	// smaller headroom, 8 MiB over 32 MiB and more, just under 25.
	stop := Start(context.Background(), Options{Headroom: 16 << 20, MinHeadroom: 8 << 20, Interval: time.Nanosecond, MinPercent: 10})
	waitPercent(t, 20)
	stop() // puts GOGC back before it returns

	// An interval so long that any allocation fills the bound: 16 MiB
	// over 32 MiB and more, just under 50.
	stop = Start(context.Background(), Options{Headroom: 16 << 20, MinHeadroom: 8 << 20, Interval: 1000 * time.Hour, MinPercent: 10})
	defer stop()
	deadline := time.Now().Add(5 * time.Second)
	for Percent() != 45 {
		if time.Now().After(deadline) {
			t.Fatalf("GOGC = %d allocating fast, want 45 (the bound)", Percent())
		}
		sink = make([]byte, 64<<10)
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
}

// sink keeps an allocation from being optimised away.
var sink []byte

func TestStartKeepsAnExplicitSetting(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(-1)) // GOGC=off
	stop := Start(context.Background(), Options{Headroom: 1})
	defer stop()
	runtime.GC()
	time.Sleep(20 * time.Millisecond)
	if got := Percent(); got >= 0 {
		t.Errorf("GOGC = %d with the collector off, want it left off", got)
	}

	debug.SetGCPercent(100)
	stop2 := Start(context.Background(), Options{}) // no bound: nothing
	defer stop2()
	live = append(live, make([]byte, 64<<20))
	defer func() { live = nil }()
	runtime.GC()
	time.Sleep(20 * time.Millisecond)
	if got := Percent(); got != 100 {
		t.Errorf("GOGC = %d without a bound, want 100", got)
	}
}

// TestTight: while Tight is in force the headroom is TightHeadroom, down
// to TightMinPercent; calls nest; once every one is released the bound is
// the usual one again, and without a running Start Tight does nothing.
func TestTight(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	Tight()() // no tuner: nothing to do, nothing to break
	if got := Percent(); got != 100 {
		t.Fatalf("GOGC after Tight without Start = %d, want 100", got)
	}
	for range 32 {
		live = append(live, make([]byte, 1<<20))
	}
	defer func() { live = nil }()
	stop := Start(context.Background(), Options{Headroom: 16 << 20, TightHeadroom: 4 << 20, MinPercent: 10})
	defer stop()
	// 16 MiB over 32 MiB and more: just under 50.
	waitPercent(t, 45)

	outer := Tight()
	// 4 MiB over 32 MiB and more: just under 12.5, rounded down.
	if got := Percent(); got != 10 {
		t.Errorf("GOGC at once after Tight = %d, want 10", got)
	}
	inner := Tight()
	outer()
	outer() // a second call of one release counts once
	waitPercent(t, 10)
	inner()
	if got := Percent(); got != 45 {
		t.Errorf("GOGC once every Tight is released = %d, want 45", got)
	}

	// The floor: 4 MiB over 128 MiB is 3 %.
	for range 96 {
		live = append(live, make([]byte, 1<<20))
	}
	release := Tight()
	defer release()
	waitPercent(t, TightMinPercent)
	stop()
	if got := Percent(); got != 100 {
		t.Errorf("GOGC after stop within Tight = %d, want 100 back", got)
	}
	release()
	if got := Percent(); got != 100 {
		t.Errorf("GOGC after a release that came after stop = %d, want 100", got)
	}
}

// TestStartRaisesForABusySmallHeap: with MaxPercent, a heap too small to
// reach the bound keeps the starting GOGC while it hardly allocates, and
// gets a headroom of what it allocates in an Interval — up to the bound,
// so above GOGC=100 — while it allocates fast.
func TestStartRaisesForABusySmallHeap(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	live = append(live, make([]byte, 1<<20))
	defer func() { live = nil }()

	// An interval so short that nothing is allocated in it: GOGC=100,
	// whose headroom (a few MiB) is under the bounds.
	stop := Start(context.Background(), Options{Headroom: 256 << 20, MinHeadroom: 128 << 20, Interval: time.Nanosecond, MaxPercent: 800})
	for range 5 {
		sink = make([]byte, 64<<10)
		runtime.GC()
		time.Sleep(5 * time.Millisecond)
	}
	if got := Percent(); got != 100 {
		t.Errorf("GOGC = %d hardly allocating, want 100 kept", got)
	}
	stop()

	// An interval so long that any allocation fills the bound, 256 MiB
	// over a heap of a few: raised to MaxPercent.
	stop = Start(context.Background(), Options{Headroom: 256 << 20, MinHeadroom: 128 << 20, Interval: 1000 * time.Hour, MaxPercent: 800})
	deadline := time.Now().Add(5 * time.Second)
	for Percent() != 800 {
		if time.Now().After(deadline) {
			t.Fatalf("GOGC = %d allocating fast, want 800 (MaxPercent)", Percent())
		}
		sink = make([]byte, 64<<10)
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	if got := Percent(); got != 100 {
		t.Errorf("GOGC after stop = %d, want 100 back", got)
	}

	// Without MaxPercent the same load is never raised.
	stop = Start(context.Background(), Options{Headroom: 256 << 20, MinHeadroom: 128 << 20, Interval: 1000 * time.Hour})
	defer stop()
	for range 5 {
		sink = make([]byte, 64<<10)
		runtime.GC()
		time.Sleep(5 * time.Millisecond)
	}
	if got := Percent(); got != 100 {
		t.Errorf("GOGC = %d without MaxPercent, want 100", got)
	}
}

// TestReleaseWhenQuiet: free heap memory is returned once activity has
// stood still for the quiet time, once per quiet spell, and not while
// activity moves.
func TestReleaseWhenQuiet(t *testing.T) {
	var act atomic.Uint64
	releases := make(chan [2]uint64, 4)
	// held is live until the release prepares (as the xDS server drops
	// its idle buffers), so the heap measured before the release holds
	// it whatever the collector and the scavenger did meanwhile.
	var held atomic.Pointer[[][]byte]
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		ReleaseWhenQuiet(ctx, act.Load, 200*time.Millisecond, func() { held.Store(nil) },
			func(before, after uint64) { releases <- [2]uint64{before, after} })
	}()
	defer func() { cancel(); <-done }()

	// Busy: activity moves every 5 ms for 400 ms; nothing is released.
	for range 80 {
		act.Add(1)
		time.Sleep(5 * time.Millisecond)
	}
	select {
	case r := <-releases:
		t.Fatalf("released %v while activity moved", r)
	default:
	}

	// Memory that becomes garbage when the release prepares, then
	// quiet: one release, with less heap after.
	big := make([][]byte, 64)
	for i := range big {
		big[i] = make([]byte, 1<<20)
	}
	held.Store(&big) // the only reference from here on
	select {
	case r := <-releases:
		if r[1] >= r[0] {
			t.Errorf("heap resident %d bytes before the release, %d after: nothing returned", r[0], r[1])
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no release 5 s into a quiet spell")
	}
	select {
	case r := <-releases:
		t.Fatalf("released again (%v) within the same quiet spell", r)
	case <-time.After(600 * time.Millisecond):
	}

	// Activity, then quiet again: released again.
	act.Add(1)
	select {
	case <-releases:
	case <-time.After(5 * time.Second):
		t.Fatal("no release after the second quiet spell")
	}
}
