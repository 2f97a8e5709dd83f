package config

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
)

// The fuzz targets of the config decoder and store. `go test` runs their
// seeds and testdata/fuzz/<Target>/ (every crasher found so far) as
// ordinary tests; bench/fuzz.sh runs them as fuzzers. Each checks more than
// "no panic": see checkSnapshot and checkRejections.

// FuzzLoad loads one file (beside a DestinationRule) twice into one store:
// the second load exercises last-good retention and must change nothing.
// Loading the same input into a fresh store gives the same snapshot.
func FuzzLoad(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		in := map[string][]byte{"f.yaml": data, "dr.yaml": []byte(reviewsDR)}
		s := NewStore(testOptions())
		first := s.Load(in)
		checkSnapshot(t, first, in)
		checkRejections(t, first, nil)
		second := s.Load(in)
		checkSnapshot(t, second, in)
		if !sameContent(first, second) {
			t.Fatalf("loading the same files again changed the snapshot:\nfirst:  %s\nsecond: %s", dumpSnapshot(first), dumpSnapshot(second))
		}
		if again := NewStore(testOptions()).Load(in); !sameContent(first, again) {
			t.Fatalf("two stores loading the same files disagree:\none:   %s\nother: %s", dumpSnapshot(first), dumpSnapshot(again))
		}
	})
}

// FuzzLoadTwoFiles loads file a alone, then a and b together: what b
// defines (duplicates, conflicting hosts, merged DestinationRules) may be
// rejected or reported, but adding b never takes a resource of a out of
// force or changes it. Every step is deterministic.
func FuzzLoadTwoFiles(f *testing.F) {
	seeds := fuzzSeeds(f)
	for i, s := range seeds {
		f.Add(s, seeds[(i*7+3)%len(seeds)])
		f.Add(s, s) // every resource defined twice
	}
	f.Fuzz(func(t *testing.T, a, b []byte) {
		one := map[string][]byte{"a.yaml": a}
		both := map[string][]byte{"a.yaml": a, "b.yaml": b}
		run := func() (*Snapshot, *Snapshot) {
			s := NewStore(testOptions())
			first := s.Load(one)
			checkSnapshot(t, first, one)
			checkRejections(t, first, nil)
			second := s.Load(both)
			checkSnapshot(t, second, both)
			checkRejections(t, second, first)
			if third := s.Load(both); !sameContent(second, third) {
				t.Fatalf("loading the same files again changed the snapshot:\nbefore: %s\nafter:  %s", dumpSnapshot(second), dumpSnapshot(third))
			}
			return first, second
		}
		first, second := run()
		for _, r := range resources(first) {
			if now := findResource(second, r.meta.String()); now == nil || !sameResource(r, *now) && !meshRoutesKept(r, *now) {
				t.Fatalf("adding b.yaml changed %s, in force from a.yaml:\nbefore: %s\nafter:  %s", r.meta, dumpSnapshot(first), dumpSnapshot(second))
			}
		}
		if first2, second2 := run(); !sameContent(first, first2) || !sameContent(second, second2) {
			t.Fatalf("two stores loading the same files disagree:\none:   %s\nother: %s", dumpSnapshot(second), dumpSnapshot(second2))
		}
	})
}

