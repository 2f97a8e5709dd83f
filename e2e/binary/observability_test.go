package binary

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"weft.dev/weft/internal/testenv"
)

// obsConfig is the mesh of TestObservabilityBinaries: frontend and
// backend, each a WorkloadEntry at its sidecar's address, and a
// mesh-wide Telemetry turning on both providers of the mesh config for
// every request. %[1]s is the test's loopback prefix.
const obsConfig = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: frontend, namespace: default}
spec:
  hosts: [frontend.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: frontend}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend, namespace: default}
spec:
  hosts: [backend.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: backend}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: frontend, namespace: default}
spec:
  address: %[1]s2
  ports: {http: 8080}
  labels: {app: frontend, version: v1}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: backend, namespace: default}
spec:
  address: %[1]s3
  ports: {http: 8080}
  labels: {app: backend, version: v1}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging:
  - providers: [{name: json-file}]
  tracing:
  - providers: [{name: jaeger}]
    randomSamplingPercentage: 100
`

// obsMeshConfig is the --mesh-config file: a JSON access log to a file
// (%[1]s) and an OpenTelemetry collector (Jaeger's OTLP/gRPC receiver at
// %[2]s, port %[3]s).
const obsMeshConfig = `extensionProviders:
- name: json-file
  envoyFileAccessLog:
    path: %[1]s
    logFormat:
      labels:
        start_time: "%%START_TIME%%"
        method: "%%REQ(:METHOD)%%"
        path: "%%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%%"
        authority: "%%REQ(:AUTHORITY)%%"
        protocol: "%%PROTOCOL%%"
        response_code: "%%RESPONSE_CODE%%"
        response_flags: "%%RESPONSE_FLAGS%%"
        upstream_host: "%%UPSTREAM_HOST%%"
        upstream_cluster: "%%UPSTREAM_CLUSTER%%"
        duration: "%%DURATION%%"
        request_id: "%%REQ(X-REQUEST-ID)%%"
- name: jaeger
  opentelemetry: {service: %[2]s, port: %[3]s}
