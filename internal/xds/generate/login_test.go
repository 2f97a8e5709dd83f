package generate

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtauthn "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	oauthv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/oauth2/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/jwks"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry/static"
	"weft.dev/weft/internal/xds/contract"
)

// loginConfig is a team gateway with three hosts on port 80 (one, app,
// with login; public without) and HTTPS for "*.example.com" (secure, a
// login host served by the wildcard virtual host). The OIDCLogin
// forwards the ID token and copies two claims.
const loginConfig = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web, namespace: shop}
spec:
  hosts: [web.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}]
  endpoints: [{address: 10.2.0.1}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: shop, namespace: shop}
spec:
  selector: {istio: shop-gateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [app.example.com, public.example.com]
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*.example.com"]
    tls: {mode: SIMPLE, credentialName: wildcard-cert}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: shop}
spec:
  hosts: [app.example.com, public.example.com]
  gateways: [shop]
  http:
  - match: [{uri: {prefix: /api}}]
    route: [{destination: {host: web.shop.svc.cluster.local, port: {number: 8080}}}]
  - route: [{destination: {host: web.shop.svc.cluster.local, port: {number: 8080}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: wildcard, namespace: shop}
spec:
  hosts: ["*.example.com"]
  gateways: [shop]
  http:
  - route: [{destination: {host: web.shop.svc.cluster.local, port: {number: 8080}}}]
---
apiVersion: security.weft.dev/v1alpha1
kind: OIDCLogin
metadata: {name: shop, namespace: shop}
spec:
  selector: {matchLabels: {istio: shop-gateway}}
  hosts: [app.example.com, secure.example.com]
  issuer: https://idp.example.com
  clientId: shop
  credentialName: shop-oidc
  passThroughPaths: [{prefix: /healthz}]
  postLogoutRedirectUri: https://app.example.com/
  claimToHeaders: [{header: x-user-email, claim: email}, {header: x-user, claim: sub}]
`

var shopGateway = contract.Identity{
	ID: contract.RouterNodeID("10.1.0.9", "shop-gateway-1", "shop"), Namespace: "shop",
	WorkloadName: "shop-gateway-1", Labels: map[string]string{"istio": "shop-gateway"}, IPs: []string{"10.1.0.9"},
	ServiceAccount: "shop-gateway", MTLS: true,
}

const loginJWKS = `{"keys":[{"kty":"RSA","kid":"k1","alg":"RS256","use":"sig","n":"u1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0_IzW7yWR7QkrmBL7jTKEn5u-qKhbwKfBstIs-bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW_VDL5AaWTg0nLVkjRo9z-40RQzuVaE8AkAFmxZzow3x-VJYKdjykkJ0iT9wCS0DRTXu269V264Vf_3jvredZiKRkgwlL9xNAwxXFg0x_XFw005UWVRIkdgcKWTjpBP2dPwVZ4WWC-9aGVd-Gyn1o0CLelf4rEjGoXbAAEgAqeGUxrcIlbjXfbcmw","e":"AQAB"}]}`

// loginMesh is loginConfig with discovery done (or not).
func loginMesh(discovered bool) func() *mesh.Snapshot {
	return func() *mesh.Snapshot {
		dir, err := os.MkdirTemp("", "login-golden")
		if err != nil {
			panic(err)
		}
		defer os.RemoveAll(dir)
		if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(loginConfig), 0o644); err != nil {
			panic(err)
		}
		files, err := config.ReadDir(dir)
		if err != nil {
			panic(err)
		}
		snap := config.NewStore(config.Options{Logger: slog.New(slog.DiscardHandler)}).LoadDir(files)
		for _, d := range snap.Diagnostics {
			if d.Severity == config.SeverityError {
				panic(fmt.Sprintf("golden config: %v", d))
			}
		}
		var opts mesh.Options
		if discovered {
			opts.JWKS = map[jwks.Source]string{jwks.SourceOf("https://idp.example.com", ""): loginJWKS}
			opts.OIDC = map[string]jwks.Discovery{"https://idp.example.com": {Issuer: "https://idp.example.com",
				AuthorizationEndpoint: "https://idp.example.com/authorize", TokenEndpoint: "https://idp.example.com/token",
				EndSessionEndpoint: "https://idp.example.com/logout"}}
		}
		return mesh.Build(snap, static.Build(snap, ""), opts)
	}
}

func loginCases() []goldenCase {
	return []goldenCase{{name: "gateway_login", mesh: loginMesh(true), proxy: shopGateway}}
}

// connectionManagers returns the gateway's HTTP connection managers by
// route configuration name.
func connectionManagers(t *testing.T, r Resources) map[string]*hcm.HttpConnectionManager {
	t.Helper()
	out := map[string]*hcm.HttpConnectionManager{}
	for _, res := range r.Listeners {
		for _, fc := range res.(*listener.Listener).GetFilterChains() {
			for _, f := range fc.GetFilters() {
				var m hcm.HttpConnectionManager
				if f.GetTypedConfig().UnmarshalTo(&m) == nil {
					out[m.GetRds().GetRouteConfigName()] = &m
				}
			}
		}
	}
	return out
}

func routeConfigs(r Resources) map[string]*route.RouteConfiguration {
	out := map[string]*route.RouteConfiguration{}
	for _, res := range r.Routes {
		rc := res.(*route.RouteConfiguration)
		out[rc.GetName()] = rc
	}
	return out
}

// What the login adds, checked beyond the golden file: the OAuth2 filter
// (then JWT, then the router) on both ports, endpoints from discovery,
// secrets from the credential, the filter off on every route of the
// other hosts, a virtual host of its own for a login host under a
// wildcard, and 503 for the login's hosts until discovery is done.
func TestGatewayLoginResources(t *testing.T) {
	r := ForProxy(loginMesh(true)(), shopGateway)
	hcms, rcs := connectionManagers(t, r), routeConfigs(r)
	if len(hcms) != 2 {
		t.Fatalf("connection managers: %v", hcms)
	}
	for name, m := range hcms {
		var names []string
		for _, f := range m.GetHttpFilters() {
			names = append(names, f.GetName())
		}
		if got := strings.Join(names, " "); !strings.HasSuffix(got, "envoy.filters.http.oauth2 envoy.filters.http.jwt_authn envoy.filters.http.router") {
			t.Errorf("%s: filters %s", name, got)
		}
		var o oauthv3.OAuth2
		if err := m.GetHttpFilters()[len(names)-3].GetTypedConfig().UnmarshalTo(&o); err != nil {
			t.Fatal(err)
		}
		c := o.GetConfig()
		if c.GetAuthorizationEndpoint() != "https://idp.example.com/authorize" || c.GetTokenEndpoint().GetUri() != "https://idp.example.com/token" ||
			c.GetCredentials().GetTokenSecret().GetName() != "kubernetes://shop-oidc/client-secret" ||
			c.GetCredentials().GetHmacSecret().GetName() != "kubernetes://shop-oidc/hmac-secret" ||
			c.GetForwardIdToken().GetHeader() != "authorization" || strings.Join(c.GetAuthScopes(), " ") != "openid email profile" ||
			c.GetDenyRedirectMatcher()[0].GetName() != "x-requested-with" {
			t.Errorf("%s: oauth2 config %v", name, c)
		}
		var j jwtauthn.JwtAuthentication
		if err := m.GetHttpFilters()[len(names)-2].GetTypedConfig().UnmarshalTo(&j); err != nil {
			t.Fatal(err)
		}
		if p := j.GetProviders()[loginProvider]; p.GetIssuer() != "https://idp.example.com" || p.GetLocalJwks().GetInlineString() != loginJWKS ||
			len(p.GetClaimToHeaders()) != 2 || p.GetAudiences()[0] != "shop" {
			t.Errorf("%s: jwt provider %v", name, p)
		}
	}
	disabled := func(rt *route.Route) bool { _, ok := rt.GetTypedPerFilterConfig()[oauth2FilterName]; return ok }
	for name, rc := range rcs {
		for _, vh := range rc.GetVirtualHosts() {
			login := vh.GetDomains()[0] == "app.example.com" || vh.GetDomains()[0] == "secure.example.com"
			for _, rt := range vh.GetRoutes() {
				if disabled(rt) == login {
					t.Errorf("%s %s route %q: disabled %v", name, vh.GetName(), rt.GetName(), disabled(rt))
				}
			}
			if login && vh.GetRoutes()[0].GetMatch().GetPath() != "/oauth2/callback" {
				t.Errorf("%s %s: first route %v, want the callback", name, vh.GetName(), vh.GetRoutes()[0].GetMatch())
			}
		}
	}
	https := rcs["https.443.https.shop.shop"]
	var domains []string
	for _, vh := range https.GetVirtualHosts() {
		domains = append(domains, vh.GetDomains()[0])
	}
	if got := strings.Join(domains, " "); got != "*.example.com app.example.com public.example.com secure.example.com" {
		t.Errorf("https virtual hosts %q", got)
	}

	// Not discovered yet: no filter, the login hosts answer 503, the
	// others are served.
	r = ForProxy(loginMesh(false)(), shopGateway)
	for name, m := range connectionManagers(t, r) {
		if n := len(m.GetHttpFilters()); m.GetHttpFilters()[n-2].GetName() == oauth2FilterName {
			t.Errorf("%s: oauth2 filter without discovery", name)
		}
	}
	for _, vh := range routeConfigs(r)["http.80"].GetVirtualHosts() {
		rt := vh.GetRoutes()[0]
		if got := rt.GetDirectResponse().GetStatus() == 503; got != (vh.GetDomains()[0] == "app.example.com") {
			t.Errorf("undiscovered: %s first route %v", vh.GetName(), rt)
		}
	}
}

// Which OIDCLogin a gateway port gets: one of the gateway's namespace or
// the root namespace (not another namespace's), selecting the gateway,
// the oldest first; a second login on the same port is not applied, and
// its hosts are served without login.
func TestGatewayLoginChoice(t *testing.T) {
	extra := `
---
apiVersion: security.weft.dev/v1alpha1
kind: OIDCLogin
metadata: {name: z-public, namespace: shop}
spec:
  hosts: [public.example.com]
  issuer: https://idp.example.com
  clientId: public
  credentialName: public-oidc
---
apiVersion: security.weft.dev/v1alpha1
kind: OIDCLogin
metadata: {name: elsewhere, namespace: other}
spec:
  hosts: [public.example.com]
  issuer: https://idp.example.com
  clientId: other
  credentialName: other-oidc
---
apiVersion: security.weft.dev/v1alpha1
kind: OIDCLogin
metadata: {name: mesh-wide, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: other-gateway}}
  hosts: [public.example.com]
  issuer: https://idp.example.com
  clientId: mesh
  credentialName: mesh-oidc
`
	s := yamlMesh(loginConfig + extra)()
	opts := mesh.Options{OIDC: map[string]jwks.Discovery{"https://idp.example.com": {Issuer: "https://idp.example.com",
		AuthorizationEndpoint: "https://idp.example.com/authorize", TokenEndpoint: "https://idp.example.com/token"}}}
	s = mesh.Build(s.Config, s.Registry, opts)
	if got := s.Logins.For("shop", shopGateway.Labels); len(got) != 2 || got[0].Name != "shop" || got[1].Name != "z-public" {
		t.Fatalf("logins for the shop gateway: %v", got)
	}
	r := ForProxy(s, shopGateway)
	for name, m := range connectionManagers(t, r) {
		n := len(m.GetHttpFilters())
		var o oauthv3.OAuth2
		if err := m.GetHttpFilters()[n-3].GetTypedConfig().UnmarshalTo(&o); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if id := o.GetConfig().GetCredentials().GetClientId(); id != "shop" {
			t.Errorf("%s: client %q, want the oldest login's", name, id)
		}
	}
	for _, vh := range routeConfigs(r)["http.80"].GetVirtualHosts() {
		if vh.GetDomains()[0] != "public.example.com" {
			continue
		}
		// z-public's host is on the port of the login in force: it must
		// not be served without its own login, so it answers 503.
		rts := vh.GetRoutes()
		if len(rts) != 1 || rts[0].GetDirectResponse().GetStatus() != 503 ||
			!strings.Contains(rts[0].GetDirectResponse().GetBody().GetInlineString(), "OIDCLogin shop/z-public is not in force") {
			t.Errorf("public host routes: %v, want one 503 naming the login not in force", rts)
		}
		for _, rt := range rts {
			if _, off := rt.GetTypedPerFilterConfig()[oauth2FilterName]; !off {
				t.Errorf("public host route %v has the other login", rt.GetMatch())
			}
		}
	}
}
