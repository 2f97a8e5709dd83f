// Package explain answers "what happens to this request?" for one proxy:
// which VirtualService rule (file:line) a request matches, the
// destinations with their weights, the endpoints behind each with their
// health, and the timeouts, retries and policies that apply. It decides
// the route with the proxy's own router (dataplane.MatchRoute) over the
// very resources the control plane generates for that proxy, so the
// answer is what the proxy does, and maps each generated piece back to the
// config it came from.
package explain

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/guard"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/proxy/dataplane"
	"weft.dev/weft/internal/registry"
	"weft.dev/weft/internal/xds/contract"
	"weft.dev/weft/internal/xds/generate"
)

// Request is the request to explain, as the application sends it to its
// sidecar.
type Request struct {
	// Host is the Host header: "backend", "backend:8080", an FQDN.
	Host string `json:"host"`
	// Path is the path and query; "" means "/".
	Path string `json:"path,omitempty"`
	// Method is the HTTP method; "" means GET.
	Method  string            `json:"method,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
}

// Explanation is what the proxy does with a request.
type Explanation struct {
	Proxy   string  `json:"proxy"`
	Request Request `json:"request"`
	// VirtualHost is the Envoy virtual host that serves the Host, e.g.
	// "backend.default.svc.cluster.local:8080"; "" when none does.
	VirtualHost string `json:"virtualHost,omitempty"`
	// Outcome says in one sentence what happens.
	Outcome string `json:"outcome"`
	Route   *Route `json:"route,omitempty"`
}

// Route is the route a request takes.
type Route struct {
	// Source names the config the route came from: "VirtualService
	// default/backend", or "the default route (no VirtualService routes
	// this host)".
	Source string `json:"source"`
	// Rule is the rule's field path ("spec.http[1]") and name; At its
	// position ("routes.yaml:27:5").
	Rule  string `json:"rule,omitempty"`
	At    string `json:"at,omitempty"`
	Match string `json:"match,omitempty"` // the match that matched, as written
	// Timeout and Retries are what the proxy applies (Istio's defaults
	// included).
	Timeout      string        `json:"timeout"`
	Retries      string        `json:"retries"`
	Policies     []string      `json:"policies,omitempty"` // fault, mirror, rewrite, redirect, headers, CORS
	Destinations []Destination `json:"destinations,omitempty"`
}

// Destination is one weighted destination of a route.
type Destination struct {
	Cluster string  `json:"cluster"`
	Host    string  `json:"host"`
	Subset  string  `json:"subset,omitempty"`
	Port    uint32  `json:"port"`
	Share   float64 `json:"share"` // of the route's requests, 0 to 1
	// SubsetFrom names the DestinationRule that defines the subset and its
	// labels, with its position.
	SubsetFrom string `json:"subsetFrom,omitempty"`
	// Policy summarises the cluster's load balancing, connection pool and
	// outlier detection, and PolicyFrom the DestinationRules it came from.
	Policy     string     `json:"policy"`
	PolicyFrom []string   `json:"policyFrom,omitempty"`
	Endpoints  []Endpoint `json:"endpoints"`
}

// Endpoint is one endpoint of a destination, as the proxy sees it.
type Endpoint struct {
	Address  string `json:"address"`
	Health   string `json:"health"`
	Weight   uint32 `json:"weight,omitempty"`
	Locality string `json:"locality,omitempty"`
	Workload string `json:"workload,omitempty"`
}

// Explain explains req for the proxy with identity id in mesh m.
func Explain(m *mesh.Snapshot, id contract.Identity, req Request) (*Explanation, error) {
	if req.Host == "" {
		return nil, fmt.Errorf("explain: the request's host is required")
	}
	if req.Path == "" {
		req.Path = "/"
	}
	if req.Method == "" {
		req.Method = http.MethodGet
	}
	u, err := url.ParseRequestURI(req.Path)
	if err != nil {
		return nil, fmt.Errorf("explain: path %q: %w", req.Path, err)
	}
	hr := &http.Request{Method: req.Method, Host: req.Host, URL: u, Header: http.Header{}}
	for k, v := range req.Headers {
		hr.Header.Set(k, v)
	}
	out := &Explanation{Proxy: id.ID, Request: req}

	id.VHDS = false // the same routes, in whole route configurations
	res := generate.ForProxy(m, id)
	var rc *route.RouteConfiguration
	for _, r := range res.Routes {
		if c := r.(*route.RouteConfiguration); c.GetName() == contract.RouteHTTPProxy {
			rc = c
		}
	}
	if rc == nil {
		out.Outcome = "the proxy has no outbound listener, so it routes no outbound request"
		return out, nil
	}
	vi, ri, err := dataplane.MatchRoute(rc, hr)
	if err != nil {
		return nil, fmt.Errorf("explain: the generated routes do not compile: %w", err)
	}
	if vi < 0 {
		out.Outcome = fmt.Sprintf("no service answers to Host %q on this proxy: it answers 404 (NR)", req.Host)
		return out, nil
	}
	vh := rc.GetVirtualHosts()[vi]
	out.VirtualHost = vh.GetName()
	if ri < 0 {
		out.Outcome = fmt.Sprintf("no route of %s matches: the proxy answers 404 (NR)", vh.GetName())
		return out, nil
	}
	host, port := splitHostPort(vh.GetName())
	origins := generate.RouteOrigins(m, id, host, port)
	if ri >= len(origins) {
		return nil, fmt.Errorf("explain: route %d of %s has no origin", ri, vh.GetName())
	}
	er := vh.GetRoutes()[ri]
	out.Route = describeRoute(m, m.Subsets.ViewFor(id.Namespace, id.Labels), res, origins[ri], er)
	out.Outcome = outcome(out.Route, er)
	return out, nil
}

func splitHostPort(vh string) (string, uint32) {
	i := strings.LastIndexByte(vh, ':')
	if i < 0 {
		return vh, 0
	}
	p, _ := strconv.ParseUint(vh[i+1:], 10, 32)
	return vh[:i], uint32(p)
}

// describeRoute explains one Envoy route and the rule it came from.
func describeRoute(m *mesh.Snapshot, dv mesh.DRView, res generate.Resources, o generate.RouteOrigin, er *route.Route) *Route {
	r := &Route{Source: "the default route (no VirtualService routes this host)"}
	var rule *networking.HTTPRoute
	if o.VS != nil {
		rule = o.VS.Spec.GetHttp()[o.Rule]
		r.Source = where(o.VS.Meta)
		path := fmt.Sprintf("spec.http[%d]", o.Rule)
		r.Rule = path
		if rule.GetName() != "" {
			r.Rule += fmt.Sprintf(" %q", rule.GetName())
		}
		r.At = at(o.VS.Meta, o.VS.Pos, path)
		if o.Match >= 0 {
			mp := fmt.Sprintf("%s.match[%d]", path, o.Match)
			r.Match = fmt.Sprintf("%s %s (%s)", mp, compact(rule.GetMatch()[o.Match]), at(o.VS.Meta, o.VS.Pos, mp))
		}
	}
	ra := er.GetRoute()
	r.Timeout = "none"
	if t := ra.GetTimeout(); t != nil && t.AsDuration() > 0 {
		r.Timeout = t.AsDuration().String()
	}
	r.Retries = retries(ra.GetRetryPolicy())
	r.Policies = policies(rule)

	switch cs := ra.GetClusterSpecifier().(type) {
	case *route.RouteAction_Cluster:
		r.Destinations = append(r.Destinations, destination(m, dv, res, cs.Cluster, 1))
	case *route.RouteAction_WeightedClusters:
		var total uint32
		for _, c := range cs.WeightedClusters.GetClusters() {
			total += c.GetWeight().GetValue()
		}
		for _, c := range cs.WeightedClusters.GetClusters() {
			share := 0.0
			if total > 0 {
				share = float64(c.GetWeight().GetValue()) / float64(total)
			}
			r.Destinations = append(r.Destinations, destination(m, dv, res, c.GetName(), share))
		}
	}
	return r
}

// outcome sums up what happens to the request.
func outcome(r *Route, er *route.Route) string {
	switch {
	case er.GetRedirect() != nil:
		return "the proxy answers with a redirect"
	case er.GetDirectResponse() != nil:
		return fmt.Sprintf("the proxy answers %d itself", er.GetDirectResponse().GetStatus())
	}
	var parts []string
	for _, d := range r.Destinations {
		healthy := 0
		for _, e := range d.Endpoints {
			if e.Health == "healthy" {
				healthy++
			}
		}
		what := d.Host
		if d.Subset != "" {
			what = "subset " + d.Subset + " of " + d.Host
		}
		state := fmt.Sprintf("%d healthy endpoint(s)", healthy)
		if healthy == 0 {
			state = "NO healthy endpoint: these requests fail with 503 (UH)"
		}
		parts = append(parts, fmt.Sprintf("%s to %s (%s)", guard.Percent(d.Share), what, state))
	}
	if len(parts) == 0 {
		return "the route has no destination"
	}
	return "forwarded: " + strings.Join(parts, "; ")
}

// destination explains one cluster a route of a sidecar sends to, with
// the DestinationRules in force for it (dv).
func destination(m *mesh.Snapshot, dv mesh.DRView, res generate.Resources, name string, share float64) Destination {
	d := Destination{Cluster: name, Share: share, Endpoints: []Endpoint{}}
	_, port, subset, host, err := contract.ParseClusterName(name)
	if err != nil {
		d.Host = name
		return d
	}
	d.Host, d.Port, d.Subset = host, port, subset
	rules := m.Subsets.Rules(dv, host)
	if subset != "" {
		for _, dr := range rules.From {
			for k, s := range dr.Spec.GetSubsets() {
				if s.GetName() == subset {
					d.SubsetFrom = fmt.Sprintf("%s, labels %s (%s)", where(dr.Meta), registry.LabelString(s.GetLabels()),
						at(dr.Meta, dr.Pos, fmt.Sprintf("spec.subsets[%d]", k)))
					break
				}
			}
			if d.SubsetFrom != "" {
				break
			}
		}
	}
	for _, dr := range rules.From {
		if dr.Spec.GetTrafficPolicy() != nil || slices.ContainsFunc(dr.Spec.GetSubsets(), func(s *networking.Subset) bool {
			return s.GetName() == subset && s.GetTrafficPolicy() != nil
		}) {
			d.PolicyFrom = append(d.PolicyFrom, where(dr.Meta))
		}
	}
	for _, c := range res.Clusters {
		if cl := c.(*cluster.Cluster); cl.GetName() == name {
			d.Policy = clusterPolicy(cl)
		}
	}
	for _, e := range res.Endpoints {
		cla := e.(*endpoint.ClusterLoadAssignment)
		if cla.GetClusterName() != name {
			continue
		}
		for _, loc := range cla.GetEndpoints() {
			l := loc.GetLocality()
			locality := strings.Trim(strings.Join([]string{l.GetRegion(), l.GetZone(), l.GetSubZone()}, "/"), "/")
			for _, lb := range loc.GetLbEndpoints() {
				sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
				ep := Endpoint{
					Address:  fmt.Sprintf("%s:%d", sa.GetAddress(), sa.GetPortValue()),
					Health:   health(lb.GetHealthStatus()),
					Weight:   lb.GetLoadBalancingWeight().GetValue(),
					Locality: locality,
				}
				md := lb.GetMetadata().GetFilterMetadata()[contract.FilterMetadataIstio]
				if wl := md.GetFields()[contract.MetaEndpointWorkload].GetStringValue(); wl != "" {
					w, ns, _, _, _ := contract.ParseWorkloadMetadata(wl)
					ep.Workload = ns + "/" + w
				}
				d.Endpoints = append(d.Endpoints, ep)
			}
		}
	}
	slices.SortFunc(d.Endpoints, func(a, b Endpoint) int { return cmp.Compare(a.Address, b.Address) })
	return d
}

func health(h core.HealthStatus) string {
	switch h {
	case core.HealthStatus_UNKNOWN, core.HealthStatus_HEALTHY:
		return "healthy"
	case core.HealthStatus_DEGRADED:
		return "degraded"
	}
	return "unhealthy"
}

// clusterPolicy summarises a cluster's load balancing, connection limits
// and outlier detection.
func clusterPolicy(c *cluster.Cluster) string {
	parts := []string{"load balancing " + c.GetLbPolicy().String()}
	if c.GetLbPolicy() == cluster.Cluster_RING_HASH || c.GetLbPolicy() == cluster.Cluster_MAGLEV {
		parts[0] = "consistent hashing (" + c.GetLbPolicy().String() + ")"
	}
	if t := c.GetConnectTimeout(); t != nil {
		parts = append(parts, "connect timeout "+t.AsDuration().String())
	}
	for _, th := range c.GetCircuitBreakers().GetThresholds() {
		if th.GetPriority() != core.RoutingPriority_DEFAULT {
			continue
		}
		var limits []string
		add := func(name string, v uint32, set bool) {
			switch {
			case !set:
			case v == math.MaxUint32:
				limits = append(limits, name+" unlimited")
			default:
				limits = append(limits, fmt.Sprintf("%s %d", name, v))
			}
		}
		add("max connections", th.GetMaxConnections().GetValue(), th.GetMaxConnections() != nil)
		add("max pending requests", th.GetMaxPendingRequests().GetValue(), th.GetMaxPendingRequests() != nil)
		add("max requests", th.GetMaxRequests().GetValue(), th.GetMaxRequests() != nil)
		add("max retries", th.GetMaxRetries().GetValue(), th.GetMaxRetries() != nil)
		if len(limits) > 0 {
			parts = append(parts, "circuit breakers: "+strings.Join(limits, ", "))
		}
	}
	if od := c.GetOutlierDetection(); od != nil {
		s := "outlier detection"
		if v := od.GetConsecutive_5Xx(); v != nil {
			s += fmt.Sprintf(": eject after %d consecutive 5xx", v.GetValue())
		}
		if v := od.GetBaseEjectionTime(); v != nil {
			s += fmt.Sprintf(" for %s", v.AsDuration())
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "; ")
}

// retries summarises a retry policy.
func retries(p *route.RetryPolicy) string {
	if p == nil {
		return "none"
	}
	s := fmt.Sprintf("%d attempt(s) on %s", p.GetNumRetries().GetValue(), p.GetRetryOn())
	if codes := p.GetRetriableStatusCodes(); len(codes) > 0 {
		s += fmt.Sprintf(" (status %v)", codes)
	}
	if t := p.GetPerTryTimeout(); t != nil {
		s += ", " + t.AsDuration().String() + " per try"
	}
	return s
}

// policies lists the rule's other behaviours.
func policies(rule *networking.HTTPRoute) []string {
	var out []string
	if rule == nil {
		return nil
	}
	if f := rule.GetFault(); f != nil {
		out = append(out, "fault injection "+compact(f))
	}
	if rule.GetMirror() != nil {
		out = append(out, "mirror to "+compact(rule.GetMirror()))
	}
	for _, mp := range rule.GetMirrors() {
		out = append(out, "mirror "+compact(mp))
	}
	if rw := rule.GetRewrite(); rw != nil {
		out = append(out, "rewrite "+compact(rw))
	}
	if rd := rule.GetRedirect(); rd != nil {
		out = append(out, "redirect "+compact(rd))
	}
	if dr := rule.GetDirectResponse(); dr != nil {
		out = append(out, "direct response "+compact(dr))
	}
	if h := rule.GetHeaders(); h != nil {
		out = append(out, "headers "+compact(h))
	}
	if c := rule.GetCorsPolicy(); c != nil {
		out = append(out, "CORS "+compact(c))
	}
	return out
}

// compact renders a config message as one line of JSON.
func compact(m proto.Message) string {
	b, err := protojson.MarshalOptions{}.Marshal(m)
	if err != nil {
		return fmt.Sprint(m)
	}
	// protojson output is deliberately unstable in whitespace; compact it.
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return string(b)
	}
	return out.String()
}

func where(m config.Meta) string {
	if m.File == "" {
		return m.String()
	}
	return fmt.Sprintf("%s (%s:%d)", m, m.File, m.Line)
}

func at(m config.Meta, pos config.Positions, path string) string {
	p := pos.Lookup(path)
	if !p.IsValid() {
		return m.File
	}
	return fmt.Sprintf("%s:%d:%d", m.File, p.Line, p.Column)
}
