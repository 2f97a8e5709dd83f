package route

import (
	"crypto/tls"
	"fmt"
	"math"
	"net/http"
	"strings"
	"testing"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
)

func TestCompileErrors(t *testing.T) {
	bad := []struct {
		name string
		r    *route.Route
		want string
	}{
		{"regex", &route.Route{Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "("}}},
			Action: toCluster("", nil, "a").Action}, "safe_regex"},
		{"no path", &route.Route{Match: &route.RouteMatch{}, Action: toCluster("", nil, "a").Action}, "missing path specifier"},
		{"connect", &route.Route{Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_ConnectMatcher_{}}, Action: toCluster("", nil, "a").Action}, "unsupported path specifier"},
		{"redirect", &route.Route{Match: prefixMatch("/"), Action: &route.Route_Redirect{Redirect: &route.RedirectAction{
			PathRewriteSpecifier: &route.RedirectAction_RegexRewrite{}}}}, "redirect: regex_rewrite: unsupported"},
		{"range", &route.Route{Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"},
			Headers: []*route.HeaderMatcher{{Name: "x", HeaderMatchSpecifier: &route.HeaderMatcher_RangeMatch{}}}}, Action: toCluster("", nil, "a").Action}, "match.headers[0] (x)"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile(routeConfig("rc", vhost("v0", []string{"a"}), vhost("v1", []string{"b"}, toCluster("ok", prefixMatch("/"), "a"), tc.r)), nil)
			if err == nil || !strings.Contains(err.Error(), "virtual_hosts[1] (v1): routes[1]: ") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want virtual_hosts[1] (v1): routes[1]: …%s…", err, tc.want)
			}
		})
	}
	_, err := Compile(routeConfig("rc", vhost("v0", []string{"a"}), vhost("v1", []string{"A"})), nil)
	if err == nil || !strings.Contains(err.Error(), "already used") {
		t.Errorf("duplicate domain: err = %v", err)
	}
}

func BenchmarkRouteMatch(b *testing.B) {
	var vhs []*route.VirtualHost
	for i := range 1000 {
		var rs []*route.Route
		for j := range 9 {
			rs = append(rs, &route.Route{Name: fmt.Sprint(j), Match: &route.RouteMatch{
				PathSpecifier: &route.RouteMatch_Prefix{Prefix: fmt.Sprintf("/p%d", j)},
				Headers:       []*route.HeaderMatcher{hdr("x-branch", exact(fmt.Sprint("b", j)), false)}},
				Action: toCluster("", nil, "c").Action})
		}
		rs = append(rs, toCluster("default", prefixMatch("/"), "c"))
		host := fmt.Sprintf("svc%d.default.svc.cluster.local", i)
		vhs = append(vhs, vhost(host+":80", []string{host, host + ":80", fmt.Sprintf("svc%d", i)}, rs...))
	}
	tab, err := Compile(routeConfig("r", vhs...), nil)
	if err != nil {
		b.Fatal(err)
	}
	req, _ := http.NewRequest("GET", "http://svc998.default.svc.cluster.local/p8/x", nil)
	req.Header.Set("x-branch", "b8")
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if re := tab.Route(req); re == nil || re.Name != "8" {
			b.Fatal("no match")
		}
	}
}

// TestFuzzRegressions spells out, readably, what the crashers and
// failures kept under testdata/fuzz/ found.
func TestFuzzRegressions(t *testing.T) {
	t.Run("weighted clusters whose weights add up past 2^32-1", func(t *testing.T) {
		// testdata/fuzz/FuzzTranslateWire/weighted-clusters-total-over-uint32:
		// the total wrapped around, so the cumulative weights went down and
		// the split was not what the weights said. Envoy rejects such a sum.
		rc := routeConfig("r", vhost("v", []string{"*"}, toWeighted("split", prefixMatch("/"),
			map[string]uint32{"a": math.MaxUint32, "b": 2})))
		_, err := Compile(rc, nil)
		if err == nil || !strings.Contains(err.Error(), "weighted_clusters.clusters[1].weight: the weights add up to more than 4294967295") {
			t.Fatalf("err = %v", err)
		}
		rc = routeConfig("r", vhost("v", []string{"*"}, toWeighted("split", prefixMatch("/"),
			map[string]uint32{"a": math.MaxUint32 - 2, "b": 2})))
		if _, err := Compile(rc, nil); err != nil {
			t.Fatalf("a total of exactly 2^32-1 must be accepted: %v", err)
		}
	})
}

