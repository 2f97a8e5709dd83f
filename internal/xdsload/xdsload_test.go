package xdsload

import (
	"cmp"
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
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protowire"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/controlplane"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry"
	"weft.dev/weft/internal/registry/consul"
	"weft.dev/weft/internal/testenv"
	"weft.dev/weft/internal/xds/contract"
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
// control plane (20 proxies, 50 services), once per protocol: every proxy
// gets a complete config and ACKs every change, a config change reaches
// the proxies as route configurations and an endpoint change as
// assignments only — with delta, only the few assignments that changed,
// where state of the world sends every one the proxy has. It asserts no
// timing.
func TestSmallRun(t *testing.T) {
	const services = 50
	reps := map[Protocol]*Report{}
	for _, proto := range []Protocol{Delta, SotW} {
		t.Run(string(proto), func(t *testing.T) {
			rep := smallRun(t, proto, services)
			reps[proto] = rep
			if rep.Protocol != proto {
				t.Errorf("report says protocol %q, want %q", rep.Protocol, proto)
			}
		})
	}
	d, s := reps[Delta], reps[SotW]
	if d == nil || s == nil {
		return
	}
	// Each service has a cluster and a subset cluster per version, each
	// with its assignment: SotW re-sends them all (and the proxy's own
	// inbound ones); delta only those of the changed service.
	if got := d.Endpoint.PerProxy.Resources; got > 3 {
		t.Errorf("delta: %.1f resources per proxy per endpoint change, want at most 3 (the changed service's assignments)", got)
	}
	if got := s.Endpoint.PerProxy.Resources; got < 3*services {
		t.Errorf("sotw: %.1f resources per proxy per endpoint change, want every assignment (at least %d)", got, 3*services)
	}
	if d.Endpoint.PerProxy.KiB*10 > s.Endpoint.PerProxy.KiB {
		t.Errorf("delta pushed %.1f KiB per proxy per endpoint change, sotw %.1f: want delta under a tenth", d.Endpoint.PerProxy.KiB, s.Endpoint.PerProxy.KiB)
	}
}

// TestSmallRunVHDS runs the simulator small with delta proxies that take
// their virtual hosts by VHDS, as weft-proxy: the fleet converges (each
// proxy waited for a first VirtualHost response), a config change is
// timed in, and reaches the proxies as, the changed service's virtual
// hosts only — no route configuration — and an endpoint change sends no
// virtual hosts.
func TestSmallRunVHDS(t *testing.T) {
	rep := smallRunWith(t, Delta, 50, ScopeMesh, nil, true)
	if !rep.VHDS || rep.Config.Type != "VHDS" || rep.Endpoint.Type != "EDS" {
		t.Errorf("report says VHDS %v, config change timed in %q, endpoint change in %q; want true, VHDS, EDS", rep.VHDS, rep.Config.Type, rep.Endpoint.Type)
	}
	if got := rep.Connect.PerProxy.ByType[vhdsIndex]; got < 1 {
		t.Errorf("connect: %.2f VirtualHost responses per proxy, want at least 1", got)
	}
	c := rep.Config.PerProxy
	if c.ByType[3] != 0 || c.ByType[vhdsIndex] < 1 {
		t.Errorf("config change: responses per proxy CDS, LDS, EDS, RDS, VHDS = %v, want VHDS and no RDS", c.ByType)
	}
	if c.Resources > 3 {
		t.Errorf("config change: %.1f resources per proxy, want the changed service's virtual hosts only (at most 3)", c.Resources)
	}
	if got := rep.Endpoint.PerProxy.ByType[vhdsIndex]; got != 0 {
		t.Errorf("endpoint change: %.2f VirtualHost responses per proxy, want none", got)
	}
	var b strings.Builder
	if err := rep.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"delta ADS with VHDS", "VHDS 0.0"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("the table lacks %q", want)
		}
	}
}

