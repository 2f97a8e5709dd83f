package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"weft.dev/weft/internal/testenv"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"

	"weft.dev/weft/internal/controlplane"
	"weft.dev/weft/internal/echo"
	"weft.dev/weft/internal/localmesh"
)

// ipBase spreads concurrent test processes over 127.77.0.0/16 so their
// workloads never share an address.
var (
	ipBase = rand.IntN(200) * 256
	ipNext atomic.Int64
)

// nextIP returns a loopback address no other workload of this process uses.
func nextIP() string {
	n := ipBase + int(ipNext.Add(1))
	return fmt.Sprintf("127.77.%d.%d", (n/250)%250+1, n%250+1)
}

// Mesh is one test's mesh: a config directory and a control plane on
// ephemeral loopback ports, plus the workloads the test adds. Everything
// stops in t.Cleanup.
type Mesh struct {
	t      testing.TB
	Dir    string
	CP     *localmesh.ControlPlane
	cpOpts controlplane.Options
	log    *slog.Logger
	logs   *testenv.SyncBuffer // warn and above, for tests that check what a user would read
}

// NewMesh starts a control plane on an empty config directory. Its CA
// keeps its root in a directory of its own, so a restart keeps the root
// the sidecars trust; sidecars reach it on the secure port. Each option
// may change the control plane's options before it starts.
func NewMesh(t testing.TB, opts ...func(*controlplane.Options)) *Mesh {
	t.Helper()
	m := &Mesh{t: t, Dir: t.TempDir(), logs: &testenv.SyncBuffer{}}
	m.log = slog.New(slog.NewTextHandler(io.MultiWriter(tWriter{t}, m.logs), &slog.HandlerOptions{Level: slog.LevelWarn}))
	m.cpOpts = controlplane.Options{
		ConfigDir:     m.Dir,
		CADir:         t.TempDir(),
		XDSAddress:    "127.0.0.1:0",
		StatusAddress: "127.0.0.1:0",
		Debounce:      20 * time.Millisecond,
		DebounceMax:   200 * time.Millisecond,
		Logger:        m.log,
	}
	for _, o := range opts {
		o(&m.cpOpts)
	}
	m.StartControlPlane()
	// Restarts must come back on the same addresses: proxies reconnect there.
	m.cpOpts.XDSAddress = m.CP.XDSAddr().String()
	m.cpOpts.StatusAddress = m.CP.StatusAddr().String()
	t.Cleanup(func() {
		if m.CP != nil {
			_ = m.CP.Stop()
		}
	})
	return m
}

// StartControlPlane (re)starts the control plane.
func (m *Mesh) StartControlPlane() {
	m.t.Helper()
	cp, err := localmesh.StartControlPlane(m.cpOpts)
	if err != nil {
		m.t.Fatalf("starting control plane: %v", err)
	}
	m.CP = cp
}

// StopControlPlane stops the control plane; proxies keep their config.
func (m *Mesh) StopControlPlane() {
	m.t.Helper()
	if err := m.CP.Stop(); err != nil {
		m.t.Fatalf("stopping control plane: %v", err)
	}
}

// WriteConfig atomically replaces one file of the config directory.
func (m *Mesh) WriteConfig(name, content string) {
	m.t.Helper()
	tmp := filepath.Join(m.Dir, "."+name+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		m.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(m.Dir, name)); err != nil {
		m.t.Fatal(err)
	}
}

// Workload starts an echo app with its sidecar and stops both at cleanup.
// The sidecar's bootstrap token is issued by the running control plane
// unless o.Token is set.
func (m *Mesh) Workload(o localmesh.WorkloadOptions) *localmesh.Workload {
	m.t.Helper()
	if len(o.IPs) == 0 {
		o.IPs = []string{nextIP()}
	}
	o.XDSAddress = m.cpOpts.XDSAddress
	o.ControlPlane = m.CP
	o.Logger = m.log
	w, err := localmesh.StartWorkload(o)
	if err != nil {
		m.t.Fatalf("starting workload %s: %v", o.Name, err)
	}
	m.t.Cleanup(func() { _ = w.Stop() })
	return w
}

// Backend is a workload registered in the mesh under one service.
type Backend struct {
	Name, Version, IP string
	Port              uint32
	// ServiceAccount is the identity its sidecar's certificate carries;
	// default the app it is registered for (localmesh's default).
	ServiceAccount string
	// Plain: no sidecar answers at IP:Port (a bare server), so clients
	// use plaintext: the entry lacks the tlsMode label.
	Plain bool
}

