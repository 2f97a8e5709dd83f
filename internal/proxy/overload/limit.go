package overload

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// ErrNoLimit is returned by CgroupMemoryLimit when the process's cgroup
// sets no memory limit (or there is no cgroup to read).
var ErrNoLimit = errors.New("no cgroup memory limit")

// unlimited: a cgroup limit at or above this is no limit (cgroup v1
// writes 2^63 rounded down to a page for "none").
const unlimited = 1 << 62

// CgroupMemoryLimit returns the memory limit of the process's cgroup:
// cgroup v2's memory.max, or v1's memory.limit_in_bytes, read under
// /sys/fs/cgroup at the path /proc/self/cgroup gives (or at the root, as
// in a container with its own cgroup namespace). ErrNoLimit when there is
// none.
func CgroupMemoryLimit() (uint64, error) {
	return cgroupMemoryLimit("/proc/self/cgroup", "/sys/fs/cgroup")
}

func cgroupMemoryLimit(procCgroup, root string) (uint64, error) {
	var candidates []string
	if b, err := os.ReadFile(procCgroup); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			parts := strings.SplitN(line, ":", 3)
			if len(parts) != 3 {
				continue
			}
			switch {
			case parts[0] == "0" && parts[1] == "":
				candidates = append(candidates, filepath.Join(root, parts[2], "memory.max"))
			case slices.Contains(strings.Split(parts[1], ","), "memory"):
				candidates = append(candidates, filepath.Join(root, "memory", parts[2], "memory.limit_in_bytes"))
			}
		}
	}
	candidates = append(candidates, filepath.Join(root, "memory.max"), filepath.Join(root, "memory", "memory.limit_in_bytes"))
	for _, p := range candidates {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := strings.TrimSpace(string(b))
		if s == "max" {
			return 0, ErrNoLimit
		}
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %q is not a number of bytes", p, s)
		}
		if n >= unlimited {
			return 0, ErrNoLimit
		}
		return n, nil
	}
	return 0, ErrNoLimit
}

// ParseBytes reads a size: a number of bytes, or a number with a binary
// (Ki, Mi, Gi, Ti) or decimal (k, K, M, G, T) suffix, as Kubernetes
// quantities: "268435456", "256Mi", "1G", "1.5Gi".
func ParseBytes(s string) (uint64, error) {
	t := strings.TrimSpace(s)
	mult := 1.0
	for _, u := range []struct {
		suffix string
		m      float64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40}, {"k", 1e3}, {"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSuffix(t, u.suffix), u.m
			break
		}
	}
	f, err := strconv.ParseFloat(t, 64)
	if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) || t == "" || strings.ContainsAny(t, "eExXpP_") {
		return 0, errors.New("want a number of bytes, e.g. 268435456 or 256Mi")
	}
	v := f * mult
	if v >= math.MaxUint64 {
		return 0, errors.New("too large")
	}
	return uint64(v), nil
}
