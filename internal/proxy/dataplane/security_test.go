package dataplane

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	jose "github.com/go-jose/go-jose/v4"
	dto "github.com/prometheus/client_model/go"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"

	"weft.dev/weft/internal/proxy/filter/jwt"
	"weft.dev/weft/internal/proxy/filter/rbac"
	"weft.dev/weft/internal/xds/contract"
)

// yamlAny decodes an Envoy config written in YAML into m and wraps it.
func yamlAny(t testing.TB, src string, m proto.Message) *anypb.Any {
	t.Helper()
	var doc any
	if err := yaml.Unmarshal([]byte(src), &doc); err != nil {
		t.Fatalf("yaml: %v\n%s", err, src)
	}
	js, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	if err := protojson.Unmarshal(js, m); err != nil {
		t.Fatalf("protojson: %v\n%s", err, js)
	}
	return mustAny(t, m)
}

// signer makes ES256 JWTs and publishes the key as a JWKS.
type signer struct {
	key  *ecdsa.PrivateKey
	jwks string
}

func newSigner(t testing.TB) *signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &k.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	if err != nil {
		t.Fatal(err)
	}
	return &signer{key: k, jwks: string(b)}
}

// token signs claims valid for an hour, with extra merged in.
func (s *signer) token(t testing.TB, extra map[string]any) string {
	t.Helper()
	c := map[string]any{"iss": "https://issuer.example", "sub": "alice", "aud": "shop",
		"iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range extra {
		c[k] = v
	}
	sg, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: s.key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "k1"))
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(c)
	obj, err := sg.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// jwtConfig is the filter Istio writes for one RequestAuthentication rule.
func jwtConfig(t testing.TB, jwks string) *hcm.HttpFilter {
	return &hcm.HttpFilter{Name: jwt.FilterName, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: yamlAny(t, fmt.Sprintf(`
providers:
  origins-0:
    issuer: https://issuer.example
    audiences: [shop]
    localJwks: {inlineString: %q}
    payloadInMetadata: payload
    normalizePayloadInMetadata: {spaceDelimitedClaims: [permission, scope]}
rules:
- match: {prefix: /}
  requires: {requiresAny: {requirements: [{providerName: origins-0}, {allowMissing: {}}]}}
bypassCorsPreflight: true
`, jwks), &jwtv3.JwtAuthentication{})}}
}

func rbacFilter(t testing.TB, src string) *hcm.HttpFilter {
	return &hcm.HttpFilter{Name: rbac.FilterName, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: yamlAny(t, src, &rbachttpv3.RBAC{})}}
}

// Istio's DENY policy for paths ["/admin", "/admin/*"].
const rbacDenyAdmin = `
rules:
  action: DENY
  policies:
    ns[shop]-policy[deny-admin]-rule[0]:
      permissions:
      - andRules: {rules: [{orRules: {rules: [{urlPath: {path: {exact: /admin}}}, {urlPath: {path: {prefix: /admin/}}}]}}]}
      principals: [{andIds: {ids: [{any: true}]}}]
`

// Istio's ALLOW policies: anyone may GET; request principals of
// https://issuer.example whose groups claim has "admins" may do anything.
const rbacAllowReadersAndAdmins = `
rules:
  action: ALLOW
  policies:
    ns[shop]-policy[readers]-rule[0]:
      permissions:
      - andRules: {rules: [{orRules: {rules: [{header: {name: ":method", stringMatch: {exact: GET}}}]}}]}
      principals: [{andIds: {ids: [{any: true}]}}]
    ns[shop]-policy[admins]-rule[0]:
      permissions: [{andRules: {rules: [{any: true}]}}]
      principals:
      - andIds:
          ids:
          - orIds:
              ids:
              - metadata: {filter: envoy.filters.http.jwt_authn, path: [{key: payload}, {key: iss}], value: {stringMatch: {exact: "https://issuer.example"}}}
          - orIds:
              ids:
              - metadata:
                  filter: envoy.filters.http.jwt_authn
                  path: [{key: payload}, {key: groups}]
                  value: {orMatch: {valueMatchers: [{listMatch: {oneOf: {stringMatch: {exact: admins}}}}, {stringMatch: {exact: admins}}]}}
`

