// Package extauthz is Envoy's envoy.filters.http.ext_authz: before a
// request goes on, an external authorization service decides it — over
// gRPC (envoy.service.auth.v3.Authorization/Check, an AttributeContext
// in, OK or denied out) or over HTTP (the request's method and path,
// prefixed, and its allowed headers sent without a body; 200 allows,
// anything else is the answer the client gets). Istio's AuthorizationPolicy
// action CUSTOM is this filter, enabled only for the requests an RBAC
// filter's shadow rules matched (filter_enabled_metadata on the RBAC
// filter's dynamic metadata).
//
// On allow, headers the service returns are set on the request (gRPC:
// OkHttpResponse.headers, removed headers_to_remove; HTTP: those
// allowed_upstream_headers match) and on the response
// (response_headers_to_add, allowed_client_headers_on_success). A denial
// is answered with the service's status (gRPC: 403 unless it says), body
// and headers (HTTP: those allowed_client_headers match, all but Host
// when unset), flag UAEX. A service that fails, times out, or (HTTP)
// answers 5xx refuses the request with status_on_error (403), flag UAEX,
// unless failure_mode_allow lets it through.
//
// ConnChecker (network.go) is the network filter
// (envoy.filters.network.ext_authz): a gRPC check of a connection, before
// a TCP chain's tcp_proxy.
//
// The service is called as Envoy's envoy_grpc and http_service do:
// through the proxy's own cluster of that name (filter.Upstream: its
// endpoints, balancer, breakers and mutual TLS). The filter never reads
// the request body (with_request_body is refused).
package extauthz

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"weft.dev/weft/internal/proxy/filter"
	"weft.dev/weft/internal/proxy/filter/grpccall"
	"weft.dev/weft/internal/proxy/xdswire"
	"weft.dev/weft/internal/xds/contract"
)

// Name is the filter's name in http_filters and typed_per_filter_config.
const Name = "envoy.filters.http.ext_authz"

const (
	checkMethod = "/envoy.service.auth.v3.Authorization/Check"
	// defaultTimeout is Envoy's timeout of a call whose config has none.
	defaultTimeout = 200 * time.Millisecond
	// FlagUnauthorized is Envoy's response flag of a request the
	// service denied or could not decide (UAEX).
	FlagUnauthorized = "UAEX"
	maxResponse      = 1 << 20
	// failureModeHeader is added to a request let through by
	// failure_mode_allow when failure_mode_allow_header_add is set.
	failureModeHeader = "X-Envoy-Auth-Failure-Mode-Allowed"
)

// Results counted in Stats.
const (
	resultOK                 = "ok"
	resultDenied             = "denied"
	resultError              = "error"
	resultFailureModeAllowed = "failure_mode_allowed"
)

// Stats count the checks of every ext_authz filter of a proxy.
type Stats struct {
	checks *prometheus.CounterVec
}

// NewStats registers weft_proxy_ext_authz_checks_total{result} with reg:
// checks the service allowed (ok), denied, could not decide (error), and
// errors let through by failure_mode_allow (failure_mode_allowed, also
// counted as error) — Envoy's ext_authz.{ok,denied,error,
// failure_mode_allowed}.
func NewStats(reg prometheus.Registerer) (*Stats, error) {
	s := &Stats{checks: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "weft_proxy_ext_authz_checks_total",
		Help: "External authorization checks (AuthorizationPolicy CUSTOM), by result: ok, denied, error, failure_mode_allowed.",
	}, []string{"result"})}
	if err := reg.Register(s.checks); err != nil {
		return nil, err
	}
	for _, r := range []string{resultOK, resultDenied, resultError, resultFailureModeAllowed} {
		s.checks.WithLabelValues(r)
	}
	return s, nil
}

func (s *Stats) inc(result string) {
	if s != nil {
		s.checks.WithLabelValues(result).Inc()
	}
}

