package analyze

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry/static"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const services = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend}
spec:
  hosts: [backend.default.svc.cluster.local]
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: backend}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: backend-v1}
spec: {address: 10.0.0.1, labels: {app: backend, version: v1}}
`

func run(t *testing.T, files map[string]string, opts Options) []string {
	t.Helper()
	in := map[string][]byte{}
	for k, v := range files {
		in[k] = []byte(v)
	}
	snap := config.NewStore(config.Options{Logger: slog.New(slog.DiscardHandler)}).Load(in)
	m := mesh.New(snap, static.Build(snap, ""), "")
	var out []string
	for _, d := range Mesh(m, opts) {
		out = append(out, fmt.Sprintf("%s %s %s:%d %s: %s", d.Severity, d.Code, d.File, d.Line, d.Path, d.Message))
	}
	return out
}

func TestAnalyzers(t *testing.T) {
	got := run(t, map[string]string{"services.yaml": services, "routes.yaml": `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: backend}
spec:
  host: backend
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
  - {name: v3, labels: {version: v3}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend}
spec:
  hosts: [backend]
  http:
  - match: [{uri: {prefix: /api}}]
    route: [{destination: {host: backend, subset: v1}}]
  - match: [{uri: {prefix: /api}}]
    route: [{destination: {host: backend, subset: v1}}]
  - route:
    - {destination: {host: backend, subset: v1}, weight: 90}
    - {destination: {host: backend, subset: v2}, weight: 10}
    - {destination: {host: backend, subset: v3}, weight: 0}
  - route: [{destination: {host: backend, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: payments}
spec: {host: payments.example.com}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ghost}
spec:
  hosts: [ghost.example.com]
  http: [{route: [{destination: {host: ghost.example.com}}]}]
`}, Options{})
	want := []string{
		"warning WF0504 routes.yaml:8 spec.subsets[1].labels: subset v2 of backend.default.svc.cluster.local selects no endpoint: none of the 1 endpoints of backend.default.svc.cluster.local has the labels {version=v2}",
		"warning WF0503 routes.yaml:9 spec.subsets[2]: subset v3 of backend.default.svc.cluster.local gets no traffic: every route to it gives it weight 0",
		"warning WF0504 routes.yaml:9 spec.subsets[2].labels: subset v3 of backend.default.svc.cluster.local selects no endpoint: none of the 1 endpoints of backend.default.svc.cluster.local has the labels {version=v3}",
		"warning WF0501 routes.yaml:19 spec.http[1]: this rule is never used: earlier rules take every one of its matches",
		"warning WF0501 routes.yaml:19 spec.http[1].match[0]: this match is never used: spec.http[0] has the same conditions",
		"error WF0402 routes.yaml:23 spec.http[2].route[1].destination: 10% of the requests to backend.default.svc.cluster.local that reach spec.http[2] go to subset v2 of backend.default.svc.cluster.local, which has no endpoints: they fail with 503",
		"warning WF0501 routes.yaml:25 spec.http[3]: this rule is never used: spec.http[2] before it has no match conditions and takes every request; only the last rule may have none",
		"warning WF0502 routes.yaml:30 spec.host: no registry knows the host payments.example.com: this DestinationRule applies to nothing",
		"warning WF0505 routes.yaml:36 spec.hosts[0]: no registry knows the host ghost.example.com: sidecars get no route for it",
		"warning WF0302 routes.yaml:37 spec.http[0].route[0].destination.host: host ghost.example.com is not known to any registry (no ServiceEntry or service defines it)",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got:\n%s\nwant:\n%s", join(got), join(want))
	}
}

func join(ss []string) string {
	out := ""
	for _, s := range ss {
		out += "\t" + s + "\n"
	}
	return out
}

func TestStrictWithoutSidecar(t *testing.T) {
	got := run(t, map[string]string{"services.yaml": services + `---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: backend-v2}
spec: {address: 10.0.0.2, labels: {app: backend, version: v2, security.istio.io/tlsMode: istio}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: backend-v3}
spec: {address: 10.0.0.3, labels: {app: backend, version: v3}}
`, "security.yaml": `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: v3-legacy}
spec:
  selector: {matchLabels: {version: v3}}
  portLevelMtls:
    8080: {mode: PERMISSIVE}
`}, Options{})
	want := []string{
		"warning WF0506 services.yaml:13 spec.labels: PeerAuthentication istio-system/default (security.yaml:1) makes this workload's port(s) 8080 STRICT, but it is not labelled security.istio.io/tlsMode: istio, so clients send it plaintext (they use mutual TLS only toward workloads with that label) and it refuses them; add the label if it runs a sidecar, or relax the PeerAuthentication",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
