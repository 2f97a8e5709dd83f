package jwt

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"net/http"
	"strconv"
	"strings"

	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
)

// This file holds the requirement tree (Envoy's verifier.cc) and the
// per-token checks (authenticator.cc). The tree is compiled once; one
// verification of one request runs through it with a vctx.

// vctx is the state of verifying one request.
type vctx struct {
	f     *Filter
	req   *Request
	now   uint64
	md    map[string]any
	clear bool
}

func (c *vctx) sanitize(keys []string) {
	for _, k := range keys {
		delete(c.req.Header, k)
	}
}

func (c *vctx) addHeader(key, value string) {
	if c.req.Header == nil {
		c.req.Header = http.Header{}
	}
	c.req.Header[key] = append(c.req.Header[key], value)
}

func (c *vctx) setMetadata(name string, v any) {
	if c.md == nil {
		c.md = map[string]any{}
	}
	c.md[name] = v
}

type verifier interface {
	verify(c *vctx) Status
}

// providerVerifier is provider_name and provider_and_audiences: a token
// for that provider must be present and valid.
type providerVerifier struct {
	p           *provider
	aud         audiences
	audOverride bool
}

func (v *providerVerifier) verify(c *vctx) Status {
	c.sanitize(v.p.sanitize)
	a := authenticator{p: v.p, aud: v.aud, audOverride: v.audOverride}
	return c.authenticate(&a, v.p.extractor.extract(c.req))
}

// anyProviderVerifier is allow_missing and allow_missing_or_failed: tokens
// of every provider are looked for, each verified by the provider of its
// issuer.
type anyProviderVerifier struct {
	allowFailed bool
}

func (v *anyProviderVerifier) verify(c *vctx) Status {
	c.sanitize(c.f.allSanitize)
	a := authenticator{allowFailed: v.allowFailed, allowMissing: true}
	return c.authenticate(&a, c.f.all.extract(c.req))
}

// anyVerifier is requires_any: the first child that succeeds decides;
// otherwise the most telling error, with allow_missing and
// allow_missing_or_failed among the alternatives applied last.
type anyVerifier struct {
	children             []verifier
	allowMissing         bool
	allowMissingOrFailed bool
}

func (v *anyVerifier) verify(c *vctx) Status {
	final := JwtMissed
	for _, child := range v.children {
		st := child.verify(c)
		if st == OK {
			return OK
		}
		// Prefer errors other than JwtMissed and JwtUnknownIssuer, and
		// JwtUnknownIssuer over JwtMissed.
		if (st != JwtMissed && st != JwtUnknownIssuer) || final == JwtMissed {
			final = st
		}
	}
	if v.allowMissingOrFailed || v.allowMissing && final == JwtMissed {
		return OK
	}
	return final
}

// allVerifier is requires_all: every child must succeed; the first
// failure decides.
type allVerifier []verifier

func (v allVerifier) verify(c *vctx) Status {
	for _, child := range v {
		if st := child.verify(c); st != OK {
			return st
		}
	}
	return OK
}

// allowAll is a requirement with nothing set.
type allowAll struct{}

func (allowAll) verify(*vctx) Status { return OK }

