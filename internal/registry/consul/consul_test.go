package consul

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/registry"
	"weft.dev/weft/internal/registry/aggregate"
	"weft.dev/weft/internal/registry/static"
	"weft.dev/weft/internal/testenv"
)

// The TestConsul* tests run the Source against a real Consul agent
// (consul agent -dev on loopback, testenv.Consul), started per test.

// run starts a Source on addr and stops it in t.Cleanup, failing the test
// if Run does not return after its context ends.
func run(t *testing.T, opts Options) *Source {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.MaxBackoff == 0 {
		opts.MaxBackoff = 500 * time.Millisecond
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	testenv.Run(t, 10*time.Second, s.Run)
	return s
}

// waitSnapshot waits (bounded) until cond holds for the source's
// snapshot, waking on Changed, and returns that snapshot.
func waitSnapshot(t *testing.T, s *Source, what string, cond func(*registry.Snapshot) bool) *registry.Snapshot {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		snap := s.Snapshot()
		if cond(snap) {
			return snap
		}
		select {
		case <-s.Changed():
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s; snapshot:\n%s\nstatus: %+v", what, dump(snap), s.Status())
			return nil
		}
	}
}

// waitStatus waits (bounded) until cond holds for the source's status.
func waitStatus(t *testing.T, s *Source, what string, cond func(registry.SourceStatus) bool) registry.SourceStatus {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		st := s.Status()
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; status: %+v", what, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func dump(s *registry.Snapshot) string {
	var b strings.Builder
	for _, svc := range s.Services() {
		fmt.Fprintln(&b, fmtService(svc))
		for _, e := range s.Endpoints(svc.Hostname, 0) {
			fmt.Fprintln(&b, "  ", fmtEndpoint(e))
		}
	}
	return b.String()
}

func endpointStrings(s *registry.Snapshot, host string) []string {
	var out []string
	for _, e := range s.Endpoints(host, 0) {
		out = append(out, fmtEndpoint(e))
	}
	return out
}

