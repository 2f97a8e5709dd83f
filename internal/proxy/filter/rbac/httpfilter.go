package rbac

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"reflect"
	"weft.dev/weft/internal/proxy/xdswire"

	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/anypb"

	"weft.dev/weft/internal/proxy/filter"
)

// This file is the RBAC engine as one of the proxy's HTTP filters
// (internal/proxy/filter): Factory builds it from a listener's http_filters
// entry, and DecodeHeaders fills a Request from the stream — the request
// as the connection manager normalized it, the connection's addresses and
// TLS peer, the JWT filter's metadata — evaluates it and answers a denied
// request with Envoy's 403.

// FlagDenied is the response flag of a request an RBAC filter denied.
const FlagDenied = "RBAC"

// jwtFilterName is the metadata namespace of the JWT filter's results
// (package jwt's FilterName), which Istio's request principal and claim
// rules read.
const jwtFilterName = "envoy.filters.http.jwt_authn"

// requestKey is the stream metadata namespace under which the first RBAC
// filter of a chain leaves the Request it built, for the next ones (Istio
// runs up to three: AUDIT, DENY, ALLOW).
const requestKey = FilterName + "/request"

// Factory makes the RBAC HTTP filter. The zero value is usable: it counts
// and logs nothing. Its methods are called while translating
// configuration, never per request.
type Factory struct {
	// Stats counts denials, dry-run denials and audited requests; nil
	// counts nothing.
	Stats *Stats
	// Logger gets audited requests (AUDIT policies, info) and denials
	// (debug); nil logs nothing.
	Logger *slog.Logger
}

var _ filter.Factory = Factory{}

// Name implements filter.Factory.
func (Factory) Name() string { return FilterName }

// New implements filter.Factory: config is an
// envoy.extensions.filters.http.rbac.v3.RBAC.
func (f Factory) New(config *anypb.Any) (filter.Filter, error) {
	if config == nil {
		return nil, fmt.Errorf("typed_config: want envoy.extensions.filters.http.rbac.v3.RBAC")
	}
	var cfg rbachttpv3.RBAC
	if err := xdswire.UnmarshalAny(config, &cfg); err != nil {
		return nil, fmt.Errorf("want envoy.extensions.filters.http.rbac.v3.RBAC: %w", err)
	}
	e, err := Compile(&cfg)
	if err != nil {
		return nil, err
	}
	return &httpFilter{engine: f.compiled(e), log: f.Logger}, nil
}

// ParsePerRoute implements filter.Factory: a route's RBACPerRoute replaces
// the listener's rules on that route, as in Envoy (an RBACPerRoute without
// rbac turns the filter off there).
func (f Factory) ParsePerRoute(config *anypb.Any) (any, error) {
	var cfg rbachttpv3.RBACPerRoute
	if err := xdswire.UnmarshalAny(config, &cfg); err != nil {
		return nil, fmt.Errorf("want envoy.extensions.filters.http.rbac.v3.RBACPerRoute: %w", err)
	}
	e, err := CompilePerRoute(&cfg)
	if err != nil {
		return nil, err
	}
	return f.compiled(e), nil
}

// compiled is an engine and its counters. Immutable.
type compiled struct {
	f *Filter
	// action is the enforced rules' action, for labels and logs.
	action Action
	// Counters by policy name ("" when no policy matched), resolved once
	// here so a request only looks one up.
	denied, logged, shadowDenied map[string]prometheus.Counter
}

func (fac Factory) compiled(f *Filter) *compiled {
	c := &compiled{f: f}
	c.action, _ = f.Enforces()
	if fac.Stats == nil {
		return c
	}
	enforced, shadow := f.PolicyNames()
	if a, ok := f.Enforces(); ok {
		switch a {
		case Log:
			c.logged = fac.Stats.counters(fac.Stats.logged, a, enforced, false)
		case Allow:
			c.denied = fac.Stats.counters(fac.Stats.denied, a, nil, true) // denied = nothing matched
		case Deny:
			c.denied = fac.Stats.counters(fac.Stats.denied, a, enforced, false)
		}
	}
	if f.HasShadow() {
		sa := f.shadow.action
		c.shadowDenied = fac.Stats.counters(fac.Stats.shadowDenied, sa, shadow, sa == Allow)
	}
	return c
}

