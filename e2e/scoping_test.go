package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"weft.dev/weft/internal/controlplane"
	"weft.dev/weft/internal/localmesh"
	"weft.dev/weft/internal/mesh"
)

// outboundClusters lists the outbound cluster names in w's /config_dump.
func outboundClusters(t *testing.T, w *localmesh.Workload) []string {
	t.Helper()
	var dump struct{ Clusters []map[string]any }
	if err := json.Unmarshal([]byte(adminGet(t, w, "/config_dump")), &dump); err != nil {
		t.Fatalf("decoding /config_dump: %v", err)
	}
	var out []string
	for _, c := range dump.Clusters {
		if name, _ := c["name"].(string); strings.HasPrefix(name, "outbound|") {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// TestControlPlaneSidecarScoping: a Sidecar resource limits what one
// proxy is sent to the hosts its egress lists. productpage, which calls
// reviews only, stops receiving ratings' and the other namespace's
// clusters, still reaches reviews, and no longer routes to ratings; other
// proxies keep everything; removing the Sidecar restores the full view.
func TestControlPlaneSidecarScoping(t *testing.T) {
	m := NewMesh(t)
	m.Service("reviews", "HTTP", "v1")
	m.Service("ratings", "HTTP", "v1")
	m.WriteConfig("catalog.yaml", `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: catalog, namespace: store}
spec:
  hosts: [catalog.store.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1}]
`)
	page := m.Client("productpage")
	other := m.Client("details")
	c := newClient()
	waitVersion(t, c, page, "ratings", nil, "v1")
	waitVersion(t, c, page, "reviews", nil, "v1")
	var full []string
	Eventually(t, 10*time.Second, "productpage sees every service", func() error {
		if full = outboundClusters(t, page); len(full) != 3 {
			return fmt.Errorf("outbound clusters %v, want reviews, ratings and catalog", full)
		}
		return nil
	})

	m.WriteConfig("productpage-sidecar.yaml", `apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: productpage, namespace: default}
spec:
  workloadSelector:
    labels: {app: productpage}
  egress:
  - hosts: ["./reviews.default.svc.cluster.local"]
`)
	Eventually(t, 10*time.Second, "productpage's config scoped to reviews", func() error {
		if got := outboundClusters(t, page); !slices.Equal(got, []string{"outbound|8080||reviews.default.svc.cluster.local"}) {
			return fmt.Errorf("outbound clusters %v", got)
		}
		return nil
	})
	t.Logf("productpage's outbound clusters: %d → %d", len(full), len(outboundClusters(t, page)))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if code, r, err := Get(ctx, c, page, "reviews", "/", nil); err != nil || code != 200 || r.Version != "v1" {
		t.Errorf("reviews through the scoped proxy: %d %+v %v", code, r, err)
	}
	if code, _, err := Get(ctx, c, page, "ratings", "/", nil); err == nil && code == 200 {
		t.Errorf("ratings through the scoped proxy answered 200; it is outside its Sidecar's egress hosts")
	}
	Eventually(t, 10*time.Second, "details (not selected) keeps every cluster", func() error {
		if got := outboundClusters(t, other); len(got) != len(full) {
			return fmt.Errorf("outbound clusters %v", got)
		}
		return nil
	})

	if err := os.Remove(filepath.Join(m.Dir, "productpage-sidecar.yaml")); err != nil {
		t.Fatal(err)
	}
	waitVersion(t, c, page, "ratings", nil, "v1")
	Eventually(t, 10*time.Second, "productpage sees every service again", func() error {
		if got := outboundClusters(t, page); len(got) != len(full) {
			return fmt.Errorf("outbound clusters %v", got)
		}
		return nil
	})
}

// TestControlPlaneDefaultEgressScopeNamespace: with weft serve
// --default-egress-scope namespace, a proxy no Sidecar selects is sent
// the services of its own namespace, and a service of another namespace
// only once a VirtualService it sees routes there.
func TestControlPlaneDefaultEgressScopeNamespace(t *testing.T) {
	m := NewMesh(t, func(o *controlplane.Options) { o.EgressScope = mesh.EgressScopeNamespace })
	m.Service("reviews", "HTTP", "v1")
	m.WriteConfig("catalog.yaml", `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: catalog, namespace: store}
spec:
  hosts: [catalog.store.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1}]
`)
	page := m.Client("productpage")
	c := newClient()
	waitVersion(t, c, page, "reviews", nil, "v1")
	reviewsOnly := []string{"outbound|8080||reviews.default.svc.cluster.local"}
	if got := outboundClusters(t, page); !slices.Equal(got, reviewsOnly) {
		t.Errorf("namespace scope: productpage's outbound clusters = %v, want %v (not store's catalog)", got, reviewsOnly)
	}

	// reviews' traffic mirrored to catalog: now productpage needs it.
	m.WriteConfig("reviews-vs.yaml", `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews}}]
    mirror: {host: catalog.store.svc.cluster.local}
`)
	Eventually(t, 10*time.Second, "catalog sent once a route reaches it", func() error {
		if got := outboundClusters(t, page); len(got) != 2 {
			return fmt.Errorf("outbound clusters %v, want reviews and catalog", got)
		}
		return nil
	})
}
