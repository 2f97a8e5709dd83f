// Package route compiles Envoy RouteConfigurations into immutable route
// tables and decides, for each request, what Envoy's router would: the
// virtual host (by Host/:authority), the first route whose path, headers
// and query match, and that route's actions — the cluster (weighted),
// path and host rewrites, header mutations, redirect or direct response,
// hash policy, and the per-route policies the request path carries out
// (timeout, retries, mirroring, the HTTP filters' per-route configs).
//
// Everything is compiled once, at translation; a Table and its Entries are
// then read concurrently by request goroutines without locks.
package route

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"weft.dev/weft/internal/proxy/matcher"
	"weft.dev/weft/internal/proxy/urlpath"
)

// Table is a translated RouteConfiguration. It is immutable after
// translation and read concurrently by request goroutines without locks.
type Table struct {
	name string
	vhs  []*virtualHost // in configuration order

	exact map[string]*virtualHost // lower-cased domain, port included if configured
	// suffix holds "*.example.com"-style domains (the part after '*'),
	// longest first; prefix holds "api.*"-style domains (the part before '*'),
	// longest first. Envoy prefers the longest wildcard match.
	suffix []wildcardHost
	prefix []wildcardHost
	star   *virtualHost
	// ignorePort: ignore_port_in_host_matching, a Host's port is dropped
	// before the virtual host is looked up (Istio sets it on gateways, so
	// a client that names a port, e.g. a NodePort's, still matches).
	ignorePort bool
}

type wildcardHost struct {
	part string
	vh   *virtualHost
}

type virtualHost struct {
	name   string
	routes []*Entry
	// tlsRedirect, for a virtual host with require_tls, answers the
	// requests that did not come over TLS: 301 to https.
	tlsRedirect *Entry
	// externalOnly: require_tls EXTERNAL_ONLY, which spares requests
	// marked x-envoy-internal.
	externalOnly bool
}

// Entry is one compiled Route: how it matches and what it does. Immutable;
// the exported fields are the per-route policies the request path carries
// out.
type Entry struct {
	// Name is the route's name (may be empty).
	Name string
	// Operation is the route's decorator operation: the name of the
	// spans of requests it serves ("" = none).
	Operation string
	// Timeout is the route's timeout; 0: none.
	Timeout time.Duration
	// Retry is the route's retry policy; nil: no retries.
	Retry *RetryPolicy
	// Mirrors are the route's request mirror policies.
	Mirrors []MirrorPolicy
	// Direct is the route's direct response; nil for other actions.
	Direct *DirectResponse
	// Upgrades is RouteAction.upgrade_configs: per upgrade type (lower
	// case), whether the route enables or disables it, overriding the
	// connection manager's upgrade_configs; nil: no override.
	Upgrades map[string]bool
	// IdleTimeout is RouteAction.idle_timeout, which overrides the
	// connection manager's stream_idle_timeout for the route's streams
	// (0 disables it); nil: not set.
	IdleTimeout *time.Duration

	path    pathMatch
	grpc    bool // RouteMatch.grpc: only gRPC requests
	headers []matcher.Header
	query   []matcher.Query

	// The action: a cluster (exactly one of cluster, clusterHeader and
	// weighted is set), or Direct, or redirect.
	cluster     string
	weighted    []weightedCluster
	weightTotal uint32

	// routeactions (rewrite.go, headers.go, redirect.go)
	mutations        routeHeaders
	clusterMutations bool // some weighted cluster has header mutations or a host rewrite

	// *entryRare holds what few routes set; read through it, written
	// through rare. A sidecar of a large mesh holds thousands of routes.
	*entryRare
}

// entryRare is the part of an Entry most routes leave unset. Entries
// that set none of it share noRare, which is never written.
type entryRare struct {
	clusterHeader string
	prefixRewrite string
	hostRewrite   string
	regexRewrite  *regexRewrite
	redirect      *redirect
	hash          []hashPolicy // hash.go: RouteAction.hash_policy
	// filterConfigs is typed_per_filter_config, compiled (filters.go).
	filterConfigs []filterConfig
}

