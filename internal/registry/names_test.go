package registry_test

import (
	"slices"
	"testing"

	"weft.dev/weft/internal/registry"
)

func TestResolveHost(t *testing.T) {
	knownSet := func(fqdns ...string) func(string) bool {
		return func(fqdn string) bool { return slices.Contains(fqdns, fqdn) }
	}
	tests := []struct {
		name   string
		host   string
		ns     string
		suffix string
		known  func(string) bool
		want   string
	}{
		{"short name in own namespace", "reviews", "default", "", nil, "reviews.default.svc.cluster.local"},
		{"short name in another namespace", "reviews", "prod", "", nil, "reviews.prod.svc.cluster.local"},
		{"short name with custom suffix", "reviews", "prod", "corp.local", nil, "reviews.prod.svc.corp.local"},
		{"explicit default suffix", "reviews", "default", "cluster.local", nil, "reviews.default.svc.cluster.local"},
		{"name.ns without known is left alone", "reviews.prod", "default", "", nil, "reviews.prod"},
		{"name.ns known", "reviews.prod", "default", "", knownSet("reviews.prod.svc.cluster.local"), "reviews.prod.svc.cluster.local"},
		{"name.ns unknown", "reviews.prod", "default", "", knownSet("ratings.prod.svc.cluster.local"), "reviews.prod"},
		{"name.ns known with custom suffix", "reviews.prod", "default", "corp.local", knownSet("reviews.prod.svc.corp.local"), "reviews.prod.svc.corp.local"},
		{"two-label external name", "example.com", "default", "", knownSet(), "example.com"},
		{"name.ns.svc", "reviews.prod.svc", "default", "", nil, "reviews.prod.svc.cluster.local"},
		{"name.ns.svc with custom suffix", "reviews.prod.svc", "default", "corp.local", nil, "reviews.prod.svc.corp.local"},
		{"three labels not ending in svc", "api.example.com", "default", "", nil, "api.example.com"},
		{"FQDN unchanged", "reviews.prod.svc.cluster.local", "default", "", nil, "reviews.prod.svc.cluster.local"},
		{"four labels unchanged", "reviews.prod.svc.cluster", "default", "", nil, "reviews.prod.svc.cluster"},
		{"wildcard unchanged", "*.example.com", "default", "", nil, "*.example.com"},
		{"wildcard short unchanged", "*", "default", "", nil, "*"},
		{"wildcard label unchanged", "*reviews", "default", "", nil, "*reviews"},
		{"empty unchanged", "", "default", "", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := registry.ResolveHost(tt.host, tt.ns, tt.suffix, tt.known); got != tt.want {
				t.Errorf("ResolveHost(%q, %q, %q) = %q, want %q", tt.host, tt.ns, tt.suffix, got, tt.want)
			}
		})
	}
}

// TestResolveHostAsksKnownOnlyForTwoLabels checks that known decides only
// the ambiguous name.ns case, and is asked about the expanded FQDN.
func TestResolveHostAsksKnownOnlyForTwoLabels(t *testing.T) {
	for _, host := range []string{"reviews", "reviews.prod", "reviews.prod.svc", "reviews.prod.svc.cluster.local", "api.example.com", "*.example.com", ""} {
		var asked []string
		known := func(fqdn string) bool { asked = append(asked, fqdn); return false }
		registry.ResolveHost(host, "default", "", known)
		var want []string
		if host == "reviews.prod" {
			want = []string{"reviews.prod.svc.cluster.local"}
		}
		if !slices.Equal(asked, want) {
			t.Errorf("ResolveHost(%q): known asked about %q, want %q", host, asked, want)
		}
	}
}

func TestShortNames(t *testing.T) {
	tests := []struct {
		name     string
		hostname string
		clientNS string
		suffix   string
		want     []string
	}{
		{"same namespace", "reviews.default.svc.cluster.local", "default", "",
			[]string{"reviews", "reviews.default", "reviews.default.svc", "reviews.default.svc.cluster.local"}},
		{"other namespace leaves out the bare name", "reviews.default.svc.cluster.local", "prod", "",
			[]string{"reviews.default", "reviews.default.svc", "reviews.default.svc.cluster.local"}},
		{"custom suffix", "reviews.default.svc.corp.local", "default", "corp.local",
			[]string{"reviews", "reviews.default", "reviews.default.svc", "reviews.default.svc.corp.local"}},
		{"suffix mismatch is external", "reviews.default.svc.cluster.local", "default", "corp.local",
			[]string{"reviews.default.svc.cluster.local"}},
		{"external host", "api.example.com", "default", "",
			[]string{"api.example.com"}},
		{"wildcard host", "*.example.com", "default", "",
			[]string{"*.example.com"}},
		{"no name before namespace", "default.svc.cluster.local", "default", "",
			[]string{"default.svc.cluster.local"}},
		{"dotted name: the last label before svc is the namespace", "v1.reviews.prod.svc.cluster.local", "prod", "",
			[]string{"v1.reviews", "v1.reviews.prod", "v1.reviews.prod.svc", "v1.reviews.prod.svc.cluster.local"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := registry.ShortNames(tt.hostname, tt.clientNS, tt.suffix); !slices.Equal(got, tt.want) {
				t.Errorf("ShortNames(%q, %q, %q) = %q, want %q", tt.hostname, tt.clientNS, tt.suffix, got, tt.want)
			}
		})
	}
}

// TestShortNamesResolveBack checks that every name ShortNames offers a
// client resolves back to the service with ResolveHost from that client's
// namespace, when the service is known.
func TestShortNamesResolveBack(t *testing.T) {
	for _, tc := range []struct{ fqdn, clientNS, suffix string }{
		{"reviews.default.svc.cluster.local", "default", ""},
		{"reviews.default.svc.cluster.local", "prod", ""},
		{"ratings.prod.svc.corp.local", "prod", "corp.local"},
		{"ratings.prod.svc.corp.local", "default", "corp.local"},
		{"api.example.com", "default", ""},
	} {
		known := func(f string) bool { return f == tc.fqdn }
		for _, n := range registry.ShortNames(tc.fqdn, tc.clientNS, tc.suffix) {
			if got := registry.ResolveHost(n, tc.clientNS, tc.suffix, known); got != tc.fqdn {
				t.Errorf("ShortNames(%q, %q) offers %q, which resolves to %q", tc.fqdn, tc.clientNS, n, got)
			}
		}
	}
}
