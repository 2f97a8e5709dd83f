package jwt

import (
	"net/http"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"weft.dev/weft/internal/proxy/filter/rbac"
)

// TestWithRBAC runs the filter chain Istio builds for a RequestAuthentication
// and an AuthorizationPolicy that requires a request principal:
//
//	kind: AuthorizationPolicy
//	spec:
//	  action: ALLOW
//	  rules:
//	  - from: [{source: {requestPrincipals: ["https://issuer.example/*"]}}]
//	    when: [{key: request.auth.claims[scope], values: ["write"]}]
//
// The JWT filter's metadata is what the RBAC filter reads.
func TestWithRBAC(t *testing.T) {
	k := rsaKey("k1", jose.RS256)
	authn := compileConfig(t, istioConfig(jwks(t, k)))
	var authzCfg = `
rules:
  policies:
    ns[foo]-policy[require-jwt]-rule[0]:
      permissions: [{andRules: {rules: [{any: true}]}}]
      principals:
      - andIds:
          ids:
          - andIds:
              ids:
              - metadata: {filter: envoy.filters.http.jwt_authn, path: [{key: payload}, {key: iss}], value: {stringMatch: {exact: "https://issuer.example"}}}
              - metadata: {filter: envoy.filters.http.jwt_authn, path: [{key: payload}, {key: sub}], value: {stringMatch: {safeRegex: {regex: .+}}}}
          - metadata:
              filter: envoy.filters.http.jwt_authn
              path: [{key: payload}, {key: scope}]
              value: {orMatch: {valueMatchers: [{listMatch: {oneOf: {stringMatch: {exact: write}}}}, {stringMatch: {exact: write}}]}}
`
	authz := compileRBAC(t, authzCfg)

	serve := func(h http.Header) (int, string) {
		r := &Request{Method: "GET", Path: "/", Authority: "svc", Scheme: "http", Header: h}
		res := authn.Verify(r)
		if !res.Allowed() {
			return res.Code, res.Body
		}
		var md rbac.DynamicMetadata
		if res.Metadata != nil {
			md = rbac.DynamicMetadata{FilterName: res.Metadata}
		}
		d := authz.Evaluate(&rbac.Request{Method: r.Method, Path: r.Path, Authority: r.Authority, Header: r.Header, Metadata: md})
		if !d.Allowed {
			return http.StatusForbidden, rbac.DeniedBody
		}
		return http.StatusOK, ""
	}
	cases := []struct {
		name string
		h    http.Header
		code int
	}{
		{"writer", bearer(k.sign(t, claims(map[string]any{"scope": "read write"}))), 200},
		{"reader", bearer(k.sign(t, claims(map[string]any{"scope": "read"}))), 403},
		{"no token: the JWT filter passes, RBAC denies", http.Header{}, 403},
		{"expired token: the JWT filter refuses", bearer(k.sign(t, claims(map[string]any{"scope": "write", "exp": testNow.Unix() - 3600}))), 401},
	}
	for _, tc := range cases {
		if code, body := serve(tc.h); code != tc.code {
			t.Errorf("%s: %d %q, want %d", tc.name, code, body, tc.code)
		}
	}
}

func compileRBAC(t *testing.T, src string) *rbac.Filter {
	t.Helper()
	cfg := parseRBAC(t, src)
	f, err := rbac.Compile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return f
}
