package main

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// TestNoTestOnlyPackagesLinked keeps the test harnesses out of the
// binaries: internal/testenv (which starts kube-apiserver, Consul and
// network namespaces) and the proxy's test fixtures are for tests only,
// and neither binary may link k8s.io/kubernetes or hashicorp/consul
// itself (only their client libraries, in weft).
func TestNoTestOnlyPackagesLinked(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	for _, cmd := range []string{"weft.dev/weft/cmd/weft", "weft.dev/weft/cmd/weft-proxy"} {
		out, err := exec.Command(goBin, "list", "-deps", cmd).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", cmd, err)
		}
		deps := strings.Fields(string(out))
		if !slices.Contains(deps, cmd) {
			t.Fatalf("go list -deps %s does not list the command itself", cmd)
		}
		for _, p := range deps {
			switch {
			case p == "weft.dev/weft/internal/testenv", p == "weft.dev/weft/internal/proxy/proxytest",
				strings.HasPrefix(p, "k8s.io/kubernetes/"),
				strings.HasPrefix(p, "github.com/hashicorp/consul/") && !strings.HasPrefix(p, "github.com/hashicorp/consul/api"):
				t.Errorf("%s links %s", cmd, p)
			}
		}
	}
}
