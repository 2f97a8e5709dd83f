package dataplane

import (
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"weft.dev/weft/internal/xds/contract"
)

func hvo(k, v string, a core.HeaderValueOption_HeaderAppendAction) *core.HeaderValueOption {
	return &core.HeaderValueOption{Header: &core.HeaderValue{Key: k, Value: v}, AppendAction: a}
}

const (
	appendOrAdd    = core.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
	overwriteOrAdd = core.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
)

func corsAny(t testing.TB, p *corsv3.CorsPolicy) map[string]*anypb.Any {
	return map[string]*anypb.Any{corsFilterName: mustAny(t, p)}
}

// corsListener is httpListener with envoy.filters.http.cors before the router.
func corsListener(t testing.TB, name, rds string) *listener.Listener {
	m := &hcm.HttpConnectionManager{
		StatPrefix:     name,
		RouteSpecifier: &hcm.HttpConnectionManager_Rds{Rds: &hcm.Rds{RouteConfigName: rds}},
		HttpFilters: []*hcm.HttpFilter{
			{Name: corsFilterName, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &corsv3.Cors{})}},
			{Name: routerFilterName, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &routerv3.Router{})}},
		},
	}
	return &listener.Listener{
		Name: name, Address: sockAddr("127.0.0.1", 0), TrafficDirection: core.TrafficDirection_OUTBOUND,
		FilterChains: []*listener.FilterChain{{Filters: []*listener.Filter{{
			Name: hcmFilterName, ConfigType: &listener.Filter_TypedConfig{TypedConfig: mustAny(t, m)}}}}},
	}
}