// Factory makes ext_authz filters that count in Stats (nil: nothing).
type Factory struct {
	Stats *Stats
}

var _ filter.Factory = Factory{}

// Name implements filter.Factory.
func (Factory) Name() string { return Name }

// New implements filter.Factory: config is an ExtAuthz. Fields the proxy
// cannot honour are refused rather than ignored.
func (f Factory) New(config *anypb.Any) (filter.Filter, error) {
	if config == nil {
		return nil, fmt.Errorf("typed_config: required (an ExtAuthz with grpc_service or http_service)")
	}
	var in extauthzv3.ExtAuthz
	if err := xdswire.UnmarshalAny(config, &in); err != nil {
		return nil, fmt.Errorf("want ExtAuthz: %w", err)
	}
	switch {
	case in.GetWithRequestBody() != nil:
		return nil, fmt.Errorf("with_request_body: unsupported (the request body is never sent to the service)")
	case in.GetClearRouteCache():
		return nil, fmt.Errorf("clear_route_cache: unsupported (the route is chosen before the filters run)")
	case in.GetFilterEnabled() != nil:
		return nil, fmt.Errorf("filter_enabled: unsupported; use filter_enabled_metadata")
	case in.GetDenyAtDisable() != nil:
		return nil, fmt.Errorf("deny_at_disable: unsupported")
	case in.GetShadowMode():
		return nil, fmt.Errorf("shadow_mode: unsupported")
	case in.GetDisallowedHeaders() != nil:
		return nil, fmt.Errorf("disallowed_headers: unsupported")
	}
	c := &checker{
		failOpen:      in.GetFailureModeAllow(),
		failOpenHdr:   in.GetFailureModeAllowHeaderAdd(),
		errStatus:     http.StatusForbidden,
		stats:         f.Stats,
		timeout:       defaultTimeout,
		sendAllHeader: in.GetAllowedHeaders() == nil,
	}
	var err error
	if c.allowed, err = compileList(in.GetAllowedHeaders(), "allowed_headers"); err != nil {
		return nil, err
	}
	if st := in.GetStatusOnError(); st != nil {
		if c.errStatus = int(st.GetCode()); c.errStatus < 100 || c.errStatus > 599 {
			return nil, fmt.Errorf("status_on_error.code: %d is not an HTTP status", c.errStatus)
		}
	}
	if m := in.GetFilterEnabledMetadata(); m != nil {
		if c.enabled, err = compileMetadataMatcher(m); err != nil {
			return nil, fmt.Errorf("filter_enabled_metadata.%w", err)
		}
	}
	switch svc := in.GetServices().(type) {
	case *extauthzv3.ExtAuthz_GrpcService:
		if in.GetTransportApiVersion() != core.ApiVersion_V3 {
			return nil, fmt.Errorf("transport_api_version: must be V3")
		}
		eg := svc.GrpcService.GetEnvoyGrpc()
		if eg.GetClusterName() == "" {
			return nil, fmt.Errorf("grpc_service.envoy_grpc.cluster_name: required (google_grpc is unsupported)")
		}
		c.grpc, c.cluster = true, eg.GetClusterName()
		c.authority = cmp.Or(eg.GetAuthority(), clusterHost(c.cluster))
		if t := svc.GrpcService.GetTimeout(); t != nil {
			if err := t.CheckValid(); err != nil {
				return nil, fmt.Errorf("grpc_service.timeout: %w", err)
			}
			c.timeout = t.AsDuration()
		}
	case *extauthzv3.ExtAuthz_HttpService:
		hs := svc.HttpService
		uri := hs.GetServerUri()
		c.cluster = uri.GetCluster()
		if c.cluster == "" {
			return nil, fmt.Errorf("http_service.server_uri.cluster: required")
		}
		c.authority = clusterHost(c.cluster)
		if u, err := url.Parse(uri.GetUri()); err == nil && u.Host != "" {
			c.authority = u.Host
		}
		if t := uri.GetTimeout(); t != nil {
			if err := t.CheckValid(); err != nil {
				return nil, fmt.Errorf("http_service.server_uri.timeout: %w", err)
			}
			c.timeout = t.AsDuration()
		}
		if p := hs.GetPathPrefix(); p != "" && !strings.HasPrefix(p, "/") {
			return nil, fmt.Errorf("http_service.path_prefix: %q must start with /", p)
		}
		if hs.GetPathOverride() != "" {
			return nil, fmt.Errorf("http_service.path_override: unsupported")
		}
		if hs.GetRetryPolicy() != nil {
			return nil, fmt.Errorf("http_service.retry_policy: unsupported")
		}
		c.pathPrefix = hs.GetPathPrefix()
		if ar := hs.GetAuthorizationRequest(); ar != nil {
			if ar.GetAllowedHeaders() != nil {
				return nil, fmt.Errorf("http_service.authorization_request.allowed_headers: use allowed_headers")
			}
			for i, h := range ar.GetHeadersToAdd() {
				if h.GetKey() == "" {
					return nil, fmt.Errorf("http_service.authorization_request.headers_to_add[%d].key: required", i)
				}
				c.addHeaders = append(c.addHeaders, [2]string{http.CanonicalHeaderKey(h.GetKey()), h.GetValue()})
			}
		}
		ar := hs.GetAuthorizationResponse()
		if ar.GetDynamicMetadataFromHeaders() != nil {
			return nil, fmt.Errorf("http_service.authorization_response.dynamic_metadata_from_headers: unsupported")
		}
		for _, l := range []struct {
			m    *matcherv3.ListStringMatcher
			dst  *headerList
			name string
		}{
			{ar.GetAllowedUpstreamHeaders(), &c.toUpstream, "allowed_upstream_headers"},
			{ar.GetAllowedUpstreamHeadersToAppend(), &c.appendUpstream, "allowed_upstream_headers_to_append"},
			{ar.GetAllowedClientHeaders(), &c.toClient, "allowed_client_headers"},
			{ar.GetAllowedClientHeadersOnSuccess(), &c.toClientOnOK, "allowed_client_headers_on_success"},
		} {
			if *l.dst, err = compileList(l.m, "http_service.authorization_response."+l.name); err != nil {
				return nil, err
			}
		}
	default:
		return nil, fmt.Errorf("services: grpc_service or http_service required")
	}
	return &httpFilter{c: c}, nil
}

