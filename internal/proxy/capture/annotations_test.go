package capture

import (
	"slices"
	"strings"
	"testing"
)

func TestArgsFromAnnotations(t *testing.T) {
	got, err := ArgsFromAnnotations(map[string]string{
		"traffic.sidecar.istio.io/excludeOutboundIPRanges": "169.254.169.254/32",
		"traffic.sidecar.istio.io/includeInboundPorts":     "8080,9080",
		"traffic.sidecar.istio.io/excludeOutboundPorts":    "3306",
		"sidecar.istio.io/interceptionMode":                "REDIRECT",
		"unrelated.example.com/x":                          "y",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"--exclude-outbound-ip-ranges", "169.254.169.254/32", "--exclude-outbound-ports", "3306", "--include-inbound-ports", "8080,9080"}
	if !slices.Equal(got, want) {
		t.Errorf("ArgsFromAnnotations = %q, want %q", got, want)
	}
	for _, tc := range []struct {
		key, value, err string
	}{
		{"traffic.sidecar.istio.io/excludeOutboundIPRanges", "*", `excludeOutboundIPRanges="*": "*" is not allowed`},
		{"traffic.sidecar.istio.io/includeOutboundIPRanges", "10.0.0.0/99", `includeOutboundIPRanges="10.0.0.0/99"`},
		{"traffic.sidecar.istio.io/excludeInboundPorts", "ssh", `excludeInboundPorts="ssh": "ssh": not a port`},
		{"traffic.sidecar.istio.io/excludeInterfaces", "eth0,a b", `interface "a b"`},
		{"sidecar.istio.io/interceptionMode", "TPROXY", "only REDIRECT is supported"},
		{"traffic.sidecar.istio.io/kubevirtInterfaces", "net1", "not supported"},
	} {
		_, err := ArgsFromAnnotations(map[string]string{tc.key: tc.value})
		if err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s=%q: error %v, want one with %q", tc.key, tc.value, err, tc.err)
		}
	}
}
