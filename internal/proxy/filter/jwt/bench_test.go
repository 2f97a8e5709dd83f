package jwt

import (
	"crypto/elliptic"
	"net/http"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

// BenchmarkVerify measures one request through Istio's single-provider
// config: token extraction, parse, claim checks, signature, header removal
// and metadata. The JWKS holds one key of each kind, so key selection by
// kid is part of the cost. first_use is a token the filter has not seen;
// cached is a client sending the same token again (parse and signature
// skipped, claims checked).
func BenchmarkVerify(b *testing.B) {
	a, _ := rsaKeys()
	keys := []*testKey{
		{kid: "rs256", alg: jose.RS256, priv: a},
		{kid: "es256", alg: jose.ES256, priv: newECKey(b, elliptic.P256())},
		{kid: "ed", alg: jose.EdDSA, priv: newEdKey(b)},
		{kid: "hs256", alg: jose.HS256, priv: []byte("0123456789abcdef0123456789abcdef")},
	}
	f := compileConfig(b, istioConfig(jwks(b, keys...)))
	extra := map[string]any{"scope": "read write", "groups": []string{"dev", "admin"}, "email": "alice@example.com"}
	cache := &f.providers["origins-0"].keys.cache
	for _, k := range keys {
		tok := k.sign(b, claims(extra))
		for _, cached := range []bool{false, true} {
			name := string(k.alg) + "/first_use"
			if cached {
				name = string(k.alg) + "/cached"
			}
			b.Run(name, func(b *testing.B) {
				auth := []string{"Bearer " + tok}
				r := &Request{Method: "GET", Path: "/api/items", Authority: "api", Scheme: "http", Header: http.Header{"Accept": {"*/*"}}}
				b.ReportAllocs()
				for b.Loop() {
					if !cached {
						cache.m.Clear() // every request is a new token
					}
					r.Header["Authorization"] = auth
					if res := f.Verify(r); !res.Allowed() {
						b.Fatal(res.Status)
					}
				}
			})
		}
	}
	b.Run("no_token", func(b *testing.B) {
		r := &Request{Method: "GET", Path: "/api/items", Authority: "api", Scheme: "http", Header: http.Header{"Accept": {"*/*"}}}
		b.ReportAllocs()
		for b.Loop() {
			if res := f.Verify(r); !res.Allowed() {
				b.Fatal(res.Status)
			}
		}
	})
}

// BenchmarkCompile measures compiling Istio's config with an RSA JWKS, and
// recompiling it with ReuseKeys as a config push that keeps the JWKS does.
func BenchmarkCompile(b *testing.B) {
	cfg := parseConfig(b, istioConfig(jwks(b, rsaKey("k1", jose.RS256))))
	b.Run("fresh", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Compile(cfg); err != nil {
				b.Fatal(err)
			}
		}
	})
	prev, err := Compile(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("reuse_keys", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Compile(cfg, ReuseKeys(prev)); err != nil {
				b.Fatal(err)
			}
		}
	})
}
