package generate

import (
	"bytes"
	"encoding/json"
	"testing"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	lrl "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	grl "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ratelimit/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/encoding/protojson"

	weftnet "weft.dev/weft/api/networking/v1alpha1"
	"weft.dev/weft/internal/mesh"
)

// rateLimitCases: a RateLimit on reviews (port 9080 only) with a default
// limit, a per-client-IP and a per-header descriptor, an exempt health
// check rule and a per-route rule; the metrics port (9090) gets nothing.
func rateLimitCases() []goldenCase {
	return []goldenCase{{
		name: "local_rate_limit",
		mesh: func() *mesh.Snapshot {
			return securityMesh(bookinfo+`
---
apiVersion: networking.weft.dev/v1alpha1
kind: RateLimit
metadata: {name: reviews, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: reviews}}
  ports: [9080]
  limit: {requestsPerUnit: 100, unit: SECOND, burst: 150}
  descriptors:
  - clientIP: true
    limit: {requestsPerUnit: 10, unit: SECOND}
  - header: X-User
    value: alice
    limit: {requestsPerUnit: 1000, unit: MINUTE}
  rules:
  - name: health
    match: [{uri: {exact: /healthz}}]
  - name: search
    match:
    - uri: {prefix: /search}
      method: {exact: GET}
    limit: {requestsPerUnit: 5, unit: SECOND}
  enforcedPercent: 50
`, mesh.Options{})
		},
		proxy: reviewsProxy,
	}, {
		// Global only: the ratelimit filter, no local one; a rule with
		// its own descriptors and an exempt one.
		name:  "global_rate_limit",
		mesh:  func() *mesh.Snapshot { return securityMesh(bookinfo+globalRateLimitYAML, mesh.Options{}) },
		proxy: reviewsProxy,
	}}
}

const globalRateLimitYAML = `
---
apiVersion: networking.weft.dev/v1alpha1
kind: RateLimit
metadata: {name: reviews, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: reviews}}
  ports: [9080]
  global:
    service: ratelimit.infra.svc.cluster.local:8081
    domain: bookinfo
    rateLimitHeaders: true
    descriptors:
    - actions:
      - requestHeader: {header: X-User, key: user}
    - actions:
      - genericKey: {key: tier, value: free}
      - clientIP: true
    - actions:
      - headerValueMatch:
          value: anonymous
          expectMatch: false
          headers: {authorization: {}}
  rules:
  - name: health
    match: [{uri: {exact: /healthz}}]
  - name: search
    match: [{uri: {prefix: /search}}]
    globalDescriptors:
    - actions: [{genericKey: {value: search}}]
`

