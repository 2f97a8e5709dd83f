package config

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	networking "istio.io/api/networking/v1alpha3"
)

func vsYAML(name string, weights ...string) string {
	s := fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: %s}
spec:
  hosts: [reviews]
  http:
  - route:
`, name)
	for i, w := range weights {
		s += fmt.Sprintf("    - destination: {host: reviews, subset: v%d}\n      weight: %s\n", i+1, w)
	}
	return s
}

func weightsOf(t *testing.T, snap *Snapshot, name string) []int32 {
	t.Helper()
	for _, vs := range snap.VirtualServices {
		if vs.Name == name {
			var out []int32
			for _, d := range vs.Spec.GetHttp()[0].GetRoute() {
				out = append(out, d.GetWeight())
			}
			return out
		}
	}
	return nil
}

func TestLastGoodRetention(t *testing.T) {
	s := NewStore(testOptions())
	snap := s.Load(files("dr.yaml", reviewsDR, "vs.yaml", vsYAML("reviews", "90", "10")))
	if len(snap.Diagnostics) != 0 {
		t.Fatalf("unexpected diagnostics: %v", diagStrings(snap))
	}
	// A bad edit is rejected; the good version stays in force.
	snap = s.Load(files("dr.yaml", reviewsDR, "vs.yaml", vsYAML("reviews", "90", "-10")))
	checkStrings(t, "diagnostics", diagStrings(snap), []string{
		`error: vs.yaml: doc 1: VirtualService default/reviews: spec.http[0].route[1].weight: weight -10 must not be negative`,
	})
	if got := weightsOf(t, snap, "reviews"); fmt.Sprint(got) != "[90 10]" {
		t.Errorf("weights in force = %v, want the last good [90 10]", got)
	}
	// Unknown fields are rejected the same way.
	snap = s.Load(files("dr.yaml", reviewsDR, "vs.yaml", vsYAML("reviews", "50", "50")+"      weigth: 3\n"))
	checkStrings(t, "diagnostics", diagStrings(snap), []string{
		`error: vs.yaml: doc 1: VirtualService default/reviews: spec.http[0].route[1].weigth: unknown field "weigth"; did you mean "weight"?`,
	})
	if got := weightsOf(t, snap, "reviews"); fmt.Sprint(got) != "[90 10]" {
		t.Errorf("weights in force = %v, want the last good [90 10]", got)
	}
	// The next good edit takes over.
	snap = s.Load(files("dr.yaml", reviewsDR, "vs.yaml", vsYAML("reviews", "50", "50")))
	if got := weightsOf(t, snap, "reviews"); fmt.Sprint(got) != "[50 50]" || len(snap.Diagnostics) != 0 {
		t.Errorf("weights = %v, diagnostics %v; want [50 50] and none", got, diagStrings(snap))
	}
	// A bad new resource is simply absent.
	snap = s.Load(files("dr.yaml", reviewsDR, "vs.yaml", vsYAML("reviews", "50", "50"), "new.yaml", vsYAML("other", "-1")))
	checkStrings(t, "keys", keys(snap), []string{"VirtualService/default/reviews", "DestinationRule/default/reviews"})
	if snap.Version != 5 {
		t.Errorf("Version = %d, want 5", snap.Version)
	}
	if s.Snapshot() != snap {
		t.Error("Snapshot() is not the snapshot Load returned")
	}
}

func TestFileParseFailureKeepsFile(t *testing.T) {
	s := NewStore(testOptions())
	two := vsYAML("a", "1") + "---\n" + vsYAML("b", "1")
	s.Load(files("dr.yaml", reviewsDR, "vs.yaml", two))
	broken := vsYAML("a", "1") + "---\n" + "apiVersion: [unclosed\n"
	snap := s.Load(files("dr.yaml", reviewsDR, "vs.yaml", broken))
	checkStrings(t, "keys", keys(snap), []string{"VirtualService/default/a", "VirtualService/default/b", "DestinationRule/default/reviews"})
	checkStrings(t, "diagnostics", diagStrings(snap), []string{
		`error: vs.yaml: doc 2: invalid YAML: did not find expected ',' or ']'; the file is ignored and its last good resources stay in force`,
		`error: vs.yaml: doc 2: VirtualService default/b: spec.hosts[0]: host reviews.default.svc.cluster.local already takes its routes from VirtualService default/a (vs.yaml:1), which was there first; this VirtualService is not used for reviews.default.svc.cluster.local (on sidecars one VirtualService routes a host: merge the two, or delegate)`,
	})
	// Fixing the file applies it again, removing what it no longer has.
	snap = s.Load(files("dr.yaml", reviewsDR, "vs.yaml", vsYAML("a", "1")))
	checkStrings(t, "keys", keys(snap), []string{"VirtualService/default/a", "DestinationRule/default/reviews"})
}

func TestRemoval(t *testing.T) {
	s := NewStore(testOptions())
	s.Load(files("dr.yaml", reviewsDR, "vs.yaml", vsYAML("a", "1"), "we.yaml", `apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm, namespace: prod}
