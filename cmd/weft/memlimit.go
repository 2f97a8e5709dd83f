package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"

	"weft.dev/weft/internal/proxy/overload"
)

// cgroupMemoryFraction of the cgroup's memory limit is the control
// plane's soft memory limit with --memory-limit auto: the rest is for
// what the Go runtime does not count (thread stacks of cgo, the binary).
const cgroupMemoryFraction = 0.9

// minMemoryLimit is the smallest --memory-limit: below it the garbage
// collector would run without pause at any mesh size.
const minMemoryLimit = 32 << 20

// memoryLimit reads --memory-limit: a size, 0 (off), or auto — 90 % of
// the cgroup's memory limit, off without one.
func memoryLimit(v string) (int64, error) {
	if v == "auto" {
		n, err := overload.CgroupMemoryLimit()
		if errors.Is(err, overload.ErrNoLimit) {
			return 0, nil
		}
		if err != nil {
			return 0, fmt.Errorf("--memory-limit auto: %w", err)
		}
		return int64(float64(n) * cgroupMemoryFraction), nil
	}
	n, err := overload.ParseBytes(v)
	if err != nil {
		return 0, fmt.Errorf("--memory-limit %q: %w", v, err)
	}
	if n > 0 && n < minMemoryLimit {
		return 0, fmt.Errorf("--memory-limit %q: at least 32Mi, or 0 for off", v)
	}
	return int64(n), nil
}

// applyMemoryLimit sets the Go runtime's soft memory limit to limit
// (bytes; 0 leaves the runtime's default) unless GOMEMLIMIT is set, which
// wins. The garbage collector then runs more often as the heap nears the
// limit, so garbage does not grow the process past it; the live heap
// itself is not bounded by it.
func applyMemoryLimit(limit int64, log *slog.Logger) {
	if limit <= 0 {
		return
	}
	if env := os.Getenv("GOMEMLIMIT"); env != "" {
		log.Info("GOMEMLIMIT is set: --memory-limit ignored", "GOMEMLIMIT", env)
		return
	}
	debug.SetMemoryLimit(limit)
	log.Info("soft memory limit", "bytes", limit)
}
