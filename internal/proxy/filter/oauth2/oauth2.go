// Package oauth2 is Envoy's envoy.filters.http.oauth2: login for human
// users at the edge with the OAuth 2.0 / OpenID Connect authorization-code
// flow. A request without a valid session is redirected to the provider's
// authorization endpoint (state carrying the original URL and a CSRF
// nonce, PKCE S256); the provider sends the browser back to the redirect
// path, where the filter exchanges the code at the token endpoint
// (golang.org/x/oauth2) and sets the session cookies, signed with HMAC
// over the host, the expiry and the tokens, before sending the browser to
// the URL it first asked for. Requests with a valid session continue
// upstream, the access token (forward_bearer_token) or the ID token
// (forward_id_token) as Authorization: Bearer; an expired session is
// renewed with the refresh token when there is one. The sign-out path
// clears the cookies and redirects to the provider's end_session_endpoint
// when one is configured.
//
// Requests matching pass_through_matcher skip the filter; a request
// without a session that matches deny_redirect_matcher (an XHR or an API
// client) gets 401 instead of a redirect.
//
// The client secret and the HMAC key come from SDS generic secrets
// (token_secret, hmac_secret), which a gateway serves from its
// credential directory (Secrets). They are read at every use, so a
// rotation applies to the next request; sessions signed with an old HMAC
// key then send their browser through the provider again.
//
// Differences from Envoy: tokens in cookies are not encrypted
// (disable_token_encryption is implied; they are signed, HttpOnly and
// Secure over TLS); the PKCE code verifier is derived from the signed
// CSRF nonce with the HMAC key instead of living in a cookie of its own;
// the token endpoint is reached directly at token_endpoint.uri (its
// cluster is not used); cookie_configs, token chunking, private key JWT
// and retry_policy are not implemented.
package oauth2

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
	"weft.dev/weft/internal/proxy/xdswire"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	oauthv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/oauth2/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"weft.dev/weft/internal/proxy/filter"
	"weft.dev/weft/internal/proxy/matcher"
)

// Name is the filter's name in http_filters and typed_per_filter_config.
const Name = "envoy.filters.http.oauth2"

// Secrets serve the SDS generic secrets the filter names (a gateway's
// credential directory). GenericSecret returns the secret named name, or
// nil when there is none. Called on request goroutines; must not block.
type Secrets interface {
	GenericSecret(name string) []byte
}