func (f *Filter) compileRequirement(path string, r *jwtv3.JwtRequirement) (verifier, error) {
	if r == nil {
		return allowAll{}, nil
	}
	switch t := r.GetRequiresType().(type) {
	case *jwtv3.JwtRequirement_ProviderName:
		p, ok := f.providers[t.ProviderName]
		if !ok {
			return nil, fmt.Errorf("%s.provider_name: required provider [%q] is not configured", path, t.ProviderName)
		}
		return &providerVerifier{p: p}, nil
	case *jwtv3.JwtRequirement_ProviderAndAudiences:
		name := t.ProviderAndAudiences.GetProviderName()
		p, ok := f.providers[name]
		if !ok {
			return nil, fmt.Errorf("%s.provider_and_audiences.provider_name: required provider [%q] is not configured", path, name)
		}
		return &providerVerifier{p: p, aud: newAudiences(t.ProviderAndAudiences.GetAudiences()), audOverride: true}, nil
	case *jwtv3.JwtRequirement_RequiresAny:
		v := &anyVerifier{}
		for i, req := range t.RequiresAny.GetRequirements() {
			switch req.GetRequiresType().(type) {
			case *jwtv3.JwtRequirement_AllowMissingOrFailed:
				v.allowMissingOrFailed = true
			case *jwtv3.JwtRequirement_AllowMissing:
				v.allowMissing = true
			default:
				child, err := f.compileRequirement(fmt.Sprintf("%s.requires_any.requirements[%d]", path, i), req)
				if err != nil {
					return nil, err
				}
				v.children = append(v.children, child)
			}
		}
		if len(v.children) == 0 && (v.allowMissing || v.allowMissingOrFailed) {
			v.children = append(v.children, &anyProviderVerifier{allowFailed: v.allowMissingOrFailed})
		}
		return v, nil
	case *jwtv3.JwtRequirement_RequiresAll:
		var v allVerifier
		for i, req := range t.RequiresAll.GetRequirements() {
			child, err := f.compileRequirement(fmt.Sprintf("%s.requires_all.requirements[%d]", path, i), req)
			if err != nil {
				return nil, err
			}
			v = append(v, child)
		}
		return v, nil
	case *jwtv3.JwtRequirement_AllowMissingOrFailed:
		return &anyProviderVerifier{allowFailed: true}, nil
	case *jwtv3.JwtRequirement_AllowMissing:
		return &anyProviderVerifier{}, nil
	case *jwtv3.JwtRequirement_ExtractOnlyWithoutValidation:
		return nil, fmt.Errorf("%s.extract_only_without_validation: not supported", path)
	case nil:
		return allowAll{}, nil
	default:
		return nil, fmt.Errorf("%s: unsupported requirement %T", path, t)
	}
}

// authenticator verifies the tokens found for one requirement leaf.
type authenticator struct {
	p            *provider // nil: pick the provider by the token's issuer
	aud          audiences
	audOverride  bool
	allowFailed  bool
	allowMissing bool
}

// authenticate verifies tokens last to first, as Envoy does. Unless
// failures are allowed every token must be valid (a request with a good and
// a bad token is refused, so the backend cannot pick the bad one); the
// status of the last token tried is the result.
func (c *vctx) authenticate(a *authenticator, tokens []location) Status {
	st := JwtMissed
	if len(tokens) == 0 {
		// Envoy has not picked the provider's data yet at this point, so
		// only a config with a single provider records the miss.
		c.recordFailure(nil, st)
	}
	for len(tokens) > 0 {
		loc := tokens[len(tokens)-1]
		tokens = tokens[:len(tokens)-1]
		var p *provider
		p, st = c.verifyToken(a, &loc)
		if st != OK {
			c.recordFailure(p, st)
			if !a.allowFailed && !a.allowMissing {
				break
			}
		}
	}
	switch {
	case a.allowFailed:
		return OK
	case a.allowMissing && st == JwtMissed:
		return OK
	}
	return st
}

func (c *vctx) recordFailure(p *provider, st Status) {
	if p == nil {
		p = c.f.single
	}
	if p == nil || p.failedStatusMetadata == "" {
		return
	}
	c.setMetadata(p.failedStatusMetadata, map[string]any{"code": float64(st), "message": st.String()})
}

