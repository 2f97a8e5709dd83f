package guard

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/registry"
	"weft.dev/weft/internal/registry/static"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newStore() *config.Store {
	g := &Guard{Registry: func(c *config.Snapshot) *registry.Snapshot { return static.Build(c, "") }}
	return config.NewStore(config.Options{Logger: slog.New(slog.DiscardHandler), Admit: g.Admit})
}

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
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: backend-v2}
spec: {address: 10.0.0.2, labels: {app: backend, version: v2}}
`

func dr(v2Label string, annotations string) string {
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: backend%s}
spec:
  host: backend
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: %s}}
`, annotations, v2Label)
}

func routes(v1, v2 int) string {
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend}
spec:
  hosts: [backend]
  http:
  - route:
    - {destination: {host: backend, subset: v1}, weight: %d}
    - {destination: {host: backend, subset: v2}, weight: %d}
`, v1, v2)
}

func files(kv ...string) map[string][]byte {
	m := map[string][]byte{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = []byte(kv[i+1])
	}
	return m
}

// diags renders a snapshot's errors and warnings as "severity code file path: message".
func diags(s *config.Snapshot) []string {
	var out []string
	for _, d := range s.Diagnostics {
		out = append(out, fmt.Sprintf("%s %s %s %s: %s", d.Severity, d.Code, d.File, d.Path, d.Message))
	}
	return out
}

func vsSpec(s *config.Snapshot, name string) string {
	for _, vs := range s.VirtualServices {
		if vs.Name == name {
			return fmt.Sprint(vs.Spec)
		}
	}
	return ""
}

func TestTypoHostIsHeldUntilItHasEndpoints(t *testing.T) {
	s := newStore()
	base := files("services.yaml", services, "dr.yaml", dr("v2", ""))
	if snap := s.Load(base); len(snap.Diagnostics) != 0 {
		t.Fatalf("base config: %v", diags(snap))
	}
	// A new VirtualService for backend whose destination is a typo would
	// take every request backend serves today.
	base["vs.yaml"] = []byte(typoVirtualService)
	snap := s.Load(base)
	if len(snap.VirtualServices) != 0 {
		t.Fatalf("the typo VirtualService is in force")
	}
	got := diags(snap)
	want := `error WF0401 vs.yaml spec.http[0].route[0].destination: held: this change would send 100% of the requests to backend.default.svc.cluster.local that reach VirtualService default/backend spec.http[0], its catch-all route to backendd.default.svc.cluster.local, which has no endpoints (no registry knows the host backendd.default.svc.cluster.local); the version in force keeps serving; this change applies by itself once the destination has endpoints, or at once with the annotation weft.dev/allow-unserved: "true"`
	if !contains(got, want) {
		t.Fatalf("diagnostics:\n%s\nwant:\n%s", strings.Join(got, "\n"), want)
	}
	// The host appears, with an endpoint: the held change applies by itself.
	base["backendd.yaml"] = []byte(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backendd}
spec:
  hosts: [backendd.default.svc.cluster.local]
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.9}]
`)
	snap = s.Load(base)
	if len(snap.VirtualServices) != 1 || hasCode(snap, config.CodeTrafficHeld) {
		t.Fatalf("once backendd has endpoints the change must apply: %v", diags(snap))
	}
}

func TestSubsetThatSelectsNothingIsHeld(t *testing.T) {
	s := newStore()
	base := files("services.yaml", services, "dr.yaml", dr("v2", ""), "vs.yaml", routes(90, 10))
	if snap := s.Load(base); len(snap.Diagnostics) != 0 {
		t.Fatalf("base config: %v", diags(snap))
	}
	base["dr.yaml"] = []byte(dr("v3", ""))
	snap := s.Load(base)
	want := `error WF0401 dr.yaml spec.subsets[1].labels: held: with this change subset v2 of backend.default.svc.cluster.local selects no endpoint (none of the 2 endpoints of backend.default.svc.cluster.local has the labels {version=v3}), and 10% of the requests to backend.default.svc.cluster.local that reach VirtualService default/backend spec.http[0], its catch-all route go to it; the version in force keeps serving; this change applies by itself once the destination has endpoints, or at once with the annotation weft.dev/allow-unserved: "true"`
	if got := diags(snap); !contains(got, want) {
		t.Fatalf("diagnostics:\n%s\nwant:\n%s", strings.Join(got, "\n"), want)
	}
	if l := snap.DestinationRules[0].Spec.GetSubsets()[1].GetLabels()["version"]; l != "v2" {
		t.Errorf("subset v2 selects version=%s, want the version in force (v2)", l)
	}
	// A workload with the new labels arrives: the change applies.
	base["v3.yaml"] = []byte(`apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: backend-v3}
spec: {address: 10.0.0.3, labels: {app: backend, version: v3}}
`)
	snap = s.Load(base)
	if hasCode(snap, config.CodeTrafficHeld) || snap.DestinationRules[0].Spec.GetSubsets()[1].GetLabels()["version"] != "v3" {
		t.Fatalf("the change must apply once v3 has an endpoint: %v", diags(snap))
	}
}