spec: {address: 10.0.0.1}
`))
	snap := s.Load(files("dr.yaml", reviewsDR, "vs.yaml", ""))
	checkStrings(t, "keys", keys(snap), []string{"DestinationRule/default/reviews"})
	snap = s.Load(nil)
	checkStrings(t, "keys", keys(snap), nil)
}

func TestDuplicateKeys(t *testing.T) {
	s := NewStore(testOptions())
	snap := s.Load(files(
		"dr.yaml", reviewsDR,
		"a.yaml", vsYAML("reviews", "1"),
		"b.yaml", "---\n"+vsYAML("x", "1")+"---\n"+vsYAML("reviews", "2"),
	))
	checkStrings(t, "diagnostics", diagStrings(snap), []string{
		`error: b.yaml: doc 1: VirtualService default/x: spec.hosts[0]: host reviews.default.svc.cluster.local already takes its routes from VirtualService default/reviews (a.yaml:1), which was there first; this VirtualService is not used for reviews.default.svc.cluster.local (on sidecars one VirtualService routes a host: merge the two, or delegate)`,
		`error: b.yaml: doc 2: VirtualService default/reviews: metadata.name: duplicate VirtualService default/reviews: already defined in a.yaml:1 (doc 1); this document is ignored`,
	})
	if got := weightsOf(t, snap, "reviews"); fmt.Sprint(got) != "[1]" {
		t.Errorf("weights = %v, want the first definition's [1]", got)
	}
	checkStrings(t, "keys", keys(snap), []string{"VirtualService/default/reviews", "VirtualService/default/x", "DestinationRule/default/reviews"})
}

func TestSubsetReferenceRejected(t *testing.T) {
	s := NewStore(testOptions())
	s.Load(files("dr.yaml", reviewsDR, "vs.yaml", vsYAML("reviews", "90", "10")))
	// A VirtualService edit that routes to an undefined subset is rejected.
	snap := s.Load(files("dr.yaml", reviewsDR, "vs.yaml", vsYAML("reviews", "80", "10", "10")))
	checkStrings(t, "diagnostics", diagStrings(snap), []string{
		`error: vs.yaml: doc 1: VirtualService default/reviews: spec.http[0].route[2].destination.subset: subset "v3" is not defined by any DestinationRule for reviews.default.svc.cluster.local`,
	})
	if got := weightsOf(t, snap, "reviews"); fmt.Sprint(got) != "[90 10]" {
		t.Errorf("weights = %v, want last good [90 10]", got)
	}
	// Adding the subset in the same load makes it valid.
	dr3 := reviewsDR + "  - name: v3\n    labels: {version: v3}\n"
	snap = s.Load(files("dr.yaml", dr3, "vs.yaml", vsYAML("reviews", "80", "10", "10")))
	if len(snap.Diagnostics) != 0 || fmt.Sprint(weightsOf(t, snap, "reviews")) != "[80 10 10]" {
		t.Errorf("diagnostics %v, weights %v", diagStrings(snap), weightsOf(t, snap, "reviews"))
	}
}

func TestDestinationRuleCannotRemoveUsedSubset(t *testing.T) {
	s := NewStore(testOptions())
	s.Load(files("dr.yaml", reviewsDR, "vs.yaml", vsYAML("reviews", "90", "10")))
	onlyV1 := `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews.default.svc.cluster.local
  subsets:
  - name: v1
    labels: {version: v1}