// noRare is the entryRare of the entries that set none of it.
var noRare = &entryRare{}

// newEntry is an Entry with nothing rare set.
func newEntry() *Entry { return &Entry{entryRare: noRare} }

// rare returns re's own entryRare, to write to.
func (re *Entry) rare() *entryRare {
	if re.entryRare == noRare {
		re.entryRare = &entryRare{}
	}
	return re.entryRare
}

type weightedCluster struct {
	name string
	// upTo is the cumulative weight: cluster i is chosen for
	// rnd in [upTo[i-1], upTo[i]).
	upTo uint32

	mutations   routeHeaders // headers.go
	hostRewrite string
}

// DirectResponse is a route's direct_response: the proxy answers with
// Status and Body (text/plain, or a gRPC trailers-only response).
type DirectResponse struct {
	Status int
	Body   string
}

// FilterConfigParser compiles a route's typed_per_filter_config entries:
// the config for the HTTP filter named name, or known=false when the proxy
// has no such filter (the entry is then ignored). filter.Registry is one.
type FilterConfigParser interface {
	ParsePerRoute(name string, config *anypb.Any) (cfg any, known bool, err error)
}

// Compile validates and compiles rc. filters compiles the routes' per-filter
// configs; with nil they are ignored. Errors name the virtual host, route
// and field that is wrong.
func Compile(rc *route.RouteConfiguration, filters FilterConfigParser) (*Table, error) {
	rt := &Table{name: rc.GetName(), exact: map[string]*virtualHost{}, ignorePort: rc.GetIgnorePortInHostMatching()}
	seen := map[string]int{}
	retries := retryPolicies{}
	for i, vhc := range rc.GetVirtualHosts() {
		vh := &virtualHost{name: vhc.GetName()}
		switch vhc.GetRequireTls() {
		case route.VirtualHost_NONE:
		case route.VirtualHost_ALL, route.VirtualHost_EXTERNAL_ONLY:
			// Envoy's SslRedirectRoute: 301 to the same host and path
			// over https.
			vh.tlsRedirect = &Entry{Name: "require_tls", entryRare: &entryRare{redirect: &redirect{code: http.StatusMovedPermanently, scheme: "https"}}}
			vh.externalOnly = vhc.GetRequireTls() == route.VirtualHost_EXTERNAL_ONLY
		default:
			return nil, fmt.Errorf("virtual_hosts[%d] (%s): require_tls: unknown %v", i, vh.name, vhc.GetRequireTls())
		}
		rt.vhs = append(rt.vhs, vh)
		for j, rtc := range vhc.GetRoutes() {
			re, err := compileRoute(rtc, filters, retries)
			if err != nil {
				return nil, fmt.Errorf("virtual_hosts[%d] (%s): routes[%d]: %w", i, vh.name, j, err)
			}
			vh.routes = append(vh.routes, re)
		}
		if len(vhc.GetDomains()) == 0 {
			return nil, fmt.Errorf("virtual_hosts[%d] (%s): domains: must not be empty", i, vh.name)
		}
		for k, d := range vhc.GetDomains() {
			d = strings.ToLower(d)
			if prev, dup := seen[d]; dup {
				return nil, fmt.Errorf("virtual_hosts[%d] (%s): domains[%d]: %q already used by virtual_hosts[%d]", i, vh.name, k, d, prev)
			}
			seen[d] = i
			switch {
			case d == "*":
				rt.star = vh
			case strings.HasPrefix(d, "*"):
				rt.suffix = append(rt.suffix, wildcardHost{d[1:], vh})
			case strings.HasSuffix(d, "*"):
				rt.prefix = append(rt.prefix, wildcardHost{d[:len(d)-1], vh})
			case d == "":
				return nil, fmt.Errorf("virtual_hosts[%d] (%s): domains[%d]: empty domain", i, vh.name, k)
			default:
				rt.exact[d] = vh
			}
		}
	}
	byLen := func(w []wildcardHost) {
		sort.SliceStable(w, func(a, b int) bool { return len(w[a].part) > len(w[b].part) })
	}
	byLen(rt.suffix)
	byLen(rt.prefix)
	return rt, nil
}