// Stats are the RBAC filters' counters, registered once per proxy.
type Stats struct {
	denied, shadowDenied, logged *prometheus.CounterVec
}

// NewStats registers the RBAC filters' counters with reg:
//
//   - weft_proxy_rbac_denied_total{action, policy}: requests an RBAC
//     filter refused (403); policy is the DENY policy that matched, or
//     "none" for an ALLOW filter no policy of which matched;
//   - weft_proxy_rbac_shadow_denied_total{action, policy}: requests that
//     dry-run policies (istio.io/dry-run) would have refused;
//   - weft_proxy_rbac_logged_total{action, policy}: requests an AUDIT
//     policy matched (action "LOG").
func NewStats(reg prometheus.Registerer) (*Stats, error) {
	s := &Stats{
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_proxy_rbac_denied_total",
			Help: "Requests refused by an RBAC filter (AuthorizationPolicy), by filter action and matched policy (none: no ALLOW policy matched).",
		}, []string{"action", "policy"}),
		shadowDenied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_proxy_rbac_shadow_denied_total",
			Help: "Requests dry-run AuthorizationPolicies would have refused, by action and matched policy.",
		}, []string{"action", "policy"}),
		logged: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weft_proxy_rbac_logged_total",
			Help: "Requests an AUDIT AuthorizationPolicy matched, by policy.",
		}, []string{"action", "policy"}),
	}
	for _, c := range []prometheus.Collector{s.denied, s.shadowDenied, s.logged} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// counters returns vec's counters for action and each policy, plus the one
// for "no policy matched" (labelled "none") when none is true.
func (s *Stats) counters(vec *prometheus.CounterVec, a Action, policies []string, none bool) map[string]prometheus.Counter {
	m := make(map[string]prometheus.Counter, len(policies)+1)
	for _, p := range policies {
		m[p] = vec.WithLabelValues(a.String(), p)
	}
	if none {
		m[""] = vec.WithLabelValues(a.String(), "none")
	}
	return m
}

func inc(m map[string]prometheus.Counter, policy string) {
	if c := m[policy]; c != nil {
		c.Inc()
	}
}

// httpFilter is one RBAC entry of a listener's http_filters. Immutable;
// shared by every request on the listener.
type httpFilter struct {
	engine *compiled
	log    *slog.Logger
}

var _ filter.Filter = (*httpFilter)(nil)

// DecodeHeaders decides the request as Envoy's RBAC filter: dry-run
// (shadow) rules are evaluated and counted, then the enforced rules allow
// the request or answer it 403 "RBAC: access denied" with response flag
// RBAC. A route's RBACPerRoute replaces the listener's rules.
func (h *httpFilter) DecodeHeaders(s *filter.Stream) filter.Status {
	c := h.engine
	if pr, ok := s.PerRoute.(*compiled); ok {
		c = pr
	}
	if c.f.enforced == nil && c.f.shadow == nil {
		return filter.Continue
	}
	req := requestOf(s)
	d := c.f.Evaluate(req)
	if md := c.f.ShadowMetadata(d); md != nil {
		// As Envoy: the shadow result is dynamic metadata under the
		// filter's name, where Istio's ext_authz filter (CUSTOM) looks
		// for the policy its shadow rules matched.
		mergeMetadata(s, md)
	}
	if c.f.dryRunDenied(d) {
		inc(c.shadowDenied, d.Shadow.Policy)
		if h.log != nil && h.log.Enabled(s.Request.Context(), slog.LevelDebug) {
			h.log.Debug("dry-run RBAC policy would deny the request", append(requestAttrs(req), "shadow_policy", orNone(d.Shadow.Policy))...)
		}
	}
	if d.LogHint == LogYes {
		inc(c.logged, d.Policy)
		if h.log != nil {
			h.log.Info("request audited", append(requestAttrs(req), "policy", d.Policy)...)
		}
	}
	if d.Allowed {
		return filter.Continue
	}
	inc(c.denied, d.Policy)
	if h.log != nil && h.log.Enabled(s.Request.Context(), slog.LevelDebug) {
		h.log.Debug("request denied", append(requestAttrs(req), "action", c.action.String(), "details", d.ResponseDetails())...)
	}
	return s.SendLocalReply(filter.LocalReply{Status: http.StatusForbidden, Body: DeniedBody, Flag: FlagDenied})
}

