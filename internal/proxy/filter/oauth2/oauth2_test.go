package oauth2

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	oauthv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/oauth2/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"weft.dev/weft/internal/proxy/filter"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type secrets map[string]string

func (s secrets) GenericSecret(name string) []byte {
	if v, ok := s[name]; ok {
		return []byte(v)
	}
	return nil
}

// tokenServer is a token endpoint that records the forms it got and
// answers with the next of its responses.
type tokenServer struct {
	*httptest.Server
	mu    sync.Mutex
	forms []url.Values
	reply func(form url.Values) (int, map[string]any)
}

func newTokenServer(t *testing.T, reply func(url.Values) (int, map[string]any)) *tokenServer {
	ts := &tokenServer{reply: reply}
	ts.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = r.ParseForm()
		ts.mu.Lock()
		ts.forms = append(ts.forms, r.PostForm)
		ts.mu.Unlock()
		code, body := ts.reply(r.PostForm)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(body)
	}))
	t.Cleanup(ts.Close)
	return ts
}

func (ts *tokenServer) lastForm() url.Values {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if len(ts.forms) == 0 {
		return nil
	}
	return ts.forms[len(ts.forms)-1]
}

// fakeJWT is an unsigned JWT with claims: the filter never verifies
// tokens (they come from the token endpoint); it reads exp.
func fakeJWT(claims map[string]any) string {
	b, _ := json.Marshal(claims)
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256"}`)) + "." + enc(b) + ".sig"
}

func prefix(p string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: p}}
}

func exact(p string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: p}}
}

func baseConfig(tokenURL string) *oauthv3.OAuth2Config {
	return &oauthv3.OAuth2Config{
		TokenEndpoint:         &corev3.HttpUri{Uri: tokenURL, HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: "idp"}},
		AuthorizationEndpoint: "https://idp.example.com/authorize?prompt=login",
		EndSessionEndpoint:    "https://idp.example.com/logout",
		PostLogoutRedirectUri: &oauthv3.PostLogoutRedirectUri{Config: &oauthv3.PostLogoutRedirectUri_Uri{Uri: "https://app.example.com/bye"}},
		Credentials: &oauthv3.OAuth2Credentials{
			ClientId:       "app",
			TokenSecret:    &tlsv3.SdsSecretConfig{Name: "kubernetes://app-oidc/client-secret"},
			TokenFormation: &oauthv3.OAuth2Credentials_HmacSecret{HmacSecret: &tlsv3.SdsSecretConfig{Name: "kubernetes://app-oidc/hmac-secret"}},
		},
		RedirectUri:         "%REQ(x-forwarded-proto)%://%REQ(:authority)%/oauth2/callback",
		RedirectPathMatcher: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: exact("/oauth2/callback")}},
		SignoutPath:         &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: exact("/oauth2/logout")}},
		ForwardIdToken:      &oauthv3.OAuth2TokenForwarding{Header: "authorization"},
		AuthScopes:          []string{"openid", "email"},
		PassThroughMatcher: []*routev3.HeaderMatcher{{Name: ":path",
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: prefix("/healthz")}}},
		DenyRedirectMatcher: []*routev3.HeaderMatcher{{Name: "x-requested-with",
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exact("XMLHttpRequest")}}},
	}
}

type harness struct {
	f     *loginFilter
	now   time.Time
	token *tokenServer
}

