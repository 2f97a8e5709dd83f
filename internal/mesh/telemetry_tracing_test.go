package mesh

import (
	"log/slog"
	"testing"

	"weft.dev/weft/internal/config"
)

// TestTelemetryTracing: Istio's resolution of tracing — defaultProviders,
// then the mesh-wide, namespace and workload Telemetries overriding
// providers, sampling and custom tags field by field; match.mode; span
// reporting disabled; a provider the proxy cannot export to; the flags'
// default when the Telemetry API says nothing.
func TestTelemetryTracing(t *testing.T) {
	mc, _, err := config.ParseMeshConfig("mesh.yaml", []byte(`
extensionProviders:
- name: otel
  opentelemetry: {service: observability/otel.observability.svc.cluster.local, port: 4317}
- name: otel-http
  opentelemetry: {service: 127.0.0.9, port: 4318, http: {path: /v1/traces}}
- name: zipkin
  zipkin: {service: zipkin.observability.svc.cluster.local, port: 9411}
defaultProviders:
  tracing: [otel]
`))
	if err != nil {
		t.Fatal(err)
	}
	snap := config.NewStore(config.Options{Logger: slog.New(slog.DiscardHandler)}).Load(map[string][]byte{"t.yaml": []byte(`
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing:
  - randomSamplingPercentage: 10
    customTags:
      team: {literal: {value: platform}}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: shop, namespace: shop}
spec:
  tracing:
  - providers: [{name: otel-http}]
    customTags:
      team: {literal: {value: shop}}
      user: {header: {name: x-user, defaultValue: anonymous}}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: reviews, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  tracing:
  - match: {mode: SERVER}
    randomSamplingPercentage: 100
  - match: {mode: CLIENT}
    disableSpanReporting: true
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: legacy, namespace: legacy}
spec:
  tracing:
  - providers: [{name: zipkin}]
`)})
	for _, d := range snap.Diagnostics {
		if d.Severity == config.SeverityError {
			t.Fatal(d.Error())
		}
	}
	m := Build(snap, nil, Options{MeshConfig: mc})

	// Mesh-wide: the default provider, the mesh Telemetry's sampling and tag.
	tr := m.TracingFor("default", map[string]string{"app": "x"}, true)
	if tr == nil || tr.Provider.Service != "otel.observability.svc.cluster.local" || tr.Provider.Port != 4317 || tr.Provider.HTTPPath != "" ||
		tr.SamplingPercent != 10 || len(tr.CustomTags) != 1 || tr.CustomTags[0].Literal != "platform" {
		t.Errorf("default namespace: %+v", tr)
	}
	// Namespace: its provider (OTLP/HTTP), the mesh's sampling, tags merged.
	tr = m.TracingFor("shop", map[string]string{"app": "cart"}, false)
	if tr == nil || tr.Provider.Name != "otel-http" || tr.Provider.HTTPPath != "/v1/traces" || tr.SamplingPercent != 10 || len(tr.CustomTags) != 2 {
		t.Fatalf("shop: %+v", tr)
	}
	for _, c := range tr.CustomTags {
		if c.Tag == "team" && c.Literal != "shop" || c.Tag == "user" && (c.Header != "x-user" || c.Default != "anonymous") {
			t.Errorf("shop tag %+v", c)
		}
	}
	// Workload: server side at 100%, client side not reported.
	if tr := m.TracingFor("shop", map[string]string{"app": "reviews"}, true); tr == nil || tr.SamplingPercent != 100 || tr.Provider.Name != "otel-http" {
		t.Errorf("reviews server: %+v", tr)
	}
	if tr := m.TracingFor("shop", map[string]string{"app": "reviews"}, false); tr != nil {
		t.Errorf("reviews client: %+v, want no tracing", tr)
	}
	// A zipkin provider: the proxy has no such tracer.
	if tr := m.TracingFor("legacy", nil, true); tr != nil {
		t.Errorf("legacy (zipkin): %+v, want none", tr)
	}
	if !m.TracingEnabled() {
		t.Error("TracingEnabled = false")
	}

	// No Telemetry, no default provider: the flags' tracing, or none.
	flags := &Tracing{Provider: TracingProvider{Service: "127.0.0.1", Port: 4317}, SamplingPercent: 5}
	m = Build(nil, nil, Options{Tracing: flags})
	if tr := m.TracingFor("default", nil, true); tr != flags || !m.TracingEnabled() {
		t.Errorf("flags: %+v", tr)
	}
	m = Build(nil, nil, Options{})
	if tr := m.TracingFor("default", nil, true); tr != nil || m.TracingEnabled() {
		t.Errorf("nothing configured: %+v", tr)
	}
	// The mesh config's default sampling when no Telemetry sets one.
	mc2, _, err := config.ParseMeshConfig("mesh.yaml", []byte(`
extensionProviders:
- name: otel
  opentelemetry: {service: otel.observability.svc.cluster.local, port: 4317}
defaultProviders: {tracing: [otel]}
defaultConfig: {tracing: {sampling: 25}}
`))
	if err != nil {
		t.Fatal(err)
	}
	m = Build(nil, nil, Options{MeshConfig: mc2})
	if tr := m.TracingFor("default", nil, false); tr == nil || tr.SamplingPercent != 25 {
		t.Errorf("defaultConfig.tracing.sampling: %+v", tr)
	}
}
