package config

import (
	"fmt"
	"strings"
	"testing"

	networking "istio.io/api/networking/v1alpha3"
	typev1beta1 "istio.io/api/type/v1beta1"
)

func drDoc(ns, name, host string, subsets ...string) string {
	s := fmt.Sprintf("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: %s, namespace: %s}\nspec:\n  host: %q\n  subsets:\n", name, ns, host)
	for _, sub := range subsets {
		s += fmt.Sprintf("  - {name: %s, labels: {version: %s}}\n", sub, sub)
	}
	return s
}

// vsDoc routes host (written in namespace ns) to the subsets, one route each.
func vsDoc(ns, name, host string, subsets ...string) string {
	s := fmt.Sprintf("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: %s, namespace: %s}\nspec:\n  hosts: [%q]\n  http:\n  - route:\n", name, ns, host)
	for _, sub := range subsets {
		s += fmt.Sprintf("    - destination: {host: %q, subset: %s}\n      weight: 1\n", host, sub)
	}
	return s
}

func seDoc(ns, name, host string) string {
	return fmt.Sprintf("apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: %s, namespace: %s}\nspec:\n  hosts: [%q]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n", name, ns, host)
}

func docs(ds ...string) string { return strings.Join(ds, "---\n") }

func TestSelectDestinationRule(t *testing.T) {
	dr := func(ns, name, host string) *DestinationRule {
		return &DestinationRule{Meta: Meta{Kind: KindDestinationRule, Namespace: ns, Name: name}, Spec: &networking.DestinationRule{Host: host}}
	}
	resolve := func(host, ns string) string {
		if !strings.Contains(host, ".") && !strings.HasPrefix(host, "*") {
			return host + "." + ns + ".svc.cluster.local"
		}
		return host
	}
	const backend = "backend.default.svc.cluster.local"
	tests := []struct {
		name   string
		fqdn   string
		hostNS string
		drs    []*DestinationRule
		want   string // namespace/name, or "" for nil
	}{
		{"none", backend, "default", nil, ""},
		{"own namespace wins over earlier ones", backend, "default",
			[]*DestinationRule{dr("zzz", "b", backend), dr("default", "z", "backend"), dr("aaa", "a", backend)}, "default/z"},
		{"else first by namespace, then name", backend, "default",
			[]*DestinationRule{dr("zzz", "a", backend), dr("bbb", "b", backend), dr("bbb", "a", backend)}, "bbb/a"},
		{"first by name within the own namespace", "api.example.com", "ext",
			[]*DestinationRule{dr("ext", "b", "api.example.com"), dr("aaa", "a", "api.example.com"), dr("ext", "a", "api.example.com")}, "ext/a"},
		{"unknown namespace: first by namespace/name", "api.example.com", "",
			[]*DestinationRule{dr("b", "x", "api.example.com"), dr("a", "y", "api.example.com")}, "a/y"},
		{"host resolved in the rule's own namespace", backend, "default",
			[]*DestinationRule{dr("aaa", "x", "backend"), dr("bbb", "x", "backend")}, ""},
		{"a wildcard rule covers the hosts it matches", "api.example.com", "ext",
			[]*DestinationRule{dr("zzz", "w", "*.example.com")}, "zzz/w"},
		{"the longest wildcard of the namespace wins", "api.example.com", "ext",
			[]*DestinationRule{dr("ext", "all", "*"), dr("ext", "com", "*.com"), dr("ext", "w", "*.example.com")}, "ext/w"},
		{"an exact host beats a wildcard of its namespace", backend, "default",
			[]*DestinationRule{dr("default", "w", "*.default.svc.cluster.local"), dr("default", "z", "backend")}, "default/z"},
		{"a wildcard does not cover its own suffix", "example.com", "ext",
			[]*DestinationRule{dr("ext", "w", "*.example.com")}, ""},
		{"the service's namespace, even by wildcard, beats others' exact rules", backend, "default",
			[]*DestinationRule{dr("aaa", "x", backend), dr("default", "w", "*.default.svc.cluster.local")}, "default/w"},
		{"the root namespace's mesh default beats a third namespace's rule", backend, "default",
			[]*DestinationRule{dr("aaa", "x", backend), dr("istio-system", "mesh", "*.local")}, "istio-system/mesh"},
		{"the service's own rule beats the root namespace's default", backend, "default",
			[]*DestinationRule{dr("istio-system", "mesh", "*.local"), dr("default", "z", "backend")}, "default/z"},
		{"a wildcard rule covers a narrower wildcard service", "*.api.example.com", "ext",
			[]*DestinationRule{dr("zzz", "w", "*.example.com")}, "zzz/w"},
		{"a wildcard rule governs the wildcard service", "*.example.com", "ext",
			[]*DestinationRule{dr("zzz", "w", "*.example.com"), dr("ext", "api", "api.example.com")}, "zzz/w"},
		{"rules without a spec are skipped", backend, "default",
			[]*DestinationRule{{Meta: Meta{Namespace: "default", Name: "nil"}}, dr("zzz", "x", backend)}, "zzz/x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got string
			if dr := SelectDestinationRule(tt.fqdn, tt.hostNS, "istio-system", "", tt.drs, resolve); dr != nil {
				got = dr.Namespace + "/" + dr.Name
			}
			if got != tt.want {
				t.Errorf("SelectDestinationRule = %q, want %q", got, tt.want)
			}
		})
	}

	for _, c := range []struct{ fqdn, svcNS, suffix, want string }{
		{"backend.default.svc.cluster.local", "", "", "default"},
		{"backend.default.svc.cluster.local", "prod", "", "prod"},
		{"backend.default.svc.corp.internal", "", "corp.internal", "default"},
		{"backend.default.svc.corp.internal", "", "", ""},
		{"api.example.com", "", "", ""},
		{"api.example.com", "ext", "", "ext"},
	} {
		if got := HostNamespace(c.fqdn, c.svcNS, c.suffix); got != c.want {
			t.Errorf("HostNamespace(%q, %q, %q) = %q, want %q", c.fqdn, c.svcNS, c.suffix, got, c.want)
		}
	}
}

