package generate

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cache "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/proto"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry/static"
	"weft.dev/weft/internal/xds/contract"
)

const carryRatingsWE = `apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ratings-v2, namespace: legacy}
spec:
  address: 10.1.0.2
  serviceAccount: ratings
  labels: {app: ratings, security.istio.io/tlsMode: istio}
`

const carryRouting = `
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews.bookinfo.svc.cluster.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
`

// TestCarryOverMatchesFromScratch: a snapshot built from the one before
// (mesh.BuildFrom) gives every proxy exactly what a snapshot built from
// scratch gives it, through endpoint changes (carried over: unchanged
// resources keep their identity) and config and service changes (nothing
// carried).
func TestCarryOverMatchesFromScratch(t *testing.T) {
	store := config.NewStore(config.Options{Logger: slog.New(slog.DiscardHandler)})
	files := map[string][]byte{"mesh.yaml": []byte(bookinfo + carryRouting), "ratings-v2.yaml": []byte(carryRatingsWE)}
	ratingsProxy := contract.Identity{ID: contract.DefaultNodeID("10.1.0.1", "ratings-v1", "legacy"), Namespace: "legacy",
		WorkloadName: "ratings-v1", Labels: map[string]string{"app": "ratings", "security.istio.io/tlsMode": "istio"},
		IPs: []string{"10.1.0.1"}, ServiceAccount: "ratings", MTLS: true}
	proxies := []contract.Identity{reviewsProxy, capturedProxy(reviewsProxy), ratingsProxy, capturedProxy(ratingsProxy)}
	replace := func(file, old, new string) {
		t.Helper()
		s := string(files[file])
		if !strings.Contains(s, old) {
			t.Fatalf("%s has no %q", file, old)
		}
		files[file] = []byte(strings.Replace(s, old, new, 1))
	}
	const greeterCluster = "outbound|50051||greeter.apps.svc.cluster.local"
	var prev *mesh.Snapshot
	var prevRes []Resources
	for _, step := range []struct {
		name    string
		edit    func()
		carried bool     // greeter's cluster and load assignment keep their identity (it is never changed)
		changed []string // resources that must differ from the step before
	}{
		{"initial", func() {}, false, nil},
		{"endpoint address", func() { replace("ratings-v2.yaml", "10.1.0.2", "10.1.0.3") }, true,
			[]string{"outbound|9080||ratings.legacy.svc.cluster.local"}},
		{"endpoint service account (the cluster's SANs)", func() { replace("ratings-v2.yaml", "serviceAccount: ratings", "serviceAccount: ratings-new") }, true,
			[]string{"outbound|9080||ratings.legacy.svc.cluster.local"}},
		{"endpoint in a file with other resources", func() {
			replace("mesh.yaml", "labels: {app: reviews, version: v2}", "labels: {app: reviews, version: v1}")
		}, true,
			[]string{"outbound|9080|v1|reviews.bookinfo.svc.cluster.local"}},
		{"the proxy's own endpoint", func() {
			replace("mesh.yaml", "address: 127.0.0.2\n  serviceAccount: reviews", "address: 127.0.0.2\n  ports: {http: 9081}\n  serviceAccount: reviews-sa")
		}, true, nil},
		{"an endpoint removed", func() { delete(files, "ratings-v2.yaml") }, true, nil},
		{"a VirtualService added (clusters carried over)", func() {
			files["vs.yaml"] = []byte("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: ratings, namespace: legacy}\nspec:\n  hosts: [ratings.legacy.svc.cluster.local]\n  http:\n  - timeout: 3s\n    route: [{destination: {host: ratings.legacy.svc.cluster.local}}]\n")
		}, true, nil},
		{"a VirtualService and an endpoint changed", func() {
			replace("vs.yaml", "timeout: 3s", "timeout: 4s")
			files["ratings-v2.yaml"] = []byte(strings.Replace(carryRatingsWE, "10.1.0.2", "10.1.0.4", 1)) // back, elsewhere
		}, true, []string{"outbound|9080||ratings.legacy.svc.cluster.local"}},
		{"a DestinationRule changed", func() {
			replace("mesh.yaml", "- {name: v2, labels: {version: v2}}", "- {name: v2, labels: {version: v2}, trafficPolicy: {connectionPool: {tcp: {maxConnections: 7}}}}")
		}, false, nil},
		{"service change", func() {
			replace("mesh.yaml", "ports: [{number: 50051, name: grpc, protocol: GRPC}]", "ports: [{number: 50051, name: grpc, protocol: GRPC}, {number: 8080, name: http, protocol: HTTP}]")
		}, false, nil},
		{"endpoint change after the service change", func() { files["ratings-v2.yaml"] = []byte(carryRatingsWE) }, true, nil},
	} {
		step.edit()
		cfg := store.Load(files)
		for _, d := range cfg.Diagnostics {
			if d.Severity == config.SeverityError {
				t.Fatalf("%s: %s", step.name, d.Error())
			}
		}
		reg := static.Build(cfg, "")
		cur := mesh.BuildFrom(prev, cfg, reg, mesh.Options{})
		scratch := mesh.Build(cfg, reg, mesh.Options{})
		var res []Resources
		for i, id := range proxies {
			got, want := ForProxy(cur, id), ForProxy(scratch, id)
			for _, c := range []struct {
				typ       string
				got, want []types.Resource
			}{{"listeners", got.Listeners, want.Listeners}, {"routes", got.Routes, want.Routes},
				{"clusters", got.Clusters, want.Clusters}, {"endpoints", got.Endpoints, want.Endpoints}} {
				if err := sameResourceLists(c.got, c.want); err != "" {
					t.Errorf("%s: proxy %d %s: carried over differs from scratch: %s", step.name, i, c.typ, err)
				}
			}
			res = append(res, got)
			if prevRes == nil {
				continue
			}
			before := prevRes[i]
			if i == 0 {
				same := find(got.Clusters, greeterCluster) == find(before.Clusters, greeterCluster) &&
					find(got.Endpoints, greeterCluster) == find(before.Endpoints, greeterCluster)
				if same != step.carried {
					t.Errorf("%s: greeter's cluster and load assignment kept their identity: %v, want %v", step.name, same, step.carried)
				}
			}
			for _, name := range step.changed {
				a, b := find(got.Clusters, name), find(before.Clusters, name)
				ea, eb := find(got.Endpoints, name), find(before.Endpoints, name)
				if (a == nil || proto.Equal(a, b)) && (ea == nil || proto.Equal(ea, eb)) {
					t.Errorf("%s: proxy %d: %s did not change", step.name, i, name)
				}
			}
		}
		prev, prevRes = cur, res
	}
}

func find(rs []types.Resource, name string) types.Resource {
	for _, r := range rs {
		if cache.GetResourceName(r) == name {
			return r
		}
	}
	return nil
}

// sameResourceLists compares two lists resource by resource.
func sameResourceLists(got, want []types.Resource) string {
	if len(got) != len(want) {
		return "lengths differ"
	}
	for i := range got {
		if !proto.Equal(got[i], want[i]) {
			return cache.GetResourceName(want[i]) + " differs"
		}
	}
	return ""
}