// ParsePerRoute implements filter.Factory: an ExtAuthzPerRoute turns the
// check off on a route (disabled) or gives a gRPC check its
// context_extensions.
func (Factory) ParsePerRoute(config *anypb.Any) (any, error) {
	var in extauthzv3.ExtAuthzPerRoute
	if err := xdswire.UnmarshalAny(config, &in); err != nil {
		return nil, fmt.Errorf("want ExtAuthzPerRoute: %w", err)
	}
	cs := in.GetCheckSettings()
	if cs.GetWithRequestBody() != nil {
		return nil, fmt.Errorf("check_settings.with_request_body: unsupported")
	}
	if cs.GetGrpcService() != nil || cs.GetHttpService() != nil {
		return nil, fmt.Errorf("check_settings: a service per route is unsupported")
	}
	return &perRoute{disabled: in.GetDisabled(), extensions: cs.GetContextExtensions()}, nil
}

// perRoute is a compiled ExtAuthzPerRoute; immutable.
type perRoute struct {
	disabled   bool
	extensions map[string]string
}

// clusterHost is the service host of an Istio-style cluster name, the
// :authority of the call; the name itself otherwise.
func clusterHost(name string) string {
	if _, _, _, host, err := contract.ParseClusterName(name); err == nil && host != "" {
		return host
	}
	return name
}