// TestGlobalRateLimitConfig: spec.global reads as Envoy's ratelimit
// filter (the service as its outbound cluster, 20ms by default) and
// RateLimitPerRoute rate_limits per route; a rule's descriptors replace
// the RateLimit's, an exempt rule's route sends none, and no local rate
// limit filter is added.
func TestGlobalRateLimitConfig(t *testing.T) {
	s := securityMesh(bookinfo+globalRateLimitYAML, mesh.Options{})
	rl := s.RateLimits.For("bookinfo", map[string]string{"app": "reviews"})
	if rl == nil {
		t.Fatal("no RateLimit for reviews")
	}
	fs := rateLimitFilters([]*hcm.HttpFilter{{Name: "envoy.filters.http.router"}}, rl.Spec)
	if len(fs) != 2 || fs[0].GetName() != globalRateLimitName {
		t.Fatalf("filters = %v, want the ratelimit filter before the router only", fs)
	}
	var fc grl.RateLimit
	if err := fs[0].GetTypedConfig().UnmarshalTo(&fc); err != nil {
		t.Fatal(err)
	}
	wantFilter := `{"domain":"bookinfo","timeout":"0.020s","rateLimitService":{"grpcService":{"envoyGrpc":{"clusterName":"outbound|8081||ratelimit.infra.svc.cluster.local"}},"transportApiVersion":"V3"},"enableXRatelimitHeaders":"DRAFT_VERSION_03"}`
	if got := compactJSON(t, protojson.Format(&fc)); got != wantFilter {
		t.Errorf("filter config:\n got %s\nwant %s", got, wantFilter)
	}
	routes := rateLimitRoutes([]*route.Route{{Name: "default", Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}}}}, rl.Spec)
	want := []struct{ name, config string }{
		{"ratelimit/health", `{}`},
		{"ratelimit/search", `{"rateLimits":[{"actions":[{"genericKey":{"descriptorValue":"search"}}]}]}`},
		{"default", `{"rateLimits":[{"actions":[{"requestHeaders":{"headerName":"x-user","descriptorKey":"user"}}]},` +
			`{"actions":[{"genericKey":{"descriptorValue":"free","descriptorKey":"tier"}},{"remoteAddress":{}}]},` +
			`{"actions":[{"headerValueMatch":{"descriptorValue":"anonymous","expectMatch":false,"headers":[{"name":"authorization","presentMatch":true}]}}]}]}`},
	}
	if len(routes) != len(want) {
		t.Fatalf("%d routes, want %d", len(routes), len(want))
	}
	for i, w := range want {
		r := routes[i]
		if r.GetTypedPerFilterConfig()[localRateLimitName] != nil {
			t.Errorf("route %s has a local rate limit", r.GetName())
		}
		var cfg grl.RateLimitPerRoute
		if err := r.GetTypedPerFilterConfig()[globalRateLimitName].UnmarshalTo(&cfg); err != nil {
			t.Fatal(err)
		}
		if got := compactJSON(t, protojson.Format(&cfg)); r.GetName() != w.name || got != w.config {
			t.Errorf("route %d %s config:\n got %s\nwant %s %s", i, r.GetName(), got, w.name, w.config)
		}
	}

	// With a local limit too: the local filter first (a request it
	// refuses costs no call), both configs on every route.
	rl.Spec.Limit = &weftnet.Limit{RequestsPerUnit: 10, Unit: weftnet.Limit_SECOND}
	fs = rateLimitFilters([]*hcm.HttpFilter{{Name: "envoy.filters.http.router"}}, rl.Spec)
	if len(fs) != 3 || fs[0].GetName() != localRateLimitName || fs[1].GetName() != globalRateLimitName {
		t.Errorf("filters with a local limit = %v, want local, global, router", fs)
	}
	for _, r := range rateLimitRoutes([]*route.Route{{Name: "default", Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}}}}, rl.Spec) {
		if len(r.GetTypedPerFilterConfig()) != 2 {
			t.Errorf("route %s per-filter configs %v, want local and global", r.GetName(), r.GetTypedPerFilterConfig())
		}
	}

	// shadow: the service's OVER_LIMIT is counted, not enforced.
	rl.Spec.Shadow = true
	if err := globalRateLimitFilter(rl.Spec).GetTypedConfig().UnmarshalTo(&fc); err != nil {
		t.Fatal(err)
	}
	if got := compactJSON(t, protojson.Format(fc.GetFilterEnforced())); got != `{"defaultValue":{"denominator":"MILLION"},"runtimeKey":"ratelimit.http_filter_enforcing"}` {
		t.Errorf("shadow filter_enforced = %s", got)
	}
}

