package generate

import (
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry"
)

func TestMirrorPolicies(t *testing.T) {
	const ratings = "ratings.default.svc.cluster.local"
	hundred := &core.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: 100, Denominator: typev3.FractionalPercent_HUNDRED}}
	million := func(n uint32) *core.RuntimeFractionalPercent {
		return &core.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{Numerator: n, Denominator: typev3.FractionalPercent_MILLION}}
	}
	policy := func(cluster string, f *core.RuntimeFractionalPercent) *route.RouteAction_RequestMirrorPolicy {
		return &route.RouteAction_RequestMirrorPolicy{Cluster: cluster, RuntimeFraction: f, TraceSampled: wrapperspb.Bool(false)}
	}
	mirrorTo := func(host, subset string) *networking.Destination {
		return &networking.Destination{Host: host, Subset: subset}
	}
	cases := []struct {
		name string
		http *networking.HTTPRoute
		want []*route.RouteAction_RequestMirrorPolicy
	}{
		{
			name: "mirror without a percentage mirrors 100%",
			http: &networking.HTTPRoute{Mirror: mirrorTo("reviews", "v2")},
			want: []*route.RouteAction_RequestMirrorPolicy{policy("outbound|9080|v2|"+reviews, hundred)},
		},
		{
			name: "mirrorPercentage in millionths",
			http: &networking.HTTPRoute{Mirror: mirrorTo("reviews", "v2"), MirrorPercentage: &networking.Percent{Value: 12.5}},
			want: []*route.RouteAction_RequestMirrorPolicy{policy("outbound|9080|v2|"+reviews, million(125000))},
		},
		{
			name: "explicit 0% turns the mirror off",
			http: &networking.HTTPRoute{Mirror: mirrorTo("reviews", "v2"), MirrorPercentage: &networking.Percent{Value: 0}},
		},
		{
			name: "deprecated mirrorPercent",
			http: &networking.HTTPRoute{Mirror: mirrorTo("reviews", "v2"), MirrorPercent: wrapperspb.UInt32(30)},
			want: []*route.RouteAction_RequestMirrorPolicy{policy("outbound|9080|v2|"+reviews, &core.RuntimeFractionalPercent{
				DefaultValue: &typev3.FractionalPercent{Numerator: 30, Denominator: typev3.FractionalPercent_HUNDRED}})},
		},
		{
			name: "mirrors in order; another service's only port; 0% left out",
			http: &networking.HTTPRoute{Mirrors: []*networking.HTTPMirrorPolicy{
				{Destination: mirrorTo("ratings", "")},
				{Destination: mirrorTo("reviews", "v2"), Percentage: &networking.Percent{Value: 0}},
				{Destination: &networking.Destination{Host: "reviews", Port: &networking.PortSelector{Number: 9090}}, Percentage: &networking.Percent{Value: 100}},
			}},
			want: []*route.RouteAction_RequestMirrorPolicy{
				policy("outbound|7070||"+ratings, hundred),
				policy("outbound|9090||"+reviews, million(1000000)),
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.http
			h.Name = "primary"
			h.Route = []*networking.HTTPRouteDestination{dest("reviews", "v1", 0)}
			reg := registry.NewSnapshot([]*registry.Service{
				reviewsService(),
				{Hostname: ratings, Namespace: "default", Ports: []registry.Port{{Name: "http", Number: 7070, Protocol: registry.HTTP}}},
			}, []*registry.Endpoint{reviewsEndpoint("10.0.0.1", "v1", 9080), reviewsEndpoint("10.0.0.2", "v2", 9080)})
			cfg := &config.Snapshot{Version: 1,
				DestinationRules: []*config.DestinationRule{dr("reviews", versionSubsets)},
				VirtualServices: []*config.VirtualService{vs("reviews", &networking.VirtualService{
					Hosts: []string{"reviews"}, Http: []*networking.HTTPRoute{h},
				})},
			}
			rc := outboundRoutes(mesh.New(cfg, reg, ""), productpage)
			var got *route.RouteAction
			for _, vh := range rc.GetVirtualHosts() {
				if vh.GetName() == reviews+":9080" {
					got = vh.GetRoutes()[0].GetRoute()
				}
			}
			if got == nil {
				t.Fatalf("no route for %s:9080 in %v", reviews, protojson.Format(rc))
			}
			if got.GetCluster() != "outbound|9080|v1|"+reviews {
				t.Errorf("primary cluster = %q, want the v1 subset", got.GetCluster())
			}
			if len(got.GetRequestMirrorPolicies()) != len(tc.want) {
				t.Fatalf("request_mirror_policies = %v, want %v", got.GetRequestMirrorPolicies(), tc.want)
			}
			for i := range tc.want {
				if !proto.Equal(got.GetRequestMirrorPolicies()[i], tc.want[i]) {
					t.Errorf("request_mirror_policies[%d] = %v, want %v", i, got.GetRequestMirrorPolicies()[i], tc.want[i])
				}
			}
		})
	}
}

// mirrorCases is the golden case of mirroring: `mirror` with
// mirrorPercentage on one route, `mirrors` (a subset and another service)
// on another.
func mirrorCases() []goldenCase {
	return []goldenCase{{
		name: "mirror_policies",
		mesh: func() *mesh.Snapshot {
			const ratings = "ratings.default.svc.cluster.local"
			reg := registry.NewSnapshot([]*registry.Service{
				reviewsService(),
				{Hostname: ratings, Namespace: "default", Ports: []registry.Port{{Name: "http", Number: 7070, Protocol: registry.HTTP}}},
			}, []*registry.Endpoint{reviewsEndpoint("10.0.0.1", "v1", 9080), reviewsEndpoint("10.0.0.2", "v2", 9080)})
			cfg := &config.Snapshot{Version: 11,
				DestinationRules: []*config.DestinationRule{dr("reviews", versionSubsets)},
				VirtualServices: []*config.VirtualService{vs("reviews", &networking.VirtualService{
					Hosts: []string{"reviews"},
					Http: []*networking.HTTPRoute{
						{
							Name:             "mirror-tenth",
							Match:            []*networking.HTTPMatchRequest{{Uri: prefix("/api")}},
							Route:            []*networking.HTTPRouteDestination{dest("reviews", "v1", 0)},
							Mirror:           &networking.Destination{Host: "reviews", Subset: "v2"},
							MirrorPercentage: &networking.Percent{Value: 10},
						},
						{
							Name:  "mirrors",
							Route: []*networking.HTTPRouteDestination{dest("reviews", "v1", 90), dest("reviews", "v2", 10)},
							Mirrors: []*networking.HTTPMirrorPolicy{
								{Destination: &networking.Destination{Host: "reviews", Subset: "v2"}},
								{Destination: &networking.Destination{Host: "ratings"}, Percentage: &networking.Percent{Value: 0.5}},
							},
						},
					},
				})},
			}
			return mesh.New(cfg, reg, "")
		},
		proxy: productpage,
	}}
}
