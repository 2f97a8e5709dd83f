package procscale

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// TestNext walks the decision through load that rises and falls.
func TestNext(t *testing.T) {
	o := Options{Min: 1, Max: 8, UpCores: 0.5, DownCores: 0.3}
	o.defaults()
	s := &scaler{o: o, max: 8, cur: 2}
	steps := []struct {
		cores float64
		want  int
	}{
		{0.1, 2}, {0.1, 2}, {0.1, 2}, {0.1, 2}, // light, not yet five in a row
		{0.1, 1},                               // the fifth: down to what 0.1 core needs
		{0.4, 1},                               // under half a core on one P: stays
		{0.6, 2},                               // over: up at once, at least doubled
		{0.1, 2}, {0.1, 2}, {0.7, 2}, {0.1, 2}, // a busier interval starts the count again
		{0.1, 2}, {0.1, 2}, {0.1, 2}, {0.1, 1},
		{0.95, 2},                              // one P saturated
		{1.9, 4},                               // two saturated: enough for 0.5 core each
		{3.9, 8},                               // at least doubled, at most Max
		{9, 8},                                 // at Max
		{1.0, 8}, {1.0, 8}, {1.0, 8}, {1.0, 8}, // light for 8 Ps
		{1.0, 4}, // down to what 1.0 core needs (0.3 each)
		{0.5, 4}, {0.5, 4}, {0.5, 4}, {0.5, 4},
		{0.5, 2},
	}
	for i, st := range steps {
		n := s.next(st.cores)
		s.cur = n
		if n != st.want {
			t.Fatalf("step %d (%.2f cores): %d Ps, want %d", i, st.cores, n, st.want)
		}
	}
}

// TestMinHolds: the Ps never go below Min.
func TestMinHolds(t *testing.T) {
	o := Options{Min: 2, Max: 4}
	o.defaults()
	s := &scaler{o: o, max: 4, cur: 4}
	for range 20 {
		s.cur = s.next(0)
	}
	if s.cur != 2 {
		t.Fatalf("idle: %d Ps, want Min 2", s.cur)
	}
}

// TestStartFollowsTheLoad runs the scaler on this process: idle, it goes
// down to one P; busy, it comes back to the maximum.
func TestStartFollowsTheLoad(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var changes atomic.Int32
	stop := Start(ctx, Options{Min: 1, Max: 2, Interval: 20 * time.Millisecond, DownAfter: 3, OnChange: func(old, new int) { changes.Add(1) }})
	defer stop()
	waitFor(t, "one P while idle", func() bool { return runtime.GOMAXPROCS(0) == 1 })

	var quit atomic.Bool
	defer quit.Store(true)
	for range 2 {
		go func() {
			for x := 0; !quit.Load(); x++ {
				_ = x * x
			}
		}()
	}
	waitFor(t, "two Ps while busy", func() bool { return runtime.GOMAXPROCS(0) == 2 })
	quit.Store(true)
	stop()
	if changes.Load() < 2 {
		t.Errorf("OnChange called %d times, want at least 2", changes.Load())
	}
}

// TestNothingToScale: a maximum at the minimum starts nothing.
func TestNothingToScale(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	defer Start(ctx, Options{Min: 2, Max: 2, Interval: time.Millisecond, DownAfter: 1})()
	time.Sleep(50 * time.Millisecond)
	if n := runtime.GOMAXPROCS(0); n != 2 {
		t.Fatalf("GOMAXPROCS %d, want 2 left alone", n)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 15 s (GOMAXPROCS %d)", what, runtime.GOMAXPROCS(0))
		}
		time.Sleep(5 * time.Millisecond)
	}
}
