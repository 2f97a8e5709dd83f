package config

import (
	"strings"
	"testing"
)

// TestOIDCLogin: a full security.weft.dev OIDCLogin loads cleanly; every
// mistake is rejected (or warned about) with file, line, column,
// document, resource and field path.
func TestOIDCLogin(t *testing.T) {
	good := `
apiVersion: security.weft.dev/v1alpha1
kind: OIDCLogin
metadata: {name: shop-login, namespace: shop}
spec:
  selector:
    matchLabels: {istio: shop-gateway}
  hosts: [shop.example.com, "*.admin.example.com"]
  issuer: https://accounts.example.com
  clientId: shop
  credentialName: shop-oidc
  scopes: [openid, email]
  redirectPath: /_login/callback
  logoutPath: /_login/logout
  postLogoutRedirectUri: https://shop.example.com/
  passThroughPaths: [{prefix: /static/}, {exact: /healthz}]
  denyRedirect:
  - name: x-requested-with
    value: {exact: XMLHttpRequest}
  - name: authorization
  forwardToken: ACCESS_TOKEN
  claimToHeaders:
  - {header: x-user-email, claim: email}
`
	snap := NewStore(testOptions()).Load(map[string][]byte{"l.yaml": []byte(good)})
	for _, d := range snap.Diagnostics {
		t.Errorf("unexpected %s", d.Error())
	}
	if len(snap.OIDCLogins) != 1 {
		t.Fatalf("OIDCLogins = %v", snap.OIDCLogins)
	}
	if l := snap.OIDCLogins[0].Spec; l.GetClientId() != "shop" || l.GetDenyRedirect()[0].GetValue().GetExact() != "XMLHttpRequest" || l.GetForwardToken().String() != "ACCESS_TOKEN" {
		t.Errorf("decoded spec = %v", l)
	}

	const head = "apiVersion: security.weft.dev/v1alpha1\nkind: OIDCLogin\nmetadata: {name: l, namespace: ns}\nspec:\n"
	const base = "  hosts: [a.example.com]\n  issuer: https://idp.example.com\n  clientId: c\n  credentialName: cred\n"
	for _, c := range []struct {
		name, spec string
		want       string // the diagnostic's start
		warning    bool
	}{
		{"nothing", "  clientId: c\n",
			"l.yaml:5:3: doc 1: OIDCLogin ns/l: spec.hosts: at least one host is required", false},
		{"no issuer", "  hosts: [a.example.com]\n  clientId: c\n  credentialName: cred\n",
			"l.yaml:5:3: doc 1: OIDCLogin ns/l: spec.issuer: issuer is required", false},
		{"issuer not https", strings.Replace(base, "https://idp.example.com", "http://idp.example.com", 1),
			"l.yaml:6:11: doc 1: OIDCLogin ns/l: spec.issuer: ", false},
		{"issuer with query", strings.Replace(base, "https://idp.example.com", "https://idp.example.com/?a=b", 1),
			`l.yaml:6:11: doc 1: OIDCLogin ns/l: spec.issuer: issuer "https://idp.example.com/?a=b" must have no query or fragment`, false},
		{"no client", strings.Replace(base, "  clientId: c\n", "", 1),
			"l.yaml:5:3: doc 1: OIDCLogin ns/l: spec.clientId: clientId is required", false},
		{"bad credential", strings.Replace(base, "cred\n", "Cred_1\n", 1),
			`l.yaml:8:19: doc 1: OIDCLogin ns/l: spec.credentialName: credentialName "Cred_1" must be a Secret name`, false},
		{"host with namespace", strings.Replace(base, "[a.example.com]", "[shop/a.example.com]", 1),
			`l.yaml:5:11: doc 1: OIDCLogin ns/l: spec.hosts[0]: host "shop/a.example.com": an OIDCLogin host has no namespace prefix`, false},
		{"partial wildcard", strings.Replace(base, "[a.example.com]", "[a*.example.com]", 1),
			`l.yaml:5:11: doc 1: OIDCLogin ns/l: spec.hosts[0]: host "a*.example.com": partial wildcard`, false},
		{"host twice", strings.Replace(base, "[a.example.com]", "[a.example.com, A.example.com]", 1),
			`l.yaml:5:26: doc 1: OIDCLogin ns/l: spec.hosts[1]: host "A.example.com" is also spec.hosts[0]`, false},
		{"relative redirect", base + "  redirectPath: callback\n",
			`l.yaml:9:17: doc 1: OIDCLogin ns/l: spec.redirectPath: "callback" must be an absolute path`, false},
		{"same paths", base + "  redirectPath: /x\n  logoutPath: /x\n",
			`l.yaml:10:15: doc 1: OIDCLogin ns/l: spec.logoutPath: logoutPath "/x" is also the redirectPath`, false},
		{"bad scope", base + "  scopes: ['a b']\n",
			`l.yaml:9:12: doc 1: OIDCLogin ns/l: spec.scopes[0]: scope "a b"`, false},
		{"bad header", base + "  denyRedirect: [{name: 'a b'}]\n",
			`l.yaml:9:25: doc 1: OIDCLogin ns/l: spec.denyRedirect[0].name: header name "a b" is not a valid HTTP header name`, false},
		{"claim to authorization", base + "  claimToHeaders: [{header: Authorization, claim: sub}]\n",
			`l.yaml:9:29: doc 1: OIDCLogin ns/l: spec.claimToHeaders[0].header: header "Authorization" carries the request's credentials`, false},
		{"unknown field", base + "  clientSecret: s3cr3t\n",
			`l.yaml:9:3: doc 1: OIDCLogin ns/l: spec.clientSecret: unknown field "clientSecret"`, false},
		{"bad forward", base + "  forwardToken: COOKIE\n",
			`l.yaml:9:17: doc 1: OIDCLogin ns/l: spec.forwardToken: invalid value`, false},
		{"pass through hides callback", base + "  passThroughPaths: [{prefix: /oauth2/}]\n",
			"l.yaml:9:22: doc 1: OIDCLogin ns/l: spec.passThroughPaths[0]: it matches the redirectPath or logoutPath", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			snap := NewStore(testOptions()).Load(map[string][]byte{"l.yaml": []byte(head + c.spec)})
			var all []string
			found := false
			for _, d := range snap.Diagnostics {
				all = append(all, d.Error())
				if (d.Severity == SeverityError) != c.warning && strings.HasPrefix(d.Error(), c.want) {
					found = true
				}
			}
			kept := len(snap.OIDCLogins) == 1
			if !found || kept != c.warning {
				t.Errorf("want %s\n  %s\n(kept: %v); got %d OIDCLogins, diagnostics:\n  %s", map[bool]string{true: "the warning", false: "the error"}[c.warning], c.want, c.warning, len(snap.OIDCLogins), strings.Join(all, "\n  "))
			}
		})
	}
}

// TestOIDCLoginAPIVersion: OIDCLogin is read in security.weft.dev/v1alpha1 only.
func TestOIDCLoginAPIVersion(t *testing.T) {
	doc := "apiVersion: security.istio.io/v1\nkind: OIDCLogin\nmetadata: {name: l}\nspec: {hosts: [a.example.com], issuer: https://idp.example.com, clientId: c, credentialName: cred}\n"
	snap := NewStore(testOptions()).Load(map[string][]byte{"l.yaml": []byte(doc)})
	want := `l.yaml:1:13: doc 1: OIDCLogin default/l: apiVersion: unsupported apiVersion "security.istio.io/v1" for OIDCLogin (want security.weft.dev/v1alpha1)`
	if len(snap.Diagnostics) != 1 || snap.Diagnostics[0].Error() != want {
		t.Fatalf("diagnostics = %v, want %s", snap.Diagnostics, want)
	}
}
