// Package cors is Envoy's envoy.filters.http.cors as Istio uses it
// (VirtualService http[].corsPolicy): per route, it answers CORS
// preflights itself and adds the CORS response headers to the responses
// of cross-origin requests from allowed origins — upstream responses and
// the proxy's own replies alike. A route without a CORS policy passes
// untouched.
package cors

import (
	"fmt"
	"net/http"
	"weft.dev/weft/internal/proxy/xdswire"

	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"weft.dev/weft/internal/proxy/filter"
	"weft.dev/weft/internal/proxy/matcher"
)

// Name is the filter's name in http_filters and typed_per_filter_config.
const Name = "envoy.filters.http.cors"

// Factory makes the CORS filter.
type Factory struct{}

var _ filter.Factory = Factory{}

// Name implements filter.Factory.
func (Factory) Name() string { return Name }

// New implements filter.Factory. The listener-level config (Cors) has no
// fields that matter here.
func (Factory) New(*anypb.Any) (filter.Filter, error) { return corsFilter{}, nil }

// ParsePerRoute implements filter.Factory: config is a CorsPolicy.
func (Factory) ParsePerRoute(config *anypb.Any) (any, error) { return compile(config) }

// policy is a compiled envoy.extensions.filters.http.cors.v3.CorsPolicy.
// Immutable.
type policy struct {
	origins          []matcher.String
	allowMethods     string
	allowHeaders     string
	exposeHeaders    string
	maxAge           string
	allowCredentials bool
	privateNetwork   bool
	forwardUnmatched bool // forward preflights from origins not allowed
	disabled         bool // filter_enabled is 0%
}

func compile(a *anypb.Any) (*policy, error) {
	var in corsv3.CorsPolicy
	if err := xdswire.UnmarshalAny(a, &in); err != nil {
		return nil, fmt.Errorf("want %T: %w", &in, err)
	}
	c := &policy{
		allowMethods:     in.GetAllowMethods(),
		allowHeaders:     in.GetAllowHeaders(),
		exposeHeaders:    in.GetExposeHeaders(),
		maxAge:           in.GetMaxAge(),
		allowCredentials: in.GetAllowCredentials().GetValue(),
		privateNetwork:   in.GetAllowPrivateNetworkAccess().GetValue(),
		forwardUnmatched: in.GetForwardNotMatchingPreflights() == nil || in.GetForwardNotMatchingPreflights().GetValue(),
		// A fraction between 0 and 100% is treated as 100%: the proxy
		// does not sample runtime fractions.
		disabled: in.GetFilterEnabled() != nil && in.GetFilterEnabled().GetDefaultValue().GetNumerator() == 0,
	}
	for i, m := range in.GetAllowOriginStringMatch() {
		sm, err := matcher.CompileString(m)
		if err != nil {
			return nil, fmt.Errorf("allow_origin_string_match[%d]: %w", i, err)
		}
		c.origins = append(c.origins, sm)
	}
	return c, nil
}

// originAllowed is Envoy's isOriginAllowed: a matcher that accepts "*"
// allows every origin.
func (c *policy) originAllowed(origin string) bool {
	for i := range c.origins {
		if c.origins[i].Match("*") || c.origins[i].Match(origin) {
			return true
		}
	}
	return false
}

type corsFilter struct{}

var (
	_ filter.Filter       = corsFilter{}
	_ filter.Encoder      = corsFilter{}
	_ filter.PerRouteOnly = corsFilter{}
)

// PerRouteOnly implements filter.PerRouteOnly: routes without a CORS policy skip the filter.
func (corsFilter) PerRouteOnly() {}

// DecodeHeaders answers a CORS preflight (OPTIONS with Origin and
// Access-Control-Request-Method) as Envoy's CORS filter does. A preflight
// from an origin that is not allowed is forwarded upstream
// (forward_not_matching_preflights, the default) or answered 200 without
// CORS headers.
func (corsFilter) DecodeHeaders(s *filter.Stream) filter.Status {
	c, _ := s.PerRoute.(*policy)
	r := s.Request
	if c == nil || c.disabled || r.Method != http.MethodOptions {
		return filter.Continue
	}
	origin := r.Header.Get("Origin")
	if origin == "" || r.Header.Get("Access-Control-Request-Method") == "" {
		return filter.Continue
	}
	if !c.originAllowed(origin) {
		if c.forwardUnmatched {
			return filter.Continue
		}
		return s.Respond(http.StatusOK)
	}
	h := s.ResponseHeader()
	h["Access-Control-Allow-Origin"] = []string{origin}
	if c.allowCredentials {
		h["Access-Control-Allow-Credentials"] = []string{"true"}
	}
	// "*" answers with what the preflight asks for, as Envoy does (a
	// browser takes no wildcard from a request with credentials).
	if c.allowMethods == "*" {
		h["Access-Control-Allow-Methods"] = []string{r.Header.Get("Access-Control-Request-Method")}
	} else if c.allowMethods != "" {
		h["Access-Control-Allow-Methods"] = []string{c.allowMethods}
	}
	if c.allowHeaders == "*" {
		if v := r.Header.Get("Access-Control-Request-Headers"); v != "" {
			h["Access-Control-Allow-Headers"] = []string{v}
		}
	} else if c.allowHeaders != "" {
		h["Access-Control-Allow-Headers"] = []string{c.allowHeaders}
	}
	if c.maxAge != "" {
		h["Access-Control-Max-Age"] = []string{c.maxAge}
	}
	if c.exposeHeaders != "" {
		// Harmless on a preflight, and what the Gateway API's
		// conformance tests ask of one.
		h["Access-Control-Expose-Headers"] = []string{c.exposeHeaders}
	}
	if c.privateNetwork && r.Header.Get("Access-Control-Request-Private-Network") == "true" {
		h["Access-Control-Allow-Private-Network"] = []string{"true"}
	}
	return s.Respond(http.StatusOK)
}

// EncodeHeaders adds the CORS response headers to the response of an
// actual (non-preflight) cross-origin request from an allowed origin.
func (corsFilter) EncodeHeaders(s *filter.Stream, h http.Header) {
	c, _ := s.PerRoute.(*policy)
	if c == nil || c.disabled {
		return
	}
	r := s.Request
	origin := r.Header.Get("Origin")
	if origin == "" || !c.originAllowed(origin) {
		return
	}
	h["Access-Control-Allow-Origin"] = []string{origin}
	if c.allowCredentials {
		h["Access-Control-Allow-Credentials"] = []string{"true"}
	}
	if c.exposeHeaders != "" {
		h["Access-Control-Expose-Headers"] = []string{c.exposeHeaders}
	}
}
