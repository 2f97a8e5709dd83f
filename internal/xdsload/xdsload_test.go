package xdsload

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/encoding/protowire"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/controlplane"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestMeshIsValid loads the generated mesh as weft serve does: no
// diagnostics, every resource present, and the changes move what they say.
func TestMeshIsValid(t *testing.T) {
	dir := t.TempDir()
	spec := MeshSpec{Services: 12, Endpoints: 2, Spare: 1, Namespaces: 3}
	m, err := WriteMesh(dir, spec)
	if err != nil {
		t.Fatal(err)
	}
	load := func() *config.Snapshot {
		t.Helper()
		files, err := config.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		snap := config.NewStore(config.Options{Logger: slog.New(slog.DiscardHandler)}).LoadDir(files)
		for _, d := range snap.Diagnostics {
			t.Errorf("diagnostic: %v", d)
		}
		return snap
	}
	snap := load()
	if got := [4]int{len(snap.ServiceEntries), len(snap.DestinationRules), len(snap.VirtualServices), len(snap.WorkloadEntries)}; got != [4]int{12, 12, 12, 36} {
		t.Errorf("ServiceEntries, DestinationRules, VirtualServices, WorkloadEntries = %v, want [12 12 12 36]", got)
	}
	if n := len(m.Workloads()); n != 24 {
		t.Errorf("%d workloads to play, want 24 (the spare ones are not played)", n)
	}
	played := map[string]bool{}
	for _, w := range m.Workloads() {
		played[w.IP] = true
	}
	var seen string
	ip, err := m.ChangeEndpoint(5, 0, func(s string) { seen = s })
	if err != nil {
		t.Fatal(err)
	}
	if seen != ip || played[ip] {
		t.Errorf("ChangeEndpoint returned %q, told %q before writing; played addresses must not be reused", ip, seen)
	}
	mark, err := m.ChangeRoute(5, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "svc-0005.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"address: " + ip, `exact: "` + mark + `"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("svc-0005.yaml lacks %q", want)
		}
	}
	for _, w := range m.Workloads() {
		if !played[w.IP] {
			t.Errorf("a played workload moved: %+v", w)
		}
	}
	load()
}

func TestFirstString(t *testing.T) {
	b := protowire.AppendTag(nil, 3, protowire.VarintType)
	b = protowire.AppendVarint(b, 7)
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, "outbound|8080||a")
	if s, ok := firstString(b); !ok || s != "outbound|8080||a" {
		t.Errorf("firstString = %q, %v", s, ok)
	}
	if _, ok := firstString([]byte{0xff}); ok {
		t.Error("firstString of garbage succeeded")
	}
}

func TestPercentiles(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	ds = append(ds, -1)
	p := percentiles(ds)
	if p.P50 != 50*time.Millisecond || p.P99 != 99*time.Millisecond || p.Max != 100*time.Millisecond || p.Missing != 1 {
		t.Errorf("percentiles = %+v", p)
	}
}

