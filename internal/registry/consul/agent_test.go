package consul

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// agent is a real `consul agent -dev` on loopback ports, stopped in
// t.Cleanup. Stop and Start keep its ports, so a source configured with
// Addr sees an outage and a recovery. A dev agent keeps its catalog in
// memory: after Start it is empty.
type agent struct {
	t    *testing.T
	bin  string
	args []string
	Addr string
	cmd  *exec.Cmd
	done chan struct{}
	log  *os.File
}

// startAgent starts a dev agent, skipping the test when the consul binary
// (built by hack/tools.sh) is missing, unless WEFT_REQUIRE_TOOLS=1.
func startAgent(t *testing.T) *agent {
	t.Helper()
	dir := os.Getenv("WEFT_TOOLS_DIR")
	if dir == "" {
		home, _ := os.UserHomeDir()
		dir = filepath.Join(home, ".cache", "weft-tools")
	}
	bin := filepath.Join(dir, "bin", "consul")
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("WEFT_REQUIRE_TOOLS") == "1" {
			t.Fatalf("consul binary missing at %s (WEFT_REQUIRE_TOOLS=1): run hack/tools.sh", bin)
		}
		t.Skipf("consul binary missing at %s: run hack/tools.sh to build it", bin)
	}
	ports := freePorts(t, 4)
	a := &agent{t: t, bin: bin, Addr: "127.0.0.1:" + strconv.Itoa(ports[0])}
	a.args = []string{"agent", "-dev", "-node", "weft-vm", "-client", "127.0.0.1", "-bind", "127.0.0.1",
		"-http-port", strconv.Itoa(ports[0]), "-serf-lan-port", strconv.Itoa(ports[1]),
		"-serf-wan-port", strconv.Itoa(ports[2]), "-server-port", strconv.Itoa(ports[3]),
		"-dns-port", "-1", "-grpc-port", "-1", "-hcl", "ports { grpc_tls = -1 }", "-log-level", "warn"}
	var err error
	if a.log, err = os.Create(filepath.Join(t.TempDir(), "consul.log")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.Stop()
		if t.Failed() {
			if b, err := os.ReadFile(a.log.Name()); err == nil {
				t.Logf("consul log:\n%s", b)
			}
		}
		a.log.Close()
	})
	a.Start()
	return a
}

// Start starts the agent and waits until it has elected itself leader.
func (a *agent) Start() {
	a.t.Helper()
	a.cmd = exec.Command(a.bin, a.args...)
	a.cmd.Env = append(os.Environ(), "CHECKPOINT_DISABLE=1")
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	if err := a.cmd.Start(); err != nil {
		a.t.Fatalf("start consul: %v", err)
	}
	a.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) {
		cmd.Wait()
		close(done)
	}(a.cmd, a.done)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+a.Addr+"/v1/status/leader", nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			var b [64]byte
			n, _ := resp.Body.Read(b[:])
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && n > 2 && string(b[:n]) != `""` {
				return
			}
		}
		select {
		case <-a.done:
			a.t.Fatalf("consul exited before it was ready")
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
		}
	}
	a.t.Fatalf("consul at %s not ready within 30s", a.Addr)
}

// Stop stops the agent (SIGKILL: an outage, not a graceful leave) and
// waits for it to exit.
func (a *agent) Stop() {
	if a.cmd == nil {
		return
	}
	a.cmd.Process.Kill()
	<-a.done
	a.cmd = nil
}

// freePorts reserves n distinct loopback TCP ports (closed again; the
// agent binds them next, also for UDP on the serf ports).
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var out []int
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return out
}