func newHarness(t *testing.T, mutate func(*oauthv3.OAuth2Config), reply func(url.Values) (int, map[string]any)) *harness {
	t.Helper()
	h := &harness{now: time.Unix(1_800_000_000, 0)}
	h.token = newTokenServer(t, reply)
	cfg := baseConfig(h.token.URL + "/token")
	if mutate != nil {
		mutate(cfg)
	}
	a, err := anypb.New(&oauthv3.OAuth2{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	sec := secrets{"kubernetes://app-oidc/client-secret": "s3cr3t", "kubernetes://app-oidc/hmac-secret": "0123456789abcdef0123456789abcdef"}
	flt, err := Factory{Secrets: sec, Now: func() time.Time { return h.now }}.New(a)
	if err != nil {
		t.Fatal(err)
	}
	h.f = flt.(*loginFilter)
	return h
}

// result is what the filter did with one request.
type result struct {
	status  filter.Status
	answer  filter.Answer
	reply   filter.LocalReply
	header  http.Header // the response headers (Respond/local reply), plus EncodeHeaders'
	request *http.Request
}

func (h *harness) do(r *http.Request, perRoute any) result {
	hdr := http.Header{}
	s := filter.NewStream(r, hdr)
	s.PerRoute = perRoute
	st := h.f.DecodeHeaders(s)
	if st == filter.Continue {
		h.f.EncodeHeaders(s, hdr)
	}
	a, rep := s.Answer()
	return result{status: st, answer: a, reply: rep, header: hdr, request: r}
}

func get(target string, cookies ...*http.Cookie) *http.Request {
	r := httptest.NewRequest(http.MethodGet, target, nil)
	for _, c := range cookies {
		r.AddCookie(c)
	}
	return r
}

// cookiesOf parses the Set-Cookie headers of h by name.
func cookiesOf(h http.Header) map[string]*http.Cookie {
	out := map[string]*http.Cookie{}
	for _, c := range (&http.Response{Header: h}).Cookies() {
		out[c.Name] = c
	}
	return out
}

// login runs the whole flow for target and returns the session cookies.
func (h *harness) login(t *testing.T, target string) []*http.Cookie {
	t.Helper()
	res := h.do(get(target), nil)
	if res.answer != filter.AnsweredStatus || res.reply.Status != http.StatusFound {
		t.Fatalf("first request: answer %v %+v, want a 302", res.answer, res.reply)
	}
	loc, _ := url.Parse(res.header.Get("Location"))
	nonce := cookiesOf(res.header)["OauthNonce"]
	cb := get("http://app.example.com/oauth2/callback?code=abc&state="+url.QueryEscape(loc.Query().Get("state")), nonce)
	res = h.do(cb, nil)
	if res.reply.Status != http.StatusFound {
		t.Fatalf("callback: %+v", res.reply)
	}
	var out []*http.Cookie
	for _, c := range cookiesOf(res.header) {
		if c.MaxAge >= 0 && c.Value != "" {
			out = append(out, c)
		}
	}
	return out
}

func goodTokens(h *harness, id string) func(url.Values) (int, map[string]any) {
	return func(form url.Values) (int, map[string]any) {
		return 200, map[string]any{"access_token": "at-" + form.Get("grant_type"), "token_type": "Bearer", "expires_in": 300,
			"refresh_token": "rt-1", "id_token": fakeJWT(map[string]any{"sub": id, "exp": h.now.Add(5 * time.Minute).Unix()})}
	}
}

// An unauthenticated browser is sent to the provider: client, redirect
// URI, scopes, the state (original URL and the CSRF nonce, which is the
// nonce cookie), PKCE S256. The callback exchanges the code with the
// verifier matching the challenge and the client secret, sets signed
// session cookies and returns to the original URL.
func TestLoginFlow(t *testing.T) {
	var h *harness
	h = newHarness(t, nil, func(f url.Values) (int, map[string]any) { return goodTokens(h, "alice")(f) })
	res := h.do(get("http://app.example.com/orders?id=7"), nil)
	if res.answer != filter.AnsweredStatus || res.reply.Status != http.StatusFound {
		t.Fatalf("answer %v %+v, want 302", res.answer, res.reply)
	}
	loc, err := url.Parse(res.header.Get("Location"))
	if err != nil || loc.Host != "idp.example.com" || loc.Path != "/authorize" {
		t.Fatalf("Location = %q", res.header.Get("Location"))
	}
	q := loc.Query()
	for k, want := range map[string]string{"client_id": "app", "response_type": "code", "scope": "openid email",
		"redirect_uri": "http://app.example.com/oauth2/callback", "code_challenge_method": "S256", "prompt": "login"} {
		if q.Get(k) != want {
			t.Errorf("%s = %q, want %q", k, q.Get(k), want)
		}
	}
	raw, _ := base64.RawURLEncoding.DecodeString(q.Get("state"))
	var st state
	if err := json.Unmarshal(raw, &st); err != nil || st.URL != "http://app.example.com/orders?id=7" {
		t.Fatalf("state = %s (%v)", raw, err)
	}
	nonce := cookiesOf(res.header)["OauthNonce"]
	if nonce == nil || nonce.Value != st.CSRFToken || !nonce.HttpOnly {
		t.Fatalf("nonce cookie %v, state csrf %q", nonce, st.CSRFToken)
	}

	// A callback whose state's CSRF token is not the browser's nonce is
	// refused without calling the token endpoint.
	forged, _ := json.Marshal(state{URL: st.URL, CSRFToken: "x.9999999999.y"})
	for name, r := range map[string]*http.Request{
		"no nonce cookie": get("http://app.example.com/oauth2/callback?code=abc&state=" + q.Get("state")),
		"other state":     get("http://app.example.com/oauth2/callback?code=abc&state="+base64.RawURLEncoding.EncodeToString(forged), nonce),
		"provider error":  get("http://app.example.com/oauth2/callback?error=access_denied&state="+q.Get("state"), nonce),
	} {
		if res := h.do(r, nil); res.reply.Status != http.StatusUnauthorized {
			t.Errorf("%s: %+v, want 401", name, res.reply)
		}
	}
	if f := h.token.lastForm(); f != nil {
		t.Fatalf("token endpoint called for a refused callback: %v", f)
	}

	res = h.do(get("http://app.example.com/oauth2/callback?code=abc&state="+q.Get("state"), nonce), nil)
	if res.reply.Status != http.StatusFound || res.header.Get("Location") != "http://app.example.com/orders?id=7" {
		t.Fatalf("callback: %+v Location %q", res.reply, res.header.Get("Location"))
	}
	form := h.token.lastForm()
	sum := sha256.Sum256([]byte(form.Get("code_verifier")))
	if form.Get("code") != "abc" || form.Get("client_secret") != "s3cr3t" || form.Get("grant_type") != "authorization_code" ||
		base64.RawURLEncoding.EncodeToString(sum[:]) != q.Get("code_challenge") {
		t.Errorf("token request %v does not match the authorization request (challenge %s)", form, q.Get("code_challenge"))
	}
	cs := cookiesOf(res.header)
	for _, n := range []string{"OauthHMAC", "OauthExpires", "BearerToken", "IdToken", "RefreshToken"} {
		if cs[n] == nil || cs[n].Value == "" || !cs[n].HttpOnly {
			t.Errorf("cookie %s = %v", n, cs[n])
		}
	}
	if cs["OauthNonce"] == nil || cs["OauthNonce"].MaxAge >= 0 {
		t.Errorf("the nonce cookie is not deleted: %v", cs["OauthNonce"])
	}
	if cs["OauthExpires"].Value != fmt.Sprint(h.now.Add(300*time.Second).Unix()) {
		t.Errorf("expires = %s", cs["OauthExpires"].Value)
	}
	// With a refresh token the browser keeps the signed session as long
	// as the refresh token, so that it can be renewed after expiry.
	if week := int((7 * 24 * time.Hour).Seconds()); cs["OauthHMAC"].MaxAge != week || cs["RefreshToken"].MaxAge != week {
		t.Errorf("Max-Age: OauthHMAC %d, RefreshToken %d, want %d", cs["OauthHMAC"].MaxAge, cs["RefreshToken"].MaxAge, week)
	}
}

// A valid session continues upstream with the ID token as bearer and
// the filter's cookies removed (others kept); a session changed in any
// part, signed for another host, or expired without a refresh token is
// sent to the provider again.
func TestSession(t *testing.T) {
	var h *harness
	h = newHarness(t, func(c *oauthv3.OAuth2Config) { c.UseRefreshToken = wrapperspb.Bool(false) }, func(f url.Values) (int, map[string]any) { return goodTokens(h, "alice")(f) })
	session := h.login(t, "http://app.example.com/")
	r := get("http://app.example.com/page", append(session, &http.Cookie{Name: "theme", Value: "dark"})...)
	r.Header.Set("Authorization", "Bearer client-sent")
	res := h.do(r, nil)
	if res.status != filter.Continue {
		t.Fatalf("valid session: %+v", res.reply)
	}
	var id string
	for _, c := range session {
		if c.Name == "IdToken" {
			id = c.Value
		}
	}
	if got := r.Header.Get("Authorization"); got != "Bearer "+id {
		t.Errorf("Authorization = %q, want the ID token", got)
	}
	if got := r.Header.Get("Cookie"); got != "theme=dark" {
		t.Errorf("Cookie upstream = %q, want theme=dark only", got)
	}

	redirected := func(name string, cookies []*http.Cookie, host string) {
		t.Helper()
		res := h.do(get("http://"+host+"/page", cookies...), nil)
		if res.reply.Status != http.StatusFound || !strings.HasPrefix(res.header.Get("Location"), "https://idp.example.com/") {
			t.Errorf("%s: %v %+v, want a redirect to the provider", name, res.status, res.reply)
		}
	}
	for _, n := range []string{"IdToken", "BearerToken", "OauthExpires", "OauthHMAC", "RefreshToken"} {
		var forged []*http.Cookie
		for _, c := range session {
			c := *c
			if c.Name == n {
				if n == "OauthExpires" {
					c.Value = fmt.Sprint(h.now.Add(24 * time.Hour).Unix())
				} else {
					c.Value += "x"
				}
			}
			forged = append(forged, &c)
		}
		redirected("forged "+n, forged, "app.example.com")
	}
	redirected("other host", session, "other.example.com")
	h.now = h.now.Add(time.Hour)
	redirected("expired, refresh off", session, "app.example.com")
}

// An expired session with a refresh token is renewed: the request goes
// upstream with the new ID token and the response carries the new
// cookies. A failed refresh sends the browser to the provider.
func TestRefresh(t *testing.T) {
	var h *harness
	fail := false
	h = newHarness(t, nil, func(f url.Values) (int, map[string]any) {
		if fail && f.Get("grant_type") == "refresh_token" {
			return 400, map[string]any{"error": "invalid_grant"}
		}
		return goodTokens(h, "alice-"+f.Get("grant_type"))(f)
	})
	session := h.login(t, "http://app.example.com/")
	h.now = h.now.Add(10 * time.Minute)
	r := get("http://app.example.com/page", session...)
	res := h.do(r, nil)
	if res.status != filter.Continue {
		t.Fatalf("expired session with refresh token: %+v", res.reply)
	}
	form := h.token.lastForm()
	if form.Get("grant_type") != "refresh_token" || form.Get("refresh_token") != "rt-1" {
		t.Errorf("refresh request = %v", form)
	}
	cs := cookiesOf(res.header)
	if cs["IdToken"] == nil || !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer "+cs["IdToken"].Value) {
		t.Fatalf("refreshed ID token not forwarded: cookies %v, Authorization %q", cs, r.Header.Get("Authorization"))
	}
	payload, _ := base64.RawURLEncoding.DecodeString(strings.Split(cs["IdToken"].Value, ".")[1])
	if !strings.Contains(string(payload), "alice-refresh_token") {
		t.Errorf("ID token after refresh = %s", payload)
	}
	// The new cookies make a valid session.
	var next []*http.Cookie
	for _, c := range cs {
		next = append(next, c)
	}
	if res := h.do(get("http://app.example.com/page", next...), nil); res.status != filter.Continue {
		t.Errorf("refreshed session not valid: %+v", res.reply)
	}

	fail = true
	h.now = h.now.Add(time.Hour)
	if res := h.do(get("http://app.example.com/page", next...), nil); res.reply.Status != http.StatusFound {
		t.Errorf("failed refresh: %v %+v, want a redirect", res.status, res.reply)
	}
}

// Pass-through requests skip the filter; API clients get 401; sign-out
// deletes the cookies and goes to the end_session_endpoint with the ID
// token as hint; a route with the filter disabled passes; missing
// secrets answer 503.
func TestPathsAndClients(t *testing.T) {
	var h *harness
	h = newHarness(t, nil, func(f url.Values) (int, map[string]any) { return goodTokens(h, "alice")(f) })
	pt := get("http://app.example.com/healthz/ready", &http.Cookie{Name: "IdToken", Value: "x"}, &http.Cookie{Name: "theme", Value: "dark"})
	if res := h.do(pt, nil); res.status != filter.Continue || pt.Header.Get("Cookie") != "theme=dark" {
		t.Errorf("pass-through: %+v, Cookie upstream %q", res.reply, pt.Header.Get("Cookie"))
	}
	xhr := get("http://app.example.com/api")
	xhr.Header.Set("X-Requested-With", "XMLHttpRequest")
	if res := h.do(xhr, nil); res.answer != filter.AnsweredLocalReply || res.reply.Status != http.StatusUnauthorized {
		t.Errorf("XHR: %+v, want 401", res.reply)
	}
	if res := h.do(get("http://app.example.com/x"), disabled{}); res.status != filter.Continue {
		t.Errorf("disabled route: %+v", res.reply)
	}
	session := h.login(t, "http://app.example.com/")
	res := h.do(get("http://app.example.com/oauth2/logout", session...), nil)
	if res.reply.Status != http.StatusFound {
		t.Fatalf("logout: %+v", res.reply)
	}
	loc, _ := url.Parse(res.header.Get("Location"))
	if loc.Host != "idp.example.com" || loc.Path != "/logout" || loc.Query().Get("id_token_hint") == "" ||
		loc.Query().Get("post_logout_redirect_uri") != "https://app.example.com/bye" || loc.Query().Get("client_id") != "app" {
		t.Errorf("logout Location = %s", loc)
	}
	for _, n := range []string{"OauthHMAC", "OauthExpires", "BearerToken", "IdToken", "RefreshToken"} {
		if c := cookiesOf(res.header)[n]; c == nil || c.MaxAge >= 0 {
			t.Errorf("logout does not delete %s: %v", n, c)
		}
	}

	for name, sec := range map[string]secrets{
		"no secrets":     {},
		"short HMAC key": {"kubernetes://app-oidc/client-secret": "s3cr3t", "kubernetes://app-oidc/hmac-secret": "short"},
	} {
		h.f.secrets = sec
		if res := h.do(get("http://app.example.com/page", session...), nil); res.reply.Status != http.StatusServiceUnavailable {
			t.Errorf("%s: %+v, want 503", name, res.reply)
		}
	}
}

// The URL a login returns to stays on the request's host.
func TestReturnURL(t *testing.T) {
	f := &loginFilter{allowedRedirect: []string{"example.org"}}
	for raw, want := range map[string]string{
		"https://app.example.com/a?b": "https://app.example.com/a?b",
		"https://evil.example.net/":   "/",
		"javascript:alert(1)":         "/",
		"https://www.example.org/x":   "https://www.example.org/x",
	} {
		if got := f.returnURL(raw, "app.example.com"); got != want {
			t.Errorf("returnURL(%q) = %q, want %q", raw, got, want)
		}
	}
}

// Config errors name the field.
func TestConfigErrors(t *testing.T) {
	for want, mutate := range map[string]func(*oauthv3.OAuth2Config){
		"config.credentials.client_id: required":                                            func(c *oauthv3.OAuth2Config) { c.Credentials.ClientId = "" },
		"config.authorization_endpoint: required":                                           func(c *oauthv3.OAuth2Config) { c.AuthorizationEndpoint = "" },
		`config.token_endpoint.uri: "/token" is not an absolute http(s) URL`:                func(c *oauthv3.OAuth2Config) { c.TokenEndpoint.Uri = "/token" },
		"config.redirect_path_matcher.path: required":                                       func(c *oauthv3.OAuth2Config) { c.RedirectPathMatcher = nil },
		"config.forward_id_token.header: Authorization cannot go with forward_bearer_token": func(c *oauthv3.OAuth2Config) { c.ForwardBearerToken = true },
		"config.credentials.hmac_secret.name: required":                                     func(c *oauthv3.OAuth2Config) { c.Credentials.TokenFormation = nil },
	} {
		cfg := baseConfig("https://idp.example.com/token")
		mutate(cfg)
		a, _ := anypb.New(&oauthv3.OAuth2{Config: cfg})
		_, err := Factory{}.New(a)
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("got %v, want %s", err, want)
		}
	}
	a, _ := anypb.New(&routev3.FilterConfig{Disabled: true})
	if cfg, err := (Factory{}).ParsePerRoute(a); err != nil || cfg != (disabled{}) {
		t.Errorf("ParsePerRoute(disabled) = %v, %v", cfg, err)
	}
	a, _ = anypb.New(&routev3.FilterConfig{Config: a})
	if _, err := (Factory{}).ParsePerRoute(a); err == nil {
		t.Errorf("a per-route OAuth2 config is accepted")
	}
}
