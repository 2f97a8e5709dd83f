package explain

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry/static"
	"weft.dev/weft/internal/xds/contract"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func canary(t *testing.T) *mesh.Snapshot {
	t.Helper()
	dir, err := config.ReadDir(filepath.Join("..", "..", "examples", "canary"))
	if err != nil {
		t.Fatal(err)
	}
	snap := config.NewStore(config.Options{Logger: slog.New(slog.DiscardHandler)}).LoadDir(dir)
	if len(snap.Diagnostics) != 0 {
		t.Fatalf("examples/canary: %v", snap.Diagnostics)
	}
	return mesh.New(snap, static.Build(snap, ""), "")
}

var client = contract.Identity{ID: "sidecar~127.0.0.1~frontend.default~default.svc.cluster.local", Namespace: "default",
	WorkloadName: "frontend", IPs: []string{"127.0.0.1"}, OutboundAddress: "127.0.0.1:15001"}

func TestExplain(t *testing.T) {
	m := canary(t)
	tests := []struct {
		name string
		req  Request
		want []string // lines the text must contain
	}{
		{"header match", Request{Host: "backend", Headers: map[string]string{"x-canary": "true"}}, []string{
			"outcome:       forwarded: 100% to subset v2 of backend.default.svc.cluster.local (1 healthy endpoint(s))",
			`route:         VirtualService default/backend (` + filepath.Join("..", "..", "examples", "canary", "backend.yaml") + `:17), spec.http[0] "canary-header" at`,
			`matched by:    spec.http[0].match[0] {"headers":{"x-canary":{"exact":"true"}}}`,
			"retries:       2 attempt(s) on connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes (status [503])",
			"labels {version=v2}",
			"healthy  default/backend-v2",
		}},
		{"weighted catch-all", Request{Host: "backend:8080", Path: "/api?x=1", Method: "POST"}, []string{
			"forwarded: 90% to subset v1 of backend.default.svc.cluster.local (1 healthy endpoint(s)); 10% to subset v2",
			`spec.http[1] "weighted"`,
			"    90%  subset v1 of backend.default.svc.cluster.local port 8080 (cluster outbound|8080|v1|backend.default.svc.cluster.local)",
		}},
		{"unknown host", Request{Host: "nope"}, []string{`no service answers to Host "nope" on this proxy: it answers 404 (NR)`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := Explain(m, client, tt.req)
			if err != nil {
				t.Fatal(err)
			}
			var b strings.Builder
			if err := e.WriteText(&b); err != nil {
				t.Fatal(err)
			}
			for _, w := range tt.want {
				if !strings.Contains(b.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, b.String())
				}
			}
		})
	}
}

// TestExplainUnserved: a destination with no endpoints is called out.
func TestExplainUnserved(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"services.yaml": `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web}
spec:
  hosts: [web.default.svc.cluster.local]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.1, labels: {version: v1}}]
`,
		"routes.yaml": `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web
  subsets: [{name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web]
  http:
  - timeout: 3s
    retries: {attempts: 0}
    fault: {abort: {httpStatus: 418, percentage: {value: 5}}}
    route: [{destination: {host: web, subset: v2}}]
`,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d, err := config.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	snap := config.NewStore(config.Options{Logger: slog.New(slog.DiscardHandler)}).LoadDir(d)
	e, err := Explain(mesh.New(snap, static.Build(snap, ""), ""), client, Request{Host: "web"})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	_ = e.WriteText(&b)
	for _, w := range []string{
		"NO healthy endpoint: these requests fail with 503 (UH)",
		"timeout:       3s",
		"retries:       none",
		`policy:        fault injection {"abort":{"httpStatus":418,"percentage":{"value":5}}}`,
		"no endpoints",
	} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("output lacks %q:\n%s", w, b.String())
		}
	}
}