// FuzzLoadSequence edits one file between loads (v1, v2, v1, removed, v2)
// beside a fixed realistic file. It checks that the decode cache is
// invisible (a store that decodes every file afresh on every load gives
// the same snapshots), that a resource's first-seen number stays while it
// is in force and a new resource gets a larger one, that a rejected
// document never puts its version in force, and that snapshots already
// published never change (specs are shared, never modified).
func FuzzLoadSequence(f *testing.F) {
	seeds := fuzzSeeds(f)
	for i, s := range seeds {
		f.Add(s, seeds[(i*5+1)%len(seeds)])
	}
	f.Fuzz(func(t *testing.T, v1, v2 []byte) {
		base := []byte(fuzzBase)
		steps := []map[string][]byte{
			{"f.yaml": v1, "g.yaml": base},
			{"f.yaml": v2, "g.yaml": base},
			{"f.yaml": v1, "g.yaml": base},
			{"g.yaml": base},
			{"f.yaml": v2, "g.yaml": base},
		}
		cached, uncached := NewStore(testOptions()), NewStore(testOptions())
		var (
			prev  *Snapshot
			snaps []*Snapshot
			wire  [][]byte
			seq   = map[string]uint64{} // first-seen number of every key in force
			maxSq uint64
		)
		for i, in := range steps {
			snap := cached.Load(in)
			uncached.decoded = map[string]*decodedFile{} // forget every decode
			if fresh := uncached.Load(in); !sameContent(snap, fresh) {
				t.Fatalf("step %d: the decode cache changed the outcome:\ncached:   %s\nuncached: %s", i, dumpSnapshot(snap), dumpSnapshot(fresh))
			}
			checkSnapshot(t, snap, in, steps[:i]...)
			checkRejections(t, snap, prev)
			next := map[string]uint64{}
			newMax := maxSq
			for _, r := range resources(snap) {
				key := r.meta.Key()
				if old, ok := seq[key]; ok && old != r.meta.Seq {
					t.Fatalf("step %d: %s, in force all along, changed first-seen number %d -> %d", i, key, old, r.meta.Seq)
				}
				// A resource translated from the Gateway API takes the
				// first-seen number of its oldest route (the oldest wins a
				// conflict): it may appear later than that route, when the
				// Gateway or listener it attaches to does.
				_, generated := r.annotations[AnnotationGeneratedFrom]
				if _, ok := seq[key]; !ok && r.meta.Seq <= maxSq && !generated {
					t.Fatalf("step %d: %s is new but has first-seen number %d, not above %d", i, key, r.meta.Seq, maxSq)
				}
				next[key] = r.meta.Seq
				newMax = max(newMax, r.meta.Seq)
			}
			seq, maxSq, prev = next, newMax, snap
			snaps = append(snaps, snap)
			wire = append(wire, marshalSpecs(t, snap))
		}
		for i, snap := range snaps {
			if !bytes.Equal(wire[i], marshalSpecs(t, snap)) {
				t.Fatalf("step %d: the snapshot's specs were modified after it was published", i)
			}
		}
	})
}

// fuzzBase is a realistic config loaded beside the fuzzed file in
// FuzzLoadSequence: services with endpoints, subsets, and routes to them,
// for the fuzzed file to collide with.
const fuzzBase = `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1}
spec: {address: 10.0.0.1, labels: {app: reviews, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 90}
    - {destination: {host: reviews, subset: v2}, weight: 10}
`

// checkSnapshot checks what every snapshot must satisfy, whatever the
// input: lists sorted and keyed once, every resource valid on its own and
// from a loaded file, every diagnostic complete and located inside its file.
// older lists earlier contents of the files (may be nil): a diagnostic about
// a last good version retained from one is located in that content.
func checkSnapshot(t *testing.T, snap *Snapshot, in map[string][]byte, older ...map[string][]byte) {
	t.Helper()
	seen := map[string]bool{}
	var last Meta
	for i, r := range resources(snap) {
		if seen[r.meta.Key()] {
			t.Fatalf("%s is in the snapshot twice", r.meta.Key())
		}
		seen[r.meta.Key()] = true
		if i > 0 && r.meta.Kind == last.Kind && (r.meta.Namespace < last.Namespace || r.meta.Namespace == last.Namespace && r.meta.Name < last.Name) {
			t.Fatalf("%s is listed after %s", r.meta, last)
		}
		last = r.meta
		if _, ok := in[r.meta.File]; !ok {
			t.Fatalf("%s comes from %q, which is not loaded", r.meta, r.meta.File)
		}
		if r.spec == nil || r.meta.Seq == 0 {
			t.Fatalf("%s has no spec or no first-seen number (%d)", r.meta, r.meta.Seq)
		}
		for _, is := range validateSpec(r.spec) {
			if is.Severity == SeverityError {
				t.Fatalf("%s is in force but invalid: %s: %s", r.meta, is.Path, is.Message)
			}
		}
	}
	for _, d := range snap.Diagnostics {
		where := d.Error()
		switch {
		case d.File == "" || d.Message == "" || d.Code == "":
			t.Fatalf("incomplete diagnostic %+v", d)
		case d.Severity != SeverityError && d.Severity != SeverityWarning && d.Severity != SeverityInfo:
			t.Fatalf("diagnostic with severity %q: %s", d.Severity, where)
		case d.Line == 0 && d.Column != 0, d.Line < 0, d.Column < 0, d.Doc < 0:
			t.Fatalf("diagnostic at line %d column %d doc %d: %s", d.Line, d.Column, d.Doc, where)
		case d.Resource != "" && d.Doc == 0:
			t.Fatalf("diagnostic of a resource without a document: %s", where)
		}
		if _, ok := in[d.File]; !ok {
			t.Fatalf("diagnostic of %q, which is not loaded: %s", d.File, where)
		}
		var problem string
		for _, files := range append([]map[string][]byte{in}, older...) {
			data, ok := files[d.File]
			if !ok {
				continue
			}
			if problem = locatedIn(d, data); problem == "" {
				break
			}
		}
		if problem != "" {
			t.Fatalf("%s: %s", problem, where)
		}
	}
}

