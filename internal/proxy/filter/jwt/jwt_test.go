package jwt

import (
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

// TestIstioProvider runs Istio's single-provider config through the cases
// RequestAuthentication users meet.
func TestIstioProvider(t *testing.T) {
	k := rsaKey("k1", jose.RS256)
	f := compileConfig(t, istioConfig(jwks(t, k)))
	valid := k.sign(t, claims(nil))

	cases := []struct {
		name   string
		path   string
		header http.Header
		want   Status
	}{
		{"valid token", "/data", bearer(valid), OK},
		{"no token", "/data", http.Header{}, OK},
		{"token in access_token query parameter", "/data?x=1&access_token=" + valid, http.Header{}, OK},
		{"expired", "/data", bearer(k.sign(t, claims(map[string]any{"exp": testNow.Add(-61 * time.Second).Unix()}))), JwtExpired},
		{"expired within the clock skew", "/data", bearer(k.sign(t, claims(map[string]any{"exp": testNow.Add(-59 * time.Second).Unix()}))), OK},
		{"not yet valid", "/data", bearer(k.sign(t, claims(map[string]any{"nbf": testNow.Add(2 * time.Minute).Unix()}))), JwtNotYetValid},
		{"not yet valid within the clock skew", "/data", bearer(k.sign(t, claims(map[string]any{"nbf": testNow.Add(time.Minute).Unix()}))), OK},
		{"no exp never expires", "/data", bearer(k.sign(t, claims(map[string]any{"exp": nil}))), OK},
		{"wrong issuer", "/data", bearer(k.sign(t, claims(map[string]any{"iss": "https://evil.example"}))), JwtUnknownIssuer},
		{"wrong audience", "/data", bearer(k.sign(t, claims(map[string]any{"aud": "other.example"}))), JwtAudienceNotAllowed},
		{"audience in a list", "/data", bearer(k.sign(t, claims(map[string]any{"aud": []string{"x", "api.example"}}))), OK},
		{"audience as a URL", "/data", bearer(k.sign(t, claims(map[string]any{"aud": "https://api.example/"}))), OK},
		{"no audience", "/data", bearer(k.sign(t, claims(map[string]any{"aud": nil}))), JwtAudienceNotAllowed},
		{"bad signature", "/data", bearer(otherRSAKey("k1").sign(t, claims(nil))), JwtVerificationFail},
		{"unknown kid", "/data", bearer(otherRSAKey("k2").sign(t, claims(nil))), JwksKidAlgMismatch},
		{"tampered payload", "/data", bearer(tamper(valid)), JwtVerificationFail},
		{"unsigned (alg none)", "/data", bearer(unsigned(claims(nil)) + "c2ln"), JwtHeaderNotImplementedAlg},
		{"unsigned with an empty signature", "/data", bearer(unsigned(claims(nil))), JwtBadFormat},
		{"not a JWT", "/data", bearer("abc.def"), JwtBadFormat},
		{"bad header base64", "/data", bearer("a.e30.c2ln"), JwtHeaderParseErrorBadBase64},
		{"only JWT characters are taken", "/data", bearer("!!!.e30.c2ln"), JwtBadFormat},
		{"bad payload JSON", "/data", bearer(b64(`{"alg":"RS256"}`) + "." + b64("[1]") + ".c2ln"), JwtPayloadParseErrorBadJSON},
		{"aud not a string", "/data", bearer(k.sign(t, claims(map[string]any{"aud": 7}))), JwtPayloadParseErrorAudNotString},
		{"exp not a number", "/data", bearer(k.sign(t, claims(map[string]any{"exp": "soon"}))), JwtPayloadParseErrorExpNotInteger},
		{"a bad token beside a good one", "/data?access_token=garbage", bearer(valid), JwtBadFormat},
		{"Bearer prefix required", "/data", http.Header{"Authorization": {"Basic " + valid}}, OK},
		{"token found after the prefix", "/data", http.Header{"Authorization": {"Other x, Bearer " + valid + " trailing"}}, OK},
		{"CORS preflight bypasses", "/data", http.Header{"Authorization": {"Bearer garbage"}, "Origin": {"https://app"}, "Access-Control-Request-Method": {"GET"}}, OK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			method := "GET"
			if tc.name == "CORS preflight bypasses" {
				method = http.MethodOptions
			}
			r := &Request{Method: method, Path: tc.path, Authority: "svc.local", Scheme: "http", Header: tc.header}
			res := f.Verify(r)
			if res.Status != tc.want {
				t.Fatalf("Status = %v (%q), want %v (%q)", int(res.Status), res.Status, int(tc.want), tc.want)
			}
			if res.Allowed() != (tc.want == OK) {
				t.Errorf("Allowed = %v", res.Allowed())
			}
			if tc.want != OK {
				wantCode := http.StatusUnauthorized
				if tc.want == JwtAudienceNotAllowed {
					wantCode = http.StatusForbidden
				}
				if res.Code != wantCode || res.Body != tc.want.String() {
					t.Errorf("reply %d %q, want %d %q", res.Code, res.Body, wantCode, tc.want.String())
				}
				wantAuth := `Bearer realm="http://svc.local` + tc.path + `", error="invalid_token"`
				if res.WWWAuthenticate != wantAuth {
					t.Errorf("WWW-Authenticate = %q, want %q", res.WWWAuthenticate, wantAuth)
				}
				if !strings.HasPrefix(res.Details, "jwt_authn_access_denied{") || strings.Contains(res.Details, " ") {
					t.Errorf("Details = %q", res.Details)
				}
			}
		})
	}
}

