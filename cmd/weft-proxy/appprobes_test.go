package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"weft.dev/weft/internal/proxy"
)

// TestAppProbesFlags: a bad WEFT_APP_PROBERS is a usage error naming the
// variable; a good one serves next to the proxy and stops with it.
func TestAppProbesFlags(t *testing.T) {
	t.Setenv("WEFT_APP_PROBERS", `{"/app-health/app/readyz": {"tcpSocket": {"port": 0}}}`)
	var stderr bytes.Buffer
	if code := run(context.Background(), []string{"--workload", "w", "--xds-plaintext", "--app-probes-address", "127.0.0.1:0"}, &bytes.Buffer{}, &stderr); code != exitBadFlag ||
		!strings.Contains(stderr.String(), "WEFT_APP_PROBERS") {
		t.Errorf("bad probes: exit %d, stderr %q", code, stderr.String())
	}
	t.Setenv("WEFT_APP_PROBERS", `{"/app-health/app/readyz": {"tcpSocket": {"port": 8080}}}`)
	served := false
	cmd := newRootCmd(&stderr, func(context.Context, proxy.Options) error { served = true; return nil })
	cmd.SetArgs([]string{"--workload", "w", "--xds-plaintext", "--app-probes-address", "127.0.0.1:0"})
	if err := cmd.Execute(); err != nil || !served {
		t.Errorf("good probes: %v, served %v", err, served)
	}
	cmd = newRootCmd(&stderr, func(context.Context, proxy.Options) error { return nil })
	cmd.SetArgs([]string{"--workload", "w", "--xds-plaintext", "--app-probes-address", "nowhere"})
	if err := cmd.Execute(); err == nil || !strings.Contains(err.Error(), "--app-probes-address") {
		t.Errorf("bad address: %v", err)
	}
}