// compileRoute compiles one route; retries shares retry policies between
// the routes of a table (nil: none shared).
func compileRoute(rc *route.Route, filters FilterConfigParser, retries retryPolicies) (*Entry, error) {
	re := newEntry()
	re.Name, re.Operation = rc.GetName(), rc.GetDecorator().GetOperation()
	fcs, err := compileFilterConfigs(rc.GetTypedPerFilterConfig(), filters)
	if err != nil {
		return nil, err
	}
	if len(fcs) > 0 {
		re.rare().filterConfigs = fcs
	}
	m := rc.GetMatch()
	if m == nil {
		return nil, fmt.Errorf("match: missing")
	}
	if re.path, err = compilePath(m); err != nil {
		return nil, fmt.Errorf("match: %w", err)
	}
	switch {
	case m.GetRuntimeFraction() != nil:
		return nil, fmt.Errorf("match.runtime_fraction: unsupported")
	case len(m.GetCookies()) > 0:
		return nil, fmt.Errorf("match.cookies: unsupported")
	case len(m.GetDynamicMetadata()) > 0:
		return nil, fmt.Errorf("match.dynamic_metadata: unsupported")
	case len(m.GetFilterState()) > 0:
		return nil, fmt.Errorf("match.filter_state: unsupported")
	case m.GetTlsContext() != nil:
		return nil, fmt.Errorf("match.tls_context: unsupported")
	}
	re.grpc = m.GetGrpc() != nil
	for i, h := range m.GetHeaders() {
		hm, err := matcher.CompileHeader(h)
		if err != nil {
			return nil, fmt.Errorf("match.headers[%d] (%s): %w", i, h.GetName(), err)
		}
		re.headers = append(re.headers, hm)
	}
	for i, q := range m.GetQueryParameters() {
		qm, err := matcher.CompileQuery(q)
		if err != nil {
			return nil, fmt.Errorf("match.query_parameters[%d] (%s): %w", i, q.GetName(), err)
		}
		re.query = append(re.query, qm)
	}
	switch a := rc.GetAction().(type) {
	case *route.Route_Route:
		if err := re.compileAction(a.Route, retries); err != nil {
			return nil, fmt.Errorf("route: %w", err)
		}
	case *route.Route_DirectResponse:
		dr := &DirectResponse{Status: int(a.DirectResponse.GetStatus())}
		if dr.Status < 200 || dr.Status > 599 {
			return nil, fmt.Errorf("direct_response.status: %d out of range", dr.Status)
		}
		if b := a.DirectResponse.GetBody(); b != nil {
			if b.GetFilename() != "" || b.GetEnvironmentVariable() != "" {
				return nil, fmt.Errorf("direct_response.body: only inline_string/inline_bytes are supported")
			}
			dr.Body = b.GetInlineString() + string(b.GetInlineBytes())
		}
		re.Direct = dr
	case *route.Route_Redirect:
		if re.rare().redirect, err = compileRedirect(a.Redirect); err != nil {
			return nil, fmt.Errorf("redirect: %w", err)
		}
	case nil:
		return nil, fmt.Errorf("action: missing")
	default:
		return nil, fmt.Errorf("action: unsupported %T", a)
	}
	if err := re.compileRouteActions(rc); err != nil {
		return nil, err
	}
	return re, nil
}