func tamper(tok string) string {
	parts := strings.Split(tok, ".")
	parts[1] = b64(`{"iss":"https://issuer.example","sub":"mallory","aud":"api.example"}`)
	return strings.Join(parts, ".")
}

func unsigned(c map[string]any) string {
	p, _ := json.Marshal(c)
	return b64(`{"alg":"none","typ":"JWT"}`) + "." + base64.RawURLEncoding.EncodeToString(p) + "."
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// TestValidTokenEffects checks what a valid token does to the request and
// the metadata, with Istio's defaults (forward false) and with forward.
func TestValidTokenEffects(t *testing.T) {
	k := rsaKey("k1", jose.RS256)
	tok := k.sign(t, claims(map[string]any{"scope": "read  write", "groups": []string{"a"}}))

	f := compileConfig(t, istioConfig(jwks(t, k)))
	r := &Request{Method: "GET", Path: "/", Header: bearer(tok)}
	res := f.Verify(r)
	if !res.Allowed() {
		t.Fatalf("Verify: %v", res.Status)
	}
	if _, ok := r.Header["Authorization"]; ok {
		t.Error("Authorization header kept; Istio's forwardOriginalToken defaults to false")
	}
	payload, ok := res.Metadata["payload"].(map[string]any)
	if !ok {
		t.Fatalf("Metadata = %v, want a payload", res.Metadata)
	}
	if payload["iss"] != "https://issuer.example" || payload["sub"] != "alice" {
		t.Errorf("payload = %v", payload)
	}
	if got := payload["scope"]; !reflect.DeepEqual(got, []any{"read", "write"}) {
		t.Errorf("space-delimited scope = %#v, want [read write]", got)
	}
	if got := payload["groups"]; !reflect.DeepEqual(got, []any{"a"}) {
		t.Errorf("groups = %#v", got)
	}

	f = compileConfig(t, istioConfig(jwks(t, k), "forward: true", "forwardPayloadHeader: x-jwt-payload"))
	r = &Request{Method: "GET", Path: "/", Header: bearer(tok)}
	r.Header.Set("X-Jwt-Payload", "spoofed")
	if res := f.Verify(r); !res.Allowed() {
		t.Fatalf("Verify: %v", res.Status)
	}
	if r.Header.Get("Authorization") != "Bearer "+tok {
		t.Error("forward: true removed the token")
	}
	got := r.Header.Values("X-Jwt-Payload")
	if len(got) != 1 || got[0] != strings.Split(tok, ".")[1] {
		t.Errorf("x-jwt-payload = %q, want the token's base64url payload only", got)
	}

	// Without a token the spoofed payload header is still removed.
	r = &Request{Method: "GET", Path: "/", Header: http.Header{"X-Jwt-Payload": {"spoofed"}}}
	if res := f.Verify(r); !res.Allowed() || r.Header.Get("X-Jwt-Payload") != "" {
		t.Errorf("missing token: %v, x-jwt-payload %q", res.Status, r.Header.Get("X-Jwt-Payload"))
	}
}

// TestAlgorithms verifies tokens of every algorithm Envoy implements, and
// refuses each signed by another key of the same type under the same kid.
func TestAlgorithms(t *testing.T) {
	a, b := rsaKeys()
	keys := []struct {
		good, forged *testKey
	}{
		{&testKey{kid: "rs256", alg: jose.RS256, priv: a}, &testKey{kid: "rs256", alg: jose.RS256, priv: b}},
		{&testKey{kid: "rs384", alg: jose.RS384, priv: a}, &testKey{kid: "rs384", alg: jose.RS384, priv: b}},
		{&testKey{kid: "rs512", alg: jose.RS512, priv: a}, &testKey{kid: "rs512", alg: jose.RS512, priv: b}},
		{&testKey{kid: "ps256", alg: jose.PS256, priv: a}, &testKey{kid: "ps256", alg: jose.PS256, priv: b}},
		{&testKey{kid: "ps512", alg: jose.PS512, priv: a}, &testKey{kid: "ps512", alg: jose.PS512, priv: b}},
		{&testKey{kid: "es256", alg: jose.ES256, priv: newECKey(t, elliptic.P256())}, &testKey{kid: "es256", alg: jose.ES256, priv: newECKey(t, elliptic.P256())}},
		{&testKey{kid: "es384", alg: jose.ES384, priv: newECKey(t, elliptic.P384())}, &testKey{kid: "es384", alg: jose.ES384, priv: newECKey(t, elliptic.P384())}},
		{&testKey{kid: "es512", alg: jose.ES512, priv: newECKey(t, elliptic.P521())}, &testKey{kid: "es512", alg: jose.ES512, priv: newECKey(t, elliptic.P521())}},
		{&testKey{kid: "ed", alg: jose.EdDSA, priv: newEdKey(t)}, &testKey{kid: "ed", alg: jose.EdDSA, priv: newEdKey(t)}},
		{&testKey{kid: "hs256", alg: jose.HS256, priv: []byte("0123456789abcdef0123456789abcdef")}, &testKey{kid: "hs256", alg: jose.HS256, priv: []byte("fedcba9876543210fedcba9876543210")}},
	}
	var published []*testKey
	for _, k := range keys {
		published = append(published, k.good)
	}
	f := compileConfig(t, istioConfig(jwks(t, published...)))
	if w := f.Warnings(); len(w) != 0 {
		t.Fatalf("Warnings: %v", w)
	}
	for _, k := range keys {
		t.Run(string(k.good.alg), func(t *testing.T) {
			if res := f.Verify(&Request{Path: "/", Header: bearer(k.good.sign(t, claims(nil)))}); !res.Allowed() {
				t.Errorf("valid token: %q", res.Status)
			}
			if res := f.Verify(&Request{Path: "/", Header: bearer(k.forged.sign(t, claims(nil)))}); res.Status != JwtVerificationFail {
				t.Errorf("forged token: %q, want %q", res.Status, JwtVerificationFail)
			}
		})
	}
	// A token without kid is tried against every key.
	nokid := &testKey{alg: jose.ES256, priv: keys[5].good.priv}
	if res := f.Verify(&Request{Path: "/", Header: bearer(nokid.sign(t, claims(nil)))}); !res.Allowed() {
		t.Errorf("token without kid: %q", res.Status)
	}
	// A JWK's alg restricts the algorithms it verifies.
	wrongAlg := &testKey{kid: "rs256", alg: jose.PS256, priv: a}
	if res := f.Verify(&Request{Path: "/", Header: bearer(wrongAlg.sign(t, claims(nil)))}); res.Status != JwksKidAlgMismatch {
		t.Errorf("PS256 token against the RS256 JWK: %q, want %q", res.Status, JwksKidAlgMismatch)
	}
	// An Ed25519 signature of the wrong length.
	edTok := keys[8].good.sign(t, claims(nil))
	short := edTok[:strings.LastIndexByte(edTok, '.')+1] + b64("short")
	if res := f.Verify(&Request{Path: "/", Header: bearer(short)}); res.Status != JwtEd25519SignatureWrongLength {
		t.Errorf("short Ed25519 signature: %q", res.Status)
	}
}

// TestKeyRotation: the control plane pushes a new JWKS when the issuer
// rotates its key; the proxy compiles a new Filter.
func TestKeyRotation(t *testing.T) {
	oldKey := rsaKey("2024", jose.RS256)
	newKey := &testKey{kid: "2025", alg: jose.ES256, priv: newECKey(t, elliptic.P256())}
	oldTok, newTok := oldKey.sign(t, claims(nil)), newKey.sign(t, claims(nil))
	verify := func(f *Filter, tok string) Status {
		return f.Verify(&Request{Path: "/", Header: bearer(tok)}).Status
	}

	f1 := compileConfig(t, istioConfig(jwks(t, oldKey)))
	if verify(f1, oldTok) != OK || verify(f1, newTok) != JwksKidAlgMismatch {
		t.Fatalf("before rotation: old %v, new %v", verify(f1, oldTok), verify(f1, newTok))
	}
	// Both keys published during the rotation; the old key's parse is reused.
	f2 := compileConfig(t, istioConfig(jwks(t, oldKey, newKey)), ReuseKeys(f1))
	if verify(f2, oldTok) != OK || verify(f2, newTok) != OK {
		t.Fatalf("during rotation: old %v, new %v", verify(f2, oldTok), verify(f2, newTok))
	}
	f3 := compileConfig(t, istioConfig(jwks(t, newKey)), ReuseKeys(f2))
	if verify(f3, oldTok) != JwksKidAlgMismatch || verify(f3, newTok) != OK {
		t.Fatalf("after rotation: old %v, new %v", verify(f3, oldTok), verify(f3, newTok))
	}
	// The unchanged JWKS text shares its parsed keys.
	f4 := compileConfig(t, istioConfig(jwks(t, newKey)), ReuseKeys(f3))
	if f4.providers["origins-0"].keys != f3.providers["origins-0"].keys {
		t.Error("an unchanged JWKS was parsed again")
	}
	if verify(f1, newTok) != JwksKidAlgMismatch {
		t.Error("compiling a new Filter changed an old one")
	}
}

// TestTokenLocations covers from_headers with a value prefix, from_params
// and from_cookies, and which of them the filter removes.
func TestTokenLocations(t *testing.T) {
	k := rsaKey("k1", jose.RS256)
	tok := k.sign(t, claims(nil))
	f := compileConfig(t, istioConfig(jwks(t, k),
		"fromHeaders: [{name: x-jwt-assertion, valuePrefix: 'Token '}, {name: x-raw-jwt}]",
		"fromParams: [jwt]",
		"fromCookies: [session]"))
	cases := []struct {
		name       string
		path       string
		header     http.Header
		want       Status
		removedKey string
	}{
		{"header with prefix", "/", http.Header{"X-Jwt-Assertion": {"Token " + tok}}, OK, "X-Jwt-Assertion"},
		{"header without its prefix is not a token", "/", http.Header{"X-Jwt-Assertion": {tok}}, OK, ""},
		{"header without prefix", "/", http.Header{"X-Raw-Jwt": {tok}}, OK, "X-Raw-Jwt"},
		{"bad token in a header", "/", http.Header{"X-Raw-Jwt": {b64("nope") + ".e30.c2ln"}}, JwtHeaderParseErrorBadJSON, ""},
		{"query parameter", "/p?a=b&jwt=" + tok, http.Header{}, OK, ""},
		{"escaped query parameter", "/p?j%77t=" + strings.ReplaceAll(tok, ".", "%2E"), http.Header{}, OK, ""},
		{"default locations are off", "/", bearer("garbage"), OK, ""},
		{"cookie", "/", http.Header{"Cookie": {`a=1; session="` + tok + `"`}}, OK, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := &Request{Method: "GET", Path: tc.path, Header: tc.header}
			res := f.Verify(r)
			if res.Status != tc.want {
				t.Fatalf("Status = %q, want %q", res.Status, tc.want)
			}
			if tc.removedKey != "" {
				if _, ok := r.Header[tc.removedKey]; ok {
					t.Errorf("%s kept", tc.removedKey)
				}
			}
			if tc.want == OK && tc.removedKey == "" && len(tc.header) > 0 {
				// Envoy removes only header tokens; cookies and others stay.
				for key := range tc.header {
					if _, ok := r.Header[key]; !ok && key != "X-Jwt-Assertion" {
						t.Errorf("%s removed", key)
					}
				}
			}
		})
	}
}

