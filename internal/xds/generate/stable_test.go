package generate

import (
	"bytes"
	"testing"

	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/proto"
)

// TestEncodingIsStable: generating twice gives every resource the same
// bytes, so the content hash that versions it for delta xDS (and for a
// reconnecting proxy's initial_resource_versions) changes only when the
// resource does. Typed configs holding maps (RBAC policies, JWT providers)
// are where this would break: packed into Any without a deterministic
// encoding, their bytes change from one generation to the next.
func TestEncodingIsStable(t *testing.T) {
	opts := proto.MarshalOptions{Deterministic: true}
	for _, tc := range goldenCases() {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.mesh()
			first := ForProxy(s, tc.proxy).ByType()
			for range 5 {
				again := ForProxy(s, tc.proxy).ByType()
				for typ, items := range first {
					for i, it := range items {
						a, _ := opts.Marshal(it)
						b, _ := opts.Marshal(again[typ][i])
						if !bytes.Equal(a, b) {
							t.Fatalf("%s %q: encoded differently by two generations", typ, cachev3.GetResourceName(it))
						}
					}
				}
			}
		})
	}
}
