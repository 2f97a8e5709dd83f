package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"weft.dev/weft/internal/localmesh"
	"weft.dev/weft/internal/testenv"
)

const promBackendFQDN = "backend.default.svc.cluster.local"

// TestPrometheusPerVersionQuery proves with a real Prometheus server that
// scrapes the sidecars that stable and canary are one PromQL query apart:
// the per-version request counts Prometheus reports are exactly what the
// client saw, both sides of each request carry the workload identities,
// and the latency histogram yields a p99 per version.
func TestPrometheusPerVersionQuery(t *testing.T) {
	requirePrometheus(t)

	m := NewMesh(t)
	backends := m.Service("backend", "HTTP", "v1", "v2")
	m.WriteConfig("backend-routes.yaml", fmt.Sprintf(backendRoutes, 50, 50))
	c := newClient()
	front := m.Client("frontend")

	// Every answer the client gets is counted, warm-up included, because
	// Prometheus sees every request the sidecar served.
	seen := map[string]int{} // 200 answers by version
	non200 := 0              // answers from the sidecar that were not 200
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	send := func(hdr map[string]string) (string, error) {
		code, r, err := Get(ctx, c, front, "backend", "/", hdr)
		if err != nil {
			// In practice a dial error before the listener is up, which
			// the sidecar never counts; anything else would break the
			// exact comparison below loudly, not silently.
			return "", err
		}
		if code != http.StatusOK {
			non200++
			return "", fmt.Errorf("status %d", code)
		}
		seen[r.Version]++
		return r.Version, nil
	}

	// Warm-up: wait until the VirtualService is in force (x-canary goes to v2).
	Eventually(t, 10*time.Second, "VirtualService in force", func() error {
		for range 20 {
			v, err := send(map[string]string{"x-canary": "true"})
			if err != nil {
				return err
			}
			if v != "v2" {
				return fmt.Errorf("x-canary: true answered by %s", v)
			}
		}
		return nil
	})
	// Make sure both versions' series exist before Prometheus first scrapes
	// them; rate() needs an earlier sample to measure the main traffic from.
	for i := 0; seen["v1"] == 0; i++ {
		if i == 200 {
			t.Fatalf("no answer from v1 in 200 requests on a 50/50 split: %v", seen)
		}
		if _, err := send(nil); err != nil {
			t.Fatalf("weighted request: %v", err)
		}
	}

	targets := []*localmesh.Workload{front, backends[0], backends[1]}
	prom := startPrometheus(t, targets)

	srcQuery := `sum by (destination_version) (istio_requests_total{reporter="source",destination_service="` + promBackendFQDN + `"})`
	wantSource := func() error {
		got, err := prom.vector(srcQuery, "destination_version")
		if err != nil {
			return err
		}
		return promSamePerVersion(got, seen, non200)
	}
	// The first scrape that has all traffic so far is also the proof that
	// Prometheus is up and scraping all sidecars.
	Eventually(t, 30*time.Second, "Prometheus sees the warm-up traffic", wantSource)
	warmup := fmt.Sprint(seen)

	const n = 400
	for i := range n {
		if _, err := send(nil); err != nil {
			t.Fatalf("request %d through the frontend sidecar: %v", i, err)
		}
	}
	t.Logf("client saw %v (warm-up %s), %d non-200 answers", seen, warmup, non200)

	// Lint what Prometheus scraped: the source side (frontend) and the
	// destination side (a backend).
	for _, w := range []*localmesh.Workload{front, backends[0]} {
		promtoolLint(t, w.Opts.Name, adminGet(t, w, "/stats/prometheus"))
	}

	// Stable vs canary, as the client counted it, in one query.
	Eventually(t, 30*time.Second, srcQuery, wantSource)

	// The destination side: each backend counts exactly its version's
	// requests, all of them attributed to the frontend workload.
	dstQuery := `sum by (destination_workload, source_workload) (istio_requests_total{reporter="destination"})`
	Eventually(t, 30*time.Second, dstQuery, func() error {
		got, err := prom.vector(dstQuery, "destination_workload", "source_workload")
		if err != nil {
			return err
		}
		want := map[string]float64{}
		for _, b := range backends {
			want[b.Opts.Name+" "+"frontend"] = float64(seen[b.Opts.Labels["version"]])
		}
		return promSameVector(got, want)
	})

	// A p99 per version over the last minute: the histogram buckets are
	// exposed and the pre-traffic samples make the rate non-zero. A
	// destination_version="unknown" series left by warm-up 503s (UH) has no
	// recent traffic, so its p99 is NaN; only v1 and v2 must be finite.
	p99Query := `histogram_quantile(0.99, sum by (le, destination_version) (rate(istio_request_duration_milliseconds_bucket{reporter="source"}[1m])))`
	var p99 map[string]float64
	Eventually(t, 10*time.Second, p99Query, func() error {
		var err error
		if p99, err = prom.vector(p99Query, "destination_version"); err != nil {
			return err
		}
		for _, v := range []string{"v1", "v2"} {
			q, ok := p99[v]
			if !ok {
				return fmt.Errorf("no p99 for %s: %v", v, p99)
			}
			if math.IsNaN(q) || math.IsInf(q, 0) || q < 0 {
				return fmt.Errorf("p99 for %s is %v", v, q)
			}
		}
		return nil
	})
	t.Logf("p99 latency by version (ms): %v", p99)
}