// checker is a compiled ExtAuthz; immutable.
type checker struct {
	grpc               bool
	cluster, authority string
	timeout            time.Duration
	failOpen           bool
	failOpenHdr        bool
	errStatus          int
	enabled            *metadataMatcher // nil: every request is checked
	allowed            headerList       // client headers sent (besides the defaults)
	sendAllHeader      bool             // allowed_headers unset: gRPC sends every header
	pathPrefix         string
	addHeaders         [][2]string
	toUpstream         headerList
	appendUpstream     headerList
	toClient           headerList
	toClientOnOK       headerList
	stats              *Stats
}

type httpFilter struct{ c *checker }

var _ filter.Filter = (*httpFilter)(nil)

// decision is what the service said.
type decision struct {
	allowed bool
	status  int
	body    string
	// Headers: set on the request (or appended), removed from it, and
	// added to the response (on allow), or sent with the denial.
	setUp, appendUp, respond [][2]string
	removeUp                 []string
}

// errService is a call that reached the service and failed.
var errService = errors.New("authorization service")

// DecodeHeaders asks the service about the request when the filter is
// enabled for it, and acts on the answer. It blocks for the call, at
// most the timeout or until the request's context ends.
func (f *httpFilter) DecodeHeaders(s *filter.Stream) filter.Status {
	c := f.c
	pr, _ := s.PerRoute.(*perRoute)
	if pr != nil && pr.disabled {
		return filter.Continue
	}
	if c.enabled != nil && !c.enabled.matches(s) {
		return filter.Continue
	}
	var d *decision
	var err error
	if c.grpc {
		d, err = c.checkGRPC(s, pr)
	} else {
		d, err = c.checkHTTP(s)
	}
	if err != nil && s.Request.Context().Err() != nil {
		return filter.Stop // the client went away: nobody to answer
	}
	if err != nil {
		c.stats.inc(resultError)
		if c.failOpen {
			c.stats.inc(resultFailureModeAllowed)
			if c.failOpenHdr {
				s.Request.Header.Set(failureModeHeader, "true")
			}
			return filter.Continue
		}
		return s.SendLocalReply(filter.LocalReply{Status: c.errStatus, Flag: FlagUnauthorized})
	}
	h := s.ResponseHeader()
	if !d.allowed {
		c.stats.inc(resultDenied)
		for _, kv := range d.respond {
			h.Add(kv[0], kv[1])
		}
		return s.SendLocalReply(filter.LocalReply{Status: d.status, Body: d.body, Flag: FlagUnauthorized})
	}
	c.stats.inc(resultOK)
	for _, name := range d.removeUp {
		if !pseudoOrHost(name) {
			s.Request.Header.Del(name)
		}
	}
	for _, kv := range d.setUp {
		setRequestHeader(s.Request, kv[0], kv[1], false)
	}
	for _, kv := range d.appendUp {
		setRequestHeader(s.Request, kv[0], kv[1], true)
	}
	for _, kv := range d.respond {
		h.Set(kv[0], kv[1])
	}
	return filter.Continue
}

// pseudoOrHost reports whether a header the service names is one it may
// not remove (Envoy refuses to remove pseudo-headers and Host).
func pseudoOrHost(name string) bool {
	return strings.HasPrefix(name, ":") || strings.EqualFold(name, "host")
}

// setRequestHeader sets (or appends) a header the service returned on
// the request that goes upstream; :authority and Host move the request's
// Host.
func setRequestHeader(r *http.Request, name, value string, add bool) {
	switch strings.ToLower(name) {
	case ":authority", "host":
		r.Host = value
		return
	}
	if strings.HasPrefix(name, ":") {
		return // other pseudo-headers are not the service's to change
	}
	if add {
		r.Header.Add(name, value)
	} else {
		r.Header.Set(name, value)
	}
}