// TestIstioMultipleProviders uses Istio's form for two jwtRules: any one
// provider's valid token, or no token; an invalid token of either fails.
func TestIstioMultipleProviders(t *testing.T) {
	k1 := rsaKey("k1", jose.RS256)
	k2 := &testKey{kid: "k2", alg: jose.ES256, priv: newECKey(t, elliptic.P256())}
	f := compileConfig(t, `
providers:
  origins-0:
    issuer: https://issuer.example
    localJwks: {inlineString: '`+jwks(t, k1)+`'}
    payloadInMetadata: payload
  origins-1:
    issuer: https://second.example
    localJwks: {inlineString: '`+jwks(t, k2)+`'}
    payloadInMetadata: payload
rules:
- match: {prefix: /}
  requires:
    requiresAny:
      requirements:
      - providerName: origins-0
      - providerName: origins-1
      - requiresAll:
          requirements:
          - requiresAny: {requirements: [{providerName: origins-0}, {allowMissing: {}}]}
          - requiresAny: {requirements: [{providerName: origins-1}, {allowMissing: {}}]}
bypassCorsPreflight: true
`)
	cases := []struct {
		name string
		tok  string
		want Status
		sub  string
	}{
		{"first issuer", k1.sign(t, claims(map[string]any{"sub": "a"})), OK, "a"},
		{"second issuer", k2.sign(t, claims(map[string]any{"iss": "https://second.example", "sub": "b"})), OK, "b"},
		{"no token", "", OK, ""},
		{"unknown issuer", k1.sign(t, claims(map[string]any{"iss": "https://third.example"})), JwtUnknownIssuer, ""},
		{"expired token of the second issuer", k2.sign(t, claims(map[string]any{"iss": "https://second.example", "exp": testNow.Add(-time.Hour).Unix()})), JwtExpired, ""},
		{"second issuer signed by the first issuer's key", k1.sign(t, claims(map[string]any{"iss": "https://second.example"})), JwksKidAlgMismatch, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.tok != "" {
				h = bearer(tc.tok)
			}
			res := f.Verify(&Request{Path: "/", Header: h})
			if res.Status != tc.want {
				t.Fatalf("Status = %q, want %q", res.Status, tc.want)
			}
			if tc.sub != "" {
				if p, _ := res.Metadata["payload"].(map[string]any); p["sub"] != tc.sub {
					t.Errorf("payload %v, want sub %q", res.Metadata, tc.sub)
				}
			}
		})
	}
}

