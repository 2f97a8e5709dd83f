package jwt

import (
	"bytes"
	"encoding/json"
	"strings"
	"sync"
	"sync/atomic"

	jose "github.com/go-jose/go-jose/v4"
)

// key is one usable public key of a provider's JWKS, parsed once when the
// config is compiled. Immutable.
type key struct {
	kid string
	alg string // "" when the JWK does not restrict its algorithm
	kty string // RSA, EC, oct, OKP
	pub any    // *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey or []byte (oct)
}

// keySet is a parsed JWKS. status is OK when at least one key is usable,
// else why none is (the last key's error, as Envoy's Jwks::createFrom).
type keySet struct {
	keys   []key
	status Status
	cache  tokenCache // tokens verified with keys; safe for concurrent use
}

// parseJWKS parses a JWKS the way Envoy's JWT library does: keys it cannot
// use are skipped, and the set is valid when one key is left. Key material
// is decoded by go-jose.
func parseJWKS(text string) *keySet {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal([]byte(text), &doc); err != nil {
		return &keySet{status: JwksParseError}
	}
	raw, ok := doc["keys"]
	if !ok {
		return &keySet{status: JwksNoKeys}
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return &keySet{status: JwksBadKeys}
	}
	ks := &keySet{status: JwksNoValidKeys}
	last := OK
	for _, kraw := range list {
		k, st := parseJWK(kraw)
		if st == skipKey {
			continue
		}
		if st != OK {
			last = st
			continue
		}
		ks.keys = append(ks.keys, k)
	}
	switch {
	case len(ks.keys) > 0:
		ks.status = OK
	case last != OK:
		ks.status = last
	}
	return ks
}

// skipKey marks a JWKS entry that is not a JSON object: Envoy ignores it.
const skipKey Status = 255

func parseJWK(raw json.RawMessage) (key, Status) {
	var fields map[string]any
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		return key{}, skipKey
	}
	ktyV, ok := fields["kty"]
	if !ok {
		return key{}, JwksMissingKty
	}
	kty, ok := ktyV.(string)
	if !ok {
		return key{}, JwksBadKty
	}
	k := key{kty: kty}
	k.kid, _ = fields["kid"].(string)
	k.alg, _ = fields["alg"].(string) // kid and alg are optional; a non-string is ignored
	var parseErr Status
	switch kty {
	case "RSA":
		if k.alg != "" && !strings.HasPrefix(k.alg, "RS") && !strings.HasPrefix(k.alg, "PS") {
			return key{}, JwksRSAKeyBadAlg
		}
		if _, ok := fields["n"]; !ok {
			return key{}, JwksRSAKeyMissingN
		}
		if _, ok := fields["e"]; !ok {
			return key{}, JwksRSAKeyMissingE
		}
		parseErr = JwksRsaParseError
	case "EC":
		if k.alg != "" && !strings.HasPrefix(k.alg, "ES") {
			return key{}, JwksECKeyBadAlg
		}
		crv, isStr := fields["crv"].(string)
		if _, present := fields["crv"]; present && !isStr {
			return key{}, JwksECKeyBadCrv
		}
		want := map[string]string{"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}[k.alg]
		if k.alg != "" && want == "" {
			return key{}, JwksECKeyAlgOrCrvUnsupported
		}
		if crv != "" && want != "" && crv != want {
			return key{}, JwksECKeyAlgNotCompatibleWithCrv
		}
		parseErr = JwksEcParseError
	case "oct":
		if k.alg != "" && !strings.HasPrefix(k.alg, "HS") {
			return key{}, JwksHMACKeyBadAlg
		}
		if _, ok := fields["k"]; !ok {
			return key{}, JwksHMACKeyMissingK
		}
		parseErr = JwksOctBadBase64
	case "OKP":
		if k.alg != "" && k.alg != "EdDSA" {
			return key{}, JwksOKPKeyBadAlg
		}
		crv, present := fields["crv"]
		if !present {
			return key{}, JwksOKPKeyMissingCrv
		}
		if s, ok := crv.(string); !ok {
			return key{}, JwksOKPKeyBadCrv
		} else if s != "Ed25519" {
			return key{}, JwksOKPKeyCrvUnsupported
		}
		parseErr = JwksOKPXBadBase64
	default:
		return key{}, JwksNotImplementedKty
	}
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(raw); err != nil || jwk.Key == nil {
		return key{}, parseErr
	}
	if kty != "oct" && !jwk.IsPublic() {
		// A JWKS should not carry private keys; use the public half.
		jwk = jwk.Public()
		if jwk.Key == nil {
			return key{}, parseErr
		}
	}
	k.pub = jwk.Key
	return k, OK
}

// Verified-token cache. A token whose signature verified against a key set
// is remembered with it, so a client that sends the same token on every
// request pays for parsing and the signature once. Only the signature is
// cached: issuer, exp/nbf and audiences are checked on every request, as
// Envoy's jwt_cache does, so a cache hit never changes an outcome. The set
// of keys is part of the key (the cache lives in the keySet), so a JWKS
// change starts empty.
const (
	tokenCacheSize    = 100  // Envoy's default jwt_cache_size
	tokenCacheMaxSize = 4096 // Envoy's default jwt_max_token_size
)

type tokenCache struct {
	m sync.Map // compact token string → *token
	n atomic.Int64
}

// lookup returns the verified token for raw, if cached. Lock-free.
func (ks *keySet) lookup(raw string) (*token, bool) {
	v, ok := ks.cache.m.Load(raw)
	if !ok {
		return nil, false
	}
	return v.(*token), true
}

// remember caches a token whose signature verified. When the cache is full
// it is emptied: tokens expire, so dropping them all is a fair eviction
// that needs no bookkeeping on the read path.
func (ks *keySet) remember(raw string, t *token) {
	if len(raw) > tokenCacheMaxSize {
		return
	}
	if _, loaded := ks.cache.m.LoadOrStore(raw, t); loaded {
		return
	}
	if ks.cache.n.Add(1) > tokenCacheSize {
		ks.cache.m.Clear()
		ks.cache.n.Store(0)
	}
}
