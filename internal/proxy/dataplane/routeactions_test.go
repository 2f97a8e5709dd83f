package dataplane

import (
	"net/http"
	"net/http/httptest"
	"net/url"
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
	"google.golang.org/protobuf/types/known/wrapperspb"

	"weft.dev/weft/internal/xds/contract"
)

func hvo(k, v string, a core.HeaderValueOption_HeaderAppendAction) *core.HeaderValueOption {
	return &core.HeaderValueOption{Header: &core.HeaderValue{Key: k, Value: v}, AppendAction: a}
}

const (
	appendOrAdd    = core.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
	overwriteOrAdd = core.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
)

func TestHeaderMutation(t *testing.T) {
	tests := []struct {
		name   string
		add    []*core.HeaderValueOption
		remove []string
		in     http.Header
		want   http.Header
	}{
		{"set overwrites", []*core.HeaderValueOption{hvo("x-a", "new", overwriteOrAdd)}, nil,
			http.Header{"X-A": {"old1", "old2"}}, http.Header{"X-A": {"new"}}},
		{"add appends", []*core.HeaderValueOption{hvo("x-a", "new", appendOrAdd)}, nil,
			http.Header{"X-A": {"old"}}, http.Header{"X-A": {"old", "new"}}},
		{"add creates", []*core.HeaderValueOption{hvo("x-a", "new", appendOrAdd)}, nil,
			http.Header{}, http.Header{"X-A": {"new"}}},
		{"remove before add", []*core.HeaderValueOption{hvo("x-a", "new", appendOrAdd)}, []string{"X-a"},
			http.Header{"X-A": {"old"}, "X-B": {"b"}}, http.Header{"X-A": {"new"}, "X-B": {"b"}}},
		{"add if absent", []*core.HeaderValueOption{hvo("x-a", "new", core.HeaderValueOption_ADD_IF_ABSENT), hvo("x-b", "new", core.HeaderValueOption_ADD_IF_ABSENT)}, nil,
			http.Header{"X-A": {"old"}}, http.Header{"X-A": {"old"}, "X-B": {"new"}}},
		{"overwrite if exists", []*core.HeaderValueOption{hvo("x-a", "new", core.HeaderValueOption_OVERWRITE_IF_EXISTS), hvo("x-b", "new", core.HeaderValueOption_OVERWRITE_IF_EXISTS)}, nil,
			http.Header{"X-A": {"old"}}, http.Header{"X-A": {"new"}}},
		{"empty value skipped", []*core.HeaderValueOption{hvo("x-a", "", overwriteOrAdd)}, nil,
			http.Header{"X-A": {"old"}}, http.Header{"X-A": {"old"}}},
		{"deprecated append false", []*core.HeaderValueOption{{Header: &core.HeaderValue{Key: "x-a", Value: "n"}, Append: wrapperspb.Bool(false)}}, nil,
			http.Header{"X-A": {"old"}}, http.Header{"X-A": {"n"}}},
		{"percent escape", []*core.HeaderValueOption{hvo("x-a", "100%%", overwriteOrAdd)}, nil,
			http.Header{}, http.Header{"X-A": {"100%"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := compileHeaderMutation(tc.add, tc.remove)
			if err != nil {
				t.Fatal(err)
			}
			m.apply(tc.in)
			if !reflect.DeepEqual(tc.in, tc.want) {
				t.Errorf("got %v, want %v", tc.in, tc.want)
			}
		})
	}
}

func TestHeaderMutationErrors(t *testing.T) {
	tests := []struct {
		name   string
		add    []*core.HeaderValueOption
		remove []string
		want   string
	}{
		{"remove host", nil, []string{"host"}, "may not be modified"},
		{"add pseudo", []*core.HeaderValueOption{hvo(":path", "/x", overwriteOrAdd)}, nil, "may not be modified"},
		{"substitution", []*core.HeaderValueOption{hvo("x", "%DOWNSTREAM_REMOTE_ADDRESS%", overwriteOrAdd)}, nil, "unsupported"},
		{"both append forms", []*core.HeaderValueOption{{Header: &core.HeaderValue{Key: "x", Value: "v"}, Append: wrapperspb.Bool(true), AppendAction: overwriteOrAdd}}, nil, "mutually exclusive"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := compileHeaderMutation(tc.add, tc.remove); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want …%s…", err, tc.want)
			}
		})
	}
}

