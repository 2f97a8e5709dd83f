package jwt

import (
	"net/http"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

// FuzzVerify sends arbitrary Authorization headers, query strings and
// cookies, which clients control, through Istio's config: no input may
// panic, and only a token signed by the configured key may pass with a
// payload.
func FuzzVerify(f *testing.F) {
	k := rsaKey("k1", jose.RS256)
	good := k.sign(f, claims(nil))
	f.Add("Bearer "+good, "/?access_token=x", "")
	f.Add("Bearer a.b.c", "/", "session=a.b.c")
	f.Add("Bearer "+good+", Bearer "+good, "/p?access_token="+good, "")
	f.Add("Bearer e30.e30.e30", "/", "")
	f.Add("Bearer "+strings.Repeat(".", 10), "/?"+strings.Repeat("&", 5), "=;=;")
	filter := compileConfig(f, istioConfig(jwks(f, k), "fromHeaders: [{name: authorization, valuePrefix: 'Bearer '}]", "fromParams: [access_token]", "fromCookies: [session]"))
	f.Fuzz(func(t *testing.T, auth, path, cookie string) {
		h := http.Header{"Authorization": {auth}, "Cookie": {cookie}}
		res := filter.Verify(&Request{Method: "GET", Path: path, Authority: "a", Scheme: "http", Header: h})
		if p, ok := res.Metadata["payload"].(map[string]any); ok && res.Allowed() {
			if p["iss"] != "https://issuer.example" {
				t.Fatalf("accepted a payload with iss %v", p["iss"])
			}
		}
		if !res.Allowed() && (res.Code != 401 && res.Code != 403) {
			t.Fatalf("rejected with code %d", res.Code)
		}
	})
}

// FuzzParseToken checks the token parser on arbitrary input.
func FuzzParseToken(f *testing.F) {
	f.Add("eyJhbGciOiJSUzI1NiJ9.e30.c2ln")
	f.Add("a..b.c")
	f.Add("e30.e30.")
	f.Fuzz(func(t *testing.T, raw string) {
		tok, st := parseToken(raw)
		if (st == OK) != (tok != nil) {
			t.Fatalf("status %q with token %v", st, tok)
		}
		if tok != nil && (tok.payload == nil || !algSupported(tok.alg)) {
			t.Fatalf("accepted token without payload or with alg %q", tok.alg)
		}
	})
}
