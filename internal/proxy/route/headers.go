package route

import (
	"fmt"
	"net/http"
	"strings"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// headerMutation is a compiled set of headers_to_add/headers_to_remove, as
// Envoy's HeaderParser evaluates them: removals first, then additions in
// order. It is immutable and safe for concurrent use.
type headerMutation struct {
	remove []string // canonical keys
	add    []headerAdd
}

type headerAdd struct {
	key       string // canonical
	value     string
	action    core.HeaderValueOption_HeaderAppendAction
	keepEmpty bool
}

// compileHeaderMutation validates one level's header options; nil when
// there is nothing to do. Like Envoy, it refuses to touch pseudo-headers
// and Host, and supports literal values only (%% is a literal %).
func compileHeaderMutation(add []*core.HeaderValueOption, remove []string) (*headerMutation, error) {
	if len(add) == 0 && len(remove) == 0 {
		return nil, nil
	}
	m := &headerMutation{}
	for i, k := range remove {
		if err := checkMutableHeader(k); err != nil {
			return nil, fmt.Errorf("headers_to_remove[%d]: %w", i, err)
		}
		m.remove = append(m.remove, http.CanonicalHeaderKey(k))
	}
	for i, o := range add {
		k := o.GetHeader().GetKey()
		if err := checkMutableHeader(k); err != nil {
			return nil, fmt.Errorf("headers_to_add[%d]: %w", i, err)
		}
		v := o.GetHeader().GetValue()
		if v == "" && len(o.GetHeader().GetRawValue()) > 0 {
			v = string(o.GetHeader().GetRawValue())
		}
		v, err := literalHeaderValue(v)
		if err != nil {
			return nil, fmt.Errorf("headers_to_add[%d] (%s): %w", i, k, err)
		}
		a := headerAdd{key: http.CanonicalHeaderKey(k), value: v, action: o.GetAppendAction(), keepEmpty: o.GetKeepEmptyValue()}
		if ap := o.GetAppend(); ap != nil { //nolint:staticcheck // deprecated, still honoured by Envoy
			if a.action != core.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD {
				return nil, fmt.Errorf("headers_to_add[%d] (%s): append and append_action are mutually exclusive", i, k)
			}
			if !ap.GetValue() {
				a.action = core.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
			}
		}
		switch a.action {
		case core.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD, core.HeaderValueOption_ADD_IF_ABSENT,
			core.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD, core.HeaderValueOption_OVERWRITE_IF_EXISTS:
		default:
			return nil, fmt.Errorf("headers_to_add[%d] (%s): unknown append_action %v", i, k, a.action)
		}
		m.add = append(m.add, a)
	}
	return m, nil
}

func checkMutableHeader(k string) error {
	switch {
	case k == "":
		return fmt.Errorf("empty header name")
	case strings.HasPrefix(k, ":") || strings.EqualFold(k, "host"):
		return fmt.Errorf("%q: pseudo-headers and Host may not be modified", k)
	}
	return nil
}

// literalHeaderValue accepts the values Envoy's header formatter would
// leave unchanged; %% stands for %. Substitution commands (%UPSTREAM_…%)
// are not supported.
func literalHeaderValue(v string) (string, error) {
	if !strings.Contains(v, "%") {
		return v, nil
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] != '%' {
			b.WriteByte(v[i])
			continue
		}
		if i+1 < len(v) && v[i+1] == '%' {
			b.WriteByte('%')
			i++
			continue
		}
		return "", fmt.Errorf("value %q: %%…%% substitution commands are unsupported (write %%%% for %%)", v)
	}
	return b.String(), nil
}

// apply mutates h. The values slices of h may be shared with another
// header map (forwarding copies slices, not strings), so they are
// replaced, never written in place. A nil m does nothing.
func (m *headerMutation) apply(h http.Header) {
	if m == nil {
		return
	}
	for _, k := range m.remove {
		delete(h, k)
	}
	for i := range m.add {
		a := &m.add[i]
		if a.value == "" && !a.keepEmpty {
			continue
		}
		old, exists := h[a.key]
		exists = exists && len(old) > 0
		switch a.action {
		case core.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
			h[a.key] = append(old[:len(old):len(old)], a.value)
		case core.HeaderValueOption_ADD_IF_ABSENT:
			if !exists {
				h[a.key] = []string{a.value}
			}
		case core.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
			h[a.key] = []string{a.value}
		case core.HeaderValueOption_OVERWRITE_IF_EXISTS:
			if exists {
				h[a.key] = []string{a.value}
			}
		}
	}
}