// TestSubsetOfTheRuleInForce: a subset reference is valid only if the one
// DestinationRule mesh uses for the host defines it.
func TestSubsetOfTheRuleInForce(t *testing.T) {
	const backend = "backend.default.svc.cluster.local"
	tests := []struct {
		name string
		yaml string
		want []string
		vss  []string // VirtualServices in force
	}{
		{
			name: "subset only in a rule of another namespace",
			yaml: docs(
				drDoc("default", "backend", "backend", "v1"),
				drDoc("prod", "backend-extra", backend, "v2"),
				vsDoc("default", "backend", "backend", "v1", "v2"),
			),
			want: []string{
				`error: t.yaml: doc 3: VirtualService default/backend: spec.http[0].route[1].destination.subset: subset "v2" is defined by DestinationRule prod/backend-extra, but DestinationRule default/backend is the one in force for backend.default.svc.cluster.local`,
			},
		},
		{
			name: "no rule in the host's namespace: the first seen is in force, whatever its name",
			yaml: docs(
				drDoc("zzz", "later", backend, "v2"),
				drDoc("aaa", "first", backend, "v1"),
				vsDoc("default", "v1", "backend", "v1"),
				vsDoc("default", "v2", "backend", "v2"),
			),
			want: []string{
				`error: t.yaml: doc 3: VirtualService default/v1: spec.http[0].route[0].destination.subset: subset "v1" is defined by DestinationRule aaa/first, but DestinationRule zzz/later is the one in force for backend.default.svc.cluster.local`,
			},
			vss: []string{"default/v2"},
		},
		{
			name: "a ServiceEntry's namespace is its hosts' namespace",
			yaml: docs(
				seDoc("ext", "api", "api.example.com"),
				drDoc("aaa", "api", "api.example.com", "v2"),
				drDoc("ext", "api", "api.example.com", "v1"),
				vsDoc("ext", "api", "api.example.com", "v1"),
				vsDoc("zzz", "api", "api.example.com", "v2"),
			),
			want: []string{
				`error: t.yaml: doc 5: VirtualService zzz/api: spec.http[0].route[0].destination.subset: subset "v2" is defined by DestinationRule aaa/api, but DestinationRule ext/api is the one in force for api.example.com`,
			},
			vss: []string{"ext/api"},
		},
		{
			name: "a client-side rule gives its own namespace's clients its subsets",
			yaml: docs(
				drDoc("default", "backend", "backend", "v1"),
				drDoc("team-a", "backend", backend, "v2"),
				strings.Replace(vsDoc("team-a", "backend", backend, "v2"), "spec:\n", "spec:\n  exportTo: [\".\"]\n", 1),
			),
			vss: []string{"team-a/backend"},
		},
		{
			name: "exported everywhere, a subset only some namespaces have is a warning",
			yaml: docs(
				drDoc("default", "backend", "backend", "v1"),
				drDoc("team-a", "backend", backend, "v2"),
				vsDoc("team-a", "backend", backend, "v2"),
			),
			want: []string{
				`warning: t.yaml: doc 3: VirtualService team-a/backend: spec.http[0].route[0].destination.subset: subset "v2" of backend.default.svc.cluster.local is defined for the sidecars of namespace team-a only (by DestinationRule team-a/backend); this VirtualService is exported to every namespace, and the sidecars of the others have no such subset: 503 for its share (export the VirtualService to team-a only, or define the subset in a rule they use)`,
			},
			vss: []string{"team-a/backend"},
		},
		{
			name: "a wildcard rule gives its subsets to the hosts it matches",
			yaml: docs(
				seDoc("ext", "api", "api.example.com"),
				drDoc("ext", "wild", "*.example.com", "v1"),
				vsDoc("ext", "api", "api.example.com", "v1"),
			),
			vss: []string{"ext/api"},
		},
		{
			name: "the root namespace's wildcard rule is the mesh's default",
			yaml: docs(
				drDoc("istio-system", "mesh", "*.local", "v1"),
				vsDoc("default", "backend", "backend", "v1"),
			),
			vss: []string{"default/backend"},
		},
		{
			name: "the service's own rule overrides the mesh default",
			yaml: docs(
				drDoc("istio-system", "mesh", "*.local", "v1"),
				drDoc("default", "backend", "backend", "v2"),
				vsDoc("default", "backend", "backend", "v1"),
			),
			want: []string{
				`error: t.yaml: doc 3: VirtualService default/backend: spec.http[0].route[0].destination.subset: subset "v1" is defined by DestinationRule istio-system/mesh, but DestinationRule default/backend is the one in force for backend.default.svc.cluster.local`,
			},
		},
		{
			name: "the mesh default governs other clients, a third namespace's rule its own",
			yaml: docs(
				drDoc("istio-system", "mesh", "*.local", "v1"),
				drDoc("other", "backend", "backend.default.svc.cluster.local", "v2"),
				vsDoc("default", "backend", "backend", "v1"),
			),
			vss: []string{"default/backend"},
		},
		{
			name: "a wildcard rule beside the rule in force",
			yaml: docs(
				seDoc("ext", "api", "api.example.com"),
				drDoc("ext", "wild", "*.example.com", "v1"),
				drDoc("ext", "api", "api.example.com", "v2"),
				vsDoc("ext", "api", "api.example.com", "v1"),
			),
			want: []string{
				`error: t.yaml: doc 4: VirtualService ext/api: spec.http[0].route[0].destination.subset: subset "v1" is defined by DestinationRule ext/wild, but DestinationRule ext/api is the one in force for api.example.com`,
			},
		},
		{
			name: "a wildcard rule does give subsets to a wildcard ServiceEntry host",
			yaml: docs(
				seDoc("ext", "any", "*.example.com"),
				drDoc("ext", "wild", "*.example.com", "v1"),
				vsDoc("ext", "any", "*.example.com", "v1"),
			),
			vss: []string{"ext/any"},
		},
		{
			name: "a subset no rule defines keeps its message",
			yaml: docs(
				drDoc("default", "backend", "backend", "v1"),
				vsDoc("default", "backend", "backend", "v3"),
			),
			want: []string{
				`error: t.yaml: doc 2: VirtualService default/backend: spec.http[0].route[0].destination.subset: subset "v3" is not defined by any DestinationRule for backend.default.svc.cluster.local`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			snap := NewStore(testOptions()).Load(files("t.yaml", tt.yaml))
			checkStrings(t, "diagnostics", diagStrings(snap), tt.want)
			var vss []string
			for _, vs := range snap.VirtualServices {
				vss = append(vss, vs.Namespace+"/"+vs.Name)
			}
			checkStrings(t, "VirtualServices in force", vss, tt.vss)
		})
	}
}