func orNone(p string) string {
	if p == "" {
		return "none"
	}
	return p
}

// requestAttrs describe a request in log lines.
func requestAttrs(r *Request) []any {
	attrs := []any{"method", r.Method, "path", r.Path, "authority", r.Authority, "source_ip", r.DirectRemoteIP.String()}
	if r.Peer != nil && len(r.Peer.URISANs) > 0 {
		attrs = append(attrs, "source_principal", r.Peer.URISANs[0])
	}
	return attrs
}

// requestOf returns the Request the RBAC filters of s's chain evaluate,
// building it on the first call: one per request, however many RBAC
// filters run. Its Metadata is refreshed from the stream on every call,
// in case a filter between two RBAC filters added some.
func requestOf(s *filter.Stream) *Request {
	req, _ := s.Metadata(requestKey).(*Request)
	if req == nil {
		req = newRequest(s)
		s.SetMetadata(requestKey, req)
	}
	if jm, _ := s.Metadata(jwtFilterName).(map[string]any); jm != nil {
		if req.Metadata == nil || !sameMap(req.Metadata[jwtFilterName], jm) {
			req.Metadata = DynamicMetadata{jwtFilterName: jm}
		}
	}
	return req
}

// sameMap reports whether a and b are the same map (not merely equal).
func sameMap(a, b map[string]any) bool {
	return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
}

// newRequest fills a Request from the stream: the HTTP request (its path
// as normalized by the connection manager), the addresses of its
// connection and, for TLS, the peer's certificate.
func newRequest(s *filter.Stream) *Request {
	r := s.Request
	req := &Request{
		Method:    r.Method,
		Path:      s.Path(),
		Authority: r.Host,
		Scheme:    "http",
		Header:    r.Header,
		RemoteIP:  s.RemoteIP,
	}
	if c := s.Connection; c != nil {
		// The connection the proxy accepted: its addresses, and the TLS
		// state and client certificate the listener verified.
		req.DirectRemoteIP = c.RemoteAddr.Addr().Unmap()
		req.DestinationIP, req.DestinationPort = c.LocalAddr.Addr().Unmap(), uint32(c.LocalAddr.Port())
		if c.TLS != nil {
			req.Scheme = "https"
			req.ServerName = c.TLS.ServerName
		}
		if p := c.Peer; p != nil {
			req.Peer = &Peer{URISANs: p.URISANs, DNSSANs: p.DNSSANs, Subject: p.Subject}
		}
		return req
	}
	// No connection (operator tools, tests): what net/http knows.
	if r.TLS != nil {
		req.Scheme = "https"
		req.ServerName = r.TLS.ServerName
		req.Peer = PeerFromTLS(r.TLS)
	}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		req.DirectRemoteIP = ap.Addr().Unmap()
	}
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if ta, ok := la.(*net.TCPAddr); ok {
			ap := ta.AddrPort()
			req.DestinationIP, req.DestinationPort = ap.Addr().Unmap(), uint32(ap.Port())
		}
	}
	return req
}

// ExtAuthzShadowPrefix is the shadow_rules_stat_prefix of the RBAC filter
// Istio puts before an ext_authz filter (AuthorizationPolicy CUSTOM).
const ExtAuthzShadowPrefix = "istio_ext_authz_"

// dryRunDenied reports whether d's shadow rules would have refused the
// request: dry-run policies, not the shadow rules of CUSTOM, which only
// select what the ext_authz filter after them checks.
func (f *Filter) dryRunDenied(d Decision) bool {
	return d.Shadow.Evaluated && !d.Shadow.Allowed && f.shadowPrefix != ExtAuthzShadowPrefix
}

// mergeMetadata adds md's fields to the RBAC namespace of the request's
// dynamic metadata, as Envoy merges a filter's metadata: a later RBAC
// filter's fields replace an earlier one's of the same key only.
func mergeMetadata(s *filter.Stream, md map[string]any) {
	if old, _ := s.Metadata(FilterName).(map[string]any); len(old) > 0 {
		merged := make(map[string]any, len(old)+len(md))
		for k, v := range old {
			merged[k] = v
		}
		for k, v := range md {
			merged[k] = v
		}
		md = merged
	}
	s.SetMetadata(FilterName, md)
}
