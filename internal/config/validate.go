package config

import (
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/registry"
)

// issues collects the problems found in one document's spec; the store
// fills in file, document and resource.
type issues []Diagnostic

func (is *issues) errf(path, format string, args ...any) {
	*is = append(*is, Diagnostic{Severity: SeverityError, Path: path, Message: fmt.Sprintf(format, args...)})
}

func (is *issues) warnf(path, format string, args ...any) {
	*is = append(*is, Diagnostic{Severity: SeverityWarning, Path: path, Message: fmt.Sprintf(format, args...)})
}

// hasErrors reports whether any collected issue is an error.
func (is issues) hasErrors() bool {
	for _, d := range is {
		if d.Severity == SeverityError {
			return true
		}
	}
	return false
}

// validateSpec checks one resource on its own, with Istio's semantics.
// Checks that need other resources (subsets, known hosts) are in crossref.go.
func validateSpec(spec proto.Message) issues {
	var is issues
	switch s := spec.(type) {
	case *networking.VirtualService:
		validateVirtualService(&is, s)
	case *networking.DestinationRule:
		validateDestinationRule(&is, s)
	case *networking.ServiceEntry:
		validateServiceEntry(&is, s)
	case *networking.WorkloadEntry:
		validateWorkloadEntry(&is, "spec", s)
	}
	return is
}

func validateVirtualService(is *issues, vs *networking.VirtualService) {
	if len(vs.GetHosts()) == 0 {
		is.errf("spec.hosts", "at least one host is required")
	}
	for i, h := range vs.GetHosts() {
		validateHost(is, fmt.Sprintf("spec.hosts[%d]", i), h)
	}
	for i, r := range vs.GetHttp() {
		validateHTTPRoute(is, fmt.Sprintf("spec.http[%d]", i), r)
	}
	for i, r := range vs.GetTcp() {
		validateRouteDestinations(is, fmt.Sprintf("spec.tcp[%d]", i), r.GetRoute())
	}
	for i, r := range vs.GetTls() {
		validateRouteDestinations(is, fmt.Sprintf("spec.tls[%d]", i), r.GetRoute())
	}
}

func validateHost(is *issues, path, h string) {
	switch {
	case h == "":
		is.errf(path, "host must not be empty")
	case strings.ContainsAny(h, " /:"):
		is.errf(path, "invalid host %q", h)
	case strings.Contains(h[1:], "*"):
		is.errf(path, "invalid host %q: a wildcard is only allowed as the first label", h)
	}
}

func validateHTTPRoute(is *issues, path string, r *networking.HTTPRoute) {
	for k, m := range r.GetMatch() {
		validateMatch(is, fmt.Sprintf("%s.match[%d]", path, k), m)
	}
	hasRoute := len(r.GetRoute()) > 0
	switch {
	case hasRoute && r.GetRedirect() != nil:
		is.errf(path, "route and redirect are mutually exclusive")
	case hasRoute && r.GetDirectResponse() != nil:
		is.errf(path, "route and directResponse are mutually exclusive")
	case !hasRoute && r.GetRedirect() == nil && r.GetDirectResponse() == nil && r.GetDelegate() == nil:
		is.errf(path, "one of route, redirect, directResponse or delegate is required")
	}
	var weights []int32
	for j, d := range r.GetRoute() {
		dp := fmt.Sprintf("%s.route[%d]", path, j)
		validateDestination(is, dp+".destination", d.GetDestination())
		if d.GetWeight() < 0 {
			is.errf(dp+".weight", "weight %d must not be negative", d.GetWeight())
		}
		weights = append(weights, d.GetWeight())
	}
	validateTotalWeight(is, path+".route", weights)
	if r.GetMirror() != nil {
		validateDestination(is, path+".mirror", r.GetMirror())
	}
	for j, m := range r.GetMirrors() {
		mp := fmt.Sprintf("%s.mirrors[%d]", path, j)
		validateDestination(is, mp+".destination", m.GetDestination())
		validatePercent(is, mp+".percentage", m.GetPercentage())
	}
	validatePercent(is, path+".mirrorPercentage", r.GetMirrorPercentage())
	if t := r.GetTimeout(); t != nil && (t.GetSeconds() < 0 || t.GetNanos() < 0) {
		is.errf(path+".timeout", "timeout must not be negative")
	}
	if rt := r.GetRetries(); rt != nil && rt.GetAttempts() < 0 {
		is.errf(path+".retries.attempts", "attempts %d must not be negative", rt.GetAttempts())
	}
	validateRouteActions(is, path, r)
}

