package generate

import (
	"testing"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry"
)

// routeActionCases cover rewrite, redirect, directResponse, headers and
// corsPolicy.
func routeActionCases() []goldenCase {
	return []goldenCase{{
		name: "route_actions",
		mesh: func() *mesh.Snapshot {
			reg := registry.NewSnapshot(
				[]*registry.Service{reviewsService()},
				[]*registry.Endpoint{reviewsEndpoint("10.0.0.1", "v1", 9080), reviewsEndpoint("10.0.0.2", "v2", 9080)},
			)
			dh := func(v string) *networking.Headers {
				return &networking.Headers{
					Request:  &networking.Headers_HeaderOperations{Set: map[string]string{"x-dest": v}},
					Response: &networking.Headers_HeaderOperations{Set: map[string]string{"x-served-by": v}, Remove: []string{"x-internal"}},
				}
			}
			split := []*networking.HTTPRouteDestination{dest("reviews", "v1", 50), dest("reviews", "v2", 50), dest("reviews", "v2", 0)}
			split[0].Headers, split[1].Headers = dh("v1"), dh("v2")
			single := dest("reviews", "v1", 0)
			single.Headers = &networking.Headers{Request: &networking.Headers_HeaderOperations{Set: map[string]string{"x-route": "dest", ":authority": "from-dest"}}}
			cfg := &config.Snapshot{
				Version:          7,
				DestinationRules: []*config.DestinationRule{dr("reviews", versionSubsets)},
				VirtualServices: []*config.VirtualService{vs("reviews", &networking.VirtualService{
					Hosts: []string{"reviews"},
					Http: []*networking.HTTPRoute{
						{Name: "rewrite", Match: []*networking.HTTPMatchRequest{{Uri: prefix("/old/")}, {Uri: exact("/legacy")}},
							Rewrite: &networking.HTTPRewrite{Uri: "/new/", Authority: "rewritten"},
							Route:   []*networking.HTTPRouteDestination{dest("reviews", "", 0)}},
						{Name: "regex", Match: []*networking.HTTPMatchRequest{{Uri: prefix("/svc/")}},
							Rewrite: &networking.HTTPRewrite{UriRegexRewrite: &networking.RegexRewrite{Match: `^/svc/([^/]+)/(.*)$`, Rewrite: `/\2/\1`}},
							Route:   []*networking.HTTPRouteDestination{dest("reviews", "", 0)}},
						{Name: "moved", Match: []*networking.HTTPMatchRequest{{Uri: prefix("/moved")}},
							Redirect: &networking.HTTPRedirect{Uri: "/here", Authority: "elsewhere", RedirectCode: 302}},
						{Name: "prefix-moved", Match: []*networking.HTTPMatchRequest{{Uri: prefix("/docs/")}},
							Redirect: &networking.HTTPRedirect{PrefixRewrite: "/manual/"}},
						{Name: "derive-port", Match: []*networking.HTTPMatchRequest{{Uri: prefix("/derive")}},
							Redirect: &networking.HTTPRedirect{Scheme: "https", RedirectPort: &networking.HTTPRedirect_DerivePort{DerivePort: networking.HTTPRedirect_FROM_REQUEST_PORT}}},
						{Name: "maintenance", Match: []*networking.HTTPMatchRequest{{Uri: prefix("/maintenance")}},
							DirectResponse: &networking.HTTPDirectResponse{Status: 503, Body: &networking.HTTPBody{Specifier: &networking.HTTPBody_String_{String_: "down"}}},
							Headers:        &networking.Headers{Response: &networking.Headers_HeaderOperations{Set: map[string]string{"retry-after": "60"}}}},
						{Name: "headers", Match: []*networking.HTTPMatchRequest{{Uri: prefix("/headers")}},
							Headers: &networking.Headers{
								Request: &networking.Headers_HeaderOperations{Set: map[string]string{"x-b": "1", "x-a": "2", "host": "h"},
									Add: map[string]string{"x-add": "3"}, Remove: []string{"x-drop", ":path"}},
								Response: &networking.Headers_HeaderOperations{Add: map[string]string{"x-resp": "4"}, Remove: []string{"server"}},
							},
							Route: []*networking.HTTPRouteDestination{single}},
						{Name: "split", Match: []*networking.HTTPMatchRequest{{Uri: prefix("/split")}}, Route: split},
						{Name: "cors", CorsPolicy: &networking.CorsPolicy{
							AllowOrigins:     []*networking.StringMatch{exact("https://a.example"), regex(`https://.*\.b\.example`)},
							AllowMethods:     []string{"GET", "POST"},
							AllowHeaders:     []string{"x-token"},
							ExposeHeaders:    []string{"x-trace"},
							MaxAge:           durationpb.New(600e9),
							AllowCredentials: wrapperspb.Bool(true),
						}, Route: []*networking.HTTPRouteDestination{dest("reviews", "", 0)}},
					},
				})},
			}
			return mesh.New(cfg, reg, "")
		},
		proxy: productpage,
	}}
}

func TestRouteActionsShape(t *testing.T) {
	res := ForProxy(routeActionCases()[0].mesh(), productpage)
	rc := res.Routes[0].(*route.RouteConfiguration)
	byName := map[string]*route.Route{}
	for _, r := range rc.GetVirtualHosts()[0].GetRoutes() {
		if byName[r.GetName()] == nil {
			byName[r.GetName()] = r
		}
	}
	if got := byName["moved"].GetRedirect().GetResponseCode(); got != route.RedirectAction_FOUND {
		t.Errorf("moved: response_code %v", got)
	}
	if got := byName["prefix-moved"].GetRedirect().GetPrefixRewrite(); got != "/manual/" {
		t.Errorf("prefix-moved: prefix_rewrite %q, want /manual/", got)
	}
	if got := byName["derive-port"].GetRedirect().GetPortRedirect(); got != 9080 {
		t.Errorf("derive-port: port_redirect %d, want the virtual host's 9080", got)
	}
	if got := byName["headers"].GetRoute().GetHostRewriteLiteral(); got != "h" {
		t.Errorf("headers: a Host set becomes host_rewrite_literal (route level wins): %q", got)
	}
	wc := byName["split"].GetRoute().GetWeightedClusters().GetClusters()
	if len(wc) != 2 || wc[0].GetResponseHeadersToAdd()[0].GetHeader().GetValue() != "v1" || wc[1].GetResponseHeadersToAdd()[0].GetHeader().GetValue() != "v2" {
		t.Errorf("split: per-destination headers not on their ClusterWeight: %v", wc)
	}
}
