package generate

import (
	"slices"

	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry"
	"weft.dev/weft/internal/xds/contract"
)

// The fixtures are built in Go: each case's inputs sit here next to its
// name, and its expected output in testdata/<name>/*.json.

const reviews = "reviews.default.svc.cluster.local"

// productpage is the usual client: namespace default, an outbound listener.
var productpage = contract.Identity{
	ID:              contract.DefaultNodeID("10.0.0.10", "productpage-v1", "default"),
	Namespace:       "default",
	WorkloadName:    "productpage-v1",
	Labels:          map[string]string{"app": "productpage", "version": "v1"},
	IPs:             []string{"10.0.0.10"},
	OutboundAddress: contract.DefaultOutboundAddress,
}

func reviewsService(ports ...registry.Port) *registry.Service {
	if len(ports) == 0 {
		ports = []registry.Port{{Name: "http", Number: 9080, Protocol: registry.HTTP}}
	}
	return &registry.Service{Hostname: reviews, Namespace: "default", Ports: ports, Source: "test"}
}

func reviewsEndpoint(addr, version string, port uint32) *registry.Endpoint {
	return &registry.Endpoint{
		ServiceHostname: reviews, ServicePort: port,
		Address: addr, Port: port,
		Labels:       map[string]string{"app": "reviews", "version": version},
		WorkloadName: "reviews-" + version, Namespace: "default",
		ServiceAccount: "reviews",
	}
}

func vs(name string, spec *networking.VirtualService) *config.VirtualService {
	return &config.VirtualService{Meta: config.Meta{Kind: config.KindVirtualService, Namespace: "default", Name: name}, Spec: spec}
}

func dr(name string, spec *networking.DestinationRule) *config.DestinationRule {
	return &config.DestinationRule{Meta: config.Meta{Kind: config.KindDestinationRule, Namespace: "default", Name: name}, Spec: spec}
}

func exact(s string) *networking.StringMatch {
	return &networking.StringMatch{MatchType: &networking.StringMatch_Exact{Exact: s}}
}

func prefix(s string) *networking.StringMatch {
	return &networking.StringMatch{MatchType: &networking.StringMatch_Prefix{Prefix: s}}
}

func regex(s string) *networking.StringMatch {
	return &networking.StringMatch{MatchType: &networking.StringMatch_Regex{Regex: s}}
}

func dest(host, subset string, weight int32) *networking.HTTPRouteDestination {
	return &networking.HTTPRouteDestination{Destination: &networking.Destination{Host: host, Subset: subset}, Weight: weight}
}

var versionSubsets = &networking.DestinationRule{
	Host: "reviews",
	Subsets: []*networking.Subset{
		{Name: "v1", Labels: map[string]string{"version": "v1"}},
		{Name: "v2", Labels: map[string]string{"version": "v2"}},
	},
}