`
	snap := s.Load(files("dr.yaml", onlyV1, "vs.yaml", vsYAML("reviews", "90", "10")))
	checkStrings(t, "diagnostics", diagStrings(snap), []string{
		`error: dr.yaml: doc 1: DestinationRule default/reviews: spec.subsets: subset "v2" is still used by VirtualService default/reviews at spec.http[0].route[1].destination.subset; this change is rejected and the last good version stays in force`,
	})
	if n := len(snap.DestinationRules[0].Spec.GetSubsets()); n != 2 {
		t.Errorf("DestinationRule in force has %d subsets, want the last good 2", n)
	}
	checkStrings(t, "keys", keys(snap), []string{"VirtualService/default/reviews", "DestinationRule/default/reviews"})

	// Deleting the DestinationRule is refused the same way.
	snap = s.Load(files("vs.yaml", vsYAML("reviews", "90", "10")))
	checkStrings(t, "diagnostics", diagStrings(snap), []string{
		`error: dr.yaml: doc 1: DestinationRule default/reviews: spec.subsets: subset "v1" is still used by VirtualService default/reviews at spec.http[0].route[0].destination.subset; deleting this DestinationRule is rejected and the last good version stays in force`,
	})
	checkStrings(t, "keys", keys(snap), []string{"VirtualService/default/reviews", "DestinationRule/default/reviews"})

	// Moving traffic off v2 and removing it in one load is fine.
	snap = s.Load(files("dr.yaml", onlyV1, "vs.yaml", vsYAML("reviews", "100")))
	if len(snap.Diagnostics) != 0 || len(snap.DestinationRules[0].Spec.GetSubsets()) != 1 {
		t.Errorf("diagnostics %v", diagStrings(snap))
	}

	// A VirtualService change retained as last good still protects its subsets:
	// the edit to v2 is rejected (no v2), so the DR may not drop v1 either.
	onlyV2 := `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets:
  - name: v2
    labels: {version: v2}
`
	snap = s.Load(files("dr.yaml", onlyV2, "vs.yaml", vsYAML("reviews", "0", "100")))
	checkStrings(t, "diagnostics", diagStrings(snap), []string{
		`error: dr.yaml: doc 1: DestinationRule default/reviews: spec.subsets: subset "v1" is still used by VirtualService default/reviews at spec.http[0].route[0].destination.subset; this change is rejected and the last good version stays in force`,
		`error: vs.yaml: doc 1: VirtualService default/reviews: spec.http[0].route[1].destination.subset: subset "v2" is not defined by any DestinationRule for reviews.default.svc.cluster.local`,
	})
	if got := weightsOf(t, snap, "reviews"); fmt.Sprint(got) != "[100]" {
		t.Errorf("weights = %v, want [100]", got)
	}

	// A changed VirtualService first rejected against a DR change that is
	// then reverted is judged against the DestinationRules finally in force.
	s.Load(files("dr.yaml", reviewsDR, "vs.yaml", vsYAML("reviews", "100")))
	snap = s.Load(files("dr.yaml", onlyV2, "vs.yaml", vsYAML("reviews", "0", "100")))
	checkStrings(t, "diagnostics", diagStrings(snap), []string{
		`error: dr.yaml: doc 1: DestinationRule default/reviews: spec.subsets: subset "v1" is still used by VirtualService default/reviews at spec.http[0].route[0].destination.subset; this change is rejected and the last good version stays in force`,
	})
	if got := weightsOf(t, snap, "reviews"); fmt.Sprint(got) != "[0 100]" {
		t.Errorf("weights = %v, want [100]", got)
	}
}

func TestAPIVersions(t *testing.T) {
	for _, v := range []string{"networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"} {
		t.Run(v, func(t *testing.T) {
			doc := fmt.Sprintf(`apiVersion: %[1]s
kind: ServiceEntry
metadata: {name: ext, namespace: prod}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: https, protocol: HTTPS}]
  resolution: DNS
  endpoints: [{address: 203.0.113.10}]
---
apiVersion: %[1]s
kind: WorkloadEntry
metadata: {name: vm}
spec: {address: 10.0.0.1, ports: {http: 8080}}
---
apiVersion: %[1]s
kind: DestinationRule
metadata: {name: ext, namespace: prod}
spec:
  host: api.example.com
  trafficPolicy:
    connectionPool: {tcp: {connectTimeout: 30ms}}
    outlierDetection: {interval: 5m, baseEjectionTime: 15m}
---
apiVersion: %[1]s
kind: VirtualService
metadata: {name: ext, namespace: prod}
spec:
  hosts: [api.example.com]
  http:
  - timeout: 1.5s
    retries: {attempts: 2, perTryTimeout: 500ms}
    route:
    - destination: {host: api.example.com}