// TestSmallRun runs the whole simulator small against an in-process
// control plane (20 proxies, 50 services): every proxy gets a complete
// config and ACKs every change, a config change reaches the proxies as
// route configurations and an endpoint change as assignments only. It
// asserts no timing.
func TestSmallRun(t *testing.T) {
	dir := t.TempDir()
	m, err := WriteMesh(dir, MeshSpec{Services: 50, Endpoints: 1, Spare: 1, Namespaces: 5})
	if err != nil {
		t.Fatal(err)
	}
	cp := startInProcess(t, dir)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	rep, err := Run(ctx, Options{
		Mesh: m, CP: cp, Fleet: FleetOptions{Proxies: 20, Conns: 4, Captured: true},
		Changes: 2, StormRate: 50, StormDuration: time.Second, Timeout: time.Minute,
		Settle: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := rep.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + b.String())
	for _, c := range []Change{rep.Config, rep.Endpoint} {
		if c.Latency.Missing != 0 {
			t.Errorf("%s: %d proxy ACKs missing", c.Kind, c.Latency.Missing)
		}
	}
	if rep.Storm == nil || rep.Storm.Converge.Missing != 0 || rep.Storm.Changes != 50 {
		t.Errorf("storm = %+v, want 50 changes every proxy ACKed", rep.Storm)
	}
	if rep.Reconnects != 0 {
		t.Errorf("%d streams were reopened; want every proxy on its first stream", rep.Reconnects)
	}
	if rep.Connect.PerProxy.Resources == 0 {
		t.Error("no resources pushed on connect")
	}
	if rep.Config.PerProxy.ByType[3] < 1 {
		t.Errorf("config change: %.1f RDS responses per proxy, want at least 1", rep.Config.PerProxy.ByType[3])
	}
	if e := rep.Endpoint.PerProxy.ByType; e[2] < 1 || e[0] != 0 || e[1] != 0 {
		t.Errorf("endpoint change: responses per proxy CDS, LDS, EDS, RDS = %v, want EDS only", e)
	}
}

// TestLongRun is the benchmark at scale, outside the default test run:
//
//	XDSLOAD_PROXIES=2000 XDSLOAD_SERVICES=1000 go test -run TestLongRun -timeout 30m -v ./internal/xdsload
//
// It builds weft and runs `weft serve` as its own process. XDSLOAD_STORM
// (a duration, default 60s) sizes the storm, XDSLOAD_CP_CPUS pins the
// control plane (taskset).
func TestLongRun(t *testing.T) {
	proxies := envInt(t, "XDSLOAD_PROXIES", 0)
	if proxies == 0 {
		t.Skip("set XDSLOAD_PROXIES (and XDSLOAD_SERVICES) to run the simulator at scale")
	}
	services := envInt(t, "XDSLOAD_SERVICES", 1000)
	storm := 60 * time.Second
	if s := os.Getenv("XDSLOAD_STORM"); s != "" {
		var err error
		if storm, err = time.ParseDuration(s); err != nil {
			t.Fatalf("XDSLOAD_STORM: %v", err)
		}
	}
	bin := filepath.Join(t.TempDir(), "weft")
	build := exec.CommandContext(t.Context(), "go", "build", "-o", bin, "weft.dev/weft/cmd/weft")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building weft: %v\n%s", err, out)
	}
	dir := t.TempDir()
	m, err := WriteMesh(dir, MeshSpec{Services: services, Endpoints: max(1, (proxies+services-1)/services), Spare: 1, Namespaces: 10})
	if err != nil {
		t.Fatal(err)
	}
	cp, err := StartProcess(t.Context(), ProcessOptions{Binary: bin, ConfigDir: dir, CPUs: os.Getenv("XDSLOAD_CP_CPUS")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.Stop() })
	rep, err := Run(t.Context(), Options{Mesh: m, CP: cp, Fleet: FleetOptions{Proxies: proxies, Captured: true},
		StormDuration: storm, Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if rep != nil {
		var b strings.Builder
		_ = rep.WriteTable(&b)
		t.Log("\n" + b.String())
	}
	if err != nil {
		t.Fatal(err)
	}
}

func envInt(t *testing.T, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return n
}

// startInProcess runs the control plane in this process (CPU and memory
// are then the test's, simulator included).
func startInProcess(t *testing.T, dir string) *ControlPlane {
	t.Helper()
	cp, err := controlplane.New(controlplane.Options{
		ConfigDir: dir, XDSAddress: "127.0.0.1:0", XDSPlaintextAddress: "127.0.0.1:0", StatusAddress: "127.0.0.1:0",
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cp.Run(ctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("control plane: %v", err)
		}
	})
	return &ControlPlane{XDSAddress: cp.XDSPlaintextAddr().String(), StatusAddress: cp.StatusAddr().String(), PID: os.Getpid()}
}
