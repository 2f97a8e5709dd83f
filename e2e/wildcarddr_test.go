package e2e

import "testing"

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