`

// TestObservabilityBinaries: the built weft and weft-proxy, started as
// processes, do what docs/observability.md says — with the mesh config
// given by --mesh-config and a Telemetry resource in the config directory.
// Requests from a client's sidecar to frontend, whose app (weft echo
// --upstream) calls backend forwarding the trace headers, leave one JSON
// access-log line per proxy hop, one trace of four correctly parented
// proxy spans in a real Jaeger, and Istio's and Envoy's request counters.
// The in-process tests cover the behaviour in depth; this one proves the
// binaries link the tracer's and the access logger's types and wire the
// flags.
func TestObservabilityBinaries(t *testing.T) {
	bin := binaries(t)
	j := testenv.Jaeger(t)
	pre := newPrefix()
	dir := t.TempDir()
	cfgDir, accessLog, meshFile := filepath.Join(dir, "config"), filepath.Join(dir, "access.json"), filepath.Join(dir, "mesh.yaml")
	if err := os.Mkdir(cfgDir, 0o755); err != nil {
		t.Fatal(err)
	}
	jHost, jPort, _ := net.SplitHostPort(j.OTLPGRPC)
	for f, body := range map[string]string{
		filepath.Join(cfgDir, "mesh.yaml"): fmt.Sprintf(obsConfig, pre),
		meshFile:                           fmt.Sprintf(obsMeshConfig, accessLog, jHost, jPort),
	} {
		if err := os.WriteFile(f, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// Plaintext xDS (no tokens, no certificates): TestREADMEPieces covers
	// the secure path; this test is about what the proxies observe.
	xds := pre + "100:15010"
	weft, proxy := filepath.Join(bin, "weft"), filepath.Join(bin, "weft-proxy")
	cp := start(t, weft, "serve", "--config", cfgDir, "--mesh-config", meshFile, "--xds-plaintext-address", xds,
		"--xds-address", pre+"100:15012", "--status-address", pre+"100:15014")
	start(t, weft, "echo", "--name", "frontend", "--address", pre+"2:18080", "--upstream", pre+"2:15001")
	start(t, weft, "echo", "--name", "backend", "--address", pre+"3:18080")
	// The backend's own metrics, on the pod's loopback, which its
	// sidecar merges into its probes port's /stats/prometheus as the
	// injector sets it up (WEFT_PROMETHEUS_ANNOTATIONS, from the pod's
	// prometheus.io/* annotations).
	appMetrics, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go http.Serve(appMetrics, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/custom/metrics" {
			fmt.Fprint(w, "# TYPE orders_total counter\norders_total 7\n")
		}
	}))
	t.Cleanup(func() { appMetrics.Close() })
	t.Setenv("WEFT_PROMETHEUS_ANNOTATIONS", fmt.Sprintf(`{"scrape":"true","path":"/custom/metrics","port":"%d"}`, appMetrics.Addr().(*net.TCPAddr).Port))
	sidecar := func(workload, ip string, app bool) *proc {
		args := []string{"--xds-plaintext", "--xds-address", xds, "--workload", workload, "--labels", "app=" + workload + ",version=v1",
			"--ip", ip, "--outbound", ip + ":15001", "--admin-address", ip + ":15000", "--drain-timeout", "1s"}
		if app {
			args = append(args, "--app-port", "8080="+ip+":18080")
		}
		if workload == "backend" {
			args = append(args, "--app-probes-address", ip+":15020")
		}
		return start(t, proxy, args...)
	}
	names := []string{"client", "frontend", "backend"}
	procs := []*proc{sidecar("client", pre+"1", false), sidecar("frontend", pre+"2", true), sidecar("backend", pre+"3", true)}
	admin := func(name string) string { return pre + fmt.Sprint(slices.Index(names, name)+1) + ":15000" }
	c := &http.Client{Timeout: 5 * time.Second}

	// Ready means the first config is applied; the Telemetry was in it.
	// Each sidecar's HTTP connection managers carry the tracer and the
	// access logger, shown decoded: the binary links their types.
	for _, name := range names {
		eventually(t, 20*time.Second, name+" ready", func() error {
			code, body, err := get(c, "http://"+admin(name)+"/ready", nil)
			if err != nil || code != 200 {
				return fmt.Errorf("/ready: %d %q %v", code, body, err)
			}
			return nil
		})
		_, dump, err := get(c, "http://"+admin(name)+"/config_dump", nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{`"envoy.tracers.opentelemetry"`, `"type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig"`,
			`"envoy.access_loggers.file"`, `"type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"`, `"jsonFormat"`} {
			if !strings.Contains(dump, want) {
				t.Errorf("%s /config_dump lacks %s", name, want)
			}
		}
		var raw any
		if err := json.Unmarshal([]byte(dump), &raw); err != nil {
			t.Fatalf("%s /config_dump is not JSON: %v", name, err)
		}
		for _, u := range unresolvedTypes(raw) {
			t.Errorf("%s /config_dump shows %s as bytes: weft-proxy does not link that type", name, u)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// client → frontend (its app calls backend) → backend, three times.
	const requests = 3
	var tid string
	var front, back map[string]string // headers the apps received, first request
	for i := range requests {
		var reply struct {
			Headers  map[string]string
			Upstream *struct{ Headers map[string]string }
		}
		code, body, err := get(c, "http://"+pre+"1:15001/checkout?call=backend",
			map[string]string{"Host": "frontend", "x-request-id": fmt.Sprintf("obs-bin-%d", i)})
		if err != nil || code != 200 || json.Unmarshal([]byte(body), &reply) != nil || reply.Upstream == nil {
			t.Fatalf("request %d through client → frontend → backend: %d %v\n%s", i, code, err, body)
		}
		if i == 0 {
			front, back = reply.Headers, reply.Upstream.Headers
			tid = traceID(t, front["traceparent"])
		}
	}
	if got := traceID(t, back["traceparent"]); got != tid || back["x-request-id"] != "obs-bin-0" {
		t.Fatalf("backend got trace %s, x-request-id %q; frontend got trace %s: not one trace through the hops", got, back["x-request-id"], tid)
	}

	checkAccessLog(t, pre, accessLog, requests)
	checkTrace(t, j, tid, front["traceparent"], back["traceparent"])

	// Istio's and Envoy's request counters, on each side of each hop.
	type counter struct {
		sidecar, metric string
		labels          map[string]string
	}
	for _, want := range []counter{
		{"client", "istio_requests_total", map[string]string{"reporter": "source", "destination_service_name": "frontend", "response_code": "200", "source_workload": "client"}},
		{"client", "envoy_cluster_upstream_rq_total", map[string]string{"envoy_cluster_name": "outbound|8080||frontend.default.svc.cluster.local"}},
		{"frontend", "istio_requests_total", map[string]string{"reporter": "destination", "destination_workload": "frontend", "source_workload": "client", "response_code": "200"}},
		{"frontend", "istio_requests_total", map[string]string{"reporter": "source", "destination_service_name": "backend", "response_code": "200"}},
		{"frontend", "envoy_cluster_upstream_rq_total", map[string]string{"envoy_cluster_name": "outbound|8080||backend.default.svc.cluster.local"}},
		{"backend", "istio_requests_total", map[string]string{"reporter": "destination", "destination_workload": "backend", "source_workload": "frontend", "response_code": "200"}},
	} {
		eventually(t, 5*time.Second, fmt.Sprintf("%s %s%v = %d", want.sidecar, want.metric, want.labels, requests), func() error {
			var sum float64
			for _, m := range scrape(t, c, admin(want.sidecar))[want.metric].GetMetric() {
				l := labels(m)
				match := true
				for k, v := range want.labels {
					match = match && l[k] == v
				}
				if match {
					sum += m.GetCounter().GetValue()
				}
			}
			if sum != requests {
				return fmt.Errorf("%v", sum)
			}
			return nil
		})
	}

	checkMergedMetrics(t, pre+"3:15020", requests)

	// SIGTERM: each sidecar stops with status 0 (its tracer and access
	// log flushed and closed), then the control plane.
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].stop(10 * time.Second)
	}
	cp.stop(10 * time.Second)
}

// checkMergedMetrics runs a real Prometheus that scrapes the backend
// sidecar's probes port as a pod's prometheus.io/* annotations say after
// injection (port 15020, /stats/prometheus) and wants, from that one
// target, the sidecar's request counter and the application's own
// metric.
func checkMergedMetrics(t *testing.T, target string, requests int) {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`global: {scrape_interval: 1s, scrape_timeout: 1s}
scrape_configs:
- job_name: pods
  metrics_path: /stats/prometheus
  static_configs: [{targets: [%q]}]