// TestRequirements covers the requirement kinds Envoy offers beyond
// Istio's form.
func TestRequirements(t *testing.T) {
	k1 := rsaKey("k1", jose.RS256)
	k2 := &testKey{kid: "k2", alg: jose.EdDSA, priv: newEdKey(t)}
	providers := `
providers:
  a:
    issuer: https://issuer.example
    audiences: [api.example]
    fromHeaders: [{name: x-a}]
    localJwks: {inlineString: '` + jwks(t, k1) + `'}
    payloadInMetadata: a
    failedStatusInMetadata: a_failed
  b:
    issuer: https://second.example
    fromHeaders: [{name: x-b}]
    localJwks: {inlineString: '` + jwks(t, k2) + `'}
    payloadInMetadata: b
    headerInMetadata: b_header
`
	tokA := k1.sign(t, claims(nil))
	tokB := k2.sign(t, claims(map[string]any{"iss": "https://second.example"}))
	expiredA := k1.sign(t, claims(map[string]any{"exp": testNow.Add(-time.Hour).Unix()}))
	otherAud := k1.sign(t, claims(map[string]any{"aud": "other.example"}))
	cases := []struct {
		name     string
		rules    string
		header   http.Header
		path     string
		want     Status
		metadata []string // keys expected in Result.Metadata
	}{
		{"provider_name present", `[{match: {prefix: /}, requires: {providerName: a}}]`, http.Header{"X-A": {tokA}}, "/", OK, []string{"a"}},
		{"provider_name missing (two providers: no failed status)", `[{match: {prefix: /}, requires: {providerName: a}}]`, http.Header{}, "/", JwtMissed, nil},
		{"requires_all", `[{match: {prefix: /}, requires: {requiresAll: {requirements: [{providerName: a}, {providerName: b}]}}}]`, http.Header{"X-A": {tokA}, "X-B": {tokB}}, "/", OK, []string{"a", "b", "b_header"}},
		{"requires_all one missing", `[{match: {prefix: /}, requires: {requiresAll: {requirements: [{providerName: a}, {providerName: b}]}}}]`, http.Header{"X-A": {tokA}}, "/", JwtMissed, []string{"a"}},
		{"requires_any second", `[{match: {prefix: /}, requires: {requiresAny: {requirements: [{providerName: a}, {providerName: b}]}}}]`, http.Header{"X-B": {tokB}}, "/", OK, []string{"b", "b_header"}},
		{"requires_any reports the real error", `[{match: {prefix: /}, requires: {requiresAny: {requirements: [{providerName: a}, {providerName: b}]}}}]`, http.Header{"X-A": {expiredA}}, "/", JwtExpired, []string{"a_failed"}},
		{"allow_missing_or_failed with a bad token", `[{match: {prefix: /}, requires: {allowMissingOrFailed: {}}}]`, http.Header{"X-A": {expiredA}}, "/", OK, []string{"a_failed"}},
		{"allow_missing_or_failed with a good token", `[{match: {prefix: /}, requires: {allowMissingOrFailed: {}}}]`, http.Header{"X-A": {tokA}}, "/", OK, []string{"a"}},
		{"allow_missing with a bad token", `[{match: {prefix: /}, requires: {allowMissing: {}}}]`, http.Header{"X-A": {expiredA}}, "/", JwtExpired, []string{"a_failed"}},
		{"allow_missing without a token", `[{match: {prefix: /}, requires: {allowMissing: {}}}]`, http.Header{}, "/", OK, nil},
		{"provider_and_audiences overrides", `[{match: {prefix: /}, requires: {providerAndAudiences: {providerName: a, audiences: [other.example]}}}]`, http.Header{"X-A": {otherAud}}, "/", OK, []string{"a"}},
		{"provider's audiences", `[{match: {prefix: /}, requires: {providerName: a}}]`, http.Header{"X-A": {otherAud}}, "/", JwtAudienceNotAllowed, []string{"a_failed"}},
		{"first matching rule", `[{match: {prefix: /public}}, {match: {prefix: /}, requires: {providerName: a}}]`, http.Header{}, "/public/x", OK, nil},
		{"rule by path", `[{match: {path: /x}, requires: {providerName: a}}]`, http.Header{}, "/x?q", JwtMissed, nil},
		{"no rule matches", `[{match: {path: /x}, requires: {providerName: a}}]`, http.Header{"X-A": {"garbage"}}, "/y", OK, nil},
		{"path_separated_prefix", `[{match: {pathSeparatedPrefix: /api}, requires: {providerName: a}}]`, http.Header{}, "/apix", OK, nil},
		{"case-insensitive regex", `[{match: {safeRegex: {regex: "/API/.*"}, caseSensitive: false}, requires: {providerName: a}}]`, http.Header{}, "/api/x", JwtMissed, nil},
		{"requirement_name", `[{match: {prefix: /}, requirementName: need-b}]`, http.Header{"X-B": {tokB}}, "/", OK, []string{"b", "b_header"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := compileConfig(t, providers+"rules: "+tc.rules+"\nrequirementMap: {need-b: {providerName: b}}\n")
			res := f.Verify(&Request{Method: "GET", Path: tc.path, Header: tc.header})
			if res.Status != tc.want {
				t.Fatalf("Status = %q, want %q", res.Status, tc.want)
			}
			var keys []string
			for key := range res.Metadata {
				keys = append(keys, key)
			}
			if !sameSet(keys, tc.metadata) {
				t.Errorf("metadata keys %v, want %v", keys, tc.metadata)
			}
		})
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]bool{}
	for _, x := range a {
		m[x] = true
	}
	for _, x := range b {
		if !m[x] {
			return false
		}
	}
	return true
}

