package reqctx

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type key struct{}

func waitClosed(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: not done after 5 s", what)
	}
}

func TestValuesDeadlineAndCancel(t *testing.T) {
	deadline := time.Now().Add(time.Hour)
	parent, cancelParent := context.WithDeadline(context.WithValue(context.Background(), key{}, "v"), deadline)
	defer cancelParent()
	c := New(parent)

	if got := c.Value(key{}); got != "v" {
		t.Errorf("Value = %v, want the parent's v", got)
	}
	if d, ok := c.Deadline(); !ok || !d.Equal(deadline) {
		t.Errorf("Deadline = %v, %v; want the parent's", d, ok)
	}
	if err := c.Err(); err != nil {
		t.Fatalf("Err before cancel = %v", err)
	}
	done := c.Done()
	select {
	case <-done:
		t.Fatal("Done closed before cancel")
	default:
	}
	cancelParent() // not followed: the owner cancels
	if err := c.Err(); err != nil {
		t.Fatalf("Err after the parent's cancel = %v, want nil (the owner cancels)", err)
	}
	c.Cancel()
	waitClosed(t, done, "Done made before the cancel")
	waitClosed(t, c.Done(), "Done asked after the cancel")
	if !errors.Is(c.Err(), context.Canceled) {
		t.Errorf("Err = %v, want Canceled", c.Err())
	}
	c.CancelWith(context.DeadlineExceeded) // only the first cancel counts
	if !errors.Is(c.Err(), context.Canceled) {
		t.Errorf("Err after a second cancel = %v, want Canceled still", c.Err())
	}
	if got := context.Cause(c); !errors.Is(got, context.Canceled) {
		t.Errorf("Cause = %v, want Canceled, its own error", got)
	}
	// A live cancelable parent: Cause is still the Context's own.
	live, cancelLive := context.WithCancel(context.Background())
	defer cancelLive()
	c3 := New(live)
	c3.Cancel()
	if got := context.Cause(c3); !errors.Is(got, context.Canceled) {
		t.Errorf("Cause under a live parent = %v, want Canceled", got)
	}
	c4 := New(live)
	grand, cancelGrand := context.WithCancel(c4)
	defer cancelGrand()
	c4.Cancel()
	waitClosed(t, grand.Done(), "child of a Context under a live parent")
	if got := context.Cause(grand); !errors.Is(got, context.Canceled) {
		t.Errorf("Cause of a child under a live parent = %v, want Canceled", got)
	}

	c2 := New(context.Background())
	c2.CancelWith(context.DeadlineExceeded)
	waitClosed(t, c2.Done(), "Done of a context cancelled before anyone asked")
	if c2.Err() != context.DeadlineExceeded {
		t.Errorf("Err = %v, want DeadlineExceeded", c2.Err())
	}
}

