package route

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

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
			rr, err := compileRegexRewrite(&matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: tc.pattern}, Substitution: tc.subs})
			if err != nil {
				t.Fatal(err)
			}
			re := &Entry{entryRare: &entryRare{regexRewrite: rr}}
			u := &url.URL{Path: tc.path}
			re.RewritePath(u)
			if u.EscapedPath() != tc.want && u.Path != tc.want {
				t.Errorf("got %q, want %q", u.Path, tc.want)
			}
		})
	}
	if _, err := compileRegexRewrite(&matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: `^/(a)$`}, Substitution: `\2`}); err == nil {
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
		{"regex replaces the path", &route.RouteMatch{PathSpecifier: &route.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "/r/.*"}}}, "/fixed", "/r/x/y", "/fixed"},
		{"escaped", prefixMatch("/a"), "/b", "/a/x%2Fy", "/b/x%2Fy"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			re, err := compileRoute(&route.Route{Match: tc.m, Action: &route.Route_Route{Route: &route.RouteAction{
				ClusterSpecifier: &route.RouteAction_Cluster{Cluster: "a"}, PrefixRewrite: tc.rw}}}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			u, _ := url.Parse("http://x" + tc.path + "?q=1")
			re.RewritePath(u)
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
			re, err := compileRoute(&route.Route{Match: prefixMatch("/old/"), Action: &route.Route_Redirect{Redirect: tc.a}}, nil, nil)
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
