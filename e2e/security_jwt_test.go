package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"weft.dev/weft/internal/controlplane"
	"weft.dev/weft/internal/localmesh"
)

// issuer is a token issuer on loopback: it signs tokens with its current
// key and serves its key set at /jwks (plain http, which the control
// plane's fetcher accepts from loopback only).
type issuer struct {
	URL  string // the issuer's name (iss) and base URL
	keys atomic.Pointer[ecdsa.PrivateKey]
	kid  atomic.Pointer[string]
}

func newIssuer(t *testing.T) *issuer {
	t.Helper()
	is := &issuer{}
	is.rotate(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/jwks" {
			http.NotFound(w, r)
			return
		}
		k := is.keys.Load()
		set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &k.PublicKey, KeyID: *is.kid.Load(), Algorithm: "ES256", Use: "sig"}}}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(set)
	}))
	t.Cleanup(srv.Close)
	is.URL = srv.URL
	return is
}

// rotate replaces the issuer's key: the key set it serves has only the
// new one.
func (is *issuer) rotate(t *testing.T) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	kid := fmt.Sprintf("key-%d", time.Now().UnixNano())
	is.keys.Store(k)
	is.kid.Store(&kid)
}

// token signs claims (sub alice, audience orders, valid for an hour from
// now, with extra merged in; a nil value removes a claim) with the
// issuer's current key.
func (is *issuer) token(t *testing.T, extra map[string]any) string {
	t.Helper()
	return signToken(t, is.keys.Load(), *is.kid.Load(), is.claims(extra))
}