func TestWatch(t *testing.T) {
	c := New(context.Background())
	var ran [4]atomic.Int32
	var wg sync.WaitGroup
	stops := make([]Stop, 4)
	for i := range stops {
		wg.Add(1)
		stops[i] = AfterFunc(c, func() { ran[i].Add(1); wg.Done() })
	}
	// Stop the first and third (one in a slot, one beyond them): they
	// never run; a second Stop says it did nothing.
	for _, i := range []int{0, 2} {
		if !stops[i].Stop() {
			t.Errorf("Stop %d before cancel = false, want true", i)
		}
		if stops[i].Stop() {
			t.Errorf("second Stop %d = true, want false", i)
		}
		wg.Done()
	}
	// A new watch takes the freed slot; the old Stop of that slot must
	// not remove it.
	wg.Add(1)
	var late atomic.Int32
	lateStop := c.Watch(func() { late.Add(1); wg.Done() })
	if stops[0].Stop() {
		t.Error("an old Stop removed the watch that took its slot")
	}
	c.Cancel()
	wg.Wait()
	for i, want := range []int32{0, 1, 0, 1} {
		if got := ran[i].Load(); got != want {
			t.Errorf("watch %d ran %d times, want %d", i, got, want)
		}
	}
	if late.Load() != 1 {
		t.Errorf("the watch in the reused slot ran %d times, want 1", late.Load())
	}
	if lateStop.Stop() || stops[1].Stop() {
		t.Error("Stop after the function started = true, want false")
	}

	// Places beyond the slots are reused once stopped, and an old Stop of
	// such a place does not remove its new watch.
	c5 := New(context.Background())
	var runs atomic.Int32
	var w5 sync.WaitGroup
	w5.Add(3)
	inc := func() { runs.Add(1); w5.Done() }
	c5.Watch(inc)
	c5.Watch(inc)
	old := c5.Watch(func() { t.Error("stopped watch ran") })
	old.Stop()
	c5.Watch(inc)
	if old.Stop() {
		t.Error("an old Stop removed the watch that took its place")
	}
	if len(c5.more) != 1 {
		t.Errorf("%d places beyond the slots, want 1 (the stopped one's reused)", len(c5.more))
	}
	c5.Cancel()
	w5.Wait()
	if runs.Load() != 3 {
		t.Errorf("%d watches ran, want 3", runs.Load())
	}

	// A watch of a cancelled context runs at once.
	done := make(chan struct{})
	if AfterFunc(c, func() { close(done) }).Stop() {
		t.Error("Stop of a watch made after cancel = true")
	}
	waitClosed(t, done, "watch made after cancel")

	// The zero Stop and another context's Stop.
	if (Stop{}).Stop() {
		t.Error("zero Stop = true")
	}
	std, cancel := context.WithCancel(context.Background())
	if !AfterFunc(std, func() { t.Error("stopped function ran") }).Stop() {
		t.Error("Stop of a standard context's watch = false, want true")
	}
	cancel()
}

// TestDerived: a context derived from a Context is cancelled with it,
// through AfterFunc (the context package's afterFuncer), and reports the
// cause.
func TestDerived(t *testing.T) {
	c := New(context.Background())
	child, cancel := context.WithTimeout(c, time.Hour)
	defer cancel()
	grand, cancel2 := context.WithCancel(child)
	defer cancel2()
	stopped, stopCancel := context.WithCancel(c)
	stopCancel() // unregisters its watch of c

	c.Cancel()
	waitClosed(t, grand.Done(), "grandchild")
	if !errors.Is(child.Err(), context.Canceled) || !errors.Is(context.Cause(grand), context.Canceled) {
		t.Errorf("child Err = %v, grandchild Cause = %v; want Canceled", child.Err(), context.Cause(grand))
	}
	if !errors.Is(stopped.Err(), context.Canceled) {
		t.Errorf("a child cancelled by its own hand: Err = %v", stopped.Err())
	}
	c.mu.Lock()
	for i, w := range c.fns {
		if w.f != nil {
			t.Errorf("slot %d still holds a function after cancel", i)
		}
	}
	c.mu.Unlock()
}

// TestOneAllocation: making, watching, stopping and cancelling a request's
// context is one allocation, where WithCancel and context.AfterFunc take
// seven.
func TestOneAllocation(t *testing.T) {
	parent, cancel := context.WithCancel(context.WithValue(context.Background(), key{}, 1))
	defer cancel()
	f := func() {}
	allocs := testing.AllocsPerRun(100, func() {
		c := New(parent)
		s := AfterFunc(c, f)
		s.Stop()
		s = AfterFunc(c, f)
		s.Stop()
		_ = c.Value(key{})
		c.Cancel()
		_ = c.Err()
	})
	if allocs != 1 {
		t.Errorf("allocations per request = %v, want 1", allocs)
	}
}

// TestConcurrent runs watches, stops, a wait on Done and a cancel at once
// (for -race).
func TestConcurrent(t *testing.T) {
	for range 50 {
		c := New(context.Background())
		var ran, stoppedN atomic.Int32
		var wg, fired sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				fired.Add(1)
				s := c.Watch(func() { ran.Add(1); fired.Done() })
				if s.Stop() {
					stoppedN.Add(1)
					fired.Done()
				}
			}()
		}
		wg.Add(2)
		go func() { defer wg.Done(); <-c.Done() }()
		go func() { defer wg.Done(); c.Cancel() }()
		wg.Wait()
		fired.Wait()
		if ran.Load()+stoppedN.Load() != 8 {
			t.Fatalf("ran %d + stopped %d, want 8", ran.Load(), stoppedN.Load())
		}
	}
}
