package generate

import (
	"slices"
	"strings"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"

	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/xds/contract"
)

func sortByName(rs []types.Resource) {
	slices.SortStableFunc(rs, func(a, b types.Resource) int {
		return strings.Compare(cache.GetResourceName(a), cache.GetResourceName(b))
	})
}

// sortedKeys returns a map's keys in order; Istio's maps (headers, query
// parameters, labels) are unordered and output must be deterministic.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// drView is which DestinationRules proxy id's outbound resources are built
// from: its namespace's, and its labels' where a rule's workloadSelector
// selects it (mesh.SubsetIndex.ViewFor).
func drView(s *mesh.Snapshot, id contract.Identity) mesh.DRView {
	return s.Subsets.ViewFor(id.Namespace, id.Labels)
}

// scopeOf is what proxy id is sent of the mesh's services: its Sidecar's
// or the default egress scope, and for a gateway every service exported
// to its namespace (Sidecar resources do not apply to gateways, which
// route to whatever their VirtualServices name, in any namespace).
func scopeOf(s *mesh.Snapshot, id contract.Identity) *mesh.Visibility {
	if id.Router() {
		return s.Scopes.ForGateway(id.Namespace)
	}
	return s.Scopes.For(id.Namespace, id.Labels)
}
