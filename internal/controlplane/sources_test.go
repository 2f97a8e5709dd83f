package controlplane

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/registry"
	"weft.dev/weft/internal/testenv"
)

// memRegistry is a registry.Source held in memory: the test sets its
// snapshot and says when it has synced.
type memRegistry struct {
	mu      sync.Mutex
	snap    *registry.Snapshot
	synced  bool
	changed chan struct{}
}

func newMemRegistry() *memRegistry {
	return &memRegistry{snap: registry.New(registry.Contents{}), changed: make(chan struct{}, 1)}
}

func (m *memRegistry) Name() string { return "memory" }
func (m *memRegistry) Run(ctx context.Context) error {
	<-ctx.Done()
	return nil
}
func (m *memRegistry) Snapshot() *registry.Snapshot {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.snap
}
func (m *memRegistry) Changed() <-chan struct{} { return m.changed }
func (m *memRegistry) Status() registry.SourceStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	return registry.SourceStatus{Name: "memory", Synced: m.synced, Connected: true}
}

// set publishes a snapshot with one service of n endpoints, synced.
func (m *memRegistry) set(n int) {
	svc := &registry.Service{Hostname: "orders.shop.svc.cluster.local", Namespace: "shop", Source: "memory",
		Ports: []registry.Port{{Name: "http", Number: 8080, Protocol: registry.HTTP}}}
	var eps []*registry.Endpoint
	for i := range n {
		eps = append(eps, &registry.Endpoint{ServiceHostname: svc.Hostname, ServicePort: 8080,
			Address: "10.1.0." + itoa(uint32(i+1)), Port: 8080, Namespace: "shop"})
	}
	m.mu.Lock()
	m.snap, m.synced = registry.New(registry.Contents{Services: []*registry.Service{svc}, Endpoints: eps}), true
	m.mu.Unlock()
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

// TestFirstMeshWaitsForRegistries: no mesh is served before every registry
// has synced, so a restarting control plane never pushes one without the
// endpoints it has not read yet; a registry change then rebuilds the mesh.
func TestFirstMeshWaitsForRegistries(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "vs.yaml"), []byte(`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: orders, namespace: shop}
spec:
  hosts: [orders]
  http:
  - route:
    - destination: {host: orders}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	reg := newMemRegistry()
	cp, err := New(Options{ConfigDir: dir, XDSAddress: "127.0.0.1:0", StatusAddress: StatusDisabled,
		Registries: []registry.Source{reg}, Debounce: time.Millisecond, DebounceMax: 10 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, 10*time.Second, cp.Run)

	time.Sleep(300 * time.Millisecond) // the directory is read by now
	if m := cp.current.Load(); m != nil {
		t.Fatalf("a mesh (version %s) was served before the registry synced", m.Version)
	}
	reg.set(2)
	endpoints := func() int {
		m := cp.current.Load()
		if m == nil {
			return -1
		}
		return len(m.Registry.Endpoints("orders.shop.svc.cluster.local", 8080))
	}
	waitFor(t, "the first mesh with the registry's endpoints", func() bool { return endpoints() == 2 })
	reg.set(3)
	waitFor(t, "the mesh rebuilt after a registry change", func() bool { return endpoints() == 3 })
	// The same services and endpoints again (a Pod no Service selects, a
	// registry echo): no new mesh, no push round.
	before := cp.current.Load()
	reg.set(3)
	time.Sleep(200 * time.Millisecond)
	if cp.current.Load() != before {
		t.Errorf("an unchanged registry published a new mesh (version %s)", cp.current.Load().Version)
	}
	if st := cp.status(); len(st.Registries) != 2 || st.Registries[0].Name != "memory" || st.Registries[1].Name != "autoregistration" {
		t.Errorf("/status registries = %+v", st.Registries)
	}
}

// waitFor polls cond every 10 ms for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRegistryMemoKeepsInForceAndCandidate: the memo keeps the two
// registries used last, so a rejected candidate does not push the one in
// force out, and nothing it dropped stays reachable.
func TestRegistryMemoKeepsInForceAndCandidate(t *testing.T) {
	var m registryMemo
	key := func() registryKey { return registryKey{cfg: &config.Snapshot{}} }
	built := func() builtRegistry { return builtRegistry{reg: registry.New(registry.Contents{})} }
	inForce, rejected, next := key(), key(), key()
	m.put(inForce, built())
	m.put(rejected, built()) // judged, refused
	if _, ok := m.get(inForce); !ok {
		t.Fatal("the registry in force was dropped")
	}
	m.put(next, built()) // the next candidate
	if _, ok := m.get(inForce); !ok {
		t.Error("a rejected candidate pushed the registry in force out")
	}
	if _, ok := m.get(rejected); ok {
		t.Error("the rejected candidate is still kept")
	}
	for _, k := range m.keys[len(m.keys):cap(m.keys)] {
		if k.cfg != nil {
			t.Error("a dropped key is still reachable past the memo's length")
		}
	}
	for _, b := range m.results[len(m.results):cap(m.results)] {
		if b.reg != nil {
			t.Error("a dropped registry is still reachable past the memo's length")
		}
	}
}
