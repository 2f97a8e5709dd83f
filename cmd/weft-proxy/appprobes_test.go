package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"weft.dev/weft/internal/proxy"
	"weft.dev/weft/internal/proxy/probes"
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

// TestAppMetricsEnvNotFatal: WEFT_PROMETHEUS_ANNOTATIONS is copied from a
// pod's prometheus.io/* annotations; a value the sidecar cannot use (a
// named port) leaves the app's metrics out, with the reason kept for the
// log, and does not stop the sidecar from starting.
func TestAppMetricsEnvNotFatal(t *testing.T) {
	t.Setenv(probes.MetricsEnv, `{"scrape":"true","port":"http-metrics"}`)
	a, err := appProbesConfig("127.0.0.1:0")
	if err != nil {
		t.Fatalf("a bad %s stopped the sidecar: %v", probes.MetricsEnv, err)
	}
	if a.metrics != nil || a.metricsErr == nil || !strings.Contains(a.metricsErr.Error(), `port "http-metrics" is not a port`) {
		t.Errorf("metrics %+v, reason %v", a.metrics, a.metricsErr)
	}
	t.Setenv(probes.MetricsEnv, `{"port":"9090"}`)
	if a, err := appProbesConfig("127.0.0.1:0"); err != nil || a.metrics == nil || a.metrics.Port != 9090 || a.metricsErr != nil {
		t.Errorf("a good value: %+v %v", a, err)
	}
}
