package generate

import (
	"log/slog"
	"testing"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry/static"
)

func TestOrigins(t *testing.T) {
	cfg := config.NewStore(config.Options{Logger: slog.New(slog.DiscardHandler)}).Load(map[string][]byte{"c.yaml": []byte(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend}
spec:
  hosts: [backend.default.svc.cluster.local]
  ports: [{number: 8080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: backend}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: backend-v1}
spec: {address: 10.0.0.1, labels: {app: backend, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: backend}
spec: {host: backend, subsets: [{name: v1, labels: {version: v1}}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend}
spec:
  hosts: [backend]
  http: [{route: [{destination: {host: backend, subset: v1}}]}]
`)})
	m := mesh.New(cfg, static.Build(cfg, ""), "")
	for _, tt := range []struct {
		msg  string
		want []string
	}{
		{`route "http_proxy": virtual_hosts[0] (backend.default.svc.cluster.local:8080): routes[0]: retry_policy.retry_on: unknown "sometimes"`,
			[]string{"ServiceEntry/default/backend", "VirtualService/default/backend"}},
		{`cluster "outbound|8080|v1|backend.default.svc.cluster.local": circuit_breakers: bad`,
			[]string{"DestinationRule/default/backend", "ServiceEntry/default/backend"}},
		{`listener "10.0.0.1_8080": filter_chains: bad`,
			[]string{"ServiceEntry/default/backend", "WorkloadEntry/default/backend-v1"}},
		{`something unrelated`, nil},
	} {
		var got []string
		for _, o := range Origins(m, tt.msg) {
			got = append(got, o.Key())
		}
		if len(got) != len(tt.want) || (len(got) > 0 && got[0] != tt.want[0] || len(got) > 1 && got[1] != tt.want[1]) {
			t.Errorf("Origins(%q) = %v, want %v", tt.msg, got, tt.want)
		}
	}
}
