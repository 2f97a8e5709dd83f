package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/controlplane"
	"weft.dev/weft/internal/localmesh"
)

// accessLogMesh starts a mesh whose mesh config points Istio's built-in
// "envoy" provider (Istio's text format) and a JSON provider at files of
// the test, so their lines can be read back.
func accessLogMesh(t *testing.T) (m *Mesh, envoyLog, jsonLog string) {
	dir := t.TempDir()
	envoyLog, jsonLog = filepath.Join(dir, "envoy.log"), filepath.Join(dir, "json.log")
	mc, _, err := config.ParseMeshConfig("mesh-config.yaml", fmt.Appendf(nil, `
extensionProviders:
- name: envoy
  envoyFileAccessLog: {path: %s}
- name: json
  envoyFileAccessLog:
    path: %s
    logFormat:
      labels:
        method: "%%REQ(:METHOD)%%"
        path: "%%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%%"
        code: "%%RESPONSE_CODE%%"
        flags: "%%RESPONSE_FLAGS%%"
        upstream: "%%UPSTREAM_HOST%%"
        cluster: "%%UPSTREAM_CLUSTER%%"
        duration: "%%DURATION%%"
        request_id: "%%REQ(X-REQUEST-ID)%%"
        start: "%%START_TIME%%"
`, envoyLog, jsonLog))
	if err != nil {
		t.Fatal(err)
	}
	m = NewMesh(t, func(o *controlplane.Options) { o.MeshConfig = mc })
	return m, envoyLog, jsonLog
}

// istioText parses Istio's default text format (the built-in envoy
// provider's): the fields by name.
var istioText = regexp.MustCompile(`^\[(?P<start>\S+)\] "(?P<method>\S+) (?P<path>\S+) (?P<protocol>\S+)" (?P<code>\d+) (?P<flags>\S+) (?P<details>\S+) (?P<termination>\S+) "(?P<failure>[^"]*)" (?P<received>\d+) (?P<sent>\d+) (?P<duration>\d+) (?P<svctime>\S+) "(?P<xff>[^"]*)" "(?P<ua>[^"]*)" "(?P<reqid>[^"]*)" "(?P<authority>[^"]*)" "(?P<upstream>[^"]*)" (?P<cluster>\S+) (?P<uplocal>\S+) (?P<local>\S+) (?P<remote>\S+) (?P<sni>\S+) (?P<route>\S+)$`)

func parseIstioText(t *testing.T, line string) map[string]string {
	t.Helper()
	m := istioText.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("line does not parse as Istio's text format: %q", line)
	}
	out := map[string]string{}
	for i, n := range istioText.SubexpNames() {
		if n != "" {
			out[n] = m[i]
		}
	}
	return out
}

// logLines returns the complete lines of path ("" lines dropped).
func logLines(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if l != "" {
			out = append(out, l)
		}
	}
	return out
}

// waitLines waits until path holds at least n lines and returns them.
func waitLines(t *testing.T, path string, n int) []string {
	t.Helper()
	var lines []string
	Eventually(t, 10*time.Second, fmt.Sprintf("%d lines in %s", n, filepath.Base(path)), func() error {
		if lines = logLines(path); len(lines) < n {
			return fmt.Errorf("%d lines: %q", len(lines), lines)
		}
		return nil
	})
	return lines
}

const telemetryMeshWide = `apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging:
  - providers: [{name: envoy}, {name: json}]
`

