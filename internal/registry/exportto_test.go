package registry

import (
	"slices"
	"testing"
)

func TestResolveExportTo(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want []string
	}{
		{nil, nil},
		{[]string{"*"}, nil},
		{[]string{".", "*"}, nil},
		{[]string{"."}, []string{"pay"}},
		{[]string{".", "shop"}, []string{"pay", "shop"}},
		{[]string{"~"}, []string{}},
	} {
		got := ResolveExportTo(tc.in, "pay")
		if (got == nil) != (tc.want == nil) || !slices.Equal(got, tc.want) {
			t.Errorf("ResolveExportTo(%q) = %#v, want %#v", tc.in, got, tc.want)
		}
	}
}

func TestExportedTo(t *testing.T) {
	s := &Service{Hostname: "a.pay.svc.cluster.local", Namespace: "pay"}
	if !s.ExportedTo("shop") {
		t.Error("no exportTo: not visible in shop")
	}
	s.ExportTo = []string{"pay"}
	if s.ExportedTo("shop") || !s.ExportedTo("pay") {
		t.Error(`exportTo ["pay"]: visible in shop, or not in pay`)
	}
	s.ExportTo = []string{}
	if s.ExportedTo("pay") {
		t.Error(`exportTo "~": visible in its own namespace`)
	}
}
