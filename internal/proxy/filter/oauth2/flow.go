package oauth2

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"weft.dev/weft/internal/proxy/filter"
)

// Response flags and bodies of the filter's own answers.
const (
	bodyFlowFailed   = "OAuth flow failed."
	bodyUnauthorized = "Unauthorized: login required"
	bodyNoSecrets    = "OAuth2 login is not available: its secrets are missing"
)

// minHMACKey is the shortest HMAC key accepted: a short key makes
// session cookies guessable offline.
const minHMACKey = 16

// keys are the secrets of one request, read from SDS at its start.
type keys struct {
	hmac         []byte
	clientSecret string
}

// session is what the session cookies hold.
type session struct {
	access, id, refresh string
	expires             time.Time
}

// DecodeHeaders implements filter.Filter.
func (f *loginFilter) DecodeHeaders(s *filter.Stream) filter.Status {
	if _, off := s.PerRoute.(disabled); off {
		return filter.Continue
	}
	r := s.Request
	for i := range f.passThrough {
		if f.passThrough[i].Match(r) {
			f.stripCookies(r) // the session is not the upstream's, here either
			return filter.Continue
		}
	}
	k, ok := f.keys()
	if !ok {
		return s.SendLocalReply(filter.LocalReply{Status: http.StatusServiceUnavailable, Body: bodyNoSecrets})
	}
	secure := s.Connection != nil && s.Connection.TLS != nil
	path := r.URL.Path
	switch {
	case f.signoutPath != nil && f.signoutPath.Match(path):
		return f.signOut(s, secure)
	case f.redirectPath.Match(path):
		return f.callback(s, k, secure)
	}
	now := f.now()
	sess, valid := f.readSession(r, k, now)
	if valid {
		f.forward(r, sess)
		return filter.Continue
	}
	if sess.refresh != "" && f.useRefresh {
		next, err := f.refresh(r.Context(), k, r, secure, sess.refresh)
		if err == nil {
			s.SetMetadata(Name, f.sessionCookies(k, r.Host, next, secure, now))
			f.forward(r, next)
			return filter.Continue
		}
		f.log.Info("OAuth2 refresh failed; the user logs in again", "host", r.Host, "err", err)
	}
	for i := range f.denyRedirect {
		if f.denyRedirect[i].Match(r) {
			return s.SendLocalReply(filter.LocalReply{Status: http.StatusUnauthorized, Body: bodyUnauthorized})
		}
	}
	return f.redirectToLogin(s, k, secure, now)
}

// EncodeHeaders implements filter.Encoder: the cookies of a refreshed
// session go with the upstream's response.
func (f *loginFilter) EncodeHeaders(s *filter.Stream, h http.Header) {
	if cs, ok := s.Metadata(Name).([]string); ok {
		for _, c := range cs {
			h.Add("Set-Cookie", c)
		}
	}
}

func (f *loginFilter) keys() (keys, bool) {
	if f.secrets == nil {
		return keys{}, false
	}
	h := f.secrets.GenericSecret(f.hmacSecret)
	cs := f.secrets.GenericSecret(f.tokenSecret)
	if len(h) == 0 || len(cs) == 0 {
		f.log.Warn("OAuth2 secrets missing", "token_secret", f.tokenSecret, "hmac_secret", f.hmacSecret)
		return keys{}, false
	}
	if len(h) < minHMACKey {
		f.log.Warn("OAuth2 HMAC secret too short to sign sessions", "hmac_secret", f.hmacSecret, "bytes", len(h), "want_at_least", minHMACKey)
		return keys{}, false
	}
	return keys{hmac: h, clientSecret: string(cs)}, true
}

// oauthConfig is the x/oauth2 client of this filter for one request.
func (f *loginFilter) oauthConfig(k keys, r *http.Request, secure bool) *oauth2.Config {
	style := oauth2.AuthStyleInParams
	if f.basicAuth {
		style = oauth2.AuthStyleInHeader
	}
	return &oauth2.Config{
		ClientID:     f.clientID,
		ClientSecret: k.clientSecret,
		Endpoint:     oauth2.Endpoint{AuthURL: f.authEndpoint.String(), TokenURL: f.tokenURL, AuthStyle: style},
		RedirectURL:  f.redirectURL(r, secure),
		Scopes:       f.scopes,
	}
}