// requirePrometheus skips the test when Prometheus or promtool is not
// installed, unless WEFT_REQUIRE_PROMETHEUS=1 or WEFT_REQUIRE_TOOLS=1
// (set in CI), where its absence is a failure.
func requirePrometheus(t *testing.T) {
	t.Helper()
	testenv.Prometheus(t)
	testenv.Promtool(t)
}

// promSamePerVersion compares a sum by destination_version with the client's
// count of 200 answers per version. A destination_version="unknown" series
// (no endpoint yet, 503 UH) may only hold answers the client saw fail.
func promSamePerVersion(got map[string]float64, seen map[string]int, non200 int) error {
	want := map[string]float64{}
	for v, n := range seen {
		want[v] = float64(n)
	}
	if u, ok := got["unknown"]; ok && u <= float64(non200) {
		want["unknown"] = u
	}
	return promSameVector(got, want)
}

// promSameVector requires got and want to have the same keys and values.
func promSameVector(got, want map[string]float64) error {
	for k, w := range want {
		if g, ok := got[k]; !ok || g != w {
			return fmt.Errorf("got %v, want %v", got, want)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			return fmt.Errorf("got %v, want %v (unexpected series %q)", got, want, k)
		}
	}
	return nil
}

// promtoolLint runs `promtool check metrics` on one sidecar's exposition
// (testenv.LintMetrics says which findings are tolerated and why).
func promtoolLint(t *testing.T, name string, exposition string) {
	t.Helper()
	testenv.LintMetrics(t, name+"'s /stats/prometheus", exposition)
}

// promServer is a Prometheus server run by a test.
type promServer struct {
	t    *testing.T
	addr string
	c    *http.Client
}

// startPrometheus runs Prometheus scraping the sidecars' admin endpoints
// every second. It is killed at cleanup; its log goes to the test log if
// the test failed.
func startPrometheus(t *testing.T, targets []*localmesh.Workload) *promServer {
	t.Helper()
	var addrs []string
	for _, w := range targets {
		a := w.Proxy.AdminAddr().(*net.TCPAddr)
		if !a.IP.IsLoopback() {
			t.Fatalf("admin address of %s is %v, not loopback", w.Opts.Name, a)
		}
		addrs = append(addrs, strconv.Quote(a.String()))
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
- job_name: weft-sidecars
  metrics_path: /stats/prometheus
  static_configs:
  - targets: [%s]
`, strings.Join(addrs, ", "))
	return runPrometheus(t, cfg, nil)
}

// runPrometheus runs Prometheus on loopback with configuration cfg, in a
// temporary directory that also holds files (name -> content: rule files
// cfg names). It is killed at cleanup; its log goes to the test log if
// the test failed.
func runPrometheus(t *testing.T, cfg string, files map[string]string) *promServer {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfgFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	port, err := localmesh.FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	p := &promServer{t: t, addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		c: &http.Client{Timeout: 5 * time.Second}}

	// Cancelled before the cleanups run, which kills Prometheus.
	cmd := exec.CommandContext(t.Context(), testenv.Prometheus(t),
		"--config.file="+cfgFile,
		"--storage.tsdb.path="+data,
		"--web.listen-address="+p.addr,
	)
	log := &testenv.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting prometheus: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	// Registered after the TempDirs, so it runs before they are removed.
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			t.Errorf("prometheus did not exit within 10s of SIGKILL")
		}
		if t.Failed() {
			t.Logf("prometheus config:\n%s\nprometheus log:\n%s", cfg, log.String())
		}
	})

	Eventually(t, 15*time.Second, "prometheus ready on "+p.addr, func() error {
		select {
		case err := <-exited:
			exited <- err // for the cleanup
			t.Fatalf("prometheus exited: %v\n%s", err, log.String())
		default:
		}
		resp, err := p.c.Get("http://" + p.addr + "/-/ready")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
	return p
}

// vector runs an instant query and returns its samples keyed by the values
// of the given labels, joined by spaces.
func (p *promServer) vector(query string, by ...string) (map[string]float64, error) {
	resp, err := p.c.Get("http://" + p.addr + "/api/v1/query?" + url.Values{"query": {query}}.Encode())
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Metric map[string]string `json:"metric"`
				Value  [2]any            `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("status %d: decoding %q: %w", resp.StatusCode, body, err)
	}
	if r.Status != "success" {
		// A malformed query will not get better: fail now.
		p.t.Fatalf("query %s: %s: %s", query, r.Status, r.Error)
	}
	if r.Data.ResultType != "vector" {
		p.t.Fatalf("query %s: result type %q, want vector", query, r.Data.ResultType)
	}
	out := map[string]float64{}
	for _, s := range r.Data.Result {
		var key []string
		for _, l := range by {
			key = append(key, s.Metric[l])
		}
		str, _ := s.Value[1].(string)
		v, err := strconv.ParseFloat(str, 64)
		if err != nil {
			return nil, fmt.Errorf("sample %v: %w", s, err)
		}
		out[strings.Join(key, " ")] = v
	}
	return out, nil
}
