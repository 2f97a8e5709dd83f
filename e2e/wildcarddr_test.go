package e2e

import (
	"fmt"
	"testing"
)

// TestMeshDefaultDestinationRule: a DestinationRule in the root namespace
// for "*.local" is the mesh's default: its subsets serve every service
// without a rule of its own. A rule in the service's namespace then
// replaces it whole (here it gives subset v2 other labels), and deleting
// that rule brings the default back, with real traffic each time.
func TestMeshDefaultDestinationRule(t *testing.T) {
	m := NewMesh(t)
	m.Service("backend", "HTTP", "v1", "v2")
	m.WriteConfig("mesh-default.yaml", `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: default, namespace: istio-system}
spec:
  host: "*.local"
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend, namespace: default}
spec:
  hosts: [backend]
  http:
  - route:
    - destination: {host: backend, subset: v2}
`)
	c := newClient()
	front := m.Client("frontend")
	const host = "backend.default.svc.cluster.local"
	waitVersion(t, c, front, host, nil, "v2")
	if got := Tally(t, c, front, host, nil, 50, byVersion); got["v2"] != 50 {
		t.Fatalf("want all 50 on v2 (the mesh default's subset), got %v", got)
	}

	// The service's own rule wins over the mesh default, whole.
	m.WriteConfig("backend-rule.yaml", `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: backend, namespace: default}
spec:
  host: backend
  subsets:
  - {name: v2, labels: {version: v1}}
`)
	waitVersion(t, c, front, host, nil, "v1")
	if got := Tally(t, c, front, host, nil, 50, byVersion); got["v1"] != 50 {
		t.Fatalf("want all 50 on v1 (the service's own rule relabels v2), got %v", got)
	}
	if logs := m.Logs(); grepLines(logs, "istio-system/default") != "" {
		t.Errorf("the overridden mesh default was reported as a problem:\n%s", grepLines(logs, "istio-system/default"))
	}

	m.WriteConfig("backend-rule.yaml", "")
	waitVersion(t, c, front, host, nil, "v2")
}

// TestClientSideDestinationRule: Istio's client-side DestinationRule. The
// backend's team routes everyone to subset v2; team-a keeps a rule of its
// own for the backend (exportTo: ["."]) in which v2 means version v1.
// Only team-a's sidecars use it; removing it brings them back to the
// service namespace's rule.
func TestClientSideDestinationRule(t *testing.T) {
	m := NewMesh(t)
	m.Service("backend", "HTTP", "v1", "v2")
	m.WriteConfig("backend-routes.yaml", fmt.Sprintf(backendRoutes, 0, 100)) // canary_test.go: everyone to v2
	m.WriteConfig("team-a.yaml", `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: backend-for-team-a, namespace: team-a}
spec:
  host: backend.default.svc.cluster.local
  exportTo: ["."]
  subsets:
  - {name: v2, labels: {version: v1}}
`)
	c := newClient()
	front := m.Client("frontend")
	teamA := m.ClientIn("team-a-client", "team-a")
	const host = "backend.default.svc.cluster.local"
	waitVersion(t, c, teamA, host, nil, "v1")
	waitVersion(t, c, front, host, nil, "v2")
	if got := Tally(t, c, teamA, host, nil, 50, byVersion); got["v1"] != 50 {
		t.Fatalf("team-a's clients: want all 50 on v1 (their own rule's v2), got %v", got)
	}
	if got := Tally(t, c, front, host, nil, 50, byVersion); got["v2"] != 50 {
		t.Fatalf("default's clients: want all 50 on v2 (team-a's rule is exported only to team-a), got %v", got)
	}
	if logs := m.Logs(); grepLines(logs, "backend-for-team-a") != "" {
		t.Errorf("the client-side rule was reported as a problem:\n%s", grepLines(logs, "backend-for-team-a"))
	}

	m.WriteConfig("team-a.yaml", "")
	waitVersion(t, c, teamA, host, nil, "v2")
}

// TestDestinationRuleWorkloadSelector: a rule with a workloadSelector
// governs only the sidecars it selects in its namespace. team-a's batch
// client gets a rule in which v2 means version v1; team-a's web client,
// not selected, keeps the service's rule.
func TestDestinationRuleWorkloadSelector(t *testing.T) {
	m := NewMesh(t)
	m.Service("backend", "HTTP", "v1", "v2")
	m.WriteConfig("backend-routes.yaml", fmt.Sprintf(backendRoutes, 0, 100)) // canary_test.go: everyone to v2
	m.WriteConfig("team-a.yaml", `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: backend-for-batch, namespace: team-a}
spec:
  host: backend.default.svc.cluster.local
  workloadSelector: {matchLabels: {app: batch}}
  exportTo: ["."]
  subsets:
  - {name: v2, labels: {version: v1}}
`)
	c := newClient()
	batch := m.ClientIn("batch", "team-a")
	web := m.ClientIn("web", "team-a")
	const host = "backend.default.svc.cluster.local"
	waitVersion(t, c, batch, host, nil, "v1")
	if got := Tally(t, c, batch, host, nil, 50, byVersion); got["v1"] != 50 {
		t.Fatalf("selected client: want all 50 on v1 (its rule's v2), got %v", got)
	}
	if got := Tally(t, c, web, host, nil, 50, byVersion); got["v2"] != 50 {
		t.Fatalf("unselected client of the same namespace: want all 50 on v2, got %v", got)
	}
}