// inboundWithFilters is an inbound listener on 127.0.0.1:0 as the control
// plane writes it: Istio's path normalization, the given filters, the
// router, one route to cluster inbound|9080||.
func inboundWithFilters(t testing.TB, filters ...*hcm.HttpFilter) *listener.Listener {
	m := &hcm.HttpConnectionManager{
		StatPrefix: "inbound_127.0.0.1_9080",
		RouteSpecifier: &hcm.HttpConnectionManager_RouteConfig{RouteConfig: routeConfig("inbound|9080||",
			vhost("inbound|http|9080", []string{"*"}, toCluster("default", prefixMatch("/"), "inbound|9080||")))},
		HttpFilters: append(filters, &hcm.HttpFilter{Name: routerFilterName,
			ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &routerv3.Router{})}}),
		NormalizePath:                wrapperspb.Bool(true),
		PathWithEscapedSlashesAction: hcm.HttpConnectionManager_KEEP_UNCHANGED,
	}
	return &listener.Listener{
		Name: "in", Address: sockAddr("127.0.0.1", 0), TrafficDirection: core.TrafficDirection_INBOUND,
		FilterChains: []*listener.FilterChain{{Filters: []*listener.Filter{{
			Name: hcmFilterName, ConfigType: &listener.Filter_TypedConfig{TypedConfig: mustAny(t, m)}}}}},
	}
}

// TestInboundAuthorization runs Istio's inbound filter chain (JWT, RBAC
// DENY, RBAC ALLOW, router) over real HTTP: who is admitted, what the
// refused get, what the app sees, and what is counted.
func TestInboundAuthorization(t *testing.T) {
	app := echoUpstream(t, "shop-app", false)
	sg := newSigner(t)
	reg := newRegistry()
	d := newDataplane(t, contract.Identity{WorkloadName: "shop", Namespace: "shop"}, reg)
	mustApply(t, d, resourcesAny(staticCluster(t, "inbound|9080||", app),
		inboundWithFilters(t, jwtConfig(t, sg.jwks), rbacFilter(t, rbacDenyAdmin), rbacFilter(t, rbacAllowReadersAndAdmins))))
	base := "http://" + d.ListenerAddr("in").String()
	c := client(t, false)
	admin := map[string]string{"Authorization": "Bearer " + sg.token(t, map[string]any{"groups": []string{"dev", "admins"}})}
	dev := map[string]string{"Authorization": "Bearer " + sg.token(t, map[string]any{"groups": []string{"dev"}})}

	for _, tc := range []struct {
		name, method, path string
		hdr                map[string]string
		code               int
		body, seenPath     string
	}{
		{"GET, no token", "GET", "/items?id=1", nil, 200, "shop-app", "/items?id=1"},
		{"POST, no token", "POST", "/items", nil, 403, rbac.DeniedBody, ""},
		{"POST, admin's token", "POST", "/items", admin, 200, "shop-app", "/items"},
		{"POST, another group", "POST", "/items", dev, 403, rbac.DeniedBody, ""},
		{"DENY beats ALLOW", "GET", "/admin/users", admin, 403, rbac.DeniedBody, ""},
		{"the path is normalized before RBAC", "GET", "/public/../admin/users", nil, 403, rbac.DeniedBody, ""},
		{"percent-encoded dots too", "GET", "/public/%2e%2e/admin", nil, 403, rbac.DeniedBody, ""},
		{"and what the app gets", "GET", "/a/./b/../c", nil, 200, "shop-app", "/a/c"},
		{"an expired token", "GET", "/items", map[string]string{"Authorization": "Bearer " + sg.token(t, map[string]any{"exp": time.Now().Add(-time.Hour).Unix()})}, 401, "Jwt is expired", ""},
		{"another audience", "GET", "/items", map[string]string{"Authorization": "Bearer " + sg.token(t, map[string]any{"aud": "other"})}, 403, "Audiences in Jwt are not allowed", ""},
	} {
		// Go's client cleans nothing in the path: it is sent as written.
		got := do(t, c, tc.method, base+tc.path, "shop", tc.hdr)
		if got.code != tc.code || got.body != tc.body {
			t.Errorf("%s: %d %q, want %d %q", tc.name, got.code, got.body, tc.code, tc.body)
			continue
		}
		if tc.seenPath != "" && got.header.Get("X-Seen-Path") != tc.seenPath {
			t.Errorf("%s: the app saw %q, want %q", tc.name, got.header.Get("X-Seen-Path"), tc.seenPath)
		}
		if tc.code == 401 && !strings.HasPrefix(got.header.Get("WWW-Authenticate"), `Bearer realm="http://shop/items", error="invalid_token"`) {
			t.Errorf("%s: WWW-Authenticate %q", tc.name, got.header.Get("WWW-Authenticate"))
		}
	}

	if n := counterValue(t, reg, map[string]string{"reporter": "destination", "response_code": "403", "response_flags": "RBAC",
		"destination_workload": "shop", "destination_workload_namespace": "shop"}); n != 5 {
		t.Errorf("istio_requests_total{response_code=403,response_flags=RBAC} = %v, want 5", n)
	}
	if n := counterValue(t, reg, map[string]string{"response_code": "401", "response_flags": "-"}); n != 1 {
		t.Errorf("istio_requests_total{response_code=401} = %v, want 1", n)
	}
	for labels, want := range map[[2]string]float64{
		{"ALLOW", "none"}: 2,
		{"DENY", "ns[shop]-policy[deny-admin]-rule[0]"}: 3,
	} {
		if got := gaugeOrCounter(t, reg, "weft_proxy_rbac_denied_total", map[string]string{"action": labels[0], "policy": labels[1]}); got != want {
			t.Errorf("weft_proxy_rbac_denied_total{action=%s,policy=%s} = %v, want %v", labels[0], labels[1], got, want)
		}
	}
}