// A virtual host with require_tls answers plaintext requests with a 301
// to the same host and path over https (Envoy's SslRedirectRoute) and
// routes TLS requests as usual; EXTERNAL_ONLY spares internal requests.
func TestRequireTLS(t *testing.T) {
	rc := &route.RouteConfiguration{VirtualHosts: []*route.VirtualHost{
		{Name: "all", Domains: []string{"a.example.com", "a.example.com:8080"}, RequireTls: route.VirtualHost_ALL, Routes: []*route.Route{{
			Match:  &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
			Action: &route.Route_Route{Route: &route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: "web"}}},
		}}},
		{Name: "ext", Domains: []string{"b.example.com"}, RequireTls: route.VirtualHost_EXTERNAL_ONLY},
	}}
	tab, err := Compile(rc, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		host, path string
		tls        bool
		internal   bool
		want       string // Location, or "cluster web", or "none"
	}{
		{"a.example.com", "/x?q=1", false, false, "https://a.example.com/x?q=1"},
		{"a.example.com:8080", "/", false, false, "https://a.example.com:8080/"},
		{"a.example.com", "/x", true, false, "cluster web"},
		{"b.example.com", "/", false, false, "https://b.example.com/"},
		{"b.example.com", "/", false, true, "none"},
	} {
		r, _ := http.NewRequest("GET", "http://"+tc.host+tc.path, nil)
		r.Host = tc.host
		if tc.tls {
			r.TLS = &tlsState
		}
		if tc.internal {
			r.Header.Set("x-envoy-internal", "true")
		}
		e := tab.Route(r)
		var got string
		switch {
		case e == nil:
			got = "none"
		case e.IsRedirect():
			code, loc := e.RedirectTo(r)
			if code != http.StatusMovedPermanently {
				t.Errorf("%s%s: code %d, want 301", tc.host, tc.path, code)
			}
			got = loc
		default:
			got = "cluster " + e.PickCluster(r)
		}
		if got != tc.want {
			t.Errorf("%s%s (tls %v): got %q, want %q", tc.host, tc.path, tc.tls, got, tc.want)
		}
	}
}

var tlsState = tls.ConnectionState{}

// TestIgnorePortInHostMatching: with ignore_port_in_host_matching a Host's
// port is dropped before the virtual host is chosen (Envoy's
// getPortStart: a numeric port after the last ':', outside brackets).
func TestIgnorePortInHostMatching(t *testing.T) {
	vh := func(name string, domains ...string) *route.VirtualHost {
		return &route.VirtualHost{Name: name, Domains: domains, Routes: []*route.Route{{
			Match:  &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
			Action: &route.Route_Route{Route: &route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: name}}},
		}}}
	}
	rc := &route.RouteConfiguration{VirtualHosts: []*route.VirtualHost{
		vh("wild", "*.example.com"), vh("exact", "api.example.org"), vh("v6", "[::1]"),
	}}
	for _, ignore := range []bool{false, true} {
		rc.IgnorePortInHostMatching = ignore
		tab, err := Compile(rc, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			host           string
			want, wantIgnr string // cluster; "" none
		}{
			{"foo.example.com", "wild", "wild"},
			{"foo.example.com:12345", "", "wild"},
			{"api.example.org:80", "", "exact"},
			{"[::1]:8080", "", "v6"},
			{"[::1]", "v6", "v6"},
			{"api.example.org:http", "", ""}, // not a numeric port: kept
		} {
			r, _ := http.NewRequest("GET", "http://x/", nil)
			r.Host = tc.host
			want := tc.want
			if ignore {
				want = tc.wantIgnr
			}
			got := ""
			if e := tab.Route(r); e != nil {
				got = e.PickCluster(r)
			}
			if got != want {
				t.Errorf("ignore %v, Host %q: cluster %q, want %q", ignore, tc.host, got, want)
			}
		}
	}
}