// call sends the HTTP check req to the service's cluster within the
// timeout and returns its response (body read, at most maxResponse bytes).
func (c *checker) call(s *filter.Stream, req *http.Request) (*http.Response, []byte, error) {
	if s.Upstream == nil {
		return nil, nil, fmt.Errorf("no upstream to call cluster %q", c.cluster)
	}
	ctx := s.Request.Context()
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	req = req.WithContext(ctx)
	resp, err := s.Upstream.RoundTrip(ctx, c.cluster, req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse))
	if err != nil {
		return nil, nil, err
	}
	return resp, data, nil
}

// checkHTTP asks an HTTP service: the request's method, the path
// prefix and the request's path, Host, the default and allowed headers,
// no body.
func (c *checker) checkHTTP(s *filter.Stream) (*decision, error) {
	r := s.Request
	hdr := http.Header{"Content-Length": {"0"}}
	for name, vs := range r.Header {
		if name == "Authorization" || c.allowed.matches(name) {
			hdr[name] = vs
		}
	}
	delete(hdr, "Transfer-Encoding")
	hdr["Content-Length"] = []string{"0"}
	for _, kv := range c.addHeaders {
		hdr[kv[0]] = []string{kv[1]}
	}
	path := c.pathPrefix + s.Path()
	u, err := url.ParseRequestURI(path)
	if err != nil {
		return nil, fmt.Errorf("path %q: %w", path, err)
	}
	u.Scheme = "http"
	req := &http.Request{
		Method: r.Method, URL: u, Host: r.Host, Header: hdr,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Body: http.NoBody, ContentLength: 0,
	}
	resp, body, err := c.call(s, req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 500 {
		return nil, fmt.Errorf("%w: HTTP status %d", errService, resp.StatusCode)
	}
	if resp.StatusCode == http.StatusOK {
		d := &decision{allowed: true}
		for name, vs := range resp.Header {
			for _, v := range vs {
				switch {
				case c.toUpstream.matches(name):
					d.setUp = append(d.setUp, [2]string{name, v})
				case c.appendUpstream.matches(name):
					d.appendUp = append(d.appendUp, [2]string{name, v})
				}
				if c.toClientOnOK.matches(name) {
					d.respond = append(d.respond, [2]string{name, v})
				}
			}
		}
		sortPairs(d.setUp, d.appendUp, d.respond)
		return d, nil
	}
	d := &decision{status: resp.StatusCode, body: string(body)}
	for name, vs := range resp.Header {
		if !c.toClient.set {
			switch name {
			case "Host", "Content-Length", "Connection", "Transfer-Encoding", "Keep-Alive", "Upgrade", "Date", "Server":
				continue // the proxy's own, or hop by hop
			}
		} else if !c.toClient.matches(name) && !deniedDefault(name) {
			continue
		}
		for _, v := range vs {
			d.respond = append(d.respond, [2]string{name, v})
		}
	}
	sortPairs(d.respond)
	return d, nil
}

// deniedDefault reports whether a header of a denial goes to the client
// even when allowed_client_headers does not name it: Envoy adds Path,
// Status, Content-Length, WWW-Authenticate and Location.
func deniedDefault(name string) bool {
	switch name {
	case "Www-Authenticate", "Location", "Path", "Status":
		return true
	}
	return false
}

func sortPairs(lists ...[][2]string) {
	for _, l := range lists {
		slices.SortStableFunc(l, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
	}
}

// checkGRPC asks a gRPC service (Authorization/Check) with the request's
// attributes: source and destination addresses and principals, and the
// HTTP request (id, method, path, host, scheme, protocol, headers).
func (c *checker) checkGRPC(s *filter.Stream, pr *perRoute) (*decision, error) {
	var out authv3.CheckResponse
	if err := grpccall.Call(s.Request.Context(), s.Upstream, c.cluster, c.authority, checkMethod, c.timeout, c.checkRequest(s, pr), &out); err != nil {
		return nil, err
	}
	if out.GetStatus().GetCode() == 0 {
		ok := out.GetOkResponse()
		d := &decision{allowed: true, removeUp: ok.GetHeadersToRemove()}
		for _, hv := range ok.GetHeaders() {
			kv := [2]string{hv.GetHeader().GetKey(), hv.GetHeader().GetValue()}
			if appends(hv) {
				d.appendUp = append(d.appendUp, kv)
			} else {
				d.setUp = append(d.setUp, kv)
			}
		}
		for _, hv := range ok.GetResponseHeadersToAdd() {
			d.respond = append(d.respond, [2]string{hv.GetHeader().GetKey(), hv.GetHeader().GetValue()})
		}
		return d, nil
	}
	denied := out.GetDeniedResponse()
	d := &decision{status: http.StatusForbidden, body: denied.GetBody()}
	if st := int(denied.GetStatus().GetCode()); st >= 200 && st <= 599 {
		d.status = st
	}
	for _, hv := range denied.GetHeaders() {
		d.respond = append(d.respond, [2]string{hv.GetHeader().GetKey(), hv.GetHeader().GetValue()})
	}
	return d, nil
}

// appends reports whether an OK response's header is appended to the
// request's rather than replacing it: only when its append field says
// so, which in this message defaults to false (Envoy's ext_authz).
func appends(hv *core.HeaderValueOption) bool { return hv.GetAppend().GetValue() }

// checkRequest is the AttributeContext of the request, as Envoy fills it.
func (c *checker) checkRequest(s *filter.Stream, pr *perRoute) *authv3.CheckRequest {
	r := s.Request
	hdrs := make(map[string]string, len(r.Header)+3)
	for name, vs := range r.Header {
		if c.sendAllHeader || c.allowed.matches(name) {
			hdrs[strings.ToLower(name)] = strings.Join(vs, ",")
		}
	}
	scheme := "http"
	if s.Connection != nil && s.Connection.TLS != nil {
		scheme = "https"
	}
	hdrs[":authority"], hdrs[":method"], hdrs[":path"], hdrs[":scheme"] = r.Host, r.Method, s.Path(), scheme
	size := r.ContentLength
	if size < 0 {
		size = -1
	}
	_, query, _ := strings.Cut(s.Path(), "?")
	httpReq := &authv3.AttributeContext_HttpRequest{
		Id: r.Header.Get("X-Request-Id"), Method: r.Method, Headers: hdrs,
		Path: s.Path(), Host: r.Host, Scheme: scheme, Query: query, Size: size, Protocol: r.Proto,
	}
	ac := &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Time: timestamppb.Now(), Http: httpReq},
	}
	if conn := s.Connection; conn != nil {
		ac.Source = &authv3.AttributeContext_Peer{Address: socketAddress(conn.RemoteAddr)}
		ac.Destination = &authv3.AttributeContext_Peer{Address: socketAddress(conn.LocalAddr)}
		if p := conn.Peer; p != nil {
			ac.Source.Principal = p.Principal
		}
	}
	if pr != nil && len(pr.extensions) > 0 {
		ac.ContextExtensions = pr.extensions
	}
	return &authv3.CheckRequest{Attributes: ac}
}

