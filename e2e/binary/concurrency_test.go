package binary

import (
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestConcurrencyFlag: the built weft-proxy runs with the worker threads
// --concurrency asks for, as the Go runtime itself reports them
// (go_sched_gomaxprocs_threads on /stats/prometheus, and the start log
// line), and the GOMAXPROCS environment variable wins over the flag.
// No control plane is needed: the admin endpoint serves from the start.
func TestConcurrencyFlag(t *testing.T) {
	bin := filepath.Join(binaries(t), "weft-proxy")
	// GOMAXPROCS unset for the proxies unless a case sets it.
	t.Setenv("GOMAXPROCS", "")
	c := &http.Client{Timeout: 5 * time.Second}
	// run starts a proxy with args (and GOMAXPROCS=env when env is not
	// ""), checks that its start line and its metrics agree on the
	// number of Ps, stops it and returns that number and its output.
	run := func(t *testing.T, env string, args ...string) (int, string) {
		t.Helper()
		if env != "" {
			t.Setenv("GOMAXPROCS", env)
		}
		admin := newPrefix() + "1:15000"
		p := start(t, bin, append([]string{"--xds-plaintext", "--xds-address", "127.0.0.1:1", "--workload", "w", "--outbound", "",
			"--admin-address", admin, "--log-level", "info"}, args...)...)
		logged, _ := strconv.Atoi(p.waitOutput(regexp.MustCompile(`msg="proxy starting".* gomaxprocs=(\d+)`), 20*time.Second))
		var metric int
		eventually(t, 10*time.Second, "go_sched_gomaxprocs_threads on "+admin, func() error {
			f := scrape(t, c, admin)["go_sched_gomaxprocs_threads"]
			if f == nil || len(f.GetMetric()) != 1 {
				return fmt.Errorf("no go_sched_gomaxprocs_threads")
			}
			metric = int(f.GetMetric()[0].GetGauge().GetValue())
			return nil
		})
		if logged != metric {
			t.Errorf("start line says gomaxprocs=%d, go_sched_gomaxprocs_threads = %d", logged, metric)
		}
		p.stop(15 * time.Second)
		return metric, p.out.String()
	}
	// What the runtime chooses alone: every CPU, or the CPU limit.
	avail, _ := run(t, "", "--concurrency", "0")
	if avail < 1 || avail > runtime.NumCPU() {
		t.Fatalf("--concurrency 0: %d Ps", avail)
	}
	for _, tc := range []struct {
		name string
		env  string // GOMAXPROCS for the proxy; "" unset
		args []string
		want int
		log  string // a line the proxy must print
	}{
		{name: "one", args: []string{"--concurrency", "1"}, want: 1},
		{name: "default", want: min(2, avail)}, // defaultConcurrency
		{name: "capped at the CPUs", args: []string{"--concurrency", strconv.Itoa(avail + 3)}, want: avail},
		{name: "environment wins", env: "1", args: []string{"--concurrency", "2"}, want: 1,
			log: `ignoring --concurrency: the GOMAXPROCS environment variable is set`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, out := run(t, tc.env, tc.args...)
			if got != tc.want {
				t.Errorf("%q: %d Ps, want %d", tc.args, got, tc.want)
			}
			if tc.log != "" && !strings.Contains(out, tc.log) {
				t.Errorf("output lacks %q:\n%s", tc.log, out)
			}
		})
	}
}

// TestConcurrencyMinFlag: with --concurrency-min the built weft-proxy
// drops to fewer worker threads while idle and takes them back under
// load (here: its admin endpoint scraped from eight goroutines), as
// go_sched_gomaxprocs_threads reports, logging each change at debug.
func TestConcurrencyMinFlag(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("one CPU: nothing to scale between")
	}
	bin := filepath.Join(binaries(t), "weft-proxy")
	t.Setenv("GOMAXPROCS", "")
	c := &http.Client{Timeout: 5 * time.Second}
	admin := newPrefix() + "1:15000"
	p := start(t, bin, "--xds-plaintext", "--xds-address", "127.0.0.1:1", "--workload", "w", "--outbound", "",
		"--admin-address", admin, "--log-level", "debug", "--concurrency", "2", "--concurrency-min", "1")
	defer p.stop(15 * time.Second)
	threads := func() (int, error) {
		f, err := scrapeErr(c, admin)
		if err != nil {
			return 0, err
		}
		g := f["go_sched_gomaxprocs_threads"]
		if g == nil || len(g.GetMetric()) != 1 {
			return 0, fmt.Errorf("no go_sched_gomaxprocs_threads")
		}
		return int(g.GetMetric()[0].GetGauge().GetValue()), nil
	}
	// Idle: five light seconds, then one thread.
	eventually(t, 30*time.Second, "one worker thread while idle", func() error {
		if n, err := threads(); err != nil || n != 1 {
			return fmt.Errorf("%d threads, %v", n, err)
		}
		return nil
	})
	// Busy: back to two within a few seconds.
	stop := make(chan struct{})
	done := make(chan struct{})
	for range 8 {
		go func() {
			defer func() { done <- struct{}{} }()
			deadline := time.Now().Add(30 * time.Second)
			for time.Now().Before(deadline) {
				select {
				case <-stop:
					return
				default:
				}
				if resp, err := c.Get("http://" + admin + "/stats/prometheus"); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		}()
	}
	eventually(t, 30*time.Second, "two worker threads under load", func() error {
		if n, err := threads(); err != nil || n != 2 {
			return fmt.Errorf("%d threads, %v", n, err)
		}
		return nil
	})
	close(stop)
	for range 8 {
		<-done
	}
	if out := p.out.String(); !strings.Contains(out, "worker threads changed with the load") {
		t.Errorf("no debug line for the changes:\n%s", out)
	}
}