func (is *issuer) claims(extra map[string]any) map[string]any {
	c := map[string]any{"iss": is.URL, "sub": "alice", "aud": "orders",
		"iat": time.Now().Unix(), "exp": time.Now().Add(time.Hour).Unix()}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

func signToken(t *testing.T, key *ecdsa.PrivateKey, kid string, claims map[string]any) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
	if err != nil {
		t.Fatal(err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := s.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := obj.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func bearer(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

// jwtMesh is authzMesh with the control plane refreshing JWT keys every
// 200 ms, a token issuer, and a RequestAuthentication for orders naming
// its jwksUri; it returns once a token of the issuer is accepted.
func jwtMesh(t *testing.T) (m *Mesh, is *issuer, orders, frontend *localmesh.Workload) {
	t.Helper()
	is = newIssuer(t)
	m, orders, frontend = jwtRulesMesh(t, fmt.Sprintf(`
  - issuer: %s
    jwksUri: %s/jwks
    audiences: [orders]
`, is.URL, is.URL))
	// In force, with the keys fetched: until then tokens pass unchecked
	// (no filter yet), then are all refused (keys not fetched yet).
	eventuallyAll(t, "the issuer's tokens checked", newClient(), frontend.Outbound, "orders", []expect{
		{name: "valid token", path: "/", hdr: bearer(is.token(t, nil)), code: 200},
		{name: "expired token", path: "/", hdr: bearer(is.token(t, map[string]any{"exp": time.Now().Add(-time.Hour).Unix()})), code: 401, body: "Jwt is expired"},
	})
	return m, is, orders, frontend
}

// jwtRulesMesh is a mesh whose control plane refreshes JWT keys every
// 200 ms, with orders and a frontend client, and a RequestAuthentication
// for orders with the given jwtRules (YAML list items).
func jwtRulesMesh(t *testing.T, rules string) (m *Mesh, orders, frontend *localmesh.Workload) {
	t.Helper()
	m = NewMesh(t, func(o *controlplane.Options) { o.JWKSRefresh = 200 * time.Millisecond })
	orders = m.Service("orders", "HTTP", "v1")[0]
	frontend = m.Client("frontend")
	m.WriteConfig("jwt.yaml", `apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: orders-jwt, namespace: default}
spec:
  selector: {matchLabels: {app: orders}}
  jwtRules:`+rules)
	return m, orders, frontend
}

// TestSecurityJWTRequestAuthentication: what orders' sidecar does with
// tokens, as Envoy's jwt_authn filter would: a valid one passes and does
// not reach the app, none passes, an invalid one is refused with 401
// and WWW-Authenticate — 403 for an audience not allowed, which is what
// Envoy answers (Audiences in Jwt are not allowed), not 401.
func TestSecurityJWTRequestAuthentication(t *testing.T) {
	_, is, _, frontend := jwtMesh(t)
	c := newClient()
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cases := []expect{
		{name: "no token", path: "/", code: 200},
		{name: "expired", path: "/", hdr: bearer(is.token(t, map[string]any{"exp": time.Now().Add(-time.Hour).Unix()})), code: 401, body: "Jwt is expired"},
		{name: "not yet valid", path: "/", hdr: bearer(is.token(t, map[string]any{"nbf": time.Now().Add(time.Hour).Unix()})), code: 401, body: "Jwt not yet valid"},
		{name: "another issuer", path: "/", hdr: bearer(is.token(t, map[string]any{"iss": "https://elsewhere.example"})), code: 401, body: "Jwt issuer is not configured"},
		{name: "bad signature", path: "/", hdr: bearer(signToken(t, other, *is.kid.Load(), is.claims(nil))), code: 401, body: "Jwt verification fails"},
		{name: "not a JWT", path: "/", hdr: bearer("not.a.jwt"), code: 401, body: "Jwt header is an invalid JSON"},
		{name: "another audience", path: "/", hdr: bearer(is.token(t, map[string]any{"aud": "payments"})), code: 403, body: "Audiences in Jwt are not allowed"},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := check(ctx, c, frontend.Outbound, "orders", cases); err != nil {
		t.Error(err)
	}

	// The valid token is taken off the request (forwardOriginalToken is
	// false); a refusal says why in WWW-Authenticate.
	code, _, r, err := call(ctx, c, frontend.Outbound, "GET", "orders", "/", bearer(is.token(t, nil)))
	if err != nil || code != 200 || r.Headers["authorization"] != "" {
		t.Errorf("valid token: %d %v, the app saw authorization %q", code, err, r.Headers["authorization"])
	}
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+frontend.Outbound+"/items?id=3", nil)
	req.Host = "orders"
	req.Header.Set("Authorization", "Bearer "+is.token(t, map[string]any{"exp": time.Now().Add(-time.Hour).Unix()}))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got, want := resp.Header.Get("WWW-Authenticate"), `Bearer realm="http://orders/items?id=3", error="invalid_token"`; got != want {
		t.Errorf("WWW-Authenticate %q, want %q", got, want)
	}
}

// TestSecurityJWTClaimsInAuthorizationPolicy: a token is required on
// /api (DENY notRequestPrincipals), and writes need the admins group
// (ALLOW on request.auth.claims[groups]).
func TestSecurityJWTClaimsInAuthorizationPolicy(t *testing.T) {
	m, is, _, frontend := jwtMesh(t)
	m.WriteConfig("authz.yaml", fmt.Sprintf(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: api-needs-a-token, namespace: default}
spec:
  selector: {matchLabels: {app: orders}}
  action: DENY
  rules:
  - from:
    - source:
        notRequestPrincipals: ["*"]
    to:
    - operation:
        paths: ["/api/*"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: orders, namespace: default}
spec:
  selector: {matchLabels: {app: orders}}
  action: ALLOW
  rules:
  - to:
    - operation:
        methods: ["GET"]
  - from:
    - source:
        requestPrincipals: ["%s/*"]
    when:
    - key: request.auth.claims[groups]
      values: ["admins"]
`, is.URL))
	admin := bearer(is.token(t, map[string]any{"groups": []string{"dev", "admins"}}))
	dev := bearer(is.token(t, map[string]any{"groups": []string{"dev"}}))
	eventuallyAll(t, "policies in force", newClient(), frontend.Outbound, "orders", []expect{
		{name: "GET without a token", path: "/", code: 200},
		{name: "GET /api without a token", path: "/api/orders", code: 403, body: denied},
		{name: "GET /api with a token", path: "/api/orders", hdr: dev, code: 200},
		{name: "POST by an admin", method: "POST", path: "/api/orders", hdr: admin, code: 200},
		{name: "POST by a developer", method: "POST", path: "/api/orders", hdr: dev, code: 403, body: denied},
		{name: "POST without a token", method: "POST", path: "/orders", code: 403, body: denied},
		{name: "an invalid token is refused before RBAC", method: "POST", path: "/api/orders",
			hdr: bearer(is.token(t, map[string]any{"groups": []string{"admins"}, "aud": "payments"})), code: 403, body: "Audiences in Jwt are not allowed"},
	})
}

// TestSecurityJWTKeyRotation: when the issuer's jwksUri starts serving a
// new key (and drops the old one), the control plane's refresh brings it
// to the sidecar: new tokens are accepted, old ones refused.
func TestSecurityJWTKeyRotation(t *testing.T) {
	_, is, _, frontend := jwtMesh(t)
	c := newClient()
	old := is.token(t, nil)
	is.rotate(t)
	fresh := is.token(t, nil)
	eventuallyAll(t, "the new key followed", c, frontend.Outbound, "orders", []expect{
		{name: "token of the new key", path: "/", hdr: bearer(fresh), code: 200},
		{name: "token of the old key", path: "/", hdr: bearer(old), code: 401, body: "Jwks doesn't have key to match kid or alg from Jwt"},
	})
}

// TestSecurityJWTPresenceRequired: a rule with presence: REQUIRED (Istio
// 1.32) refuses a request without its token (401, Jwt is missing) even
// when another rule's token is there and valid; the other rule stays
// optional.
func TestSecurityJWTPresenceRequired(t *testing.T) {
	partner, user := newIssuer(t), newIssuer(t)
	_, _, frontend := jwtRulesMesh(t, fmt.Sprintf(`
  - issuer: %s
    jwksUri: %s/jwks
    fromHeaders: [{name: x-partner-token}]
    presence: REQUIRED
  - issuer: %s
    jwksUri: %s/jwks
`, partner.URL, partner.URL, user.URL, user.URL))
	partnerTok := map[string]string{"x-partner-token": partner.token(t, nil)}
	both := map[string]string{"x-partner-token": partner.token(t, nil), "Authorization": "Bearer " + user.token(t, nil)}
	eventuallyAll(t, "the partner token required", newClient(), frontend.Outbound, "orders", []expect{
		{name: "no token", path: "/", code: 401, body: "Jwt is missing"},
		{name: "only the optional rule's token", path: "/", hdr: bearer(user.token(t, nil)), code: 401, body: "Jwt is missing"},
		{name: "the required token", path: "/", hdr: partnerTok, code: 200},
		{name: "both", path: "/", hdr: both, code: 200},
		{name: "the required token expired", path: "/", hdr: map[string]string{"x-partner-token": partner.token(t, map[string]any{"exp": time.Now().Add(-time.Hour).Unix()})}, code: 401, body: "Jwt is expired"},
	})
}
