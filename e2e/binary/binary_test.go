// Package binary drives the built binaries, weft and weft-proxy, exactly
// as README.md tells a user to: it builds them with the README's command,
// runs the README's commands (on loopback addresses of its own) and checks
// what a user would see: readiness, the config dump, Prometheus metrics,
// the gray-release split, `weft validate`, the demo and a clean SIGTERM;
// and, with a real Jaeger, access logs and traces configured by
// --mesh-config and a Telemetry resource (observability_test.go).
// The in-process suite in ../ cannot see what a real binary lacks (a
// proto type not linked in, a flag not wired); this one can.
package binary

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"weft.dev/weft/internal/testenv"
)

// TestREADMEPieces runs "Running the pieces yourself": the control plane,
// two backend versions with their sidecars and the frontend's sidecar,
// then the README's requests and the checks a user would make.
func TestREADMEPieces(t *testing.T) {
	bin := binaries(t)
	rc := readme(t)
	pre := newPrefix()
	cfg := canaryConfig(t, pre)
	files := t.TempDir() // where the README's relative files (CA, root, tokens) go
	xdsAddr, statusAddr := pre+"100:15012", pre+"100:15014"
	fileFlags := map[string]bool{"--ca-dir": true, "--root-cert-out": true, "--root-cert": true, "--token-file": true, ">": true}
	rewrite := func(prev, w string) string {
		switch {
		case w == "examples/canary":
			return cfg
		case fileFlags[prev]:
			if filepath.IsAbs(w) || strings.Contains(w, "..") {
				t.Fatalf("README writes %s %s outside the working directory", prev, w)
			}
			return filepath.Join(files, w)
		}
		return strings.ReplaceAll(w, "127.0.10.", pre)
	}

	type sidecar struct{ admin, outbound, serviceAccount string }
	sidecars := map[string]sidecar{} // by --workload
	var procs []*proc
	tokens := 0
	for _, words := range rc.pieces {
		args := make([]string, 0, len(words)+4)
		stdout := ""
		for i, w := range words[1:] {
			prev := words[i]
			switch {
			case w == ">":
			case prev == ">":
				stdout = rewrite(prev, w)
			default:
				args = append(args, rewrite(prev, w))
			}
		}
		switch {
		case words[0] == "./weft" && args[0] == "serve":
			args = append(args, "--xds-address", xdsAddr, "--status-address", statusAddr)
		case words[0] == "./weft" && args[0] == "token":
			// A one-shot command: it runs to completion, once the
			// control plane answers.
			args = append(args, "--control-plane", statusAddr)
			runToFile(t, filepath.Join(bin, "weft"), stdout, 20*time.Second, args...)
			tokens++
			continue
		case words[0] == "./weft-proxy":
			args = append(args, "--xds-address", xdsAddr)
			sidecars[flagValue(t, args, "--workload")] = sidecar{flagValue(t, args, "--admin-address"), flagValue(t, args, "--outbound"),
				flagValue(t, args, "--service-account")}
		}
		if stdout != "" {
			t.Fatalf("README redirects the output of %q, a command that keeps running", words)
		}
		procs = append(procs, start(t, filepath.Join(bin, strings.TrimPrefix(words[0], "./")), args...))
	}
	if tokens != 3 {
		t.Errorf("README issues %d bootstrap tokens, want one per sidecar (3)", tokens)
	}
	for _, w := range []string{"frontend", "backend-v1", "backend-v2"} {
		if _, ok := sidecars[w]; !ok {
			t.Fatalf("README starts no weft-proxy for %s", w)
		}
	}
	c := &http.Client{Timeout: 5 * time.Second}

	for name, s := range sidecars {
		eventually(t, 20*time.Second, name+" ready", func() error {
			code, body, err := get(c, "http://"+s.admin+"/ready", nil)
			if err != nil || code != 200 || body != "LIVE\n" {
				return fmt.Errorf("/ready: %d %q %v", code, body, err)
			}
			return nil
		})
	}
	if code, body, err := get(c, "http://"+statusAddr+"/status", nil); err != nil || code != 200 || !json.Valid([]byte(body)) {
		t.Errorf("control plane /status: %d %v\n%s", code, err, body)
	}

	// The config dump of each sidecar: valid JSON with what it serves.
	backend := func(subset string) string { return "outbound|8080|" + subset + "|backend.default.svc.cluster.local" }
	for name, want := range map[string]struct{ listeners, routes, clusters []string }{
		"frontend":   {[]string{pre + "1_15001"}, []string{"http_proxy"}, []string{backend(""), backend("v1"), backend("v2")}},
		"backend-v1": {[]string{pre + "2_15001", pre + "2_8080"}, []string{"http_proxy"}, []string{"inbound|8080||", backend("v1")}},
		"backend-v2": {[]string{pre + "3_15001", pre + "3_8080"}, []string{"http_proxy"}, []string{"inbound|8080||", backend("v2")}},
	} {
		code, body, err := get(c, "http://"+sidecars[name].admin+"/config_dump", nil)
		if err != nil || code != 200 {
			t.Fatalf("%s /config_dump: %d %v\n%s", name, code, err, body)
		}
		var dump struct{ Listeners, Routes, Clusters, Endpoints []map[string]any }
		if err := json.Unmarshal([]byte(body), &dump); err != nil {
			t.Fatalf("%s /config_dump is not JSON: %v\n%s", name, err, body)
		}
		var raw any
		_ = json.Unmarshal([]byte(body), &raw)
		unresolved := unresolvedTypes(raw)
		slices.Sort(unresolved)
		for _, u := range slices.Compact(unresolved) {
			t.Errorf("%s /config_dump shows %s as bytes: weft-proxy does not link that type", name, u)
		}
		for _, check := range []struct {
			kind     string
			got      []map[string]any
			key      string
			mustHave []string
		}{
			{"listeners", dump.Listeners, "name", want.listeners},
			{"routes", dump.Routes, "name", want.routes},
			{"clusters", dump.Clusters, "name", want.clusters},
			{"endpoints", dump.Endpoints, "clusterName", want.clusters},
		} {
			var names []string
			for _, r := range check.got {
				n, _ := r[check.key].(string)
				names = append(names, n)
				if r["dumpError"] != nil {
					t.Errorf("%s /config_dump: %s %q: %v", name, check.kind, n, r["dumpError"])
				}
			}
			for _, n := range check.mustHave {
				if check.kind == "endpoints" && strings.HasPrefix(n, "inbound|") {
					continue // a static cluster: its endpoint is in the cluster
				}
				if !slices.Contains(names, n) {
					t.Errorf("%s /config_dump: %s %q missing; have %q", name, check.kind, n, names)
				}
			}
		}
	}

	// Each sidecar holds a certificate for its service account, from the
	// root the README handed it; the CA persisted in --ca-dir.
	root, err := os.ReadFile(filepath.Join(files, "root-cert.pem"))
	if err != nil {
		t.Fatalf("README's weft token --root-cert-out: %v", err)
	}
	if caRoot, err := os.ReadFile(filepath.Join(files, "weft-ca", "root-cert.pem")); err != nil || string(caRoot) != string(root) {
		t.Errorf("--ca-dir weft-ca does not hold the root weft token wrote: %v", err)
	}
	for name, s := range sidecars {
		code, body, err := get(c, "http://"+s.admin+"/certs", nil)
		want := "spiffe://cluster.local/ns/default/sa/" + s.serviceAccount
		if err != nil || code != 200 || !strings.Contains(body, `"uri": "`+want+`"`) || !strings.Contains(body, `"path": "ROOTCA"`) {
			t.Errorf("%s /certs: %d %v, want a certificate for %s:\n%s", name, code, err, want, body)
		}
	}

	// The README's requests, as written (on this test's addresses).
	sent := map[string]int{} // version -> 200 answers through the frontend's sidecar
	for _, cu := range rc.curls {
		code, body, err := get(c, rewrite("", cu.url), cu.headers)
		if err != nil || code != 200 {
			t.Fatalf("%s: %d %v\n%s", cu.line, code, err, body)
		}
		if strings.HasSuffix(cu.url, "/ready") && body != "LIVE\n" {
			t.Errorf("%s: %q, want LIVE", cu.line, body)
		}
		if cu.headers["Host"] != "" {
			sent[replyVersion(t, body)]++
		}
	}

	// The gray release: 90/10 without the header, all v2 with it.
	front := "http://" + sidecars["frontend"].outbound + "/"
	split := map[string]int{}
	for range 200 {
		code, body, err := get(c, front, map[string]string{"Host": "backend"})
		if err != nil || code != 200 {
			t.Fatalf("through the frontend's sidecar: %d %v %s", code, err, body)
		}
		split[replyVersion(t, body)]++
	}
	// Binomial(200, 0.1): below 4 or above 60 has a chance under 1e-4.
	if split["v1"]+split["v2"] != 200 || split["v2"] < 4 || split["v2"] > 60 {
		t.Errorf("200 requests split %v, want about 180 v1 and 20 v2", split)
	}
	for range 20 {
		code, body, err := get(c, front, map[string]string{"Host": "backend", "x-canary": "true"})
		if err != nil || code != 200 || replyVersion(t, body) != "v2" {
			t.Fatalf("x-canary: true: %d %v %s, want v2", code, err, body)
		}
		split["v2"]++
	}
	// Request bodies cross both built sidecars whole: a small one (sent
	// with its head, the synchronous upstream path) and one larger than
	// what that path takes in memory (streamed through http.Transport).
	for _, n := range []int{1024, 100 << 10} {
		req, _ := http.NewRequest("POST", front, strings.NewReader(strings.Repeat("b", n)))
		req.Host = "backend"
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("POST of %d bytes: %v", n, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		var r struct {
			BodyBytes int `json:"body_bytes"`
		}
		if err == nil {
			err = json.Unmarshal(b, &r)
		}
		if err != nil || resp.StatusCode != 200 || r.BodyBytes != n {
			t.Fatalf("POST of %d bytes through the frontend's sidecar: %d, the backend read %d bytes (%v)", n, resp.StatusCode, r.BodyBytes, err)
		}
		split[replyVersion(t, string(b))]++ // the metrics below count these too
	}
	// As an HTTP proxy, the other way the README offers.
	pc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: sidecars["frontend"].outbound})}}
	code, body, err := get(pc, "http://backend/", map[string]string{"x-canary": "true"})
	if err != nil || code != 200 || replyVersion(t, body) != "v2" {
		t.Fatalf("http_proxy=%s: %d %v %s", sidecars["frontend"].outbound, code, err, body)
	}
	split["v2"]++
	for v, n := range sent {
		split[v] += n
	}

	// Metrics: valid exposition, and the frontend's client-side request
	// counts per version equal what the client saw.
	eventually(t, 5*time.Second, "frontend metrics match the traffic", func() error {
		fams := scrape(t, c, sidecars["frontend"].admin)
		got := map[string]int{}
		for _, m := range fams["istio_requests_total"].GetMetric() {
			l := labels(m)
			if l["reporter"] == "source" && l["response_code"] == "200" && l["destination_service_name"] == "backend" {
				got[l["destination_version"]] += int(m.GetCounter().GetValue())
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(split) {
			return fmt.Errorf("istio_requests_total by destination_version %v, client saw %v", got, split)
		}
		return nil
	})
	// Mutual TLS between the sidecars (examples/canary runs STRICT): the
	// backends count the frontend's requests as mutual TLS from its
	// identity, and refuse plaintext straight to their sidecar.
	var overMTLS float64
	for _, name := range []string{"backend-v1", "backend-v2"} {
		for _, m := range scrape(t, c, sidecars[name].admin)["istio_requests_total"].GetMetric() {
			l := labels(m)
			if l["reporter"] == "destination" && l["connection_security_policy"] == "mutual_tls" &&
				l["source_principal"] == "spiffe://cluster.local/ns/default/sa/frontend" &&
				l["destination_principal"] == "spiffe://cluster.local/ns/default/sa/backend" {
				overMTLS += m.GetCounter().GetValue()
			}
		}
	}
	if total := split["v1"] + split["v2"]; int(overMTLS) != total {
		t.Errorf("the backends counted %v requests over mutual TLS from the frontend, want all %d", overMTLS, total)
	}
	if code, body, err := get(c, "http://"+pre+"2:8080/", map[string]string{"Host": "backend"}); err == nil {
		t.Errorf("plaintext straight to backend-v1's sidecar was answered (%d %q); examples/canary is STRICT", code, body)
	}
	// Malformed requests through the built frontend sidecar: refused,
	// counted, never forwarded (strict_test.go).
	checkMalformed(t, c, sidecars["frontend"].outbound, sidecars["frontend"].admin)
	for name, s := range sidecars {
		fams := scrape(t, c, s.admin)
		if r := fams["weft_proxy_ready"].GetMetric(); len(r) != 1 || r[0].GetGauge().GetValue() != 1 {
			t.Errorf("%s: weft_proxy_ready %v, want 1", name, r)
		}
		promtoolCheck(t, name, c, s.admin)
	}

	// SIGTERM stops each piece with status 0: sidecars within their drain
	// timeout (the default 5 s) plus slack, the rest within 10 s.
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].stop(10 * time.Second)
	}
	for _, p := range procs {
		if strings.Contains(p.name, "weft-proxy") && !strings.Contains(p.out.String(), `msg="proxy stopped"`) {
			t.Errorf("%s did not log that it stopped:\n%s", p.name, p.out.String())
		}
	}
}

