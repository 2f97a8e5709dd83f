// Package jwt is the proxy's engine for Envoy's JWT authentication filter
// (envoy.filters.http.jwt_authn, config
// envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication), which is
// how Istio's RequestAuthentication reaches a sidecar.
//
// Compile turns the filter config into an immutable Filter: providers with
// their inline JWKS parsed once, token locations, and the requirement tree
// of each rule. Verify then does, for one request, what Envoy's filter
// does: find the tokens, verify them (signature with go-jose; issuer,
// audiences, exp and nbf with the clock skew, as Envoy's JWT library),
// change the request headers (token header removed unless forward, payload
// header added) and return the verdict, Envoy's reply for a failure, and
// the dynamic metadata RBAC reads (the payload under payload_in_metadata;
// Istio names that key "payload").
//
// What the package does not implement (remote_jwks, subjects,
// require_expiration, max_lifetime, filter_state_rules,
// extract_only_without_validation, header conditions in rules) is a
// compile error naming the field.
package jwt

import (
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode"

	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
)

// FilterName is the HTTP filter's name, and the dynamic metadata namespace
// under which Verify's Result.Metadata belongs (RBAC's metadata matchers
// read filter_metadata["envoy.filters.http.jwt_authn"]).
const FilterName = "envoy.filters.http.jwt_authn"

// Request is the part of an HTTP request the filter reads and changes.
type Request struct {
	// Method, Path (path and query as received), Authority and Scheme are
	// the pseudo-headers; Path locates rules and query-parameter tokens,
	// and all but Method make the realm of WWW-Authenticate.
	Method    string
	Path      string
	Authority string
	Scheme    string
	// Header holds the request headers (canonical keys, as net/http).
	// Verify changes it in place: it removes the token's header when the
	// provider does not forward it, removes forward_payload_header and
	// claim_to_headers headers a client sent, and adds them from a valid
	// token.
	Header http.Header
}

// Result is the outcome of Verify.
type Result struct {
	// Status is OK when the request may continue.
	Status Status
	// Metadata is the dynamic metadata the filter sets under FilterName
	// (payload_in_metadata, header_in_metadata, failed_status_in_metadata
	// entries); nil when none. Set for rejected requests too, as Envoy.
	// The maps inside may be shared with other requests carrying the same
	// token (verified tokens are cached): read them, never change them.
	Metadata map[string]any
	// ClearRouteCache says a claim_to_headers header was added by a
	// provider with clear_route_cache: the route should be picked again.
	ClearRouteCache bool

	// For a rejected request, Envoy's local reply: Code is 401, or 403 when
	// the token's audience is not allowed; Body is the status message
	// ("Jwt is expired"); WWWAuthenticate is
	// `Bearer realm="<scheme>://<authority><path>"` followed by
	// `, error="invalid_token"` unless the token was missing. Body and
	// WWWAuthenticate are empty under strip_failure_response. Details is
	// the response code details, jwt_authn_access_denied{Jwt_is_expired}.
	Code            int
	Body            string
	WWWAuthenticate string
	Details         string
}

// Allowed reports whether the request may continue.
func (r *Result) Allowed() bool { return r.Status == OK }

// Filter is a compiled JwtAuthentication. It is immutable: Verify may be
// called from any number of goroutines at once, with no locking; each call
// keeps its state on its own stack and in its own Request. A config change
// compiles a new Filter.
type Filter struct {
	providers   map[string]*provider
	ordered     []*provider // by name: the order for issuer lookup
	single      *provider   // the only provider, if there is one
	all         *extractor  // every provider's locations
	allSanitize []string
	rules       []rule

	bypassCORS   bool
	stripFailure bool
	statPrefix   string
	now          func() time.Time
	warnings     []string
	jwks         map[string]*keySet // by JWKS text, reused by the next Compile
}

type rule struct {
	match routeMatch
	v     verifier
}

// Option changes how Compile builds a Filter.
type Option func(*options)

type options struct {
	now  func() time.Time
	prev []*Filter
}

// WithClock makes the Filter read the time from now instead of time.Now
// (tests use it to check exp and nbf).
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// ReuseKeys lets Compile take parsed keys from the Filters it replaces
// when a provider's JWKS text is unchanged, so a config push does not
// parse every key again, and tokens verified before need not be verified
// again (the cache of verified tokens goes with the keys). Filters may be
// nil; the option may be given several times.
func ReuseKeys(prev ...*Filter) Option {
	return func(o *options) { o.prev = append(o.prev, prev...) }
}

