package testenv

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// The Prometheus server and promtool of the Debian package "prometheus"
// (.ci/run installs it).
const (
	PrometheusBin = "/usr/bin/prometheus"
	PromtoolBin   = "/usr/bin/promtool"
)

// prometheusRequired: CI sets WEFT_REQUIRE_PROMETHEUS=1 (and
// WEFT_REQUIRE_TOOLS=1); then a missing binary fails the test.
func prometheusRequired() bool {
	return Required() || os.Getenv("WEFT_REQUIRE_PROMETHEUS") == "1"
}

func debianBinary(t testing.TB, path string) string {
	t.Helper()
	if fi, err := os.Stat(path); err == nil && !fi.IsDir() {
		return path
	}
	msg := "testenv: " + path + " not found; install the Debian package prometheus (apt-get install prometheus)"
	if prometheusRequired() {
		t.Fatalf("%s (WEFT_REQUIRE_PROMETHEUS=1 or WEFT_REQUIRE_TOOLS=1, so this fails instead of skipping)", msg)
	}
	t.Skip(msg)
	return ""
}

// Promtool returns the path of promtool; it skips the test when it is
// not installed, or fails it where Prometheus is required (CI).
func Promtool(t testing.TB) string { t.Helper(); return debianBinary(t, PromtoolBin) }

// Prometheus returns the path of the Prometheus server; it skips the
// test when it is not installed, or fails it where Prometheus is
// required (CI).
func Prometheus(t testing.TB) string { t.Helper(); return debianBinary(t, PrometheusBin) }

// RunPromtool runs promtool with args and stdin, bounded by a minute, and
// returns its combined output and exit code; it fails the test only
// when promtool cannot be run at all.
func RunPromtool(t testing.TB, stdin string, args ...string) (string, int) {
	t.Helper()
	bin := Promtool(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			t.Fatalf("running promtool %v: %v", args, err)
		}
		return string(out), exit.ExitCode()
	}
	return string(out), 0
}

// LintMetrics runs `promtool check metrics` on a Prometheus text
// exposition and fails the test on a parse error or on any finding but
// the ones kept on purpose: Istio's and Envoy's metric names are kept
// bit for bit so their dashboards and alerts work on Weft, so Envoy's and
// istiod's counters have no _total suffix (and Envoy's gauge
// membership_total has one), and Istio's latency histogram is in
// milliseconds. Tolerated findings are logged.
//
// promtool (2.42) exits 0 when clean, 1 when the exposition does not
// parse, 3 for lint findings ("<metric> <advice>", one per line).
func LintMetrics(t testing.TB, name, exposition string) {
	t.Helper()
	out, code := RunPromtool(t, exposition, "check", "metrics")
	var tolerated, bad []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		switch {
		case line == "":
		case ToleratedLint(line):
			tolerated = append(tolerated, line)
		default:
			bad = append(bad, line)
		}
	}
	if len(tolerated) > 0 {
		t.Logf("promtool on %s, tolerated (Istio's and Envoy's names):\n  %s", name, strings.Join(tolerated, "\n  "))
	}
	if len(bad) > 0 || code != 0 && (code != 3 || len(tolerated) == 0) {
		t.Fatalf("promtool check metrics on %s: exit %d:\n%s", name, code, out)
	}
}

// ToleratedLint reports whether a promlint finding is one Weft accepts
// on purpose (see LintMetrics).
func ToleratedLint(finding string) bool {
	if finding == `istio_request_duration_milliseconds use base unit "seconds" instead of "milliseconds"` {
		return true
	}
	// Envoy's counters have no _total suffix; its gauge
	// membership_total has one. Neither have istiod's counters
	// (pilot_xds_pushes, pilot_total_xds_rejects).
	if strings.HasPrefix(finding, "pilot_") && strings.HasSuffix(finding, ` counter metrics should have "_total" suffix`) {
		return true
	}
	return strings.HasPrefix(finding, "envoy_") && (strings.HasSuffix(finding, ` counter metrics should have "_total" suffix`) ||
		strings.HasSuffix(finding, ` non-counter metrics should not have "_total" suffix`))
}
