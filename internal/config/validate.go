package config

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"
	telemetry "istio.io/api/telemetry/v1alpha1"

	weftnet "weft.dev/weft/api/networking/v1alpha1"
	weftsec "weft.dev/weft/api/security/v1alpha1"
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

// warnCode records a warning with its own code (the default is CodeInvalidValue).
func (is *issues) warnCode(code Code, path, format string, args ...any) {
	*is = append(*is, Diagnostic{Severity: SeverityWarning, Code: code, Path: path, Message: fmt.Sprintf(format, args...)})
}

// hasErrorAt reports whether an error was collected at path or inside it.
func (is issues) hasErrorAt(path string) bool {
	for _, d := range is {
		if d.Severity == SeverityError && (d.Path == path || strings.HasPrefix(d.Path, path+".") || strings.HasPrefix(d.Path, path+"[")) {
			return true
		}
	}
	return false
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

// validateSpec checks one resource on its own, with Istio's semantics
// (pkg/config/validation and the CRD schemas, which istioctl validate both
// applies) plus Weft's stricter checks for what weft-proxy or Envoy would
// refuse; each stricter check says why where it is made. Checks that need
// other resources (subsets, known hosts) are in crossref.go.
func validateSpec(spec proto.Message) issues { return validateResource("", spec) }

// validateResource is validateSpec for a resource of namespace ns, which
// a few of Istio's rules need (exportTo "." is ns; configmap://
// credentials must be in ns). With ns "" those rules are skipped.
func validateResource(ns string, spec proto.Message) issues {
	var is issues
	switch s := spec.(type) {
	case *networking.VirtualService:
		validateVirtualService(&is, ns, s)
	case *networking.DestinationRule:
		validateDestinationRule(&is, ns, s)
	case *networking.ServiceEntry:
		validateServiceEntry(&is, ns, s)
	case *networking.WorkloadEntry:
		validateWorkloadEntry(&is, "spec", s, nil, true)
	case *networking.WorkloadGroup:
		validateWorkloadGroup(&is, s)
	case *networking.Sidecar:
		validateSidecar(&is, s)
	case *networking.Gateway:
		validateGateway(&is, s)
	case *security.PeerAuthentication:
		validatePeerAuthentication(&is, s)
	case *security.AuthorizationPolicy:
		validateAuthorizationPolicy(&is, s)
	case *security.RequestAuthentication:
		validateRequestAuthentication(&is, s)
	case *telemetry.Telemetry:
		validateTelemetry(&is, s)
	case *weftnet.RateLimit:
		validateRateLimit(&is, s)
	case *weftsec.OIDCLogin:
		validateOIDCLogin(&is, s)
	}
	return is
}

// validateVirtualService is Istio's ValidateVirtualService. A
// VirtualService without hosts is a delegate, as Istio decides: it applies
// only where another VirtualService's http[].delegate names it, so it may
// not name gateways nor carry tcp or tls routes.
func validateVirtualService(is *issues, ns string, vs *networking.VirtualService) {
	delegate := len(vs.GetHosts()) == 0
	if delegate {
		if len(vs.GetGateways()) > 0 {
			is.errf("spec.gateways", "a VirtualService without hosts is a delegate, and a delegate must not set gateways (the VirtualService that delegates to it decides where it applies)")
		}
		if len(vs.GetTls()) > 0 {
			is.errf("spec.tls", "a VirtualService without hosts is a delegate, and only http routes can be delegated")
		}
		if len(vs.GetTcp()) > 0 {
			is.errf("spec.tcp", "a VirtualService without hosts is a delegate, and only http routes can be delegated")
		}
	}
	validateGatewayNames(is, "spec.gateways", vs.GetGateways())
	toMesh, toGateway := appliesTo(vs.GetGateways())
	if !toGateway {
		for i, r := range vs.GetHttp() {
			for k, m := range r.GetMatch() {
				for _, f := range []struct {
					name string
					m    map[string]*networking.StringMatch
				}{{"headers", m.GetHeaders()}, {"withoutHeaders", m.GetWithoutHeaders()}} {
					for _, h := range sortedKeys(f.m) {
						if jwtClaimHeader(h) {
							is.errf(fmt.Sprintf("spec.http[%d].match[%d].%s.%s", i, k, f.name, h), "routing on JWT claims is supported on gateways only, and this VirtualService applies to sidecars")
						}
					}
				}
			}
		}
	}
	allValid := true
	for i, h := range vs.GetHosts() {
		p := fmt.Sprintf("spec.hosts[%d]", i)
		var err error
		if toGateway {
			err = checkGatewayHost(h, sniRouted(vs))
		} else {
			err = checkWildcardDomain(h)
		}
		switch {
		case err != nil && !isIP(h):
			is.errf(p, "%v", err)
			allValid = false
		case err == nil && toMesh && h == "*":
			is.errf(p, "host \"*\" is not allowed for sidecars (mesh): it would capture every service; name the hosts")
			allValid = false
		}
	}
	if allValid {
		hosts := vs.GetHosts()
		for i := range hosts {
			for j := i + 1; j < len(hosts); j++ {
				if hostsOverlap(hosts[i], hosts[j]) {
					is.errf(fmt.Sprintf("spec.hosts[%d]", j), "host %q overlaps spec.hosts[%d] %q; list each host once", hosts[j], i, hosts[i])
				}
			}
		}
	}
	if len(vs.GetHttp()) == 0 && len(vs.GetTcp()) == 0 && len(vs.GetTls()) == 0 {
		is.errf("spec", "at least one of http, tcp or tls routes is required")
	}
	for i, r := range vs.GetHttp() {
		validateHTTPRoute(is, fmt.Sprintf("spec.http[%d]", i), r, delegate)
	}
	for i, r := range vs.GetTls() {
		validateTLSRoute(is, fmt.Sprintf("spec.tls[%d]", i), r, vs, toGateway)
	}
	for i, r := range vs.GetTcp() {
		validateTCPRoute(is, fmt.Sprintf("spec.tcp[%d]", i), r)
	}
	validateExportTo(is, ns, "spec.exportTo", vs.GetExportTo(), false)
	warnUnreachableRules(is, vs)
}

// appliesTo reports whether a VirtualService with these gateways applies
// to sidecars (no gateways, or "mesh" among them) and to gateways (some
// gateway and not "mesh": Istio's isGateway).
func appliesTo(gateways []string) (mesh, gateway bool) {
	if len(gateways) == 0 {
		return true, false
	}
	for _, g := range gateways {
		if g == "mesh" {
			return true, false
		}
	}
	return false, true
}

// sniRouted reports whether any tls route matches on SNI hosts.
func sniRouted(vs *networking.VirtualService) bool {
	for _, r := range vs.GetTls() {
		for _, m := range r.GetMatch() {
			if len(m.GetSniHosts()) > 0 {
				return true
			}
		}
	}
	return false
}

var hasLetter = regexp.MustCompile(`[a-zA-Z]`)

// checkGatewayHost is Istio's ValidateWildcardDomainForVirtualServiceBoundToGateway:
// a wildcard domain, or with SNI routing the generated
// outbound_.<port>_._.<host> form.
func checkGatewayHost(h string, sni bool) error {
	if !sni || !strings.HasPrefix(h, "outbound_") {
		return checkWildcardDomain(h)
	}
	if err := checkDomainLength(h); err != nil {
		return err
	}
	parts := strings.Split(h, "_")
	if len(parts) < 4 || parts[0] != "outbound" ||
		!strings.ContainsAny(strings.Trim(parts[1], "."), "0123456789") ||
		!hasLetter.MatchString(strings.Trim(parts[3], ".")) {
		return fmt.Errorf("host %q: want outbound_.<port>_._.<hostname>", h)
	}
	return nil
}

// validateTLSRoute is Istio's validateTLSRoute.
func validateTLSRoute(is *issues, path string, r *networking.TLSRoute, vs *networking.VirtualService, toGateway bool) {
	if len(r.GetMatch()) == 0 {
		is.errf(path+".match", "a tls route needs at least one match")
	}
	for k, m := range r.GetMatch() {
		mp := fmt.Sprintf("%s.match[%d]", path, k)
		if len(m.GetSniHosts()) == 0 {
			is.errf(mp+".sniHosts", "a tls match needs at least one SNI host")
		}
		for s, h := range m.GetSniHosts() {
			validateSNIHost(is, fmt.Sprintf("%s.sniHosts[%d]", mp, s), h, vs, toGateway)
		}
		validateL4Match(is, mp, m.GetDestinationSubnets(), m.GetPort(), m.GetSourceLabels(), m.GetGateways())
	}
	if len(r.GetRoute()) == 0 {
		is.errf(path+".route", "a tls route needs a route")
	}
	validateRouteDestinations(is, path+".route", r.GetRoute())
}

// validateSNIHost is Istio's validateSniHost: a valid name (an IP address
// is a warning) covered by one of the VirtualService's hosts.
func validateSNIHost(is *issues, path, h string, vs *networking.VirtualService, toGateway bool) {
	var err error
	if toGateway {
		err = checkGatewayHost(h, true)
	} else {
		err = checkWildcardDomain(h)
	}
	if err != nil {
		if isIP(h) {
			is.warnf(path, "SNI host %q is an IP address, which the SNI specification does not allow and most clients do not send", h)
		} else {
			is.errf(path, "%v", err)
		}
		return
	}
	for _, vh := range vs.GetHosts() {
		if hostSubsetOf(h, vh) {
			return
		}
	}
	is.errf(path, "SNI host %q is not covered by any of the VirtualService's hosts [%s]", h, strings.Join(vs.GetHosts(), ", "))
}

// validateTCPRoute is Istio's validateTCPRoute.
func validateTCPRoute(is *issues, path string, r *networking.TCPRoute) {
	for k, m := range r.GetMatch() {
		validateL4Match(is, fmt.Sprintf("%s.match[%d]", path, k), m.GetDestinationSubnets(), m.GetPort(), m.GetSourceLabels(), m.GetGateways())
	}
	if len(r.GetRoute()) == 0 {
		is.errf(path+".route", "a tcp route needs a route")
	}
	validateRouteDestinations(is, path+".route", r.GetRoute())
}

func validateL4Match(is *issues, path string, subnets []string, port uint32, sourceLabels map[string]string, gateways []string) {
	for i, s := range subnets {
		if err := checkIPSubnet(s); err != nil {
			is.errf(fmt.Sprintf("%s.destinationSubnets[%d]", path, i), "%v", err)
		}
	}
	if port != 0 {
		if err := checkPort(int64(port)); err != nil {
			is.errf(path+".port", "%v", err)
		}
	}
	validateLabels(is, path+".sourceLabels", sourceLabels)
	validateGatewayNames(is, path+".gateways", gateways)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
