package generate

import (
	"testing"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"

	"weft.dev/weft/internal/mesh"
)

// otelGRPC exports to a collector outside the registry by host name.
var otelGRPC = &mesh.Tracing{
	Provider:        mesh.TracingProvider{Name: "otel", Service: "jaeger-collector.observability.svc.cluster.local", Port: 4317},
	SamplingPercent: 10,
	CustomTags: []mesh.TracingTag{
		{Tag: "team", Literal: "payments"},
		{Tag: "user", Header: "x-user", Default: "anonymous"},
		{Tag: "pod", Environment: "POD_NAME"},
	},
}

func tracingCases() []goldenCase {
	return []goldenCase{
		{
			// OTLP/gRPC to a collector by host name (STRICT_DNS cluster),
			// inbound and outbound connection managers traced, the
			// inbound route named "<service>:<port>/*", the outbound
			// routes "<host>:<port>/*".
			name: "tracing_otlp_grpc",
			mesh: func() *mesh.Snapshot {
				return securityMesh(bookinfo, mesh.Options{Tracing: otelGRPC})
			},
			proxy: reviewsProxy,
		},
		{
			// OTLP/HTTP to an IP address (STATIC cluster), 100%; routes
			// with weighted clusters are named after their virtual host.
			name: "tracing_otlp_http",
			mesh: func() *mesh.Snapshot {
				return securityMesh(bookinfo+`
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews.bookinfo.svc.cluster.local]
  http:
  - match: [{uri: {prefix: /api}}]
    route:
    - {destination: {host: reviews.bookinfo.svc.cluster.local, port: {number: 9080}}, weight: 90}
    - {destination: {host: ratings.legacy.svc.cluster.local, port: {number: 9080}}, weight: 10}
  - route: [{destination: {host: reviews.bookinfo.svc.cluster.local, port: {number: 9080}}}]
`, mesh.Options{Tracing: &mesh.Tracing{
					Provider:        mesh.TracingProvider{Name: "otel-http", Service: "127.0.0.9", Port: 4318, HTTPPath: "/v1/traces"},
					SamplingPercent: 100,
				}})
			},
			proxy: reviewsProxy,
		},
	}
}

// TestTracingOff checks that a mesh without tracing generates exactly
// what it did before tracing existed: no tracing, no decorators, no
// collector cluster (the other golden files hold it too).
func TestTracingOff(t *testing.T) {
	on := ForProxy(securityMesh(bookinfo, mesh.Options{Tracing: otelGRPC}), reviewsProxy)
	off := ForProxy(securityMesh(bookinfo, mesh.Options{}), reviewsProxy)
	if len(on.Clusters) != len(off.Clusters)+1 {
		t.Errorf("clusters: %d with tracing, %d without; want one more (the collector)", len(on.Clusters), len(off.Clusters))
	}
	var collector *cluster.Cluster
	for _, c := range on.Clusters {
		if c := c.(*cluster.Cluster); c.GetName() == "outbound|4317||jaeger-collector.observability.svc.cluster.local" {
			collector = c
		}
	}
	if collector == nil || collector.GetType() != cluster.Cluster_STRICT_DNS {
		t.Errorf("collector cluster: %v", collector)
	}
	// The server serves the clusters from their parts: the collector is
	// the proxy's own.
	if got := mergeSorted(on.ClusterParts.Shared, on.ClusterParts.Own); len(got) != len(on.Clusters) {
		t.Errorf("cluster parts hold %d clusters, the list %d", len(got), len(on.Clusters))
	}
	for _, l := range off.Listeners {
		eachHCM(t, l.(*listener.Listener), func(m *hcm.HttpConnectionManager) {
			if m.GetTracing() != nil {
				t.Errorf("tracing set without a provider")
			}
			for _, vh := range m.GetRouteConfig().GetVirtualHosts() {
				for _, r := range vh.GetRoutes() {
					if r.GetDecorator() != nil {
						t.Errorf("decorator without tracing")
					}
				}
			}
		})
	}
	for _, l := range on.Listeners {
		eachHCM(t, l.(*listener.Listener), func(m *hcm.HttpConnectionManager) {
			tr := m.GetTracing()
			var oc tracev3.OpenTelemetryConfig
			if err := tr.GetProvider().GetTypedConfig().UnmarshalTo(&oc); err != nil {
				t.Fatalf("tracing provider: %v", err)
			}
			if oc.GetServiceName() != "reviews.bookinfo" || oc.GetGrpcService().GetEnvoyGrpc().GetClusterName() != collector.GetName() || tr.GetRandomSampling().GetValue() != 10 {
				t.Errorf("tracing = %v", tr)
			}
		})
	}
	for _, rc := range on.Routes {
		for _, vh := range rc.(*route.RouteConfiguration).GetVirtualHosts() {
			for _, r := range vh.GetRoutes() {
				if r.GetDecorator().GetOperation() == "" {
					t.Errorf("route %s/%s: no decorator", vh.GetName(), r.GetName())
				}
			}
		}
	}
}

func eachHCM(t *testing.T, l *listener.Listener, f func(*hcm.HttpConnectionManager)) {
	t.Helper()
	for _, fc := range l.GetFilterChains() {
		for _, flt := range fc.GetFilters() {
			var m hcm.HttpConnectionManager
			if flt.GetTypedConfig().MessageIs(&m) {
				if err := flt.GetTypedConfig().UnmarshalTo(&m); err != nil {
					t.Fatal(err)
				}
				f(proto.Clone(&m).(*hcm.HttpConnectionManager))
			}
		}
	}
}