// Compile compiles a JWT authentication filter config. Errors name the
// offending field. A JWKS without a usable key is not an error (Envoy
// accepts it too; every token of that provider then fails with "Jwks
// doesn't have any valid public key"); Warnings reports it.
func Compile(cfg *jwtv3.JwtAuthentication, opts ...Option) (*Filter, error) {
	if cfg == nil {
		return nil, fmt.Errorf("missing JwtAuthentication config")
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if cfg.GetFilterStateRules() != nil {
		return nil, fmt.Errorf("filter_state_rules: not supported")
	}
	f := &Filter{
		providers:    map[string]*provider{},
		bypassCORS:   cfg.GetBypassCorsPreflight(),
		stripFailure: cfg.GetStripFailureResponse(),
		statPrefix:   cfg.GetStatPrefix(),
		now:          o.now,
		jwks:         map[string]*keySet{},
	}
	if f.now == nil {
		f.now = time.Now
	}
	keysFor := func(text string) *keySet {
		ks, ok := f.jwks[text]
		for _, p := range o.prev {
			if ok {
				break
			}
			if p != nil {
				ks, ok = p.jwks[text]
			}
		}
		if !ok {
			ks = parseJWKS(text)
		}
		f.jwks[text] = ks
		return ks
	}
	cfgs := map[*provider]*jwtv3.JwtProvider{}
	for _, name := range slices.Sorted(maps.Keys(cfg.GetProviders())) {
		pcfg := cfg.GetProviders()[name]
		path := fmt.Sprintf("providers[%q]", name)
		p, err := compileProvider(path, name, pcfg, keysFor)
		if err != nil {
			return nil, err
		}
		if p.keys.status != OK {
			f.warnings = append(f.warnings, fmt.Sprintf("%s.local_jwks: %s; every token of this provider will fail", path, p.keys.status))
		}
		f.providers[name] = p
		f.ordered = append(f.ordered, p)
		cfgs[p] = pcfg
		f.allSanitize = append(f.allSanitize, p.sanitize...)
	}
	if len(f.ordered) == 1 {
		f.single = f.ordered[0]
	}
	f.all = newExtractor(f.ordered, cfgs)

	requirements := map[string]verifier{}
	for _, name := range slices.Sorted(maps.Keys(cfg.GetRequirementMap())) {
		v, err := f.compileRequirement(fmt.Sprintf("requirement_map[%q]", name), cfg.GetRequirementMap()[name])
		if err != nil {
			return nil, err
		}
		requirements[name] = v
	}
	for i, r := range cfg.GetRules() {
		path := fmt.Sprintf("rules[%d]", i)
		m, err := compileRouteMatch(path+".match", r.GetMatch())
		if err != nil {
			return nil, err
		}
		var v verifier
		switch t := r.GetRequirementType().(type) {
		case *jwtv3.RequirementRule_Requires:
			if v, err = f.compileRequirement(path+".requires", t.Requires); err != nil {
				return nil, err
			}
		case *jwtv3.RequirementRule_RequirementName:
			var ok bool
			if v, ok = requirements[t.RequirementName]; !ok {
				return nil, fmt.Errorf("%s.requirement_name: %q is not in requirement_map", path, t.RequirementName)
			}
		default:
			v = allowAll{}
		}
		f.rules = append(f.rules, rule{match: m, v: v})
	}
	// Envoy's schema rules (provider fields, list sizes, header names...).
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return f, nil
}

// Warnings lists what Compile accepted but will fail every token of, such
// as a JWKS without a usable key. The proxy should log them.
func (f *Filter) Warnings() []string { return f.warnings }

// StatPrefix is the config's stat_prefix, for the caller's counters.
func (f *Filter) StatPrefix() string { return f.statPrefix }

// providerForIssuer picks the provider that verifies a token found in a
// location shared by all providers (allow_missing, allow_missing_or_failed):
// the first, by name, with the token's issuer, else the first without an
// issuer.
func (f *Filter) providerForIssuer(iss string) *provider {
	var anyIss *provider
	for _, p := range f.ordered {
		if p.issuer == iss {
			return p
		}
		if p.issuer == "" && anyIss == nil {
			anyIss = p
		}
	}
	return anyIss
}

// maxRealmPath is how much of the path Envoy puts in the realm.
const maxRealmPath = 256

// Verify authenticates a request as Envoy's jwt_authn filter does. The
// first rule whose match fits the request's path chooses the requirement;
// no rule, or a CORS preflight with bypass_cors_preflight, means no check.
// It may change r.Header (see Request). It is safe to call concurrently
// for different requests.
func (f *Filter) Verify(r *Request) Result {
	if f.bypassCORS && isCORSPreflight(r) {
		return Result{Status: OK}
	}
	var v verifier
	for i := range f.rules {
		if f.rules[i].match.matches(r) {
			v = f.rules[i].v
			break
		}
	}
	if v == nil {
		return Result{Status: OK}
	}
	// Envoy takes the realm from the request as it arrived; verification
	// changes only headers, so reading it afterwards is the same.
	c := vctx{f: f, req: r, now: uint64(max(f.now().Unix(), 0))}
	st := v.verify(&c)
	res := Result{Status: st, Metadata: c.md, ClearRouteCache: c.clear}
	if st == OK {
		return res
	}
	res.Code = http.StatusUnauthorized
	if st == JwtAudienceNotAllowed {
		res.Code = http.StatusForbidden
	}
	res.Details = "jwt_authn_access_denied{" + strings.Map(underscoreSpace, st.String()) + "}"
	if f.stripFailure {
		return res
	}
	path := r.Path
	if len(path) > maxRealmPath {
		path = path[:maxRealmPath]
	}
	res.Body = st.String()
	res.WWWAuthenticate = `Bearer realm="` + r.Scheme + "://" + r.Authority + path + `"`
	if st != JwtMissed {
		res.WWWAuthenticate += `, error="invalid_token"`
	}
	return res
}

func isCORSPreflight(r *Request) bool {
	return r.Method == http.MethodOptions && r.Header.Get("Origin") != "" && r.Header.Get("Access-Control-Request-Method") != ""
}

func underscoreSpace(r rune) rune {
	if unicode.IsSpace(r) {
		return '_'
	}
	return r
}