// TestObservabilityAccessLogFormats: a mesh-wide Telemetry enabling the
// built-in envoy provider and a JSON one: a request through frontend →
// backend gives one line per side in each file, parsed back field by
// field (method, path, code, flags, upstream host and cluster, duration,
// the request id both sides share).
func TestObservabilityAccessLogFormats(t *testing.T) {
	m, envoyLog, jsonLog := accessLogMesh(t)
	backends := m.Service("backend", "HTTP", "v1")
	front := m.Client("frontend")
	m.WriteConfig("telemetry.yaml", telemetryMeshWide)
	waitDump(t, front, "envoy.access_loggers.file")
	waitDump(t, backends[0], "envoy.access_loggers.file")
	c := newClient()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if code, _, err := Get(ctx, c, front, "backend", "/hello?x=1", map[string]string{"User-Agent": "alog-e2e"}); err != nil || code != 200 {
		t.Fatalf("GET: %d %v", code, err)
	}

	backendAddr := fmt.Sprintf("%s:%d", backends[0].Opts.IPs[0], backends[0].Opts.WorkloadPort)
	lines := waitLines(t, envoyLog, 2)
	var client, server map[string]string
	for _, l := range lines {
		f := parseIstioText(t, l)
		switch {
		case strings.HasPrefix(f["cluster"], "outbound|"):
			client = f
		case strings.HasPrefix(f["cluster"], "inbound|"):
			server = f
		}
	}
	if client == nil || server == nil {
		t.Fatalf("want a client and a server line:\n%s", strings.Join(lines, "\n"))
	}
	for side, f := range map[string]map[string]string{"client": client, "server": server} {
		if _, err := time.Parse("2006-01-02T15:04:05.000Z", f["start"]); err != nil {
			t.Errorf("%s start %q: %v", side, f["start"], err)
		}
		for k, want := range map[string]string{"method": "GET", "path": "/hello?x=1", "protocol": "HTTP/1.1", "code": "200",
			"flags": "-", "details": "via_upstream", "ua": "alog-e2e", "authority": "backend"} {
			if f[k] != want {
				t.Errorf("%s %s = %q, want %q", side, k, f[k], want)
			}
		}
		if d, err := strconv.Atoi(f["duration"]); err != nil || d < 0 || d > 30000 {
			t.Errorf("%s duration %q", side, f["duration"])
		}
		if n, _ := strconv.Atoi(f["sent"]); n == 0 {
			t.Errorf("%s bytes sent = %s", side, f["sent"])
		}
	}
	if client["upstream"] != backendAddr || client["cluster"] != "outbound|8080||backend.default.svc.cluster.local" {
		t.Errorf("client upstream %q cluster %q, want %s", client["upstream"], client["cluster"], backendAddr)
	}
	if server["cluster"] != fmt.Sprintf("inbound|%d||", backends[0].Opts.WorkloadPort) || server["upstream"] == "-" || server["local"] != backendAddr {
		t.Errorf("server upstream %q cluster %q local %q", server["upstream"], server["cluster"], server["local"])
	}
	if client["reqid"] == "-" || client["reqid"] != server["reqid"] {
		t.Errorf("request ids: client %q, server %q: want one id generated and carried", client["reqid"], server["reqid"])
	}

	jl := waitLines(t, jsonLog, 2)
	for _, l := range jl {
		var f map[string]any
		if err := json.Unmarshal([]byte(l), &f); err != nil {
			t.Fatalf("JSON line %q: %v", l, err)
		}
		if f["method"] != "GET" || f["path"] != "/hello?x=1" || f["code"] != float64(200) || f["flags"] != "-" || f["request_id"] != client["reqid"] {
			t.Errorf("JSON line %s", l)
		}
		if _, ok := f["duration"].(float64); !ok {
			t.Errorf("JSON duration not a number: %s", l)
		}
		if cl, _ := f["cluster"].(string); strings.HasPrefix(cl, "outbound|") && f["upstream"] != backendAddr {
			t.Errorf("JSON client upstream %v, want %s", f["upstream"], backendAddr)
		}
	}
}

