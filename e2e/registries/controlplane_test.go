package registries

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"weft.dev/weft/internal/testenv"
)

// Control plane replicas: each `weft serve` runs in a network namespace of
// its own (so a test can black-hole it with iptables there, and restart it
// on the same address), all reading the same --config directory and
// sharing one CA directory, as docs/control-plane.md says to run them.

const (
	replicaXDSPort    = "15012"
	replicaStatusPort = "15014"
)

// replica is one control plane replica.
type replica struct {
	*controlPlane
	NS   *testenv.Netns
	args []string
}

// startReplica runs `weft serve` in ns on cfg with the CA in caDir. The
// first replica creates the CA there; start the others once it runs.
func startReplica(t *testing.T, bin string, ns *testenv.Netns, cfg, caDir string) *replica {
	t.Helper()
	r := &replica{NS: ns, args: []string{"serve", "--config", cfg, "--ca-dir", caDir,
		"--xds-address", "0.0.0.0:" + replicaXDSPort, "--status-address", "0.0.0.0:" + replicaStatusPort,
		"--debounce", "20ms", "--debounce-max", "200ms", "--log-level", "info"}}
	r.controlPlane = &controlPlane{
		XDS:    net.JoinHostPort(ns.IP, replicaXDSPort),
		Status: net.JoinHostPort(ns.IP, replicaStatusPort),
		Root:   filepath.Join(t.TempDir(), "root-cert.pem"),
	}
	r.start(t, bin)
	return r
}

// start (re)starts the process with the same flags.
func (r *replica) start(t *testing.T, bin string) {
	t.Helper()
	cmd := r.NS.Command(context.Background(), filepath.Join(bin, "weft"), r.args...)
	cmd.Dir = repoRoot
	r.proc = startCmd(t, "weft serve in "+r.NS.Name, cmd)
	r.waitOutput(regexp.MustCompile(`control plane running`), 60*time.Second)
	eventually(t, 30*time.Second, "root certificate of "+r.NS.Name, func() error {
		code, body, err := httpGet(&http.Client{Timeout: 2 * time.Second}, "http://"+r.Status+"/debug/root-cert", nil)
		if err != nil || code != 200 {
			return fmt.Errorf("GET /debug/root-cert: %d %v", code, err)
		}
		return os.WriteFile(r.Root, []byte(body), 0o644)
	})
}

// tokenFile issues a bootstrap token from inside the replica's namespace
// (tokens are issued to loopback callers only); any replica accepts it,
// since tokens are signed with a key derived from the shared CA key.
func (r *replica) tokenFile(t *testing.T, bin, ns, sa string) string {
	t.Helper()
	out, err := r.NS.Command(context.Background(), filepath.Join(bin, "weft"), "token",
		"--control-plane", "127.0.0.1:"+replicaStatusPort, "--namespace", ns, "--service-account", sa).Output()
	if err != nil {
		t.Fatalf("weft token in %s: %v", r.NS.Name, err)
	}
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(strings.TrimSpace(string(out))), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// serves reports whether workload has an open ADS stream to r.
func (r *replica) serves(workload string) bool {
	code, body, err := httpGet(&http.Client{Timeout: time.Second}, "http://"+r.Status+"/debug/proxies", nil)
	if err != nil || code != 200 {
		return false
	}
	var dp struct {
		Proxies []struct {
			Workload string `json:"workload"`
			Streams  int    `json:"streams"`
		} `json:"proxies"`
	}
	if json.Unmarshal([]byte(body), &dp) != nil {
		return false
	}
	for _, p := range dp.Proxies {
		if p.Workload == workload && p.Streams > 0 {
			return true
		}
	}
	return false
}

// signal sends sig to the replica's process (ip netns exec execs it, so
// the pid is weft's) and waits for it to exit.
func (r *replica) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := r.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to %s: %v", sig, r.NS.Name, err)
	}
	select {
	case <-r.done:
	case <-time.After(15 * time.Second):
		t.Fatalf("%s did not exit after %v", r.NS.Name, sig)
	}
}

