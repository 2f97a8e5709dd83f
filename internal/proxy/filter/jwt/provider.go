package jwt

import (
	"cmp"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"

	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
)

// defaultClockSkew is Envoy's default clock_skew_seconds.
const defaultClockSkew = 60

// provider is a compiled JwtProvider. Immutable.
type provider struct {
	name      string
	issuer    string // "" accepts any iss
	audiences audiences
	keys      *keySet
	clockSkew uint64

	forward              bool
	forwardPayloadHeader string // canonical key, "" for none
	padPayloadHeader     bool
	payloadInMetadata    string
	headerInMetadata     string
	failedStatusMetadata string
	spaceDelimited       []string
	claimToHeaders       []claimToHeader
	clearRouteCache      bool

	extractor *extractor // this provider's token locations
	sanitize  []string   // canonical keys removed from requests before verifying
}

type claimToHeader struct {
	header string // canonical key
	claim  []string
}

// compileProvider compiles a JwtProvider; keysFor returns the parsed key
// set for a JWKS text (parsing it, or reusing an earlier parse).
func compileProvider(path, name string, p *jwtv3.JwtProvider, keysFor func(string) *keySet) (*provider, error) {
	if p.GetRemoteJwks() != nil {
		return nil, fmt.Errorf("%s.remote_jwks: remote JWKS is not supported; the control plane inlines keys in local_jwks", path)
	}
	if p.GetSubjects() != nil {
		return nil, fmt.Errorf("%s.subjects: not supported", path)
	}
	if p.GetRequireExpiration() {
		return nil, fmt.Errorf("%s.require_expiration: not supported", path)
	}
	if p.GetMaxLifetime() != nil {
		return nil, fmt.Errorf("%s.max_lifetime: not supported", path)
	}
	for i, c := range p.GetClaimToHeaders() {
		if len(c.GetClaimPath()) > 0 {
			return nil, fmt.Errorf("%s.claim_to_headers[%d].claim_path: not supported; use claim_name", path, i)
		}
	}
	text, err := inlineJWKS(path+".local_jwks", p)
	if err != nil {
		return nil, err
	}
	ks := keysFor(text)
	pv := &provider{
		name:                 name,
		issuer:               p.GetIssuer(),
		audiences:            newAudiences(p.GetAudiences()),
		keys:                 ks,
		clockSkew:            defaultClockSkew,
		forward:              p.GetForward(),
		padPayloadHeader:     p.GetPadForwardPayloadHeader(),
		payloadInMetadata:    p.GetPayloadInMetadata(),
		headerInMetadata:     p.GetHeaderInMetadata(),
		failedStatusMetadata: p.GetFailedStatusInMetadata(),
		spaceDelimited:       p.GetNormalizePayloadInMetadata().GetSpaceDelimitedClaims(),
		clearRouteCache:      p.GetClearRouteCache(),
	}
	if s := p.GetClockSkewSeconds(); s > 0 {
		pv.clockSkew = uint64(s)
	}
	if h := p.GetForwardPayloadHeader(); h != "" {
		pv.forwardPayloadHeader = http.CanonicalHeaderKey(h)
		pv.sanitize = append(pv.sanitize, pv.forwardPayloadHeader)
	}
	for _, c := range p.GetClaimToHeaders() {
		h := http.CanonicalHeaderKey(c.GetHeaderName())
		pv.claimToHeaders = append(pv.claimToHeaders, claimToHeader{header: h, claim: strings.Split(c.GetClaimName(), ".")})
		pv.sanitize = append(pv.sanitize, h)
	}
	pv.extractor = newExtractor([]*provider{pv}, map[*provider]*jwtv3.JwtProvider{pv: p})
	return pv, nil
}

func inlineJWKS(path string, p *jwtv3.JwtProvider) (string, error) {
	ds := p.GetLocalJwks()
	if ds == nil {
		return "", fmt.Errorf("%s: a provider needs local_jwks", path)
	}
	switch {
	case ds.GetInlineString() != "":
		return ds.GetInlineString(), nil
	case len(ds.GetInlineBytes()) > 0:
		return string(ds.GetInlineBytes()), nil
	case ds.GetFilename() != "" || ds.GetEnvironmentVariable() != "":
		return "", fmt.Errorf("%s: only inline_string and inline_bytes are supported", path)
	}
	return "", nil // empty: no usable key, every token fails, as in Envoy
}

// audiences is a provider's allowed audiences, compared as Envoy's
// CheckAudience does: an http:// or https:// prefix and one trailing slash
// do not count. Empty allows any audience.
type audiences map[string]struct{}

func newAudiences(list []string) audiences {
	if len(list) == 0 {
		return nil
	}
	a := make(audiences, len(list))
	for _, s := range list {
		a[sanitizeAudience(s)] = struct{}{}
	}
	return a
}

func (a audiences) allowed(jwtAud []string) bool {
	if len(a) == 0 {
		return true
	}
	for _, s := range jwtAud {
		if _, ok := a[sanitizeAudience(s)]; ok {
			return true
		}
	}
	return false
}

func sanitizeAudience(s string) string {
	if s == "" {
		return s
	}
	s, _ = strings.CutPrefix(s, "http://")
	s, _ = strings.CutPrefix(s, "https://")
	s, _ = strings.CutSuffix(s, "/")
	return s
}

// extractor finds tokens in a request for a set of providers, as Envoy's
// ExtractorImpl: header locations in order of name+prefix, then query
// parameters by name, then cookies by name; each location remembers the
// issuers of the providers that use it.
type extractor struct {
	headers []headerLocation
	params  []namedLocation
	cookies []namedLocation
}

type headerLocation struct {
	key     string // canonical header key
	prefix  string
	issuers issuerSet
}

