package overload

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseBytes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		err  bool
	}{
		{"268435456", 268435456, false},
		{"256Mi", 256 << 20, false},
		{"1Gi", 1 << 30, false},
		{"1.5Gi", 3 << 29, false},
		{"512Ki", 512 << 10, false},
		{"1G", 1e9, false},
		{"100M", 100e6, false},
		{"0", 0, false},
		{"", 0, true},
		{"Mi", 0, true},
		{"-1Mi", 0, true},
		{"lots", 0, true},
		{"1e9", 0, true},
		{"256MiB", 0, true},
	} {
		got, err := ParseBytes(tc.in)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestCgroupMemoryLimit(t *testing.T) {
	write := func(t *testing.T, path, s string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name   string
		proc   string
		files  map[string]string
		want   uint64
		noLim  bool
		errSub string
	}{
		{name: "v2", proc: "0::/kubepods/pod1/c1\n", files: map[string]string{"kubepods/pod1/c1/memory.max": "536870912\n"}, want: 512 << 20},
		{name: "v2 max", proc: "0::/x\n", files: map[string]string{"x/memory.max": "max\n"}, noLim: true},
		{name: "v2 namespaced root", proc: "0::/\n", files: map[string]string{"memory.max": "1073741824\n"}, want: 1 << 30},
		{name: "v1", proc: "4:memory:/docker/abc\n1:cpu:/\n", files: map[string]string{"memory/docker/abc/memory.limit_in_bytes": "268435456"}, want: 256 << 20},
		{name: "v1 unlimited", proc: "4:memory:/\n", files: map[string]string{"memory/memory.limit_in_bytes": "9223372036854771712"}, noLim: true},
		{name: "none", proc: "", noLim: true},
		{name: "garbage", proc: "0::/\n", files: map[string]string{"memory.max": "lots"}, errSub: `"lots" is not a number of bytes`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			proc := filepath.Join(dir, "cgroup")
			write(t, proc, tc.proc)
			root := filepath.Join(dir, "sys")
			for p, s := range tc.files {
				write(t, filepath.Join(root, p), s)
			}
			got, err := cgroupMemoryLimit(proc, root)
			switch {
			case tc.errSub != "":
				if err == nil || !strings.Contains(err.Error(), tc.errSub) {
					t.Errorf("err = %v, want one containing %q", err, tc.errSub)
				}
			case tc.noLim:
				if !errors.Is(err, ErrNoLimit) {
					t.Errorf("= %d, %v; want ErrNoLimit", got, err)
				}
			case err != nil || got != tc.want:
				t.Errorf("= %d, %v; want %d", got, err, tc.want)
			}
		})
	}
}

func TestThresholds(t *testing.T) {
	m, err := New(Options{MemoryLimit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		used              uint64
		reject, keepalive bool
	}{
		{100, false, false},
		{899, false, false},
		{900, true, false},
		{949, true, false},
		{950, true, true},
		{2000, true, true},
		{500, false, false}, // recovers
	} {
		m.update(tc.used)
		if m.RejectIncomingConnections() != tc.reject || m.DisableHTTPKeepalive() != tc.keepalive {
			t.Errorf("used %d: reject %v, disable keep-alive %v; want %v, %v", tc.used,
				m.RejectIncomingConnections(), m.DisableHTTPKeepalive(), tc.reject, tc.keepalive)
		}
	}
	var nilM *Manager
	if nilM.RejectIncomingConnections() || nilM.DisableHTTPKeepalive() {
		t.Error("a nil Manager has an action on")
	}
	for _, bad := range []float64{-0.1, 1.5} {
		if _, err := New(Options{RejectConnectionsAt: bad}); err == nil {
			t.Errorf("RejectConnectionsAt %v accepted", bad)
		}
	}
}

// TestMemoryPressure: real allocations push the sampled memory over the
// thresholds and the actions (and their gauges) turn on; freed, they turn
// off again. Bounded waits; no timing is asserted.
func TestMemoryPressure(t *testing.T) {
	reg := prometheus.NewRegistry()
	probe, err := New(Options{MemoryLimit: 1, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	base := probe.used()
	const ballastSize = 64 << 20
	// Over both thresholds with the ballast, under them without.
	limit := base + ballastSize
	m, err := New(Options{MemoryLimit: limit, RejectConnectionsAt: float64(base+ballastSize/2) / float64(limit),
		DisableKeepaliveAt: float64(base+ballastSize*3/4) / float64(limit), Interval: 10 * time.Millisecond, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	defer func() { cancel(); <-done }()

	wait := func(want bool) {
		t.Helper()
		for i := 0; i < 500; i++ {
			if m.RejectIncomingConnections() == want && m.DisableHTTPKeepalive() == want {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("actions = %v, %v; want %v (used %d, limit %d)", m.RejectIncomingConnections(), m.DisableHTTPKeepalive(), want, m.used(), limit)
	}
	wait(false)
	ballast := make([]byte, ballastSize)
	for i := range ballast {
		ballast[i] = 1 // touch it
	}
	wait(true)
	if g := gauge(t, reg, "envoy_overload_envoy_overload_actions_reject_incoming_connections_active"); g != 1 {
		t.Errorf("reject_incoming_connections active = %v, want 1", g)
	}
	if g := gauge(t, reg, "envoy_overload_envoy_resource_monitors_fixed_heap_pressure"); g < 0.9 {
		t.Errorf("fixed_heap pressure = %v, want about 1", g)
	}
	runtime.KeepAlive(ballast)
	ballast = nil
	runtime.GC()
	wait(false)
	if g := gauge(t, reg, "envoy_overload_envoy_overload_actions_disable_http_keepalive_active"); g != 0 {
		t.Errorf("disable_http_keepalive active = %v, want 0", g)
	}
}

func gauge(t *testing.T, g prometheus.Gatherer, name string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}
