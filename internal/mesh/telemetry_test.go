package mesh

import (
	"log/slog"
	"strings"
	"testing"

	"weft.dev/weft/internal/config"
)

// TestTelemetryAccessLogs: Istio's resolution of access logging — the
// mesh-wide Telemetry, then the namespace's, then the workload's, the most
// specific deciding; mode matching; disabled; filters; the built-in
// "envoy" provider with Istio's text format; the legacy accessLogFile.
func TestTelemetryAccessLogs(t *testing.T) {
	meshYAML := `
extensionProviders:
- name: json
  envoyFileAccessLog:
    path: /tmp/access.json
    logFormat: {labels: {code: "%RESPONSE_CODE%"}}
- name: text
  envoyFileAccessLog:
    logFormat: {text: "%REQ(:METHOD)% %RESPONSE_CODE%"}
- name: otel
  opentelemetry: {service: otel.observability.svc.cluster.local, port: 4317}
`
	mc, _, err := config.ParseMeshConfig("mesh.yaml", []byte(meshYAML))
	if err != nil {
		t.Fatal(err)
	}
	docs := `
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging:
  - providers: [{name: envoy}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: shop, namespace: shop}
spec:
  accessLogging:
  - providers: [{name: json}, {name: otel}]
    filter: {expression: "response.code >= 400"}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: reviews, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  accessLogging:
  - match: {mode: CLIENT}
    disabled: true
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: quiet, namespace: quiet}
spec:
  accessLogging:
  - disabled: true
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: constant, namespace: constant}
spec:
  accessLogging:
  - providers: [{name: json}]
    filter: {expression: "response.code >= 400 && false"}
  - providers: [{name: envoy}]
    filter: {expression: "true"}
`
	snap := config.NewStore(config.Options{Logger: slog.New(slog.DiscardHandler)}).Load(map[string][]byte{"t.yaml": []byte(docs)})
	for _, d := range snap.Diagnostics {
		t.Fatalf("unexpected %s", d.Error())
	}
	m := Build(snap, nil, Options{MeshConfig: mc})
	render := func(ns string, labels map[string]string, mode Mode) string {
		var parts []string
		for _, al := range m.Telemetry.AccessLogs(m.Telemetry.For(ns, labels), mode) {
			s := al.Provider + ":" + al.Path
			switch {
			case al.JSON != nil:
				s += ":json"
			case al.Text == IstioTextFormat:
				s += ":istio-text"
			default:
				s += ":" + strings.TrimSpace(al.Text)
			}
			if al.Filter != nil {
				s += ":filtered"
			}
			parts = append(parts, s)
		}
		return strings.Join(parts, " ")
	}
	for _, c := range []struct {
		ns     string
		labels map[string]string
		mode   Mode
		want   string
	}{
		{"other", nil, ModeClient, "envoy:/dev/stdout:istio-text"},
		{"shop", map[string]string{"app": "ratings"}, ModeServer, "json:/tmp/access.json:json:filtered"},
		{"shop", map[string]string{"app": "reviews"}, ModeServer, "json:/tmp/access.json:json:filtered"},
		{"shop", map[string]string{"app": "reviews"}, ModeClient, ""},
		{"quiet", nil, ModeServer, ""},
		// "true" is no filter; an expression that never holds logs nothing.
		{"constant", nil, ModeServer, "envoy:/dev/stdout:istio-text"},
	} {
		if got := render(c.ns, c.labels, c.mode); got != c.want {
			t.Errorf("%s %v %v: got %q, want %q", c.ns, c.labels, c.mode, got, c.want)
		}
	}

	// No Telemetry: the mesh config's defaultProviders, else accessLogFile.
	mc2, _, err := config.ParseMeshConfig("mesh.yaml", []byte(meshYAML+"defaultProviders: {accessLogging: [text]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	m = Build(nil, nil, Options{MeshConfig: mc2})
	if got := render("any", nil, ModeServer); got != "text:/dev/stdout:%REQ(:METHOD)% %RESPONSE_CODE%" {
		t.Errorf("default provider: %q", got)
	}
	mc3, _, err := config.ParseMeshConfig("mesh.yaml", []byte("accessLogFile: /tmp/a.log\naccessLogEncoding: JSON\n"))
	if err != nil {
		t.Fatal(err)
	}
	m = Build(nil, nil, Options{MeshConfig: mc3})
	if got := render("any", nil, ModeServer); got != ":/tmp/a.log:json" {
		t.Errorf("accessLogFile: %q", got)
	}
	m = Build(nil, nil, Options{})
	if got := render("any", nil, ModeServer); got != "" {
		t.Errorf("no config: %q", got)
	}
}