// TestREADMEDefaults: the README's pieces rely on weft serve and
// weft-proxy agreeing on the xDS address, and say where they listen.
func TestREADMEDefaults(t *testing.T) {
	bin := binaries(t)
	text, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	serveHelp := mustRun(t, filepath.Join(bin, "weft"), "serve", "--help")
	proxyHelp := mustRun(t, filepath.Join(bin, "weft-proxy"), "--help")
	tokenHelp := mustRun(t, filepath.Join(bin, "weft"), "token", "--help")
	for _, tc := range []struct{ help, flag, value string }{
		{serveHelp, "--xds-address", "127.0.0.1:15012"},
		{serveHelp, "--status-address", "127.0.0.1:15014"},
		{serveHelp, "--trust-domain", "cluster.local"},
		{proxyHelp, "--xds-address", "127.0.0.1:15012"},
		{proxyHelp, "--trust-domain", "cluster.local"},
		{tokenHelp, "--control-plane", "127.0.0.1:15014"},
	} {
		if !regexp.MustCompile(regexp.QuoteMeta(tc.flag) + `\b.*\(default "` + regexp.QuoteMeta(tc.value) + `"\)`).MatchString(tc.help) {
			t.Errorf("%s does not default to %s:\n%s", tc.flag, tc.value, tc.help)
		}
		if !strings.Contains(string(text), tc.value) {
			t.Errorf("README.md does not say %s", tc.value)
		}
	}
}