func socketAddress(ap netip.AddrPort) *core.Address {
	if !ap.IsValid() {
		return nil
	}
	return &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
		Address: ap.Addr().Unmap().String(), PortSpecifier: &core.SocketAddress_PortValue{PortValue: uint32(ap.Port())},
	}}}
}

// headerList is a compiled ListStringMatcher of header names, matched
// case-insensitively as Istio writes them (ignore_case).
type headerList struct {
	set      bool
	matchers []stringMatcher
}

func (l headerList) matches(name string) bool {
	for _, m := range l.matchers {
		if m.matches(name) {
			return true
		}
	}
	return false
}

func compileList(m *matcherv3.ListStringMatcher, field string) (headerList, error) {
	if m == nil {
		return headerList{}, nil
	}
	l := headerList{set: true}
	for i, p := range m.GetPatterns() {
		sm, err := compileString(p)
		if err != nil {
			return headerList{}, fmt.Errorf("%s.patterns[%d]: %w", field, i, err)
		}
		l.matchers = append(l.matchers, sm)
	}
	return l, nil
}

// stringMatcher is a compiled StringMatcher.
type stringMatcher struct {
	exact, prefix, suffix, contains string
	kind                            byte // 'e', 'p', 's', 'c', 'r'
	re                              *regexp.Regexp
	ignoreCase                      bool
}