func TestOverrideAnnotationApplies(t *testing.T) {
	s := newStore()
	base := files("services.yaml", services, "dr.yaml", dr("v2", ""), "vs.yaml", routes(90, 10))
	s.Load(base)
	base["dr.yaml"] = []byte(dr("v3", ", annotations: {weft.dev/allow-unserved: \"true\"}"))
	snap := s.Load(base)
	if hasCode(snap, config.CodeTrafficHeld) || !hasCode(snap, config.CodeGuardOverridden) {
		t.Fatalf("want the change applied with a warning: %v", diags(snap))
	}
	if snap.DestinationRules[0].Spec.GetSubsets()[1].GetLabels()["version"] != "v3" {
		t.Error("the overridden change is not in force")
	}
}

// TestHarmlessChangesPass: a new subset with no endpoints is fine while no
// ordinary traffic goes to it — weight 0, or only behind a header match —
// and a host that serves nothing today has nothing to protect.
func TestHarmlessChangesPass(t *testing.T) {
	s := newStore()
	base := files("services.yaml", services, "dr.yaml", dr("v2", ""), "vs.yaml", routes(100, 0))
	s.Load(base)
	withV3 := strings.Replace(dr("v2", ""), "  - {name: v2", "  - {name: v3, labels: {version: v3}}\n  - {name: v2", 1)
	base["dr.yaml"] = []byte(withV3)
	base["vs.yaml"] = []byte(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend}
spec:
  hosts: [backend]
  http:
  - match: [{headers: {x-canary: {exact: "true"}}}]
    route: [{destination: {host: backend, subset: v3}}]
  - route:
    - {destination: {host: backend, subset: v1}, weight: 100}
    - {destination: {host: backend, subset: v3}, weight: 0}
`)
	snap := s.Load(base)
	if hasCode(snap, config.CodeTrafficHeld) || len(snap.VirtualServices) != 1 {
		t.Fatalf("harmless change held: %v", diags(snap))
	}
	// A new host with no endpoints yet serves nothing today.
	base["new.yaml"] = []byte(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: payments}
spec:
  hosts: [payments]
  http: [{route: [{destination: {host: payments}}]}]
`)
	if snap := s.Load(base); hasCode(snap, config.CodeTrafficHeld) || len(snap.VirtualServices) != 2 {
		t.Fatalf("a route for a host that serves nothing today was held: %v", diags(snap))
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func hasCode(s *config.Snapshot, c config.Code) bool {
	for _, d := range s.Diagnostics {
		if d.Code == c {
			return true
		}
	}
	return false
}

// TestGatewayRouteIsGuarded: a change to a VirtualService bound only to a
// Gateway (which sidecars never use) that would send the edge's traffic
// to a destination with no endpoints is held as on sidecars; a route
// behind another gateway's match, or a new binding, is not.
func TestGatewayRouteIsGuarded(t *testing.T) {
	const gateways = `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: ingress}
spec:
  selector: {app: edge}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*/shop.example.com"]}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: other, namespace: ingress}
spec:
  selector: {app: other}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*/shop.example.com"]}]
`
	edgeVS := func(host, otherHost string) string {
		return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop}
spec:
  hosts: [shop.example.com]
  gateways: [ingress/edge, ingress/other]
  http:
  - match: [{gateways: [ingress/other]}]
    route: [{destination: {host: %s}}]
  - route: [{destination: {host: %s}}]
`, otherHost, host)
	}
	s := newStore()
	base := files("services.yaml", services, "gw.yaml", gateways, "dr.yaml", dr("v2", ""), "vs.yaml", edgeVS("backend", "backend"))
	if snap := s.Load(base); len(snap.Diagnostics) != 0 {
		t.Fatalf("base config: %v", diags(snap))
	}
	// A typo in the host of the route every request at ingress/edge takes.
	base["vs.yaml"] = []byte(edgeVS("backendd", "backend"))
	snap := s.Load(base)
	want := `error WF0401 vs.yaml spec.http[1].route[0].destination: held: this change would send 100% of the requests to shop.example.com at gateway ingress/edge that reach VirtualService default/shop spec.http[1], its catch-all route to backendd.default.svc.cluster.local, which has no endpoints (no registry knows the host backendd.default.svc.cluster.local); the version in force keeps serving; this change applies by itself once the destination has endpoints, or at once with the annotation weft.dev/allow-unserved: "true"`
	if got := diags(snap); !contains(got, want) {
		t.Fatalf("diagnostics:\n%s\nwant:\n%s", strings.Join(got, "\n"), want)
	}
	if strings.Contains(vsSpec(snap, "shop"), "backendd") {
		t.Errorf("the version in force must keep serving, got %s", vsSpec(snap, "shop"))
	}
	// The same typo on the route only ingress/other's match takes is held
	// for that gateway, and said so.
	base["vs.yaml"] = []byte(edgeVS("backend", "backendd"))
	snap = s.Load(base)
	if got := diags(snap); len(got) != 1 || !strings.Contains(got[0], "at gateway ingress/other that reach VirtualService default/shop spec.http[0]") {
		t.Fatalf("diagnostics:\n%s", strings.Join(got, "\n"))
	}
	// A VirtualService newly bound to a gateway serves nothing there yet.
	base["vs.yaml"] = []byte(edgeVS("backend", "backend"))
	base["new.yaml"] = []byte(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: new}
spec:
  hosts: [new.example.com]
  gateways: [ingress/edge]
  http: [{route: [{destination: {host: nowhere.example.com}}]}]
`)
	if snap := s.Load(base); hasCode(snap, config.CodeTrafficHeld) || len(snap.VirtualServices) != 2 {
		t.Fatalf("a new gateway binding was held: %v", diags(snap))
	}
}