// TestFleetVHDS: VHDS is asked of the server (the node's client_features)
// by delta proxies that want it only; state of the world has none, and
// its config changes are timed in route configurations.
func TestFleetVHDS(t *testing.T) {
	w := []Workload{{Name: "a-0", Service: "a", Namespace: "ns-00", Version: "v1", IP: "10.0.0.1"}}
	for _, tc := range []struct {
		proto     Protocol
		vhds      bool
		wantVHDS  bool
		routeType string
	}{
		{Delta, true, true, "VHDS"},
		{Delta, false, false, "RDS"},
		{SotW, true, false, "RDS"},
		{"", true, true, "VHDS"}, // "" is delta
	} {
		f, err := NewFleet(FleetOptions{Address: "127.0.0.1:1", Proxies: 1, Protocol: tc.proto, VHDS: tc.vhds}, w)
		if err != nil {
			t.Fatal(err)
		}
		p := f.Proxies()[0]
		id, err := contract.ParseNode(p.Identity.Node())
		if err != nil {
			t.Fatal(err)
		}
		if f.VHDS() != tc.wantVHDS || id.VHDS != tc.wantVHDS || p.vhds != tc.wantVHDS || f.RouteType() != tc.routeType {
			t.Errorf("%q with VHDS %v: fleet VHDS %v, node VHDS %v, proxy VHDS %v, route type %q; want VHDS %v, %q",
				tc.proto, tc.vhds, f.VHDS(), id.VHDS, p.vhds, f.RouteType(), tc.wantVHDS, tc.routeType)
		}
		if got := p.typeOf([]byte(typeVirtualHost)); (got == vhdsIndex) != tc.wantVHDS {
			t.Errorf("%q with VHDS %v: VirtualHost is type %d", tc.proto, tc.vhds, got)
		}
	}
}

// TestSmallRunNamespaceScope: with namespace scoping a change is sent to,
// and waited for on, the proxies of the service's namespace only.
func TestSmallRunNamespaceScope(t *testing.T) {
	rep := smallRunScoped(t, Delta, 50, ScopeNamespace)
	if rep.Scope != ScopeNamespace {
		t.Errorf("report says scope %q", rep.Scope)
	}
	// 20 proxies over 5 namespaces.
	for _, c := range []Change{rep.Config, rep.Endpoint} {
		if c.Watched != 4 {
			t.Errorf("%s: waited for %.1f proxies, want the 4 of the namespace", c.Kind, c.Watched)
		}
	}
	if got := rep.Config.PerProxy.ByType[3]; got > 0.5 {
		t.Errorf("config change: %.2f RDS responses per proxy of the fleet, want about 0.2 (4 of 20 proxies)", got)
	}
}

// TestSmallRunConsul runs the simulator small with the spare endpoints
// in a real Consul agent's catalog (skipped without consul outside CI): an
// endpoint change is a catalog write, reaches every proxy as a delta of
// the changed service's assignments only, and the report says where the
// endpoints lived.
func TestSmallRunConsul(t *testing.T) {
	c := testenv.Consul(t)
	reg, err := NewConsulRegistry(c.Addr)
	if err != nil {
		t.Fatal(err)
	}
	rep := smallRunWith(t, Delta, 20, ScopeMesh, reg, false)
	if rep.EndpointSource != SourceConsul {
		t.Errorf("report says endpoint source %q, want consul", rep.EndpointSource)
	}
	if got := rep.Endpoint.PerProxy.Resources; got > 3 {
		t.Errorf("endpoint change: %.1f resources per proxy, want the changed service's assignments only (at most 3)", got)
	}
}

func smallRun(t *testing.T, proto Protocol, services int) *Report {
	return smallRunScoped(t, proto, services, ScopeMesh)
}

func smallRunScoped(t *testing.T, proto Protocol, services int, scope Scope) *Report {
	return smallRunWith(t, proto, services, scope, nil, false)
}

