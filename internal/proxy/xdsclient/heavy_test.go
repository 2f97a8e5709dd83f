package xdsclient

import (
	"sync"
	"testing"
	"time"
)

// heavyLog records Options.HeavyWork: how many calls are in force, and
// for each Apply whether one was.
type heavyLog struct {
	mu       sync.Mutex
	open     int
	calls    int
	duringOK []bool // per Apply: within a HeavyWork call
}

func (h *heavyLog) work() (done func()) {
	h.mu.Lock()
	h.open++
	h.calls++
	h.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			h.mu.Lock()
			h.open--
			h.mu.Unlock()
		})
	}
}

func (h *heavyLog) snapshot() (open, calls int, during []bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.open, h.calls, append([]bool(nil), h.duringOK...)
}

// TestHeavyWorkAroundLargeResponses: a first set whose assignment comes
// in a response over LargeResponse is taken in and applied within one
// HeavyWork call, released once applied; a small change after it is
// applied without one.
func TestHeavyWorkAroundLargeResponses(t *testing.T) {
	ctx := testCtx(t)
	g := startGCP(t, "127.0.0.1:0")
	// ~25 bytes an endpoint: 4,000 endpoints are ~100 KB.
	g.set(ctx, "1", map[string]int{"big": 4000, "small": 1})
	h := &heavyLog{}
	_, rec := startClient(t, g.addr, func(o *Options) {
		o.Protocol = ""
		o.HeavyWork = h.work
		inner := o.Applier
		o.Applier = ApplierFunc(func(r *Resources) error {
			h.mu.Lock()
			h.duringOK = append(h.duringOK, h.open > 0)
			h.mu.Unlock()
			return inner.Apply(r)
		})
	})
	res := rec.next(ctx, t)
	if n := endpointsOf(res, "big"); n != 4000 {
		t.Fatalf("first set: %d endpoints of big, want 4000", n)
	}
	waitFor(ctx, t, "the HeavyWork call released", func() bool { open, _, _ := h.snapshot(); return open == 0 })
	if _, calls, during := h.snapshot(); calls == 0 || len(during) != 1 || !during[0] {
		t.Fatalf("first set: %d HeavyWork calls, applies within one: %v; want the apply within one", calls, during)
	}

	_, before, _ := h.snapshot()
	g.set(ctx, "2", map[string]int{"big": 4000, "small": 2})
	nextWith(ctx, t, rec, "the small change", func(r *Resources) bool { return endpointsOf(r, "small") == 2 })
	time.Sleep(20 * time.Millisecond) // the loop releases after Apply returns
	open, calls, during := h.snapshot()
	if calls != before || open != 0 || len(during) != 2 || during[1] {
		t.Errorf("a small change: %d HeavyWork calls (was %d), %d open, applies within one: %v; want none", calls, before, open, during)
	}
}
