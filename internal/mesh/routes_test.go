package mesh

import (
	"testing"

	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/registry"
)

// TestRoutesExportTo: which VirtualService routes a host for the sidecars
// of a namespace follows exportTo as in Istio's virtualServiceIndex: the
// namespace's own private ones first, then those exported to it by name,
// then the public ones; a private one is invisible elsewhere.
func TestRoutesExportTo(t *testing.T) {
	reviews := "reviews.default.svc.cluster.local"
	ratings := "ratings.default.svc.cluster.local"
	api := "api.example.com"
	reg := registry.NewSnapshot([]*registry.Service{
		{Hostname: reviews, Namespace: "default"},
		{Hostname: ratings, Namespace: "default"},
		{Hostname: api, Namespace: "ext"},
	}, nil)
	vs := func(ns, name string, exportTo []string, hosts ...string) *config.VirtualService {
		return &config.VirtualService{Meta: meta(config.KindVirtualService, ns, name),
			Spec: &networking.VirtualService{Hosts: hosts, ExportTo: exportTo}}
	}
	cfg := &config.Snapshot{VirtualServices: []*config.VirtualService{
		vs("default", "mesh-reviews", nil, "reviews"),
		vs("team-a", "a-reviews", []string{"."}, reviews),               // team-a's own override
		vs("team-b", "b-reviews", []string{"team-c"}, reviews),          // exported to team-c by name
		vs("team-c", "c-ratings", []string{"."}, "*.svc.cluster.local"), // a private wildcard
		vs("default", "hidden", []string{"ops"}, "ratings"),             // exported to ops only
		vs("ext", "ext-api", []string{"*", "."}, api),                   // "*" wins: public
	}}
	s := New(cfg, reg, "")
	for _, tc := range []struct {
		ns, host, want string
	}{
		{"default", reviews, "mesh-reviews"},
		{"team-x", reviews, "mesh-reviews"},
		{"team-a", reviews, "a-reviews"},
		{"team-b", reviews, "mesh-reviews"}, // b-reviews is exported to team-c only, not kept in team-b
		{"team-c", reviews, "c-ratings"},    // the private wildcard claims reviews before b's export and the public one
		{"team-c", ratings, "c-ratings"},
		{"team-a", ratings, ""},
		{"ops", ratings, "hidden"},
		{"default", ratings, ""},
		{"team-a", api, "ext-api"},
	} {
		want := tc.want
		got := ""
		if vss := s.Routes.ForHostIn(tc.host, tc.ns); len(vss) == 1 {
			got = vss[0].Name
		}
		if got != want {
			t.Errorf("namespace %s, host %s: VirtualService %q, want %q", tc.ns, tc.host, got, want)
		}
	}
	if !s.Routes.DependsOnNamespace(reviews) || !s.Routes.DependsOnNamespace(ratings) || s.Routes.DependsOnNamespace(api) {
		t.Errorf("DependsOnNamespace: reviews %v ratings %v api %v, want true true false",
			s.Routes.DependsOnNamespace(reviews), s.Routes.DependsOnNamespace(ratings), s.Routes.DependsOnNamespace(api))
	}
	// The mesh-wide view (status, analysis) is unchanged: one per host,
	// first seen by namespace/name, whatever exportTo says.
	if got := s.Routes.ForHost(reviews); len(got) != 1 || got[0].Name != "mesh-reviews" {
		t.Errorf("mesh-wide view of reviews: %v, want mesh-reviews", got)
	}

	// Without a restricted exportTo nothing depends on the namespace.
	plain := New(&config.Snapshot{VirtualServices: []*config.VirtualService{vs("default", "r", nil, "reviews")}}, reg, "")
	if plain.Routes.DependsOnNamespace(reviews) {
		t.Error("a public VirtualService made reviews depend on the namespace")
	}
	if got := plain.Routes.ForHostIn(reviews, "team-a"); len(got) != 1 || got[0].Name != "r" {
		t.Errorf("public VirtualService not seen from team-a: %v", got)
	}
}