// WorkloadEntryYAML registers b for selection by app=<app>. A workload
// with a sidecar is labelled security.istio.io/tlsMode: istio, as Istio's
// injector labels pods, so its clients use mutual TLS, and names its
// service account, the identity clients verify.
func (b Backend) WorkloadEntryYAML(app string) string {
	sa := b.ServiceAccount
	if sa == "" {
		sa = app
	}
	tlsMode := ", security.istio.io/tlsMode: istio"
	if b.Plain {
		tlsMode = ""
	}
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: %s, namespace: default}
spec:
  address: %s
  ports: {http: %d}
  labels: {app: %s, version: %s%s}
  serviceAccount: %s
`, b.Name, b.IP, b.Port, app, b.Version, tlsMode, sa)
}

// ServiceEntryYAML declares service name in namespace default on port.
func ServiceEntryYAML(name string, port uint32, protocol string) string {
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: %s, namespace: default}
spec:
  hosts: [%s.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: %d, name: http, protocol: %s}
  workloadSelector:
    labels: {app: %s}
`, name, name, port, protocol, name)
}

// Service registers a service on port 8080 with one backend workload per
// version and starts them. It writes <name>-services.yaml.
func (m *Mesh) Service(name, protocol string, versions ...string) []*localmesh.Workload {
	m.t.Helper()
	return m.ServiceOnPort(name, protocol, 8080, versions...)
}

// ServiceOnPort is Service with the service's port (its workloads listen
// on ports of their own).
func (m *Mesh) ServiceOnPort(name, protocol string, port uint32, versions ...string) []*localmesh.Workload {
	m.t.Helper()
	docs := []string{ServiceEntryYAML(name, port, protocol)}
	var backends []Backend
	for i, v := range versions {
		wport, err := localmesh.FreePort("127.0.0.1")
		if err != nil {
			m.t.Fatal(err)
		}
		b := Backend{Name: fmt.Sprintf("%s-%s-%d", name, v, i), Version: v, IP: nextIP(), Port: uint32(wport)}
		backends = append(backends, b)
		docs = append(docs, b.WorkloadEntryYAML(name))
	}
	m.WriteConfig(name+"-services.yaml", strings.Join(docs, "---\n"))
	var ws []*localmesh.Workload
	for _, b := range backends {
		ws = append(ws, m.Workload(localmesh.WorkloadOptions{
			Name: b.Name, IPs: []string{b.IP}, WorkloadPort: b.Port,
			Labels: map[string]string{"app": name, "version": b.Version},
		}))
	}
	// Like a readiness gate: the endpoints are registered statically, so
	// only hand them out once their sidecars accept traffic.
	for _, w := range ws {
		Eventually(m.t, 10*time.Second, w.Opts.Name+" serving", func() error {
			if !w.Serving() {
				return fmt.Errorf("sidecar not serving its inbound port yet")
			}
			return nil
		})
	}
	return ws
}

// Client starts a workload that only sends traffic (no inbound port).
// It returns once the sidecar has applied its first config, so its
// outbound listener is bound: a test's first request never meets a
// connection refused.
func (m *Mesh) Client(name string) *localmesh.Workload {
	m.t.Helper()
	return m.ClientIn(name, "")
}

// ClientIn is Client in namespace ns ("" is default).
func (m *Mesh) ClientIn(name, ns string) *localmesh.Workload {
	m.t.Helper()
	w := m.Workload(localmesh.WorkloadOptions{Name: name, Namespace: ns,
		Labels: map[string]string{"app": name, "version": "v1"}})
	Eventually(m.t, 30*time.Second, "client "+name+" ready", func() error {
		if !w.Proxy.Ready() {
			return fmt.Errorf("its sidecar has not applied config yet")
		}
		return nil
	})
	return w
}

// Get sends one request through w's outbound listener.
func Get(ctx context.Context, c *http.Client, w *localmesh.Workload, host, path string, hdr map[string]string) (int, echo.Reply, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+w.Outbound+path, nil)
	if err != nil {
		return 0, echo.Reply{}, err
	}
	req.Host = host
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, echo.Reply{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, echo.Reply{}, err
	}
	var r echo.Reply
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, &r); err != nil {
			return resp.StatusCode, r, fmt.Errorf("decoding %q: %w", body, err)
		}
	}
	return resp.StatusCode, r, nil
}

// newClient returns a keep-alive HTTP/1.1 client with bounded timeouts.
func newClient() *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		MaxIdleConnsPerHost: 32, DialContext: (&net.Dialer{Timeout: time.Second}).DialContext,
	}}
}

// Eventually polls cond every 20ms until it returns nil or the context's
// deadline passes, then fails with cond's last error.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var err error
	for {
		if err = cond(); err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		case <-tick.C:
		}
	}
}

// Tally counts versions (or names) over n requests.
func Tally(t testing.TB, c *http.Client, w *localmesh.Workload, host string, hdr map[string]string, n int, key func(echo.Reply) string) map[string]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out := map[string]int{}
	for i := 0; i < n; i++ {
		code, r, err := Get(ctx, c, w, host, "/", hdr)
		if err != nil || code != 200 {
			t.Fatalf("request %d to %s: code %d err %v", i, host, code, err)
		}
		out[key(r)]++
	}
	return out
}

