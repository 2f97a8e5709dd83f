package main

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// TestLeanImportGraph keeps the proxy binary free of Kubernetes, Istio
// config and Consul packages: a sidecar's memory is a product feature.
func TestLeanImportGraph(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := exec.LookPath(goBin); err != nil {
		if goBin, err = exec.LookPath("go"); err != nil {
			t.Skipf("no go tool: %v", err)
		}
	}
	out, err := exec.Command(goBin, "list", "-deps", "weft.dev/weft/cmd/weft-proxy").Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	for _, must := range []string{"weft.dev/weft/internal/proxy/dataplane", "weft.dev/weft/internal/proxy/xdsclient", "weft.dev/weft/cmd/weft-proxy"} {
		if !slices.Contains(deps, must) {
			t.Errorf("dependency list (%d packages) lacks %s: the check would pass vacuously", len(deps), must)
		}
	}
	forbidden := func(p string) bool {
		return strings.HasPrefix(p, "k8s.io/") || strings.HasPrefix(p, "istio.io/client-go") ||
			strings.HasPrefix(p, "istio.io/api") || strings.Contains(p, "hashicorp/consul") ||
			slices.Contains([]string{"config", "registry", "mesh", "xds/generate", "xds/server", "controlplane"},
				strings.TrimPrefix(p, "weft.dev/weft/internal/"))
	}
	for _, p := range deps {
		if forbidden(p) || strings.HasPrefix(p, "weft.dev/weft/internal/registry/") || strings.HasPrefix(p, "weft.dev/weft/internal/config/") {
			t.Errorf("weft-proxy depends on %s", p)
		}
	}
}
