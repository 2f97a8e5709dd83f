package generate

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry/static"
	"weft.dev/weft/internal/xds/contract"
)

// snapshotFromYAML loads Istio YAML as weft serve --config does.
func snapshotFromYAML(t *testing.T, y string) *mesh.Snapshot {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	files, err := config.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	snap := config.NewStore(config.Options{Logger: slog.New(slog.DiscardHandler)}).LoadDir(files)
	if len(snap.Diagnostics) != 0 {
		t.Fatalf("config diagnostics: %v", snap.Diagnostics)
	}
	return mesh.New(snap, static.Build(snap, ""), "")
}

const proxylessConfig = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend, namespace: shop}
spec:
  hosts: [backend.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: grpc, protocol: GRPC}]
  endpoints:
  - {address: 10.0.0.1, labels: {version: v1, security.istio.io/tlsMode: istio}}
  - {address: 10.0.0.2, labels: {version: v2}, locality: us/east/a}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: backend, namespace: shop}
spec:
  host: backend
  trafficPolicy: {loadBalancer: {simple: RANDOM}}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend, namespace: shop}
spec:
  hosts: [backend]
  http:
  - match: [{headers: {x-canary: {exact: "yes"}}}]
    corsPolicy: {allowOrigins: [{exact: "https://a.example"}]}
    fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 50}}}
    route: [{destination: {host: backend, subset: v2}}]
  - timeout: 2s
    retries: {attempts: 3, retryOn: unavailable}
    route:
    - {destination: {host: backend, subset: v1}, weight: 90}
    - {destination: {host: backend, subset: v2}, weight: 10}
`

func TestForProxyless(t *testing.T) {
	s := snapshotFromYAML(t, proxylessConfig)
	id := contract.Identity{ID: "client", Namespace: "shop", Generator: contract.GeneratorGRPC}
	v1 := contract.ClusterName(contract.Outbound, 8080, "v1", "backend.shop.svc.cluster.local")
	v2 := contract.ClusterName(contract.Outbound, 8080, "v2", "backend.shop.svc.cluster.local")
	forms := []string{"backend:8080", "backend.shop:8080", "backend.shop.svc:8080", "backend.shop.svc.cluster.local:8080", "backend"}
	r := ForProxyless(s, id, Names{
		Listeners: append(forms, "backend:9999", "other:8080", "backend.other:8080"),
		Routes:    []string{"backend:8080", "nosuch:1"},
		Clusters:  []string{v1, v2, contract.ClusterName(contract.Outbound, 8080, "v3", "backend.shop.svc.cluster.local"), "inbound|8080||"},
		Endpoints: []string{v1, v2},
	})
	if len(r.Listeners) != len(forms) {
		t.Fatalf("%d listeners, want one per resolvable name form (%d)", len(r.Listeners), len(forms))
	}
	for i, res := range r.Listeners {
		l := res.(*listener.Listener)
		if l.GetAddress() != nil || l.GetApiListener() == nil {
			t.Fatalf("listener %s is not an api_listener", l.GetName())
		}
		var m hcm.HttpConnectionManager
		if err := l.GetApiListener().GetApiListener().UnmarshalTo(&m); err != nil {
			t.Fatal(err)
		}
		if m.GetRds().GetRouteConfigName() != l.GetName() || m.GetRds().GetConfigSource().GetAds() == nil {
			t.Errorf("listener %s: rds %v, want its own name over ADS", l.GetName(), m.GetRds())
		}
		fs := m.GetHttpFilters()
		if len(fs) != 2 || fs[0].GetName() != faultFilterName || fs[1].GetName() != wellknown.Router {
			t.Errorf("listener %d filters %v, want fault then router", i, fs)
		}
	}

	if len(r.Routes) != 1 {
		t.Fatalf("%d route configurations, want 1", len(r.Routes))
	}
	vh := r.Routes[0].(*route.RouteConfiguration).GetVirtualHosts()
	if len(vh) != 1 || len(vh[0].GetRoutes()) != 2 {
		t.Fatalf("virtual hosts %v, want one with two routes", vh)
	}
	canary, split := vh[0].GetRoutes()[0], vh[0].GetRoutes()[1]
	if _, ok := canary.GetTypedPerFilterConfig()[wellknown.CORS]; ok {
		t.Error("the CORS per-route config gRPC does not know is still there")
	}
	if _, ok := canary.GetTypedPerFilterConfig()[faultFilterName]; !ok {
		t.Error("the fault per-route config is gone")
	}
	if d := split.GetRoute().GetMaxStreamDuration().GetMaxStreamDuration().AsDuration().String(); d != "2s" {
		t.Errorf("max_stream_duration %s, want the route's 2s timeout", d)
	}
	if n := split.GetRoute().GetRetryPolicy().GetNumRetries().GetValue(); n != 3 {
		t.Errorf("num_retries %d, want 3", n)
	}
	if w := split.GetRoute().GetWeightedClusters().GetClusters(); len(w) != 2 || w[0].GetWeight().GetValue() != 90 {
		t.Errorf("weighted clusters %v, want v1 90 and v2 10", w)
	}

	if len(r.Clusters) != 2 {
		t.Fatalf("%d clusters, want v1 and v2 only", len(r.Clusters))
	}
	for _, res := range r.Clusters {
		c := res.(*cluster.Cluster)
		if c.GetTransportSocket() != nil || len(c.GetTransportSocketMatches()) != 0 {
			t.Errorf("cluster %s has TLS settings gRPC would reject", c.GetName())
		}
		if c.GetLbPolicy() != cluster.Cluster_ROUND_ROBIN {
			t.Errorf("cluster %s: lb %v, want ROUND_ROBIN for RANDOM, which gRPC lacks", c.GetName(), c.GetLbPolicy())
		}
		if c.GetEdsClusterConfig().GetEdsConfig().GetAds() == nil || c.GetEdsClusterConfig().GetServiceName() != c.GetName() {
			t.Errorf("cluster %s: eds config %v", c.GetName(), c.GetEdsClusterConfig())
		}
	}

	if len(r.Endpoints) != 2 {
		t.Fatalf("%d load assignments, want 2", len(r.Endpoints))
	}
	for _, res := range r.Endpoints {
		cla := res.(*endpoint.ClusterLoadAssignment)
		if len(cla.GetEndpoints()) != 1 {
			t.Fatalf("%s: %d localities, want 1", cla.GetClusterName(), len(cla.GetEndpoints()))
		}
		for _, l := range cla.GetEndpoints() {
			if l.GetLocality() == nil || l.GetLoadBalancingWeight().GetValue() == 0 {
				t.Errorf("%s: locality %v weight %v; gRPC needs both", cla.GetClusterName(), l.GetLocality(), l.GetLoadBalancingWeight())
			}
			for _, e := range l.GetLbEndpoints() {
				if e.GetMetadata().GetFilterMetadata()[contract.FilterMetadataTransportSocketMatch] != nil {
					t.Errorf("%s: endpoint marked for mutual TLS", cla.GetClusterName())
				}
			}
		}
	}
}
