package admin

import (
	"net/http"
	"runtime"
)

// HeapProfileRate is the heap profiler's sampling rate when it is on:
// Go's default, an allocation sampled per 512 KiB allocated on average.
const HeapProfileRate = 512 << 10

// heapProfiler turns the Go heap profiler's sampling on or off, as
// Envoy's POST /heapprofiler?enable=y|n turns its own: weft-proxy starts
// with it off (--heap-profiler turns it on from the start), because the
// profiler's records of where memory was allocated are never freed and
// cost a sidecar 1–7 MiB. /debug/pprof/heap and /debug/pprof/allocs then
// show what was allocated while it was on.
func heapProfiler(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	switch r.URL.Query().Get("enable") {
	case "y":
		runtime.MemProfileRate = HeapProfileRate
		_, _ = w.Write([]byte("heap profiler on: /debug/pprof/heap and /debug/pprof/allocs sample allocations from now on\n"))
	case "n":
		runtime.MemProfileRate = 0
		_, _ = w.Write([]byte("heap profiler off: no allocation is sampled from now on\n"))
	default:
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte("say ?enable=y or ?enable=n\n"))
	}
}