// sign is the HMAC-SHA256 of parts, joined by newlines, base64.
func sign(key []byte, parts ...string) string {
	m := hmac.New(sha256.New, key)
	for i, p := range parts {
		if i > 0 {
			m.Write([]byte{'\n'})
		}
		m.Write([]byte(p))
	}
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// sessionMAC signs a session for host: Envoy's OauthHMAC covers the host,
// the expiry and the tokens, so no cookie can be swapped for another's.
func sessionMAC(key []byte, host string, s session) string {
	return sign(key, "session", host, strconv.FormatInt(s.expires.Unix(), 10), s.access, s.id, s.refresh)
}

// readSession reads the session cookies of r. valid means they are all
// there, signed with key for r's host, and not expired; s is what was
// read in any case (its refresh token serves a renewal).
func (f *loginFilter) readSession(r *http.Request, k keys, now time.Time) (s session, valid bool) {
	get := func(name string) string {
		if c, err := r.Cookie(name); err == nil {
			return c.Value
		}
		return ""
	}
	s = session{access: get(f.cookies.bearer), id: get(f.cookies.idToken), refresh: get(f.cookies.refresh)}
	exp, err := strconv.ParseInt(get(f.cookies.expires), 10, 64)
	if err != nil {
		return session{}, false
	}
	s.expires = time.Unix(exp, 0)
	mac := get(f.cookies.hmac)
	if mac == "" || !hmac.Equal([]byte(mac), []byte(sessionMAC(k.hmac, r.Host, s))) {
		return session{}, false // forged or signed with another key: nothing in it is trusted
	}
	return s, now.Before(s.expires)
}

// forward passes the session to the upstream: the token as Authorization
// as configured, the filter's cookies removed.
func (f *loginFilter) forward(r *http.Request, s session) {
	idInAuthz := strings.EqualFold(f.idTokenHeader, "authorization")
	switch {
	case idInAuthz && s.id != "":
		r.Header.Set("Authorization", "Bearer "+s.id)
	case f.forwardBearer && s.access != "":
		r.Header.Set("Authorization", "Bearer "+s.access)
	case !f.preserveAuthz:
		r.Header.Del("Authorization")
	}
	if f.idTokenHeader != "" && !idInAuthz {
		r.Header.Del(f.idTokenHeader)
		if s.id != "" {
			r.Header.Set(f.idTokenHeader, s.id)
		}
	}
	f.stripCookies(r)
}

// stripCookies removes the filter's cookies from the request sent
// upstream: the refresh token is the proxy's business.
func (f *loginFilter) stripCookies(r *http.Request) {
	cs := r.Cookies()
	if len(cs) == 0 {
		return
	}
	ours := map[string]bool{f.cookies.bearer: true, f.cookies.hmac: true, f.cookies.expires: true,
		f.cookies.idToken: true, f.cookies.refresh: true, f.cookies.nonce: true}
	var keep []string
	for _, c := range cs {
		if !ours[c.Name] {
			keep = append(keep, c.Name+"="+c.Value)
		}
	}
	r.Header.Del("Cookie")
	if len(keep) > 0 {
		r.Header.Set("Cookie", strings.Join(keep, "; "))
	}
}

// cookie renders a Set-Cookie value; maxAge < 0 deletes it.
func (f *loginFilter) cookie(name, value string, maxAge int, secure bool) string {
	c := &http.Cookie{Name: name, Value: value, Path: "/", HttpOnly: true, Secure: secure,
		SameSite: http.SameSiteLaxMode, Domain: f.cookieDomain, MaxAge: maxAge}
	return c.String()
}

// sessionCookies are the Set-Cookie values of session s.
func (f *loginFilter) sessionCookies(k keys, host string, s session, secure bool, now time.Time) []string {
	age := int(s.expires.Sub(now).Seconds())
	if s.refresh != "" && f.useRefresh {
		// The signed session must outlive its access token: the browser
		// keeps it as long as the refresh token, and the filter trusts
		// the refresh token only with a valid signature.
		age = int(f.refreshExpires.Seconds())
	}
	cs := []string{
		f.cookie(f.cookies.hmac, sessionMAC(k.hmac, host, s), age, secure),
		f.cookie(f.cookies.expires, strconv.FormatInt(s.expires.Unix(), 10), age, secure),
		f.cookie(f.cookies.bearer, s.access, age, secure),
		f.cookie(f.cookies.idToken, s.id, age, secure),
	}
	if s.refresh != "" {
		cs = append(cs, f.cookie(f.cookies.refresh, s.refresh, int(f.refreshExpires.Seconds()), secure))
	} else {
		cs = append(cs, f.cookie(f.cookies.refresh, "", -1, secure)) // none left from an earlier session
	}
	return cs
}

// state is the authorization request's state parameter, as Envoy's: the
// URL to return to and the CSRF token that must equal the nonce cookie.
type state struct {
	URL       string `json:"url"`
	CSRFToken string `json:"csrf_token"`
}

// newNonce makes a signed CSRF nonce valid until exp:
// "<random>.<exp unix>.<mac>".
func newNonce(key []byte, exp time.Time) (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	v := base64.RawURLEncoding.EncodeToString(b) + "." + strconv.FormatInt(exp.Unix(), 10)
	return v + "." + sign(key, "csrf", v), nil
}

// checkNonce reports whether nonce was made by newNonce with key and has
// not expired.
func checkNonce(key []byte, nonce string, now time.Time) bool {
	i := strings.LastIndexByte(nonce, '.')
	if i < 0 {
		return false
	}
	v, mac := nonce[:i], nonce[i+1:]
	if !hmac.Equal([]byte(mac), []byte(sign(key, "csrf", v))) {
		return false
	}
	j := strings.LastIndexByte(v, '.')
	exp, err := strconv.ParseInt(v[j+1:], 10, 64)
	return err == nil && now.Before(time.Unix(exp, 0))
}

// verifier is the PKCE code verifier of a login: derived from its nonce
// with the HMAC key, so only the proxy can make it and no cookie holds it
// (43 characters, RFC 7636's minimum).
func verifier(key []byte, nonce string) string { return sign(key, "pkce", nonce) }

// redirectToLogin sends the browser to the authorization endpoint.
func (f *loginFilter) redirectToLogin(s *filter.Stream, k keys, secure bool, now time.Time) filter.Status {
	r := s.Request
	nonce, err := newNonce(k.hmac, now.Add(f.csrfExpires))
	if err != nil {
		return s.SendLocalReply(filter.LocalReply{Status: http.StatusInternalServerError, Body: bodyFlowFailed})
	}
	original := scheme(secure) + "://" + r.Host + r.URL.RequestURI()
	st, _ := json.Marshal(state{URL: original, CSRFToken: nonce})
	opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(verifier(k.hmac, nonce))}
	for _, res := range f.resources {
		opts = append(opts, oauth2.SetAuthURLParam("resource", res))
	}
	loc := f.oauthConfig(k, r, secure).AuthCodeURL(base64.RawURLEncoding.EncodeToString(st), opts...)
	h := s.ResponseHeader()
	h.Set("Location", loc)
	h.Add("Set-Cookie", f.cookie(f.cookies.nonce, nonce, int(f.csrfExpires.Seconds()), secure))
	return s.Respond(http.StatusFound)
}