func client(t *testing.T, addr string) *api.Client {
	t.Helper()
	cfg := api.DefaultNonPooledConfig()
	cfg.Address = addr
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// registerSOA registers the vendor's coarse-grained process on the agent's
// own node: order on 8080 (HTTP) and payment on 8081 (gRPC), each with a
// TTL check that starts passing.
func registerSOA(t *testing.T, c *api.Client) {
	t.Helper()
	for _, r := range []*api.AgentServiceRegistration{
		{ID: "order", Name: "order", Port: 8080, Tags: []string{"version=v1", "primary"}, Meta: map[string]string{"protocol": "http", "team": "orders"},
			Check: &api.AgentServiceCheck{CheckID: "order-ttl", TTL: "1h", Status: api.HealthPassing}},
		{ID: "payment", Name: "payment", Port: 8081, Tags: []string{"protocol=grpc", "version=v3"},
			Check: &api.AgentServiceCheck{CheckID: "payment-ttl", TTL: "1h", Status: api.HealthPassing}},
	} {
		if err := c.Agent().ServiceRegister(r); err != nil {
			t.Fatalf("register %s: %v", r.Name, err)
		}
	}
}

func TestConsulServicesOnOneNode(t *testing.T) {
	a := testenv.Consul(t)
	c := client(t, a.Addr)
	registerSOA(t, c)
	// A second VM, registered in the catalog directly, with a zone.
	if _, err := c.Catalog().Register(&api.CatalogRegistration{
		Node: "vm-2", Address: "10.1.0.2", NodeMeta: map[string]string{"zone": "z2"},
		Service: &api.AgentService{ID: "order", Service: "order", Port: 8080, Tags: []string{"version=v2"}, Meta: map[string]string{"protocol": "http"}},
	}, nil); err != nil {
		t.Fatal(err)
	}

	s := run(t, Options{Address: a.Addr})
	snap := waitSnapshot(t, s, "order (2 instances) and payment", func(s *registry.Snapshot) bool {
		return len(s.Endpoints("order.service.consul", 8080)) == 2 && len(s.Endpoints("payment.service.consul", 8081)) == 1
	})

	var svcs []string
	for _, svc := range snap.Services() {
		svcs = append(svcs, fmtService(svc))
	}
	want := []string{
		"order.service.consul aliases=order ns=default src=consul ports=[http-8080/8080/HTTP]",
		"payment.service.consul aliases=payment ns=default src=consul ports=[grpc-8081/8081/GRPC]",
	}
	if !slices.Equal(svcs, want) {
		t.Errorf("services:\n got  %q\n want %q (the servers' own consul service left out)", svcs, want)
	}
	wantEps := []string{
		`order.service.consul:8080 -> 10.1.0.2:8080 labels={version=v2, zone=z2} loc="dc1/z2" w=1 sa="" wl=default/vm-2 health=0`,
		`order.service.consul:8080 -> 127.0.0.1:8080 labels={primary=, team=orders, version=v1} loc="dc1" w=1 sa="" wl=default/weft-test health=0`,
	}
	if got := endpointStrings(snap, "order.service.consul"); !slices.Equal(got, wantEps) {
		t.Errorf("order endpoints:\n got  %q\n want %q", got, wantEps)
	}
	wantEps = []string{`payment.service.consul:8081 -> 127.0.0.1:8081 labels={version=v3} loc="dc1" w=1 sa="" wl=default/weft-test health=0`}
	if got := endpointStrings(snap, "payment.service.consul"); !slices.Equal(got, wantEps) {
		t.Errorf("payment endpoints:\n got  %q\n want %q", got, wantEps)
	}
	st := waitStatus(t, s, "synced and connected", func(st registry.SourceStatus) bool { return st.Synced && st.Connected })
	if st.Services != 2 || st.Endpoints != 3 || st.LastError != "" || st.LastUpdate.IsZero() {
		t.Errorf("status = %+v, want 2 services, 3 endpoints, no error, an update time", st)
	}
}

func TestConsulHealthAndDeregistration(t *testing.T) {
	a := testenv.Consul(t)
	c := client(t, a.Addr)
	registerSOA(t, c)
	s := run(t, Options{Address: a.Addr, DisableShortAlias: true})

	health := func(snap *registry.Snapshot) registry.Health {
		eps := snap.Endpoints("order.service.consul", 8080)
		if len(eps) != 1 {
			return -1
		}
		return eps[0].Health
	}
	waitSnapshot(t, s, "order healthy", func(s *registry.Snapshot) bool { return health(s) == registry.Healthy })
	if a := s.Snapshot().Service("order.service.consul").Aliases; len(a) != 0 {
		t.Errorf("the short alias is published although DisableShortAlias is set")
	}

	steps := []struct {
		what string
		do   func() error
		want registry.Health
	}{
		{"check critical → Unhealthy", func() error { return c.Agent().UpdateTTL("order-ttl", "disk full", api.HealthCritical) }, registry.Unhealthy},
		{"check warning → Healthy", func() error { return c.Agent().UpdateTTL("order-ttl", "slow", api.HealthWarning) }, registry.Healthy},
		{"maintenance → Unhealthy", func() error { return c.Agent().EnableServiceMaintenance("order", "upgrade") }, registry.Unhealthy},
		{"maintenance off → Healthy", func() error { return c.Agent().DisableServiceMaintenance("order") }, registry.Healthy},
		{"node maintenance → Unhealthy", func() error { return c.Agent().EnableNodeMaintenance("reboot") }, registry.Unhealthy},
		{"node maintenance off, passing → Healthy", func() error {
			if err := c.Agent().DisableNodeMaintenance(); err != nil {
				return err
			}
			return c.Agent().UpdateTTL("order-ttl", "", api.HealthPassing)
		}, registry.Healthy},
	}
	for _, step := range steps {
		if err := step.do(); err != nil {
			t.Fatalf("%s: %v", step.what, err)
		}
		waitSnapshot(t, s, step.what, func(s *registry.Snapshot) bool { return health(s) == step.want })
		// payment is untouched by order's service checks, but not by node maintenance.
	}

	if err := c.Agent().ServiceDeregister("order"); err != nil {
		t.Fatal(err)
	}
	snap := waitSnapshot(t, s, "order deregistered", func(s *registry.Snapshot) bool { return s.Service("order.service.consul") == nil })
	if len(snap.Endpoints("order.service.consul", 0)) != 0 {
		t.Errorf("order's endpoints outlive its service: %q", endpointStrings(snap, "order.service.consul"))
	}
	if snap.Service("payment.service.consul") == nil {
		t.Errorf("payment vanished with order")
	}
}

func TestConsulOutageKeepsLastSnapshot(t *testing.T) {
	a := testenv.Consul(t)
	c := client(t, a.Addr)
	registerSOA(t, c)
	s := run(t, Options{Address: a.Addr}) // the default settle time
	before := waitSnapshot(t, s, "order and payment", func(s *registry.Snapshot) bool {
		return len(s.Endpoints("order.service.consul", 0)) == 1 && len(s.Endpoints("payment.service.consul", 0)) == 1
	})
	// The snapshot can show both services a moment before the source has
	// read every service's first answer (synced): wait for that too, and
	// take the snapshot in force then.
	waitStatus(t, s, "connected and synced", func(st registry.SourceStatus) bool { return st.Connected && st.Synced })
	before = s.Snapshot()

	// From now on this goroutine alone reads Changed: it records whether
	// any snapshot published across the outage lacked order.
	var (
		mu        sync.Mutex
		published []*registry.Snapshot
	)
	ctx, cancel := context.WithCancel(context.Background())
	collected := make(chan struct{})
	go func() {
		defer close(collected)
		for {
			select {
			case <-s.Changed():
				mu.Lock()
				published = append(published, s.Snapshot())
				mu.Unlock()
			case <-ctx.Done():
				return
			}
		}
	}()
	defer func() { cancel(); <-collected }()
	pollSnapshot := func(what string, cond func(*registry.Snapshot) bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond(s.Snapshot()) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s; snapshot:\n%s\nstatus: %+v", what, dump(s.Snapshot()), s.Status())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	a.Stop()
	st := waitStatus(t, s, "disconnected", func(st registry.SourceStatus) bool { return !st.Connected })
	if st.LastError == "" || st.LastErrorTime.IsZero() || !strings.Contains(st.LastError, a.Addr) {
		t.Errorf("status during the outage = %+v, want an error naming %s", st, a.Addr)
	}
	if !st.Synced {
		t.Errorf("status during the outage: Synced = false, want it to stay true")
	}
	if got := s.Snapshot(); got != before {
		t.Errorf("the snapshot changed during the outage:\n%s\nwant the last known one:\n%s", dump(got), dump(before))
	}

	// A dev agent comes back empty. Its owner registers order again (as a
	// VM's client agent would), payment not: after the settle time the
	// catalog read anew is published, without payment, and no snapshot in
	// between lacked order.
	a.Start()
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "order", Name: "order", Port: 8080,
		Tags: []string{"version=v1", "primary"}, Meta: map[string]string{"protocol": "http", "team": "orders"}}); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, s, "connected again", func(st registry.SourceStatus) bool { return st.Connected && st.LastError == "" })
	pollSnapshot("payment gone after the settle time", func(s *registry.Snapshot) bool {
		return s.Service("payment.service.consul") == nil && len(s.Endpoints("order.service.consul", 0)) == 1
	})
	mu.Lock()
	defer mu.Unlock()
	for i, snap := range published {
		if len(snap.Endpoints("order.service.consul", 0)) != 1 {
			t.Errorf("snapshot %d published across the restart lacks order:\n%s", i, dump(snap))
		}
	}
}