// validateRouteActions checks what the proxy could not apply: an RE2
// uriRegexRewrite and a redirect code Envoy can send (as Istio does).
func validateRouteActions(is *issues, path string, r *networking.HTTPRoute) {
	if rr := r.GetRewrite().GetUriRegexRewrite(); rr != nil {
		if _, err := regexp.Compile(rr.GetMatch()); err != nil {
			is.errf(path+".rewrite.uriRegexRewrite.match", "invalid RE2 regex %q: %v", rr.GetMatch(), err)
		}
		if r.GetRewrite().GetUri() != "" {
			is.errf(path+".rewrite", "uri and uriRegexRewrite are mutually exclusive")
		}
	}
	switch c := r.GetRedirect().GetRedirectCode(); c {
	case 0, 301, 302, 303, 307, 308:
	default:
		is.errf(path+".redirect.redirectCode", "redirect code %d is not one of 301, 302, 303, 307, 308", c)
	}
	if d := r.GetDirectResponse(); d != nil && (d.GetStatus() < 200 || d.GetStatus() > 599) {
		is.errf(path+".directResponse.status", "status %d out of range 200-599", d.GetStatus())
	}
}

func validateRouteDestinations(is *issues, path string, route []*networking.RouteDestination) {
	var weights []int32
	for j, d := range route {
		dp := fmt.Sprintf("%s.route[%d]", path, j)
		validateDestination(is, dp+".destination", d.GetDestination())
		if d.GetWeight() < 0 {
			is.errf(dp+".weight", "weight %d must not be negative", d.GetWeight())
		}
		weights = append(weights, d.GetWeight())
	}
	validateTotalWeight(is, path+".route", weights)
}

// validateTotalWeight applies Istio's rule: weights are relative; a single
// destination may leave its weight unset, several may not all be zero.
func validateTotalWeight(is *issues, path string, weights []int32) {
	if len(weights) < 2 {
		return
	}
	var total int64
	for _, w := range weights {
		total += int64(w)
	}
	if total == 0 {
		is.errf(path, "the total weight of %d destinations is 0; give at least one a positive weight", len(weights))
	}
}

func validatePercent(is *issues, path string, p *networking.Percent) {
	if p != nil && (p.GetValue() < 0 || p.GetValue() > 100) {
		is.errf(path, "percentage %v out of range 0-100", p.GetValue())
	}
}

func validateDestination(is *issues, path string, d *networking.Destination) {
	if d == nil {
		is.errf(path, "destination is required")
		return
	}
	if d.GetHost() == "" {
		is.errf(path+".host", "destination host is required")
	} else {
		validateHost(is, path+".host", d.GetHost())
	}
	if n := d.GetPort().GetNumber(); n > 65535 {
		is.errf(path+".port.number", "port number %d out of range 1-65535", n)
	}
}

func validateMatch(is *issues, path string, m *networking.HTTPMatchRequest) {
	validateStringMatch(is, path+".uri", m.GetUri())
	validateStringMatch(is, path+".scheme", m.GetScheme())
	validateStringMatch(is, path+".method", m.GetMethod())
	validateStringMatch(is, path+".authority", m.GetAuthority())
	for _, field := range []struct {
		name string
		m    map[string]*networking.StringMatch
	}{
		{"headers", m.GetHeaders()},
		{"queryParams", m.GetQueryParams()},
		{"withoutHeaders", m.GetWithoutHeaders()},
	} {
		for _, key := range sortedKeys(field.m) {
			kp := path + "." + field.name + "." + key
			if key == "" {
				is.errf(kp, "%s name must not be empty", field.name)
			}
			validateStringMatch(is, kp, field.m[key])
		}
	}
	if p := m.GetPort(); p > 65535 {
		is.errf(path+".port", "port %d out of range 1-65535", p)
	}
}

func validateStringMatch(is *issues, path string, sm *networking.StringMatch) {
	re, ok := sm.GetMatchType().(*networking.StringMatch_Regex)
	if !ok {
		return
	}
	if _, err := regexp.Compile(re.Regex); err != nil {
		is.errf(path+".regex", "invalid RE2 regex %q: %v", re.Regex, err)
	}
}

