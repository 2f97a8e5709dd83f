package server

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry/static"
	"weft.dev/weft/internal/xds/contract"
	"weft.dev/weft/internal/xdsload"
)

// The control plane's share of a push, without streams: a mesh of
// WEFT_BENCH_SERVICES services (default 1,000; 4 endpoints and 2 spare
// ones each, as bench/xdsload's) and WEFT_BENCH_PROXIES captured sidecars
// (default 1,000) registered with the server; each iteration changes one
// endpoint (or one route) and pushes, generating and encoding every
// proxy's resources as a real push does. What is left out is sending:
// bench/xdsload measures that end to end. Run with
//
//	go test -run '^$' -bench BenchmarkPush -benchtime 10x -cpuprofile cpu.out ./internal/xds/server
func BenchmarkPushEndpointChange(b *testing.B) { benchmarkPush(b, "endpoint") }

func BenchmarkPushRouteChange(b *testing.B) { benchmarkPush(b, "route") }

func benchmarkPush(b *testing.B, change string) {
	services, proxies := envInt(b, "WEFT_BENCH_SERVICES", 1000), envInt(b, "WEFT_BENCH_PROXIES", 1000)
	s, m, build := pushFixture(b, services, proxies)
	ctx := context.Background()
	s.push(ctx, time.Now()) // every proxy's first snapshot
	connected := liveHeapMB()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		var err error
		switch change {
		case "endpoint":
			_, err = m.ChangeEndpoint(i%services, 0, nil)
		default:
			_, err = m.ChangeRoute(i%services, nil)
		}
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		s.Update(build()) // the config reload and mesh build are part of a change's cost
		s.push(ctx, time.Now())
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/change")
	b.StopTimer()
	// What every proxy's snapshot holds, before and after the changes
	// (the server must stay alive until measured).
	b.ReportMetric(connected, "live-MB-first-push")
	b.ReportMetric(liveHeapMB(), "live-MB")
	runtime.KeepAlive(s)
}

// liveHeapMB is the heap in use after a collection: what is alive.
func liveHeapMB() float64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.HeapAlloc) / (1 << 20)
}

// pushFixture is a server with proxies captured sidecars registered (not
// connected) on a generated mesh of services × (4 + 2 spare) endpoints in
// 10 namespaces; build reloads the mesh's directory into a new snapshot
// built from the one before, as the control plane does.
func pushFixture(tb testing.TB, services, proxies int) (*Server, *xdsload.Mesh, func() *mesh.Snapshot) {
	dir := tb.TempDir()
	m, err := xdsload.WriteMesh(dir, xdsload.MeshSpec{Services: services, Endpoints: 4, Spare: 2, Namespaces: 10})
	if err != nil {
		tb.Fatal(err)
	}
	store := config.NewStore(config.Options{Logger: slog.New(slog.DiscardHandler)})
	var prev *mesh.Snapshot
	build := func() *mesh.Snapshot {
		files := map[string][]byte{}
		entries, err := os.ReadDir(dir)
		if err != nil {
			tb.Fatal(err)
		}
		for _, e := range entries {
			if e.IsDir() || e.Name()[0] == '.' {
				continue
			}
			data, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				tb.Fatal(err)
			}
			files[e.Name()] = data
		}
		cfg := store.Load(files)
		prev = mesh.BuildFrom(prev, cfg, static.Build(cfg, ""), mesh.Options{})
		return prev
	}
	s := New(Options{Logger: slog.New(slog.DiscardHandler), PushConcurrency: 8})
	s.Update(build())
	ws := m.Workloads()
	for i := range proxies {
		w := ws[i%len(ws)]
		id := contract.Identity{
			ID:        fmt.Sprintf("sidecar~%s~%s-%d.%s~%s.svc.cluster.local", w.IP, w.Name, i, w.Namespace, w.Namespace),
			Namespace: w.Namespace, WorkloadName: w.Service, ServiceAccount: w.Service, ClusterID: "Kubernetes",
			Labels: map[string]string{"app": w.Service, "version": w.Version}, IPs: []string{w.IP},
			InterceptionMode: contract.InterceptionRedirect,
		}
		s.proxies[id.ID] = newProxy(id)
	}
	return s, m, build
}

func envInt(b *testing.B, name string, def int) int {
	if v := os.Getenv(name); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("%s=%q: want a positive number", name, v)
		}
		return n
	}
	return def
}
