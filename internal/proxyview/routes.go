package proxyview

import (
	"fmt"
	"io"
	"strconv"
	"strings"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// WriteRoutes writes one row per route, in the order the proxy matches
// them (first match wins): the RDS route configurations, then those
// inlined in listeners (inbound).
func WriteRoutes(w io.Writer, d *Dump, f Filter) error {
	t := newTable(w, "NAME", "VIRTUAL HOST", "DOMAINS", "ROUTE", "MATCH", "DESTINATION", "TIMEOUT", "RETRIES")
	for _, rc := range routeConfigs(d) {
		if f.Name != "" && f.Name != rc.GetName() {
			continue
		}
		for _, vh := range rc.GetVirtualHosts() {
			domains := domainSummary(vh.GetDomains())
			for _, r := range vh.GetRoutes() {
				retry := r.GetRoute().GetRetryPolicy()
				if retry == nil {
					retry = vh.GetRetryPolicy()
				}
				t.row(rc.GetName(), vh.GetName(), domains, r.GetName(), routeMatch(r.GetMatch()),
					routeDestination(r), timeout(r.GetRoute()), retries(retry))
			}
			if len(vh.GetRoutes()) == 0 {
				t.row(rc.GetName(), vh.GetName(), domains, "", "", "", "", "")
			}
		}
	}
	return t.flush()
}

// routeConfigs are the dump's route configurations followed by the ones
// inlined in its listeners.
func routeConfigs(d *Dump) []*route.RouteConfiguration {
	var out []*route.RouteConfiguration
	for _, it := range d.Routes {
		out = append(out, it.Msg)
	}
	for _, it := range d.Listeners {
		for _, fc := range it.Msg.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				var h hcm.HttpConnectionManager
				if f.GetTypedConfig() == nil || f.GetTypedConfig().UnmarshalTo(&h) != nil {
					continue
				}
				if rc := h.GetRouteConfig(); rc != nil {
					out = append(out, rc)
				}
			}
		}
	}
	return out
}

// domainSummary is the first domain and how many more, as istioctl shows.
func domainSummary(ds []string) string {
	switch len(ds) {
	case 0:
		return ""
	case 1:
		return ds[0]
	default:
		return fmt.Sprintf("%s +%d more", ds[0], len(ds)-1)
	}
}

