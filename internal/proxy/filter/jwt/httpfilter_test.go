package jwt

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/protobuf/types/known/anypb"

	"weft.dev/weft/internal/proxy/filter"
)

func configAny(t testing.TB, src string) *anypb.Any {
	t.Helper()
	a, err := anypb.New(parseConfig(t, src))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// liveClaims are claims valid now (the Factory's filters read the real
// clock), with extra merged in.
func liveClaims(extra map[string]any) map[string]any {
	c := claims(map[string]any{"iat": time.Now().Add(-time.Minute).Unix(), "exp": time.Now().Add(time.Hour).Unix()})
	for k, v := range extra {
		c[k] = v
	}
	return c
}

func TestHTTPFilter(t *testing.T) {
	k := rsaKey("k1", jose.RS256)
	fac := NewFactory(nil)
	f, err := fac.New(configAny(t, istioConfig(jwks(t, k))))
	if err != nil {
		t.Fatal(err)
	}
	run := func(tok string) (*filter.Stream, filter.Status) {
		r := httptest.NewRequest("GET", "http://svc.example/api?x=1", nil)
		r.RequestURI = "/api?x=1"
		if tok != "" {
			r.Header.Set("Authorization", "Bearer "+tok)
		}
		s := filter.NewStream(r, http.Header{})
		return s, f.DecodeHeaders(s)
	}

	s, st := run(k.sign(t, liveClaims(nil)))
	if st != filter.Continue {
		_, reply := s.Answer()
		t.Fatalf("a valid token was refused: %+v", reply)
	}
	md, _ := s.Metadata(FilterName).(map[string]any)
	if p, _ := md["payload"].(map[string]any); p["sub"] != "alice" || p["iss"] != "https://issuer.example" {
		t.Errorf("stream metadata %s = %v, want the payload under payload", FilterName, md)
	}
	if s.Request.Header.Get("Authorization") != "" {
		t.Error("the token went on to the application (forward is false)")
	}

	if s, st = run(""); st != filter.Continue {
		t.Error("a request without a token was refused")
	}

	for _, tc := range []struct {
		name string
		tok  string
		code int
		body string
	}{
		{"expired", k.sign(t, liveClaims(map[string]any{"exp": time.Now().Add(-time.Hour).Unix()})), 401, "Jwt is expired"},
		{"wrong issuer", k.sign(t, liveClaims(map[string]any{"iss": "https://other.example"})), 401, "Jwt issuer is not configured"},
		{"bad signature", otherRSAKey("k1").sign(t, liveClaims(nil)), 401, "Jwt verification fails"},
		{"wrong audience", k.sign(t, liveClaims(map[string]any{"aud": "other"})), 403, "Audiences in Jwt are not allowed"},
	} {
		s, st := run(tc.tok)
		a, reply := s.Answer()
		if st != filter.Stop || a != filter.AnsweredLocalReply || reply.Status != tc.code || reply.Body != tc.body {
			t.Errorf("%s: %v %v %+v, want %d %q", tc.name, st, a, reply, tc.code, tc.body)
			continue
		}
		want := `Bearer realm="http://svc.example/api?x=1", error="invalid_token"`
		if got := s.ResponseHeader().Get("WWW-Authenticate"); got != want {
			t.Errorf("%s: WWW-Authenticate %q, want %q", tc.name, got, want)
		}
	}
}

// TestFactoryReusesKeys: a config push that keeps a JWKS keeps its parsed
// keys, and with them the cache of tokens already verified.
func TestFactoryReusesKeys(t *testing.T) {
	k, k2 := rsaKey("k1", jose.RS256), otherRSAKey("k2")
	fac := NewFactory(nil)
	build := func(src string) *Filter {
		f, err := fac.New(configAny(t, src))
		if err != nil {
			t.Fatal(err)
		}
		return f.(*httpFilter).f
	}
	a := build(istioConfig(jwks(t, k)))
	b := build(istioConfig(jwks(t, k2))) // another listener's filter, in between
	c := build(istioConfig(jwks(t, k)))
	text := jwks(t, k)
	if a.jwks[text] == nil || a.jwks[text] != c.jwks[text] {
		t.Error("recompiling an unchanged JWKS parsed its keys again")
	}
	if b.jwks[text] != nil {
		t.Error("unrelated filter holds the key set")
	}
	if _, err := fac.ParsePerRoute(configAny(t, istioConfig(jwks(t, k)))); err == nil {
		t.Error("per-route JWT config accepted")
	}
	if _, err := (Factory{}).New(&anypb.Any{TypeUrl: "type.googleapis.com/" + string((&jwtv3.PerRouteConfig{}).ProtoReflect().Descriptor().FullName())}); err == nil {
		t.Error("a config of another type was accepted")
	}
}
