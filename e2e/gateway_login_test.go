package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/op"

	"weft.dev/weft/internal/controlplane"
	"weft.dev/weft/internal/credentials"
	"weft.dev/weft/internal/echo"
	"weft.dev/weft/internal/localmesh"
)

// A real OpenID provider: zitadel/oidc's certified provider package
// (pkg/op) with its example storage and login form, on loopback.

// claimsStorage is the example storage whose clients put the user's
// claims (email) in the ID token as well as in the userinfo endpoint's
// answer, as most providers do for confidential web clients; with
// lifetime set, access tokens say they expire after it, and refresh
// grants are counted.
type claimsStorage struct {
	*storage.Storage
	lifetime  time.Duration
	refreshes *atomic.Int32
}

func (s claimsStorage) CreateAccessAndRefreshTokens(ctx context.Context, req op.TokenRequest, current string) (string, string, time.Time, error) {
	id, refresh, exp, err := s.Storage.CreateAccessAndRefreshTokens(ctx, req, current)
	if err == nil && current != "" {
		s.refreshes.Add(1)
	}
	if err == nil && s.lifetime > 0 {
		exp = time.Now().Add(s.lifetime)
	}
	return id, refresh, exp, err
}

func (s claimsStorage) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	c, err := s.Storage.GetClientByClientID(ctx, id)
	if err != nil {
		return nil, err
	}
	return claimsClient{c}, nil
}

type claimsClient struct{ op.Client }

func (claimsClient) IDTokenUserinfoClaimsAssertion() bool { return true }

// startProvider starts the provider with one web client (clientID,
// secret) allowed to redirect to redirectURI, access tokens of lifetime
// (0: the storage's 5 minutes), and returns its issuer and the count of
// refresh grants.
func startProvider(t *testing.T, clientID, secret, redirectURI string, lifetime time.Duration) (string, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	issuer := "http://" + ln.Addr().String()
	clients := map[string]*storage.Client{clientID: storage.WebClient(clientID, secret, redirectURI)}
	st := claimsStorage{Storage: storage.NewStorageWithClients(storage.NewUserStore(issuer), clients), lifetime: lifetime, refreshes: &atomic.Int32{}}
	srv := &http.Server{Handler: exampleop.SetupServer(issuer, st, nil, false), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return issuer, st.refreshes
}

// browser is a scripted browser: a cookie jar, redirects followed, host
// names resolved to the gateway (no DNS is asked), IP addresses (the
// provider's) dialled as they are.
type browser struct {
	*http.Client
	jar *cookiejar.Jar
}

func newBrowser(gatewayAddr string) *browser {
	jar, _ := cookiejar.New(nil)
	d := &net.Dialer{Timeout: 2 * time.Second}
	c := &http.Client{
		Jar:     jar,
		Timeout: 10 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if h, _, err := net.SplitHostPort(addr); err != nil || net.ParseIP(h) == nil {
				addr = gatewayAddr
			}
			return d.DialContext(ctx, network, addr)
		}},
	}
	return &browser{Client: c, jar: jar}
}

// page is a response the browser ended on.
type page struct {
	status int
	url    *url.URL
	body   string
	reply  echo.Reply // when the echo backend answered
}

func (b *browser) do(req *http.Request) (page, error) {
	resp, err := b.Do(req)
	if err != nil {
		return page{}, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	p := page{status: resp.StatusCode, url: resp.Request.URL, body: string(body)}
	_ = json.Unmarshal(body, &p.reply)
	return p, nil
}

func (b *browser) get(u string) (page, error) {
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return page{}, err
	}
	return b.do(req)
}

var formRE = regexp.MustCompile(`(?s)<form method="POST" action="([^"]+)".*?name="id" value="([^"]+)"`)

