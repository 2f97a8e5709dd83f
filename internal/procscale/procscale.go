// Package procscale runs a process on fewer of the Go runtime's Ps
// (GOMAXPROCS) while it is lightly loaded, and on more as its load
// grows, up to a maximum.
//
// Every P beyond the first costs a lightly loaded proxy CPU on each
// request: when a goroutine is made runnable and a P is idle, the
// scheduler wakes a second thread to look for work (a futex wake-up on
// another CPU) that finds none and sleeps again. A sidecar at 1,000
// requests/s spent 5–15 % less CPU a request with one P than with two;
// but on one P a request that arrives while the P is busy (a garbage
// collection's marking, another request) waits, and its p99 was higher
// (docs/benchmarks.md, "Fewer threads while the load is light"). Under
// load one P is one core of Go code, and a busy proxy needs more.
//
// Start samples the process's CPU time (getrusage) once an Interval. If
// the process used more than UpCores per P it runs on, it gets more Ps
// at once: enough for UpCores each, at least twice as many, at most Max.
// If for DownAfter intervals in a row it used less than DownCores per P
// of a smaller count, it goes down to that count, at least Min. The gap
// between the two thresholds and the delay down keep it from changing
// back and forth; a change stops the world for a few microseconds.
package procscale

import (
	"context"
	"math"
	"runtime"
	"syscall"
	"time"
)

// Options configure Start.
type Options struct {
	// Min and Max bound the Ps. Max 0 is the runtime's default
	// (runtime.SetDefaultGOMAXPROCS: the CPUs, or the container's CPU
	// limit, followed as it changes while at the maximum).
	Min, Max int
	// Interval between samples; 0: one second.
	Interval time.Duration
	// UpCores and DownCores are the CPU per P, in cores, above which the
	// process gets more Ps and below which it may run on fewer; 0: 0.25
	// and 0.15. On one P, requests that arrive together wait for each
	// other: a proxy using a third of a core on one P answered 0.1 ms
	// later at the median than on two, so a P is added well before it
	// is busy.
	UpCores, DownCores float64
	// DownAfter is how many intervals in a row must be light before the
	// Ps go down; 0: five.
	DownAfter int
	// OnChange, if set, is called after each change.
	OnChange func(old, new int)
}

func (o *Options) defaults() {
	if o.Interval <= 0 {
		o.Interval = time.Second
	}
	if o.UpCores <= 0 {
		o.UpCores = 0.25
	}
	if o.DownCores <= 0 {
		o.DownCores = 0.15
	}
	if o.DownAfter <= 0 {
		o.DownAfter = 5
	}
	if o.Min < 1 {
		o.Min = 1
	}
}

// Start scales the Ps, starting at the maximum, until ctx ends or the
// returned stop is called; stop waits for the scaler to end and leaves
// the Ps where they are. With Max at or below Min (after the default is
// resolved) it does nothing.
func Start(ctx context.Context, o Options) (stop func()) {
	o.defaults()
	s := &scaler{o: o, max: o.Max}
	if s.max <= 0 {
		runtime.SetDefaultGOMAXPROCS()
		s.max = runtime.GOMAXPROCS(0)
	}
	if s.max <= o.Min {
		return func() {}
	}
	s.cur = runtime.GOMAXPROCS(0)
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.run(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

type scaler struct {
	o        Options
	max, cur int
	light    int // intervals in a row below the down threshold
}

func (s *scaler) run(ctx context.Context) {
	t := time.NewTicker(s.o.Interval)
	defer t.Stop()
	last, lastCPU := time.Now(), cpuTime()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			c := cpuTime()
			if wall := now.Sub(last); wall > 0 && c >= lastCPU {
				s.sample(float64(c-lastCPU) / float64(wall))
			}
			last, lastCPU = now, c
		}
	}
}

// sample takes the cores used over the last interval and changes the Ps
// if it must.
func (s *scaler) sample(cores float64) {
	if n := s.next(cores); n != s.cur {
		old := s.cur
		s.set(n)
		if s.o.OnChange != nil {
			s.o.OnChange(old, n)
		}
	}
}

// next is the count of Ps for an interval that used cores, with s.cur
// and s.light as they stand; it updates s.light.
func (s *scaler) next(cores float64) int {
	if cores > s.o.UpCores*float64(s.cur) && s.cur < s.max {
		s.light = 0
		return min(s.max, max(2*s.cur, int(math.Ceil(cores/s.o.UpCores))))
	}
	want := max(s.o.Min, int(math.Ceil(cores/s.o.DownCores)))
	if want >= s.cur {
		s.light = 0
		return s.cur
	}
	if s.light++; s.light < s.o.DownAfter {
		return s.cur
	}
	s.light = 0
	return want
}

func (s *scaler) set(n int) {
	if n == s.max && s.o.Max <= 0 {
		runtime.SetDefaultGOMAXPROCS() // follows the CPU limit again
	} else {
		runtime.GOMAXPROCS(n)
	}
	s.cur = n
}

// cpuTime is the CPU the process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