type namedLocation struct {
	name    string
	issuers issuerSet
}

// issuerSet is the set of issuers a location is configured for; a provider
// without an issuer makes it accept any.
type issuerSet struct {
	any   bool
	names []string
}

func (s *issuerSet) add(iss string) {
	if iss == "" {
		s.any = true
		return
	}
	if !slices.Contains(s.names, iss) {
		s.names = append(s.names, iss)
	}
}

func (s *issuerSet) allows(iss string) bool { return s.any || slices.Contains(s.names, iss) }

func newExtractor(ps []*provider, cfgs map[*provider]*jwtv3.JwtProvider) *extractor {
	type hkey struct{ name, prefix string }
	headers := map[hkey]*headerLocation{}
	params := map[string]*namedLocation{}
	cookies := map[string]*namedLocation{}
	addHeader := func(name, prefix, iss string) {
		k := hkey{strings.ToLower(name), prefix}
		h, ok := headers[k]
		if !ok {
			h = &headerLocation{key: http.CanonicalHeaderKey(name), prefix: prefix}
			headers[k] = h
		}
		h.issuers.add(iss)
	}
	addNamed := func(m map[string]*namedLocation, name, iss string) {
		l, ok := m[name]
		if !ok {
			l = &namedLocation{name: name}
			m[name] = l
		}
		l.issuers.add(iss)
	}
	for _, p := range ps {
		cfg := cfgs[p]
		for _, h := range cfg.GetFromHeaders() {
			addHeader(h.GetName(), h.GetValuePrefix(), p.issuer)
		}
		for _, q := range cfg.GetFromParams() {
			addNamed(params, q, p.issuer)
		}
		for _, c := range cfg.GetFromCookies() {
			addNamed(cookies, c, p.issuer)
		}
		if len(cfg.GetFromHeaders()) == 0 && len(cfg.GetFromParams()) == 0 && len(cfg.GetFromCookies()) == 0 {
			addHeader("authorization", "Bearer ", p.issuer)
			addNamed(params, "access_token", p.issuer)
		}
	}
	ex := &extractor{}
	hkeys := make([]hkey, 0, len(headers))
	for k := range headers {
		hkeys = append(hkeys, k)
	}
	slices.SortFunc(hkeys, func(a, b hkey) int { return cmp.Compare(a.name+a.prefix, b.name+b.prefix) })
	for _, k := range hkeys {
		ex.headers = append(ex.headers, *headers[k])
	}
	for _, name := range slices.Sorted(maps.Keys(params)) {
		ex.params = append(ex.params, *params[name])
	}
	for _, name := range slices.Sorted(maps.Keys(cookies)) {
		ex.cookies = append(ex.cookies, *cookies[name])
	}
	return ex
}

// location is one token found in a request.
type location struct {
	token     string
	issuers   *issuerSet
	headerKey string // set for a header location: removed unless forward
}

// jwtChars are the characters of a compact JWT: base64url and ".".
func isJWTChar(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.'
}

// extractAfter returns the run of JWT characters that starts at the first
// JWT character at or after from, or value itself when there is none (as
// Envoy's ExtractorImpl::extractJWT).
func extractAfter(value string, from int) string {
	start := from
	for start < len(value) && !isJWTChar(value[start]) {
		start++
	}
	if start == len(value) {
		return value
	}
	end := start
	for end < len(value) && isJWTChar(value[end]) {
		end++
	}
	return value[start:end]
}

func (ex *extractor) extract(r *Request) []location {
	var out []location
	for i := range ex.headers {
		h := &ex.headers[i]
		vals := r.Header[h.key]
		if len(vals) == 0 {
			continue
		}
		v := vals[0]
		if len(vals) > 1 {
			v = strings.Join(vals, ",")
		}
		if h.prefix != "" {
			pos := strings.Index(v, h.prefix)
			if pos < 0 {
				continue
			}
			v = extractAfter(v, pos+len(h.prefix))
		}
		out = append(out, location{token: v, issuers: &h.issuers, headerKey: h.key})
	}
	if len(ex.params) > 0 && r.Path != "" {
		query := r.Path
		if i := strings.IndexByte(query, '?'); i >= 0 {
			query = query[i+1:]
		} else {
			query = ""
		}
		if i := strings.IndexByte(query, '#'); i >= 0 {
			query = query[:i]
		}
		for i := range ex.params {
			if v, ok := queryParam(query, ex.params[i].name); ok {
				out = append(out, location{token: v, issuers: &ex.params[i].issuers})
			}
		}
	}
	if len(ex.cookies) > 0 {
		for i := range ex.cookies {
			if v, ok := cookie(r.Header, ex.cookies[i].name); ok {
				out = append(out, location{token: v, issuers: &ex.cookies[i].issuers})
			}
		}
	}
	return out
}

// queryParam returns the first value of name in a raw query, both
// percent-decoded (Envoy's parseAndDecodeQueryString keeps the first).
func queryParam(query, name string) (string, bool) {
	for query != "" {
		var kv string
		kv, query, _ = strings.Cut(query, "&")
		k, v, _ := strings.Cut(kv, "=")
		if dk, err := url.QueryUnescape(k); err == nil {
			k = dk
		}
		if k != name {
			continue
		}
		if dv, err := url.QueryUnescape(v); err == nil {
			v = dv
		}
		return v, true
	}
	return "", false
}

// cookie returns the first cookie called name in the Cookie headers, its
// value unquoted, as Envoy's Http::Utility::parseCookies.
func cookie(h http.Header, name string) (string, bool) {
	for _, line := range h["Cookie"] {
		for part := range strings.SplitSeq(line, ";") {
			k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
			if !ok || k != name {
				continue
			}
			if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			return v, true
		}
	}
	return "", false
}
