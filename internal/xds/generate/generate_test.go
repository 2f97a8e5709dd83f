package generate

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/xds/contract"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

// goldenCase is one fixture: a mesh snapshot and the proxy it is generated for.
type goldenCase struct {
	name  string
	mesh  func() *mesh.Snapshot
	proxy contract.Identity
}

func TestGolden(t *testing.T) {
	for _, tc := range goldenCases() {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.mesh()
			got := ForProxy(s, tc.proxy)
			validate(t, got)

			again := ForProxy(s, tc.proxy)
			for _, kind := range kinds {
				if a, b := render(t, kind.get(got)), render(t, kind.get(again)); !bytes.Equal(a, b) {
					t.Fatalf("%s: two generations differ: output is not deterministic", kind.file)
				}
			}

			for _, kind := range kinds {
				path := filepath.Join("testdata", tc.name, kind.file)
				b := render(t, kind.get(got))
				if *update {
					if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
						t.Fatal(err)
					}
					if err := os.WriteFile(path, b, 0o644); err != nil {
						t.Fatal(err)
					}
					continue
				}
				want, err := os.ReadFile(path)
				if err != nil {
					t.Fatalf("%v (run with -update to create it)", err)
				}
				if !bytes.Equal(b, want) {
					t.Errorf("%s differs from golden file (run go test -update and review the diff):\n%s", path, b)
				}
			}
		})
	}
}

var kinds = []struct {
	file string
	get  func(Resources) []types.Resource
}{
	{"listeners.json", func(r Resources) []types.Resource { return r.Listeners }},
	{"routes.json", func(r Resources) []types.Resource { return r.Routes }},
	{"clusters.json", func(r Resources) []types.Resource { return r.Clusters }},
	{"endpoints.json", func(r Resources) []types.Resource { return r.Endpoints }},
}

// validate runs protoc-gen-validate on every resource and checks the set is
// consistent (every RDS/EDS name referenced exists), as go-control-plane's
// cache would.
func validate(t *testing.T, r Resources) {
	t.Helper()
	for _, kind := range kinds {
		for _, res := range kind.get(r) {
			v, ok := res.(interface{ ValidateAll() error })
			if !ok {
				t.Fatalf("%T has no ValidateAll", res)
			}
			if err := v.ValidateAll(); err != nil {
				t.Errorf("%s %s: %v", kind.file, cache.GetResourceName(res), err)
			}
		}
	}
	snap, err := cache.NewSnapshot("1", r.ByType())
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Consistent(); err != nil {
		t.Errorf("inconsistent resources: %v", err)
	}
}

// render is deterministic, multi-line JSON: protojson randomises its
// whitespace on purpose, so compact it and indent it ourselves.
func render(t *testing.T, rs []types.Resource) []byte {
	t.Helper()
	var buf bytes.Buffer
	buf.WriteByte('[')
	for i, r := range rs {
		if i > 0 {
			buf.WriteByte(',')
		}
		b, err := protojson.MarshalOptions{}.Marshal(r.(proto.Message))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Compact(&buf, b); err != nil {
			t.Fatal(err)
		}
	}
	buf.WriteByte(']')
	var out bytes.Buffer
	if err := json.Indent(&out, buf.Bytes(), "", "  "); err != nil {
		t.Fatal(err)
	}
	out.WriteByte('\n')
	return out.Bytes()
}

// TestForProxyPartsMatchesForProxy: for every golden case, what
// ForProxyParts leaves to its parts is exactly what ForProxy lists.
func TestForProxyPartsMatchesForProxy(t *testing.T) {
	names := func(rs []types.Resource) []string {
		var out []string
		for _, r := range rs {
			out = append(out, cache.GetResourceName(r))
		}
		slices.Sort(out)
		return out
	}
	for _, tc := range goldenCases() {
		s := tc.mesh()
		full, parts := ForProxy(s, tc.proxy), ForProxyParts(s, tc.proxy)
		if parts.Clusters != nil || parts.Endpoints != nil {
			t.Errorf("%s: ForProxyParts made the merged lists", tc.name)
		}
		for _, c := range []struct {
			typ  string
			list []types.Resource
			p    Parts
		}{{"clusters", full.Clusters, parts.ClusterParts}, {"endpoints", full.Endpoints, parts.EndpointParts}} {
			shared := slices.Clone(c.p.Shared)
			for _, l := range c.p.Lazy {
				r := l.Build(s)
				if cache.GetResourceName(r) != l.Name {
					t.Errorf("%s %s: lazy %q built %q", tc.name, c.typ, l.Name, cache.GetResourceName(r))
				}
				if i := slices.IndexFunc(c.list, func(x types.Resource) bool { return cache.GetResourceName(x) == l.Name }); i < 0 || !proto.Equal(r, c.list[i]) {
					t.Errorf("%s %s: lazy %q builds other than ForProxy lists", tc.name, c.typ, l.Name)
				}
				shared = append(shared, r)
			}
			if !slices.IsSortedFunc(c.p.Lazy, func(a, b Lazy) int { return strings.Compare(a.Name, b.Name) }) {
				t.Errorf("%s %s: lazy list not sorted by name", tc.name, c.typ)
			}
			got, want := names(append(shared, c.p.Own...)), names(c.list)
			if !slices.Equal(got, want) {
				t.Errorf("%s %s: parts %v, ForProxy %v", tc.name, c.typ, got, want)
			}
		}
	}
}