// TestAuthorizationChangeOnKeptAliveConnection: a policy pushed while a
// client holds a connection applies to its next request on that
// connection.
func TestAuthorizationChangeOnKeptAliveConnection(t *testing.T) {
	app := echoUpstream(t, "shop-app", false)
	d := newDataplane(t, contract.Identity{WorkloadName: "shop", Namespace: "shop"}, nil)
	cluster := staticCluster(t, "inbound|9080||", app)
	mustApply(t, d, resourcesAny(cluster, inboundWithFilters(t)))
	addr := d.ListenerAddr("in").String()
	c := client(t, false)

	get := func() (int, bool) {
		var reused bool
		ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
			GotConn: func(ci httptrace.GotConnInfo) { reused = ci.Reused },
		})
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/items", nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, reused
	}
	if code, _ := get(); code != 200 {
		t.Fatalf("before any policy: %d", code)
	}
	// Deny everything: an ALLOW filter without policies.
	mustApply(t, d, resourcesAny(cluster, inboundWithFilters(t, rbacFilter(t, `{rules: {action: ALLOW}}`))))
	if d.ListenerAddr("in").String() != addr {
		t.Fatal("the listener was bound again")
	}
	if code, reused := get(); code != 403 || !reused {
		t.Fatalf("after the policy: %d on a reused connection %v, want 403 on the same connection", code, reused)
	}
	mustApply(t, d, resourcesAny(cluster, inboundWithFilters(t)))
	if code, reused := get(); code != 200 || !reused {
		t.Fatalf("policy removed: %d on a reused connection %v, want 200", code, reused)
	}
}

// gaugeOrCounter sums the values of metric name over the series whose
// labels include want.
func gaugeOrCounter(t testing.TB, g interface {
	Gather() ([]*dto.MetricFamily, error)
}, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := want[lp.GetName()]; ok && v != lp.GetValue() {
					continue next
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}
