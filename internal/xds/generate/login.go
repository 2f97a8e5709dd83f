package generate

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtauthn "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	oauthv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/oauth2/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"

	weftsec "weft.dev/weft/api/security/v1alpha1"
	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/jwks"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/xds/contract"
)

// Login for human users at a gateway (OIDCLogin) is Envoy's OAuth2
// filter, followed by the JWT filter when claims become headers:
//
//   - The gateway's connection manager gets envoy.filters.http.oauth2
//     before the router, its endpoints from the OpenID discovery the
//     control plane did (internal/jwks), the client secret and the HMAC
//     key as SDS secrets "kubernetes://<credentialName>/client-secret"
//     and ".../hmac-secret" (the gateway's credential directory).
//   - The virtual hosts of the login's hosts keep the filter; every route
//     of the other virtual hosts turns it off (typed_per_filter_config:
//     FilterConfig{disabled: true}). A login host served by a wildcard
//     virtual host gets a virtual host of its own, a copy, so the others
//     stay without login. Its redirect and logout paths get routes of
//     their own, so a VirtualService without a catch-all still reaches
//     the filter there.
//   - The ID token goes upstream as Authorization: Bearer (forwardToken
//     ID_TOKEN), or the access token (ACCESS_TOKEN) with the ID token in
//     x-weft-id-token for the JWT filter only. With claimToHeaders, the
//     JWT filter verifies the ID token against the issuer's keys (fetched
//     by the control plane, inlined) and copies the claims; it neither
//     refuses a request (allow_missing_or_failed: hosts without login are
//     untouched) nor lets a client's own claim headers through.
//   - Until discovery has found the issuer's endpoints, the login's hosts
//     answer 503: they are never served without login.
//
// One OIDCLogin per route configuration: the first (oldest, the
// gateway's namespace first) whose hosts the route configuration serves.
// The hosts of the others answer 503 there: never served without login.

// Names of the login's filters and secrets.
const (
	oauth2FilterName = "envoy.filters.http.oauth2"
	loginProvider    = "oidc-login"
	// loginIDTokenHeader carries the ID token to the JWT filter when the
	// access token is what goes upstream; the JWT filter removes it.
	loginIDTokenHeader = "x-weft-id-token"
	// LoginClientSecretKey and LoginHMACSecretKey are the files of an
	// OIDCLogin's credential.
	LoginClientSecretKey = "client-secret"
	LoginHMACSecretKey   = "hmac-secret"
)

// withLogin adds the OIDCLogin that applies to rc's hosts, if any, to m,
// a gateway port's connection manager, and scopes it to those hosts in
// rc. It changes rc in place (cloning the routes it touches, which may
// be shared) and returns m.
func withLogin(s *mesh.Snapshot, id contract.Identity, m *hcm.HttpConnectionManager, rc *route.RouteConfiguration) *hcm.HttpConnectionManager {
	logins := s.Logins.For(id.Namespace, id.Labels)
	login, vhosts := loginFor(logins, rc)
	if login == nil {
		return m
	}
	refuseOtherLogins(logins, login, vhosts, rc)
	spec := login.Spec
	redirect := orDefault(spec.GetRedirectPath(), config.DefaultOIDCRedirectPath)
	logout := orDefault(spec.GetLogoutPath(), config.DefaultOIDCLogoutPath)
	disc, discovered := s.Logins.Discovery(spec.GetIssuer())
	inLogin := map[*route.VirtualHost]bool{}
	for _, vh := range vhosts {
		inLogin[vh] = true
		if !discovered {
			vh.Routes = []*route.Route{{
				Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
				Action: &route.Route_DirectResponse{DirectResponse: &route.DirectResponseAction{
					Status: 503, Body: &core.DataSource{Specifier: &core.DataSource_InlineString{
						InlineString: "login is not available yet: the OpenID provider " + spec.GetIssuer() + " has not been discovered",
					}},
				}},
			}}
			continue
		}
		vh.Routes = append([]*route.Route{loginPathRoute(redirect), loginPathRoute(logout)}, vh.Routes...)
	}
	if !discovered {
		return m
	}
	off := mustAny(&route.FilterConfig{Disabled: true})
	for _, vh := range rc.GetVirtualHosts() {
		if inLogin[vh] {
			continue
		}
		for i, r := range vh.Routes {
			r = proto.Clone(r).(*route.Route)
			if r.TypedPerFilterConfig == nil {
				r.TypedPerFilterConfig = map[string]*anypb.Any{}
			}
			r.TypedPerFilterConfig[oauth2FilterName] = off
			vh.Routes[i] = r
		}
	}
	filters := []*hcm.HttpFilter{{
		Name:       oauth2FilterName,
		ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(&oauthv3.OAuth2{Config: oauth2Config(spec, disc, redirect, logout)})},
	}}
	if len(spec.GetClaimToHeaders()) > 0 {
		keys, _ := s.Keys.Keys(&security.JWTRule{Issuer: spec.GetIssuer()})
		filters = append(filters, loginJWTFilter(spec, disc, keys))
	}
	last := len(m.HttpFilters) - 1 // the router
	m.HttpFilters = slices.Insert(m.HttpFilters, last, filters...)
	return m
}

