package main

import (
	"runtime"
	"strings"
	"testing"
)

func TestConcurrency(t *testing.T) {
	for _, tc := range []struct {
		n     int
		env   string
		avail int
		want  int // GOMAXPROCS to set; 0: leave the runtime's
	}{
		{n: 2, avail: 64, want: 2},          // the default on a big node
		{n: 1, avail: 2, want: 1},           // fewer than the CPUs
		{n: 2, avail: 2, want: 0},           // as many as the runtime takes: left to it (it follows CPU-limit changes)
		{n: 8, avail: 2, want: 0},           // never more than the CPUs (or the CPU limit)
		{n: 0, avail: 64, want: 0},          // every CPU
		{n: 1, env: "4", avail: 4, want: 0}, // GOMAXPROCS from the environment wins
		{n: 0, env: "1", avail: 1, want: 0}, //
		{n: 2, avail: 1, want: 0},           // a one-CPU container
	} {
		got, err := concurrency(tc.n, tc.env, tc.avail)
		if err != nil || got != tc.want {
			t.Errorf("concurrency(%d, GOMAXPROCS=%q, %d CPUs) = %d, %v; want %d", tc.n, tc.env, tc.avail, got, err, tc.want)
		}
	}
	if _, err := concurrency(-1, "", 2); err == nil {
		t.Error("concurrency(-1): no error")
	}
}

// TestConcurrencyFlag: --concurrency reaches the options; a gateway
// defaults to every CPU, a sidecar to defaultConcurrency.
func TestConcurrencyFlag(t *testing.T) {
	t.Setenv(gomaxprocsEnv, "")
	avail := runtime.GOMAXPROCS(0)
	want := func(n int) int { p, _ := concurrency(n, "", avail); return p }
	for _, tc := range []struct {
		args []string
		want int
	}{
		{nil, want(defaultConcurrency)},
		{[]string{"--concurrency", "1"}, want(1)},
		{[]string{"--concurrency", "0"}, 0},
		{[]string{"--gateway"}, 0},
		{[]string{"--gateway", "--concurrency", "1"}, want(1)},
	} {
		o, _ := parse(t, append([]string{"--workload", "w", "--xds-plaintext"}, tc.args...)...)
		if o.Concurrency != tc.want {
			t.Errorf("%q: Concurrency %d, want %d (%d CPUs)", tc.args, o.Concurrency, tc.want, avail)
		}
	}
	t.Setenv(gomaxprocsEnv, "1")
	if o, stderr := parse(t, "--workload", "w", "--xds-plaintext", "--concurrency", "1"); o.Concurrency != 0 || !strings.Contains(stderr, "ignoring --concurrency") {
		t.Errorf("GOMAXPROCS=1 --concurrency 1: Concurrency %d, stderr %q; want 0 and a warning", o.Concurrency, stderr)
	}
}

func TestConcurrencyMin(t *testing.T) {
	for _, tc := range []struct {
		n, procs int
		env      string
		avail    int
		want     int // 0: no scaling
	}{
		{n: 1, procs: 2, avail: 64, want: 1},          // the sidecar's default: 1 to 2 Ps
		{n: 1, procs: 0, avail: 2, want: 1},           // up to the runtime's own choice
		{n: 1, procs: 1, avail: 8, want: 0},           // --concurrency 1: nothing to scale
		{n: 2, procs: 2, avail: 8, want: 0},           // equal: fixed
		{n: 1, procs: 0, avail: 1, want: 0},           // a one-CPU container
		{n: 1, procs: 0, env: "4", avail: 4, want: 0}, // GOMAXPROCS from the environment: exactly that
		{n: 2, procs: 0, avail: 16, want: 2},          // a gateway between 2 and every CPU
	} {
		got, err := concurrencyMin(tc.n, tc.procs, tc.env, tc.avail)
		if err != nil || got != tc.want {
			t.Errorf("concurrencyMin(%d, procs %d, GOMAXPROCS=%q, %d CPUs) = %d, %v; want %d", tc.n, tc.procs, tc.env, tc.avail, got, err, tc.want)
		}
	}
	if _, err := concurrencyMin(-1, 2, "", 2); err == nil {
		t.Error("concurrencyMin(-1): no error")
	}
}

// TestConcurrencyMinFlag: --concurrency-min reaches the options.
func TestConcurrencyMinFlag(t *testing.T) {
	t.Setenv(gomaxprocsEnv, "")
	if runtime.GOMAXPROCS(0) < 2 {
		t.Skip("one CPU: nothing to scale")
	}
	o, _ := parse(t, "--workload", "w", "--xds-plaintext")
	if o.ConcurrencyMin != 0 {
		t.Errorf("default: ConcurrencyMin %d, want 0 (fixed)", o.ConcurrencyMin)
	}
	o, _ = parse(t, "--workload", "w", "--xds-plaintext", "--concurrency-min", "1")
	if o.ConcurrencyMin != 1 {
		t.Errorf("--concurrency-min 1: ConcurrencyMin %d, want 1", o.ConcurrencyMin)
	}
	o, _ = parse(t, "--workload", "w", "--xds-plaintext", "--concurrency-min", "2")
	if o.ConcurrencyMin != 0 {
		t.Errorf("--concurrency-min 2 with --concurrency 2: ConcurrencyMin %d, want 0 (fixed)", o.ConcurrencyMin)
	}
}

// TestHeapProfilerDefault: the heap profiler is off unless --heap-profiler
// turns it on; GODEBUG's memprofilerate wins over both.
func TestHeapProfilerDefault(t *testing.T) {
	old := runtime.MemProfileRate
	t.Cleanup(func() { runtime.MemProfileRate = old })
	for _, tc := range []struct {
		godebug string
		flag    bool
		start   int // the rate GODEBUG would have set
		want    int
	}{
		{"", false, 512 << 10, 0},
		{"", true, 512 << 10, 512 << 10},
		{"gctrace=1", false, 512 << 10, 0},
		{"gctrace=1, memprofilerate=1", false, 1, 1},
		{"memprofilerate=0", true, 0, 0},
	} {
		runtime.MemProfileRate = tc.start
		heapProfilerOff(tc.godebug)
		applyHeapProfiler(tc.flag, tc.godebug)
		if runtime.MemProfileRate != tc.want {
			t.Errorf("GODEBUG=%q --heap-profiler=%v: rate %d, want %d", tc.godebug, tc.flag, runtime.MemProfileRate, tc.want)
		}
	}
	if o, _ := parse(t, "--workload", "w", "--xds-plaintext", "--heap-profiler"); !o.HeapProfiler {
		t.Error("--heap-profiler not in the options")
	}
}