`, target)), 0o644); err != nil {
		t.Fatal(err)
	}
	host, _, _ := net.SplitHostPort(target)
	addr := net.JoinHostPort(host, "19091")
	start(t, testenv.Prometheus(t), "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr)
	c := &http.Client{Timeout: 5 * time.Second}
	for query, want := range map[string]float64{
		`sum(istio_requests_total{reporter="destination",destination_workload="backend",response_code="200"})`: float64(requests),
		`orders_total`: 7,
	} {
		eventually(t, 30*time.Second, "Prometheus: "+query, func() error {
			code, body, err := get(c, "http://"+addr+"/api/v1/query?query="+url.QueryEscape(query), nil)
			if err != nil || code != 200 {
				return fmt.Errorf("%d %v %s", code, err, body)
			}
			var r struct {
				Data struct {
					Result []struct {
						Value [2]any `json:"value"`
					} `json:"result"`
				} `json:"data"`
			}
			if err := json.Unmarshal([]byte(body), &r); err != nil || len(r.Data.Result) != 1 {
				return fmt.Errorf("%v %s", err, body)
			}
			if v, _ := r.Data.Result[0].Value[1].(string); v != fmt.Sprint(want) {
				return fmt.Errorf("%s, want %v", v, want)
			}
			return nil
		})
	}
}

// traceID reads the trace id of a W3C traceparent.
func traceID(t *testing.T, traceparent string) string {
	t.Helper()
	parts := strings.Split(traceparent, "-")
	if len(parts) != 4 || len(parts[1]) != 32 || parts[3] != "01" {
		t.Fatalf("traceparent %q: not a sampled W3C trace context", traceparent)
	}
	return parts[1]
}

// checkAccessLog reads the JSON access log every sidecar appends to: one
// line per request on each proxy hop — the client's outbound, frontend's
// inbound and outbound, backend's inbound — each a JSON object with the
// fields of the mesh config's format.
func checkAccessLog(t *testing.T, pre, path string, requests int) {
	t.Helper()
	type line struct {
		StartTime       string  `json:"start_time"`
		Method          string  `json:"method"`
		Path            string  `json:"path"`
		Authority       string  `json:"authority"`
		Protocol        string  `json:"protocol"`
		ResponseCode    float64 `json:"response_code"`
		ResponseFlags   *string `json:"response_flags"`
		UpstreamHost    string  `json:"upstream_host"`
		UpstreamCluster string  `json:"upstream_cluster"`
		Duration        float64 `json:"duration"`
		RequestID       string  `json:"request_id"`
	}
	var lines []line
	eventually(t, 10*time.Second, fmt.Sprintf("%d access log lines", 4*requests), func() error {
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		lines = lines[:0]
		for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
			var x line
			dec := json.NewDecoder(strings.NewReader(l))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&x); err != nil {
				return fmt.Errorf("line %q: %v", l, err)
			}
			lines = append(lines, x)
		}
		if len(lines) != 4*requests {
			return fmt.Errorf("%d lines:\n%s", len(lines), b)
		}
		return nil
	})
	startTime := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`)
	type hop struct{ cluster, path, authority, upstream string }
	want := []hop{ // sorted by cluster
		{"inbound|8080||", "/", "backend", pre + "3:18080"},
		{"inbound|8080||", "/checkout?call=backend", "frontend", pre + "2:18080"},
		{"outbound|8080||backend.default.svc.cluster.local", "/", "backend", pre + "3:8080"},
		{"outbound|8080||frontend.default.svc.cluster.local", "/checkout?call=backend", "frontend", pre + "2:8080"},
	}
	for i := range requests {
		id := fmt.Sprintf("obs-bin-%d", i)
		var got []hop
		for _, l := range lines {
			if l.RequestID != id {
				continue
			}
			got = append(got, hop{l.UpstreamCluster, l.Path, l.Authority, l.UpstreamHost})
			// No response flags: "-", as Envoy writes it.
			noFlags := l.ResponseFlags != nil && *l.ResponseFlags == "-"
			if l.Method != "GET" || l.ResponseCode != 200 || !noFlags || l.Protocol != "HTTP/1.1" ||
				l.Duration < 0 || !startTime.MatchString(l.StartTime) {
				t.Errorf("request %s: access log line %+v", id, l)
			}
		}
		slices.SortFunc(got, func(a, b hop) int { return strings.Compare(a.cluster+a.authority, b.cluster+b.authority) })
		if !slices.Equal(got, want) {
			t.Errorf("request %s: access log hops\n got %v\nwant %v", id, got, want)
		}
	}
}

