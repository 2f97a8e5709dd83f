package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"weft.dev/weft/internal/proxy/capture"
)

// TestCaptureDryRun checks that weft-proxy capture --dry-run prints the
// capture package's ruleset for both families, with the flags applied.
func TestCaptureDryRun(t *testing.T) {
	var stdout, stderr bytes.Buffer
	args := []string{"capture", "--dry-run", "--exclude-outbound-ports", "3306", "--include-inbound-ports", "9080,8080",
		"--exclude-outbound-ip-ranges", "169.254.169.254", "--proxy-gid", ""}
	if code := run(context.Background(), args, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	c := capture.Default()
	c.ExcludeOutboundPorts = []uint16{3306}
	c.IncludeInbound = capture.Ports{Ports: []uint16{8080, 9080}}
	ex, _ := capture.ParseRanges("169.254.169.254/32")
	c.ExcludeOutbound = ex.Prefixes
	c.ProxyGIDs = nil
	want := "# IPv4 (iptables-restore --noflush)\n" + capture.Ruleset(c, capture.IPv4) +
		"# IPv6 (iptables-restore --noflush)\n" + capture.Ruleset(c, capture.IPv6)
	if stdout.String() != want {
		t.Errorf("dry-run printed:\n%s\nwant:\n%s", stdout.String(), want)
	}
	if stderr.Len() != 0 {
		t.Errorf("stderr: %q", stderr.String())
	}
}

func TestCaptureBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--proxy-uid", "x"}, `--proxy-uid "x": "x" is not a numeric id`},
		{[]string{"--proxy-uid", "", "--proxy-gid", ""}, "no proxy UID and no proxy GID"},
		{[]string{"--include-outbound-ip-ranges", "10.0.0.0/40"}, `--include-outbound-ip-ranges: "10.0.0.0/40"`},
		{[]string{"--exclude-outbound-ip-ranges", "*"}, `--exclude-outbound-ip-ranges "*": not allowed`},
		{[]string{"--include-inbound-ports", "http"}, `--include-inbound-ports: "http": not a port`},
		{[]string{"--exclude-inbound-ports", "*"}, `--exclude-inbound-ports "*": not allowed`},
		{[]string{"--exclude-outbound-ports", "70000"}, `--exclude-outbound-ports: "70000": not a port`},
		{[]string{"--include-outbound-ports", "*"}, `--include-outbound-ports "*": not allowed`},
		{[]string{"--exclude-interfaces", "eth0,a b"}, `interface "a b": not a network interface name`},
		{[]string{"--outbound-port", "15006"}, "outbound and inbound ports are both 15006"},
		{[]string{"--outbound-port", "99999"}, `invalid argument "99999" for "--outbound-port"`},
		{[]string{"--iptables-backend", "iptables"}, `--iptables-backend: "iptables": want auto, nft or legacy`},
		{[]string{"--log-level", "loud"}, `--log-level "loud"`},
		{[]string{"extra"}, `capture: unexpected arguments ["extra"]`},
	} {
		var stdout, stderr bytes.Buffer
		args := append([]string{"capture", "--dry-run"}, tc.args...)
		if code := run(context.Background(), args, &stdout, &stderr); code != 2 {
			t.Errorf("%v: exit %d, want 2", tc.args, code)
		}
		if !strings.HasPrefix(stderr.String(), "weft-proxy: ") || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%v: stderr %q does not say %q", tc.args, stderr.String(), tc.want)
		}
		if strings.Count(stderr.String(), "\n") != 1 || stdout.Len() != 0 {
			t.Errorf("%v: want one line on stderr and nothing on stdout, got %q / %q", tc.args, stderr.String(), stdout.String())
		}
	}
}