func TestHeaderAppendDoesNotAlias(t *testing.T) {
	m, err := compileHeaderMutation([]*core.HeaderValueOption{hvo("x-a", "new", appendOrAdd)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	backing := make([]string, 1, 4) // spare capacity an in-place append would use
	backing[0] = "old"
	src := http.Header{"X-A": backing}
	dst := http.Header{"X-A": src["X-A"]}
	m.apply(dst)
	if got := backing[:2][1]; got != "" {
		t.Errorf("apply wrote into the shared slice: %q", got)
	}
}

func TestRegexRewrite(t *testing.T) {
	tests := []struct {
		pattern, subs, path, want string
	}{
		{`^/service/([^/]+)(/.*)$`, `\2/instance/\1`, "/service/foo/v1/api", "/v1/api/instance/foo"},
		{`one`, `two`, "/xxx/one/yyy/one/zzz", "/xxx/two/yyy/two/zzz"},
		{`^(.*?)one(.*)$`, `\1two\2`, "/xxx/one/yyy/one/zzz", "/xxx/two/yyy/one/zzz"},
		{`^/a$`, `/cost$1`, "/a", "/cost$1"},
		{`^/aaa/(.*)$`, `/\\/\1`, "/aaa/b", `/\/b`},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			rr, err := compileRegexRewrite(&matcher.RegexMatchAndSubstitute{Pattern: &matcher.RegexMatcher{Regex: tc.pattern}, Substitution: tc.subs})
			if err != nil {
				t.Fatal(err)
			}
			re := &routeEntry{regexRewrite: rr}
			u := &url.URL{Path: tc.path}
			re.rewritePath(u)
			if u.EscapedPath() != tc.want && u.Path != tc.want {
				t.Errorf("got %q, want %q", u.Path, tc.want)
			}
		})
	}
	if _, err := compileRegexRewrite(&matcher.RegexMatchAndSubstitute{Pattern: &matcher.RegexMatcher{Regex: `^/(a)$`}, Substitution: `\2`}); err == nil {
		t.Error(`\2 with one group: want an error`)
	}
}

func TestPrefixRewrite(t *testing.T) {
	tests := []struct {
		name string
		m    *route.RouteMatch
		rw   string
		path string
		want string
	}{
		{"prefix", prefixMatch("/api/"), "/v2/", "/api/users", "/v2/users"},
		{"prefix to root", prefixMatch("/api"), "/", "/api/users", "//users"},
		{"exact replaces the path", &route.RouteMatch{PathSpecifier: &route.RouteMatch_Path{Path: "/old"}}, "/new", "/old", "/new"},
		{"regex replaces the path", &route.RouteMatch{PathSpecifier: &route.RouteMatch_SafeRegex{SafeRegex: &matcher.RegexMatcher{Regex: "/r/.*"}}}, "/fixed", "/r/x/y", "/fixed"},
		{"escaped", prefixMatch("/a"), "/b", "/a/x%2Fy", "/b/x%2Fy"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			re, err := compileRoute(&route.Route{Match: tc.m, Action: &route.Route_Route{Route: &route.RouteAction{
				ClusterSpecifier: &route.RouteAction_Cluster{Cluster: "a"}, PrefixRewrite: tc.rw}}})
			if err != nil {
				t.Fatal(err)
			}
			u, _ := url.Parse("http://x" + tc.path + "?q=1")
			re.rewritePath(u)
			if u.EscapedPath() != tc.want || u.RawQuery != "q=1" {
				t.Errorf("got %q ?%s, want %q ?q=1", u.EscapedPath(), u.RawQuery, tc.want)
			}
		})
	}
}

func TestRedirectLocation(t *testing.T) {
	tests := []struct {
		name   string
		a      *route.RedirectAction
		target string // request target, host from Host
		host   string
		want   string
		code   int
	}{
		{"path and host", &route.RedirectAction{HostRedirect: "new.example", PathRewriteSpecifier: &route.RedirectAction_PathRedirect{PathRedirect: "/v2"}},
			"/v1?a=b", "old.example", "http://new.example/v2?a=b", 301},
		{"keep path", &route.RedirectAction{HostRedirect: "new", ResponseCode: route.RedirectAction_FOUND},
			"/p", "old:9080", "http://new/p", 302},
		{"keep host with port", &route.RedirectAction{PathRewriteSpecifier: &route.RedirectAction_PathRedirect{PathRedirect: "/n"}},
			"/p", "svc:9080", "http://svc:9080/n", 301},
		{"port replaces", &route.RedirectAction{PortRedirect: 8443, ResponseCode: route.RedirectAction_TEMPORARY_REDIRECT},
			"/p", "svc:9080", "http://svc:8443/p", 307},
		{"https drops :80", &route.RedirectAction{SchemeRewriteSpecifier: &route.RedirectAction_SchemeRedirect{SchemeRedirect: "https"}, ResponseCode: route.RedirectAction_PERMANENT_REDIRECT},
			"/p", "svc:80", "https://svc/p", 308},
		{"path with query wins", &route.RedirectAction{PathRewriteSpecifier: &route.RedirectAction_PathRedirect{PathRedirect: "/n?x=1"}, ResponseCode: route.RedirectAction_SEE_OTHER},
			"/p?a=b", "svc", "http://svc/n?x=1", 303},
		{"strip query", &route.RedirectAction{StripQuery: true}, "/p?a=b", "svc", "http://svc/p", 301},
		{"prefix rewrite", &route.RedirectAction{PathRewriteSpecifier: &route.RedirectAction_PrefixRewrite{PrefixRewrite: "/new/"}}, "/old/x", "svc", "http://svc/new/x", 301},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			re, err := compileRoute(&route.Route{Match: prefixMatch("/old/"), Action: &route.Route_Redirect{Redirect: tc.a}})
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest("GET", tc.target, nil)
			r.Host = tc.host
			if got := re.redirect.location(r, re); got != tc.want || re.redirect.code != tc.code {
				t.Errorf("got %d %q, want %d %q", re.redirect.code, got, tc.code, tc.want)
			}
		})
	}
}

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
