package dataplane

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"weft.dev/weft/internal/proxy/matcher"
)

// routeTable is a translated RouteConfiguration. It is immutable after
// translation and read concurrently by request goroutines without locks.
type routeTable struct {
	name  string
	exact map[string]*virtualHost // lower-cased domain, port included if configured
	// suffix holds "*.example.com"-style domains (the part after '*'),
	// longest first; prefix holds "api.*"-style domains (the part before '*'),
	// longest first. Envoy prefers the longest wildcard match.
	suffix []wildcardHost
	prefix []wildcardHost
	star   *virtualHost
}

type wildcardHost struct {
	part string
	vh   *virtualHost
}

type virtualHost struct {
	name   string
	routes []*routeEntry
}

// routeEntry is one compiled Route.
type routeEntry struct {
	name    string
	path    pathMatch
	grpc    bool // RouteMatch.grpc: only gRPC requests
	headers []matcher.Header
	query   []matcher.Query

	// Exactly one of the following actions is set.
	cluster       string
	clusterHeader string
	weighted      []weightedCluster
	weightTotal   uint32
	direct        *directResponse

	timeout       time.Duration
	retry         *retryPolicy // retry.go; nil: no retries
	prefixRewrite string
	hostRewrite   string

	// routeactions (rewrite.go, headers.go, redirect.go)
	regexRewrite     *regexRewrite
	redirect         *redirect
	mutations        routeHeaders
	clusterMutations bool         // some weighted cluster has header mutations or a host rewrite
	hash             []hashPolicy // hash.go: RouteAction.hash_policy

	mirrors []mirrorPolicy // mirror.go: RouteAction.request_mirror_policies

	// filterConfigs is typed_per_filter_config, compiled (filters.go).
	filterConfigs []filterConfig
}

type weightedCluster struct {
	name string
	// upTo is the cumulative weight: cluster i is chosen for
	// rnd in [upTo[i-1], upTo[i]).
	upTo uint32

	mutations   routeHeaders // headers.go
	hostRewrite string
}

type directResponse struct {
	status int
	body   string
}

func compileRouteTable(rc *route.RouteConfiguration) (*routeTable, error) {
	rt := &routeTable{name: rc.GetName(), exact: map[string]*virtualHost{}}
	seen := map[string]int{}
	for i, vhc := range rc.GetVirtualHosts() {
		vh := &virtualHost{name: vhc.GetName()}
		for j, rtc := range vhc.GetRoutes() {
			re, err := compileRoute(rtc)
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

func compileRoute(rc *route.Route) (*routeEntry, error) {
	re := &routeEntry{name: rc.GetName()}
	var err error
	if re.filterConfigs, err = compileFilterConfigs(rc.GetTypedPerFilterConfig()); err != nil {
		return nil, err
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
		if err := re.compileAction(a.Route); err != nil {
			return nil, fmt.Errorf("route: %w", err)
		}
	case *route.Route_DirectResponse:
		dr := &directResponse{status: int(a.DirectResponse.GetStatus())}
		if dr.status < 200 || dr.status > 599 {
			return nil, fmt.Errorf("direct_response.status: %d out of range", dr.status)
		}
		if b := a.DirectResponse.GetBody(); b != nil {
			if b.GetFilename() != "" || b.GetEnvironmentVariable() != "" {
				return nil, fmt.Errorf("direct_response.body: only inline_string/inline_bytes are supported")
			}
			dr.body = b.GetInlineString() + string(b.GetInlineBytes())
		}
		re.direct = dr
	case *route.Route_Redirect:
		if re.redirect, err = compileRedirect(a.Redirect); err != nil {
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

func (re *routeEntry) compileAction(a *route.RouteAction) error {
	switch cs := a.GetClusterSpecifier().(type) {
	case *route.RouteAction_Cluster:
		if cs.Cluster == "" {
			return fmt.Errorf("cluster: empty")
		}
		re.cluster = cs.Cluster
	case *route.RouteAction_ClusterHeader:
		re.clusterHeader = http.CanonicalHeaderKey(cs.ClusterHeader)
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
		re.hostRewrite = h.HostRewriteLiteral
	case nil:
	default:
		return fmt.Errorf("host_rewrite_specifier: unsupported %T", h)
	}
	if hp, herr := compileHashPolicies(a.GetHashPolicy()); herr == nil {
		re.hash = hp
	} else {
		return herr
	}
	if t := a.GetTimeout(); t != nil {
		if err := t.CheckValid(); err != nil {
			return fmt.Errorf("timeout: %w", err)
		}
		re.timeout = t.AsDuration()
	}
	var err error
	if re.retry, err = compileRetryPolicy(a.GetRetryPolicy()); err != nil {
		return fmt.Errorf("retry_policy: %w", err)
	}
	if re.mirrors, err = compileMirrorPolicies(a.GetRequestMirrorPolicies()); err != nil {
		return err
	}
	return nil
}

// virtualHost selects the virtual host for a Host/:authority value, as Envoy
// does: exact domain, then the longest suffix wildcard, then the longest
// prefix wildcard, then "*". host must already be lower case.
func (t *routeTable) virtualHost(host string) *virtualHost {
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

// route returns the first matching route of r, or nil.
func (t *routeTable) route(r *http.Request) *routeEntry {
	vh := t.virtualHost(strings.ToLower(r.Host))
	if vh == nil {
		return nil
	}
	return vh.match(r)
}

func (vh *virtualHost) match(r *http.Request) *routeEntry {
	path := r.URL.EscapedPath()
	var query url.Values
	for _, re := range vh.routes {
		if !re.path.match(path, r.URL.RawQuery) {
			continue
		}
		if re.grpc && !isGRPC(r) {
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

// pickCluster returns the cluster the request goes to. Weighted clusters use
// a fast per-goroutine random source.
func (re *routeEntry) pickCluster(r *http.Request) string {
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

func isGRPC(r *http.Request) bool {
	return strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc")
}