`, v)
			snap := NewStore(testOptions()).Load(files("all.yaml", doc))
			checkStrings(t, "diagnostics", diagStrings(snap), nil)
			checkStrings(t, "keys", keys(snap), []string{
				"VirtualService/prod/ext", "DestinationRule/prod/ext", "ServiceEntry/prod/ext", "WorkloadEntry/default/vm",
			})
			if got := snap.VirtualServices[0].APIVersion; got != v {
				t.Errorf("APIVersion = %q", got)
			}
			if got := snap.VirtualServices[0].Spec.GetHttp()[0].GetRetries().GetPerTryTimeout().AsDuration(); got != 500*time.Millisecond {
				t.Errorf("perTryTimeout = %v, want 500ms", got)
			}
			if got := snap.DestinationRules[0].Spec.GetTrafficPolicy().GetOutlierDetection().GetBaseEjectionTime().AsDuration(); got != 15*time.Minute {
				t.Errorf("baseEjectionTime = %v, want 15m", got)
			}
			if se := snap.ServiceEntries[0].Spec; se.GetResolution() != networking.ServiceEntry_DNS {
				t.Errorf("resolution = %v", se.GetResolution())
			}
		})
	}
}

func TestDocumentsAndOrdering(t *testing.T) {
	we := func(ns, name string) string {
		return fmt.Sprintf("apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: %s, namespace: %s}\nspec: {address: 10.0.0.1}\n", name, ns)
	}
	content := "# leading comment\n---\n" + we("b", "z") + "---\n\n---\n# only a comment\n---\n" + we("a", "yy") + "...\n---\n" + we("b", "a") + "--- # trailing\n" +
		"apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: bad}\nspec: {}\n"
	snap := NewStore(testOptions()).Load(files("w.yaml", content))
	checkStrings(t, "keys", keys(snap), []string{"WorkloadEntry/a/yy", "WorkloadEntry/b/a", "WorkloadEntry/b/z"})
	checkStrings(t, "diagnostics", diagStrings(snap), []string{
		`error: w.yaml: doc 6: WorkloadEntry default/bad: spec.address: address is required`,
	})
	if d := snap.WorkloadEntries[0].Doc; d != 4 {
		t.Errorf("a/yy doc = %d, want 4", d)
	}
}

func TestConcurrentSnapshot(t *testing.T) {
	s := NewStore(testOptions())
	if s.Snapshot() == nil || s.Snapshot().Version != 0 {
		t.Fatal("empty store must have an empty version-0 snapshot")
	}
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			for j := range 20 {
				s.Load(files("dr.yaml", reviewsDR, "vs.yaml", vsYAML("reviews", fmt.Sprint(i*100+j))))
			}
		}()
		go func() {
			defer wg.Done()
			for range 100 {
				_ = len(s.Snapshot().VirtualServices)
			}
		}()
	}
	wg.Wait()
	if v := s.Snapshot().Version; v != 80 {
		t.Errorf("Version = %d, want 80", v)
	}
}

func TestDiagnosticsAreLogged(t *testing.T) {
	var buf strings.Builder
	opts := testOptions()
	opts.Logger = slog.New(slog.NewTextHandler(&buf, nil))
	NewStore(opts).Load(files("dr.yaml", reviewsDR, "vs.yaml", vsYAML("reviews", "-1")+"---\n"+`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: warn}
spec:
  hosts: [warn]
  http: [{route: [{destination: {host: unknown}}]}]
`))
	out := buf.String()
	if n := strings.Count(out, "level=ERROR"); n != 1 {
		t.Errorf("%d error records, want 1:\n%s", n, out)
	}
	if n := strings.Count(out, "level=WARN"); n != 1 {
		t.Errorf("%d warning records, want 1:\n%s", n, out)
	}
	if !strings.Contains(out, "path=spec.http[0].route[0].weight") {
		t.Errorf("log lacks the field path:\n%s", out)
	}
}

// TestExportToOverrideIsNoConflict: a namespace's private VirtualService
// for a host another namespace routes publicly is Istio's consumer
// override, not a conflict; two competing in the same group still are.
func TestExportToOverrideIsNoConflict(t *testing.T) {
	override := func(ns, name, exportTo string) string {
		return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: %s, namespace: %s}
spec:
  hosts: [reviews.default.svc.cluster.local]
  exportTo: [%s]
  http:
  - route:
    - destination: {host: reviews.default.svc.cluster.local, subset: v1}
`, name, ns, exportTo)
	}
	s := NewStore(testOptions())
	snap := s.Load(files("dr.yaml", reviewsDR, "vs.yaml", vsYAML("reviews", "1"),
		"team-a.yaml", override("team-a", "mine", "'.'"),
		"team-b.yaml", override("team-b", "for-a", "team-a")))
	checkStrings(t, "diagnostics", diagStrings(snap), nil)

	snap = s.Load(files("dr.yaml", reviewsDR, "vs.yaml", vsYAML("reviews", "1"),
		"team-a.yaml", override("team-a", "mine", "'.'")+"---\n"+override("team-a", "again", "team-a")))
	checkStrings(t, "diagnostics", diagStrings(snap), []string{
		`error: team-a.yaml: doc 2: VirtualService team-a/again: spec.hosts[0]: host reviews.default.svc.cluster.local already takes its routes from VirtualService team-a/mine (team-a.yaml:1), which was there first; this VirtualService is not used for reviews.default.svc.cluster.local (on sidecars one VirtualService routes a host: merge the two, or delegate)`,
	})
}
