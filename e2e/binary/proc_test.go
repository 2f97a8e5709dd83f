package binary

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"weft.dev/weft/internal/testenv"
)

// repoRoot is where the README's commands run: its paths are relative to it.
const repoRoot = "../.."

var (
	binDir   string // where buildOnce put the binaries; removed by TestMain
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

// binaries builds weft and weft-proxy once per test run, with the
// README's build command, into a temporary directory, and returns it.
func binaries(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binaries")
	}
	buildArgs := readme(t).buildArgs // parsed first: a failure here must not happen inside Do
	build.Do(func() {
		goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(goBin); err != nil {
			if goBin, err = exec.LookPath("go"); err != nil {
				buildErr = fmt.Errorf("no go tool: %w", err)
				return
			}
		}
		if binDir, buildErr = os.MkdirTemp("", "weft-binary-e2e-"); buildErr != nil {
			return
		}
		args := buildArgs
		i := slices.Index(args, "-o")
		if i < 0 || i+1 >= len(args) {
			// go build of several packages writes nothing without -o.
			buildErr = fmt.Errorf("README's build command %q has no -o DIR: it would write no binaries", args)
			return
		}
		args[i+1] = binDir // the README writes to the working directory
		cmd := exec.Command(goBin, args...)
		cmd.Dir = repoRoot
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binDir
}

// Loopback prefixes: each test gets its own 127.X.Y.0/24, away from the
// README's 127.0.10.0/24 (a demo may be running), the in-process e2e
// suite's 127.77.0.0/16 and the benchmarks' 127.0.20.0/24, so a
// concurrent run on the same machine does not collide.
var (
	prefixBase = rand.IntN(100*250) + 1
	prefixNext atomic.Int64
)

// newPrefix returns "127.X.Y." for a test's addresses.
func newPrefix() string {
	n := prefixBase + int(prefixNext.Add(1))
	return fmt.Sprintf("127.%d.%d.", 100+(n/250)%100, n%250+1)
}

// proc is one running binary. Its output is kept for the test log.
type proc struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	out    testenv.SyncBuffer // stdout and stderr, interleaved
	stdout testenv.SyncBuffer
	done   chan struct{}
	err    error // set before done closes
}

// start runs bin with args from the repository root. The process is
// killed at cleanup if it is still running, whatever the test's outcome,
// and its output is logged if the test failed.
func start(t *testing.T, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: filepath.Base(bin) + " " + strings.Join(args, " "), done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Dir = repoRoot
	p.cmd.Stdout = teeWriter{&p.out, &p.stdout}
	p.cmd.Stderr = &p.out
	p.cmd.SysProcAttr = sysProcAttr()
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", p.name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("output of %s:\n%s", p.name, p.out.String())
		}
	})
	return p
}

// runCmd runs bin with args from the repository root to completion
// (bounded by 30 s) and returns its exit status and output.
func runCmd(t *testing.T, bin string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = repoRoot
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &exit) && ctx.Err() == nil:
		return exit.ExitCode(), string(out)
	default:
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
		return -1, ""
	}
}

// waitOutput waits until the process's output matches re and returns the
// first submatch (or the whole match).
func (p *proc) waitOutput(re *regexp.Regexp, timeout time.Duration) string {
	p.t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if m := re.FindStringSubmatch(p.out.String()); m != nil {
			return m[len(m)-1]
		}
		select {
		case <-p.done:
			p.t.Fatalf("%s exited (%v) before printing %q", p.name, p.err, re)
		case <-deadline.C:
			p.t.Fatalf("%s did not print %q within %v", p.name, re, timeout)
		case <-tick.C:
		}
	}
}

// stop sends SIGTERM and requires the process to exit with status 0
// within timeout (its drain timeout plus slack).
func (p *proc) stop(timeout time.Duration) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatalf("SIGTERM to %s: %v", p.name, err)
	}
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("%s still running %v after SIGTERM", p.name, timeout)
	}
	if p.err != nil {
		p.t.Errorf("%s after SIGTERM: %v, want exit status 0", p.name, p.err)
	}
}

type teeWriter [2]*testenv.SyncBuffer

func (w teeWriter) Write(p []byte) (int, error) {
	_, _ = w[1].Write(p)
	return w[0].Write(p)
}

// runToFile runs a one-shot bin with args from the repository root, its
// stdout to the file out (mode 0600), until it exits 0 — retrying while
// it fails, for at most timeout (a command that needs a server that is
// still starting). Each attempt is bounded by 10 s.
func runToFile(t *testing.T, bin, out string, timeout time.Duration, args ...string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Dir = repoRoot
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		cancel()
		if err == nil {
			if out != "" {
				if err := os.WriteFile(out, stdout.Bytes(), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %s: %v\nstdout:\n%s\nstderr:\n%s", filepath.Base(bin), strings.Join(args, " "), err, stdout.String(), stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// inboundMesh configures a service svc.default.svc.cluster.local (HTTP,
// port 8080) with one WorkloadEntry svc-<version> at pre+<suffix> for
// each {version, suffix} of workloads, starts `weft serve` on it, and
// returns a function that starts the inbound sidecar of a version (with
// extra flags), its app on pre+"5:18080". A sidecar reads the
// environment when it starts.
func inboundMesh(t *testing.T, bin, pre string, workloads ...[2]string) (sidecar func(version string, extra ...string)) {
	t.Helper()
	yaml := `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc, namespace: default}
spec:
  hosts: [svc.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: svc}}
`
	ips := map[string]string{}
	for _, w := range workloads {
		ips[w[0]] = pre + w[1]
		yaml += fmt.Sprintf(`---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: svc-%[1]s, namespace: default}
spec: {address: %[2]s, ports: {http: 8080}, labels: {app: svc, version: %[1]s}}
`, w[0], pre+w[1])
	}
	cfg := t.TempDir()
	if err := os.WriteFile(filepath.Join(cfg, "svc.yaml"), []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	xds := pre + "100:15010"
	start(t, filepath.Join(bin, "weft"), "serve", "--config", cfg, "--xds-address", pre+"100:15012",
		"--xds-plaintext-address", xds, "--status-address", pre+"100:15014", "--log-level", "warn")
	return func(version string, extra ...string) {
		ip := ips[version]
		start(t, filepath.Join(bin, "weft-proxy"), append([]string{"--xds-plaintext", "--xds-address", xds, "--workload", "svc-" + version,
			"--labels", "app=svc,version=" + version, "--ip", ip, "--outbound", "", "--app-port", "8080=" + pre + "5:18080",
			"--admin-address", ip + ":15000", "--log-level", "warn"}, extra...)...)
	}
}
