package generate

import (
	"maps"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	"weft.dev/weft/internal/xds/contract"
)

// TestTypedConfigsAreInTheContract keeps contract.TypedConfigURLs equal to
// the set of types the generators put inside an Any over the golden cases:
// a type missing from the contract would be unknown to weft-proxy (its
// /config_dump failed on exactly that), and a type listed but never
// emitted is weight the lean proxy need not carry.
func TestTypedConfigsAreInTheContract(t *testing.T) {
	emitted := map[string]string{} // type URL -> first case emitting it
	for _, tc := range goldenCases() {
		got := ForProxy(tc.mesh(), tc.proxy)
		for _, kind := range kinds {
			for _, r := range kind.get(got) {
				anyURLs(t, r.(proto.Message).ProtoReflect(), func(url string) {
					if _, ok := emitted[url]; !ok {
						emitted[url] = tc.name + "/" + kind.file
					}
				})
			}
		}
	}
	listed := contract.TypedConfigURLs()
	for _, url := range slices.Sorted(maps.Keys(emitted)) {
		if !slices.Contains(listed, url) {
			t.Errorf("%s (first in %s) is emitted but not listed in contract's typedConfigs: weft-proxy may not link it", url, emitted[url])
		}
	}
	for _, url := range listed {
		if _, ok := emitted[url]; !ok {
			t.Errorf("contract lists %s, but no golden case emits it: drop it, or add a case that covers it", url)
		}
	}
}

// anyURLs calls f with the type URL of every Any in m, decoding each one
// to find the Anys nested in it (an HTTP connection manager's filters).
func anyURLs(t *testing.T, m protoreflect.Message, f func(string)) {
	t.Helper()
	if a, ok := m.Interface().(*anypb.Any); ok {
		f(a.GetTypeUrl())
		inner, err := a.UnmarshalNew()
		if err != nil {
			t.Fatalf("decoding %s: %v", a.GetTypeUrl(), err)
		}
		anyURLs(t, inner.ProtoReflect(), f)
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			for i := 0; i < v.List().Len(); i++ {
				anyURLs(t, v.List().Get(i).Message(), f)
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				anyURLs(t, mv.Message(), f)
				return true
			})
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			anyURLs(t, v.Message(), f)
		}
		return true
	})
}