// TestMetadataShapes checks header_in_metadata, failed_status_in_metadata
// and claim_to_headers renderings.
func TestMetadataShapes(t *testing.T) {
	k := rsaKey("k1", jose.RS256)
	f := compileConfig(t, istioConfig(jwks(t, k),
		"headerInMetadata: hdr",
		"failedStatusInMetadata: failed",
		"claimToHeaders: [{headerName: x-sub, claimName: sub}, {headerName: x-level, claimName: level}, {headerName: x-ratio, claimName: ratio}, {headerName: x-admin, claimName: admin}, {headerName: x-team, claimName: org.team}, {headerName: x-org, claimName: org}, {headerName: x-none, claimName: absent}]",
	))
	tok := k.sign(t, claims(map[string]any{"level": 3, "ratio": 1.5, "admin": true, "org": map[string]any{"team": "blue"}}))
	r := &Request{Path: "/", Header: bearer(tok)}
	r.Header.Set("X-Sub", "spoofed")
	res := f.Verify(r)
	if !res.Allowed() {
		t.Fatal(res.Status)
	}
	want := map[string]string{
		"X-Sub":   "alice",
		"X-Level": "3",
		"X-Ratio": "1.500000",
		"X-Admin": "true",
		"X-Team":  "blue",
		"X-Org":   base64.StdEncoding.EncodeToString([]byte(`{"team":"blue"}`)),
	}
	for h, v := range want {
		if got := r.Header.Values(h); len(got) != 1 || got[0] != v {
			t.Errorf("%s = %q, want %q", h, got, v)
		}
	}
	if _, ok := r.Header["X-None"]; ok {
		t.Error("a missing claim added a header")
	}
	if hdr, _ := res.Metadata["hdr"].(map[string]any); hdr["alg"] != "RS256" || hdr["kid"] != "k1" {
		t.Errorf("header metadata %v", res.Metadata["hdr"])
	}

	res = f.Verify(&Request{Path: "/", Header: http.Header{}})
	wantMissing := map[string]any{"code": float64(JwtMissed), "message": "Jwt is missing"}
	if !res.Allowed() || !reflect.DeepEqual(res.Metadata["failed"], wantMissing) {
		t.Errorf("missing token: %q, failed status metadata %v, want %v", res.Status, res.Metadata["failed"], wantMissing)
	}
	res = f.Verify(&Request{Path: "/", Header: bearer("garbage")})
	wantFailed := map[string]any{"code": float64(JwtBadFormat), "message": JwtBadFormat.String()}
	if !reflect.DeepEqual(res.Metadata["failed"], wantFailed) {
		t.Errorf("failed status metadata %v, want %v", res.Metadata["failed"], wantFailed)
	}
}

