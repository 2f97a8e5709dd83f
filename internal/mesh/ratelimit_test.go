package mesh

import (
	"log/slog"
	"testing"

	"weft.dev/weft/internal/config"
)

// TestRateLimitFor: the most specific RateLimit applies — the workload's
// by selector, else its namespace's, else the root namespace's — and the
// oldest wins at one level.
func TestRateLimitFor(t *testing.T) {
	docs := `
apiVersion: networking.weft.dev/v1alpha1
kind: RateLimit
metadata: {name: mesh, namespace: istio-system}
spec: {limit: {requestsPerUnit: 1000, unit: SECOND}}
---
apiVersion: networking.weft.dev/v1alpha1
kind: RateLimit
metadata: {name: shop, namespace: shop, creationTimestamp: "2025-01-01T00:00:00Z"}
spec: {limit: {requestsPerUnit: 100, unit: SECOND}}
---
apiVersion: networking.weft.dev/v1alpha1
kind: RateLimit
metadata: {name: shop-later, namespace: shop, creationTimestamp: "2025-02-01T00:00:00Z"}
spec: {limit: {requestsPerUnit: 1, unit: SECOND}}
---
apiVersion: networking.weft.dev/v1alpha1
kind: RateLimit
metadata: {name: reviews, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  limit: {requestsPerUnit: 10, unit: SECOND}
`
	snap := config.NewStore(config.Options{Logger: slog.New(slog.DiscardHandler)}).Load(map[string][]byte{"rl.yaml": []byte(docs)})
	for _, d := range snap.Diagnostics {
		t.Fatalf("unexpected %s", d.Error())
	}
	m := Build(snap, nil, Options{})
	for _, c := range []struct {
		ns     string
		labels map[string]string
		want   string
	}{
		{"shop", map[string]string{"app": "reviews"}, "reviews"},
		{"shop", map[string]string{"app": "ratings"}, "shop"},
		{"other", map[string]string{"app": "reviews"}, "mesh"},
	} {
		got := m.RateLimits.For(c.ns, c.labels)
		if got == nil || got.Name != c.want {
			t.Errorf("For(%s, %v) = %v, want %s", c.ns, c.labels, got, c.want)
		}
	}
	if got := Build(&config.Snapshot{}, nil, Options{}).RateLimits.For("shop", nil); got != nil {
		t.Errorf("no RateLimits: For = %v", got)
	}
}
