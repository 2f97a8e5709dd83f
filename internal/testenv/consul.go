package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// ConsulEnv is a Consul agent in dev mode (a single server, state in
// memory) on loopback ephemeral ports, with DNS and gRPC off.
type ConsulEnv struct {
	// Addr is the HTTP API's host:port, what consul/api's Config.Address
	// and `weft serve --consul` take.
	Addr string
	// ConfigDir is read by the agent at start (-config-dir): service
	// definitions written there (JSON, one file each) are registered again
	// after Restart, as a real agent's configured services are. Services
	// registered through the API live in the dev agent's memory only.
	ConfigDir string
	// Datacenter is the agent's datacenter ("dc1").
	Datacenter string

	t    testing.TB
	bin  string
	dir  string
	args []string

	mu   sync.Mutex
	proc *process
}

// Consul starts `consul agent -dev` for t; it stops in t.Cleanup. It
// skips t when the binary is missing (fails when Required).
func Consul(t testing.TB) *ConsulEnv {
	t.Helper()
	bin := Tool(t, "consul")
	dir := t.TempDir()
	c := &ConsulEnv{t: t, bin: bin, dir: dir, ConfigDir: filepath.Join(dir, "config.d"), Datacenter: "dc1"}
	if err := os.MkdirAll(c.ConfigDir, 0o755); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	p := freePorts(t, 4)
	c.Addr = fmt.Sprintf("127.0.0.1:%d", p[0])
	ports := map[string]any{
		"ports": map[string]int{"http": p[0], "serf_lan": p[1], "serf_wan": p[2], "server": p[3], "dns": -1, "grpc": -1, "grpc_tls": -1},
	}
	b, _ := json.Marshal(ports)
	portsFile := filepath.Join(dir, "ports.json")
	if err := os.WriteFile(portsFile, b, 0o644); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	c.args = []string{"agent", "-dev", "-client=127.0.0.1", "-bind=127.0.0.1", "-datacenter=" + c.Datacenter,
		"-node=weft-test", "-config-file=" + portsFile, "-config-dir=" + c.ConfigDir, "-log-level=warn"}
	t.Cleanup(func() {
		c.Stop()
		if t.Failed() {
			c.mu.Lock()
			if c.proc != nil {
				t.Logf("testenv: consul log ends:\n%s", c.proc.tail(30))
			}
			c.mu.Unlock()
		}
	})
	c.Start()
	return c
}

// Start starts the agent (again) on the same ports and waits until it has
// a leader. Use it after Stop.
func (c *ConsulEnv) Start() {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.proc = start(c.t, c.dir, "consul", c.bin, []string{"CHECKPOINT_DISABLE=1"}, c.args...)
	waitFor(c.t, c.proc, 30*time.Second, func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.Addr+"/v1/status/leader", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
		if resp.StatusCode != http.StatusOK || strings.Trim(strings.TrimSpace(string(body)), `"`) == "" {
			return fmt.Errorf("no leader yet: %s %s", resp.Status, body)
		}
		return nil
	})
}

// Stop stops the agent (SIGTERM, then SIGKILL after 5 s). The ports stay
// reserved for Start only by convention: nothing else in the test should
// bind them.
func (c *ConsulEnv) Stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc != nil {
		c.proc.stop(5 * time.Second)
	}
}

// Restart stops and starts the agent; a dev agent forgets what was
// registered through the API and registers ConfigDir's services again.
func (c *ConsulEnv) Restart() {
	c.t.Helper()
	c.Stop()
	c.Start()
}
