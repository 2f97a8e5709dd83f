package guard

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry/static"
)

// FuzzGuard loads a served config, then adds a fuzzed file (a), then
// replaces it (b), in a store judged by the guard. Whatever the files say,
// loading is deterministic, a held change is not in force, and the traffic
// the config served before keeps being served: a new file may be rejected,
// held or reported, never break backend. `go test` runs the seeds and
// testdata/fuzz/FuzzGuard/; bench/fuzz.sh fuzzes it.
func FuzzGuard(f *testing.F) {
	seeds := []string{
		routes(0, 100), routes(100, 0), dr("v3", ""), dr("v3", `, annotations: {weft.dev/allow-unserved: "true"}`),
		services, "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: other}\nspec:\n  hosts: [\"*\"]\n  http: [{route: [{destination: {host: nowhere}}]}]\n",
	}
	for _, p := range []string{"../../examples/canary/backend.yaml", "../../examples/canary/services.yaml", "../../examples/broken/routes.yaml"} {
		if b, err := os.ReadFile(filepath.FromSlash(p)); err == nil {
			seeds = append(seeds, string(b))
		}
	}
	for i, s := range seeds {
		f.Add([]byte(s), []byte(seeds[(i+1)%len(seeds)]))
	}
	const backend = "backend.default.svc.cluster.local"
	f.Fuzz(func(t *testing.T, a, b []byte) {
		base := files("services.yaml", services, "dr.yaml", dr("v2", ""), "vs.yaml", routes(90, 10))
		steps := []map[string][]byte{base, with(base, "f.yaml", a), with(base, "f.yaml", b)}
		run := func() []*config.Snapshot {
			s := newStore()
			var out []*config.Snapshot
			for i, in := range steps {
				snap := s.Load(in)
				m := mesh.New(snap, static.Build(snap, ""), "")
				if !served(Outcomes(m, backend)) {
					t.Fatalf("load %d: %s is not served any more:%s", i+1, backend, dump(snap))
				}
				if i > 0 {
					checkHeld(t, snap, out[i-1])
				}
				out = append(out, snap)
			}
			return out
		}
		one, other := run(), run()
		for i := range one {
			if !sameSnapshot(one[i], other[i]) {
				t.Fatalf("load %d: two stores loading the same files disagree:%s\nother:%s", i+1, dump(one[i]), dump(other[i]))
			}
		}
	})
}

func with(files map[string][]byte, name string, data []byte) map[string][]byte {
	out := map[string][]byte{name: data}
	for k, v := range files {
		out[k] = v
	}
	return out
}

// checkHeld checks that every resource the guard held is in force in the
// version that was in force before (prev), or not at all.
func checkHeld(t *testing.T, snap, prev *config.Snapshot) {
	t.Helper()
	for _, d := range snap.Diagnostics {
		if d.Code != config.CodeTrafficHeld {
			continue
		}
		now, before := find(snap, d.Resource), find(prev, d.Resource)
		if now != nil && (before == nil || !reflect.DeepEqual(now.meta, before.meta) || !proto.Equal(now.spec, before.spec)) {
			t.Fatalf("%s is held (%s) but its new version is in force:%s", d.Resource, d.Error(), dump(snap))
		}
	}
}

type resource struct {
	meta config.Meta
	spec proto.Message
}

func all(s *config.Snapshot) []resource {
	var out []resource
	for _, r := range s.VirtualServices {
		out = append(out, resource{r.Meta, r.Spec})
	}
	for _, r := range s.DestinationRules {
		out = append(out, resource{r.Meta, r.Spec})
	}
	for _, r := range s.ServiceEntries {
		out = append(out, resource{r.Meta, r.Spec})
	}
	for _, r := range s.WorkloadEntries {
		out = append(out, resource{r.Meta, r.Spec})
	}
	return out
}

func find(s *config.Snapshot, name string) *resource {
	for _, r := range all(s) {
		if r.meta.String() == name {
			return &r
		}
	}
	return nil
}

// sameSnapshot compares resources and diagnostics, not versions.
func sameSnapshot(a, b *config.Snapshot) bool {
	ra, rb := all(a), all(b)
	return slices.Equal(a.Diagnostics, b.Diagnostics) && slices.EqualFunc(ra, rb, func(x, y resource) bool {
		return x.meta == y.meta && proto.Equal(x.spec, y.spec)
	})
}

func dump(s *config.Snapshot) string {
	out := ""
	for _, r := range all(s) {
		out += fmt.Sprintf("\n\t%s %s:%d: %v", r.meta, r.meta.File, r.meta.Line, r.spec)
	}
	for _, d := range s.Diagnostics {
		out += fmt.Sprintf("\n\t%s %s %s", d.Severity, d.Code, d.Error())
	}
	return out
}