func byVersion(r echo.Reply) string { return r.Version }
func byName(r echo.Reply) string    { return r.Name }

func sortedKeys(m map[string]int) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// tWriter writes log lines to the test log, so a failing test shows what
// the components complained about (NewMesh logs at warn level and above).
type tWriter struct{ t testing.TB }

// Logs is everything the mesh's control plane and sidecars logged at warn
// level and above so far.
func (m *Mesh) Logs() string {
	return m.logs.String()
}

func (w tWriter) Write(p []byte) (int, error) {
	defer func() { _ = recover() }() // a log line after the test ended must not panic
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Status reads the control plane's /status.
func (m *Mesh) Status() (controlplane.Status, error) {
	var st controlplane.Status
	resp, err := http.Get("http://" + m.CP.StatusAddr().String() + "/status")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return st, err
	}
	return st, json.Unmarshal(body, &st)
}

// WaitLoaded waits until the control plane's newest snapshot holds the
// given number of VirtualServices and endpoints.
func (m *Mesh) WaitLoaded(virtualServices, endpoints int) {
	m.t.Helper()
	Eventually(m.t, 5*time.Second, "config loaded", func() error {
		st, err := m.Status()
		if err != nil {
			return err
		}
		if st.Resources.VirtualServices != virtualServices || st.Resources.Endpoints != endpoints {
			return fmt.Errorf("%d VirtualServices, %d endpoints", st.Resources.VirtualServices, st.Resources.Endpoints)
		}
		return nil
	})
}

// Traffic sends requests to one host through a workload's sidecar on
// several connections in the background, counting failures, until Stop.
// Each worker sends at most 20,000 requests and stops within 30 s anyway.
type Traffic struct {
	sent, failed atomic.Int64
	firstErr     atomic.Value
	stop         atomic.Bool // checked between requests: none is cut off
	cancel       context.CancelFunc
	wg           sync.WaitGroup
}

// StartTraffic starts workers goroutines sending GET / to host via w.
func StartTraffic(c *http.Client, w *localmesh.Workload, host string, workers int) *Traffic {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	tr := &Traffic{cancel: cancel}
	for i := 0; i < workers; i++ {
		tr.wg.Add(1)
		go func() {
			defer tr.wg.Done()
			for j := 0; j < 20000 && !tr.stop.Load() && ctx.Err() == nil; j++ {
				code, _, err := Get(ctx, c, w, host, "/", nil)
				tr.sent.Add(1)
				if err != nil || code != 200 {
					tr.failed.Add(1)
					tr.firstErr.CompareAndSwap(nil, fmt.Sprintf("code %d err %v", code, err))
				}
			}
		}()
	}
	return tr
}

// Sent is how many requests have completed so far.
func (tr *Traffic) Sent() int64 { return tr.sent.Load() }

// WaitSent waits until n more requests than now have completed.
func (tr *Traffic) WaitSent(t testing.TB, n int64) {
	t.Helper()
	target := tr.Sent() + n
	Eventually(t, 10*time.Second, "traffic flowing", func() error {
		if s := tr.Sent(); s < target {
			return fmt.Errorf("%d of %d sent", s, target)
		}
		return nil
	})
}

// Stop ends the traffic and fails t if any request failed.
func (tr *Traffic) Stop(t testing.TB, during string) {
	t.Helper()
	tr.stop.Store(true)
	tr.wg.Wait()
	tr.cancel()
	if f := tr.failed.Load(); f != 0 {
		t.Fatalf("%d of %d requests failed %s; first: %v", f, tr.sent.Load(), during, tr.firstErr.Load())
	}
	t.Logf("%d requests %s, none failed", tr.sent.Load(), during)
}

// GRPCClient dials w's outbound listener for gRPC calls to service
// authority; the connection closes at cleanup.
func GRPCClient(t testing.TB, w *localmesh.Workload, authority string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+w.Outbound,
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority(authority))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// WaitGRPCAnswerers waits until echo calls over cc are answered by n
// distinct workloads: all n endpoints are in the sidecar's config.
func WaitGRPCAnswerers(t testing.TB, cc *grpc.ClientConn, n int) {
	t.Helper()
	Eventually(t, 10*time.Second, fmt.Sprintf("%d gRPC endpoints answering", n), func() error {
		seen := map[string]bool{}
		for i := 0; i < 4*n; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			r, err := echo.Call(ctx, cc, &structpb.Struct{})
			cancel()
			if err != nil {
				return err
			}
			seen[r.Fields["name"].GetStringValue()] = true
		}
		if len(seen) != n {
			return fmt.Errorf("answered by %v", seen)
		}
		return nil
	})
}