// checkTrace waits for the trace in Jaeger and checks its four proxy
// spans: a chain, client sidecar outbound → frontend inbound → frontend
// outbound → backend inbound, and the apps got the server spans' context.
func checkTrace(t *testing.T, j *testenv.JaegerEnv, tid, frontTP, backTP string) {
	t.Helper()
	var tr testenv.JaegerTrace
	eventually(t, 30*time.Second, "the trace in Jaeger with 4 spans", func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		var err error
		if tr, err = j.Trace(ctx, tid); err != nil {
			return err
		}
		if len(tr.Spans) != 4 {
			return fmt.Errorf("%d spans", len(tr.Spans))
		}
		return nil
	})
	byParent := map[string]testenv.JaegerSpan{}
	var chain []testenv.JaegerSpan
	for _, s := range tr.Spans {
		if s.Parent() == "" {
			chain = append(chain, s)
		} else {
			byParent[s.Parent()] = s
		}
	}
	if len(chain) != 1 {
		t.Fatalf("%d root spans, want 1: %+v", len(chain), tr.Spans)
	}
	for len(chain) < 4 {
		next, ok := byParent[chain[len(chain)-1].SpanID]
		if !ok {
			t.Fatalf("span %s (%s) has no child: the spans are no chain: %+v", chain[len(chain)-1].SpanID, chain[len(chain)-1].OperationName, tr.Spans)
		}
		chain = append(chain, next)
	}
	const frontendOp, backendOp = "frontend.default.svc.cluster.local:8080/*", "backend.default.svc.cluster.local:8080/*"
	want := []struct{ service, op, kind, cluster string }{
		{"client.default", frontendOp, "client", "outbound|8080||frontend.default.svc.cluster.local"},
		{"frontend.default", frontendOp, "server", "inbound|8080||"},
		{"frontend.default", backendOp, "client", "outbound|8080||backend.default.svc.cluster.local"},
		{"backend.default", backendOp, "server", "inbound|8080||"},
	}
	for i, s := range chain {
		w := want[i]
		kind, _ := s.Tag("span.kind")
		cluster, _ := s.Tag("upstream_cluster")
		code, _ := s.Tag("http.status_code")
		reqID, _ := s.Tag("guid:x-request-id")
		if svc := tr.Processes[s.ProcessID].ServiceName; svc != w.service || s.OperationName != w.op || kind != w.kind ||
			cluster != w.cluster || code != "200" || reqID != "obs-bin-0" {
			t.Errorf("span %d: service %q, operation %q, kind %q, upstream_cluster %q, status %q, request id %q; want %q %q %q %q 200 obs-bin-0",
				i, svc, s.OperationName, kind, cluster, code, reqID, w.service, w.op, w.kind, w.cluster)
		}
	}
	if strings.Split(frontTP, "-")[2] != chain[1].SpanID || strings.Split(backTP, "-")[2] != chain[3].SpanID {
		t.Errorf("the apps got parent spans %s and %s; the server spans are %s and %s", frontTP, backTP, chain[1].SpanID, chain[3].SpanID)
	}
}