// login fills in and posts the provider's login form on p.
func (b *browser) login(p page, user, password string) (page, error) {
	m := formRE.FindStringSubmatch(p.body)
	if m == nil {
		return page{}, fmt.Errorf("no login form at %s (%d): %.300s", p.url, p.status, p.body)
	}
	action, _ := p.url.Parse(m[1])
	form := url.Values{"id": {m[2]}, "username": {user}, "password": {password}}
	req, _ := http.NewRequest(http.MethodPost, action.String(), strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

// cookies returns the browser's cookies for u by name.
func (b *browser) cookies(u string) map[string]*http.Cookie {
	pu, _ := url.Parse(u)
	out := map[string]*http.Cookie{}
	for _, c := range b.jar.Cookies(pu) {
		out[c.Name] = c
	}
	return out
}

// A browser asking a team's gateway for a page behind login is sent to
// the OpenID provider, logs in on its form, comes back through the
// gateway's callback and gets the page from the backend, which sees the
// ID token (verifiable against the provider's keys) and the user's email
// as headers. The next request uses the session alone; a forged session
// cookie is refused (redirected to the provider again); logout clears the
// session and goes to the provider's end_session_endpoint; an XHR without
// a session gets 401; a host without login and a pass-through path are
// served without one.
// loginGateway is a mesh with an echo backend behind a team gateway
// whose host shop.example.com needs login at a provider the test started
// (access tokens of lifetime; 0: 5 minutes), and public.example.com does
// not.
type loginGateway struct {
	m                    *Mesh
	origin, issuer, addr string
	port                 int
	refreshes            *atomic.Int32
}

func startLoginGateway(t *testing.T, lifetime time.Duration) loginGateway {
	return startLoginGatewayFrom(t, lifetime, false)
}

// startLoginGatewayFrom is startLoginGateway with the credential sent by
// the control plane over ADS (as from a Kubernetes Secret of the
// gateway's namespace) when fromControlPlane, else read from the
// gateway's credential directory.
func startLoginGatewayFrom(t *testing.T, lifetime time.Duration, fromControlPlane bool) loginGateway {
	t.Helper()
	secret := map[string]string{"client-secret": "client-s3cr3t\n", "hmac-secret": "6a1f0c2b9e8d7f6a5b4c3d2e1f0a9b8c"}
	var opts []func(*controlplane.Options)
	credDir := ""
	if fromControlPlane {
		data := map[string][]byte{}
		for k, v := range secret {
			data[k] = []byte(v)
		}
		set := credentials.NewSet([]*credentials.Credential{credentials.FromData("shop", "shop-oidc", data)})
		opts = append(opts, func(o *controlplane.Options) { o.Credentials = fixedCredentials{set} })
	} else {
		// The gateway's credential directory: the client secret and the
		// key signing sessions, as a mounted Secret.
		credDir = t.TempDir()
		if err := os.MkdirAll(filepath.Join(credDir, "shop-oidc"), 0o700); err != nil {
			t.Fatal(err)
		}
		for f, v := range secret {
			if err := os.WriteFile(filepath.Join(credDir, "shop-oidc", f), []byte(v), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	m := NewMesh(t, opts...)
	m.Service("web", "HTTP", "v1")
	gw := m.startGateway("shop-gateway", "shop", map[string]string{"istio": "shop-gateway"}, credDir)
	ip := gw.Opts.IP
	port, err := localmesh.FreePort(ip)
	if err != nil {
		t.Fatal(err)
	}
	const host = "shop.example.com"
	origin := fmt.Sprintf("http://%s:%d", host, port)
	issuer, refreshes := startProvider(t, "shop", "client-s3cr3t", origin+"/oauth2/callback", lifetime)

	m.WriteConfig("login.yaml", fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: shop, namespace: shop}
spec:
  selector: {istio: shop-gateway}
  servers:
  - port: {number: %[1]d, name: http, protocol: HTTP}
    hosts: [%[2]s, public.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: shop}
spec:
  hosts: [%[2]s, public.example.com]
  gateways: [shop]
  http:
  - route: [{destination: {host: web.default.svc.cluster.local, port: {number: 8080}}}]
---
apiVersion: security.weft.dev/v1alpha1
kind: OIDCLogin
metadata: {name: shop, namespace: shop}
spec:
  selector: {matchLabels: {istio: shop-gateway}}
  hosts: [%[2]s]
  issuer: %[3]s
  clientId: shop
  credentialName: shop-oidc
  scopes: [openid, email, profile, offline_access]
  passThroughPaths: [{prefix: /healthz}]
  claimToHeaders: [{header: x-user-email, claim: email}]
`, port, host, issuer))
	gwAddr := net.JoinHostPort(ip, fmt.Sprint(port))
	probe := gatewayClient(gwAddr, nil)
	Eventually(t, 20*time.Second, "gateway serving with login", func() error {
		code, _, _, err := gwGet(probe, fmt.Sprintf("http://public.example.com:%d/", port))
		if err != nil || code != 200 {
			return fmt.Errorf("public host: %d %v", code, err)
		}
		code, loc, _, err := gwGet(probe, origin+"/orders?id=7")
		if err != nil || code != http.StatusFound || !strings.HasPrefix(loc, issuer+"/") {
			return fmt.Errorf("login host: %d to %q %v", code, loc, err)
		}
		return nil
	})
	return loginGateway{m: m, origin: origin, issuer: issuer, addr: gwAddr, port: port, refreshes: refreshes}
}

// fixedCredentials is a credentials.Source whose Secrets never change:
// the control plane's side of TestGatewayOIDCLoginSecretOverADS (the
// Kubernetes source is tested against a real API server in
// internal/credentials/kubesecrets and e2e/registries).
type fixedCredentials struct{ set *credentials.Set }

func (f fixedCredentials) Name() string                  { return "fixed" }
func (f fixedCredentials) Run(ctx context.Context) error { <-ctx.Done(); return nil }
func (f fixedCredentials) Current() *credentials.Set     { return f.set }
func (f fixedCredentials) Changed() <-chan struct{}      { return nil }
func (f fixedCredentials) Synced() bool                  { return true }

// TestGatewayOIDCLoginSecretOverADS: the login's client secret and
// session key reach a gateway without a credential directory, over ADS
// from the control plane (generic SDS secrets kubernetes://shop-oidc/<key>
// that its OAuth2 filter names): a person logs in through the provider
// and the backend answers.
func TestGatewayOIDCLoginSecretOverADS(t *testing.T) {
	g := startLoginGatewayFrom(t, 0, true)
	if _, p := g.login(t, "/orders"); p.reply.Path != "/orders" {
		t.Errorf("after login the backend saw %s, want /orders", p.reply.Path)
	}
}

// login takes a new browser through the provider's login to origin+path
// and returns it with the page it ended on.
func (g loginGateway) login(t *testing.T, path string) (*browser, page) {
	t.Helper()
	b := newBrowser(g.addr)
	p, err := b.get(g.origin + path)
	if err != nil {
		t.Fatal(err)
	}
	if p.url.Host != strings.TrimPrefix(g.issuer, "http://") || !strings.Contains(p.body, `name="password"`) {
		t.Fatalf("first visit ended at %s (%d), want the provider's login form: %.300s", p.url, p.status, p.body)
	}
	p, err = b.login(p, "test-user2", "verysecure")
	if err != nil {
		t.Fatal(err)
	}
	if p.status != 200 || p.url.String() != g.origin+path {
		t.Fatalf("after login: %d at %s, body %.300s", p.status, p.url, p.body)
	}
	return b, p
}

func TestGatewayOIDCLogin(t *testing.T) {
	g := startLoginGateway(t, 0)
	origin, issuer, gwAddr, port := g.origin, g.issuer, g.addr, g.port
	b, p := g.login(t, "/orders?id=7")
	if p.reply.Path != "/orders" || p.reply.Query != "id=7" {
		t.Fatalf("after login the backend saw %s?%s, want /orders?id=7", p.reply.Path, p.reply.Query)
	}
	if got := p.reply.Headers["x-user-email"]; got != "test-user2@zitadel.ch" {
		t.Errorf("x-user-email upstream = %q, want test-user2@zitadel.ch", got)
	}
	rawID, ok := strings.CutPrefix(p.reply.Headers["authorization"], "Bearer ")
	if !ok {
		t.Fatalf("no bearer token upstream: %v", p.reply.Headers)
	}
	// The token the backend got is the provider's ID token for this
	// client, signed by the provider's keys.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	provider, err := oidc.NewProvider(ctx, issuer)
	if err != nil {
		t.Fatal(err)
	}
	idt, err := provider.Verifier(&oidc.Config{ClientID: "shop"}).Verify(ctx, rawID)
	if err != nil {
		t.Fatalf("the forwarded token is not a valid ID token: %v", err)
	}
	if idt.Subject != "id2" {
		t.Errorf("subject %q, want id2", idt.Subject)
	}
	for _, n := range []string{"OauthHMAC", "IdToken", "BearerToken", "RefreshToken", "OauthExpires"} {
		if strings.Contains(p.reply.Headers["cookie"], n+"=") {
			t.Errorf("the backend got the session cookie %s", n)
		}
	}
	jarCookies := b.cookies(origin)
	if jarCookies["OauthHMAC"] == nil || jarCookies["IdToken"] == nil {
		t.Fatalf("no session cookies in the browser: %v", jarCookies)
	}

	// The session alone serves the next request: the provider is not
	// asked (a client that follows no redirect gets the page).
	noFollow := &http.Client{Jar: b.jar, Transport: b.Transport, Timeout: 5 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	nb := &browser{Client: noFollow, jar: b.jar}
	p, err = nb.get(origin + "/second")
	if err != nil || p.status != 200 || p.reply.Path != "/second" || p.reply.Headers["x-user-email"] != "test-user2@zitadel.ch" {
		t.Fatalf("second request with the session: %d %v %.200s", p.status, err, p.body)
	}

	// A client's own claim header never reaches the backend.
	req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://public.example.com:%d/", port), nil)
	req.Header.Set("X-User-Email", "admin@example.com")
	p, err = nb.do(req)
	if err != nil || p.status != 200 || p.reply.Headers["x-user-email"] != "" {
		t.Errorf("public host with a forged claim header: %d %v, upstream saw %q", p.status, err, p.reply.Headers["x-user-email"])
	}

	// A forged session (another ID token, the same signature) and one
	// signed with another key are refused: back to the provider.
	forge := func(name, value string) (int, string) {
		jar, _ := cookiejar.New(nil)
		u, _ := url.Parse(origin)
		var cs []*http.Cookie
		for _, c := range b.jar.Cookies(u) {
			c := *c
			if c.Name == name {
				c.Value = value
			}
			cs = append(cs, &c)
		}
		jar.SetCookies(u, cs)
		c := &http.Client{Jar: jar, Transport: b.Transport, Timeout: 5 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := c.Get(origin + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("Location")
	}
	for name, value := range map[string]string{
		"IdToken":      rawID[:len(rawID)-4] + "AAAA",
		"OauthHMAC":    "forged",
		"OauthExpires": fmt.Sprint(time.Now().Add(24 * time.Hour).Unix()),
	} {
		if code, loc := forge(name, value); code != http.StatusFound || !strings.HasPrefix(loc, issuer+"/") {
			t.Errorf("forged %s: %d to %q, want a redirect to the provider", name, code, loc)
		}
	}

	// An XHR without a session gets 401; a pass-through path is served.
	anon := gatewayClient(gwAddr, nil)
	req, _ = http.NewRequest(http.MethodGet, origin+"/api/cart", nil)
	req.Header.Set("X-Requested-With", "XMLHttpRequest")
	if resp, err := anon.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("XHR without a session: %v %v, want 401", resp, err)
	} else {
		resp.Body.Close()
	}
	if code, _, r, err := gwGet(anon, origin+"/healthz"); err != nil || code != 200 || r.Path != "/healthz" {
		t.Errorf("pass-through path: %d %v", code, err)
	}

	// Logout clears the session and goes to the provider's end session
	// endpoint with the ID token as hint.
	resp, err := noFollow.Get(origin + "/oauth2/logout")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc.String(), issuer+"/") || loc.Query().Get("id_token_hint") != rawID {
		t.Errorf("logout: %d to %s", resp.StatusCode, loc)
	}
	if left := b.cookies(origin); left["OauthHMAC"] != nil || left["IdToken"] != nil {
		t.Errorf("cookies left after logout: %v", left)
	}
	resp, err = noFollow.Get(origin + "/orders")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), issuer+"/") {
		t.Errorf("after logout: %d to %q, want a redirect to the provider", resp.StatusCode, resp.Header.Get("Location"))
	}
}

// An expired session is renewed with the refresh token at the provider
// (a real refresh grant) while the request goes on: the browser is not
// redirected, it gets the page and new session cookies.
func TestGatewayOIDCLoginRefresh(t *testing.T) {
	g := startLoginGateway(t, 2*time.Second)
	b, _ := g.login(t, "/")
	before := b.cookies(g.origin)
	if before["RefreshToken"] == nil || before["OauthExpires"] == nil {
		t.Fatalf("no refresh token in the session: %v", before)
	}
	exp, err := strconv.ParseInt(before["OauthExpires"].Value, 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	// Let the session expire (the access token lives 2 s); bounded.
	for i := 0; i < 100 && !time.Now().After(time.Unix(exp, 0).Add(time.Second)); i++ {
		time.Sleep(100 * time.Millisecond)
	}
	noFollow := &http.Client{Jar: b.jar, Transport: b.Transport, Timeout: 5 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(g.origin + "/after-expiry")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var r echo.Reply
	_ = json.Unmarshal(body, &r)
	if resp.StatusCode != 200 || r.Path != "/after-expiry" || r.Headers["x-user-email"] != "test-user2@zitadel.ch" {
		t.Fatalf("expired session: %d to %q, body %.200s; want the page, refreshed", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	if n := g.refreshes.Load(); n < 1 {
		t.Errorf("refresh grants at the provider: %d, want at least 1", n)
	}
	after := b.cookies(g.origin)
	if after["OauthExpires"] == nil || after["OauthExpires"].Value == before["OauthExpires"].Value || after["IdToken"].Value == before["IdToken"].Value {
		t.Errorf("session cookies not renewed: before %v, after %v", before, after)
	}
}

// One login per gateway port, fail closed: a second OIDCLogin for a host
// the same port serves (public.example.com) is not in force there, and
// that host answers 503 saying which login is — never served without the
// login it asks for — while the first login's host keeps its login.
// Removing the second login serves the host as before.
func TestGatewayOIDCLoginOnePerPort(t *testing.T) {
	g := startLoginGateway(t, 0)
	public := fmt.Sprintf("http://public.example.com:%d/", g.port)
	g.m.WriteConfig("login-admin.yaml", fmt.Sprintf(`apiVersion: security.weft.dev/v1alpha1
kind: OIDCLogin
metadata: {name: shop-admin, namespace: shop}
spec:
  selector: {matchLabels: {istio: shop-gateway}}
  hosts: [public.example.com]
  issuer: %s
  clientId: shop
  credentialName: shop-oidc
`, g.issuer))
	c := gatewayClient(g.addr, nil)
	var body string
	Eventually(t, 20*time.Second, "the second login's host closed", func() error {
		resp, err := c.Get(public)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusServiceUnavailable {
			return fmt.Errorf("%d", resp.StatusCode)
		}
		body = string(b)
		return nil
	})
	if want := "OIDCLogin shop/shop-admin is not in force on this gateway port, OIDCLogin shop/shop is"; !strings.Contains(body, want) {
		t.Errorf("503 body %q, want it to say %q", body, want)
	}
	if code, loc, _, err := gwGet(c, g.origin+"/orders"); err != nil || code != http.StatusFound || !strings.HasPrefix(loc, g.issuer+"/") {
		t.Errorf("the first login's host: %d to %q %v, want its login", code, loc, err)
	}
	if err := os.Remove(filepath.Join(g.m.Dir, "login-admin.yaml")); err != nil {
		t.Fatal(err)
	}
	Eventually(t, 20*time.Second, "the host served again without the second login", func() error {
		if code, _, r, err := gwGet(c, public); err != nil || code != 200 || r.Path != "/" {
			return fmt.Errorf("%d %v", code, err)
		}
		return nil
	})
}
