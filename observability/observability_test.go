package observability

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"weft.dev/weft/internal/testenv"
)

// TestAlertRules: the rule file passes promtool check rules, and its unit
// tests (each alert firing on recorded series and staying quiet) pass
// promtool test rules.
func TestAlertRules(t *testing.T) {
	testenv.Promtool(t)
	out, code := testenv.RunPromtool(t, "", "check", "rules", filepath.Join("prometheus", "weft-alerts.yaml"))
	if code != 0 {
		t.Fatalf("promtool check rules: exit %d:\n%s", code, out)
	}
	t.Logf("%s", out)
	// rule_files in the test file are relative to it.
	out, code = testenv.RunPromtool(t, "", "test", "rules", filepath.Join("prometheus", "tests", "weft-alerts_test.yaml"))
	if code != 0 {
		t.Fatalf("promtool test rules: exit %d:\n%s", code, out)
	}
	// Every alert has a test.
	rules, err := os.ReadFile(filepath.Join("prometheus", "weft-alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	tests, err := os.ReadFile(filepath.Join("prometheus", "tests", "weft-alerts_test.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`(?m)^\s*- alert: (\S+)`).FindAllStringSubmatch(string(rules), -1) {
		if !strings.Contains(string(tests), "alertname: "+m[1]+"\n") {
			t.Errorf("alert %s has no promtool test", m[1])
		}
	}
}

// dashboard is the part of Grafana's dashboard JSON model the checks read.
type dashboard struct {
	Title         string `json:"title"`
	UID           string `json:"uid"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

// panel is one panel of a dashboard.
type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	} `json:"datasource"`
	GridPos *struct{ H, W, X, Y int } `json:"gridPos"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

// panelTypes are the Grafana panel types the dashboards use.
var panelTypes = []string{"row", "stat", "timeseries"}

// grafanaVars are Grafana's own variables a query may use.
var grafanaVars = []string{"__rate_interval", "__interval", "__range"}

var varRef = regexp.MustCompile(`\$(\w+)`)

// TestDashboards: every dashboard is in the format Grafana imports (title,
// uid, schema version, a Prometheus data source variable every panel
// uses, unique panel ids, grid positions inside 24 columns, targets with
// refIds and queries), every variable a query uses is defined, and every
// query is valid PromQL (promtool parses it as a rule).
func TestDashboards(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("grafana", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 4 {
		t.Fatalf("%d dashboards, want mesh, service, workload and control plane", len(files))
	}
	uids := map[string]string{}
	var rules strings.Builder
	rules.WriteString("groups:\n- name: dashboard-queries\n  rules:\n")
	n := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard
		if err := json.Unmarshal(b, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if d.Title == "" || d.UID == "" || d.SchemaVersion < 30 {
			t.Errorf("%s: title %q, uid %q, schemaVersion %d: want all set (schemaVersion >= 30)", f, d.Title, d.UID, d.SchemaVersion)
		}
		if prev, ok := uids[d.UID]; ok {
			t.Errorf("%s: uid %q already used by %s", f, d.UID, prev)
		}
		uids[d.UID] = f
		vars := map[string]bool{}
		hasDS := false
		for _, v := range d.Templating.List {
			vars[v.Name] = true
			if v.Type == "datasource" && v.Name == "datasource" && v.Query == "prometheus" {
				hasDS = true
			}
		}
		if !hasDS {
			t.Errorf("%s: no Prometheus data source variable (type datasource, name datasource, query prometheus)", f)
		}
		ids := map[int]bool{}
		for _, p := range d.Panels {
			where := fmt.Sprintf("%s: panel %d %q", f, p.ID, p.Title)
			if ids[p.ID] || p.ID <= 0 {
				t.Errorf("%s: id not positive and unique", where)
			}
			ids[p.ID] = true
			if !slices.Contains(panelTypes, p.Type) {
				t.Errorf("%s: type %q", where, p.Type)
			}
			if g := p.GridPos; g == nil || g.W <= 0 || g.H <= 0 || g.X < 0 || g.Y < 0 || g.X+g.W > 24 {
				t.Errorf("%s: gridPos %+v outside Grafana's 24 columns", where, p.GridPos)
			}
			if p.Type == "row" {
				continue
			}
			if p.Datasource == nil || p.Datasource.Type != "prometheus" || p.Datasource.UID != "${datasource}" {
				t.Errorf("%s: datasource %+v, want the ${datasource} variable", where, p.Datasource)
			}
			if len(p.Targets) == 0 {
				t.Errorf("%s: no targets", where)
			}
			refs := map[string]bool{}
			for _, tg := range p.Targets {
				if tg.RefID == "" || refs[tg.RefID] || strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("%s: target %q: refId missing or repeated, or no expr", where, tg.RefID)
				}
				refs[tg.RefID] = true
				for _, m := range varRef.FindAllStringSubmatch(tg.Expr, -1) {
					if !vars[m[1]] && !slices.Contains(grafanaVars, m[1]) {
						t.Errorf("%s: query uses $%s, which the dashboard does not define", where, m[1])
					}
				}
				n++
				q, err := json.Marshal(substitute(tg.Expr))
				if err != nil {
					t.Fatal(err)
				}
				fmt.Fprintf(&rules, "  - record: dashboard:query_%d\n    expr: %s\n", n, q)
			}
		}
	}
	testenv.Promtool(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "queries.yaml")
	if err := os.WriteFile(path, []byte(rules.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, code := testenv.RunPromtool(t, "", "check", "rules", path); code != 0 {
		t.Fatalf("the dashboards' queries are not all valid PromQL: exit %d:\n%s", code, out)
	}
	t.Logf("%d dashboards, %d queries parsed by promtool", len(files), n)
}

// substitute replaces the dashboards' variables by what Grafana would
// send for "All" (.*) and a 5-minute rate interval.
func substitute(expr string) string {
	return strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h",
		"$namespace", ".*", "$service", ".*", "$workload", ".*").Replace(expr)
}
