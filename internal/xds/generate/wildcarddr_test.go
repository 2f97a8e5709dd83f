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