func TestFailureReply(t *testing.T) {
	k := rsaKey("k1", jose.RS256)
	f := compileConfig(t, `
providers:
  p:
    issuer: https://issuer.example
    localJwks: {inlineString: '`+jwks(t, k)+`'}
rules: [{match: {prefix: /}, requires: {providerName: p}}]
`)
	long := "/" + strings.Repeat("a", 300)
	res := f.Verify(&Request{Method: "GET", Path: long, Authority: "svc:8080", Scheme: "https", Header: http.Header{}})
	if res.Code != 401 || res.Body != "Jwt is missing" || res.Details != "jwt_authn_access_denied{Jwt_is_missing}" {
		t.Errorf("reply %+v", res)
	}
	if want := `Bearer realm="https://svc:8080` + long[:256] + `"`; res.WWWAuthenticate != want {
		t.Errorf("WWW-Authenticate = %q, want %q (no error for a missing token)", res.WWWAuthenticate, want)
	}

	f = compileConfig(t, `
providers:
  p:
    issuer: https://issuer.example
    localJwks: {inlineString: '`+jwks(t, k)+`'}
rules: [{match: {prefix: /}, requires: {providerName: p}}]
stripFailureResponse: true
`)
	res = f.Verify(&Request{Path: "/", Header: bearer("garbage")})
	if res.Code != 401 || res.Body != "" || res.WWWAuthenticate != "" || res.Details == "" {
		t.Errorf("stripped reply %+v", res)
	}
}

