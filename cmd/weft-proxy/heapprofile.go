package main

import (
	"runtime"
	"strings"

	"weft.dev/weft/internal/proxy/admin"
)

// The Go runtime samples allocations for the heap profiler from the
// start, and keeps a record of every allocating stack it sampled for the
// life of the process: 1 MiB of a small loaded sidecar, 7 MiB of one
// holding a 1,000-service mesh (docs/benchmarks.md, "Memory, fourth
// pass"). Like Envoy's heap profiler, weft-proxy's is off unless asked
// for: --heap-profiler from the start, or POST /heapprofiler?enable=y on
// the admin endpoint while it runs. GODEBUG=memprofilerate=N, the
// runtime's own setting, wins over both.

// heapProfilerOff stops the sampling, unless godebug (the environment's
// GODEBUG) sets memprofilerate. main calls it first: what package
// initialization sampled before it stays, the rest of the process's life
// is not sampled.
func heapProfilerOff(godebug string) {
	if !setsMemProfileRate(godebug) {
		runtime.MemProfileRate = 0
	}
}

// applyHeapProfiler turns the sampling on at the runtime's default rate
// for --heap-profiler, unless godebug sets memprofilerate.
func applyHeapProfiler(on bool, godebug string) {
	if on && !setsMemProfileRate(godebug) {
		runtime.MemProfileRate = admin.HeapProfileRate
	}
}

func setsMemProfileRate(godebug string) bool {
	for kv := range strings.SplitSeq(godebug, ",") {
		if strings.HasPrefix(strings.TrimSpace(kv), "memprofilerate=") {
			return true
		}
	}
	return false
}