func validateDestinationRule(is *issues, dr *networking.DestinationRule) {
	if dr.GetHost() == "" {
		is.errf("spec.host", "host is required")
	} else {
		validateHost(is, "spec.host", dr.GetHost())
	}
	seen := map[string]int{}
	for i, s := range dr.GetSubsets() {
		p := fmt.Sprintf("spec.subsets[%d].name", i)
		switch first, dup := seen[s.GetName()]; {
		case s.GetName() == "":
			is.errf(p, "subset name is required")
		case dup:
			is.errf(p, "duplicate subset name %q (also spec.subsets[%d])", s.GetName(), first)
		default:
			seen[s.GetName()] = i
		}
	}
	validateLoadBalancers(is, dr) // loadbalancer.go
}

func validateServiceEntry(is *issues, se *networking.ServiceEntry) {
	if len(se.GetHosts()) == 0 {
		is.errf("spec.hosts", "at least one host is required")
	}
	for i, h := range se.GetHosts() {
		validateHost(is, fmt.Sprintf("spec.hosts[%d]", i), h)
	}
	numbers, names := map[uint32]int{}, map[string]int{}
	for i, p := range se.GetPorts() {
		pp := fmt.Sprintf("spec.ports[%d]", i)
		if p.GetNumber() == 0 || p.GetNumber() > 65535 {
			is.errf(pp+".number", "port number %d out of range 1-65535", p.GetNumber())
		} else if first, dup := numbers[p.GetNumber()]; dup {
			is.errf(pp+".number", "duplicate port number %d (also spec.ports[%d])", p.GetNumber(), first)
		} else {
			numbers[p.GetNumber()] = i
		}
		if p.GetName() == "" {
			is.errf(pp+".name", "port name is required")
		} else if first, dup := names[p.GetName()]; dup {
			is.errf(pp+".name", "duplicate port name %q (also spec.ports[%d])", p.GetName(), first)
		} else {
			names[p.GetName()] = i
		}
		if p.GetTargetPort() > 65535 {
			is.errf(pp+".targetPort", "target port %d out of range 1-65535", p.GetTargetPort())
		}
		if _, ok := registry.ParseProtocol(p.GetProtocol()); !ok && p.GetProtocol() != "" {
			is.warnf(pp+".protocol", "unknown protocol %q is treated as TCP", p.GetProtocol())
		}
	}
	if len(se.GetEndpoints()) > 0 && se.GetWorkloadSelector() != nil {
		is.errf("spec.workloadSelector", "workloadSelector and endpoints are mutually exclusive")
	}
	for i, ep := range se.GetEndpoints() {
		p := fmt.Sprintf("spec.endpoints[%d]", i)
		validateWorkloadEntry(is, p, ep)
		if se.GetResolution() == networking.ServiceEntry_STATIC && ep.GetAddress() != "" && !strings.HasPrefix(ep.GetAddress(), "unix://") {
			if _, err := netip.ParseAddr(ep.GetAddress()); err != nil {
				is.errf(p+".address", "address %q must be an IP address with resolution STATIC", ep.GetAddress())
			}
		}
	}
}

func validateWorkloadEntry(is *issues, path string, we *networking.WorkloadEntry) {
	// Istio allows an endpoint without an address on another network,
	// reached through that network's gateway. Weft has no multi-network
	// gateways: such an endpoint would reach the proxy with an empty
	// address, and the proxy rejects the whole update.
	switch {
	case we.GetAddress() != "":
	case we.GetNetwork() != "":
		is.errf(path+".address", "address is required (multi-network endpoints without an address are not supported yet)")
	default:
		is.errf(path+".address", "address is required")
	}
	for _, name := range sortedKeys(we.GetPorts()) {
		pp := path + ".ports." + name
		if name == "" {
			is.errf(pp, "port name must not be empty")
		}
		if n := we.GetPorts()[name]; n == 0 || n > 65535 {
			is.errf(pp, "port %d out of range 1-65535", n)
		}
	}
	if l := we.GetLocality(); l != "" && strings.Count(l, "/") > 2 {
		is.errf(path+".locality", "locality %q must be region/zone/subzone", l)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