// refuseOtherLogins makes the hosts of the logins other than the one in
// force on rc (of which vhosts are the virtual hosts) answer 503: one
// login is in force per route configuration, and a host that asks for
// login must never be served without it.
func refuseOtherLogins(logins []*config.OIDCLogin, inForce *config.OIDCLogin, vhosts []*route.VirtualHost, rc *route.RouteConfiguration) {
	for _, l := range logins {
		if l == inForce {
			continue
		}
		for _, vh := range loginVirtualHosts(l, rc) {
			if slices.Contains(vhosts, vh) {
				continue
			}
			vh.Routes = []*route.Route{{
				Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
				Action: &route.Route_DirectResponse{DirectResponse: &route.DirectResponseAction{
					Status: 503, Body: &core.DataSource{Specifier: &core.DataSource_InlineString{InlineString: fmt.Sprintf(
						"login is not available: OIDCLogin %s/%s is not in force on this gateway port, OIDCLogin %s/%s is (one login per port)",
						l.Namespace, l.Name, inForce.Namespace, inForce.Name)}},
				}},
			}}
		}
	}
}

// loginFor picks the first login whose hosts rc serves and returns the
// virtual hosts of those hosts (loginVirtualHosts).
func loginFor(logins []*config.OIDCLogin, rc *route.RouteConfiguration) (*config.OIDCLogin, []*route.VirtualHost) {
	for _, l := range logins {
		if out := loginVirtualHosts(l, rc); len(out) > 0 {
			return l, out
		}
	}
	return nil, nil
}

// loginVirtualHosts returns the virtual hosts of rc that serve login l's
// hosts, giving a login host served by a wildcard virtual host a copy of
// its own (added to rc).
func loginVirtualHosts(l *config.OIDCLogin, rc *route.RouteConfiguration) []*route.VirtualHost {
	var out []*route.VirtualHost
	for _, h := range l.Spec.GetHosts() {
		h = strings.ToLower(h)
		var exact, cover *route.VirtualHost
		for _, vh := range rc.GetVirtualHosts() {
			d := strings.ToLower(vh.GetDomains()[0])
			switch {
			case d == h:
				exact = vh
			case d == "*" || (strings.HasPrefix(d, "*.") && strings.HasSuffix(h, d[1:]) && len(h) > len(d)):
				if cover == nil || len(d) > len(cover.GetDomains()[0]) {
					cover = vh // the most specific wildcard
				}
			}
		}
		switch {
		case exact != nil:
			if !slices.Contains(out, exact) {
				out = append(out, exact)
			}
		case cover != nil:
			vh := proto.Clone(cover).(*route.VirtualHost)
			port := strings.TrimPrefix(cover.GetName(), cover.GetDomains()[0])
			vh.Name = h + port
			vh.Domains = []string{h}
			if port != "" {
				vh.Domains = append(vh.Domains, h+port)
			}
			rc.VirtualHosts = append(rc.VirtualHosts, vh)
			out = append(out, vh)
		}
	}
	if len(out) > 0 {
		slices.SortFunc(rc.VirtualHosts, func(a, b *route.VirtualHost) int { return strings.Compare(a.Name, b.Name) })
	}
	return out
}