// An agent restart as quick as testenv's Restart (the agent is back before
// every watcher noticed it was gone) with the VM's services in the agent's
// configuration, so the restarted agent registers them again.
func TestConsulRestartKeepsServing(t *testing.T) {
	a := testenv.Consul(t)
	def := `{"service": {"name": "order", "port": 8080, "tags": ["version=v1"], "meta": {"protocol": "http"}}}`
	if err := os.WriteFile(filepath.Join(a.ConfigDir, "order.json"), []byte(def), 0o644); err != nil {
		t.Fatal(err)
	}
	a.Restart() // load the definition
	c := client(t, a.Addr)
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "payment", Name: "payment", Port: 8081}); err != nil {
		t.Fatal(err) // through the API: the restarted dev agent forgets it
	}
	s := run(t, Options{Address: a.Addr})
	waitSnapshot(t, s, "order and payment", func(s *registry.Snapshot) bool {
		return len(s.Endpoints("order.service.consul", 0)) == 1 && len(s.Endpoints("payment.service.consul", 0)) == 1
	})

	var (
		mu        sync.Mutex
		published []*registry.Snapshot
	)
	ctx, cancel := context.WithCancel(context.Background())
	collected := make(chan struct{})
	go func() {
		defer close(collected)
		for {
			select {
			case <-s.Changed():
				mu.Lock()
				published = append(published, s.Snapshot())
				mu.Unlock()
			case <-ctx.Done():
				return
			}
		}
	}()
	defer func() { cancel(); <-collected }()

	for range 2 {
		a.Restart()
	}
	deadline := time.Now().Add(30 * time.Second)
	for snap := s.Snapshot(); snap.Service("payment.service.consul") != nil || len(snap.Endpoints("order.service.consul", 0)) != 1; snap = s.Snapshot() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for order alone after the restarts; snapshot:\n%s\nstatus: %+v", dump(snap), s.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitStatus(t, s, "connected", func(st registry.SourceStatus) bool { return st.Connected && st.LastError == "" })
	mu.Lock()
	defer mu.Unlock()
	for i, snap := range published {
		if len(snap.Endpoints("order.service.consul", 0)) != 1 {
			t.Errorf("snapshot %d published across the restarts lacks order:\n%s", i, dump(snap))
		}
	}
}

