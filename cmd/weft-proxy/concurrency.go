package main

import (
	"fmt"
	"os"
	"runtime"
)

// defaultConcurrency is --concurrency's default: the Go runtime's Ps
// (GOMAXPROCS) the proxy runs with, as Istio's sidecar runs Envoy with
// two worker threads (ProxyConfig.concurrency: 2). Without it the runtime
// would take every CPU of the node (or the container's CPU limit): a
// sidecar on a 64-CPU node without a limit would keep 64 Ps, and at the
// moderate, bursty load of a sidecar Go's scheduler then spends more
// time waking and parking threads for the goroutines handing a request
// to each other than on the request (docs/benchmarks.md, "Fewer Ps, and
// the HTTP/2 path").
const defaultConcurrency = 2

// gomaxprocsEnv is the Go runtime's own setting, which wins over
// --concurrency.
const gomaxprocsEnv = "GOMAXPROCS"

// concurrency resolves --concurrency n: the GOMAXPROCS to set, or 0 to
// leave the runtime's own choice, which is avail (runtime.GOMAXPROCS(0)
// at start: the CPUs, or the container's CPU limit, or GOMAXPROCS from
// the environment). env is the environment's GOMAXPROCS ("" when unset):
// an operator who sets it gets exactly that. n == 0 means every
// available CPU, as Istio's ProxyConfig.concurrency 0. More than avail
// is capped at avail (more Ps than CPUs only adds contention), and
// avail itself leaves the runtime alone, so it keeps following a
// changing CPU limit.
func concurrency(n int, env string, avail int) (int, error) {
	switch {
	case n < 0:
		return 0, fmt.Errorf("--concurrency %d: want the number of worker threads, or 0 for every CPU", n)
	case env != "", n == 0, n >= avail:
		return 0, nil
	}
	return n, nil
}

// concurrencyMin resolves --concurrency-min n against the resolved
// --concurrency procs (0: the runtime's choice, avail Ps): the fewest Ps
// package procscale may run the proxy on, or 0 when the Ps stay as they
// are — n unset (0), GOMAXPROCS set in the environment (the operator's
// exact choice), or a maximum no larger than n.
func concurrencyMin(n, procs int, env string, avail int) (int, error) {
	if n < 0 {
		return 0, fmt.Errorf("--concurrency-min %d: want at least 1 worker thread, or 0 to keep --concurrency", n)
	}
	if n == 0 {
		return 0, nil
	}
	most := procs
	if most == 0 {
		most = avail
	}
	if env != "" || most <= n {
		return 0, nil
	}
	return n, nil
}

// applyConcurrency sets GOMAXPROCS to procs (0: unchanged). Process-wide:
// for the command, before the proxy starts.
func applyConcurrency(procs int) {
	if procs > 0 {
		runtime.GOMAXPROCS(procs)
	}
}

// gomaxprocsFromEnv is the environment's GOMAXPROCS, "" when unset.
func gomaxprocsFromEnv() string { return os.Getenv(gomaxprocsEnv) }