// waitFor polls cond every 20 ms for at most timeout and returns how long
// it took to hold.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// writeAtomic replaces a config file in one step, as an editor or a
// config sync would, so the watching control planes never read half.
func writeAtomic(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strings.TrimLeft(content, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// failoverMesh is a backend service and a client, each a sidecar in its
// namespace, whose config sets response header x-edit to edit.
func failoverMesh(backendIP, edit string) string {
	return fmt.Sprintf(`
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend, namespace: default}
spec:
  hosts: [backend.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 8080, name: http, protocol: HTTP}
  workloadSelector:
    labels: {app: backend}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: backend-v1, namespace: default}
spec:
  address: %s
  serviceAccount: backend
  labels: {app: backend, version: v1, security.istio.io/tlsMode: istio}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend, namespace: default}
spec:
  hosts: [backend.default.svc.cluster.local]
  http:
  - headers:
      response: {set: {x-edit: %q}}
    route:
    - destination: {host: backend.default.svc.cluster.local}
`, backendIP, edit)
}

// failoverSetup starts two replicas on one config directory and CA, and
// a backend and a client sidecar that list both replicas.
type failoverSetup struct {
	bin             string
	cfg             string
	backendIP       string
	a, b            *replica
	backend, client *workload
	hc              *http.Client
}

func newFailoverSetup(t *testing.T) *failoverSetup {
	t.Helper()
	bin := binaries(t)
	n := testenv.NewNetwork(t)
	nsA, nsB := n.Netns(t, "cp-a"), n.Netns(t, "cp-b")
	backendNS, clientNS := n.Netns(t, "backend"), n.Netns(t, "client")
	s := &failoverSetup{bin: bin, cfg: t.TempDir(), backendIP: backendNS.IP,
		hc: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 32}}}
	t.Cleanup(s.hc.CloseIdleConnections)
	writeAtomic(t, filepath.Join(s.cfg, "mesh.yaml"), failoverMesh(s.backendIP, "0"))
	caDir := filepath.Join(t.TempDir(), "ca")
	s.a = startReplica(t, bin, nsA, s.cfg, caDir) // creates the CA
	s.b = startReplica(t, bin, nsB, s.cfg, caDir) // uses it
	if ra, _ := os.ReadFile(s.a.Root); string(ra) != mustRead(t, s.b.Root) {
		t.Fatal("the replicas serve different roots: the CA directory is not shared")
	}
	both := &controlPlane{XDS: s.a.XDS + "," + s.b.XDS, Root: s.a.Root}
	s.backend = startWorkload(t, bin, both, backendNS, workloadSpec{Name: "backend", Namespace: "default", ServiceAccount: "backend",
		Labels: "app=backend,version=v1", Version: "v1", Port: 8080, TokenFile: s.a.tokenFile(t, bin, "default", "backend")})
	s.client = startWorkload(t, bin, both, clientNS, workloadSpec{Name: "client", Namespace: "default", ServiceAccount: "client",
		Labels: "app=client", TokenFile: s.b.tokenFile(t, bin, "default", "client")})
	s.waitEdit(t, "0", 30*time.Second)
	return s
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// get sends one request through the client sidecar to the backend and
// returns the x-edit header of a 200 answer.
func (s *failoverSetup) get() (string, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+s.client.Out+"/", nil)
	if err != nil {
		return "", err
	}
	req.Host = "backend.default.svc.cluster.local:8080"
	resp, err := s.hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("status %d", resp.StatusCode)
	}
	return resp.Header.Get("x-edit"), nil
}

// edit writes the config with x-edit set to v and returns how long until
// the client sidecar answers with it.
func (s *failoverSetup) edit(t *testing.T, v string) time.Duration {
	t.Helper()
	writeAtomic(t, filepath.Join(s.cfg, "mesh.yaml"), failoverMesh(s.backendIP, v))
	return s.waitEdit(t, v, 30*time.Second)
}

func (s *failoverSetup) waitEdit(t *testing.T, v string, timeout time.Duration) time.Duration {
	t.Helper()
	return waitFor(t, timeout, "config edit x-edit="+v+" in force", func() bool {
		got, err := s.get()
		return err == nil && got == v
	})
}

// connectedTo returns the replica the workload's sidecar has a stream to,
// or nil.
func (s *failoverSetup) connectedTo(workload string) *replica {
	for _, r := range []*replica{s.a, s.b} {
		if r.serves(workload) {
			return r
		}
	}
	return nil
}

func (s *failoverSetup) other(r *replica) *replica {
	if r == s.a {
		return s.b
	}
	return s.a
}

// readiness polls the sidecars' /ready until stopped and counts answers
// other than 200: a reconnect or a push must never make a proxy unready.
type readiness struct {
	polls, unready atomic.Int64
	stop           chan struct{}
	wg             sync.WaitGroup
}

