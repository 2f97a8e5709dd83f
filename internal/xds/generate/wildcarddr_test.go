package generate

import (
	"testing"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"weft.dev/weft/internal/xds/contract"
)

// A mesh-wide DestinationRule in the root namespace (host "*.local", as
// Istio's documentation writes mesh defaults) governs every service that
// has no rule of its own; a service's own rule replaces it whole, and a
// namespace's wildcard covers that namespace's services.
const wildcardDRConfig = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: cart, namespace: shop}
spec:
  hosts: [cart.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints:
  - {address: 10.0.0.1, labels: {version: v1}}
  - {address: 10.0.0.2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: pay, namespace: shop}
spec:
  hosts: [pay.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.1.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: users, namespace: auth}
spec:
  hosts: [users.auth.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.2.1}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: mesh-default, namespace: istio-system}
spec:
  host: "*.local"
  trafficPolicy: {loadBalancer: {simple: LEAST_REQUEST}}
  subsets:
  - {name: v1, labels: {version: v1}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: pay, namespace: shop}
spec:
  host: pay
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: auth-default, namespace: auth}
spec:
  host: "*.auth.svc.cluster.local"
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
`

func TestWildcardDestinationRules(t *testing.T) {
	s := snapshotFromYAML(t, wildcardDRConfig)
	r := ForProxy(s, contract.Identity{ID: "client", Namespace: "web"})
	lb := map[string]cluster.Cluster_LbPolicy{}
	for _, res := range r.Clusters {
		c := res.(*cluster.Cluster)
		lb[c.GetName()] = c.GetLbPolicy()
	}
	name := func(subset, host string) string { return contract.ClusterName(contract.Outbound, 80, subset, host) }
	for _, w := range []struct {
		cluster string
		lb      cluster.Cluster_LbPolicy
	}{
		{name("", "cart.shop.svc.cluster.local"), cluster.Cluster_LEAST_REQUEST},   // the mesh default
		{name("v1", "cart.shop.svc.cluster.local"), cluster.Cluster_LEAST_REQUEST}, // its subset, for every service it covers
		{name("", "pay.shop.svc.cluster.local"), cluster.Cluster_RANDOM},           // its own rule, whole
		{name("", "users.auth.svc.cluster.local"), cluster.Cluster_ROUND_ROBIN},    // its namespace's wildcard
	} {
		got, ok := lb[w.cluster]
		if !ok {
			t.Errorf("no cluster %s (have %v)", w.cluster, lb)
			continue
		}
		if got != w.lb {
			t.Errorf("%s: lb_policy %v, want %v", w.cluster, got, w.lb)
		}
	}
	for _, absent := range []string{name("v1", "pay.shop.svc.cluster.local"), name("v1", "users.auth.svc.cluster.local")} {
		if _, ok := lb[absent]; ok {
			t.Errorf("cluster %s exists: the rule in force for its host has no such subset", absent)
		}
	}
}

// Client-side DestinationRules and exportTo: the sidecars of a namespace
// with a rule of its own for a host use that rule (Istio's first choice);
// a rule exported to its own namespace only ("." ) governs only there.
// Proxies of other namespaces share the clusters of the default view.
func TestDestinationRulesByClientNamespace(t *testing.T) {
	s := snapshotFromYAML(t, wildcardDRConfig+`---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: cart-for-team-a, namespace: team-a}
spec:
  host: cart.shop.svc.cluster.local
  exportTo: ["."]
  trafficPolicy: {loadBalancer: {simple: ROUND_ROBIN}}
  subsets:
  - {name: canary, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: users-private, namespace: auth}
spec:
  host: users
  exportTo: ["."]
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
`)
	lbs := func(ns string) map[string]cluster.Cluster_LbPolicy {
		out := map[string]cluster.Cluster_LbPolicy{}
		for _, res := range ForProxy(s, contract.Identity{ID: "client." + ns, Namespace: ns}).Clusters {
			c := res.(*cluster.Cluster)
			out[c.GetName()] = c.GetLbPolicy()
		}
		return out
	}
	name := func(subset, host string) string { return contract.ClusterName(contract.Outbound, 80, subset, host) }
	cart, users := "cart.shop.svc.cluster.local", "users.auth.svc.cluster.local"
	web, teamA, auth := lbs("web"), lbs("team-a"), lbs("auth")
	for _, w := range []struct {
		who     string
		got     map[string]cluster.Cluster_LbPolicy
		cluster string
		want    cluster.Cluster_LbPolicy // -1: absent
	}{
		{"web", web, name("", cart), cluster.Cluster_LEAST_REQUEST},    // the mesh default
		{"web", web, name("canary", cart), -1},                         // team-a's subset is team-a's
		{"team-a", teamA, name("", cart), cluster.Cluster_ROUND_ROBIN}, // its own rule
		{"team-a", teamA, name("canary", cart), cluster.Cluster_ROUND_ROBIN},
		{"team-a", teamA, name("v1", cart), -1},                         // the default's subset is replaced
		{"web", web, name("", users), cluster.Cluster_ROUND_ROBIN},      // auth's "*.auth" rule, exported
		{"auth", auth, name("", users), cluster.Cluster_RANDOM},         // auth's private rule, for auth
		{"team-a", teamA, name("", users), cluster.Cluster_ROUND_ROBIN}, // not exported to team-a
	} {
		got, ok := w.got[w.cluster]
		switch {
		case w.want == -1 && ok:
			t.Errorf("%s: cluster %s exists, want none", w.who, w.cluster)
		case w.want != -1 && !ok:
			t.Errorf("%s: no cluster %s", w.who, w.cluster)
		case ok && got != w.want:
			t.Errorf("%s: %s lb_policy %v, want %v", w.who, w.cluster, got, w.want)
		}
	}
	if v := s.Subsets.View("web"); v != "" {
		t.Errorf("View(web) = %q: a namespace without rules of its own shares the default clusters", v)
	}
}

// A rule with a workloadSelector governs the selected sidecars of its
// namespace; the namespace's other sidecars keep the rule they had.
func TestDestinationRuleWorkloadSelector(t *testing.T) {
	s := snapshotFromYAML(t, wildcardDRConfig+`---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: cart-for-batch, namespace: web}
spec:
  host: cart.shop.svc.cluster.local
  workloadSelector: {matchLabels: {app: batch}}
  exportTo: ["."]
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
`)
	lb := func(labels map[string]string) cluster.Cluster_LbPolicy {
		name := contract.ClusterName(contract.Outbound, 80, "", "cart.shop.svc.cluster.local")
		for _, res := range ForProxy(s, contract.Identity{ID: "p", Namespace: "web", Labels: labels}).Clusters {
			if c := res.(*cluster.Cluster); c.GetName() == name {
				return c.GetLbPolicy()
			}
		}
		t.Fatalf("no cluster %s", name)
		return 0
	}
	if got := lb(map[string]string{"app": "batch"}); got != cluster.Cluster_RANDOM {
		t.Errorf("selected sidecar: lb_policy %v, want RANDOM (its rule)", got)
	}
	if got := lb(map[string]string{"app": "web"}); got != cluster.Cluster_LEAST_REQUEST {
		t.Errorf("other sidecar of the namespace: lb_policy %v, want LEAST_REQUEST (the mesh default)", got)
	}
	if got := lb(map[string]string{"app": "batch"}); got != cluster.Cluster_RANDOM {
		t.Errorf("selected sidecar again (shared resources): lb_policy %v, want RANDOM", got)
	}
}
