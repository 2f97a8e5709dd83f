package jwt

import (
	"encoding/base64"
	"encoding/json"
	"math"
	"slices"
	"strings"

	jose "github.com/go-jose/go-jose/v4"
)

// supportedAlgs are the signature algorithms Envoy's JWT library
// implements. "none" is not among them: an unsigned token is
// JwtHeaderNotImplementedAlg. HMAC is, for JWKS "oct" keys.
var supportedAlgs = []jose.SignatureAlgorithm{
	jose.ES256, jose.ES384, jose.ES512,
	jose.HS256, jose.HS384, jose.HS512,
	jose.RS256, jose.RS384, jose.RS512,
	jose.PS256, jose.PS384, jose.PS512,
	jose.EdDSA,
}

func algSupported(alg string) bool {
	for _, a := range supportedAlgs {
		if string(a) == alg {
			return true
		}
	}
	return false
}

// token is a parsed, not yet verified JWT.
type token struct {
	compact    string // header.payload.signature, as signed
	payloadB64 string // the payload as it appears in the token
	alg, kid   string
	payload    map[string]any // the claims, as a protobuf Struct would hold them
	header     map[string]any // only decoded when header_in_metadata asks
	headerJSON []byte
	iss        string
	nbf, exp   uint64
	aud        []string
	sig        []byte

	// The payload as payload_in_metadata shows it (space-delimited claims
	// split), for the claim list normFor. Set before the token is cached,
	// never changed after: cached tokens are shared between requests.
	norm    map[string]any
	normFor []string
}

// metadataPayload returns the payload with claims split as listed.
func (t *token) metadataPayload(spaceDelimited []string) map[string]any {
	if t.norm != nil && slices.Equal(t.normFor, spaceDelimited) {
		return t.norm
	}
	return normalizePayload(t.payload, spaceDelimited)
}

// parseToken parses a compact JWT with the checks, and in the order, of
// Envoy's JWT library (Jwt::parseFromString).
func parseToken(raw string) (*token, Status) {
	// Three non-empty sections (empty sections are skipped, as absl's
	// SkipEmpty does).
	var parts [3]string
	n := 0
	for p := range strings.SplitSeq(raw, ".") {
		if p == "" {
			continue
		}
		if n == 3 {
			return nil, JwtBadFormat
		}
		parts[n] = p
		n++
	}
	if n != 3 {
		return nil, JwtBadFormat
	}
	t := &token{payloadB64: parts[1]}
	if raw == parts[0]+"."+parts[1]+"."+parts[2] {
		t.compact = raw
	} else {
		t.compact = parts[0] + "." + parts[1] + "." + parts[2]
	}

	hdr, ok := decodeB64URL(parts[0])
	if !ok {
		return nil, JwtHeaderParseErrorBadBase64
	}
	var h struct {
		Alg any `json:"alg"`
		Kid any `json:"kid"`
		B64 any `json:"b64"`
	}
	if !isJSONObject(hdr) || json.Unmarshal(hdr, &h) != nil {
		return nil, JwtHeaderParseErrorBadJSON
	}
	alg, ok := h.Alg.(string)
	if !ok {
		return nil, JwtHeaderBadAlg
	}
	if !algSupported(alg) {
		return nil, JwtHeaderNotImplementedAlg
	}
	t.alg = alg
	if h.Kid != nil {
		if t.kid, ok = h.Kid.(string); !ok {
			return nil, JwtHeaderBadKid
		}
	}
	if h.B64 != nil {
		// RFC 7797 unencoded payloads change what is signed; Envoy always
		// signs the encoded payload. Refuse rather than disagree.
		return nil, JwtVerificationFail
	}
	t.headerJSON = hdr

	pl, ok := decodeB64URL(parts[1])
	if !ok {
		return nil, JwtPayloadParseErrorBadBase64
	}
	if !isJSONObject(pl) || json.Unmarshal(pl, &t.payload) != nil || t.payload == nil {
		return nil, JwtPayloadParseErrorBadJSON
	}
	if st := t.readClaims(); st != OK {
		return nil, st
	}
	if t.sig, ok = decodeB64URL(parts[2]); !ok {
		return nil, JwtSignatureParseErrorBadBase64
	}
	return t, OK
}