// TestValidate: `weft validate` as the README shows it.
func TestValidate(t *testing.T) {
	bin := filepath.Join(binaries(t), "weft")
	if code, out := runCmd(t, bin, "validate", "examples/canary"); code != 0 || !strings.Contains(out, "0 error(s), 0 warning(s)") {
		t.Errorf("weft validate examples/canary: exit %d\n%s", code, out)
	}
	// The error names file, resource and field path; the exact punctuation
	// around them (a line:column, say) may change.
	isBrokenLine := func(l string) bool {
		return strings.HasPrefix(l, "error: examples/broken/routes.yaml") &&
			strings.Contains(l, "VirtualService default/backend") &&
			strings.Contains(l, "spec.http[1].route[0].destination.subset") &&
			strings.Contains(l, `subset "v9" is not defined`)
	}
	if l := readme(t).brokenLine; !isBrokenLine(l) {
		t.Errorf("README.md shows %q for validate examples/broken", l)
	}
	code, out := runCmd(t, bin, "validate", "examples/broken")
	if code == 0 || !slices.ContainsFunc(strings.Split(out, "\n"), isBrokenLine) {
		t.Errorf("weft validate examples/broken: exit %d, want non-zero and the README's error line:\n%s", code, out)
	}
}

// TestDemo runs the README's `weft demo` on this test's addresses: the
// split it reports, the "Try it" commands the README shows, and SIGTERM.
func TestDemo(t *testing.T) {
	bin := binaries(t)
	pre := newPrefix()
	cfg := canaryConfig(t, pre)
	p := start(t, filepath.Join(bin, "weft"), "demo", "--config", cfg, "--requests", "200",
		"--xds-address", pre+"100:15012", "--status-address", pre+"100:15014")
	p.waitOutput(regexp.MustCompile(`Ctrl-C stops the demo`), 60*time.Second)
	out := p.stdout.String()
	m := regexp.MustCompile(`no header\s+200 requests\s+v1\s+(\d+) \(\s*[\d.]+%\)\s+v2\s+(\d+) \(`).FindStringSubmatch(out)
	if m == nil || m[1] == "0" || m[2] == "0" {
		t.Errorf("demo did not report a v1/v2 split of 200 requests:\n%s", out)
	}
	if !regexp.MustCompile(`x-canary: true\s+20 requests\s+v2\s+20 \(100\.0%\)\n`).MatchString(out) {
		t.Errorf("demo did not report all canary requests on v2:\n%s", out)
	}
	for _, l := range readme(t).demoTryIt {
		if want := strings.ReplaceAll(l, "127.0.10.", pre); !strings.Contains(out, want) {
			t.Errorf("demo output lacks the README's %q (here %q):\n%s", l, want, out)
		}
	}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: pre + "1:15001"})}}
	if code, body, err := get(c, "http://backend/", map[string]string{"x-canary": "true"}); err != nil || code != 200 || replyVersion(t, body) != "v2" {
		t.Errorf("http_proxy=%s1:15001 curl http://backend/: %d %v %s", pre, code, err, body)
	}
	p.stop(15 * time.Second)
}