// callback is the redirect path: check the state against the nonce
// cookie, exchange the code, set the session and return to the original
// URL.
func (f *loginFilter) callback(s *filter.Stream, k keys, secure bool) filter.Status {
	r := s.Request
	q := r.URL.Query()
	fail := func(msg string, err error) filter.Status {
		f.log.Info("OAuth2 callback refused", "host", r.Host, "reason", msg, "err", err)
		return s.SendLocalReply(filter.LocalReply{Status: http.StatusUnauthorized, Body: bodyFlowFailed})
	}
	if e := q.Get("error"); e != "" {
		return fail("the provider answered "+e, errors.New(q.Get("error_description")))
	}
	raw, err := base64.RawURLEncoding.DecodeString(q.Get("state"))
	var st state
	if err != nil || json.Unmarshal(raw, &st) != nil {
		return fail("state is not the filter's", err)
	}
	c, err := r.Cookie(f.cookies.nonce)
	now := f.now()
	if err != nil || st.CSRFToken == "" || c.Value != st.CSRFToken || !checkNonce(k.hmac, st.CSRFToken, now) {
		return fail("CSRF token does not match the nonce cookie", err)
	}
	code := q.Get("code")
	if code == "" {
		return fail("no code", nil)
	}
	ctx := context.WithValue(r.Context(), oauth2.HTTPClient, f.client)
	tok, err := f.oauthConfig(k, r, secure).Exchange(ctx, code, oauth2.VerifierOption(verifier(k.hmac, st.CSRFToken)))
	if err != nil {
		return fail("code exchange failed", err)
	}
	sess := f.sessionOf(tok, "", now)
	h := s.ResponseHeader()
	for _, c := range f.sessionCookies(k, r.Host, sess, secure, now) {
		h.Add("Set-Cookie", c)
	}
	h.Add("Set-Cookie", f.cookie(f.cookies.nonce, "", -1, secure))
	h.Set("Location", f.returnURL(st.URL, r.Host))
	return s.Respond(http.StatusFound)
}