// loginPathRoute routes a path the OAuth2 filter answers itself.
func loginPathRoute(path string) *route.Route {
	return &route.Route{
		Name:  "oidc-login " + path,
		Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Path{Path: path}},
		Action: &route.Route_DirectResponse{DirectResponse: &route.DirectResponseAction{
			Status: 404, Body: &core.DataSource{Specifier: &core.DataSource_InlineString{InlineString: "not a login request"}},
		}},
	}
}

func oauth2Config(spec *weftsec.OIDCLogin, disc jwks.Discovery, redirect, logout string) *oauthv3.OAuth2Config {
	sds := func(key string) *tlsv3.SdsSecretConfig {
		return &tlsv3.SdsSecretConfig{Name: contract.SecretCredentialPrefix + spec.GetCredentialName() + "/" + key, SdsConfig: adsConfigSource()}
	}
	c := &oauthv3.OAuth2Config{
		TokenEndpoint: &core.HttpUri{
			Uri:              disc.TokenEndpoint,
			HttpUpstreamType: &core.HttpUri_Cluster{Cluster: tokenCluster(disc.TokenEndpoint)},
			Timeout:          durationpb.New(5 * time.Second),
		},
		AuthorizationEndpoint: disc.AuthorizationEndpoint,
		EndSessionEndpoint:    disc.EndSessionEndpoint,
		Credentials: &oauthv3.OAuth2Credentials{
			ClientId:       spec.GetClientId(),
			TokenSecret:    sds(LoginClientSecretKey),
			TokenFormation: &oauthv3.OAuth2Credentials_HmacSecret{HmacSecret: sds(LoginHMACSecretKey)},
		},
		RedirectUri:         "%REQ(:scheme)%://%REQ(:authority)%" + redirect,
		RedirectPathMatcher: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: exactString(redirect)}},
		SignoutPath:         &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: exactString(logout)}},
		AuthScopes:          loginScopes(spec.GetScopes()),
		// client_secret_basic: OpenID Connect's default client
		// authentication, which every provider supports.
		AuthType:        oauthv3.OAuth2Config_BASIC_AUTH,
		UseRefreshToken: wrapperspb.Bool(!spec.GetDisableRefresh()),
		// Weft's proxy keeps tokens in signed, unencrypted cookies (the
		// JWT filter reads the ID token); Envoy is told the same.
		DisableTokenEncryption: true,
	}
	if u := spec.GetPostLogoutRedirectUri(); u != "" {
		c.PostLogoutRedirectUri = &oauthv3.PostLogoutRedirectUri{Config: &oauthv3.PostLogoutRedirectUri_Uri{Uri: u}}
	}
	switch spec.GetForwardToken() {
	case weftsec.OIDCLogin_ID_TOKEN:
		c.ForwardIdToken = &oauthv3.OAuth2TokenForwarding{Header: "authorization"}
	case weftsec.OIDCLogin_ACCESS_TOKEN:
		c.ForwardBearerToken = true
		if len(spec.GetClaimToHeaders()) > 0 {
			c.ForwardIdToken = &oauthv3.OAuth2TokenForwarding{Header: loginIDTokenHeader}
		}
	case weftsec.OIDCLogin_NONE:
		if len(spec.GetClaimToHeaders()) > 0 {
			c.ForwardIdToken = &oauthv3.OAuth2TokenForwarding{Header: loginIDTokenHeader}
		}
	}
	for _, m := range spec.GetPassThroughPaths() {
		c.PassThroughMatcher = append(c.PassThroughMatcher, &route.HeaderMatcher{
			Name:                 ":path",
			HeaderMatchSpecifier: &route.HeaderMatcher_StringMatch{StringMatch: loginStringMatch(m)},
		})
	}
	deny := spec.GetDenyRedirect()
	if len(deny) == 0 {
		deny = []*weftsec.HeaderMatch{{Name: "x-requested-with", Value: &networking.StringMatch{MatchType: &networking.StringMatch_Exact{Exact: "XMLHttpRequest"}}}}
	}
	for _, d := range deny {
		hm := &route.HeaderMatcher{Name: strings.ToLower(d.GetName())}
		if d.GetValue() != nil {
			hm.HeaderMatchSpecifier = &route.HeaderMatcher_StringMatch{StringMatch: loginStringMatch(d.GetValue())}
		} else {
			hm.HeaderMatchSpecifier = &route.HeaderMatcher_PresentMatch{PresentMatch: true}
		}
		c.DenyRedirectMatcher = append(c.DenyRedirectMatcher, hm)
	}
	return c
}