func watchReadiness(admins ...string) *readiness {
	r := &readiness{stop: make(chan struct{})}
	c := &http.Client{Timeout: 2 * time.Second}
	for _, a := range admins {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			for range 6000 { // at most 5 minutes
				select {
				case <-r.stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
				code, _, err := httpGet(c, "http://"+a+"/ready", nil)
				r.polls.Add(1)
				if err != nil || code != 200 {
					r.unready.Add(1)
				}
			}
		}()
	}
	return r
}

func (r *readiness) check(t *testing.T) {
	t.Helper()
	close(r.stop)
	r.wg.Wait()
	t.Logf("readiness: %d polls of the sidecars' /ready, %d not ready", r.polls.Load(), r.unready.Load())
	if r.unready.Load() != 0 {
		t.Errorf("a sidecar was not ready %d times while its control plane moved", r.unready.Load())
	}
}

// iptables runs iptables inside the replica's namespace only.
func (r *replica) iptables(t *testing.T, args ...string) {
	t.Helper()
	if out, err := r.NS.Command(context.Background(), "iptables", args...).CombinedOutput(); err != nil {
		t.Fatalf("iptables %s in %s: %v: %s", strings.Join(args, " "), r.NS.Name, err, out)
	}
}

// blackhole drops every packet of the replica's xDS port, both ways, as
// when its host vanishes without a FIN or RST; it returns the undo.
func (r *replica) blackhole(t *testing.T) (undo func()) {
	t.Helper()
	if _, err := exec.LookPath("iptables"); err != nil {
		t.Skip("needs iptables")
	}
	rules := [][]string{
		{"INPUT", "-p", "tcp", "--dport", replicaXDSPort, "-j", "DROP"},
		{"OUTPUT", "-p", "tcp", "--sport", replicaXDSPort, "-j", "DROP"},
	}
	for _, rule := range rules {
		r.iptables(t, append([]string{"-I"}, rule...)...)
	}
	var once sync.Once
	undo = func() {
		once.Do(func() {
			for _, rule := range rules {
				r.iptables(t, append([]string{"-D"}, rule...)...)
			}
		})
	}
	t.Cleanup(undo)
	return undo
}

// connects counts the sidecar's log lines saying it opened a stream to r.
// (The replicas' /debug/proxies would do, but a replica that lost a
// sidecar silently lists its dead stream until its own keepalive fails.)
func connects(w *workload, r *replica) int {
	n := 0
	for _, line := range strings.Split(w.Proxy.out.String(), "\n") {
		if strings.Contains(line, "connected to control plane replica") && strings.Contains(line, "replica="+r.XDS) {
			n++
		}
	}
	return n
}

// streamEnds counts the sidecar's "ADS stream ended" log lines.
func streamEnds(w *workload) int {
	return strings.Count(w.Proxy.out.String(), "ADS stream ended")
}

// TestControlPlaneBlackhole: the connection between a sidecar and its
// control plane replica goes silent (iptables DROP in the replica's
// namespace: no FIN, no RST). The sidecar notices in seconds (TCP
// keepalive and TCP_USER_TIMEOUT, docs/control-plane.md), connects to the
// other replica at once, and a config edit is in force through it soon
// after; the sidecars never stop being ready. Times are logged; the only
// bound is a generous 10 s on the 5 s target.
func TestControlPlaneBlackhole(t *testing.T) {
	s := newFailoverSetup(t)
	ready := watchReadiness(s.backend.Admin, s.client.Admin)

	var first *replica
	waitFor(t, 10*time.Second, "client sidecar connected", func() bool { first = s.connectedTo("client"); return first != nil })
	second := s.other(first)
	ends, onSecond := streamEnds(s.client), connects(s.client, second)

	undo := first.blackhole(t)
	start := time.Now()
	var noticed time.Duration
	took := waitFor(t, 30*time.Second, "client sidecar connected to the other replica", func() bool {
		if noticed == 0 && streamEnds(s.client) > ends {
			noticed = time.Since(start)
		}
		return connects(s.client, second) > onSecond
	})
	t.Logf("black-holed %s: the client sidecar noticed after %v and was connected to %s after %v", first.NS.Name, noticed, second.NS.Name, took)
	for _, line := range strings.Split(s.client.Proxy.out.String(), "\n") {
		if strings.Contains(line, "ADS stream ended") {
			t.Logf("the client sidecar logged: %s", line)
			break
		}
	}
	if took > 10*time.Second {
		t.Errorf("the black-holed control plane was replaced after %v; the target is 5 s", took)
	}
	t.Logf("a config edit was in force %v after it was written", s.edit(t, "1"))

	// The sidecars kept their config meanwhile and serve the edit; once
	// the rule is gone the first replica is usable again.
	undo()
	onFirst := connects(s.client, first)
	second.signal(t, syscall.SIGTERM)
	t.Logf("after the rule was removed and %s shut down, the client sidecar was on %s after %v", second.NS.Name, first.NS.Name,
		waitFor(t, 30*time.Second, "client sidecar back on the first replica", func() bool { return connects(s.client, first) > onFirst }))
	t.Logf("a config edit was in force %v after it was written", s.edit(t, "2"))
	ready.check(t)
}