// TestRouteActions drives every action through a running dataplane.
func TestRouteActions(t *testing.T) {
	rewrite := toCluster("rewrite", prefixMatch("/old/"), "a")
	rewrite.GetRoute().PrefixRewrite = "/new/"
	rewrite.GetRoute().HostRewriteSpecifier = &route.RouteAction_HostRewriteLiteral{HostRewriteLiteral: "rewritten.example"}
	regex := toCluster("regex", prefixMatch("/svc/"), "a")
	regex.GetRoute().RegexRewrite = &matcher.RegexMatchAndSubstitute{Pattern: &matcher.RegexMatcher{Regex: `^/svc/([^/]+)/(.*)$`}, Substitution: `/\2/\1`}
	hdrs := toCluster("headers", prefixMatch("/hdr"), "a")
	hdrs.RequestHeadersToAdd = []*core.HeaderValueOption{hvo("x-set", "route", overwriteOrAdd)}
	hdrs.ResponseHeadersToAdd = []*core.HeaderValueOption{hvo("x-resp", "route", overwriteOrAdd), hvo("x-upstream", "added", appendOrAdd)}
	hdrs.ResponseHeadersToRemove = []string{"x-seen-proto"}
	split := toWeighted("split", prefixMatch("/split"), map[string]uint32{"a": 1})
	split.GetRoute().GetWeightedClusters().Clusters[0].ResponseHeadersToAdd = []*core.HeaderValueOption{hvo("x-dest", "a", overwriteOrAdd)}
	split.GetRoute().GetWeightedClusters().Clusters[0].HostRewriteSpecifier = &route.WeightedCluster_ClusterWeight_HostRewriteLiteral{HostRewriteLiteral: "split-a"}
	redirect := &route.Route{Name: "redirect", Match: prefixMatch("/moved"), Action: &route.Route_Redirect{Redirect: &route.RedirectAction{
		HostRedirect: "elsewhere", PathRewriteSpecifier: &route.RedirectAction_PathRedirect{PathRedirect: "/here"}, ResponseCode: route.RedirectAction_FOUND}},
		ResponseHeadersToAdd: []*core.HeaderValueOption{hvo("x-resp", "redirect", overwriteOrAdd)}}
	direct := &route.Route{Name: "direct", Match: prefixMatch("/direct"), Action: &route.Route_DirectResponse{DirectResponse: &route.DirectResponseAction{
		Status: 418, Body: &core.DataSource{Specifier: &core.DataSource_InlineString{InlineString: "teapot"}}}}}
	cors := toCluster("cors", prefixMatch("/cors"), "a")
	cors.TypedPerFilterConfig = corsAny(t, &corsv3.CorsPolicy{AllowOriginStringMatch: []*matcher.StringMatcher{exact("https://good.example")}, AllowMethods: "GET"})

	rc := routeConfig(contract.RouteHTTPProxy, vhost("svc", []string{"svc"}, rewrite, regex, hdrs, split, redirect, direct, cors))
	items := append(threeUpstreams(t), rc, corsListener(t, "out", contract.RouteHTTPProxy))
	d := newDataplane(t, contract.Identity{}, nil)
	mustApply(t, d, resourcesAny(items...))
	base := "http://" + d.ListenerAddr("out").String()
	c := client(t, false)
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	tests := []struct {
		name, method, path string
		hdr                map[string]string
		code               int
		want               map[string]string // response header → value ("" = absent)
		body               string
	}{
		{"prefix and host rewrite", "GET", "/old/x?q=1", nil, 200, map[string]string{"X-Seen-Path": "/new/x?q=1", "X-Seen-Host": "rewritten.example"}, ""},
		{"regex rewrite", "GET", "/svc/foo/v1/api", nil, 200, map[string]string{"X-Seen-Path": "/v1/api/foo"}, ""},
		{"response headers", "GET", "/hdr", nil, 200, map[string]string{"X-Resp": "route", "X-Seen-Proto": "", "X-Upstream": "a,added"}, ""},
		{"weighted cluster headers", "GET", "/split", nil, 200, map[string]string{"X-Dest": "a", "X-Seen-Host": "split-a"}, ""},
		{"redirect", "GET", "/moved?k=v", nil, 302, map[string]string{"Location": "http://elsewhere/here?k=v", "X-Resp": "redirect"}, ""},
		{"direct response", "GET", "/direct", nil, 418, map[string]string{"X-Upstream": ""}, "teapot"},
		{"cors preflight", "OPTIONS", "/cors", map[string]string{"Origin": "https://good.example", "Access-Control-Request-Method": "GET"}, 200,
			map[string]string{"Access-Control-Allow-Origin": "https://good.example", "Access-Control-Allow-Methods": "GET", "X-Upstream": ""}, ""},
		{"cors actual", "GET", "/cors", map[string]string{"Origin": "https://good.example"}, 200,
			map[string]string{"Access-Control-Allow-Origin": "https://good.example", "X-Upstream": "a"}, ""},
		{"cors other origin", "OPTIONS", "/cors", map[string]string{"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}, 200,
			map[string]string{"Access-Control-Allow-Origin": "", "X-Upstream": "a"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := do(t, c, tc.method, base+tc.path, "svc", tc.hdr)
			if res.code != tc.code {
				t.Fatalf("status %d, want %d (body %q)", res.code, tc.code, res.body)
			}
			for k, v := range tc.want {
				if got := strings.Join(res.header.Values(k), ","); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			if tc.body != "" && res.body != tc.body {
				t.Errorf("body %q, want %q", res.body, tc.body)
			}
		})
	}

	// The request headers arrive at the upstream: check with a header echo.
	t.Run("request headers", func(t *testing.T) {
		var seen http.Header
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen = r.Header.Clone() }))
		t.Cleanup(s.Close)
		r := toCluster("h", prefixMatch("/"), "e")
		r.RequestHeadersToAdd = []*core.HeaderValueOption{hvo("x-set", "v", overwriteOrAdd), hvo("x-add", "two", appendOrAdd)}
		r.RequestHeadersToRemove = []string{"x-drop"}
		items := []any{edsCluster(t, "e", false, ""), cla("e", ep{Addr: s.Listener.Addr().String()}),
			routeConfig(contract.RouteHTTPProxy, vhost("svc", []string{"svc"}, r)), httpListener(t, "out", core.TrafficDirection_OUTBOUND, contract.RouteHTTPProxy, nil)}
		d := newDataplane(t, contract.Identity{}, nil)
		mustApply(t, d, resourcesAny(items...))
		do(t, c, "GET", "http://"+d.ListenerAddr("out").String()+"/", "svc", map[string]string{"X-Set": "client", "X-Add": "one", "X-Drop": "x"})
		if got := seen.Values("X-Set"); !reflect.DeepEqual(got, []string{"v"}) {
			t.Errorf("X-Set = %q", got)
		}
		if got := seen.Values("X-Add"); !reflect.DeepEqual(got, []string{"one", "two"}) {
			t.Errorf("X-Add = %q", got)
		}
		if _, ok := seen["X-Drop"]; ok {
			t.Errorf("X-Drop still present")
		}
	})
}

func TestCORSNeedsTheFilter(t *testing.T) {
	cors := toCluster("cors", prefixMatch("/"), "a")
	cors.TypedPerFilterConfig = corsAny(t, &corsv3.CorsPolicy{AllowOriginStringMatch: []*matcher.StringMatcher{exact("https://good.example")}})
	items := append(threeUpstreams(t), routeConfig(contract.RouteHTTPProxy, vhost("svc", []string{"svc"}, cors)),
		httpListener(t, "out", core.TrafficDirection_OUTBOUND, contract.RouteHTTPProxy, nil))
	d := newDataplane(t, contract.Identity{}, nil)
	mustApply(t, d, resourcesAny(items...))
	res := do(t, client(t, false), "OPTIONS", "http://"+d.ListenerAddr("out").String()+"/", "svc",
		map[string]string{"Origin": "https://good.example", "Access-Control-Request-Method": "GET"})
	if res.upstream != "a" || res.header.Get("Access-Control-Allow-Origin") != "" {
		t.Errorf("without envoy.filters.http.cors the preflight must go upstream untouched: upstream %q, allow-origin %q",
			res.upstream, res.header.Get("Access-Control-Allow-Origin"))
	}
}