// locatedIn says why d cannot be located in data, or "".
func locatedIn(d Diagnostic, data []byte) string {
	if n := len(splitDocuments(data)); d.Doc > n {
		return fmt.Sprintf("diagnostic of document %d; the file has %d", d.Doc, n)
	}
	if d.Line == 0 {
		return ""
	}
	lines := bytes.Split(lineFeeds(data), []byte("\n")) // a lone CR ends a line, as in YAML
	if d.Line > len(lines) {
		return fmt.Sprintf("diagnostic at line %d; the file has %d", d.Line, len(lines))
	}
	if n := utf8.RuneCount(lines[d.Line-1]); d.Column > n+1 {
		return fmt.Sprintf("diagnostic at column %d; line %d has %d characters", d.Column, d.Line, n)
	}
	return ""
}

// rejects reports whether an error diagnostic means that the document it
// names is not in force as written. A conflict does not reject: the
// resource stays in force and only loses the contested host or subset.
func rejects(d Diagnostic) bool {
	if d.Severity != SeverityError || d.Resource == "" {
		return false
	}
	switch d.Code {
	case CodeVirtualServiceConflict, CodeDestinationRuleConflict, CodeServiceEntryConflict, CodePeerAuthnConflict:
		return false
	}
	return true
}

// checkRejections checks that no resource rejected by an error diagnostic
// of snap is in force in the version the diagnostic rejected: it is absent,
// or it is the version that was in force in prev (nil: before any load),
// or it comes from another document (a duplicate was rejected).
func checkRejections(t *testing.T, snap, prev *Snapshot) {
	t.Helper()
	for _, d := range snap.Diagnostics {
		if !rejects(d) {
			continue
		}
		cur := findResource(snap, d.Resource)
		if cur == nil || cur.meta.File != d.File || cur.meta.Doc != d.Doc {
			continue
		}
		if prev != nil {
			if old := findResource(prev, d.Resource); old != nil && sameResource(*old, *cur) {
				continue
			}
		}
		t.Fatalf("%s is rejected (%s) but in force as written:\n%s", d.Resource, d.Error(), dumpSnapshot(snap))
	}
}

// anyResource is a snapshot resource of any kind.
type anyResource struct {
	meta        Meta
	spec        proto.Message
	annotations map[string]string
}

// meshRoutesKept reports whether after is the VirtualService that the
// Gateway API routes attached to a Service translate to ("mesh.<host>",
// one per host, merged from every route attached to it) and still holds
// each route of before, in the same order: another file's routes for the
// same Service are merged into it, so adding them changes it, but never
// drops or alters what the first file's routes put there.
func meshRoutesKept(before, after anyResource) bool {
	b, ok1 := before.spec.(*networking.VirtualService)
	a, ok2 := after.spec.(*networking.VirtualService)
	if !ok1 || !ok2 || before.annotations[AnnotationGeneratedFrom] == "" || !strings.HasPrefix(before.meta.Name, "mesh.") {
		return false
	}
	kept := func(was, now []proto.Message) bool {
		i := 0
		for _, m := range now {
			if i < len(was) && proto.Equal(was[i], m) {
				i++
			}
		}
		return i == len(was)
	}
	msgs := func(vs *networking.VirtualService) (h, t, l []proto.Message) {
		for _, r := range vs.GetHttp() {
			h = append(h, r)
		}
		for _, r := range vs.GetTcp() {
			t = append(t, r)
		}
		for _, r := range vs.GetTls() {
			l = append(l, r)
		}
		return h, t, l
	}
	bh, bt, bl := msgs(b)
	ah, at, al := msgs(a)
	return slices.Equal(b.GetHosts(), a.GetHosts()) && kept(bh, ah) && kept(bt, at) && kept(bl, al)
}

func resources(s *Snapshot) []anyResource {
	var out []anyResource
	for _, r := range s.VirtualServices {
		out = append(out, anyResource{r.Meta, r.Spec, r.Annotations})
	}
	for _, r := range s.DestinationRules {
		out = append(out, anyResource{r.Meta, r.Spec, r.Annotations})
	}
	for _, r := range s.ServiceEntries {
		out = append(out, anyResource{r.Meta, r.Spec, r.Annotations})
	}
	for _, r := range s.WorkloadEntries {
		out = append(out, anyResource{r.Meta, r.Spec, r.Annotations})
	}
	for _, r := range s.PeerAuthentications {
		out = append(out, anyResource{r.Meta, r.Spec, r.Annotations})
	}
	for _, r := range s.AuthorizationPolicies {
		out = append(out, anyResource{r.Meta, r.Spec, r.Annotations})
	}
	for _, r := range s.RequestAuthentications {
		out = append(out, anyResource{r.Meta, r.Spec, r.Annotations})
	}
	return out
}

