// Package testenv starts the real third-party servers Weft's tests run
// against — etcd with a kube-apiserver, a Consul agent, Jaeger, Envoy's
// rate limit service with Redis — on
// loopback, and network namespaces that play the role of Kubernetes pods
// and VMs, and the small helpers those tests share (SyncBuffer). It is
// for tests only: no product package imports it (a deps test checks).
//
// The servers are binaries built by hack/tools.sh into
// $WEFT_TOOLS_DIR/bin (default $HOME/.cache/weft-tools/bin). When one is
// missing the test is skipped with a message saying how to build it —
// unless WEFT_REQUIRE_TOOLS=1 (set by .ci/run), which turns the skip into
// a failure, so CI can never pass by skipping.
package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ToolsDir is where hack/tools.sh puts its binaries.
func ToolsDir() string {
	if d := os.Getenv("WEFT_TOOLS_DIR"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return filepath.Join(os.TempDir(), "weft-tools")
	}
	return filepath.Join(home, ".cache", "weft-tools")
}

// Required reports whether a missing tool must fail the test rather than
// skip it (WEFT_REQUIRE_TOOLS=1, as in CI).
func Required() bool { return os.Getenv("WEFT_REQUIRE_TOOLS") == "1" }

// unavailable skips t, or fails it when tools are required.
func unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if Required() {
		t.Fatalf("%s (WEFT_REQUIRE_TOOLS=1, so this fails instead of skipping)", msg)
	}
	t.Skip(msg)
}

// Tool returns the path of a binary built by hack/tools.sh, falling back to
// $PATH; it skips (or fails, see Required) when there is none.
func Tool(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(ToolsDir(), "bin", name)
	if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
		return p
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	unavailable(t, "testenv: %s not found in %s/bin or $PATH; build it with hack/tools.sh", name, ToolsDir())
	return ""
}

// freePorts returns n distinct free TCP ports on 127.0.0.1. They are free
// when returned; a server started right after binds them.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("testenv: free port: %v", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// process is a started server: its output goes to a log file that is
// printed when the test fails.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error
}

// start runs bin with args, its output in a log file under dir; the
// process is killed in t.Cleanup (after cleanups registered later run).
func start(t testing.TB, dir, name, bin string, env []string, args ...string) *process {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("testenv: start %s: %v", name, err)
	}
	p := &process{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p
}

// stop ends the process: SIGTERM, then SIGKILL after grace.
func (p *process) stop(grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// tail returns the last lines of the process's log, for failure messages.
func (p *process) tail(lines int) string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return ""
	}
	ls := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return strings.Join(ls, "\n")
}

// waitFor polls ready every 100 ms until it returns nil, the process exits
// or timeout passes; it fails the test with the process's log otherwise.
func waitFor(t testing.TB, p *process, timeout time.Duration, ready func(context.Context) error) {
	t.Helper()
	if !waitReady(t, p, timeout, ready) {
		t.Fatalf("testenv: %s exited before it was ready (%v): a port was taken; its log ends:\n%s", p.name, p.err, p.tail(40))
	}
}

// waitReady is waitFor, except that it returns false when the process
// exited because a port it was to listen on was taken: freePorts hands
// out ports free when it returns, and any process's outgoing connection
// may take one before the server binds it. The caller then starts the
// server again on new ports.
func waitReady(t testing.TB, p *process, timeout time.Duration, ready func(context.Context) error) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var last error
	for {
		if p.exited() {
			if strings.Contains(p.tail(40), "address already in use") {
				return false
			}
			t.Fatalf("testenv: %s exited before it was ready (%v); its log ends:\n%s", p.name, p.err, p.tail(40))
		}
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		last = ready(rctx)
		rcancel()
		if last == nil {
			return true
		}
		select {
		case <-ctx.Done():
			t.Fatalf("testenv: %s not ready after %v: %v; its log ends:\n%s", p.name, timeout, last, p.tail(40))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// netnsSeq numbers the namespaces and bridges of this process.
var (
	netnsMu  sync.Mutex
	netnsSeq int
)

func itoa(i int) string { return strconv.Itoa(i) }

// Run runs run(ctx) in a goroutine until t ends: at cleanup the context is
// cancelled and run must return nil within timeout, or t fails. It is how
// tests start a component's Run loop (a registry source, a config source).
func Run(t testing.TB, timeout time.Duration, run func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(timeout):
			t.Errorf("Run did not return within %v of its context ending", timeout)
		}
	})
}
