// Package jwks gets the JSON Web Key Sets that RequestAuthentications
// verify tokens with, for the control plane: it checks a key set's form
// (Parse), fetches the sets named by jwksUri (or found by OpenID discovery
// from the issuer) over HTTPS, caches them, refreshes them periodically,
// and keeps the last good keys when a fetch fails (Fetcher). The xDS
// generators inline the keys into envoy.filters.http.jwt_authn providers
// (local_jwks), as Istio does by default, so proxies never fetch keys
// themselves.
//
// A provider whose keys were never fetched gets FailClosed, a key set no
// one can sign for, so every token it sees is rejected (401) instead of
// passing unverified: Istio does the same (pilot/pkg/model/jwks_resolver.go,
// PublicOnlyJwks).
package jwks

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
)

// FailClosed is the key set a JWT provider gets while its keys have never
// been fetched: one RSA public key whose private key was generated once
// for Weft and then discarded, so no token can verify against it. A
// request carrying a token is then rejected with 401, and one without a
// token passes (or not) as the AuthorizationPolicies decide, exactly as
// with Istio's fallback.
const FailClosed = `{"keys":[{"kty":"RSA","kid":"weft-fail-closed","alg":"RS256","use":"sig","e":"AQAB","n":"xY0XIJWEYp4NI437_3O4YSF-FcaqbOH_LBcNAApuysK9d1CJfG-UEIoY2Rt59zUekoiJEuCtu9_RoVZ_gAfQVmkdJ8xG54iN08vXyuzn_DQYubRPu_E10cKDzYjSEA_HWCZF09K4Lf6YUHi9vbaf9ZPRajbkeJ_z2RdJu6mlwVE2GJS5upYPasODZuW5ybsa0MHNmVUS1HE8kAy-UB3i9dmemJjuDrqpV6lwEAbolMa_BdC7XqmoGwcVlZsiEazOdX9J3E4-vjwZBWpG_W-KqguCB27_GWk8AXL3ioQWvIF5rNOjGH18hrjeFFZvfscn3R8HJQZkEn6GtzJP53dkaQ"}]}`

// Key describes one key of a set, as far as validation needs.
type Key struct {
	Type string // kty: RSA, EC, OKP or oct
	ID   string // kid, may be empty
	// Private is set when the key carries private material (d), or is a
	// symmetric key (oct): verification needs public keys only.
	Private bool
}

// Parse checks that data is a JSON Web Key Set ({"keys": [...]}, RFC 7517)
// whose keys have the members their type requires, and describes its keys.
// A set with no keys is an error: no token could ever verify.
func Parse(data []byte) ([]Key, error) {
	var set struct {
		Keys []map[string]json.RawMessage `json:"keys"`
	}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	if err := dec.Decode(&set); err != nil {
		return nil, fmt.Errorf("not a JSON Web Key Set: %w", err)
	}
	if dec.More() {
		return nil, errors.New("not a JSON Web Key Set: data after the JSON object")
	}
	if set.Keys == nil {
		return nil, errors.New(`not a JSON Web Key Set: want an object with a "keys" list`)
	}
	if len(set.Keys) == 0 {
		return nil, errors.New(`the key set has no keys ("keys" is empty)`)
	}
	out := make([]Key, 0, len(set.Keys))
	for i, raw := range set.Keys {
		k, err := parseKey(raw)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", i, err)
		}
		out = append(out, k)
	}
	return out, nil
}

func parseKey(raw map[string]json.RawMessage) (Key, error) {
	str := func(name string) (string, bool, error) {
		v, ok := raw[name]
		if !ok {
			return "", false, nil
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return "", true, fmt.Errorf("%q must be a string", name)
		}
		return s, true, nil
	}
	b64 := func(name string) error {
		s, ok, err := str(name)
		switch {
		case err != nil:
			return err
		case !ok || s == "":
			return fmt.Errorf("%q is required", name)
		}
		if _, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "=")); err != nil {
			return fmt.Errorf("%q is not base64url", name)
		}
		return nil
	}
	kty, _, err := str("kty")
	if err != nil {
		return Key{}, err
	}
	kid, _, err := str("kid")
	if err != nil {
		return Key{}, err
	}
	_, private := raw["d"]
	k := Key{Type: kty, ID: kid, Private: private}
	var need []string
	switch kty {
	case "RSA":
		need = []string{"n", "e"}
	case "EC":
		crv, _, err := str("crv")
		if err != nil {
			return Key{}, err
		}
		if crv != "P-256" && crv != "P-384" && crv != "P-521" {
			return Key{}, fmt.Errorf("EC key: unsupported curve %q (want P-256, P-384 or P-521)", crv)
		}
		need = []string{"x", "y"}
	case "OKP":
		crv, _, err := str("crv")
		if err != nil {
			return Key{}, err
		}
		if crv != "Ed25519" {
			return Key{}, fmt.Errorf("OKP key: unsupported curve %q (want Ed25519)", crv)
		}
		need = []string{"x"}
	case "oct":
		need = []string{"k"}
		k.Private = true
	case "":
		return Key{}, errors.New(`"kty" is required`)
	default:
		return Key{}, fmt.Errorf("unsupported key type %q (want RSA, EC, OKP or oct)", kty)
	}
	for _, n := range need {
		if err := b64(n); err != nil {
			return Key{}, fmt.Errorf("%s key: %w", kty, err)
		}
	}
	return k, nil
}

// CheckURL reports whether Weft fetches keys from rawURL: an https URL, or
// an http URL to a loopback host (localhost, 127.0.0.0/8, ::1), which tests
// and local development use. Istio also fetches plain http from anywhere;
// Weft does not, since a key set fetched in the clear can be replaced on
// the way, and then anyone can mint tokens the mesh accepts.
func CheckURL(rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return fmt.Errorf("%q is not a URL: %w", rawURL, err)
	}
	switch {
	case u.Scheme == "https" && u.Host != "":
		return nil
	case u.Scheme == "http" && u.Host != "":
		if isLoopback(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("%q is plain http: Weft fetches keys over https only (http only from a loopback address, for tests), since keys fetched in the clear can be replaced on the way", rawURL)
	case u.Scheme == "http" || u.Scheme == "https":
		return fmt.Errorf("%q has no host", rawURL)
	}
	return fmt.Errorf("URI scheme %q of %q is not supported (want https)", u.Scheme, rawURL)
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// Source is where a JWT rule's keys come from: its jwksUri, or, when it
// has none, OpenID discovery from its issuer (Istio's rule). Exactly one
// field is set; use SourceOf.
type Source struct {
	URI    string `json:"jwksUri,omitempty"`
	Issuer string `json:"issuer,omitempty"` // discovery at <issuer>/.well-known/openid-configuration
}

// SourceOf returns where a rule with this issuer and jwksUri gets its keys
// (a rule with inline jwks needs none: do not ask).
func SourceOf(issuer, jwksURI string) Source {
	if jwksURI != "" {
		return Source{URI: jwksURI}
	}
	return Source{Issuer: issuer}
}

// String is the URI, or "issuer <issuer> (OpenID discovery)".
func (s Source) String() string {
	if s.URI != "" {
		return s.URI
	}
	return "issuer " + s.Issuer + " (OpenID discovery)"
}
