package dataplane

import (
	"math"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"weft.dev/weft/internal/xds/contract"
)

func hdr(name string, sm *matcher.StringMatcher, invert bool) *route.HeaderMatcher {
	return &route.HeaderMatcher{Name: name, InvertMatch: invert,
		HeaderMatchSpecifier: &route.HeaderMatcher_StringMatch{StringMatch: sm}}
}

func exact(s string) *matcher.StringMatcher {
	return &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: s}}
}

// threeUpstreams starts upstreams a, b, c and returns clusters and endpoints for them.
func threeUpstreams(t *testing.T) []any {
	var items []any
	for _, n := range []string{"a", "b", "c"} {
		addr := echoUpstream(t, n, false)
		items = append(items, edsCluster(t, n, false, ""), cla(n, ep{Addr: addr}))
	}
	return items
}

func TestRouting(t *testing.T) {
	rc := routeConfig(contract.RouteHTTPProxy,
		vhost("reviews:80", []string{"reviews", "reviews:80", "reviews.default.svc.cluster.local:9080"},
			&route.Route{Name: "branch", Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"},
				Headers: []*route.HeaderMatcher{hdr("x-branch", exact("feat"), false)}},
				Action: toCluster("", nil, "b").Action},
			&route.Route{Name: "api", Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/API"}, CaseSensitive: wrapperspb.Bool(false)},
				Action: toCluster("", nil, "c").Action},
			&route.Route{Name: "exact", Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Path{Path: "/exact"}}, Action: toCluster("", nil, "b").Action},
			&route.Route{Name: "regex", Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_SafeRegex{SafeRegex: &matcher.RegexMatcher{Regex: `/re/[0-9]+`}}},
				Action: toCluster("", nil, "c").Action},
			&route.Route{Name: "query", Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/q"},
				QueryParameters: []*route.QueryParameterMatcher{{Name: "v", QueryParameterMatchSpecifier: &route.QueryParameterMatcher_StringMatch{StringMatch: exact("2")}}}},
				Action: toCluster("", nil, "c").Action},
			&route.Route{Name: "query-present", Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/q"},
				QueryParameters: []*route.QueryParameterMatcher{{Name: "debug", QueryParameterMatchSpecifier: &route.QueryParameterMatcher_PresentMatch{PresentMatch: true}}}},
				Action: toCluster("", nil, "b").Action},
			&route.Route{Name: "post", Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/m"},
				Headers: []*route.HeaderMatcher{hdr(":method", exact("POST"), false)}}, Action: toCluster("", nil, "b").Action},
			&route.Route{Name: "not-canary", Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/inv"},
				Headers: []*route.HeaderMatcher{hdr("x-canary", &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Prefix{Prefix: "yes"}}, true)}},
				Action: toCluster("", nil, "c").Action},
			&route.Route{Name: "present", Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/p"},
				Headers: []*route.HeaderMatcher{{Name: "x-present", HeaderMatchSpecifier: &route.HeaderMatcher_PresentMatch{PresentMatch: true}}}},
				Action: toCluster("", nil, "c").Action},
			&route.Route{Name: "path-pseudo", Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"},
				Headers: []*route.HeaderMatcher{hdr(":path", &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Suffix{Suffix: ".css"}}, false)}},
				Action: toCluster("", nil, "c").Action},
			toCluster("default", prefixMatch("/"), "a"),
		),
		vhost("wild", []string{"*.wild.example"}, toCluster("w", prefixMatch("/"), "b")),
		vhost("longer-wild", []string{"*.x.wild.example"}, toCluster("w", prefixMatch("/"), "c")),
		vhost("pre", []string{"pre.*"}, toCluster("p", prefixMatch("/"), "c")),
		vhost("missing", []string{"missing"}, toCluster("m", prefixMatch("/"), "nope")),
	)
	items := append(threeUpstreams(t), rc, httpListener(t, "out", core.TrafficDirection_OUTBOUND, contract.RouteHTTPProxy, nil))
	d := newDataplane(t, contract.Identity{}, nil)
	mustApply(t, d, resourcesAny(items...))
	base := "http://" + d.ListenerAddr("out").String()
	c := client(t, false)

	tests := []struct {
		name, method, path, host string
		hdr                      map[string]string
		wantCode                 int
		wantUp                   string
	}{
		{"default", "GET", "/", "reviews", nil, 200, "a"},
		{"port-qualified", "GET", "/", "reviews:80", nil, 200, "a"},
		{"fqdn with port", "GET", "/", "reviews.default.svc.cluster.local:9080", nil, 200, "a"},
		{"host case", "GET", "/", "REVIEWS", nil, 200, "a"},
		{"header exact", "GET", "/x", "reviews", map[string]string{"x-branch": "feat"}, 200, "b"},
		{"header exact mismatch", "GET", "/x", "reviews", map[string]string{"x-branch": "feature"}, 200, "a"},
		{"prefix case-insensitive", "GET", "/api/v1", "reviews", nil, 200, "c"},
		{"path exact", "GET", "/exact", "reviews", nil, 200, "b"},
		{"path exact ignores query", "GET", "/exact?x=1", "reviews", nil, 200, "b"},
		{"path exact no prefix", "GET", "/exact/more", "reviews", nil, 200, "a"},
		{"regex", "GET", "/re/123", "reviews", nil, 200, "c"},
		{"regex full match", "GET", "/re/123x", "reviews", nil, 200, "a"},
		{"query exact", "GET", "/q?v=2", "reviews", nil, 200, "c"},
		{"query present", "GET", "/q?debug", "reviews", nil, 200, "b"},
		{"query mismatch", "GET", "/q?v=3", "reviews", nil, 200, "a"},
		{"method", "POST", "/m", "reviews", nil, 200, "b"},
		{"method mismatch", "GET", "/m", "reviews", nil, 200, "a"},
		// Envoy: an inverted value matcher never matches a missing header
		// (Istio's withoutHeaders adds treat_missing_header_as_empty).
		{"invert header absent", "GET", "/inv", "reviews", nil, 200, "a"},
		{"invert header other value", "GET", "/inv", "reviews", map[string]string{"x-canary": "no"}, 200, "c"},
		{"invert header present", "GET", "/inv", "reviews", map[string]string{"x-canary": "yes-please"}, 200, "a"},
		{"present", "GET", "/p", "reviews", map[string]string{"x-present": ""}, 200, "c"},
		{":path pseudo-header", "GET", "/style.css", "reviews", nil, 200, "c"},
		{"suffix wildcard", "GET", "/", "foo.wild.example", nil, 200, "b"},
		{"longest suffix wins", "GET", "/", "foo.x.wild.example", nil, 200, "c"},
		{"prefix wildcard", "GET", "/", "pre.anything", nil, 200, "c"},
		{"no vhost", "GET", "/", "nothing", nil, 404, ""},
		{"unknown cluster", "GET", "/", "missing", nil, 503, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := do(t, c, tc.method, base+tc.path, tc.host, tc.hdr)
			if got.code != tc.wantCode || got.upstream != tc.wantUp {
				t.Errorf("got %d from %q, want %d from %q", got.code, got.upstream, tc.wantCode, tc.wantUp)
			}
		})
	}
}