func (t *token) readClaims() Status {
	if v, ok := t.payload["iss"]; ok {
		s, isStr := v.(string)
		if !isStr {
			return JwtPayloadParseErrorIssNotString
		}
		t.iss = s
	}
	if v, ok := t.payload["sub"]; ok {
		if _, isStr := v.(string); !isStr {
			return JwtPayloadParseErrorSubNotString
		}
	}
	var st Status
	if _, st = uintClaim(t.payload, "iat", JwtPayloadParseErrorIatNotInteger, JwtPayloadParseErrorIatOutOfRange); st != OK {
		return st
	}
	if t.nbf, st = uintClaim(t.payload, "nbf", JwtPayloadParseErrorNbfNotInteger, JwtPayloadParseErrorNbfOutOfRange); st != OK {
		return st
	}
	if t.exp, st = uintClaim(t.payload, "exp", JwtPayloadParseErrorExpNotInteger, JwtPayloadParseErrorExpOutOfRange); st != OK {
		return st
	}
	if v, ok := t.payload["jti"]; ok {
		if _, isStr := v.(string); !isStr {
			return JwtPayloadParseErrorJtiNotString
		}
	}
	if v, ok := t.payload["aud"]; ok {
		switch a := v.(type) {
		case string:
			t.aud = []string{a}
		case []any:
			for _, e := range a {
				s, isStr := e.(string)
				if !isStr {
					return JwtPayloadParseErrorAudNotString
				}
				t.aud = append(t.aud, s)
			}
		default:
			return JwtPayloadParseErrorAudNotString
		}
	}
	return OK
}

// uintClaim reads a NumericDate claim as Envoy does: a JSON number,
// 0 <= n < 2^64, truncated to an integer; absent is 0.
func uintClaim(p map[string]any, name string, notInt, outOfRange Status) (uint64, Status) {
	v, ok := p[name]
	if !ok {
		return 0, OK
	}
	f, isNum := v.(float64)
	if !isNum {
		return 0, notInt
	}
	if f < 0 || f >= math.MaxUint64 {
		return 0, outOfRange
	}
	return uint64(f), OK
}

// decodeB64URL decodes base64url with or without padding, as
// absl::WebSafeBase64Unescape.
func decodeB64URL(s string) ([]byte, bool) {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	return b, err == nil
}

func isJSONObject(b []byte) bool {
	for _, c := range b {
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		case '{':
			return true
		}
		return false
	}
	return false
}

// checkTime applies nbf and exp with the provider's clock skew, as
// Jwt::verifyTimeConstraint: valid from nbf-skew to exp+skew; exp 0 (or
// absent) never expires.
func (t *token) checkTime(now, skew uint64) Status {
	if now+skew < t.nbf {
		return JwtNotYetValid
	}
	if t.exp != 0 && now > t.exp+skew {
		return JwtExpired
	}
	return OK
}

// verify checks the signature against keys with the selection rules of
// Envoy's verifyJwtWithoutTimeChecking: a key whose kid differs from the
// token's (when both have one) or whose alg differs from the token's is
// skipped; the first key that verifies wins. go-jose does the cryptography
// and refuses a key whose type does not fit the token's alg.
func (t *token) verify(keys []key) Status {
	var jws *jose.JSONWebSignature
	matched := false
	for i := range keys {
		k := &keys[i]
		if t.kid != "" && k.kid != "" && k.kid != t.kid {
			continue
		}
		if k.alg != "" && k.alg != t.alg {
			continue
		}
		matched = true
		if k.kty == "OKP" && t.alg == string(jose.EdDSA) && len(t.sig) != 64 {
			return JwtEd25519SignatureWrongLength
		}
		if jws == nil {
			var err error
			if jws, err = jose.ParseSignedCompact(t.compact, []jose.SignatureAlgorithm{jose.SignatureAlgorithm(t.alg)}); err != nil {
				return JwtVerificationFail
			}
		}
		if _, err := jws.Verify(k.pub); err == nil {
			return OK
		}
	}
	if matched {
		return JwtVerificationFail
	}
	return JwksKidAlgMismatch
}
