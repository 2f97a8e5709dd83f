package testenv

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// RateLimitEnv is Envoy's reference rate limit service
// (github.com/envoyproxy/ratelimit, built by hack/tools.sh as
// "ratelimit") backed by a real Redis (Debian's redis-server), both on
// loopback ephemeral ports, with the limits of one configuration file.
type RateLimitEnv struct {
	// GRPCAddr is the envoy.service.ratelimit.v3 gRPC server's
	// host:port (127.0.0.1).
	GRPCAddr string
	// RedisAddr is Redis's host:port.
	RedisAddr string

	t          testing.TB
	bin, dir   string
	env        []string
	healthAddr string

	mu   sync.Mutex
	proc *process
}

// RateLimit starts redis-server and the rate limit service for t with
// config, the service's YAML configuration (domain and descriptors, as
// its README describes); both stop in t.Cleanup. It skips t when either
// binary is missing (fails when Required).
func RateLimit(t testing.TB, config string) *RateLimitEnv {
	t.Helper()
	redisBin := Tool(t, "redis-server")
	bin := Tool(t, "ratelimit")
	dir := t.TempDir()
	// RUNTIME_ROOT/RUNTIME_SUBDIRECTORY/config/*.yaml is where the
	// service reads its configuration.
	cfgDir := filepath.Join(dir, "runtime", "ratelimit", "config")
	if err := os.MkdirAll(cfgDir, 0o755); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	if err := os.WriteFile(filepath.Join(cfgDir, "config.yaml"), []byte(config), 0o644); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	p := freePorts(t, 4)
	r := &RateLimitEnv{t: t, bin: bin, dir: dir,
		RedisAddr:  fmt.Sprintf("127.0.0.1:%d", p[0]),
		GRPCAddr:   fmt.Sprintf("127.0.0.1:%d", p[1]),
		healthAddr: fmt.Sprintf("127.0.0.1:%d", p[2]),
	}
	redis := start(t, dir, "redis", redisBin, nil, "--bind", "127.0.0.1", "--port", strconv.Itoa(p[0]),
		"--save", "", "--appendonly", "no", "--dir", dir)
	t.Cleanup(func() { redis.stop(5 * time.Second) })
	waitFor(t, redis, 30*time.Second, func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", r.RedisAddr)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(time.Second))
		if _, err := c.Write([]byte("PING\r\n")); err != nil {
			return err
		}
		b := make([]byte, 16)
		n, err := c.Read(b)
		if err != nil || !strings.HasPrefix(string(b[:n]), "+PONG") {
			return fmt.Errorf("redis PING: %q %v", b[:n], err)
		}
		return nil
	})
	r.env = []string{
		"RUNTIME_ROOT=" + filepath.Join(dir, "runtime"), "RUNTIME_SUBDIRECTORY=ratelimit", "RUNTIME_WATCH_ROOT=false",
		"REDIS_SOCKET_TYPE=tcp", "REDIS_URL=" + r.RedisAddr, "USE_STATSD=false", "LOG_LEVEL=warn",
		"HOST=127.0.0.1", "PORT=" + strconv.Itoa(p[2]),
		"GRPC_HOST=127.0.0.1", "GRPC_PORT=" + strconv.Itoa(p[1]),
		"DEBUG_HOST=127.0.0.1", "DEBUG_PORT=" + strconv.Itoa(p[3]),
	}
	t.Cleanup(func() {
		r.Stop()
		if t.Failed() {
			r.mu.Lock()
			if r.proc != nil {
				t.Logf("testenv: ratelimit log ends:\n%s", r.proc.tail(30))
			}
			r.mu.Unlock()
		}
	})
	r.Start()
	return r
}

// Start starts the rate limit service (again, after Stop) on the same
// ports and waits until its health check passes (it reaches Redis).
func (r *RateLimitEnv) Start() {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.proc = start(r.t, r.dir, "ratelimit", r.bin, r.env)
	waitFor(r.t, r.proc, 30*time.Second, func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+r.healthAddr+"/healthcheck", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("healthcheck: %s %s", resp.Status, body)
		}
		return nil
	})
}

// Stop stops the rate limit service (SIGTERM, then SIGKILL after 5 s);
// Redis keeps its counters.
func (r *RateLimitEnv) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.proc != nil {
		r.proc.stop(5 * time.Second)
	}
}