// TestJWKSParsing checks which keys of a JWKS are usable, as Envoy's
// library decides.
func TestJWKSParsing(t *testing.T) {
	k := rsaKey("good", jose.RS256)
	good, _ := json.Marshal(k.jwk(true))
	cases := []struct {
		name  string
		jwks  string
		keys  int
		state Status
	}{
		{"not JSON", `{`, 0, JwksParseError},
		{"no keys", `{}`, 0, JwksNoKeys},
		{"keys not a list", `{"keys": 1}`, 0, JwksBadKeys},
		{"empty", `{"keys": []}`, 0, JwksNoValidKeys},
		{"one good", `{"keys": [` + string(good) + `]}`, 1, OK},
		{"bad keys skipped", `{"keys": [1, {"kid": "x"}, {"kty": "XYZ"}, ` + string(good) + `]}`, 1, OK},
		{"only bad: the last error", `{"keys": [{"kty": "RSA", "alg": "ES256", "n": "AQAB", "e": "AQAB"}]}`, 0, JwksRSAKeyBadAlg},
		{"RSA without n", `{"keys": [{"kty": "RSA", "e": "AQAB"}]}`, 0, JwksRSAKeyMissingN},
		{"EC alg and crv disagree", `{"keys": [{"kty": "EC", "alg": "ES384", "crv": "P-256", "x": "AA", "y": "AA"}]}`, 0, JwksECKeyAlgNotCompatibleWithCrv},
		{"EC point not on the curve", `{"keys": [{"kty": "EC", "crv": "P-256", "x": "AQ", "y": "AQ"}]}`, 0, JwksEcParseError},
		{"OKP other curve", `{"keys": [{"kty": "OKP", "crv": "X25519", "x": "AA"}]}`, 0, JwksOKPKeyCrvUnsupported},
		{"oct with RSA alg", `{"keys": [{"kty": "oct", "alg": "RS256", "k": "AA"}]}`, 0, JwksHMACKeyBadAlg},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ks := parseJWKS(tc.jwks)
			if len(ks.keys) != tc.keys || ks.status != tc.state {
				t.Errorf("parseJWKS: %d keys, %q; want %d, %q", len(ks.keys), ks.status, tc.keys, tc.state)
			}
		})
	}

	// A provider whose JWKS has no usable key compiles (as in Envoy), warns,
	// and fails every token.
	f := compileConfig(t, istioConfig(`{"keys": []}`))
	if w := f.Warnings(); len(w) != 1 || !strings.Contains(w[0], `providers["origins-0"].local_jwks: Jwks doesn't have any valid public key`) {
		t.Errorf("Warnings = %q", w)
	}
	if res := f.Verify(&Request{Path: "/", Header: bearer(k.sign(t, claims(nil)))}); res.Status != JwksNoValidKeys {
		t.Errorf("token against an empty JWKS: %q", res.Status)
	}
}

