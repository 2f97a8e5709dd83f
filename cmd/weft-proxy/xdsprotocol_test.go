package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"weft.dev/weft/internal/proxy/xdsclient"
)

// --xds-protocol picks the ADS variant: delta by default, sotw on request,
// anything else is a usage error naming the flag.
func TestXDSProtocolFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want xdsclient.Protocol
	}{
		{nil, xdsclient.ProtocolDelta},
		{[]string{"--xds-protocol", "sotw"}, xdsclient.ProtocolSotW},
		{[]string{"--xds-protocol", "DELTA"}, xdsclient.ProtocolDelta},
	} {
		o, _ := parse(t, append([]string{"--workload", "w", "--xds-plaintext"}, tc.args...)...)
		if o.XDS.Protocol != tc.want {
			t.Errorf("%v: protocol %q, want %q", tc.args, o.XDS.Protocol, tc.want)
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"--workload", "w", "--xds-plaintext", "--xds-protocol", "incremental"}, &stdout, &stderr); code != 2 {
		t.Errorf("exit %d, want 2", code)
	}
	if want := `--xds-protocol "incremental": want delta or sotw`; !strings.Contains(stderr.String(), want) {
		t.Errorf("stderr %q does not say %q", stderr.String(), want)
	}
}
