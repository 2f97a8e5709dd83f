package controlplane

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"weft.dev/weft/internal/testenv"
)

// TestConflictMetrics: a VirtualService that loses its host to another
// is counted under istiod's name and Weft's code, and the control
// plane's whole exposition passes promtool.
func TestConflictMetrics(t *testing.T) {
	dir := t.TempDir()
	second := `
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-again, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
`
	if err := os.WriteFile(filepath.Join(dir, "mesh.yaml"), []byte(meshYAML+second), 0o644); err != nil {
		t.Fatal(err)
	}
	cp, err := New(Options{
		ConfigDir: dir, XDSAddress: "127.0.0.1:0", StatusAddress: "127.0.0.1:0", CADir: t.TempDir(),
		Debounce: time.Millisecond, DebounceMax: 10 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cp.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	base := "http://" + cp.StatusAddr().String()
	var metrics string
	for {
		metrics = get(t, ctx, base+"/metrics")
		if strings.Contains(metrics, "\npilot_vservice_dup_domain 1\n") {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pilot_vservice_dup_domain never 1:\n%s", metrics)
		case <-time.After(10 * time.Millisecond):
		}
	}
	if !strings.Contains(metrics, `weft_config_conflicts{code="WF0201"} 1`) {
		t.Errorf("/metrics lacks weft_config_conflicts{code=\"WF0201\"} 1:\n%s", metrics)
	}
	testenv.LintMetrics(t, "control plane /metrics", metrics)
}
