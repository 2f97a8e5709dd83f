package config

import (
	"strconv"
	"strings"
	"testing"
)

// TestTelemetry: Istio's documented Telemetry resources load cleanly (v1
// and v1alpha1); bad fields are rejected with file, line and field path;
// filters outside the CEL subset Weft runs are rejected saying what is
// supported.
func TestTelemetry(t *testing.T) {
	good := `
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging:
  - providers: [{name: envoy}]
---
apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata: {name: errors-only, namespace: shop}
spec:
  selector:
    matchLabels: {app: reviews}
  accessLogging:
  - providers: [{name: json}]
    match: {mode: SERVER}
    filter:
      expression: "response.code >= 400"
  - disabled: true
    match: {mode: CLIENT}
  tracing:
  - providers: [{name: otel}]
    randomSamplingPercentage: 10
    customTags:
      team: {literal: {value: payments}}
  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - match: {metric: REQUEST_COUNT, mode: CLIENT}
      tagOverrides:
        request_protocol: {operation: REMOVE}
        user: {value: "has(request.headers['x-user']) ? request.headers['x-user'] : 'anonymous'"}
`
	snap := NewStore(testOptions()).Load(map[string][]byte{"tel.yaml": []byte(good)})
	for _, d := range snap.Diagnostics {
		t.Errorf("unexpected %s", d.Error())
	}
	if len(snap.Telemetries) != 2 {
		t.Fatalf("Telemetries = %v", snap.Telemetries)
	}
	if got := snap.Telemetries[1].Spec.GetAccessLogging()[0].GetFilter().GetExpression(); got != "response.code >= 400" {
		t.Errorf("filter = %q", got)
	}

	for _, c := range []struct {
		name, spec, want string
		warning          bool
	}{
		{"empty provider", `{accessLogging: [{providers: [{name: ""}]}]}`, "spec.accessLogging[0].providers[0].name: providers.name may not be empty", false},
		{"bad mode", `{accessLogging: [{match: {mode: BOTH}}]}`, "spec.accessLogging[0].match.mode", false},
		{"unknown field", `{accessLogging: [{provider: [{name: envoy}]}]}`, `unknown field "provider"`, false},
		{"cel not supported", `{accessLogging: [{filter: {expression: "response.flags != 0"}}]}`, "spec.accessLogging[0].filter.expression: filter \"response.flags != 0\": column 10: want response.code or response.duration", false},
		{"cel garbage", `{accessLogging: [{filter: {expression: "response.code >="}}]}`, "Weft supports comparisons of response.code", false},
		{"selector and targetRef", `{selector: {matchLabels: {app: a}}, targetRef: {kind: Service, name: a}}`, "only one of selector, targetRef or targetRefs", false},
		{"targetRef warns", `{targetRef: {kind: Service, name: a}, accessLogging: [{providers: [{name: envoy}]}]}`, "applies to gateways and waypoints only", true},
		{"sampling range", `{tracing: [{randomSamplingPercentage: 101}]}`, "spec.tracing[0].randomSamplingPercentage: randomSamplingPercentage must be in [0.0, 100.0]", false},
		{"two tracing", `{tracing: [{providers: [{name: a}]}, {providers: [{name: b}]}]}`, "only the first tracing entry is used", true},
		{"upsert needs value", `{metrics: [{overrides: [{tagOverrides: {x: {operation: UPSERT}}}]}]}`, "spec.metrics[0].overrides[0].tagOverrides.x.value: value must be set when operation is UPSERT", false},
		{"tag value outside the subset", `{metrics: [{overrides: [{tagOverrides: {x: {value: "request.size"}}}]}]}`, "spec.metrics[0].overrides[0].tagOverrides.x.value: column 1: unsupported attribute request.size", false},
		{"tag value garbage", `{metrics: [{overrides: [{tagOverrides: {x: {value: "request.headers['a"}}}]}]}`, "tagOverrides.x.value: column 17: unterminated string", false},
		{"tag name", `{metrics: [{overrides: [{tagOverrides: {"my-tag": {value: "'a'"}}}]}]}`, `tagOverrides.my-tag: "my-tag" is not a Prometheus label name`, false},
		{"custom metric warns", `{metrics: [{overrides: [{match: {customMetric: my_metric}, disabled: true}]}]}`, `overrides of custom metric "my_metric" have no effect`, true},
		{"reporting interval warns", `{metrics: [{reportingInterval: 10s}]}`, "spec.metrics[0].reportingInterval: has no effect", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			doc := "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: t, namespace: ns}\nspec: " + c.spec + "\n"
			snap := NewStore(testOptions()).Load(map[string][]byte{"tel.yaml": []byte(doc)})
			var all []string
			found := false
			for _, d := range snap.Diagnostics {
				all = append(all, d.Error())
				if (d.Severity == SeverityError) != c.warning && strings.Contains(d.Error(), c.want) && strings.HasPrefix(d.Error(), "tel.yaml:") {
					found = true
				}
			}
			kept := len(snap.Telemetries) == 1
			if !found || kept != c.warning {
				t.Errorf("want %s %q (kept: %v); got %d Telemetries, diagnostics:\n%s", map[bool]string{true: "a warning", false: "an error"}[c.warning], c.want, c.warning, len(snap.Telemetries), strings.Join(all, "\n"))
			}
		})
	}
}