func (re *Entry) compileAction(a *route.RouteAction, retries retryPolicies) error {
	switch cs := a.GetClusterSpecifier().(type) {
	case *route.RouteAction_Cluster:
		if cs.Cluster == "" {
			return fmt.Errorf("cluster: empty")
		}
		re.cluster = cs.Cluster
	case *route.RouteAction_ClusterHeader:
		re.rare().clusterHeader = http.CanonicalHeaderKey(cs.ClusterHeader)
	case *route.RouteAction_WeightedClusters:
		var total uint64 // summed wider than the uint32 weights, so a sum past 2^32-1 is seen, not wrapped
		for i, c := range cs.WeightedClusters.GetClusters() {
			if c.GetName() == "" {
				return fmt.Errorf("weighted_clusters.clusters[%d].name: empty", i)
			}
			if c.GetClusterHeader() != "" {
				return fmt.Errorf("weighted_clusters.clusters[%d].cluster_header: unsupported", i)
			}
			w := c.GetWeight().GetValue()
			if w == 0 {
				continue
			}
			if total += uint64(w); total > math.MaxUint32 {
				return fmt.Errorf("weighted_clusters.clusters[%d].weight: the weights add up to more than %d", i, uint32(math.MaxUint32))
			}
			re.weightTotal = uint32(total)
			wc, err := compileClusterWeightActions(c)
			if err != nil {
				return fmt.Errorf("weighted_clusters.clusters[%d]: %w", i, err)
			}
			wc.name, wc.upTo = c.GetName(), re.weightTotal
			re.clusterMutations = re.clusterMutations || wc.mutations != (routeHeaders{}) || wc.hostRewrite != ""
			re.weighted = append(re.weighted, wc)
		}
		if re.weightTotal == 0 {
			return fmt.Errorf("weighted_clusters: total weight is 0")
		}
	case nil:
		return fmt.Errorf("cluster_specifier: missing")
	default:
		return fmt.Errorf("cluster_specifier: unsupported %T", cs)
	}
	if a.GetPathRewritePolicy() != nil {
		return fmt.Errorf("path_rewrite_policy: unsupported")
	}
	if err := re.compileRewrite(a); err != nil {
		return err
	}
	switch h := a.GetHostRewriteSpecifier().(type) {
	case *route.RouteAction_HostRewriteLiteral:
		if h.HostRewriteLiteral != "" {
			re.rare().hostRewrite = h.HostRewriteLiteral
		}
	case nil:
	default:
		return fmt.Errorf("host_rewrite_specifier: unsupported %T", h)
	}
	if hp, herr := compileHashPolicies(a.GetHashPolicy()); herr != nil {
		return herr
	} else if len(hp) > 0 {
		re.rare().hash = hp
	}
	if t := a.GetTimeout(); t != nil {
		if err := t.CheckValid(); err != nil {
			return fmt.Errorf("timeout: %w", err)
		}
		re.Timeout = t.AsDuration()
	}
	if t := a.GetIdleTimeout(); t != nil {
		if err := t.CheckValid(); err != nil || t.AsDuration() < 0 {
			return fmt.Errorf("idle_timeout: invalid duration")
		}
		d := t.AsDuration()
		re.IdleTimeout = &d
	}
	for i, u := range a.GetUpgradeConfigs() {
		typ := strings.ToLower(u.GetUpgradeType())
		switch {
		case typ == "":
			return fmt.Errorf("upgrade_configs[%d].upgrade_type: empty", i)
		case u.GetConnectConfig() != nil:
			return fmt.Errorf("upgrade_configs[%d].connect_config: unsupported (CONNECT is not proxied)", i)
		}
		if re.Upgrades == nil {
			re.Upgrades = map[string]bool{}
		}
		re.Upgrades[typ] = u.GetEnabled() == nil || u.GetEnabled().GetValue()
	}
	var err error
	if re.Retry, err = retries.compile(a.GetRetryPolicy()); err != nil {
		return fmt.Errorf("retry_policy: %w", err)
	}
	if re.Mirrors, err = compileMirrorPolicies(a.GetRequestMirrorPolicies()); err != nil {
		return err
	}
	return nil
}