func compileString(p *matcherv3.StringMatcher) (stringMatcher, error) {
	m := stringMatcher{ignoreCase: p.GetIgnoreCase()}
	norm := func(s string) string {
		if m.ignoreCase {
			return strings.ToLower(s)
		}
		return s
	}
	switch p.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		m.kind, m.exact = 'e', norm(p.GetExact())
	case *matcherv3.StringMatcher_Prefix:
		m.kind, m.prefix = 'p', norm(p.GetPrefix())
	case *matcherv3.StringMatcher_Suffix:
		m.kind, m.suffix = 's', norm(p.GetSuffix())
	case *matcherv3.StringMatcher_Contains:
		m.kind, m.contains = 'c', norm(p.GetContains())
	case *matcherv3.StringMatcher_SafeRegex:
		re, err := regexp.Compile("^(?:" + p.GetSafeRegex().GetRegex() + ")$")
		if err != nil {
			return m, fmt.Errorf("safe_regex: %v", err)
		}
		m.kind, m.re = 'r', re
	default:
		return m, fmt.Errorf("match_pattern: required")
	}
	return m, nil
}

func (m stringMatcher) matches(s string) bool {
	if m.ignoreCase {
		s = strings.ToLower(s)
	}
	switch m.kind {
	case 'e':
		return s == m.exact
	case 'p':
		return strings.HasPrefix(s, m.prefix)
	case 's':
		return strings.HasSuffix(s, m.suffix)
	case 'c':
		return strings.Contains(s, m.contains)
	case 'r':
		return m.re.MatchString(s)
	}
	return false
}

// metadataMatcher is a compiled MetadataMatcher on a string value: the
// value at path under the filter's namespace of the request's dynamic
// metadata.
type metadataMatcher struct {
	filter string
	path   []string
	value  stringMatcher
	invert bool
}

func compileMetadataMatcher(m *matcherv3.MetadataMatcher) (*metadataMatcher, error) {
	out := &metadataMatcher{filter: m.GetFilter(), invert: m.GetInvert()}
	if out.filter == "" {
		return nil, fmt.Errorf("filter: required")
	}
	for i, seg := range m.GetPath() {
		if seg.GetKey() == "" {
			return nil, fmt.Errorf("path[%d].key: required", i)
		}
		out.path = append(out.path, seg.GetKey())
	}
	if len(out.path) == 0 {
		return nil, fmt.Errorf("path: required")
	}
	sm := m.GetValue().GetStringMatch()
	if sm == nil {
		return nil, fmt.Errorf("value: only string_match is supported")
	}
	var err error
	if out.value, err = compileString(sm); err != nil {
		return nil, fmt.Errorf("value.string_match.%w", err)
	}
	return out, nil
}

func (m *metadataMatcher) matches(s *filter.Stream) bool {
	return m.matchesValue(s.Metadata(m.filter))
}

// matchesMetadata matches a connection's dynamic metadata (by filter
// name).
func (m *metadataMatcher) matchesMetadata(md map[string]any) bool {
	return m.matchesValue(md[m.filter])
}

func (m *metadataMatcher) matchesValue(v any) bool {
	for _, k := range m.path {
		mm, ok := v.(map[string]any)
		if !ok {
			v = nil
			break
		}
		v = mm[k]
	}
	str, ok := v.(string)
	return (ok && m.value.matches(str)) != m.invert
}
