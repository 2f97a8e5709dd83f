package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"weft.dev/weft/internal/localmesh"
)

// The alert rules and dashboards shipped in observability/.
var (
	alertRulesFile = filepath.Join("..", "observability", "prometheus", "weft-alerts.yaml")
	dashboardsGlob = filepath.Join("..", "observability", "grafana", "*.json")
)

// Shortened for a test, so alerts fire and resolve in seconds: every range
// window of the shipped rules becomes testRuleWindow and every for:
// testRuleFor; thresholds and expressions are unchanged.
const (
	testRuleWindow = "20s"
	testRuleFor    = "2s"
)

var (
	ruleRange = regexp.MustCompile(`\[\d+[smhd]\]`)
	ruleFor   = regexp.MustCompile(`(?m)^(\s+for:) \S+$`)
)

// testRules is the shipped rule file with the test's windows and for:.
func testRules(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(alertRulesFile)
	if err != nil {
		t.Fatal(err)
	}
	s := ruleRange.ReplaceAllString(string(b), "["+testRuleWindow+"]")
	return ruleFor.ReplaceAllString(s, "${1} "+testRuleFor)
}

// TestObservabilityAlertsAndDashboards runs the shipped alert rules in a
// real Prometheus that scrapes a running mesh (the sidecars and the
// control plane) while a client calls a two-version backend: when every
// endpoint of the backend goes away (its WorkloadEntries removed) the
// "no healthy upstream" and 503 alerts fire, and when the endpoints come
// back both resolve. Then every query of every shipped dashboard returns
// data. The rules run with shortened windows and for: (testRules).
func TestObservabilityAlertsAndDashboards(t *testing.T) {
	requirePrometheus(t)

	m := NewMesh(t)
	backends := m.Service("backend", "HTTP", "v1", "v2")
	front := m.Client("frontend")
	servicesFile := filepath.Join(m.Dir, "backend-services.yaml")
	withEndpoints, err := os.ReadFile(servicesFile)
	if err != nil {
		t.Fatal(err)
	}
	c := newClient()
	Eventually(t, 15*time.Second, "both versions answer", func() error {
		seen := map[string]bool{}
		for range 20 {
			code, r, err := Get(t.Context(), c, front, "backend", "/", nil)
			if err != nil || code != 200 {
				return fmt.Errorf("code %d, %v", code, err)
			}
			seen[r.Version] = true
		}
		if !seen["v1"] || !seen["v2"] {
			return fmt.Errorf("versions seen: %v", seen)
		}
		return nil
	})

	// Steady traffic, about 50 requests a second, until the test ends.
	ctx, stop := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	wg.Go(func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			code, _, err := Get(ctx, c, front, "backend", "/", nil)
			if err != nil {
				continue // the test's end, or a closed keep-alive connection
			}
			mu.Lock()
			codes[code]++
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		stop()
		wg.Wait()
		t.Logf("client saw %v", codes)
	})

	var targets []string
	for _, w := range append([]*localmesh.Workload{front}, backends...) {
		targets = append(targets, strconv.Quote(w.Proxy.AdminAddr().String()))
	}
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: [weft-alerts.yaml]
scrape_configs:
- job_name: weft-sidecars
  metrics_path: /stats/prometheus
  static_configs:
  - targets: [%s]
- job_name: weft-control-plane
  metrics_path: /metrics
  static_configs:
  - targets: [%q]