// TestCompileErrors checks that unsupported or inconsistent configs are
// refused with the field named.
func TestCompileErrors(t *testing.T) {
	k := jwks(t, rsaKey("k1", jose.RS256))
	cases := []struct{ name, cfg, want string }{
		{"remote JWKS", `{providers: {p: {remoteJwks: {httpUri: {uri: "https://x/jwks", cluster: c, timeout: 1s}}}}}`,
			`providers["p"].remote_jwks: remote JWKS is not supported`},
		{"unknown provider", `{providers: {p: {localJwks: {inlineString: '` + k + `'}}}, rules: [{match: {prefix: /}, requires: {providerName: q}}]}`,
			`rules[0].requires.provider_name: required provider ["q"] is not configured`},
		{"unknown requirement name", `{providers: {p: {localJwks: {inlineString: '` + k + `'}}}, rules: [{match: {prefix: /}, requirementName: r}]}`,
			`rules[0].requirement_name: "r" is not in requirement_map`},
		{"header condition in a rule", `{providers: {p: {localJwks: {inlineString: '` + k + `'}}}, rules: [{match: {prefix: /, headers: [{name: x, presentMatch: true}]}, requires: {providerName: p}}]}`,
			`rules[0].match.headers: header conditions in JWT requirement rules are not supported`},
		{"JWKS file", `{providers: {p: {localJwks: {filename: /etc/jwks.json}}}}`,
			`providers["p"].local_jwks: only inline_string and inline_bytes are supported`},
		{"filter state rules", `{filterStateRules: {name: x}}`, `filter_state_rules: not supported`},
		{"subjects", `{providers: {p: {subjects: {prefix: x}, localJwks: {inlineString: '` + k + `'}}}}`, `providers["p"].subjects: not supported`},
		{"extract only", `{providers: {p: {localJwks: {inlineString: '` + k + `'}}}, rules: [{match: {prefix: /}, requires: {extractOnlyWithoutValidation: {}}}]}`,
			`rules[0].requires.extract_only_without_validation: not supported`},
		{"requires_any of one (Envoy's schema)", `{providers: {p: {localJwks: {inlineString: '` + k + `'}}}, rules: [{match: {prefix: /}, requires: {requiresAny: {requirements: [{providerName: p}]}}}]}`,
			`Requirements`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile(parseConfig(t, tc.cfg))
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

// TestConcurrentVerify shares one Filter between goroutines; with -race it
// checks that verification writes only per-request state.
func TestConcurrentVerify(t *testing.T) {
	k := rsaKey("k1", jose.RS256)
	f := compileConfig(t, istioConfig(jwks(t, k), "forwardPayloadHeader: x-payload"))
	good := k.sign(t, claims(map[string]any{"scope": "a b"}))
	bad := k.sign(t, claims(map[string]any{"exp": testNow.Add(-time.Hour).Unix()}))
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				tok, want := good, OK
				if (g+i)%3 == 0 {
					tok, want = bad, JwtExpired
				}
				if res := f.Verify(&Request{Path: "/", Header: bearer(tok)}); res.Status != want {
					t.Errorf("Status = %q, want %q", res.Status, want)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// TestTokenCache checks that a cached token is still judged on its claims
// at every request, and that the cache stays bounded.
func TestTokenCache(t *testing.T) {
	k := rsaKey("k1", jose.RS256)
	now := testNow
	clock := func() time.Time { return now }
	f, err := Compile(parseConfig(t, istioConfig(jwks(t, k))+`
requirementMap:
  other-audience: {providerAndAudiences: {providerName: origins-0, audiences: [other.example]}}
`), WithClock(clock))
	if err != nil {
		t.Fatal(err)
	}
	tok := k.sign(t, claims(map[string]any{"exp": testNow.Add(time.Minute).Unix()}))
	verify := func() Status { return f.Verify(&Request{Path: "/", Header: bearer(tok)}).Status }
	if st := verify(); st != OK {
		t.Fatalf("first use: %q", st)
	}
	if _, ok := f.providers["origins-0"].keys.lookup(tok); !ok {
		t.Fatal("a verified token was not cached")
	}
	if st := verify(); st != OK {
		t.Fatalf("cached: %q", st)
	}
	now = testNow.Add(2*time.Minute + time.Second) // past exp + 60s skew
	if st := verify(); st != JwtExpired {
		t.Errorf("cached token after exp: %q, want %q", st, JwtExpired)
	}

	// A token that failed is not cached.
	bad := otherRSAKey("k1").sign(t, claims(nil))
	now = testNow
	for range 2 {
		if st := f.Verify(&Request{Path: "/", Header: bearer(bad)}).Status; st != JwtVerificationFail {
			t.Fatalf("forged token: %q", st)
		}
	}
	// The cache stays bounded.
	ks := f.providers["origins-0"].keys
	for i := range 3 * tokenCacheSize {
		tk := k.sign(t, claims(map[string]any{"jti": fmt.Sprint(i)}))
		if st := f.Verify(&Request{Path: "/", Header: bearer(tk)}).Status; st != OK {
			t.Fatalf("token %d: %q", i, st)
		}
	}
	n := 0
	ks.cache.m.Range(func(any, any) bool { n++; return true })
	if n > tokenCacheSize {
		t.Errorf("cache holds %d tokens, more than %d", n, tokenCacheSize)
	}
}