// TestRuleInForceProtectsUsedSubsets: a DestinationRule change that would
// leave an in-force VirtualService's subset without a cluster is rejected,
// including a new rule that would take precedence for the host.
func TestRuleInForceProtectsUsedSubsets(t *testing.T) {
	const backend = "backend.default.svc.cluster.local"
	vs := vsDoc("default", "backend", "backend", "v2")
	type step struct {
		files map[string][]byte
		diags []string
		drs   []string // DestinationRules in force, "ns/name:subsets"
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{
			name: "a new rule in the host's namespace would take over",
			steps: []step{
				{files: files("dr.yaml", drDoc("zzz", "extra", backend, "v1", "v2"), "vs.yaml", vs), drs: []string{"zzz/extra:[v1 v2]"}},
				{
					files: files("dr.yaml", drDoc("zzz", "extra", backend, "v1", "v2"), "own.yaml", drDoc("default", "backend", "backend", "v1"), "vs.yaml", vs),
					diags: []string{
						`error: own.yaml: doc 1: DestinationRule default/backend: spec.host: subset "v2" is still used by VirtualService default/backend at spec.http[0].route[0].destination.subset, and this DestinationRule would replace DestinationRule zzz/extra as the one in force for backend.default.svc.cluster.local without defining it; this DestinationRule is rejected`,
					},
					drs: []string{"zzz/extra:[v1 v2]"},
				},
				// With the subset it is accepted and takes over.
				{
					files: files("dr.yaml", drDoc("zzz", "extra", backend, "v1", "v2"), "own.yaml", drDoc("default", "backend", "backend", "v2"), "vs.yaml", vs),
					drs:   []string{"default/backend:[v2]", "zzz/extra:[v1 v2]"},
				},
			},
		},
		{
			name: "only the takeover is rejected, not a harmless edit of the rule in force",
			steps: []step{
				{files: files("dr.yaml", drDoc("zzz", "extra", backend, "v2"), "vs.yaml", vs), drs: []string{"zzz/extra:[v2]"}},
				{
					files: files("dr.yaml", drDoc("zzz", "extra", backend, "v2", "v3"), "own.yaml", drDoc("default", "backend", "backend", "v1"), "vs.yaml", vs),
					diags: []string{
						`error: own.yaml: doc 1: DestinationRule default/backend: spec.host: subset "v2" is still used by VirtualService default/backend at spec.http[0].route[0].destination.subset, and this DestinationRule would replace DestinationRule zzz/extra as the one in force for backend.default.svc.cluster.local without defining it; this DestinationRule is rejected`,
					},
					drs: []string{"zzz/extra:[v2 v3]"},
				},
			},
		},
		{
			name: "both the edit of the rule in force and a takeover are rejected",
			steps: []step{
				{files: files("dr.yaml", drDoc("zzz", "extra", backend, "v2"), "vs.yaml", vs), drs: []string{"zzz/extra:[v2]"}},
				{
					files: files("dr.yaml", drDoc("zzz", "extra", backend, "v1"), "own.yaml", drDoc("default", "backend", "backend", "v1"), "vs.yaml", vs),
					diags: []string{
						`error: dr.yaml: doc 1: DestinationRule zzz/extra: spec.subsets: subset "v2" is still used by VirtualService default/backend at spec.http[0].route[0].destination.subset; this change is rejected and the last good version stays in force`,
						`error: own.yaml: doc 1: DestinationRule default/backend: spec.host: subset "v2" is still used by VirtualService default/backend at spec.http[0].route[0].destination.subset, and this DestinationRule would replace DestinationRule zzz/extra as the one in force for backend.default.svc.cluster.local without defining it; this DestinationRule is rejected`,
					},
					drs: []string{"zzz/extra:[v2]"},
				},
			},
		},
		{
			name: "an edited rule whose host moves onto the service does not take over: the older rule stays",
			steps: []step{
				{
					files: files("dr.yaml", docs(drDoc("zzz", "extra", backend, "v2"), drDoc("aaa", "other", "other", "v1")), "vs.yaml", vs),
					drs:   []string{"aaa/other:[v1]", "zzz/extra:[v2]"},
				},
				{
					files: files("dr.yaml", docs(drDoc("zzz", "extra", backend, "v2"), drDoc("aaa", "other", backend, "v1")), "vs.yaml", vs),
					drs:   []string{"aaa/other:[v1]", "zzz/extra:[v2]"},
				},
			},
		},
		{
			name: "deleting the rule in force would hand the host to one without the subset",
			steps: []step{
				{
					files: files("own.yaml", drDoc("default", "backend", "backend", "v2"), "dr.yaml", drDoc("zzz", "extra", backend, "v1"), "vs.yaml", vs),
					drs:   []string{"default/backend:[v2]", "zzz/extra:[v1]"},
				},
				{
					files: files("dr.yaml", drDoc("zzz", "extra", backend, "v1"), "vs.yaml", vs),
					diags: []string{
						`error: own.yaml: doc 1: DestinationRule default/backend: spec.subsets: subset "v2" is still used by VirtualService default/backend at spec.http[0].route[0].destination.subset; deleting this DestinationRule is rejected and the last good version stays in force`,
					},
					drs: []string{"default/backend:[v2]", "zzz/extra:[v1]"},
				},
			},
		},
		{
			name: "moving the rule in force to another host",
			steps: []step{
				{
					files: files("own.yaml", drDoc("default", "backend", "backend", "v2"), "vs.yaml", vs),
					drs:   []string{"default/backend:[v2]"},
				},
				{
					files: files("own.yaml", drDoc("default", "backend", "other", "v2"), "vs.yaml", vs),
					diags: []string{
						`error: own.yaml: doc 1: DestinationRule default/backend: spec.host: subset "v2" is still used by VirtualService default/backend at spec.http[0].route[0].destination.subset; this change is rejected and the last good version stays in force`,
					},
					drs: []string{"default/backend:[v2]"},
				},
			},
		},
		{
			name: "a change to a rule not in force does not matter",
			steps: []step{
				{
					files: files("own.yaml", drDoc("default", "backend", "backend", "v2"), "dr.yaml", drDoc("zzz", "extra", backend, "v2"), "vs.yaml", vs),
					drs:   []string{"default/backend:[v2]", "zzz/extra:[v2]"},
				},
				{
					files: files("own.yaml", drDoc("default", "backend", "backend", "v2"), "dr.yaml", drDoc("zzz", "extra", backend, "v1"), "vs.yaml", vs),
					drs:   []string{"default/backend:[v2]", "zzz/extra:[v1]"},
				},
				{
					files: files("own.yaml", drDoc("default", "backend", "backend", "v2"), "vs.yaml", vs),
					drs:   []string{"default/backend:[v2]"},
				},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewStore(testOptions())
			for i, st := range tt.steps {
				snap := s.Load(st.files)
				checkStrings(t, fmt.Sprintf("load %d: diagnostics", i+1), diagStrings(snap), st.diags)
				var drs []string
				for _, dr := range snap.DestinationRules {
					var subs []string
					for _, sub := range dr.Spec.GetSubsets() {
						subs = append(subs, sub.GetName())
					}
					drs = append(drs, fmt.Sprintf("%s/%s:%v", dr.Namespace, dr.Name, subs))
				}
				checkStrings(t, fmt.Sprintf("load %d: DestinationRules", i+1), drs, st.drs)
				if len(snap.VirtualServices) != 1 {
					t.Errorf("load %d: %d VirtualServices in force, want 1", i+1, len(snap.VirtualServices))
				}
			}
		})
	}
}

