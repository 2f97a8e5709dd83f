package generate

import (
	"log/slog"
	"slices"
	"testing"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry"
	"weft.dev/weft/internal/xds/contract"
)

// A service's aliases (Consul's bare service name) are domains of its
// virtual host, so clients using them get the host's routing rules; a
// Kubernetes short name claimed earlier (in virtual host name order) keeps
// its domain.
func TestServiceAliasesAreDomains(t *testing.T) {
	const consulHost, kubeHost = "order.service.consul", "order.default.svc.cluster.local"
	snap := config.NewStore(config.Options{Logger: slog.New(slog.DiscardHandler)}).Load(map[string][]byte{"vs.yaml": []byte(`
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: order, namespace: default}
spec:
  hosts: [order.service.consul]
  http:
  - route:
    - destination: {host: order.service.consul, subset: v2}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: order, namespace: default}
spec:
  host: order.service.consul
  subsets:
  - {name: v2, labels: {version: v2}}
`)})
	for _, d := range snap.Diagnostics {
		if d.Severity == config.SeverityError {
			t.Fatalf("config: %v", d)
		}
	}
	http8080 := []registry.Port{{Name: "http-8080", Number: 8080, Protocol: registry.HTTP}}
	reg := registry.NewSnapshot([]*registry.Service{
		{Hostname: consulHost, Namespace: "default", Ports: http8080, Aliases: []string{"order"}, Source: "consul"},
		{Hostname: kubeHost, Namespace: "default", Ports: http8080, Source: "kubernetes"},
	}, []*registry.Endpoint{
		{ServiceHostname: consulHost, ServicePort: 8080, Address: "10.1.0.1", Port: 8080, Labels: map[string]string{"version": "v2"}},
	})
	m := mesh.Build(snap, reg, mesh.Options{})

	vhosts := func(ns string) map[string]*route.VirtualHost {
		out := map[string]*route.VirtualHost{}
		for _, vh := range outboundRoutes(m, contract.Identity{ID: "client", Namespace: ns}).GetVirtualHosts() {
			out[vh.GetName()] = vh
		}
		return out
	}
	other := vhosts("shop")
	vh := other[consulHost+":8080"]
	if vh == nil {
		t.Fatalf("no virtual host %s:8080; have %v", consulHost, other)
	}
	if d := vh.GetDomains(); !slices.Contains(d, "order:8080") || !slices.Contains(d, "order") {
		t.Errorf("domains of %s = %q, want the alias order and order:8080 among them", vh.GetName(), d)
	}
	if c := vh.GetRoutes()[0].GetRoute().GetCluster(); c != "outbound|8080|v2|"+consulHost {
		t.Errorf("route of the alias' virtual host goes to %q, want the VirtualService's subset v2", c)
	}

	same := vhosts("default")
	if d := same[consulHost+":8080"].GetDomains(); slices.Contains(d, "order") || slices.Contains(d, "order:8080") {
		t.Errorf("domains of %s seen from namespace default = %q: the alias must not take the Kubernetes short name", consulHost, d)
	}
	if d := same[kubeHost+":8080"].GetDomains(); !slices.Contains(d, "order:8080") {
		t.Errorf("domains of %s seen from namespace default = %q, want order:8080", kubeHost, d)
	}
}