// verifyToken checks one token in Envoy's order: parse, issuer, time,
// audience, keys, signature. It returns the provider that judged it.
func (c *vctx) verifyToken(a *authenticator, loc *location) (*provider, Status) {
	p := a.p
	var (
		t      *token
		cached bool
		st     Status
	)
	if p != nil {
		t, cached = p.keys.lookup(loc.token)
	}
	if !cached {
		if t, st = parseToken(loc.token); st != OK {
			return p, st
		}
	}
	if !loc.issuers.allows(t.iss) {
		return p, JwtUnknownIssuer
	}
	if p == nil {
		if p = c.f.providerForIssuer(t.iss); p == nil {
			return nil, JwtUnknownIssuer
		}
	}
	if st := t.checkTime(c.now, p.clockSkew); st != OK {
		return p, st
	}
	aud := p.audiences
	if a.audOverride {
		aud = a.aud
	}
	if !aud.allowed(t.aud) {
		return p, JwtAudienceNotAllowed
	}
	if !cached {
		if p.keys.status != OK {
			return p, JwksNoValidKeys
		}
		if st := t.verify(p.keys.keys); st != OK {
			return p, st
		}
		if p.payloadInMetadata != "" {
			t.norm, t.normFor = normalizePayload(t.payload, p.spaceDelimited), p.spaceDelimited
		}
		p.keys.remember(loc.token, t)
	}
	c.accept(p, t, loc)
	return p, OK
}

// accept applies a valid token's effects: forwarded payload and claim
// headers, removal of the token's header unless forward, metadata.
func (c *vctx) accept(p *provider, t *token, loc *location) {
	if p.forwardPayloadHeader != "" {
		v := t.payloadB64
		if p.padPayloadHeader {
			if n := len(v) % 4; n != 0 {
				v += strings.Repeat("=", 4-n)
			}
		}
		c.addHeader(p.forwardPayloadHeader, v)
	}
	added := false
	for _, ch := range p.claimToHeaders {
		if v, ok := claimHeaderValue(t.payload, ch.claim); ok {
			c.addHeader(ch.header, v)
			added = true
		}
	}
	if added && p.clearRouteCache {
		c.clear = true
	}
	if !p.forward && loc.headerKey != "" {
		delete(c.req.Header, loc.headerKey)
	}
	if p.headerInMetadata != "" {
		var h map[string]any
		if json.Unmarshal(t.headerJSON, &h) == nil {
			c.setMetadata(p.headerInMetadata, h)
		}
	}
	if p.payloadInMetadata != "" {
		c.setMetadata(p.payloadInMetadata, t.metadataPayload(p.spaceDelimited))
	}
}

// normalizePayload turns the listed space-delimited string claims (Istio:
// scope, permission) into lists, as normalize_payload_in_metadata does, so
// RBAC's list matchers see each scope. It copies rather than changes the
// payload.
func normalizePayload(payload map[string]any, claims []string) map[string]any {
	out, copied := payload, false
	for _, name := range claims {
		s, ok := payload[name].(string)
		if !ok {
			continue
		}
		var list []any
		for part := range strings.SplitSeq(s, " ") {
			if part != "" {
				list = append(list, part)
			}
		}
		if len(list) == 0 {
			continue
		}
		if !copied {
			out, copied = maps.Clone(payload), true
		}
		out[name] = list
	}
	return out
}

// claimHeaderValue renders a claim for claim_to_headers as Envoy does:
// strings as they are, integral numbers as integers, other numbers in %f
// form, booleans as true/false, objects and lists as base64 of their JSON.
// A missing, null or empty claim adds nothing.
func claimHeaderValue(payload map[string]any, path []string) (string, bool) {
	var cur any = payload
	for _, k := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return "", false
		}
		if cur, ok = m[k]; !ok {
			return "", false
		}
	}
	var s string
	switch v := cur.(type) {
	case string:
		s = v
	case float64:
		if v >= 0 && v < math.MaxUint64 && v == math.Trunc(v) {
			s = strconv.FormatUint(uint64(v), 10)
		} else {
			s = strconv.FormatFloat(v, 'f', 6, 64)
		}
	case bool:
		s = strconv.FormatBool(v)
	case map[string]any, []any:
		js, err := json.Marshal(v)
		if err != nil {
			return "", false
		}
		s = base64.StdEncoding.EncodeToString(js)
	}
	return s, s != ""
}
