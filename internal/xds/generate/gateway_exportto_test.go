package generate

import (
	"slices"
	"testing"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"weft.dev/weft/internal/xds/contract"
)

// A gateway sees the services exported to its namespace, as a sidecar
// there would (Istio's gateways honour exportTo too): a service exported
// only to its own namespace has no cluster on the istio-system gateway,
// and one exported everywhere has.
func TestGatewaySeesOnlyServicesExportedToIt(t *testing.T) {
	s := snapshotFromYAML(t, `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: public, namespace: shop}
spec:
  hosts: [public.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: internal, namespace: shop}
spec:
  hosts: [internal.shop.svc.cluster.local]
  exportTo: ["."]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 10.0.0.2}]
`)
	clusters := func(id contract.Identity) []string {
		var out []string
		for _, res := range ForProxy(s, id).Clusters {
			out = append(out, res.(*cluster.Cluster).GetName())
		}
		return out
	}
	public := contract.ClusterName(contract.Outbound, 80, "", "public.shop.svc.cluster.local")
	internal := contract.ClusterName(contract.Outbound, 80, "", "internal.shop.svc.cluster.local")
	gw := clusters(ingressGateway)
	if !slices.Contains(gw, public) || slices.Contains(gw, internal) {
		t.Errorf("istio-system gateway clusters %v: want %s and not %s", gw, public, internal)
	}
	shopGW := ingressGateway
	shopGW.ID, shopGW.Namespace = contract.RouterNodeID("10.1.0.2", "shop-gateway-1", "shop"), "shop"
	if got := clusters(shopGW); !slices.Contains(got, internal) {
		t.Errorf("shop's own gateway clusters %v: want %s (exported to its namespace)", got, internal)
	}
}