// Factory makes the OAuth2 filter. Secrets may be nil (a sidecar without
// a credential directory): every request of a route the filter serves is
// then answered 503, as a login whose secrets are missing must not let
// anyone through.
type Factory struct {
	Secrets Secrets
	Logger  *slog.Logger
	// Client reaches the token endpoint; nil means a client with a
	// timeout of token_endpoint.timeout (default 5 s).
	Client *http.Client
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

var _ filter.Factory = Factory{}

// Name implements filter.Factory.
func (Factory) Name() string { return Name }

// disabled is the per-route config of routes that turn the filter off
// (envoy.config.route.v3.FilterConfig{disabled: true}).
type disabled struct{}

// ParsePerRoute implements filter.Factory. Envoy's OAuth2 filter has no
// per-route config of its own; a FilterConfig with disabled set turns it
// off for the route, as Envoy's generic per-route filter config.
func (Factory) ParsePerRoute(a *anypb.Any) (any, error) {
	var fc routev3.FilterConfig
	if !a.MessageIs(&fc) {
		return nil, fmt.Errorf("want %s, got %s", "envoy.config.route.v3.FilterConfig", a.GetTypeUrl())
	}
	if err := xdswire.UnmarshalAny(a, &fc); err != nil {
		return nil, err
	}
	if fc.GetConfig() != nil {
		return nil, fmt.Errorf("config: a per-route OAuth2 config is not supported; only disabled")
	}
	if fc.GetDisabled() {
		return disabled{}, nil
	}
	return nil, nil
}

// New implements filter.Factory: config is an OAuth2.
func (f Factory) New(a *anypb.Any) (filter.Filter, error) {
	var in oauthv3.OAuth2
	if a == nil {
		return nil, fmt.Errorf("typed_config: required")
	}
	if err := xdswire.UnmarshalAny(a, &in); err != nil {
		return nil, fmt.Errorf("typed_config: want %T: %w", &in, err)
	}
	c, err := compile(in.GetConfig())
	if err != nil {
		return nil, fmt.Errorf("config.%w", err)
	}
	c.secrets, c.log, c.now = f.Secrets, f.Logger, f.Now
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	c.client = f.Client
	if c.client == nil {
		c.client = &http.Client{Timeout: c.tokenTimeout}
	}
	return c, nil
}

// cookieNames are the session's cookie names.
type cookieNames struct {
	bearer, hmac, expires, idToken, refresh, nonce string
}

// loginFilter is one compiled OAuth2Config. Immutable; shared by the
// listener's requests.
type loginFilter struct {
	clientID        string
	tokenSecret     string // SDS name of the client secret
	hmacSecret      string // SDS name of the HMAC key
	authEndpoint    *url.URL
	tokenURL        string
	tokenTimeout    time.Duration
	endSession      string
	postLogout      string
	redirectURI     string // may hold %REQ(...)% operators
	redirectPath    matcher.String
	signoutPath     *matcher.String
	passThrough     []matcher.Header
	denyRedirect    []matcher.Header
	scopes          []string
	resources       []string
	basicAuth       bool
	useRefresh      bool
	forwardBearer   bool
	idTokenHeader   string // forward_id_token.header; "": not forwarded
	preserveAuthz   bool
	defaultExpires  time.Duration
	refreshExpires  time.Duration
	csrfExpires     time.Duration
	cookies         cookieNames
	cookieDomain    string
	allowedRedirect []string // allowed_redirect_domains; empty: the request's host only

	secrets Secrets
	log     *slog.Logger
	now     func() time.Time
	client  *http.Client
}

var (
	_ filter.Filter  = (*loginFilter)(nil)
	_ filter.Encoder = (*loginFilter)(nil)
)

func compile(c *oauthv3.OAuth2Config) (*loginFilter, error) {
	if c == nil {
		return nil, fmt.Errorf("required")
	}
	f := &loginFilter{
		clientID:        c.GetCredentials().GetClientId(),
		tokenSecret:     c.GetCredentials().GetTokenSecret().GetName(),
		hmacSecret:      c.GetCredentials().GetHmacSecret().GetName(),
		tokenURL:        c.GetTokenEndpoint().GetUri(),
		tokenTimeout:    c.GetTokenEndpoint().GetTimeout().AsDuration(),
		endSession:      c.GetEndSessionEndpoint(),
		postLogout:      c.GetPostLogoutRedirectUri().GetUri(),
		redirectURI:     c.GetRedirectUri(),
		scopes:          c.GetAuthScopes(),
		resources:       c.GetResources(),
		basicAuth:       c.GetAuthType() == oauthv3.OAuth2Config_BASIC_AUTH,
		useRefresh:      c.GetUseRefreshToken() == nil || c.GetUseRefreshToken().GetValue(),
		forwardBearer:   c.GetForwardBearerToken(),
		idTokenHeader:   c.GetForwardIdToken().GetHeader(),
		preserveAuthz:   c.GetPreserveAuthorizationHeader(),
		defaultExpires:  durationOr(c.GetDefaultExpiresIn().AsDuration(), 0),
		refreshExpires:  durationOr(c.GetDefaultRefreshTokenExpiresIn().AsDuration(), 7*24*time.Hour),
		csrfExpires:     durationOr(c.GetCsrfTokenExpiresIn().AsDuration(), 10*time.Minute),
		cookieDomain:    c.GetCredentials().GetCookieDomain(),
		allowedRedirect: c.GetAllowedRedirectDomains(),
	}
	if f.clientID == "" {
		return nil, fmt.Errorf("credentials.client_id: required")
	}
	if f.tokenSecret == "" {
		return nil, fmt.Errorf("credentials.token_secret.name: required")
	}
	if f.hmacSecret == "" {
		return nil, fmt.Errorf("credentials.hmac_secret.name: required")
	}
	if c.GetForwardIdToken() != nil && (f.idTokenHeader == "" || strings.HasPrefix(f.idTokenHeader, ":") || strings.EqualFold(f.idTokenHeader, "host")) {
		return nil, fmt.Errorf("forward_id_token.header: %q is not a header that can carry a token", f.idTokenHeader)
	}
	if strings.EqualFold(f.idTokenHeader, "authorization") && (f.forwardBearer || f.preserveAuthz) {
		return nil, fmt.Errorf("forward_id_token.header: Authorization cannot go with forward_bearer_token or preserve_authorization_header")
	}
	if f.tokenTimeout <= 0 {
		f.tokenTimeout = 5 * time.Second
	}
	if len(f.scopes) == 0 {
		f.scopes = []string{"user"} // Envoy's default
	}
	var err error
	if f.authEndpoint, err = absoluteURL(c.GetAuthorizationEndpoint()); err != nil {
		return nil, fmt.Errorf("authorization_endpoint: %w", err)
	}
	if _, err := absoluteURL(f.tokenURL); err != nil {
		return nil, fmt.Errorf("token_endpoint.uri: %w", err)
	}
	if f.endSession != "" {
		if _, err := absoluteURL(f.endSession); err != nil {
			return nil, fmt.Errorf("end_session_endpoint: %w", err)
		}
	}
	if f.redirectURI == "" {
		return nil, fmt.Errorf("redirect_uri: required")
	}
	if c.GetRedirectPathMatcher().GetPath() == nil {
		return nil, fmt.Errorf("redirect_path_matcher.path: required")
	}
	if f.redirectPath, err = matcher.CompileString(c.GetRedirectPathMatcher().GetPath()); err != nil {
		return nil, fmt.Errorf("redirect_path_matcher.path: %w", err)
	}
	if sp := c.GetSignoutPath().GetPath(); sp != nil {
		m, err := matcher.CompileString(sp)
		if err != nil {
			return nil, fmt.Errorf("signout_path.path: %w", err)
		}
		f.signoutPath = &m
	}
	for i, h := range c.GetPassThroughMatcher() {
		m, err := matcher.CompileHeader(h)
		if err != nil {
			return nil, fmt.Errorf("pass_through_matcher[%d]: %w", i, err)
		}
		f.passThrough = append(f.passThrough, m)
	}
	for i, h := range c.GetDenyRedirectMatcher() {
		m, err := matcher.CompileHeader(h)
		if err != nil {
			return nil, fmt.Errorf("deny_redirect_matcher[%d]: %w", i, err)
		}
		f.denyRedirect = append(f.denyRedirect, m)
	}
	n := c.GetCredentials().GetCookieNames()
	f.cookies = cookieNames{
		bearer:  or(n.GetBearerToken(), "BearerToken"),
		hmac:    or(n.GetOauthHmac(), "OauthHMAC"),
		expires: or(n.GetOauthExpires(), "OauthExpires"),
		idToken: or(n.GetIdToken(), "IdToken"),
		refresh: or(n.GetRefreshToken(), "RefreshToken"),
		nonce:   or(n.GetOauthNonce(), "OauthNonce"),
	}
	return f, nil
}

func absoluteURL(s string) (*url.URL, error) {
	if s == "" {
		return nil, fmt.Errorf("required")
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, err
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("%q is not an absolute http(s) URL", s)
	}
	return u, nil
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func durationOr(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// redirectURL expands the %REQ(header)% operators of redirect_uri for r,
// as Envoy's formatter does for the headers it is used with (:scheme,
// :authority, x-forwarded-proto, ...).
func (f *loginFilter) redirectURL(r *http.Request, secure bool) string {
	s := f.redirectURI
	for {
		i := strings.Index(s, "%REQ(")
		if i < 0 {
			return s
		}
		j := strings.Index(s[i:], ")%")
		if j < 0 {
			return s
		}
		name := strings.ToLower(s[i+5 : i+j])
		s = s[:i] + requestValue(r, name, secure) + s[i+j+2:]
	}
}

func requestValue(r *http.Request, name string, secure bool) string {
	switch name {
	case ":authority", "host":
		return r.Host
	case ":scheme":
		return scheme(secure)
	case ":path":
		return r.URL.RequestURI()
	case "x-forwarded-proto":
		if v := r.Header.Get("X-Forwarded-Proto"); v != "" {
			return v
		}
		return scheme(secure)
	}
	return r.Header.Get(name)
}

// scheme is the scheme the client used to reach the proxy.
func scheme(secure bool) string {
	if secure {
		return "https"
	}
	return "http"
}