// findResource finds a resource by its Meta.String ("Kind ns/name").
func findResource(s *Snapshot, name string) *anyResource {
	for _, r := range resources(s) {
		if r.meta.String() == name {
			return &r
		}
	}
	return nil
}

func sameResource(a, b anyResource) bool {
	return a.meta == b.meta && proto.Equal(a.spec, b.spec) && fmt.Sprint(a.annotations) == fmt.Sprint(b.annotations)
}

// marshalSpecs serializes every spec of a snapshot, deterministically.
func marshalSpecs(t *testing.T, s *Snapshot) []byte {
	t.Helper()
	var out []byte
	for _, r := range resources(s) {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r.spec)
		if err != nil {
			t.Fatal(err)
		}
		out = append(append(out, r.meta.Key()...), b...)
	}
	return out
}

// dumpSnapshot renders a snapshot for a failure message.
func dumpSnapshot(s *Snapshot) string {
	var b strings.Builder
	for _, r := range resources(s) {
		fmt.Fprintf(&b, "\n\t%s seq=%d %s:%d doc %d: %v", r.meta, r.meta.Seq, r.meta.File, r.meta.Line, r.meta.Doc, r.spec)
	}
	for _, d := range s.Diagnostics {
		fmt.Fprintf(&b, "\n\t%s %s %s", d.Severity, d.Code, d.Error())
	}
	return b.String()
}

// rawYAML finds Go raw string literals that hold a resource.
var rawYAML = regexp.MustCompile("`([^`]*kind:[^`]*)`")

// yamlFence finds ```yaml blocks in Markdown.
var yamlFence = regexp.MustCompile("(?s)```yaml[ \t]*\n(.*?)```")

// fuzzSeeds gathers realistic Istio YAML for the config fuzz targets: the
// examples, every ```yaml block of the docs, the YAML literals of the
// repository's tests (valid configs and deliberate mistakes), a few
// hand-written edge cases, and the *.yaml files under $WEFT_FUZZ_SEEDS
// when it is set (e.g. Istio's samples; see docs/benchmarks.md).
func fuzzSeeds(f *testing.F) [][]byte {
	f.Helper()
	root := filepath.Join("..", "..")
	seeds := [][]byte{
		[]byte(reviewsDR),
		[]byte(vsYAML("reviews", "90", "-10") + "---\n" + reviewsDR),
		[]byte(fuzzBase),
		[]byte("---\n---\n"),
		[]byte("apiVersion: [\n"),
		[]byte("a: &a [*a]\n"),
		[]byte("kind: VirtualService\nmetadata: {name: x}\nspec: {http: [{route: [{destination: {host: a}, weigth: 1}]}]}\n"),
		[]byte("kind: WorkloadEntry\napiVersion: networking.istio.io/v1\nmetadata: {name: x}\nspec: {ports: {a: 1}, address: x}\n"),
		[]byte("kind: VirtualService\napiVersion: networking.istio.io/v1\nmetadata: {name: x}\nspec: {hosts: [a], http: [{timeout: 1h, match: [{headers: {a: {regex: '('}}}]}]}\n"),
		[]byte("kind: DestinationRule\napiVersion: networking.istio.io/v1\nmetadata: {name: x, creationTimestamp: '2024-05-01T10:00:00Z'}\nspec: &s {host: reviews, subsets: [{name: v1, labels: {version: v1}}], trafficPolicy: {<<: {}}}\n"),
	}
	add := func(b []byte) {
		if len(bytes.TrimSpace(b)) > 0 && len(b) < 8<<10 {
			seeds = append(seeds, b)
		}
	}
	var paths []string
	for _, glob := range []string{"examples/*/*.yaml", "docs/*.md", "README.md", "internal/*/*_test.go", "internal/*/*/*_test.go", "e2e/*_test.go"} {
		m, err := filepath.Glob(filepath.Join(root, glob))
		if err != nil {
			f.Fatal(err)
		}
		paths = append(paths, m...)
	}
	if dir := os.Getenv("WEFT_FUZZ_SEEDS"); dir != "" {
		err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() && (strings.HasSuffix(p, ".yaml") || strings.HasSuffix(p, ".yml")) {
				paths = append(paths, p)
			}
			return err
		})
		if err != nil {
			f.Fatal(err)
		}
	}
	slices.Sort(paths)
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		switch {
		case strings.HasSuffix(p, ".md"):
			for _, m := range yamlFence.FindAllSubmatch(data, -1) {
				add(m[1])
			}
		case strings.HasSuffix(p, ".go"):
			if strings.HasSuffix(p, "fuzz_test.go") {
				continue
			}
			for _, m := range rawYAML.FindAllSubmatch(data, -1) {
				add(m[1])
			}
		default:
			add(data)
		}
	}
	return seeds
}