// TestTelemetryAPIVersion: only telemetry.istio.io versions are read.
func TestTelemetryAPIVersion(t *testing.T) {
	doc := "apiVersion: networking.istio.io/v1\nkind: Telemetry\nmetadata: {name: t}\nspec: {}\n"
	snap := NewStore(testOptions()).Load(map[string][]byte{"tel.yaml": []byte(doc)})
	if len(snap.Diagnostics) == 0 || !strings.Contains(snap.Diagnostics[0].Error(), "telemetry.istio.io/v1 or v1alpha1") {
		t.Fatalf("diagnostics = %v", snap.Diagnostics)
	}
}

// TestParseLogFilter: the CEL subset parses into Envoy's filter forms;
// everything else is refused with a column.
func TestParseLogFilter(t *testing.T) {
	for _, c := range []struct {
		expr string
		want string // rendered tree
	}{
		{"response.code >= 400", "code>=400"},
		{"response.code == 503", "code==503"},
		{"response.code != 200", "code!=200"},
		{"response.code > 499 || response.code < 200", "or(code>499,code<200)"},
		{"response.duration > duration(\"1.5s\")", "duration>1500"},
		{"response.code >= 500 && request.headers['x-debug'] == 'on'", "and(code>=500,header[x-debug]==on)"},
		{"'X-Debug' in request.headers || (response.code >= 400 && response.code < 500) || response.code == 503", "or(has[x-debug],and(code>=400,code<500),code==503)"},
		// Istio's tests/integration/telemetry/api/testdata/accesslog/filter.yaml.
		{"request.path == '/filter-test'", "header[:path]==/filter-test"},
		{"request.method == 'POST' && request.host == 'shop.example'", "and(header[:method]==POST,header[:authority]==shop.example)"},
		// Expressions users write: errors and slow requests, health
		// checks and Kubernetes probes left out.
		{"response.code >= 400 || response.duration > duration('2s')", "or(code>=400,duration>2000)"},
		{"!request.headers['user-agent'].startsWith('kube-probe/')", "header[user-agent]!prefix:kube-probe/"},
		{"request.url_path != '/healthz' && response.code >= 400", "and(header[:path]!regex:/healthz(?:\\?.*)?,code>=400)"},
		{"!(request.url_path in ['/healthz', '/ready'])", "and(header[:path]!regex:/healthz(?:\\?.*)?,header[:path]!regex:/ready(?:\\?.*)?)"},
		{"!request.url_path.startsWith('/health')", "header[:path]!prefix:/health"},
		{"request.url_path.endsWith('.js')", "header[:path]regex:[^?]*\\.js(?:\\?.*)?"},
		{"request.path.contains('debug')", "header[:path]contains:debug"},
		{"request.headers['x-user'].matches('^adm')", "header[x-user]regex:(?s:.*(?:^adm).*)"},
		{"request.useragent != 'curl' || request.id == 'x'", "or(header[user-agent]!=curl,header[x-request-id]==x)"},
		{"request.headers['x'].startsWith('') && !request.url_path.contains('')", "and(has[x],!has[:path])"},
		// Negation pushed to the leaves; constants folded.
		{"!(response.code >= 500 && response.duration < duration('1s'))", "or(code<500,duration>=1000)"},
		{"!('x-debug' in request.headers)", "!has[x-debug]"},
		{"!!(response.code == 200)", "code==200"},
		{"true && response.code >= 400", "code>=400"},
		{"false || response.code == 503", "code==503"},
		{"true", "<nil>"},
		{"response.code >= 400 || true", "<nil>"},
		{"false", "never"},
		{"!true", "never"},
		{"response.code >= 400 && false", "never"},
	} {
		f, err := ParseLogFilter(c.expr)
		if err != nil {
			t.Errorf("%s: %v", c.expr, err)
			continue
		}
		if got := renderFilter(f); got != c.want {
			t.Errorf("%s: got %s, want %s", c.expr, got, c.want)
		}
	}
	for _, c := range []struct{ expr, want string }{
		{"", "empty"},
		{"response.code >= '400'", "column 18: response.code compares with an integer"},
		{"response.code >= 400 &&", "ends too early"},
		{"!", "ends too early"},
		{"response.duration > 100", "compares with duration"},
		{"response.duration > duration(\"1us\")", "whole, non-negative number of milliseconds"},
		{"request.headers['a'] < 'b'", "compares with == or != a string"},
		{"request.path.size() > 3", "want startsWith, endsWith, contains or matches"},
		{"request.url_path == '/x?y=1'", "has no query"},
		{"request.url_path.matches('x')", "use request.path.matches()"},
		{"request.path.matches('(')", "invalid regular expression"},
		{"request.scheme == 'https'", "got request.scheme"},
		{"request.headers[''] == 'x'", "column 17: a header name is not empty"},
		{"'' in request.headers", "not empty"},
		{"':' in request.headers", "pseudo-header"},
		{"request.headers['a b'] == 'x'", "not a valid header name"},
		{"request.path in []", "compares with a string"},
		{"xds.cluster_name == 'BlackHoleCluster'", "unsupported \"xds\""},
		{"response.code >= 400 response.code", "unexpected \"response\""},
		{"request.headers['a", "unterminated string"},
		{"(response.code >= 400", "want \")\""},
	} {
		_, err := ParseLogFilter(c.expr)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want %q", c.expr, err, c.want)
		}
	}
}