// TestObservabilityAccessLogLive: Telemetry changes apply to running
// proxies without a restart: no Telemetry, no lines; the mesh-wide one
// turns logging on; a filter `response.code >= 400` logs only errors (a
// 500 from the backend, on both sides); disabled: true turns it off
// again. (A 503 would be retried by Istio's default retry policy: one
// client line, marked URX, and a server line per attempt.)
func TestObservabilityAccessLogLive(t *testing.T) {
	m, envoyLog, _ := accessLogMesh(t)
	back := m.Service("backend", "HTTP", "v1")[0]
	front := m.Client("frontend")
	waitDump(t, front, "backend.default.svc.cluster.local")
	c := newClient()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	get := func(path string, want int) {
		t.Helper()
		if code, _, err := Get(ctx, c, front, "backend", path, nil); err != nil || code != want {
			t.Fatalf("GET %s: %d %v, want %d", path, code, err, want)
		}
	}
	// Both sidecars log a request, and each gets the Telemetry change in
	// its own push: wait for both before sending.
	inConfig := func(what string, has bool, substrs ...string) {
		t.Helper()
		Eventually(t, 10*time.Second, fmt.Sprintf("%s in config: %v", what, has), func() error {
			for _, w := range []*localmesh.Workload{front, back} {
				dump := adminGet(t, w, "/config_dump")
				found := false
				for _, s := range substrs {
					found = found || strings.Contains(dump, s)
				}
				if found != has {
					return fmt.Errorf("%s not yet", w.Opts.Name)
				}
			}
			return nil
		})
	}
	waitForConfig := func(has bool) {
		t.Helper()
		inConfig("access log", has, "envoy.access_loggers.file")
	}

	get("/off", 200)
	if l := logLines(envoyLog); len(l) != 0 {
		t.Fatalf("lines without Telemetry: %q", l)
	}

	m.WriteConfig("telemetry.yaml", telemetryMeshWide)
	waitForConfig(true)
	get("/on", 200)
	waitLines(t, envoyLog, 2) // client and server side

	// onlyLogged puts a mesh-wide filter in force (its config dump
	// shows one of markers), sends what send sends, and checks that only
	// the request to path is logged, on both sides, with that status.
	onlyLogged := func(expr string, markers []string, send func(), path, code string) {
		t.Helper()
		m.WriteConfig("telemetry.yaml", fmt.Sprintf(`apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging:
  - providers: [{name: envoy}]
    filter: {expression: %q}
`, expr))
		inConfig(expr, true, markers...)
		before := len(logLines(envoyLog))
		send()
		after := waitLines(t, envoyLog, before+2)
		for _, l := range after[before:] {
			if f := parseIstioText(t, l); f["path"] != path || f["code"] != code {
				t.Errorf("%s: logged %s %s: %q", expr, f["code"], f["path"], l)
			}
		}
		if len(after) != before+2 {
			t.Errorf("%s: want exactly two lines of %s, got:\n%s", expr, path, strings.Join(after[before:], "\n"))
		}
	}
	onlyLogged("response.code >= 400", []string{"statusCodeFilter", "status_code_filter"}, func() {
		get("/fine", 200)
		get("/broken?status=500", 500)
	}, "/broken?status=500", "500")

	// Istio's own filter test (tests/integration/telemetry/api/testdata/
	// accesslog/filter.yaml): request.path is Envoy's :path, query included.
	onlyLogged("request.path == '/filter-test'", []string{"headerFilter", "header_filter"}, func() {
		get("/broken?status=500", 500)
		get("/filter-test?x=1", 200)
		get("/filter-test", 200)
	}, "/filter-test", "200")

	// What users write to keep probes and health checks out of the log:
	// a negated function call and request.url_path (the path without
	// its query), as Envoy's inverted header matchers.
	onlyLogged("!request.headers['user-agent'].startsWith('kube-probe/') && request.url_path != '/healthz'", []string{"kube-probe/"}, func() {
		if code, _, err := Get(ctx, c, front, "backend", "/probed", map[string]string{"User-Agent": "kube-probe/1.34"}); err != nil || code != 200 {
			t.Fatalf("probe: %d %v", code, err)
		}
		get("/healthz?full=1", 200)
		get("/healthz", 200)
		get("/healthz/deep", 200)
	}, "/healthz/deep", "200")

	m.WriteConfig("telemetry.yaml", `apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging:
  - disabled: true
`)
	waitForConfig(false)
	n := len(logLines(envoyLog))
	get("/broken?status=500", 500)
	get("/off-again", 200)
	// Nothing queues a line for the file any more; give a stray writer a
	// moment and check nothing came.
	time.Sleep(200 * time.Millisecond)
	if got := logLines(envoyLog); len(got) != n {
		t.Errorf("lines after disabling: %q", got[n:])
	}
}