// unresolvedTypes returns the type URLs of the typed configs a config
// dump shows as bytes, {"@type": url, "value": base64}: the form the proxy
// falls back to for a type it does not link. (Only the wrapper types of
// google.protobuf look like that legitimately.)
func unresolvedTypes(v any) []string {
	var out []string
	switch v := v.(type) {
	case map[string]any:
		url, _ := v["@type"].(string)
		if _, isString := v["value"].(string); isString && len(v) == 2 && !strings.HasPrefix(url, "type.googleapis.com/google.protobuf.") {
			out = append(out, url)
		}
		for _, x := range v {
			out = append(out, unresolvedTypes(x)...)
		}
	case []any:
		for _, x := range v {
			out = append(out, unresolvedTypes(x)...)
		}
	}
	return out
}

// canaryConfig copies examples/canary into a temporary directory with its
// 127.0.10.x addresses moved to prefix.
func canaryConfig(t *testing.T, prefix string) string {
	t.Helper()
	dir := t.TempDir()
	files, err := filepath.Glob(filepath.Join(repoRoot, "examples", "canary", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("examples/canary: %v", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), []byte(strings.ReplaceAll(string(b), "127.0.10.", prefix)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// flagValue returns the value after flag in args.
func flagValue(t *testing.T, args []string, flag string) string {
	t.Helper()
	i := slices.Index(args, flag)
	if i < 0 || i+1 >= len(args) {
		t.Fatalf("%q has no %s", args, flag)
	}
	return args[i+1]
}

func mustRun(t *testing.T, bin string, args ...string) string {
	t.Helper()
	code, out := runCmd(t, bin, args...)
	if code != 0 {
		t.Fatalf("%s %s: exit %d\n%s", filepath.Base(bin), strings.Join(args, " "), code, out)
	}
	return out
}

// get sends one GET with headers ("Host" sets the request's host).
func get(c *http.Client, u string, headers map[string]string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return 0, "", err
	}
	for k, v := range headers {
		if strings.EqualFold(k, "Host") {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// replyVersion is the version an echo workload reports.
func replyVersion(t *testing.T, body string) string {
	t.Helper()
	var r struct{ Name, Version string }
	if err := json.Unmarshal([]byte(body), &r); err != nil || r.Version == "" {
		t.Fatalf("not an echo reply: %v\n%s", err, body)
	}
	return r.Version
}

// scrape parses a sidecar's /stats/prometheus with Prometheus's own parser.
func scrape(t *testing.T, c *http.Client, admin string) map[string]*dto.MetricFamily {
	t.Helper()
	fams, err := scrapeErr(c, admin)
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// scrapeErr is scrape returning its error.
func scrapeErr(c *http.Client, admin string) (map[string]*dto.MetricFamily, error) {
	code, body, err := get(c, "http://"+admin+"/stats/prometheus", nil)
	if err != nil || code != 200 {
		return nil, fmt.Errorf("%s/stats/prometheus: %d %v", admin, code, err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("%s/stats/prometheus is not valid exposition: %v", admin, err)
	}
	return fams, nil
}

func labels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// promtoolCheck lints a sidecar's exposition with `promtool check metrics`
// when promtool is installed; with WEFT_REQUIRE_PROMETHEUS=1 (CI) it must
// be. As in ../prometheus_test.go, the findings on names Weft keeps from
// Istio and Envoy on purpose are tolerated; anything else fails.
func promtoolCheck(t *testing.T, name string, c *http.Client, admin string) {
	t.Helper()
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("WEFT_REQUIRE_PROMETHEUS") == "1" {
			t.Fatalf("WEFT_REQUIRE_PROMETHEUS=1 but no promtool: %v (install the Debian package prometheus)", err)
		}
		t.Logf("no promtool on PATH: %s's exposition is only parsed, not linted", name)
		return
	}
	_, body, err := get(c, "http://"+admin+"/stats/prometheus", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	out, err := cmd.CombinedOutput()
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatalf("promtool: %v", err)
	}
	var bad []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" && !testenv.ToleratedLint(l) { // Istio's and Envoy's names, kept
			bad = append(bad, l)
		}
	}
	// 0: clean; 3: lint findings only (all tolerated here); 1: does not parse.
	if len(bad) > 0 || (code != 0 && code != 3) {
		t.Errorf("promtool check metrics on %s: exit %d:\n%s", name, code, out)
	}
}

// eventually polls cond every 20 ms until it returns nil, failing the
// test with its last error after timeout.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