func renderFilter(f *LogFilter) string {
	if f == nil {
		return "<nil>"
	}
	cmp := map[LogFilterCmp]string{CmpEQ: "==", CmpNE: "!=", CmpLT: "<", CmpLE: "<=", CmpGT: ">", CmpGE: ">="}
	switch f.Op {
	case LogFilterAnd, LogFilterOr:
		var parts []string
		for _, c := range f.Children {
			parts = append(parts, renderFilter(c))
		}
		return map[LogFilterOp]string{LogFilterAnd: "and", LogFilterOr: "or"}[f.Op] + "(" + strings.Join(parts, ",") + ")"
	case LogFilterStatusCode:
		return "code" + cmp[f.Cmp] + strconv.FormatInt(f.Value, 10)
	case LogFilterDuration:
		return "duration" + cmp[f.Cmp] + strconv.FormatInt(f.Value, 10)
	case LogFilterNever:
		return "never"
	case LogFilterHeader:
		not := map[bool]string{true: "!"}[f.Invert]
		switch f.Match {
		case MatchPresent:
			return not + "has[" + f.Header + "]"
		case MatchExact:
			if f.Invert {
				return "header[" + f.Header + "]!=" + f.HeaderValue
			}
			return "header[" + f.Header + "]==" + f.HeaderValue
		}
		m := map[LogFilterMatch]string{MatchPrefix: "prefix", MatchSuffix: "suffix", MatchContains: "contains", MatchRegex: "regex"}[f.Match]
		return "header[" + f.Header + "]" + not + m + ":" + f.HeaderValue
	}
	return "?"
}

