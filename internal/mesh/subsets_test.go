package mesh

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"

	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/registry/static"
)

// TestValidationAndSubsetIndexAgree: every subset reference config accepts
// is a subset of the DestinationRule the SubsetIndex picks for its host,
// so the generated cluster exists, and every one it rejects is not.
func TestValidationAndSubsetIndexAgree(t *testing.T) {
	dr := func(ns, name, host string, subsets ...string) string {
		s := fmt.Sprintf("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: %s, namespace: %s}\nspec:\n  host: %q\n  subsets:\n", name, ns, host)
		for _, sub := range subsets {
			s += fmt.Sprintf("  - {name: %s, labels: {version: %s}}\n", sub, sub)
		}
		return s
	}
	se := func(ns, name, host string) string {
		return fmt.Sprintf("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: %s, namespace: %s}\nspec:\n  hosts: [%q]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: STATIC\n  endpoints: [{address: 10.0.0.1, labels: {version: v1}}]\n", name, ns, host)
	}
	vs := func(ns, name, host, subset string) string {
		return fmt.Sprintf("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: %s, namespace: %s}\nspec:\n  hosts: [%q]\n  http:\n  - route:\n    - destination: {host: %q, subset: %s}\n", name, ns, host, host, subset)
	}
	const backend = "backend.default.svc.cluster.local"
	docs := []string{
		se("default", "backend", "backend"),
		se("ext", "api", "api.example.com"),
		se("ext", "any", "*.example.com"),
		se("zzz", "other", "other.zzz.svc.cluster.local"),
		dr("default", "backend", "backend", "v1"),
		dr("prod", "backend-extra", backend, "v2"),
		dr("aaa", "api", "api.example.com", "a"),
		dr("ext", "api", "api.example.com", "e"),
		dr("ext", "wild", "*.example.com", "w"),
		dr("bbb", "other", "other.zzz.svc.cluster.local", "b"),
		dr("ccc", "other", "other.zzz.svc.cluster.local", "c"),
	}
	type ref struct{ ns, host, subset string }
	var refs []ref
	for _, r := range []ref{
		{"default", "backend", "v1"}, {"default", "backend", "v2"},
		{"ext", "api.example.com", "a"}, {"ext", "api.example.com", "e"}, {"ext", "api.example.com", "w"},
		{"ext", "*.example.com", "w"}, {"ext", "*.example.com", "e"},
		{"zzz", "other", "b"}, {"zzz", "other", "c"},
	} {
		refs = append(refs, r)
		docs = append(docs, vs(r.ns, fmt.Sprintf("r%d", len(refs)), r.host, r.subset))
	}
	store := config.NewStore(config.Options{Logger: slog.New(slog.DiscardHandler)})
	cfg := store.Load(map[string][]byte{"c.yaml": []byte(strings.Join(docs, "---\n"))})
	s := New(cfg, static.Build(cfg, ""), "")

	accepted := map[string]bool{}
	for _, v := range cfg.VirtualServices {
		accepted[v.Name] = true
	}
	var got []string
	for i, r := range refs {
		name := fmt.Sprintf("r%d", i+1)
		fqdn := s.ResolveHost(r.host, r.ns)
		_, generated := s.Subsets.Subset(fqdn, r.subset)
		if accepted[name] != generated {
			t.Errorf("%s: subset %s of %s: accepted by config = %v, but generated = %v", name, r.subset, fqdn, accepted[name], generated)
		}
		if generated {
			got = append(got, r.subset+"@"+fqdn)
		}
	}
	want := []string{"v1@" + backend, "e@api.example.com", "w@*.example.com", "b@other.zzz.svc.cluster.local"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("subsets in force: %v, want %v\ndiagnostics: %v", got, want, cfg.Diagnostics)
	}
}

// TestSubsetIndexUsesRegistryNamespace: a service's registry namespace
// decides which DestinationRule is its own.
func TestSubsetIndexUsesRegistryNamespace(t *testing.T) {
	const host = "api.example.com"
	cfg := &config.Snapshot{
		ServiceEntries: []*config.ServiceEntry{{Meta: meta(config.KindServiceEntry, "ext", "api"), Spec: &networking.ServiceEntry{
			Hosts: []string{host}, Ports: []*networking.ServicePort{{Number: 80, Name: "http"}},
		}}},
		DestinationRules: []*config.DestinationRule{
			{Meta: meta(config.KindDestinationRule, "aaa", "api"), Spec: &networking.DestinationRule{Host: host}},
			{Meta: meta(config.KindDestinationRule, "ext", "api"), Spec: &networking.DestinationRule{Host: host}},
		},
	}
	if dr := New(cfg, static.Build(cfg, ""), "").Subsets.ForHost(host); dr == nil || dr.Namespace != "ext" {
		t.Errorf("DestinationRule for %s = %v, want ext/api (the ServiceEntry's namespace)", host, dr)
	}
	if dr := New(cfg, nil, "").Subsets.ForHost(host); dr == nil || dr.Namespace != "aaa" {
		t.Errorf("without a registry service, DestinationRule for %s = %v, want aaa/api (first by namespace/name)", host, dr)
	}
}
