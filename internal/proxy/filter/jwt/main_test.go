package jwt

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	jose "github.com/go-jose/go-jose/v4"
	"go.uber.org/goleak"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testNow is the clock every test Filter reads.
var testNow = time.Unix(1_800_000_000, 0)

func fixedClock() time.Time { return testNow }

// testKey is a signing key with the kid and alg its JWK advertises.
type testKey struct {
	kid  string
	alg  jose.SignatureAlgorithm
	priv any
}

var (
	rsaKeys = sync.OnceValues(func() (*rsa.PrivateKey, *rsa.PrivateKey) {
		a, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		b, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		return a, b
	})
)

func newECKey(t testing.TB, c elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newEdKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func rsaKey(kid string, alg jose.SignatureAlgorithm) *testKey {
	a, _ := rsaKeys()
	return &testKey{kid: kid, alg: alg, priv: a}
}

func otherRSAKey(kid string) *testKey {
	_, b := rsaKeys()
	return &testKey{kid: kid, alg: jose.RS256, priv: b}
}

// jwk is the public JWK of k. With advertiseAlg false the JWK has no alg.
func (k *testKey) jwk(advertiseAlg bool) jose.JSONWebKey {
	var pub any
	switch p := k.priv.(type) {
	case *rsa.PrivateKey:
		pub = &p.PublicKey
	case *ecdsa.PrivateKey:
		pub = &p.PublicKey
	case ed25519.PrivateKey:
		pub = p.Public()
	case []byte:
		pub = p
	}
	j := jose.JSONWebKey{Key: pub, KeyID: k.kid, Use: "sig"}
	if advertiseAlg {
		j.Algorithm = string(k.alg)
	}
	return j
}

// jwks renders a JWKS of the given keys, each advertising its alg.
func jwks(t testing.TB, keys ...*testKey) string {
	t.Helper()
	set := jose.JSONWebKeySet{}
	for _, k := range keys {
		set.Keys = append(set.Keys, k.jwk(true))
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// sign makes a compact JWT of claims, with k's kid in its header.
func (k *testKey) sign(t testing.TB, claims map[string]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if k.kid != "" {
		opts = opts.WithHeader("kid", k.kid)
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: k.alg, Key: k.priv}, opts)
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

// claims returns standard claims valid at testNow, with extra merged in
// (a nil value deletes a claim).
func claims(extra map[string]any) map[string]any {
	c := map[string]any{
		"iss": "https://issuer.example",
		"sub": "alice",
		"aud": "api.example",
		"iat": testNow.Add(-time.Minute).Unix(),
		"exp": testNow.Add(time.Hour).Unix(),
	}
	for k, v := range extra {
		if v == nil {
			delete(c, k)
			continue
		}
		c[k] = v
	}
	return c
}

// parseConfig decodes a JwtAuthentication written in YAML.
func parseConfig(t testing.TB, src string) *jwtv3.JwtAuthentication {
	t.Helper()
	cfg := &jwtv3.JwtAuthentication{}
	yamlToProto(t, src, cfg)
	return cfg
}

// parseRBAC decodes an RBAC filter config written in YAML.
func parseRBAC(t testing.TB, src string) *rbachttpv3.RBAC {
	t.Helper()
	cfg := &rbachttpv3.RBAC{}
	yamlToProto(t, src, cfg)
	return cfg
}

func yamlToProto(t testing.TB, src string, m proto.Message) {
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
}

func compileConfig(t testing.TB, src string, opts ...Option) *Filter {
	t.Helper()
	f, err := Compile(parseConfig(t, src), append([]Option{WithClock(fixedClock)}, opts...)...)
	if err != nil {
		t.Fatalf("Compile: %v\n%s", err, src)
	}
	return f
}

// istioConfig is the filter Istio writes for one RequestAuthentication
// jwtRule (pilot/pkg/security/authn/policy_applier.go): one provider
// "origins-0", a token is optional but must be valid when present.
// providerExtra is YAML added to the provider's fields.
func istioConfig(jwksText string, providerExtra ...string) string {
	return fmt.Sprintf(`
providers:
  origins-0:
    issuer: https://issuer.example
    audiences: [api.example]
    localJwks: {inlineString: %q}
    payloadInMetadata: payload
    normalizePayloadInMetadata: {spaceDelimitedClaims: [permission, scope]}
%s
rules:
- match: {prefix: /}
  requires:
    requiresAny:
      requirements:
      - providerName: origins-0
      - allowMissing: {}
bypassCorsPreflight: true
`, jwksText, indent(strings.Join(providerExtra, "\n"), "    "))
}

func indent(s, prefix string) string {
	if s == "" {
		return ""
	}
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = prefix + l
	}
	return strings.Join(lines, "\n")
}