// TestParseMeshConfig: a mesh config's providers are read and merged over
// Istio's built-in ones; bad fields are errors with file and line; fields
// Weft does not read are warnings naming the flag to use.
func TestParseMeshConfig(t *testing.T) {
	good := `
rootNamespace: istio-system
accessLogFile: /dev/stdout
extensionProviders:
- name: json
  envoyFileAccessLog:
    path: /var/log/access.json
    logFormat:
      labels:
        method: "%REQ(:METHOD)%"
        code: "%RESPONSE_CODE%"
- name: otel
  opentelemetry: {service: otel.istio-system.svc.cluster.local, port: 4317}
defaultProviders:
  accessLogging: [envoy]
`
	mc, warns, err := ParseMeshConfig("mesh.yaml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range mc.GetExtensionProviders() {
		names = append(names, p.GetName())
	}
	if strings.Join(names, ",") != "prometheus,envoy,json,otel" {
		t.Errorf("providers = %v", names)
	}
	if got := mc.GetDefaultProviders().GetAccessLogging(); len(got) != 1 || got[0] != "envoy" {
		t.Errorf("defaultProviders.accessLogging = %v", got)
	}
	// Default provider lists not written keep the defaults.
	if got := mc.GetDefaultProviders().GetMetrics(); len(got) != 1 || got[0] != "prometheus" {
		t.Errorf("defaultProviders.metrics = %v, want the default [prometheus]", got)
	}
	if len(warns) != 1 || !strings.Contains(warns[0].Error(), "mesh.yaml:2:1: rootNamespace: rootNamespace is not read by Weft and has no effect (use weft serve --root-namespace)") {
		t.Errorf("warnings = %v", warns)
	}

	// Of defaultConfig (a ProxyConfig), Weft reads tracing.sampling and
	// proxyMetadata.ISTIO_META_HTTP10 only.
	mc, warns, err = ParseMeshConfig("mesh.yaml", []byte("defaultConfig:\n  tracing:\n    sampling: 5\n    zipkin: {address: z:9411}\n  concurrency: 2\n  proxyMetadata: {ISTIO_META_HTTP10: \"1\", ISTIO_META_DNS_CAPTURE: \"true\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := mc.GetDefaultConfig().GetTracing().GetSampling(); got != 5 {
		t.Errorf("defaultConfig.tracing.sampling = %v, want 5", got)
	}
	var ws []string
	for _, w := range warns {
		ws = append(ws, w.Error())
	}
	if len(ws) != 3 || !strings.Contains(ws[0], "mesh.yaml:4:5: defaultConfig.tracing.zipkin: defaultConfig.tracing.zipkin is not read by Weft") ||
		!strings.Contains(ws[1], "mesh.yaml:5:3: defaultConfig.concurrency:") ||
		!strings.Contains(ws[2], "defaultConfig.proxyMetadata.ISTIO_META_DNS_CAPTURE: defaultConfig.proxyMetadata.ISTIO_META_DNS_CAPTURE is not read by Weft") {
		t.Errorf("warnings = %q", ws)
	}
	if got := mc.GetDefaultConfig().GetProxyMetadata()["ISTIO_META_HTTP10"]; got != "1" {
		t.Errorf("defaultConfig.proxyMetadata.ISTIO_META_HTTP10 = %q, want 1", got)
	}

	// A tracing provider of a type the proxy has no tracer for: a warning.
	_, zw, err := ParseMeshConfig("mesh.yaml", []byte("extensionProviders:\n- name: zipkin\n  zipkin: {service: zipkin.observability.svc.cluster.local, port: 9411}\n"))
	if err != nil || len(zw) != 1 || !strings.Contains(zw[0].Error(), `extension provider "zipkin": Weft's proxy implements the opentelemetry tracer only`) {
		t.Errorf("zipkin provider: err %v, warnings %v", err, zw)
	}

	// localityLbSetting: Istio's default (enabled), which the file can
	// turn off or give failover rules, checked as a DestinationRule's are.
	if got := DefaultMeshConfig().GetLocalityLbSetting().GetEnabled(); got == nil || !got.GetValue() {
		t.Errorf("default localityLbSetting.enabled = %v, want true (Istio's default)", got)
	}
	mc, warns, err = ParseMeshConfig("mesh.yaml", []byte("localityLbSetting:\n  enabled: false\n"))
	if err != nil || len(warns) != 0 || mc.GetLocalityLbSetting().GetEnabled().GetValue() {
		t.Errorf("localityLbSetting {enabled: false}: %v, warnings %v, enabled %v", err, warns, mc.GetLocalityLbSetting().GetEnabled())
	}
	mc, _, err = ParseMeshConfig("mesh.yaml", []byte("localityLbSetting:\n  failover: [{from: us-east, to: us-west}]\n"))
	if err != nil || !mc.GetLocalityLbSetting().GetEnabled().GetValue() || len(mc.GetLocalityLbSetting().GetFailover()) != 1 {
		t.Errorf("localityLbSetting with failover: %v, %v", err, mc.GetLocalityLbSetting())
	}

	for _, c := range []struct{ doc, want string }{
		{"localityLbSetting:\n  failover: [{from: us-east, to: us-east}]\n", "mesh.yaml:2:14: localityLbSetting.failover[0]: from and to must be different regions"},
		{"extensionProviders:\n- name: x\n  envoyFileAccessLog:\n    logFormat: {text: \"%REQ(:METHOD) %FOO%\"}\n", "mesh.yaml:4:23: extensionProviders[0].envoyFileAccessLog.logFormat.text:"},
		{"extensionProviders:\n- name: x\n  envoyFileAccessLog:\n    logFormat: {text: \"%NOPE%\"}\n", "unknown command operator %NOPE%"},
		{"extensionProviders:\n- name: x\n  envoyFileAcessLog: {}\n", `mesh.yaml:3:3: extensionProviders[0].envoyFileAcessLog: unknown field "envoyFileAcessLog"`},
		{"extensionProviders:\n- envoyFileAccessLog: {}\n", "extensionProviders[0].name: an extension provider needs a name"},
		{"extensionProviders:\n- name: a\n  envoyFileAccessLog: {}\n- name: a\n  envoyFileAccessLog: {}\n", `extension provider "a" is defined twice`},
		{"accessLogEncoding: JSON\naccessLogFormat: 'not json'\n", "accessLogFormat with accessLogEncoding JSON must be a JSON object"},
		{"- a\n", "a mesh config must be a mapping"},
		{"a: [\n", "invalid YAML"},
	} {
		_, _, err := ParseMeshConfig("mesh.yaml", []byte(c.doc))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want %q", c.doc, err, c.want)
		}
	}
}
