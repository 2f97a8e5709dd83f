package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestVirtualServiceExportToOverride: Istio's consumer override. The
// backend's team routes it to v1 for everyone (weights 100/0); team-a keeps a
// VirtualService of its own (exportTo: ["."]) sending its clients to v2.
// Only team-a's sidecars use it; removing it brings them back to v1.
func TestVirtualServiceExportToOverride(t *testing.T) {
	m := NewMesh(t)
	m.Service("backend", "HTTP", "v1", "v2")
	m.WriteConfig("backend-routes.yaml", fmt.Sprintf(backendRoutes, 100, 0)) // canary_test.go: everyone to v1
	m.WriteConfig("team-a.yaml", `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend-for-team-a, namespace: team-a}
spec:
  hosts: [backend.default.svc.cluster.local]
  exportTo: ["."]
  http:
  - route:
    - destination: {host: backend.default.svc.cluster.local, subset: v2}
`)
	c := newClient()
	front := m.Client("frontend")
	teamA := m.ClientIn("team-a-client", "team-a")
	const host = "backend.default.svc.cluster.local"
	waitVersion(t, c, teamA, host, nil, "v2")
	waitVersion(t, c, front, host, nil, "v1")
	if got := Tally(t, c, teamA, host, nil, 100, byVersion); got["v2"] != 100 {
		t.Fatalf("team-a's clients: want all 100 on v2 (their own VirtualService), got %v", got)
	}
	if got := Tally(t, c, front, host, nil, 100, byVersion); got["v1"] != 100 {
		t.Fatalf("default's clients: want all 100 on v1 (team-a's VirtualService is exported only to team-a), got %v", got)
	}
	if logs := m.Logs(); grepLines(logs, "team-a") != "" {
		t.Errorf("the override was reported as a problem:\n%s", grepLines(logs, "team-a"))
	}

	// Without the override team-a's clients follow the backend's route.
	m.WriteConfig("team-a.yaml", "")
	waitVersion(t, c, teamA, host, nil, "v1")
}

// TestServiceEntryExportTo: a ServiceEntry exported only to its own
// namespace (exportTo: ["."]) is a service for the sidecars of that
// namespace and unknown to the others; exported everywhere again, it is
// reachable from both.
func TestServiceEntryExportTo(t *testing.T) {
	m := NewMesh(t)
	m.Service("backend", "HTTP", "v1")
	services, err := os.ReadFile(filepath.Join(m.Dir, "backend-services.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	public := string(services)
	private := strings.Replace(public, "  location: MESH_INTERNAL\n", "  location: MESH_INTERNAL\n  exportTo: [\".\"]\n", 1)
	if private == public {
		t.Fatal("the harness's ServiceEntry changed shape: no location line to add exportTo after")
	}
	c := newClient()
	front := m.Client("frontend") // namespace default, as the ServiceEntry
	other := m.ClientIn("team-a-client", "team-a")
	const host = "backend.default.svc.cluster.local"
	waitVersion(t, c, other, host, nil, "v1")

	m.WriteConfig("backend-services.yaml", private)
	Eventually(t, 30*time.Second, "backend unknown to team-a", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		code, r, err := Get(ctx, c, other, host, "/", nil)
		if err == nil && code == 200 {
			return fmt.Errorf("still answered by %s", r.Name)
		}
		return nil
	})
	waitVersion(t, c, front, host, nil, "v1")
	if got := Tally(t, c, front, host, nil, 50, byVersion); got["v1"] != 50 {
		t.Fatalf("default's clients: want all 50 answered, got %v", got)
	}

	m.WriteConfig("backend-services.yaml", public)
	waitVersion(t, c, other, host, nil, "v1")
}
