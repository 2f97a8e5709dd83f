package jwt

import (
	"fmt"
	"log/slog"
	"sync"
	"weft.dev/weft/internal/proxy/xdswire"

	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"weft.dev/weft/internal/proxy/filter"
)

// This file is the JWT engine as one of the proxy's HTTP filters
// (internal/proxy/filter): Factory compiles a listener's jwt_authn entry,
// reusing the keys (and the tokens verified with them) of the filters it
// compiled before, and DecodeHeaders verifies the request, passes the
// payload to the filters after it (RBAC) as stream metadata under
// FilterName, and answers a refused request as Envoy does: 401 (403 for a
// disallowed audience) with the reason as body and WWW-Authenticate.
//
// A provider's clear_route_cache is not acted upon: the route is chosen
// before the filters run, and Istio's sidecars neither set it nor route
// inbound requests on headers.

// reuseDepth is how many compiled filters a Factory remembers to take keys
// from: enough for every JWT filter of a proxy's listeners to find its
// previous version after a config push.
const reuseDepth = 32

// Factory makes the JWT authentication HTTP filter. The zero value is
// usable but reuses no keys; NewFactory's reuses the parsed keys of the
// filters it built before when their JWKS is unchanged, so a config push
// neither parses every key again nor forgets the tokens already verified.
// Its methods are called while translating configuration, never per
// request.
type Factory struct {
	// Logger gets the compile warnings (a JWKS without a usable key) and,
	// at debug, refused requests; nil logs nothing.
	Logger *slog.Logger
	recent *recentFilters
}

// NewFactory returns a Factory that reuses keys across compiles and logs
// to logger (nil: nowhere).
func NewFactory(logger *slog.Logger) Factory {
	return Factory{Logger: logger, recent: &recentFilters{}}
}

var _ filter.Factory = Factory{}

// Name implements filter.Factory.
func (Factory) Name() string { return FilterName }

// New implements filter.Factory: config is an
// envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication.
func (fac Factory) New(config *anypb.Any) (filter.Filter, error) {
	if config == nil {
		return nil, fmt.Errorf("typed_config: want envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication")
	}
	var cfg jwtv3.JwtAuthentication
	if err := xdswire.UnmarshalAny(config, &cfg); err != nil {
		return nil, fmt.Errorf("want envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication: %w", err)
	}
	var opts []Option
	if fac.recent != nil {
		opts = append(opts, ReuseKeys(fac.recent.list()...))
	}
	f, err := Compile(&cfg, opts...)
	if err != nil {
		return nil, err
	}
	if fac.recent != nil {
		fac.recent.add(f)
	}
	if fac.Logger != nil {
		for _, w := range f.Warnings() {
			fac.Logger.Warn("JWT authentication: "+w, "filter", FilterName)
		}
	}
	return &httpFilter{f: f, log: fac.Logger}, nil
}

// ParsePerRoute implements filter.Factory. Envoy's per-route JWT config
// (PerRouteConfig: disabled, requirement_name) is not supported: Istio's
// sidecars do not use it, and a route that has it is refused rather than
// authenticated differently from Envoy.
func (Factory) ParsePerRoute(*anypb.Any) (any, error) {
	return nil, fmt.Errorf("per-route JWT configuration (PerRouteConfig) is not supported")
}

// recentFilters are the last filters a Factory compiled, newest first.
type recentFilters struct {
	mu sync.Mutex
	fs []*Filter
}

func (r *recentFilters) list() []*Filter {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*Filter(nil), r.fs...)
}

func (r *recentFilters) add(f *Filter) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fs = append([]*Filter{f}, r.fs...)
	if len(r.fs) > reuseDepth {
		r.fs[reuseDepth] = nil
		r.fs = r.fs[:reuseDepth]
	}
}

// httpFilter is one jwt_authn entry of a listener's http_filters.
// Immutable; shared by every request on the listener.
type httpFilter struct {
	f   *Filter
	log *slog.Logger
}

var _ filter.Filter = (*httpFilter)(nil)

// DecodeHeaders verifies the request's tokens (Filter.Verify), changing
// its headers as the provider says (token removed unless forward, payload
// and claim headers added), and records the verified payload as stream
// metadata under FilterName for the RBAC filters. A refused request is
// answered with Envoy's reply: 401, or 403 when the audience is not
// allowed, the reason as body ("Jwt is expired") and WWW-Authenticate.
func (h *httpFilter) DecodeHeaders(s *filter.Stream) filter.Status {
	r := s.Request
	// Envoy's realm takes its scheme from x-forwarded-proto, which the
	// connection manager always sets (a client sidecar sets it to the
	// app's own scheme; else it is the downstream connection's).
	req := Request{Method: r.Method, Path: s.Path(), Authority: r.Host, Scheme: r.Header.Get("X-Forwarded-Proto"), Header: r.Header}
	if req.Scheme == "" {
		req.Scheme = "http"
		if r.TLS != nil || (s.Connection != nil && s.Connection.TLS != nil) {
			req.Scheme = "https"
		}
	}
	res := h.f.Verify(&req)
	if res.Metadata != nil {
		s.SetMetadata(FilterName, res.Metadata)
	}
	if res.Allowed() {
		return filter.Continue
	}
	if res.WWWAuthenticate != "" {
		s.ResponseHeader()["Www-Authenticate"] = []string{res.WWWAuthenticate}
	}
	if h.log != nil && h.log.Enabled(r.Context(), slog.LevelDebug) {
		h.log.Debug("request refused by JWT authentication", "method", r.Method, "path", req.Path,
			"authority", r.Host, "code", res.Code, "details", res.Details)
	}
	return s.SendLocalReply(filter.LocalReply{Status: res.Code, Body: res.Body})
}
