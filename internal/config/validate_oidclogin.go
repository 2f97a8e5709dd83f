package config

import (
	"fmt"
	"net/url"
	"strings"

	weftsec "weft.dev/weft/api/security/v1alpha1"
	"weft.dev/weft/internal/jwks"
)

// Defaults of an OIDCLogin, filled in by the generator.
const (
	DefaultOIDCRedirectPath = "/oauth2/callback"
	DefaultOIDCLogoutPath   = "/oauth2/logout"
)

// validateOIDCLogin checks a security.weft.dev OIDCLogin: hosts as a
// Gateway server's (without namespace), an issuer Weft can discover, a
// client, a credential, paths that are paths and do not collide, and
// header names that are header names.
func validateOIDCLogin(is *issues, l *weftsec.OIDCLogin) {
	validateSelector(is, "spec.selector", l.GetSelector())
	if len(l.GetHosts()) == 0 {
		is.errf("spec.hosts", "at least one host is required: the hosts whose users log in")
	}
	seen := map[string]int{}
	for i, h := range l.GetHosts() {
		path := fmt.Sprintf("spec.hosts[%d]", i)
		if strings.Contains(h, "/") {
			is.errf(path, "host %q: an OIDCLogin host has no namespace prefix (its selector picks the gateways)", h)
			continue
		}
		if _, _, err := parseServerHost(h); err != nil {
			is.errf(path, "%v", err)
			continue
		}
		if j, dup := seen[strings.ToLower(h)]; dup {
			is.errf(path, "host %q is also spec.hosts[%d]", h, j)
		}
		seen[strings.ToLower(h)] = i
	}
	switch iss := l.GetIssuer(); {
	case iss == "":
		is.errf("spec.issuer", "issuer is required: the OpenID provider's issuer URL, where discovery finds its endpoints and keys")
	default:
		checkMaxLen(is, "spec.issuer", "issuer", iss, 2048)
		if err := jwks.CheckURL(iss); err != nil {
			is.errf("spec.issuer", "%v", err)
		} else if u, _ := url.Parse(iss); u.RawQuery != "" || u.Fragment != "" {
			is.errf("spec.issuer", "issuer %q must have no query or fragment (OpenID Connect Discovery 1.0, section 2)", iss)
		}
	}
	if l.GetClientId() == "" {
		is.errf("spec.clientId", "clientId is required: the OAuth client registered with the provider")
	}
	switch c := l.GetCredentialName(); {
	case c == "":
		is.errf("spec.credentialName", "credentialName is required: the gateway credential holding client-secret and hmac-secret")
	case !isSecretName(c):
		is.errf("spec.credentialName", "credentialName %q must be a Secret name (lowercase letters, digits, '-' and '.')", c)
	}
	for i, s := range l.GetScopes() {
		if s == "" || strings.ContainsAny(s, " \t\"\\") {
			is.errf(fmt.Sprintf("spec.scopes[%d]", i), "scope %q: a scope is a non-empty token without spaces, quotes or backslashes", s)
		}
	}
	redirect, logout := or(l.GetRedirectPath(), DefaultOIDCRedirectPath), or(l.GetLogoutPath(), DefaultOIDCLogoutPath)
	checkLoginPath(is, "spec.redirectPath", redirect)
	checkLoginPath(is, "spec.logoutPath", logout)
	if redirect == logout {
		is.errf("spec.logoutPath", "logoutPath %q is also the redirectPath: they must differ", logout)
	}
	if u := l.GetPostLogoutRedirectUri(); u != "" {
		if pu, err := url.Parse(u); err != nil || (pu.Scheme != "https" && pu.Scheme != "http") || pu.Host == "" {
			is.errf("spec.postLogoutRedirectUri", "postLogoutRedirectUri %q is not an absolute http(s) URL", u)
		}
	}
	for i, m := range l.GetPassThroughPaths() {
		path := fmt.Sprintf("spec.passThroughPaths[%d]", i)
		if m.GetMatchType() == nil {
			is.errf(path, "a path match needs exact, prefix or regex")
			continue
		}
		validateStringMatch(is, path, m, false)
		if matchesPath(m, redirect) || matchesPath(m, logout) {
			is.warnf(path, "it matches the redirectPath or logoutPath, which then do not work: login or logout requests pass through to the upstream")
		}
	}
	for i, h := range l.GetDenyRedirect() {
		path := fmt.Sprintf("spec.denyRedirect[%d]", i)
		switch {
		case h.GetName() == "":
			is.errf(path+".name", "a header name is required")
		case !isToken(h.GetName()):
			is.errf(path+".name", "header name %q is not a valid HTTP header name (%s)", h.GetName(), tokenChars)
		}
		if h.GetValue() != nil {
			validateStringMatch(is, path+".value", h.GetValue(), false)
		}
	}
	seenHeader := map[string]int{}
	for i, ch := range l.GetClaimToHeaders() {
		cp := fmt.Sprintf("spec.claimToHeaders[%d]", i)
		switch {
		case ch.GetClaim() == "":
			is.errf(cp+".claim", "claim is required")
		case ch.GetHeader() == "":
			is.errf(cp+".header", "header is required")
		case !headerNameRE.MatchString(ch.GetHeader()):
			is.errf(cp+".header", "header %q: letters, digits, '-' and '_' only", ch.GetHeader())
		case strings.EqualFold(ch.GetHeader(), "authorization") || strings.EqualFold(ch.GetHeader(), "cookie") || strings.EqualFold(ch.GetHeader(), "host"):
			is.errf(cp+".header", "header %q carries the request's credentials or host; pick another name (x-user-email)", ch.GetHeader())
		default:
			if j, dup := seenHeader[strings.ToLower(ch.GetHeader())]; dup {
				is.errf(cp+".header", "header %q is also spec.claimToHeaders[%d]'s", ch.GetHeader(), j)
			}
			seenHeader[strings.ToLower(ch.GetHeader())] = i
		}
	}
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// checkLoginPath checks a path the gateway answers itself.
func checkLoginPath(is *issues, path, p string) {
	if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, "?# \t") || p == "/" {
		is.errf(path, "%q must be an absolute path other than \"/\", without query or fragment", p)
	}
}

// matchesPath reports whether an exact or prefix StringMatch takes path p
// (regexes are not evaluated).
func matchesPath(m interface {
	GetExact() string
	GetPrefix() string
}, p string) bool {
	return (m.GetExact() != "" && m.GetExact() == p) || (m.GetPrefix() != "" && strings.HasPrefix(p, m.GetPrefix()))
}

// isSecretName reports whether s is a Kubernetes object name (a DNS-1123
// subdomain).
func isSecretName(s string) bool {
	if len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if !isDNSLabel(l) {
			return false
		}
	}
	return true
}