// routeHeaders is the header mutations of one route or weighted cluster.
type routeHeaders struct {
	request, response *headerMutation
}

func compileRouteHeaders(reqAdd []*core.HeaderValueOption, reqRemove []string, respAdd []*core.HeaderValueOption, respRemove []string) (routeHeaders, error) {
	var rh routeHeaders
	var err error
	if rh.request, err = compileHeaderMutation(reqAdd, reqRemove); err != nil {
		return rh, fmt.Errorf("request_%w", err)
	}
	if rh.response, err = compileHeaderMutation(respAdd, respRemove); err != nil {
		return rh, fmt.Errorf("response_%w", err)
	}
	return rh, nil
}

// weightedFor returns the weighted cluster entry named cluster, or nil.
func (re *Entry) weightedFor(cluster string) *weightedCluster {
	for i := range re.weighted {
		if re.weighted[i].name == cluster {
			return &re.weighted[i]
		}
	}
	return nil
}

// ApplyRequestHeaders applies the request header mutations for a request
// routed by re to cluster, in Envoy's order: the weighted cluster's, then
// the route's. Called once per upstream request, on the request goroutine.
func (re *Entry) ApplyRequestHeaders(h http.Header, cluster string) {
	if re.clusterMutations {
		if wc := re.weightedFor(cluster); wc != nil {
			wc.mutations.request.apply(h)
		}
	}
	re.mutations.request.apply(h)
}

// ApplyResponseHeaders applies the response header mutations, in the same
// order as ApplyRequestHeaders. cluster is "" for direct responses and
// redirects.
func (re *Entry) ApplyResponseHeaders(h http.Header, cluster string) {
	if re.clusterMutations && cluster != "" {
		if wc := re.weightedFor(cluster); wc != nil {
			wc.mutations.response.apply(h)
		}
	}
	re.mutations.response.apply(h)
}

// UpstreamHost is the Host/:authority sent upstream: the route's
// host_rewrite_literal, else the weighted cluster's, else the request's.
func (re *Entry) UpstreamHost(r *http.Request, cluster string) string {
	if re.hostRewrite != "" {
		return re.hostRewrite
	}
	if re.clusterMutations {
		if wc := re.weightedFor(cluster); wc != nil && wc.hostRewrite != "" {
			return wc.hostRewrite
		}
	}
	return r.Host
}

// compileRouteActions compiles the route-level header mutations and the
// per-route CORS policy.
func (re *Entry) compileRouteActions(rc *route.Route) error {
	var err error
	if re.mutations, err = compileRouteHeaders(rc.GetRequestHeadersToAdd(), rc.GetRequestHeadersToRemove(),
		rc.GetResponseHeadersToAdd(), rc.GetResponseHeadersToRemove()); err != nil {
		return err
	}
	return nil
}

// compileClusterWeightActions compiles a weighted cluster's header
// mutations and host rewrite; the caller fills in name and weight.
func compileClusterWeightActions(c *route.WeightedCluster_ClusterWeight) (weightedCluster, error) {
	var wc weightedCluster
	var err error
	if wc.mutations, err = compileRouteHeaders(c.GetRequestHeadersToAdd(), c.GetRequestHeadersToRemove(),
		c.GetResponseHeadersToAdd(), c.GetResponseHeadersToRemove()); err != nil {
		return wc, err
	}
	switch h := c.GetHostRewriteSpecifier().(type) {
	case *route.WeightedCluster_ClusterWeight_HostRewriteLiteral:
		wc.hostRewrite = h.HostRewriteLiteral
	case nil:
	default:
		return wc, fmt.Errorf("host_rewrite_specifier: unsupported %T", h)
	}
	return wc, nil
}
