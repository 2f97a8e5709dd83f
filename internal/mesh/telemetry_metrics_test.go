package mesh

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/xds/contract"
)

// TestTelemetryMetrics: Istio's mergeMetrics — overrides accumulate from
// the mesh-wide Telemetry to the workload's, by mode; disabling
// ALL_METRICS drops every metric until a more specific level overrides
// one again; a Telemetry naming no Prometheus provider drops them all.
func TestTelemetryMetrics(t *testing.T) {
	docs := `
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  metrics:
  - overrides:
    - match: {metric: ALL_METRICS}
      tagOverrides:
        request_protocol: {operation: REMOVE}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: shop, namespace: shop}
spec:
  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - match: {metric: REQUEST_SIZE, mode: CLIENT}
      disabled: true
    - match: {metric: REQUEST_COUNT, mode: SERVER}
      tagOverrides:
        user: {value: "request.headers['x-user']"}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: reviews, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  metrics:
  - overrides:
    - match: {metric: REQUEST_COUNT, mode: SERVER}
      tagOverrides:
        user: {operation: REMOVE}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: quiet, namespace: quiet}
spec:
  metrics:
  - overrides:
    - disabled: true
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: loud, namespace: quiet}
spec:
  selector: {matchLabels: {app: loud}}
  metrics:
  - overrides:
    - match: {metric: REQUEST_COUNT}
      disabled: false
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: elsewhere, namespace: elsewhere}
spec:
  metrics:
  - providers: [{name: stackdriver}]
`
	snap := config.NewStore(config.Options{Logger: slog.New(slog.DiscardHandler)}).Load(map[string][]byte{"t.yaml": []byte(docs)})
	for _, d := range snap.Diagnostics {
		if d.Severity == config.SeverityError {
			t.Fatalf("unexpected %s", d.Error())
		}
	}
	m := Build(snap, nil, Options{})
	render := func(ns string, labels map[string]string, mode Mode) string {
		var parts []string
		for _, sm := range m.Telemetry.Metrics(m.Telemetry.For(ns, labels), mode).Metrics {
			s := sm.Name
			if s == "" {
				s = "*"
			}
			if sm.Drop {
				s += ":drop"
			}
			if len(sm.TagsToRemove) > 0 {
				s += ":-" + strings.Join(sm.TagsToRemove, ",-")
			}
			for k, v := range sm.Dimensions {
				s += fmt.Sprintf(":%s=%s", k, v)
			}
			parts = append(parts, s)
		}
		return strings.Join(parts, " ")
	}
	everyMetric := func(extra map[string]string) string {
		var parts []string
		for _, name := range allStats {
			parts = append(parts, name+":-request_protocol"+extra[name])
		}
		return strings.Join(parts, " ")
	}
	for _, c := range []struct {
		ns     string
		labels map[string]string
		mode   Mode
		want   string
	}{
		{"other", nil, ModeClient, everyMetric(nil)},
		{"shop", map[string]string{"app": "cart"}, ModeClient, strings.Replace(everyMetric(nil), contract.StatRequestBytes+":", contract.StatRequestBytes+":drop:", 1)},
		{"shop", map[string]string{"app": "cart"}, ModeServer, everyMetric(map[string]string{contract.StatRequestsTotal: ":user=request.headers['x-user']"})},
		{"shop", map[string]string{"app": "reviews"}, ModeServer, strings.Replace(everyMetric(nil), contract.StatRequestsTotal+":-request_protocol", contract.StatRequestsTotal+":-request_protocol,-user", 1)},
		{"quiet", nil, ModeServer, "*:drop"},
		{"quiet", map[string]string{"app": "loud"}, ModeServer, everyMetric(nil)},
		{"elsewhere", nil, ModeServer, "*:drop"},
	} {
		if got := render(c.ns, c.labels, c.mode); got != c.want {
			t.Errorf("%s %v %v:\n got %q\nwant %q", c.ns, c.labels, c.mode, got, c.want)
		}
	}
	if got := len(Build(nil, nil, Options{}).Telemetry.Metrics(TelemetrySet{}, ModeClient).Metrics); got != 0 {
		t.Errorf("no Telemetry: %d overrides, want none", got)
	}
}