`, strings.Join(targets, ", "), m.CP.StatusAddr().String())
	for _, a := range append(targets, strconv.Quote(m.CP.StatusAddr().String())) {
		if host, _, _ := net.SplitHostPort(strings.Trim(a, `"`)); !net.ParseIP(host).IsLoopback() {
			t.Fatalf("scrape target %s is not on loopback", a)
		}
	}
	prom := runPrometheus(t, cfg, map[string]string{"weft-alerts.yaml": testRules(t)})
	Eventually(t, 30*time.Second, "Prometheus scrapes every target", func() error {
		up, err := prom.query(`up == 1`)
		if err != nil {
			return err
		}
		if want := len(targets) + 1; len(up) != want {
			return fmt.Errorf("%d targets up, want %d", len(up), want)
		}
		return nil
	})
	// Quiet before the outage: rate() has samples, nothing fires.
	time.Sleep(3 * time.Second)
	if firing := prom.firing(t); len(firing) > 0 {
		t.Fatalf("alerts firing before the outage: %v", firing)
	}

	const cluster = "outbound|8080||" + promBackendFQDN
	wantFiring := map[string]map[string]string{
		"WeftNoHealthyUpstream": {"envoy_cluster_name": cluster},
		"WeftHigh503Rate":       {"destination_service": promBackendFQDN, "destination_service_namespace": "default"},
	}
	// The outage: the backend's endpoints are deregistered (as pods that
	// went away); the client's sidecar answers 503 UH.
	m.WriteConfig("backend-services.yaml", ServiceEntryYAML("backend", 8080, "HTTP"))
	Eventually(t, 60*time.Second, "no-healthy-upstream and 503 alerts firing", func() error {
		firing := prom.firing(t)
		for name, labels := range wantFiring {
			if !hasAlert(firing, name, labels) {
				return fmt.Errorf("%s%v not firing; firing: %v", name, labels, firing)
			}
		}
		return nil
	})
	t.Logf("firing during the outage: %v", prom.firing(t))

	// The endpoints come back: both alerts resolve.
	m.WriteConfig("backend-services.yaml", string(withEndpoints))
	Eventually(t, 30*time.Second, "the backend answers again", func() error {
		code, _, err := Get(t.Context(), c, front, "backend", "/", nil)
		if err != nil || code != 200 {
			return fmt.Errorf("code %d, %v", code, err)
		}
		return nil
	})
	Eventually(t, 90*time.Second, "the alerts resolve", func() error {
		firing := prom.firing(t)
		for name, labels := range wantFiring {
			if hasAlert(firing, name, labels) {
				return fmt.Errorf("%s still firing", name)
			}
		}
		return nil
	})

	// Every panel of every dashboard has data, with the variables a user
	// would pick: the default namespace, the backend service, the
	// frontend (outbound panels) and a backend workload (inbound ones).
	vars := strings.NewReplacer("$__rate_interval", "5m", "$__interval", "15s", "$__range", "5m",
		"$namespace", "default", "$service", promBackendFQDN, "$workload", "(frontend|backend-v1-0)")
	files, err := filepath.Glob(dashboardsGlob)
	if err != nil || len(files) == 0 {
		t.Fatalf("dashboards %s: %v", dashboardsGlob, err)
	}
	n := 0
	for _, f := range files {
		for _, q := range dashboardQueries(t, f) {
			n++
			expr := vars.Replace(q.expr)
			res, err := prom.query(expr)
			if err != nil {
				t.Errorf("%s: panel %q: %s: %v", filepath.Base(f), q.panel, expr, err)
				continue
			}
			if !anyNumber(res) {
				t.Errorf("%s: panel %q returns no data: %s (result %v)", filepath.Base(f), q.panel, expr, res)
			}
		}
	}
	t.Logf("%d dashboard queries over %d dashboards returned data", n, len(files))
}

// dashboardQuery is one target of one panel of a Grafana dashboard.
type dashboardQuery struct{ panel, expr string }

func dashboardQueries(t *testing.T, file string) []dashboardQuery {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	var out []dashboardQuery
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			out = append(out, dashboardQuery{p.Title, tg.Expr})
		}
	}
	return out
}

// promSample is one sample of an instant query's result.
type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

// query runs an instant query that returns a vector; a malformed query or
// another result type is an error.
func (p *promServer) query(q string) ([]promSample, error) {
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string       `json:"resultType"`
			Result     []promSample `json:"result"`
		} `json:"data"`
	}
	if err := p.getJSON("/api/v1/query?"+url.Values{"query": {q}}.Encode(), &r); err != nil {
		return nil, err
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("%s: %s", r.Status, r.Error)
	}
	if r.Data.ResultType != "vector" {
		return nil, fmt.Errorf("result type %q, want vector", r.Data.ResultType)
	}
	return r.Data.Result, nil
}

// promAlert is an alert as Prometheus's /api/v1/alerts lists it.
type promAlert struct {
	Labels map[string]string `json:"labels"`
	State  string            `json:"state"`
}

func (a promAlert) String() string { return a.Labels["alertname"] + fmt.Sprint(a.Labels) }

// firing lists the alerts firing now.
func (p *promServer) firing(t *testing.T) []promAlert {
	t.Helper()
	var r struct {
		Data struct {
			Alerts []promAlert `json:"alerts"`
		} `json:"data"`
	}
	if err := p.getJSON("/api/v1/alerts", &r); err != nil {
		t.Fatalf("listing alerts: %v", err)
	}
	var out []promAlert
	for _, a := range r.Data.Alerts {
		if a.State == "firing" {
			out = append(out, a)
		}
	}
	return out
}

func (p *promServer) getJSON(path string, v any) error {
	resp, err := p.c.Get("http://" + p.addr + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("status %d: decoding %q: %w", resp.StatusCode, body, err)
	}
	return nil
}

// hasAlert reports whether alerts has one named name with these labels.
func hasAlert(alerts []promAlert, name string, labels map[string]string) bool {
next:
	for _, a := range alerts {
		if a.Labels["alertname"] != name {
			continue
		}
		for k, v := range labels {
			if a.Labels[k] != v {
				continue next
			}
		}
		return true
	}
	return false
}

// anyNumber reports whether a result has a sample that is a number (a
// histogram quantile over no observations is NaN: no data).
func anyNumber(res []promSample) bool {
	for _, s := range res {
		str, _ := s.Value[1].(string)
		if v, err := strconv.ParseFloat(str, 64); err == nil && !math.IsNaN(v) {
			return true
		}
	}
	return false
}