func goldenCases() []goldenCase {
	return append([]goldenCase{
		{
			name: "default_route",
			mesh: func() *mesh.Snapshot {
				reg := registry.NewSnapshot(
					[]*registry.Service{reviewsService()},
					[]*registry.Endpoint{reviewsEndpoint("10.0.0.2", "v1", 9080), reviewsEndpoint("10.0.0.1", "v2", 9080)},
				)
				return mesh.New(&config.Snapshot{Version: 1}, reg, "")
			},
			proxy: productpage,
		},
		{
			name: "canary_header_and_split",
			mesh: func() *mesh.Snapshot {
				reg := registry.NewSnapshot(
					[]*registry.Service{reviewsService()},
					[]*registry.Endpoint{reviewsEndpoint("10.0.0.1", "v1", 9080), reviewsEndpoint("10.0.0.2", "v2", 9080)},
				)
				cfg := &config.Snapshot{
					Version:          2,
					DestinationRules: []*config.DestinationRule{dr("reviews", versionSubsets)},
					VirtualServices: []*config.VirtualService{vs("reviews", &networking.VirtualService{
						Hosts: []string{"reviews"},
						Http: []*networking.HTTPRoute{
							{
								Name:  "canary",
								Match: []*networking.HTTPMatchRequest{{Headers: map[string]*networking.StringMatch{"end-user": exact("jason")}}},
								Route: []*networking.HTTPRouteDestination{dest("reviews", "v2", 0)},
							},
							{
								Name:  "split",
								Route: []*networking.HTTPRouteDestination{dest("reviews", "v1", 90), dest("reviews", "v2", 10)},
							},
						},
					})},
				}
				return mesh.New(cfg, reg, "")
			},
			proxy: productpage,
		},
		{
			name: "all_match_kinds",
			mesh: func() *mesh.Snapshot {
				reg := registry.NewSnapshot(
					[]*registry.Service{reviewsService(
						registry.Port{Name: "http", Number: 9080, Protocol: registry.HTTP},
						registry.Port{Name: "http-admin", Number: 9081, Protocol: registry.HTTP},
					)},
					[]*registry.Endpoint{reviewsEndpoint("10.0.0.1", "v1", 9080), reviewsEndpoint("10.0.0.1", "v1", 9081)},
				)
				cfg := &config.Snapshot{Version: 3, VirtualServices: []*config.VirtualService{vs("reviews", &networking.VirtualService{
					Hosts: []string{"reviews.default.svc.cluster.local"},
					Http: []*networking.HTTPRoute{
						{Name: "uri", Match: []*networking.HTTPMatchRequest{
							{Uri: exact("/exact")},
							{Uri: prefix("/Prefix"), IgnoreUriCase: true},
							{Uri: regex("/re/[0-9]+")},
						}, Route: []*networking.HTTPRouteDestination{dest("reviews", "", 0)}},
						{Name: "headers", Match: []*networking.HTTPMatchRequest{{
							Headers: map[string]*networking.StringMatch{
								"x-exact": exact("a"), "x-prefix": prefix("b"), "x-regex": regex("c+"), "X-Present": {},
							},
							WithoutHeaders: map[string]*networking.StringMatch{"x-debug": {}, "x-env": exact("test")},
						}}, Route: []*networking.HTTPRouteDestination{dest("reviews", "", 0)}},
						{Name: "query-method-authority", Match: []*networking.HTTPMatchRequest{{
							QueryParams: map[string]*networking.StringMatch{"q": exact("1"), "r": regex("[a-z]+"), "flag": {}},
							Method:      exact("POST"),
							Authority:   prefix("reviews"),
						}}, Route: []*networking.HTTPRouteDestination{dest("reviews", "", 0)}},
						{Name: "admin-port-only", Match: []*networking.HTTPMatchRequest{{Port: 9081, Uri: prefix("/admin")}},
							Route: []*networking.HTTPRouteDestination{{Destination: &networking.Destination{Host: "reviews", Port: &networking.PortSelector{Number: 9081}}}}},
						{Name: "from-productpage", Match: []*networking.HTTPMatchRequest{{SourceLabels: map[string]string{"app": "productpage"}, Uri: prefix("/pp")}},
							Route: []*networking.HTTPRouteDestination{dest("reviews", "", 0)}},
						{Name: "from-ratings", Match: []*networking.HTTPMatchRequest{{SourceLabels: map[string]string{"app": "ratings"}}},
							Route: []*networking.HTTPRouteDestination{dest("reviews", "", 0)}},
						{Name: "from-other-namespace", Match: []*networking.HTTPMatchRequest{{SourceNamespace: "other"}},
							Route: []*networking.HTTPRouteDestination{dest("reviews", "", 0)}},
						{Name: "fallback", Route: []*networking.HTTPRouteDestination{dest("reviews", "", 0)}},
					},
				})}}
				return mesh.New(cfg, reg, "")
			},
			proxy: productpage,
		},
		{
			// A host with two interfaces; its workload registered on the second.
			name: "inbound_second_ip",
			mesh: func() *mesh.Snapshot {
				reg := registry.NewSnapshot(
					[]*registry.Service{reviewsService(
						registry.Port{Name: "http", Number: 9080, Protocol: registry.HTTP},
						registry.Port{Name: "http-metrics", Number: 9090, Protocol: registry.HTTP},
						registry.Port{Name: "tcp-db", Number: 5432, Protocol: registry.TCP},
					)},
					[]*registry.Endpoint{
						reviewsEndpoint("127.0.0.2", "v1", 9080),
						reviewsEndpoint("127.0.0.2", "v1", 9090),
						reviewsEndpoint("127.0.0.2", "v1", 5432),
						reviewsEndpoint("10.9.9.9", "v2", 9080), // someone else
					},
				)
				return mesh.New(&config.Snapshot{Version: 4}, reg, "")
			},
			proxy: contract.Identity{
				ID:           contract.DefaultNodeID("192.168.1.5", "reviews-v1", "default"),
				Namespace:    "default",
				WorkloadName: "reviews-v1",
				Labels:       map[string]string{"app": "reviews", "version": "v1"},
				IPs:          []string{"192.168.1.5", "127.0.0.2"},
				AppPorts:     map[uint32]string{9080: "127.0.0.1:18080"},
			},
		},
		{
			name: "subset_labels_localities",
			mesh: func() *mesh.Snapshot {
				eps := []*registry.Endpoint{
					reviewsEndpoint("10.0.0.1", "v1", 9080),
					reviewsEndpoint("10.0.0.2", "v2", 9080),
					reviewsEndpoint("10.0.0.3", "v2", 9080),
					reviewsEndpoint("10.0.0.4", "v3", 9080),
				}
				eps[0].Locality = "eu-west/eu-west-1a/rack1"
				eps[1].Locality = "us-east/us-east-1b"
				eps[1].Weight = 3
				eps[1].Labels["canarytag"] = "feature-x"
				eps[2].Locality = "us-east/us-east-1b"
				eps[2].Health = registry.Unhealthy
				reg := registry.NewSnapshot([]*registry.Service{reviewsService()}, eps)
				cfg := &config.Snapshot{Version: 5, DestinationRules: []*config.DestinationRule{
					dr("reviews", &networking.DestinationRule{Host: "reviews", Subsets: []*networking.Subset{
						{Name: "v2", Labels: map[string]string{"version": "v2"}},
						{Name: "feature-x", Labels: map[string]string{"version": "v2", "canarytag": "feature-x"}},
						{Name: "none", Labels: map[string]string{"version": "v9"}},
					}}),
					// Loses to the rule in the host's own namespace.
					{Meta: config.Meta{Kind: config.KindDestinationRule, Namespace: "aaa", Name: "reviews"},
						Spec: &networking.DestinationRule{Host: reviews, Subsets: []*networking.Subset{{Name: "ignored"}}}},
				}}
				return mesh.New(cfg, reg, "")
			},
			proxy: productpage,
		},
		{
			name: "http2_grpc",
			mesh: func() *mesh.Snapshot {
				grpcSvc := &registry.Service{Hostname: "greeter.apps.svc.cluster.local", Namespace: "apps", Ports: []registry.Port{
					{Name: "grpc", Number: 50051, Protocol: registry.GRPC},
					{Name: "http2", Number: 8443, Protocol: registry.HTTP2},
				}}
				eps := []*registry.Endpoint{
					{ServiceHostname: grpcSvc.Hostname, ServicePort: 50051, Address: "127.0.0.3", Port: 50051, Labels: map[string]string{"app": "greeter"}, WorkloadName: "greeter", Namespace: "apps"},
					{ServiceHostname: grpcSvc.Hostname, ServicePort: 8443, Address: "127.0.0.3", Port: 8443, Labels: map[string]string{"app": "greeter"}, WorkloadName: "greeter", Namespace: "apps"},
				}
				return mesh.New(&config.Snapshot{Version: 6}, registry.NewSnapshot([]*registry.Service{grpcSvc}, eps), "")
			},
			proxy: contract.Identity{
				ID: contract.DefaultNodeID("127.0.0.3", "greeter", "apps"), Namespace: "apps", WorkloadName: "greeter",
				Labels: map[string]string{"app": "greeter"}, IPs: []string{"127.0.0.3"},
				OutboundAddress: "127.0.0.3:15001", AppPorts: map[uint32]string{50051: "127.0.0.1:50052"},
			},
		},
	}, slices.Concat(trafficPolicyCases(), resilienceCases(), routeActionCases(), loadBalancerCases(), mirrorCases(), securityCases(), captureCases(), tcpRouteCases(), accessLogCases(), tracingCases(), statsCases(), gatewayCases(), dnsCases(), rateLimitCases(), loginCases(), extAuthzCases())...)
}