// resourcesAny is resources for a mixed []any list.
func resourcesAny(items ...any) *xdsResources {
	var ms []protoMessage
	for _, it := range items {
		ms = append(ms, it.(protoMessage))
	}
	return resources(ms...)
}

func TestWeightedSplit(t *testing.T) {
	items := threeUpstreams(t)
	items = append(items,
		routeConfig("r", vhost("v", []string{"*"}, toWeighted("split", prefixMatch("/"), map[string]uint32{"a": 90, "b": 10}))),
		httpListener(t, "out", core.TrafficDirection_OUTBOUND, "r", nil))
	d := newDataplane(t, contract.Identity{}, nil)
	mustApply(t, d, resourcesAny(items...))
	base := "http://" + d.ListenerAddr("out").String()
	c := client(t, false)
	const n = 2000
	counts := map[string]int{}
	for range n {
		counts[do(t, c, "GET", base+"/", "svc", nil).upstream]++
	}
	// 90/10 over 2000 draws: sd ≈ 13.4; allow ±5 sd.
	if got := counts["a"]; math.Abs(float64(got)-1800) > 70 || counts["a"]+counts["b"] != n {
		t.Errorf("split = %v, want ≈ a:1800 b:200", counts)
	}
}

func TestRoundRobinWeights(t *testing.T) {
	addrs := map[string]string{}
	for _, n := range []string{"a", "b", "c"} {
		addrs[n] = echoUpstream(t, n, false)
	}
	res := resourcesAny(edsCluster(t, "svc", false, ""),
		cla("svc", ep{Addr: addrs["a"], Weight: 1}, ep{Addr: addrs["b"], Weight: 2}, ep{Addr: addrs["c"], Weight: 3},
			ep{Addr: "127.0.0.1:1", Health: core.HealthStatus_UNHEALTHY}, ep{Addr: "127.0.0.1:1", Health: core.HealthStatus_DRAINING}),
		routeConfig("r", vhost("v", []string{"*"}, toCluster("all", prefixMatch("/"), "svc"))),
		httpListener(t, "out", core.TrafficDirection_OUTBOUND, "r", nil))
	d := newDataplane(t, contract.Identity{}, nil)
	mustApply(t, d, res)
	base := "http://" + d.ListenerAddr("out").String()
	c := client(t, false)
	counts := map[string]int{}
	for range 600 {
		r := do(t, c, "GET", base+"/", "svc", nil)
		if r.code != 200 {
			t.Fatalf("code %d body %q", r.code, r.body)
		}
		counts[r.upstream]++
	}
	if counts["a"] != 100 || counts["b"] != 200 || counts["c"] != 300 {
		t.Errorf("counts = %v, want a:100 b:200 c:300", counts)
	}
}

func TestPriorityFailover(t *testing.T) {
	a, b := echoUpstream(t, "a", false), echoUpstream(t, "b", false)
	mk := func(aHealth core.HealthStatus) *xdsResources {
		return resourcesAny(edsCluster(t, "svc", false, ""),
			cla("svc", ep{Addr: a, Health: aHealth}, ep{Addr: b, Priority: 1}),
			routeConfig("r", vhost("v", []string{"*"}, toCluster("all", prefixMatch("/"), "svc"))),
			httpListener(t, "out", core.TrafficDirection_OUTBOUND, "r", nil))
	}
	d := newDataplane(t, contract.Identity{}, nil)
	mustApply(t, d, mk(core.HealthStatus_HEALTHY))
	base := "http://" + d.ListenerAddr("out").String()
	c := client(t, false)
	if got := do(t, c, "GET", base, "x", nil).upstream; got != "a" {
		t.Errorf("priority 0 healthy: got %q", got)
	}
	mustApply(t, d, mk(core.HealthStatus_UNHEALTHY))
	if got := do(t, c, "GET", base, "x", nil).upstream; got != "b" {
		t.Errorf("priority 0 unhealthy: got %q", got)
	}
}