// virtualHost selects the virtual host for a Host/:authority value, as Envoy
// does: exact domain, then the longest suffix wildcard, then the longest
// prefix wildcard, then "*". host must already be lower case.
func (t *Table) virtualHost(host string) *virtualHost {
	if vh, ok := t.exact[host]; ok {
		return vh
	}
	for i := range t.suffix {
		w := &t.suffix[i]
		if len(host) > len(w.part) && strings.HasSuffix(host, w.part) {
			return w.vh
		}
	}
	for i := range t.prefix {
		w := &t.prefix[i]
		if len(host) > len(w.part) && strings.HasPrefix(host, w.part) {
			return w.vh
		}
	}
	return t.star
}

// hostWithoutPort drops the port of a Host value, as Envoy's
// HeaderUtility::getPortStart finds it: after the last ':', outside an
// IPv6 literal's brackets, and numeric; anything else is kept whole.
func hostWithoutPort(host string) string {
	i := strings.LastIndexByte(host, ':')
	if i < 0 || strings.LastIndexByte(host, ']') > i {
		return host
	}
	if _, err := strconv.ParseUint(host[i+1:], 10, 32); err != nil {
		return host
	}
	return host[:i]
}

// Route returns the route a request takes, as Envoy's router decides: the
// virtual host by Host/:authority, then the first route whose path,
// headers and query match; nil when there is none (404 NR). Lock-free;
// called on the request goroutine.
func (t *Table) Route(r *http.Request) *Entry {
	host := r.Host
	if t.ignorePort {
		host = hostWithoutPort(host)
	}
	vh := t.virtualHost(strings.ToLower(host))
	if vh == nil {
		return nil
	}
	if vh.tlsRedirect != nil && r.TLS == nil && !(vh.externalOnly && r.Header.Get("x-envoy-internal") == "true") {
		return vh.tlsRedirect
	}
	return vh.match(r)
}

func (vh *virtualHost) match(r *http.Request) *Entry {
	path := urlpath.Escaped(r.URL)
	var query url.Values
	for _, re := range vh.routes {
		if !re.path.match(path, r.URL.RawQuery) {
			continue
		}
		if re.grpc && !IsGRPC(r) {
			continue
		}
		ok := true
		for i := range re.headers {
			if !re.headers[i].Match(r) {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		if len(re.query) > 0 {
			if query == nil {
				query = r.URL.Query()
			}
			for i := range re.query {
				if !re.query[i].Match(query) {
					ok = false
					break
				}
			}
			if !ok {
				continue
			}
		}
		return re
	}
	return nil
}

// PickCluster returns the cluster the request goes to. Weighted clusters use
// a fast per-goroutine random source.
func (re *Entry) PickCluster(r *http.Request) string {
	switch {
	case re.cluster != "":
		return re.cluster
	case re.weighted != nil:
		if len(re.weighted) == 1 {
			return re.weighted[0].name
		}
		n := rand.Uint32N(re.weightTotal)
		for i := range re.weighted {
			if n < re.weighted[i].upTo {
				return re.weighted[i].name
			}
		}
	case re.clusterHeader != "":
		return r.Header.Get(re.clusterHeader)
	}
	return ""
}

// IsGRPC reports whether r is a gRPC request (its Content-Type is
// application/grpc…), as RouteMatch.grpc decides.
func IsGRPC(r *http.Request) bool {
	return strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc")
}

// Match reports which route of the configuration compiled into t a
// request takes: the indexes of the virtual host and of the route in it;
// route is -1 when the virtual host has no matching route, and both are
// -1 when no virtual host serves the Host. For operator tools.
func (t *Table) Match(r *http.Request) (vhost, route int) {
	vh := t.virtualHost(strings.ToLower(r.Host))
	if vh == nil {
		return -1, -1
	}
	vhost = -1
	for i, v := range t.vhs {
		if v.name == vh.name { // the first of that name, as the configuration lists them
			vhost = i
			break
		}
	}
	re := vh.match(r)
	for j, e := range vh.routes {
		if e == re {
			return vhost, j
		}
	}
	return vhost, -1
}
