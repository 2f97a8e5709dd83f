package config

import (
	"log/slog"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testOptions know every cluster-local host except those named unknown*.
func testOptions() Options {
	return Options{
		Logger: slog.New(slog.DiscardHandler),
		KnownHost: func(fqdn string) bool {
			return strings.HasSuffix(fqdn, ".svc.cluster.local") && !strings.HasPrefix(fqdn, "unknown")
		},
	}
}

func files(kv ...string) map[string][]byte {
	m := map[string][]byte{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = []byte(kv[i+1])
	}
	return m
}

// diagStrings renders the snapshot's diagnostics without their line and
// column (TestPositions checks those), one per line.
func diagStrings(s *Snapshot) []string {
	var out []string
	for _, d := range s.Diagnostics {
		d.Line, d.Column = 0, 0
		out = append(out, string(d.Severity)+": "+d.Error())
	}
	return out
}

func keys(s *Snapshot) []string {
	var out []string
	for _, r := range s.VirtualServices {
		out = append(out, r.Key())
	}
	for _, r := range s.DestinationRules {
		out = append(out, r.Key())
	}
	for _, r := range s.ServiceEntries {
		out = append(out, r.Key())
	}
	for _, r := range s.WorkloadEntries {
		out = append(out, r.Key())
	}
	for _, r := range s.PeerAuthentications {
		out = append(out, r.Key())
	}
	for _, r := range s.AuthorizationPolicies {
		out = append(out, r.Key())
	}
	for _, r := range s.RequestAuthentications {
		out = append(out, r.Key())
	}
	return out
}

// checkStrings fails the test unless got equals want, showing both in full.
func checkStrings(t *testing.T, what string, got, want []string) {
	t.Helper()
	if slices.Equal(got, want) {
		return
	}
	t.Errorf("%s:\ngot:\n\t%s\nwant:\n\t%s", what, strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
}