// loginJWTFilter verifies the ID token the OAuth2 filter forwards and
// turns its claims into headers; it refuses nothing.
func loginJWTFilter(spec *weftsec.OIDCLogin, disc jwks.Discovery, keys string) *hcm.HttpFilter {
	p := &jwtauthn.JwtProvider{
		Issuer:    orDefault(disc.Issuer, spec.GetIssuer()),
		Audiences: []string{spec.GetClientId()},
		JwksSourceSpecifier: &jwtauthn.JwtProvider_LocalJwks{LocalJwks: &core.DataSource{
			Specifier: &core.DataSource_InlineString{InlineString: keys},
		}},
	}
	if spec.GetForwardToken() == weftsec.OIDCLogin_ID_TOKEN {
		p.FromHeaders = []*jwtauthn.JwtHeader{{Name: "Authorization", ValuePrefix: "Bearer "}}
		p.Forward = true
	} else {
		p.FromHeaders = []*jwtauthn.JwtHeader{{Name: loginIDTokenHeader}}
	}
	for _, ch := range spec.GetClaimToHeaders() {
		p.ClaimToHeaders = append(p.ClaimToHeaders, &jwtauthn.JwtClaimToHeader{HeaderName: ch.GetHeader(), ClaimName: ch.GetClaim()})
	}
	cfg := &jwtauthn.JwtAuthentication{
		Providers: map[string]*jwtauthn.JwtProvider{loginProvider: p},
		Rules: []*jwtauthn.RequirementRule{{
			Match: &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
			RequirementType: &jwtauthn.RequirementRule_Requires{Requires: requiresAny(providerRequirement(loginProvider),
				&jwtauthn.JwtRequirement{RequiresType: &jwtauthn.JwtRequirement_AllowMissingOrFailed{AllowMissingOrFailed: &emptypb.Empty{}}})},
		}},
	}
	return &hcm.HttpFilter{Name: contract.FilterJWTAuthn, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(cfg)}}
}

// loginScopes are the scopes asked for: openid always, openid, email and
// profile by default.
func loginScopes(scopes []string) []string {
	if len(scopes) == 0 {
		return []string{"openid", "email", "profile"}
	}
	if !slices.Contains(scopes, "openid") {
		return append([]string{"openid"}, scopes...)
	}
	return slices.Clone(scopes)
}

// tokenCluster names the cluster Envoy reaches the token endpoint by, in
// Istio's form (outbound|443||idp.example.com). Weft's proxy reaches the
// URI directly; an Envoy needs a ServiceEntry for the provider.
func tokenCluster(uri string) string {
	u, err := url.Parse(uri)
	if err != nil {
		return "oidc-token-endpoint"
	}
	port := u.Port()
	if port == "" {
		port = map[bool]string{true: "443", false: "80"}[u.Scheme == "https"]
	}
	return fmt.Sprintf("outbound|%s||%s", port, u.Hostname())
}

func exactString(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

// loginStringMatch is an Istio StringMatch as Envoy's StringMatcher.
func loginStringMatch(m *networking.StringMatch) *matcherv3.StringMatcher {
	switch t := m.GetMatchType().(type) {
	case *networking.StringMatch_Exact:
		return exactString(t.Exact)
	case *networking.StringMatch_Prefix:
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: t.Prefix}}
	case *networking.StringMatch_Regex:
		return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: t.Regex}}}
	}
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: ""}}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
