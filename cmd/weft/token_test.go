package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"weft.dev/weft/internal/controlplane"
)

// TestToken: weft token asks the running control plane for a token and
// the root, as docs/security.md shows.
func TestToken(t *testing.T) {
	cp, err := controlplane.New(controlplane.Options{ConfigDir: t.TempDir(), XDSAddress: "127.0.0.1:0", StatusAddress: "127.0.0.1:0",
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cp.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	rootFile := filepath.Join(t.TempDir(), "root-cert.pem")
	out, err := run(t, "token", "--namespace", "default", "--service-account", "backend", "--ttl", "5m",
		"--control-plane", cp.StatusAddr().String(), "--root-cert-out", rootFile)
	if err != nil {
		t.Fatalf("weft token: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || strings.Count(lines[0], ".") != 2 || !strings.HasPrefix(lines[1], "bootstrap token for spiffe://cluster.local/ns/default/sa/backend, single use, expires ") {
		t.Errorf("weft token printed:\n%s", out)
	}
	if root, err := os.ReadFile(rootFile); err != nil || string(root) != string(cp.RootCertPEM()) {
		t.Errorf("--root-cert-out: %v", err)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"token", "--namespace", "default"}, "--namespace and --service-account are required"},
		{[]string{"token", "--namespace", "default", "--service-account", "a", "--ttl", "48h", "--control-plane", cp.StatusAddr().String()}, "want between 1s and 24h0m0s"},
		{[]string{"token", "--namespace", "default", "--service-account", "a", "--control-plane", "127.0.0.1:1"}, "control plane 127.0.0.1:1: "},
	} {
		if out, err := run(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q\n%s", tc.args, err, tc.want, out)
		}
	}
}

func TestServeRefusesShortCertTTL(t *testing.T) {
	_, err := run(t, "serve", "--config", "examples/canary", "--workload-cert-ttl", "30s", "--xds-address", "127.0.0.1:0", "--status-address", "-")
	if err == nil || !strings.Contains(err.Error(), "--workload-cert-ttl 30s: must be at least 1m0s") {
		t.Errorf("serve --workload-cert-ttl 30s: %v", err)
	}
}