// TestGuardKeepsOnlyInForceAndCandidate: judging a run of changes keeps
// the meshes of the config in force and of the last candidate, no older
// generation (each holds a whole config and registry), and a rejected
// candidate does not make the guard rebuild the mesh in force.
func TestGuardKeepsOnlyInForceAndCandidate(t *testing.T) {
	// The same registry for the same config, as the control plane's memo.
	regs := map[*config.Snapshot]*registry.Snapshot{}
	g := &Guard{Registry: func(c *config.Snapshot) *registry.Snapshot {
		if regs[c] == nil {
			regs[c] = static.Build(c, "")
		}
		return regs[c]
	}}
	s := config.NewStore(config.Options{Logger: slog.New(slog.DiscardHandler), Admit: g.Admit})
	base := files("services.yaml", services, "dr.yaml", dr("v2", ""))
	s.Load(base)
	for w := 10; w <= 50; w += 10 {
		base["vs.yaml"] = []byte(routes(100-w, w))
		if snap := s.Load(base); vsSpec(snap, "backend") == "" {
			t.Fatalf("weight %d: not applied: %v", w, diags(snap))
		}
	}
	if len(g.meshes) != keptMeshes {
		t.Fatalf("%d meshes kept, want %d", len(g.meshes), keptMeshes)
	}
	for _, m := range g.meshes[len(g.meshes):cap(g.meshes)] {
		if m != nil {
			t.Fatal("a dropped mesh is still reachable past the slice's end")
		}
	}
	inForce := g.meshes[0]
	if inForce.Config != s.Snapshot() {
		t.Error("the newest mesh kept is not the config in force")
	}

	// A rejected candidate, then another change: the mesh in force (the
	// load judged again without the held change) is not built again.
	base["vs.yaml"] = []byte(typoVirtualService)
	if snap := s.Load(base); !hasCode(snap, config.CodeTrafficHeld) {
		t.Fatalf("the typo was not held: %v", diags(snap))
	}
	inForce = g.meshes[0]
	if inForce.Config != s.Snapshot() {
		t.Fatal("after a held change, the newest mesh kept is not the config in force")
	}
	base["vs.yaml"] = []byte(routes(40, 60))
	s.Load(base)
	if g.meshes[1] != inForce {
		t.Error("the mesh in force was built again to judge the next change")
	}
}

// typoVirtualService is a new VirtualService for backend whose
// destination is a typo: it would take every request backend serves
// today.
const typoVirtualService = `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend}
spec:
  hosts: [backend]
  http:
  - route:
    - destination: {host: backendd}
`