// smallRunWith is smallRunScoped with the spare endpoints in consul (nil:
// in files) and, with vhds, delta proxies that take virtual hosts by VHDS.
func smallRunWith(t *testing.T, proto Protocol, services int, scope Scope, consulReg *ConsulRegistry, vhds bool) *Report {
	dir := t.TempDir()
	var reg SpareRegistry
	var regs []registry.Source
	if consulReg != nil {
		reg = consulReg
		src, err := consul.New(consul.Options{Address: consulReg.Addr, Domain: ConsulDomain, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		regs = append(regs, src)
	}
	m, err := WriteMeshWith(dir, MeshSpec{Services: services, Endpoints: 1, Spare: 1, Namespaces: 5}, reg)
	if err != nil {
		t.Fatal(err)
	}
	cp := startInProcess(t, dir, scope, regs...)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	rep, err := Run(ctx, Options{
		Mesh: m, CP: cp, Fleet: FleetOptions{Proxies: 20, Conns: 4, Captured: true, Protocol: proto, VHDS: vhds,
			Decode: map[Protocol]Decode{SotW: DecodeFull}[proto]}, // both decode paths run
		Changes: 2, StormRate: 50, StormDuration: time.Second, Timeout: time.Minute,
		Settle: 200 * time.Millisecond, Scope: scope,
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
	if rep.VHDS != vhds || (!vhds && rep.Connect.PerProxy.ByType[vhdsIndex] != 0) {
		t.Errorf("report says VHDS %v with %.2f VirtualHost responses per proxy on connect; want VHDS %v", rep.VHDS, rep.Connect.PerProxy.ByType[vhdsIndex], vhds)
	}
	// Every proxy watched is sent the change, in the type that carries
	// routes: all of them, or a namespace's.
	reached := rep.Config.Watched / float64(rep.Proxies)
	rt := 3 // RDS
	if vhds {
		rt = vhdsIndex
	}
	if rep.Config.Type != shortTypes[rt] || rep.Config.PerProxy.ByType[rt] < reached {
		t.Errorf("config change timed in %q: %.2f %s responses per proxy, want at least %.2f", rep.Config.Type, rep.Config.PerProxy.ByType[rt], shortTypes[rt], reached)
	}
	if e := rep.Endpoint.PerProxy.ByType; e[2] < reached || e[0] != 0 || e[1] != 0 {
		t.Errorf("endpoint change: responses per proxy CDS, LDS, EDS, RDS = %v, want EDS only (at least %.2f)", e, reached)
	}
	return rep
}

// TestLongRun is the benchmark at scale, outside the default test run:
//
//	XDSLOAD_PROXIES=2000 XDSLOAD_SERVICES=1000 go test -run TestLongRun -timeout 30m -v ./internal/xdsload
//
// It builds weft and runs `weft serve` as its own process. XDSLOAD_STORM
// (a duration, default 60s) sizes the storm, XDSLOAD_CP_CPUS pins the
// control plane (taskset), XDSLOAD_PROTOCOL (delta or sotw, default
// delta) chooses the ADS variant and XDSLOAD_VHDS (default true, as
// bench/xdsload's --vhds) whether delta proxies take VHDS.
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
	proto, err := ParseProtocol(cmp.Or(os.Getenv("XDSLOAD_PROTOCOL"), string(Delta)))
	if err != nil {
		t.Fatalf("XDSLOAD_PROTOCOL: %v", err)
	}
	vhds, err := strconv.ParseBool(cmp.Or(os.Getenv("XDSLOAD_VHDS"), "true"))
	if err != nil {
		t.Fatalf("XDSLOAD_VHDS: %v", err)
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
	rep, err := Run(t.Context(), Options{Mesh: m, CP: cp, Fleet: FleetOptions{Proxies: proxies, Captured: true, Protocol: proto, VHDS: vhds},
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
func startInProcess(t *testing.T, dir string, scope Scope, regs ...registry.Source) *ControlPlane {
	t.Helper()
	return startInProcessCA(t, dir, "", scope, regs...)
}

// startInProcessCA is startInProcess with the mesh CA kept in caDir ("":
// in memory).
func startInProcessCA(t *testing.T, dir, caDir string, scope Scope, regs ...registry.Source) *ControlPlane {
	t.Helper()
	egress := mesh.EgressScopeMesh
	if scope == ScopeNamespace {
		egress = mesh.EgressScopeNamespace
	}
	cp, err := controlplane.New(controlplane.Options{
		ConfigDir: dir, CADir: caDir, Registries: regs, EgressScope: egress, XDSAddress: "127.0.0.1:0", XDSPlaintextAddress: "127.0.0.1:0", StatusAddress: "127.0.0.1:0",
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
	return &ControlPlane{XDSAddress: cp.XDSPlaintextAddr().String(), SecureAddress: cp.XDSAddr().String(), StatusAddress: cp.StatusAddr().String(), PID: os.Getpid()}
}

// TestSmallRunTLS: proxies with workload certificates from the run's CA
// connect to the secure port, one connection each, pass the node check
// and time changes as on the plaintext port.
func TestSmallRunTLS(t *testing.T) {
	dir, caDir := t.TempDir(), t.TempDir()
	certs, err := NewWorkloadCerts(caDir)
	if err != nil {
		t.Fatal(err)
	}
	m, err := WriteMesh(dir, MeshSpec{Services: 20, Endpoints: 1, Spare: 1, Namespaces: 2})
	if err != nil {
		t.Fatal(err)
	}
	cp := startInProcessCA(t, dir, caDir, ScopeMesh)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	rep, err := Run(ctx, Options{
		Mesh: m, CP: cp, Fleet: FleetOptions{Proxies: 10, Conns: 2, Captured: true, Protocol: Delta, VHDS: true, ClientTLS: certs.ClientTLS},
		Changes: 1, Timeout: time.Minute, Settle: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.TLS || rep.Conns != 10 {
		t.Errorf("report: TLS %v over %d connections, want TLS over 10 (one per proxy)", rep.TLS, rep.Conns)
	}
	for _, c := range []Change{rep.Config, rep.Endpoint} {
		if c.Latency.Missing != 0 || c.Latency.N == 0 {
			t.Errorf("%s: %d ACKs timed, %d missing", c.Kind, c.Latency.N, c.Latency.Missing)
		}
	}
}

// TestDeltaReconnectResumes: a delta proxy whose stream ends opens a new
// one announcing the versions it holds, and gets only what changed since
// — not its whole config again — while still timing changes. With VHDS,
// the virtual hosts it holds are announced too, and a config change on
// the new stream is timed in them.
func TestDeltaReconnectResumes(t *testing.T) {
	for _, vhds := range []bool{false, true} {
		t.Run(map[bool]string{false: "rds", true: "vhds"}[vhds], func(t *testing.T) { deltaReconnectResumes(t, vhds) })
	}
}

func deltaReconnectResumes(t *testing.T, vhds bool) {
	dir := t.TempDir()
	m, err := WriteMesh(dir, MeshSpec{Services: 20, Endpoints: 1, Spare: 1, Namespaces: 2})
	if err != nil {
		t.Fatal(err)
	}
	cp := startInProcess(t, dir, ScopeMesh)
	f, err := NewFleet(FleetOptions{Address: cp.XDSAddress, Proxies: 1, Captured: true, VHDS: vhds}, m.Workloads())
	if err != nil {
		t.Fatal(err)
	}
	p := f.Proxies()[0]
	conn, err := grpc.NewClient(cp.XDSAddress, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	// stream runs one stream until stop is called, which waits for it.
	stream := func() (stop func()) {
		sctx, scancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- p.deltaStream(sctx, conn) }()
		return func() {
			scancel()
			if err := <-done; sctx.Err() == nil {
				t.Errorf("stream ended by itself: %v", err)
			}
		}
	}
	stop := stream()
	for !p.synced.Load() && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	first := p.Counters()
	if !p.synced.Load() || first.Resources < 3*20 {
		t.Fatalf("first stream: synced %v, %d resources; want a complete config", p.synced.Load(), first.Resources)
	}
	if held := len(p.delta.held[vhdsIndex]); (held >= 20) != vhds || (first.ByType[vhdsIndex] > 0) != vhds {
		t.Fatalf("first stream: %d virtual hosts held from %d VirtualHost responses; want one per service with VHDS %v only",
			held, first.ByType[vhdsIndex], vhds)
	}
	stop = stream()
	defer stop()
	var pr *Probe
	if _, err := m.ChangeEndpoint(3, 0, func(ip string) { pr = f.Watch("EDS", ip, time.Now()) }); err != nil {
		t.Fatal(err)
	}
	if lat := pr.Wait(ctx); lat[0] < 0 {
		t.Fatal("the endpoint change was never ACKed on the second stream")
	}
	want := uint64(3) // the changed assignments
	if vhds {
		// A config change after the endpoint change: timed in the
		// virtual hosts, and any the new stream sent again before it
		// are counted below.
		if _, err := m.ChangeRoute(4, func(mark string) { pr = f.Watch(f.RouteType(), mark, time.Now()) }); err != nil {
			t.Fatal(err)
		}
		if lat := pr.Wait(ctx); lat[0] < 0 {
			t.Fatal("the config change was never ACKed in a VirtualHost response on the second stream")
		}
		want += 3 // the changed service's virtual hosts
	}
	got := p.Counters().sub(first)
	if got.Streams != 1 || got.Resources > want || got.ByType[3] != 0 {
		t.Errorf("second stream: %d streams opened, %d resources received (%d responses, by type %v); want 1 stream and only the changed resources (at most %d, no route configuration)",
			got.Streams, got.Resources, got.Responses, got.ByType, want)
	}
}
