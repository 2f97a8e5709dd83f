package dataplane

import (
	"fmt"
	"net/http"

	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"weft.dev/weft/internal/proxy/matcher"
)

const corsFilterName = "envoy.filters.http.cors"

// corsPolicy is a compiled envoy.extensions.filters.http.cors.v3.CorsPolicy,
// the per-route config of the envoy.filters.http.cors filter. It acts only
// on listeners whose HTTP filters include that filter (listenerConfig.cors).
type corsPolicy struct {
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

// compileCORS reads the route's typed_per_filter_config for the CORS
// filter; nil when there is none.
func compileCORS(tpfc map[string]*anypb.Any) (*corsPolicy, error) {
	a, ok := tpfc[corsFilterName]
	if !ok {
		return nil, nil
	}
	var in corsv3.CorsPolicy
	if err := a.UnmarshalTo(&in); err != nil {
		return nil, fmt.Errorf("typed_per_filter_config[%s]: want %T: %w", corsFilterName, &in, err)
	}
	c := &corsPolicy{
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
			return nil, fmt.Errorf("typed_per_filter_config[%s].allow_origin_string_match[%d]: %w", corsFilterName, i, err)
		}
		c.origins = append(c.origins, sm)
	}
	return c, nil
}

// originAllowed is Envoy's isOriginAllowed: a matcher that accepts "*"
// allows every origin.
func (c *corsPolicy) originAllowed(origin string) bool {
	for i := range c.origins {
		if c.origins[i].Match("*") || c.origins[i].Match(origin) {
			return true
		}
	}
	return false
}

// preflight answers a CORS preflight (OPTIONS with Origin and
// Access-Control-Request-Method) as Envoy's CORS filter does, and reports
// whether it did. A preflight from an origin that is not allowed is
// forwarded upstream (forward_not_matching_preflights, the default) or
// answered 200 without CORS headers. A nil c answers nothing.
func (c *corsPolicy) preflight(w http.ResponseWriter, r *http.Request, q *request) bool {
	if c == nil || c.disabled || r.Method != http.MethodOptions {
		return false
	}
	origin := r.Header.Get("Origin")
	if origin == "" || r.Header.Get("Access-Control-Request-Method") == "" {
		return false
	}
	h := w.Header()
	if !c.originAllowed(origin) {
		if c.forwardUnmatched {
			return false
		}
	} else {
		h["Access-Control-Allow-Origin"] = []string{origin}
		if c.allowCredentials {
			h["Access-Control-Allow-Credentials"] = []string{"true"}
		}
		if c.allowMethods != "" {
			h["Access-Control-Allow-Methods"] = []string{c.allowMethods}
		}
		if c.allowHeaders != "" {
			h["Access-Control-Allow-Headers"] = []string{c.allowHeaders}
		}
		if c.maxAge != "" {
			h["Access-Control-Max-Age"] = []string{c.maxAge}
		}
		if c.privateNetwork && r.Header.Get("Access-Control-Request-Private-Network") == "true" {
			h["Access-Control-Allow-Private-Network"] = []string{"true"}
		}
	}
	q.code = http.StatusOK
	w.WriteHeader(http.StatusOK)
	return true
}

// decorate adds the CORS response headers to the response of an actual
// (non-preflight) cross-origin request from an allowed origin. A nil c
// does nothing.
func (c *corsPolicy) decorate(h http.Header, r *http.Request) {
	if c == nil || c.disabled {
		return
	}
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