// TestLocalRateLimitConfig: how each part of a RateLimit reads as Envoy's
// LocalRateLimit, one table row per rule.
func TestLocalRateLimitConfig(t *testing.T) {
	s := rateLimitCases()[0].mesh()
	rl := s.RateLimits.For("bookinfo", map[string]string{"app": "reviews"})
	if rl == nil {
		t.Fatal("no RateLimit for reviews")
	}
	routes := rateLimitRoutes([]*route.Route{{Name: "default", Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}}}}, rl.Spec)
	want := []struct{ name, match, config string }{
		{"ratelimit/health", `{"path":"/healthz"}`,
			`{"statPrefix":"http_local_rate_limiter_health","filterEnabled":{"defaultValue":{"denominator":"MILLION"},"runtimeKey":"local_rate_limit_enabled"}}`},
		{"ratelimit/search", `{"prefix":"/search","headers":[{"name":":method","stringMatch":{"exact":"GET"}}]}`,
			`{"statPrefix":"http_local_rate_limiter_search","tokenBucket":{"maxTokens":5,"tokensPerFill":5,"fillInterval":"1s"},` +
				`"filterEnabled":{"defaultValue":{"numerator":1000000,"denominator":"MILLION"},"runtimeKey":"local_rate_limit_enabled"},` +
				`"filterEnforced":{"defaultValue":{"numerator":500000,"denominator":"MILLION"},"runtimeKey":"local_rate_limit_enforced"},` +
				`"requestHeadersToAddWhenNotEnforced":[{"header":{"key":"x-weft-rate-limited","value":"true"},"appendAction":"OVERWRITE_IF_EXISTS_OR_ADD"}],` +
				`"enableXRatelimitHeaders":"DRAFT_VERSION_03"}`},
		{"default", `{"prefix":"/"}`,
			`{"statPrefix":"http_local_rate_limiter","tokenBucket":{"maxTokens":150,"tokensPerFill":100,"fillInterval":"1s"},` +
				`"filterEnabled":{"defaultValue":{"numerator":1000000,"denominator":"MILLION"},"runtimeKey":"local_rate_limit_enabled"},` +
				`"filterEnforced":{"defaultValue":{"numerator":500000,"denominator":"MILLION"},"runtimeKey":"local_rate_limit_enforced"},` +
				`"requestHeadersToAddWhenNotEnforced":[{"header":{"key":"x-weft-rate-limited","value":"true"},"appendAction":"OVERWRITE_IF_EXISTS_OR_ADD"}],` +
				`"descriptors":[{"entries":[{"key":"remote_address"}],"tokenBucket":{"maxTokens":10,"tokensPerFill":10,"fillInterval":"1s"}},` +
				`{"entries":[{"key":"x-user","value":"alice"}],"tokenBucket":{"maxTokens":1000,"tokensPerFill":1000,"fillInterval":"60s"}}],` +
				`"enableXRatelimitHeaders":"DRAFT_VERSION_03",` +
				`"rateLimits":[{"actions":[{"remoteAddress":{}}]},{"actions":[{"requestHeaders":{"headerName":"x-user","descriptorKey":"x-user"}}]}],` +
				`"maxDynamicDescriptors":10000}`},
	}
	if len(routes) != len(want) {
		t.Fatalf("%d routes, want %d", len(routes), len(want))
	}
	for i, w := range want {
		r := routes[i]
		var cfg lrl.LocalRateLimit
		if err := r.GetTypedPerFilterConfig()[localRateLimitName].UnmarshalTo(&cfg); err != nil {
			t.Fatal(err)
		}
		if got := compactJSON(t, protojson.Format(r.GetMatch())); r.GetName() != w.name || got != w.match {
			t.Errorf("route %d: %s %s, want %s %s", i, r.GetName(), got, w.name, w.match)
		}
		if got := compactJSON(t, protojson.Format(&cfg)); got != w.config {
			t.Errorf("route %s config:\n got %s\nwant %s", w.name, got, w.config)
		}
	}
}

// TestNarrowMatch: a rule's path narrows only a catch-all route; headers
// always add up.
func TestNarrowMatch(t *testing.T) {
	catchAll := &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}}
	api := &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/api"}}
	hdr := &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}, Headers: []*route.HeaderMatcher{{Name: "x-a"}}}
	if m, ok := narrowMatch(catchAll, api); !ok || m.GetPrefix() != "/api" {
		t.Errorf("catch-all AND /api = %v %v", m, ok)
	}
	if m, ok := narrowMatch(api, hdr); !ok || m.GetPrefix() != "/api" || len(m.GetHeaders()) != 1 {
		t.Errorf("/api AND header = %v %v", m, ok)
	}
	if _, ok := narrowMatch(api, &route.RouteMatch{PathSpecifier: &route.RouteMatch_Path{Path: "/x"}}); ok {
		t.Error("/api AND path /x was combined; one Envoy match cannot say it")
	}
}

// compactJSON removes protojson's unstable whitespace.
func compactJSON(t *testing.T, s string) string {
	t.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(s)); err != nil {
		t.Fatal(err)
	}
	return b.String()
}