// TestSelectDestinationRulesForWorkloads: a rule with a workloadSelector
// governs the selected sidecars of its own namespace only, over the
// namespace's rules without a selector; other sidecars fall through to
// the rules they would have without it.
func TestSelectDestinationRulesForWorkloads(t *testing.T) {
	dr := func(ns, name, host string, sel map[string]string) *DestinationRule {
		spec := &networking.DestinationRule{Host: host}
		if sel != nil {
			spec.WorkloadSelector = &typev1beta1.WorkloadSelector{MatchLabels: sel}
		}
		return &DestinationRule{Meta: Meta{Kind: KindDestinationRule, Namespace: ns, Name: name}, Spec: spec}
	}
	resolve := func(host, ns string) string {
		if !strings.Contains(host, ".") && !strings.HasPrefix(host, "*") {
			return host + "." + ns + ".svc.cluster.local"
		}
		return host
	}
	const backend = "backend.default.svc.cluster.local"
	drs := []*DestinationRule{
		dr("default", "backend", "backend", nil),
		dr("team-a", "all", backend, nil),
		dr("team-a", "batch", backend, map[string]string{"app": "batch"}),
		dr("team-b", "batch", backend, map[string]string{"app": "batch"}),
	}
	for _, tt := range []struct {
		ns     string
		labels map[string]string
		want   string
	}{
		{"team-a", map[string]string{"app": "batch", "version": "v1"}, "team-a/batch"}, // selected
		{"team-a", map[string]string{"app": "web"}, "team-a/all"},                      // the namespace's other rule
		{"team-a", nil, "team-a/all"},
		{"team-b", map[string]string{"app": "batch"}, "team-b/batch"},
		{"team-b", map[string]string{"app": "web"}, "default/backend"}, // falls through to the service's
		{"default", map[string]string{"app": "batch"}, "default/backend"},
	} {
		set := SelectDestinationRulesFor(backend, "default", "istio-system", tt.ns, tt.labels, drs, resolve)
		var got string
		if set.Rule != nil {
			got = set.From[0].Namespace + "/" + set.From[0].Name
		}
		if got != tt.want {
			t.Errorf("%s %v: %s, want %s", tt.ns, tt.labels, got, tt.want)
		}
	}
	// Rules with a selector depend on labels: never reported as unused.
	if v := DestinationRuleViews(backend, "default", "istio-system", drs, resolve); len(v.Default.Ignored) != 0 {
		t.Errorf("ignored %v, want none", v.Default.Ignored)
	}
}