// routeMatch summarises a route's match: the path, then header and query
// conditions (h=v exact, h^=v prefix, h$=v suffix, h*=v contains, h~=re
// regex, h present; ! inverts), all of which must hold.
func routeMatch(m *route.RouteMatch) string {
	var parts []string
	switch p := m.GetPathSpecifier().(type) {
	case *route.RouteMatch_Prefix:
		parts = append(parts, p.Prefix+"*")
	case *route.RouteMatch_Path:
		parts = append(parts, p.Path)
	case *route.RouteMatch_SafeRegex:
		parts = append(parts, "~"+p.SafeRegex.GetRegex())
	case *route.RouteMatch_PathSeparatedPrefix:
		parts = append(parts, p.PathSeparatedPrefix+"/*")
	case *route.RouteMatch_ConnectMatcher_:
		parts = append(parts, "CONNECT")
	case nil:
	default:
		parts = append(parts, "(path template)")
	}
	if cs := m.GetCaseSensitive(); cs != nil && !cs.GetValue() && len(parts) > 0 {
		parts[len(parts)-1] += " (any case)"
	}
	for _, h := range m.GetHeaders() {
		parts = append(parts, headerMatch(h))
	}
	for _, q := range m.GetQueryParameters() {
		s := "?" + q.GetName()
		if sm := q.GetStringMatch(); sm != nil {
			s += stringMatch(sm)
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}

func headerMatch(h *route.HeaderMatcher) string {
	s := h.GetName()
	switch {
	case h.GetStringMatch() != nil:
		s += stringMatch(h.GetStringMatch())
	case h.GetPresentMatch():
	case h.GetExactMatch() != "":
		s += "=" + h.GetExactMatch()
	case h.GetPrefixMatch() != "":
		s += "^=" + h.GetPrefixMatch()
	case h.GetSuffixMatch() != "":
		s += "$=" + h.GetSuffixMatch()
	case h.GetSafeRegexMatch() != nil:
		s += "~=" + h.GetSafeRegexMatch().GetRegex()
	}
	if h.GetInvertMatch() {
		s = "!" + s
	}
	return s
}

func stringMatch(m *matcher.StringMatcher) string {
	var s string
	switch p := m.GetMatchPattern().(type) {
	case *matcher.StringMatcher_Exact:
		s = "=" + p.Exact
	case *matcher.StringMatcher_Prefix:
		s = "^=" + p.Prefix
	case *matcher.StringMatcher_Suffix:
		s = "$=" + p.Suffix
	case *matcher.StringMatcher_Contains:
		s = "*=" + p.Contains
	case *matcher.StringMatcher_SafeRegex:
		s = "~=" + p.SafeRegex.GetRegex()
	}
	if m.GetIgnoreCase() {
		s += " (any case)"
	}
	return s
}

// routeDestination is where a route sends requests: a cluster, clusters
// with their share of traffic, a redirect or a direct response.
func routeDestination(r *route.Route) string {
	switch a := r.GetAction().(type) {
	case *route.Route_Route:
		ra := a.Route
		if wc := ra.GetWeightedClusters(); wc != nil {
			var total uint64
			for _, c := range wc.GetClusters() {
				total += uint64(c.GetWeight().GetValue())
			}
			var parts []string
			for _, c := range wc.GetClusters() {
				parts = append(parts, c.GetName()+" "+percent(uint64(c.GetWeight().GetValue()), total))
			}
			return strings.Join(parts, ", ")
		}
		if h := ra.GetClusterHeader(); h != "" {
			return "cluster from header " + h
		}
		return ra.GetCluster()
	case *route.Route_Redirect:
		return "redirect " + redirect(a.Redirect)
	case *route.Route_DirectResponse:
		return fmt.Sprintf("direct response %d", a.DirectResponse.GetStatus())
	case *route.Route_NonForwardingAction:
		return "non-forwarding"
	}
	return ""
}

// routeClusters lists the clusters a route action sends to.
func routeClusters(ra *route.RouteAction) []string {
	if c := ra.GetCluster(); c != "" {
		return []string{c}
	}
	var out []string
	for _, c := range ra.GetWeightedClusters().GetClusters() {
		out = append(out, c.GetName())
	}
	return out
}

func percent(w, total uint64) string {
	if total == 0 {
		return "0%"
	}
	p := float64(w) * 100 / float64(total)
	if p == float64(int64(p)) {
		return strconv.FormatInt(int64(p), 10) + "%"
	}
	return strconv.FormatFloat(p, 'f', 1, 64) + "%"
}

func redirect(r *route.RedirectAction) string {
	var s string
	if r.GetHttpsRedirect() {
		s = "https://"
	} else if sch := r.GetSchemeRedirect(); sch != "" {
		s = sch + "://"
	}
	s += r.GetHostRedirect()
	if p := r.GetPortRedirect(); p != 0 {
		s += ":" + strconv.FormatUint(uint64(p), 10)
	}
	switch {
	case r.GetPathRedirect() != "":
		s += r.GetPathRedirect()
	case r.GetPrefixRewrite() != "":
		s += r.GetPrefixRewrite() + "*"
	}
	if s == "" {
		s = "(same URL)"
	}
	code := map[route.RedirectAction_RedirectResponseCode]int{
		route.RedirectAction_MOVED_PERMANENTLY: 301, route.RedirectAction_FOUND: 302, route.RedirectAction_SEE_OTHER: 303,
		route.RedirectAction_TEMPORARY_REDIRECT: 307, route.RedirectAction_PERMANENT_REDIRECT: 308,
	}[r.GetResponseCode()]
	return fmt.Sprintf("%s (%d)", s, code)
}

// timeout is the route timeout: "none" for 0s (disabled), "" when unset.
func timeout(ra *route.RouteAction) string {
	if ra.GetTimeout() == nil {
		return ""
	}
	if d := ra.GetTimeout().AsDuration(); d > 0 {
		return d.String()
	}
	return "none"
}

// retries summarises a retry policy: attempts, conditions, per-try timeout.
func retries(p *route.RetryPolicy) string {
	if p == nil {
		return ""
	}
	n := uint32(1) // Envoy's default when num_retries is unset
	if p.GetNumRetries() != nil {
		n = p.GetNumRetries().GetValue()
	}
	if n == 0 {
		return "none"
	}
	on := p.GetRetryOn()
	if codes := p.GetRetriableStatusCodes(); len(codes) > 0 {
		var cs []string
		for _, c := range codes {
			cs = append(cs, strconv.FormatUint(uint64(c), 10))
		}
		on = strings.Replace(on, "retriable-status-codes", "retriable-status-codes("+strings.Join(cs, ",")+")", 1)
	}
	s := fmt.Sprintf("%d on %s", n, on)
	if pt := p.GetPerTryTimeout(); pt != nil {
		s += ", per try " + durationString(pt)
	}
	return s
}

func durationString(d *durationpb.Duration) string { return d.AsDuration().String() }