// load sends GET requests at a fixed rate through the client sidecar until
// stopped (or max requests) and counts failures.
type load struct {
	ok, failed atomic.Int64
	mu         sync.Mutex
	errs       []string
	stop       chan struct{}
	wg         sync.WaitGroup
	start      time.Time
}

func startLoad(s *failoverSetup, rps, max int) *load {
	const workers = 10
	l := &load{stop: make(chan struct{}), start: time.Now()}
	interval := time.Duration(workers) * time.Second / time.Duration(rps)
	for range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			tick := time.NewTicker(interval)
			defer tick.Stop()
			for range max / workers {
				select {
				case <-l.stop:
					return
				case <-tick.C:
				}
				if _, err := s.get(); err != nil {
					l.failed.Add(1)
					l.mu.Lock()
					if len(l.errs) < 10 {
						l.errs = append(l.errs, err.Error())
					}
					l.mu.Unlock()
					continue
				}
				l.ok.Add(1)
			}
		}()
	}
	return l
}

func (l *load) check(t *testing.T) {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	secs := time.Since(l.start).Seconds()
	t.Logf("traffic: %d requests in %.1fs (%.0f/s), %d failed", l.ok.Load()+l.failed.Load(), secs, float64(l.ok.Load()+l.failed.Load())/secs, l.failed.Load())
	if l.failed.Load() != 0 {
		t.Errorf("%d requests failed while the control plane replicas went away, e.g. %v", l.failed.Load(), l.errs)
	}
}

// TestControlPlaneReplicaFailover: two replicas, traffic at about 300
// requests per second through two sidecars. The replica the client
// sidecar uses is SIGKILLed: the sidecar connects to the other, a config
// edit through it is in force, and not one request fails. The killed
// replica comes back and the other is shut down gracefully (SIGTERM): it
// ends its streams and sends GOAWAY, so the sidecars move at once, and an
// edit through the restarted replica is in force too. The sidecars never
// stop being ready.
func TestControlPlaneReplicaFailover(t *testing.T) {
	s := newFailoverSetup(t)
	ready := watchReadiness(s.backend.Admin, s.client.Admin)
	traffic := startLoad(s, 300, 30000)

	var first *replica
	waitFor(t, 10*time.Second, "client sidecar connected", func() bool { first = s.connectedTo("client"); return first != nil })
	second := s.other(first)
	time.Sleep(2 * time.Second) // traffic flowing before the failure

	onSecond := connects(s.client, second)
	start := time.Now()
	first.signal(t, syscall.SIGKILL)
	waitFor(t, 30*time.Second, "client sidecar on the surviving replica", func() bool { return connects(s.client, second) > onSecond })
	t.Logf("SIGKILL %s: the client sidecar was connected to %s %v after the signal", first.NS.Name, second.NS.Name, time.Since(start))
	waitFor(t, 30*time.Second, "backend sidecar on the surviving replica", func() bool { return second.serves("backend") })
	t.Logf("a config edit through %s was in force %v after it was written", second.NS.Name, s.edit(t, "1"))

	first.start(t, s.bin)
	time.Sleep(time.Second)
	onFirst := connects(s.client, first)
	start = time.Now()
	second.signal(t, syscall.SIGTERM)
	exited := time.Since(start)
	waitFor(t, 30*time.Second, "client sidecar on the restarted replica", func() bool { return connects(s.client, first) > onFirst })
	t.Logf("SIGTERM %s (exited after %v): the client sidecar was connected to %s %v after the signal", second.NS.Name, exited, first.NS.Name, time.Since(start))
	waitFor(t, 30*time.Second, "backend sidecar on the restarted replica", func() bool { return first.serves("backend") })
	t.Logf("a config edit through %s was in force %v after it was written", first.NS.Name, s.edit(t, "2"))

	time.Sleep(time.Second)
	traffic.check(t)
	ready.check(t)
}