// returnURL is where the browser goes after login: the URL it first
// asked for, when that is on this host (or an allowed domain); else "/".
func (f *loginFilter) returnURL(raw, host string) string {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return "/"
	}
	if strings.EqualFold(u.Host, host) {
		return raw
	}
	h := u.Hostname()
	for _, d := range f.allowedRedirect {
		if strings.EqualFold(h, d) || strings.HasSuffix(strings.ToLower(h), "."+strings.ToLower(d)) {
			return raw
		}
	}
	return "/"
}

// sessionOf makes a session of a token response; refresh is the refresh
// token to keep when the response has none.
func (f *loginFilter) sessionOf(tok *oauth2.Token, refresh string, now time.Time) session {
	id, _ := tok.Extra("id_token").(string)
	s := session{access: tok.AccessToken, id: id, refresh: tok.RefreshToken, expires: tok.Expiry}
	if in := expiresIn(tok); in > 0 {
		s.expires = now.Add(in) // on the filter's clock
	}
	if s.refresh == "" {
		s.refresh = refresh
	}
	if s.expires.IsZero() {
		switch {
		case f.defaultExpires > 0:
			s.expires = now.Add(f.defaultExpires)
		case expiryOf(id) != time.Time{}:
			s.expires = expiryOf(id)
		default:
			s.expires = now.Add(time.Hour)
		}
	}
	return s
}

// expiresIn is the token response's expires_in, or 0.
func expiresIn(tok *oauth2.Token) time.Duration {
	if tok.ExpiresIn > 0 {
		return time.Duration(tok.ExpiresIn) * time.Second
	}
	switch v := tok.Extra("expires_in").(type) {
	case float64:
		return time.Duration(v) * time.Second
	case string:
		n, _ := strconv.ParseInt(v, 10, 64)
		return time.Duration(n) * time.Second
	}
	return 0
}

// expiryOf is the exp claim of a JWT, unverified (the token came from
// the token endpoint over the proxy's own connection), or the zero time.
func expiryOf(jwt string) time.Time {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return time.Time{}
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}
	}
	var c struct {
		Exp json.Number `json:"exp"`
	}
	if json.Unmarshal(b, &c) != nil {
		return time.Time{}
	}
	n, err := c.Exp.Int64()
	if err != nil {
		return time.Time{}
	}
	return time.Unix(n, 0)
}

// refresh renews a session with its refresh token.
func (f *loginFilter) refresh(ctx context.Context, k keys, r *http.Request, secure bool, refreshToken string) (session, error) {
	ctx = context.WithValue(ctx, oauth2.HTTPClient, f.client)
	ts := f.oauthConfig(k, r, secure).TokenSource(ctx, &oauth2.Token{RefreshToken: refreshToken, Expiry: time.Unix(1, 0)})
	tok, err := ts.Token()
	if err != nil {
		return session{}, fmt.Errorf("refresh: %w", err)
	}
	s := f.sessionOf(tok, refreshToken, f.now())
	if s.id == "" {
		return session{}, errors.New("refresh: the response has no id_token")
	}
	return s, nil
}

// signOut clears the session and sends the browser to the provider's
// end_session_endpoint (with the ID token as hint) or to "/".
func (f *loginFilter) signOut(s *filter.Stream, secure bool) filter.Status {
	r := s.Request
	h := s.ResponseHeader()
	for _, n := range []string{f.cookies.hmac, f.cookies.expires, f.cookies.bearer, f.cookies.idToken, f.cookies.refresh, f.cookies.nonce} {
		h.Add("Set-Cookie", f.cookie(n, "", -1, secure))
	}
	loc := "/"
	if f.endSession != "" {
		u, _ := url.Parse(f.endSession)
		q := u.Query()
		if c, err := r.Cookie(f.cookies.idToken); err == nil && c.Value != "" {
			q.Set("id_token_hint", c.Value)
		}
		q.Set("client_id", f.clientID)
		if f.postLogout != "" {
			q.Set("post_logout_redirect_uri", f.postLogout)
		}
		u.RawQuery = q.Encode()
		loc = u.String()
	}
	h.Set("Location", loc)
	return s.Respond(http.StatusFound)
}
