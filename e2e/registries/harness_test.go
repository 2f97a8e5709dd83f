// Package registries tests Weft's registries end to end on the built
// binaries: `weft serve` reading a real kube-apiserver and a real Consul
// agent, `weft-proxy` sidecars and `weft echo` apps in network namespaces
// standing in for pods and VMs, and real traffic between them.
package registries

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"weft.dev/weft/internal/testenv"
)

const repoRoot = "../.."

var (
	binDir   string
	buildErr error
	build    sync.Once
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// binaries builds weft and weft-proxy once per test run (the README's
// build command) and returns their directory.
func binaries(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binaries")
	}
	build.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "weft-registries-e2e-"); buildErr != nil {
			return
		}
		goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
		cmd := exec.Command(goBin, "build", "-o", binDir, "./cmd/weft", "./cmd/weft-proxy")
		cmd.Dir = repoRoot
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

// proc is one running process; its output is logged when the test fails.
type proc struct {
	t    testing.TB
	name string
	cmd  *exec.Cmd
	out  testenv.SyncBuffer
	done chan struct{}
	err  error
}

// startCmd starts cmd; it is stopped (SIGTERM, then SIGKILL) at cleanup.
func startCmd(t testing.TB, name string, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{t: t, name: name, cmd: cmd, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = &p.out, &p.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("output of %s:\n%s", name, tail(p.out.String(), 60))
		}
	})
	return p
}

// kill stops the process group: SIGTERM, SIGKILL after 5 s.
func (p *proc) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// waitOutput waits until the output matches re; it returns the last
// submatch.
func (p *proc) waitOutput(re *regexp.Regexp, timeout time.Duration) string {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if m := re.FindStringSubmatch(p.out.String()); m != nil {
			return m[len(m)-1]
		}
		select {
		case <-p.done:
			p.t.Fatalf("%s exited (%v) before printing %q:\n%s", p.name, p.err, re, tail(p.out.String(), 40))
		default:
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s did not print %q within %v:\n%s", p.name, re, timeout, tail(p.out.String(), 40))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// controlPlane is a running `weft serve` reachable from the test network.
type controlPlane struct {
	*proc
	XDS    string // on the network's gateway: where pods' sidecars connect
	Status string // loopback
	Root   string // path of the mesh root certificate
}

// serve starts `weft serve` with args, its secure port on the network's
// gateway address, and fetches the mesh root.
func serve(t testing.TB, bin string, n *testenv.Network, args ...string) *controlPlane {
	t.Helper()
	return serveOn(t, bin, n.Gateway, args...)
}

// serveOn starts `weft serve` with its secure port on host.
func serveOn(t testing.TB, bin, host string, args ...string) *controlPlane {
	t.Helper()
	xds := net.JoinHostPort(host, freePort(t, host))
	status := net.JoinHostPort("127.0.0.1", freePort(t, "127.0.0.1"))
	dir := t.TempDir()
	all := append([]string{"serve", "--xds-address", xds, "--status-address", status, "--ca-dir", filepath.Join(dir, "ca"),
		"--debounce", "20ms", "--debounce-max", "200ms", "--log-level", "info"}, args...)
	cmd := exec.Command(filepath.Join(bin, "weft"), all...)
	cmd.Dir = repoRoot
	cp := &controlPlane{proc: startCmd(t, "weft serve", cmd), XDS: xds, Status: status, Root: filepath.Join(dir, "root-cert.pem")}
	cp.waitOutput(regexp.MustCompile(`control plane running`), 60*time.Second)
	eventually(t, 30*time.Second, "root certificate", func() error {
		code, body, err := httpGet(&http.Client{Timeout: 2 * time.Second}, "http://"+status+"/debug/root-cert", nil)
		if err != nil || code != 200 {
			return fmt.Errorf("GET /debug/root-cert: %d %v", code, err)
		}
		return os.WriteFile(cp.Root, []byte(body), 0o644)
	})
	return cp
}

// token asks the running control plane for a bootstrap token.
func (cp *controlPlane) token(t testing.TB, bin, ns, sa string) string {
	t.Helper()
	out, err := exec.Command(filepath.Join(bin, "weft"), "token", "--control-plane", cp.Status, "--namespace", ns, "--service-account", sa).Output()
	if err != nil {
		t.Fatalf("weft token: %v", err)
	}
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, bytes.TrimSpace(out), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// workload is an app and its sidecar in a network namespace: a pod or a VM.
type workload struct {
	NS    *testenv.Netns
	Name  string
	App   *proc
	Proxy *proc
	Admin string // the sidecar's admin address
	Out   string // the sidecar's outbound listener
}

// workloadSpec says how to start one.
type workloadSpec struct {
	Name, Namespace, ServiceAccount string
	Labels                          string // k=v,k=v
	Version                         string // what the echo app answers
	Port                            int    // service (and target) port the sidecar serves inbound; 0 for a client only
	TokenFile                       string
	Extra                           []string // more weft-proxy flags
}

// startWorkload runs `weft echo` on the namespace's loopback and
// `weft-proxy` on its address, connected to cp, and waits until the
// sidecar is ready.
func startWorkload(t testing.TB, bin string, cp *controlPlane, ns *testenv.Netns, s workloadSpec) *workload {
	t.Helper()
	w := &workload{NS: ns, Name: s.Name, Admin: ns.IP + ":15000", Out: ns.IP + ":15001"}
	args := []string{"--workload", s.Name, "--namespace", s.Namespace, "--service-account", s.ServiceAccount,
		"--labels", s.Labels, "--ip", ns.IP, "--outbound", w.Out, "--admin-address", w.Admin,
		"--xds-address", cp.XDS, "--root-cert", cp.Root, "--token-file", s.TokenFile, "--log-level", "info"}
	if s.Port != 0 {
		app := fmt.Sprintf("127.0.0.1:%d", s.Port+10000)
		w.App = startCmd(t, s.Name+" echo", ns.Command(context.Background(), filepath.Join(bin, "weft"), "echo",
			"--name", s.Name, "--version", s.Version, "--address", app))
		args = append(args, "--app-port", fmt.Sprintf("%d=%s", s.Port, app))
	}
	args = append(args, s.Extra...)
	w.Proxy = startCmd(t, s.Name+" weft-proxy", ns.Command(context.Background(), filepath.Join(bin, "weft-proxy"), args...))
	c := &http.Client{Timeout: 2 * time.Second}
	eventually(t, 30*time.Second, s.Name+" sidecar ready", func() error {
		code, body, err := httpGet(c, "http://"+w.Admin+"/ready", nil)
		if err != nil || code != 200 {
			return fmt.Errorf("/ready: %d %q %v", code, body, err)
		}
		return nil
	})
	return w
}

// freePort picks a free TCP port on host.
func freePort(t testing.TB, host string) string {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, p, _ := net.SplitHostPort(l.Addr().String())
	return p
}

// httpGet sends a GET with headers (Host included) and returns the status
// and body.
func httpGet(c *http.Client, url string, headers map[string]string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	for k, v := range headers {
		if strings.EqualFold(k, "host") {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b), err
}

// eventually retries cond every 50 ms until it returns nil or timeout
// passes.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func regexpMust(s string) *regexp.Regexp { return regexp.MustCompile(s) }