// A Consul service naming a ServiceEntry's host in weft-host shares it: the
// merged registry has the endpoints of both, on the ServiceEntry's port
// whose target port the VMs listen on.
func TestConsulSharesHostWithServiceEntry(t *testing.T) {
	const host = "order.prod.svc.cluster.local"
	a := testenv.Consul(t)
	c := client(t, a.Addr)
	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "order", Name: "order", Port: 8080,
		Tags: []string{"version=vm"}, Meta: map[string]string{"protocol": "http", "weft-host": host}}); err != nil {
		t.Fatal(err)
	}
	cfg := config.NewStore(config.Options{Logger: slog.New(slog.DiscardHandler)}).Load(map[string][]byte{"se.yaml": []byte(`
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: order, namespace: prod}
spec:
  hosts: [order.prod.svc.cluster.local]
  ports: [{number: 80, name: http, protocol: HTTP, targetPort: 8080}]
  resolution: STATIC
  endpoints: [{address: 10.244.0.5, labels: {version: k8s}}]
`)})
	for _, d := range cfg.Diagnostics {
		if d.Severity == config.SeverityError {
			t.Fatalf("config: %v", d)
		}
	}
	s := run(t, Options{Address: a.Addr})
	waitSnapshot(t, s, "order's weft-host", func(s *registry.Snapshot) bool { return len(s.Endpoints(host, 0)) == 1 })

	merged, conflicts := aggregate.Merge(aggregate.SourceParts(static.Build(cfg, ""), []registry.Source{s})...)
	if len(conflicts) != 0 {
		t.Errorf("conflicts: %v", conflicts)
	}
	if svc := merged.Service(host); svc == nil || svc.Source != "static" || len(svc.Ports) != 1 || svc.Ports[0].Number != 80 {
		t.Fatalf("merged %s = %+v, want the ServiceEntry's definition", host, svc)
	}
	var got []string
	for _, e := range merged.Endpoints(host, 80) {
		got = append(got, fmt.Sprintf("%s:%d %s", e.Address, e.Port, e.Labels["version"]))
	}
	if want := []string{"10.244.0.5:8080 k8s", "127.0.0.1:8080 vm"}; !slices.Equal(got, want) {
		t.Errorf("endpoints of %s:80 = %q, want %q", host, got, want)
	}
	if merged.Service("order.service.consul") == nil {
		t.Errorf("order.service.consul missing from the merged registry")
	}
}

// countingTransport records every request to Consul.
type countingTransport struct {
	base http.RoundTripper
	mu   sync.Mutex
	reqs []string // path?query
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	c.reqs = append(c.reqs, r.URL.Path+"?"+r.URL.RawQuery)
	c.mu.Unlock()
	return c.base.RoundTrip(r)
}

func (c *countingTransport) requests() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.reqs)
}

func TestConsulBlockingQueriesNotPolling(t *testing.T) {
	a := testenv.Consul(t)
	c := client(t, a.Addr)
	registerSOA(t, c)
	tr := &countingTransport{base: api.DefaultNonPooledConfig().Transport}
	// No poll interval exists; WaitTime is Consul's maximum, so a change
	// seen within the test's deadline was pushed through a blocking query.
	s := run(t, Options{Address: a.Addr, WaitTime: 10 * time.Minute, HTTPClient: &http.Client{Transport: tr}})
	waitSnapshot(t, s, "order and payment", func(s *registry.Snapshot) bool {
		return s.Service("order.service.consul") != nil && s.Service("payment.service.consul") != nil
	})

	if err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: "stock", Name: "stock", Port: 8082}); err != nil {
		t.Fatal(err)
	}
	waitSnapshot(t, s, "stock registered", func(s *registry.Snapshot) bool { return len(s.Endpoints("stock.service.consul", 8082)) == 1 })
	if err := c.Agent().UpdateTTL("order-ttl", "", api.HealthCritical); err != nil {
		t.Fatal(err)
	}
	waitSnapshot(t, s, "order unhealthy", func(s *registry.Snapshot) bool {
		eps := s.Endpoints("order.service.consul", 8080)
		return len(eps) == 1 && eps[0].Health == registry.Unhealthy
	})

	// Every query after the first of each watcher waited on an index.
	first := map[string]bool{}
	for _, r := range tr.requests() {
		path, query, _ := strings.Cut(r, "?")
		if !first[path] {
			first[path] = true
			continue
		}
		if !strings.Contains(query, "index=") || !strings.Contains(query, "wait=600000ms") {
			t.Errorf("request %s is not a blocking query (index= and wait=10m)", r)
		}
	}
	for _, p := range []string{"/v1/catalog/services", "/v1/health/service/order", "/v1/health/service/payment", "/v1/health/service/stock"} {
		if !first[p] {
			t.Errorf("no request to %s; requests: %q", p, tr.requests())
		}
	}
	// Changes, not time, drive the queries: 3 watchers started with the
	// catalog, and each change (stock, then order's check) answers a few
	// of them once.
	if n := len(tr.requests()); n > 20 {
		t.Errorf("%d requests for two changes, want a handful; requests: %q", n, tr.requests())
	}
}
