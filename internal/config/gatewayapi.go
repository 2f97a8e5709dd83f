package config

import (
	"fmt"
	"maps"
	"net/netip"
	"regexp"
	"slices"
	"strings"
	"time"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// The Kubernetes Gateway API (gateway.networking.k8s.io) as Weft loads
// it: GatewayClass, Gateway, HTTPRoute and ReferenceGrant, decoded into
// the sigs.k8s.io/gateway-api Go types (v1; v1beta1 shares their schema)
// and checked here against what the CRDs' OpenAPI schemas and CEL rules
// enforce, so a file Weft accepts is one the API server would accept.
// gatewayapi_translate.go turns them into Istio's Gateway and
// VirtualService, as Istio does.

// gatewayAPIGroup is the API group of the Gateway API's kinds.
const gatewayAPIGroup = "gateway.networking.k8s.io"

// gatewayAPIKinds names the Gateway API kinds Weft loads, for messages.
const gatewayAPIKinds = "GatewayClass, Gateway, HTTPRoute, GRPCRoute, TCPRoute, TLSRoute, ReferenceGrant"

// GatewayAPIVersions are the versions of Gateway API kind k that Weft
// reads, newest first. For what Weft reads they share one schema. Beside
// v1 (and v1beta1 where the standard channel served it) they are the
// experimental channel's versions of the kinds that reached v1 late:
// v1alpha2 GRPCRoute, TCPRoute, TLSRoute and ReferenceGrant, and v1alpha3
// TLSRoute, which Istio's samples and clusters with an older Gateway API
// release still use.
func GatewayAPIVersions(k Kind) []string {
	switch k {
	case KindGRPCRoute, KindTCPRoute:
		return []string{"v1", "v1alpha2"}
	case KindTLSRoute:
		return []string{"v1", "v1alpha3", "v1alpha2"}
	case KindReferenceGrant:
		return []string{"v1", "v1beta1", "v1alpha2"}
	}
	return []string{"v1", "v1beta1"}
}

// newGatewayAPISpec returns Weft's Kind for a kind of the Gateway API
// group as written, and an empty spec for it; a nil spec when Weft does
// not load the kind.
func newGatewayAPISpec(kind string) (Kind, any) {
	switch kind {
	case "GatewayClass":
		return KindGatewayClass, &gwv1.GatewayClassSpec{}
	case "Gateway":
		return KindKubeGateway, &gwv1.GatewaySpec{}
	case "HTTPRoute":
		return KindHTTPRoute, &gwv1.HTTPRouteSpec{}
	case "GRPCRoute":
		return KindGRPCRoute, &gwv1.GRPCRouteSpec{}
	case "TCPRoute":
		return KindTCPRoute, &gwv1.TCPRouteSpec{}
	case "TLSRoute":
		return KindTLSRoute, &gwv1.TLSRouteSpec{}
	case "ReferenceGrant":
		return KindReferenceGrant, &gwv1.ReferenceGrantSpec{}
	}
	return Kind(kind), nil
}

// The patterns of the Gateway API's CRDs.
var (
	gwHostname        = regexp.MustCompile(`^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	gwSectionName     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	gwControllerName  = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/[A-Za-z0-9/\-._~%!$&'()*+,;=:]+$`)
	gwHeaderName      = regexp.MustCompile("^[A-Za-z0-9!#$%&'*+\\-.^_`|~]+$")
	gwDuration        = regexp.MustCompile(`^([0-9]{1,5}(h|m|s|ms)){1,4}$`)
	gwProtocol        = regexp.MustCompile(`^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$|[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/[A-Za-z0-9]+$`)
	gwRedirectCodes   = []int{301, 302, 303, 307, 308}
	gwMethods         = []string{"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
	gwFromNamespaces  = []string{"All", "Same", "Selector"}
	gwPathMatchTypes  = []string{"Exact", "PathPrefix", "RegularExpression"}
	gwValueMatchTypes = []string{"Exact", "RegularExpression"}
)

// validateGatewayAPI checks a Gateway API spec on its own.
func validateGatewayAPI(spec any) issues {
	var is issues
	switch s := spec.(type) {
	case *gwv1.GatewayClassSpec:
		switch c := string(s.ControllerName); {
		case c == "":
			is.errf("spec.controllerName", "controllerName is required")
		case !gwControllerName.MatchString(c) || len(c) > 253:
			is.errf("spec.controllerName", "invalid controllerName %q: want a domain-prefixed path such as %s", c, WeftControllerName)
		}
	case *gwv1.GatewaySpec:
		validateKubeGateway(&is, s)
	case *gwv1.HTTPRouteSpec:
		validateKubeHTTPRoute(&is, s)
	case *gwv1.GRPCRouteSpec:
		validateGRPCRoute(&is, s)
	case *gwv1.TCPRouteSpec:
		checkRouteParents(&is, s.ParentRefs, nil)
		checkL4Rules(&is, len(s.Rules), func(i int) []gwv1.BackendRef { return s.Rules[i].BackendRefs })
	case *gwv1.TLSRouteSpec:
		checkRouteParents(&is, s.ParentRefs, s.Hostnames)
		if len(s.Hostnames) == 0 {
			is.errf("spec.hostnames", "hostnames needs at least one SNI host name")
		}
		checkL4Rules(&is, len(s.Rules), func(i int) []gwv1.BackendRef { return s.Rules[i].BackendRefs })
	case *gwv1.ReferenceGrantSpec:
		if len(s.From) == 0 {
			is.errf("spec.from", "from needs at least one entry")
		}
		if len(s.To) == 0 {
			is.errf("spec.to", "to needs at least one entry")
		}
		for i, f := range s.From {
			p := fmt.Sprintf("spec.from[%d]", i)
			if f.Kind == "" {
				is.errf(p+".kind", "kind is required")
			}
			if f.Namespace == "" {
				is.errf(p+".namespace", "namespace is required")
			}
		}
		for i, t := range s.To {
			if t.Kind == "" {
				is.errf(fmt.Sprintf("spec.to[%d].kind", i), "kind is required")
			}
		}
	}
	return is
}

// checkHostname checks a Gateway API Hostname (wildcard allowed when
// wildcard) at path.
func checkHostname(is *issues, path, h string, wildcard bool) {
	switch {
	case h == "":
		is.errf(path, "hostname must not be empty")
	case len(h) > 253:
		is.errf(path, "hostname %q is longer than 253 characters", h)
	case isIPAddress(h):
		is.errf(path, "hostname %q is an IP address; the Gateway API takes host names only", h)
	case !gwHostname.MatchString(h):
		is.errf(path, "invalid hostname %q: want a lowercase DNS name, optionally starting with \"*.\"", h)
	case !wildcard && strings.HasPrefix(h, "*"):
		is.errf(path, "hostname %q must not be a wildcard here", h)
	}
}

func isIPAddress(h string) bool {
	_, err := netip.ParseAddr(h)
	return err == nil
}

func validateKubeGateway(is *issues, s *gwv1.GatewaySpec) {
	if s.GatewayClassName == "" {
		is.errf("spec.gatewayClassName", "gatewayClassName is required")
	}
	switch n := len(s.Listeners); {
	case n == 0:
		is.errf("spec.listeners", "listeners needs at least one listener")
	case n > 64:
		is.errf("spec.listeners", "at most 64 listeners, got %d", n)
	}
	if len(s.Addresses) > 0 {
		is.warnf("spec.addresses", "addresses are not applied by Weft: its gateway proxies listen on their own addresses (--gateway-bind)")
	}
	names := map[gwv1.SectionName]int{}
	combos := map[string]int{}
	for i, l := range s.Listeners {
		p := fmt.Sprintf("spec.listeners[%d]", i)
		switch {
		case l.Name == "":
			is.errf(p+".name", "name is required")
		case !gwSectionName.MatchString(string(l.Name)) || len(l.Name) > 253:
			is.errf(p+".name", "invalid listener name %q: must be a lowercase DNS-1123 subdomain", l.Name)
		default:
			if j, dup := names[l.Name]; dup {
				is.errf(p+".name", "listener name %q is already used by listeners[%d]; names must be unique", l.Name, j)
			}
			names[l.Name] = i
		}
		if l.Port < 1 || l.Port > 65535 {
			is.errf(p+".port", "port %d is out of range [1, 65535]", l.Port)
		}
		proto := string(l.Protocol)
		switch {
		case proto == "":
			is.errf(p+".protocol", "protocol is required")
		case !gwProtocol.MatchString(proto):
			is.errf(p+".protocol", "invalid protocol %q", proto)
		}
		if l.Hostname != nil {
			checkHostname(is, p+".hostname", string(*l.Hostname), true)
			if proto == "TCP" || proto == "UDP" {
				is.errf(p+".hostname", "hostname must not be set for protocol %s", proto)
			}
		}
		switch {
		case l.TLS != nil && (proto == "HTTP" || proto == "TCP" || proto == "UDP"):
			is.errf(p+".tls", "tls must not be set for protocol %s", proto)
		case l.TLS == nil && proto == "HTTPS":
			is.errf(p+".tls", "tls is required for protocol HTTPS")
		case l.TLS != nil:
			mode := gwv1.TLSModeTerminate
			if l.TLS.Mode != nil {
				mode = *l.TLS.Mode
			}
			switch mode {
			case gwv1.TLSModeTerminate:
				if len(l.TLS.CertificateRefs) == 0 && len(l.TLS.Options) == 0 {
					is.errf(p+".tls.certificateRefs", "certificateRefs or options must be set when mode is Terminate")
				}
			case gwv1.TLSModePassthrough:
				if proto == "HTTPS" {
					is.errf(p+".tls.mode", "mode Passthrough is for protocol TLS; an HTTPS listener terminates TLS")
				}
			default:
				is.errf(p+".tls.mode", "invalid mode %q: want Terminate or Passthrough", mode)
			}
			for k, ref := range l.TLS.CertificateRefs {
				if ref.Name == "" {
					is.errf(fmt.Sprintf("%s.tls.certificateRefs[%d].name", p, k), "name is required")
				}
			}
		}
		host := ""
		if l.Hostname != nil {
			host = string(*l.Hostname)
		}
		combo := fmt.Sprintf("%d/%s/%s", l.Port, proto, host)
		if j, dup := combos[combo]; dup {
			is.errf(p, "listeners[%d] already has port %d, protocol %s and hostname %q: the combination must be unique", j, l.Port, proto, host)
		}
		combos[combo] = i
		if ar := l.AllowedRoutes; ar != nil && ar.Namespaces != nil {
			np := p + ".allowedRoutes.namespaces"
			if f := ar.Namespaces.From; f != nil && !slices.Contains(gwFromNamespaces, string(*f)) {
				is.errf(np+".from", "invalid from %q: want %s", *f, strings.Join(gwFromNamespaces, ", "))
			}
			if f := ar.Namespaces.From; f != nil && *f == gwv1.NamespacesFromSelector && ar.Namespaces.Selector == nil {
				is.errf(np+".selector", "selector is required when from is Selector")
			}
		}
	}
}

func validateKubeHTTPRoute(is *issues, s *gwv1.HTTPRouteSpec) {
	checkRouteParents(is, s.ParentRefs, s.Hostnames)
	for i, r := range s.Rules {
		p := fmt.Sprintf("spec.rules[%d]", i)
		prefixMatches := 0
		for k, m := range r.Matches {
			mp := fmt.Sprintf("%s.matches[%d]", p, k)
			if m.Path != nil {
				if checkPathMatch(is, mp+".path", m.Path) == gwv1.PathMatchPathPrefix {
					prefixMatches++
				}
			} else {
				prefixMatches++ // the default: PathPrefix "/"
			}
			for h, hm := range m.Headers {
				checkValueMatch(is, fmt.Sprintf("%s.headers[%d]", mp, h), string(hm.Name), hm.Type, hm.Value)
			}
			for q, qm := range m.QueryParams {
				checkValueMatch(is, fmt.Sprintf("%s.queryParams[%d]", mp, q), string(qm.Name), qm.Type, qm.Value)
			}
			if m.Method != nil && !slices.Contains(gwMethods, string(*m.Method)) {
				is.errf(mp+".method", "invalid method %q: want one of %s", *m.Method, strings.Join(gwMethods, ", "))
			}
		}
		checkFilters(is, p+".filters", r.Filters, false)
		for _, f := range r.Filters {
			if f.URLRewrite != nil && f.URLRewrite.Path != nil && f.URLRewrite.Path.Type == gwv1.PrefixMatchHTTPPathModifier &&
				(len(r.Matches) != 1 || prefixMatches != 1) {
				is.errf(p+".filters", "a URLRewrite with replacePrefixMatch needs exactly one match, of type PathPrefix")
			}
		}
		for k, b := range r.BackendRefs {
			bp := fmt.Sprintf("%s.backendRefs[%d]", p, k)
			checkBackendRef(is, bp, b.BackendObjectReference)
			if b.Weight != nil && (*b.Weight < 0 || *b.Weight > 1000000) {
				is.errf(bp+".weight", "weight %d is out of range [0, 1000000]", *b.Weight)
			}
			checkFilters(is, bp+".filters", b.Filters, true)
		}
		if t := r.Timeouts; t != nil {
			req := checkGWDuration(is, p+".timeouts.request", t.Request)
			be := checkGWDuration(is, p+".timeouts.backendRequest", t.BackendRequest)
			if req > 0 && be > req {
				is.errf(p+".timeouts.backendRequest", "backendRequest (%s) must not be longer than request (%s)", *t.BackendRequest, *t.Request)
			}
		}
		if rt := r.Retry; rt != nil {
			if rt.Attempts != nil && *rt.Attempts < 0 {
				is.errf(p+".retry.attempts", "attempts must not be negative, got %d", *rt.Attempts)
			}
			for k, c := range rt.Codes {
				if c < 400 || c > 599 {
					is.errf(fmt.Sprintf("%s.retry.codes[%d]", p, k), "status code %d is out of range [400, 599]", c)
				}
			}
			if d := checkGWDuration(is, p+".retry.backoff", rt.Backoff); rt.Backoff != nil && d > 0 && d < time.Millisecond {
				is.errf(p+".retry.backoff", "backoff %s is shorter than 1ms", *rt.Backoff)
			}
		}
		if r.SessionPersistence != nil {
			is.warnf(p+".sessionPersistence", "sessionPersistence is not supported by Weft yet and is ignored")
		}
	}
}

// checkL4Rules checks the n rules of a TCPRoute or TLSRoute: one rule (a
// connection has no request to match) with at least one backend.
func checkL4Rules(is *issues, n int, backends func(i int) []gwv1.BackendRef) {
	if n != 1 {
		is.errf("spec.rules", "want exactly one rule, got %d", n)
	}
	for i := range n {
		p := fmt.Sprintf("spec.rules[%d]", i)
		refs := backends(i)
		if len(refs) == 0 {
			is.errf(p+".backendRefs", "backendRefs needs at least one backend")
		}
		for k, b := range refs {
			bp := fmt.Sprintf("%s.backendRefs[%d]", p, k)
			checkBackendRef(is, bp, b.BackendObjectReference)
			if b.Weight != nil && (*b.Weight < 0 || *b.Weight > 1000000) {
				is.errf(bp+".weight", "weight %d is out of range [0, 1000000]", *b.Weight)
			}
		}
	}
}

// checkRouteParents checks a route's parentRefs and hostnames.
func checkRouteParents(is *issues, parents []gwv1.ParentReference, hostnames []gwv1.Hostname) {
	if n := len(parents); n > 32 {
		is.errf("spec.parentRefs", "at most 32 parentRefs, got %d", n)
	}
	for i, ref := range parents {
		p := fmt.Sprintf("spec.parentRefs[%d]", i)
		if ref.Name == "" {
			is.errf(p+".name", "name is required")
		}
		if ref.Port != nil && (*ref.Port < 1 || *ref.Port > 65535) {
			is.errf(p+".port", "port %d is out of range [1, 65535]", *ref.Port)
		}
	}
	if n := len(hostnames); n > 16 {
		is.errf("spec.hostnames", "at most 16 hostnames, got %d", n)
	}
	for i, h := range hostnames {
		checkHostname(is, fmt.Sprintf("spec.hostnames[%d]", i), string(h), true)
	}
}

// gRPC service and method names, as the GRPCRoute CRD checks them.
var (
	grpcService = regexp.MustCompile(`^(?i)\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$`)
	grpcMethod  = regexp.MustCompile(`^[A-Za-z_][A-Za-z_0-9]*$`)
)

// validateGRPCRoute checks a GRPCRoute: its own method matches, and the
// rest as an HTTPRoute's.
func validateGRPCRoute(is *issues, s *gwv1.GRPCRouteSpec) {
	checkRouteParents(is, s.ParentRefs, s.Hostnames)
	for i, r := range s.Rules {
		p := fmt.Sprintf("spec.rules[%d]", i)
		for k, m := range r.Matches {
			mp := fmt.Sprintf("%s.matches[%d]", p, k)
			if mm := m.Method; mm != nil {
				typ := gwv1.GRPCMethodMatchExact
				if mm.Type != nil {
					typ = *mm.Type
				}
				switch {
				case mm.Service == nil && mm.Method == nil:
					is.errf(mp+".method", "one or both of service and method must be set")
				case typ == gwv1.GRPCMethodMatchExact:
					if mm.Service != nil && !grpcService.MatchString(*mm.Service) {
						is.errf(mp+".method.service", "invalid service %q: want a gRPC service name such as weft.echo.v1.Echo", *mm.Service)
					}
					if mm.Method != nil && !grpcMethod.MatchString(*mm.Method) {
						is.errf(mp+".method.method", "invalid method %q: want a gRPC method name such as Echo", *mm.Method)
					}
				case typ == gwv1.GRPCMethodMatchRegularExpression:
					for _, f := range []struct {
						name string
						v    *string
					}{{"service", mm.Service}, {"method", mm.Method}} {
						if f.v == nil {
							continue
						}
						if _, err := regexp.Compile(*f.v); err != nil {
							is.errf(mp+".method."+f.name, "invalid regular expression %q: %v", *f.v, err)
						}
					}
				default:
					is.errf(mp+".method.type", "invalid type %q: want Exact or RegularExpression", typ)
				}
			}
			for h, hm := range m.Headers {
				checkValueMatch(is, fmt.Sprintf("%s.headers[%d]", mp, h), string(hm.Name), hm.Type, hm.Value)
			}
		}
		checkFiltersOf(is, p+".filters", grpcFilters(r.Filters), false, true)
		for k, b := range r.BackendRefs {
			bp := fmt.Sprintf("%s.backendRefs[%d]", p, k)
			checkBackendRef(is, bp, b.BackendObjectReference)
			if b.Weight != nil && (*b.Weight < 0 || *b.Weight > 1000000) {
				is.errf(bp+".weight", "weight %d is out of range [0, 1000000]", *b.Weight)
			}
			checkFiltersOf(is, bp+".filters", grpcFilters(b.Filters), true, true)
		}
		if r.SessionPersistence != nil {
			is.warnf(p+".sessionPersistence", "sessionPersistence is not supported by Weft yet and is ignored")
		}
	}
}

// grpcFilters are a GRPCRoute's filters as an HTTPRoute's (the same
// fields, a subset of the types).
func grpcFilters(fs []gwv1.GRPCRouteFilter) []gwv1.HTTPRouteFilter {
	var out []gwv1.HTTPRouteFilter
	for _, f := range fs {
		out = append(out, gwv1.HTTPRouteFilter{
			Type: gwv1.HTTPRouteFilterType(f.Type), RequestHeaderModifier: f.RequestHeaderModifier,
			ResponseHeaderModifier: f.ResponseHeaderModifier, RequestMirror: f.RequestMirror, ExtensionRef: f.ExtensionRef,
		})
	}
	return out
}

// checkPathMatch checks a path match and returns its type.
func checkPathMatch(is *issues, path string, m *gwv1.HTTPPathMatch) gwv1.PathMatchType {
	t := gwv1.PathMatchPathPrefix
	if m.Type != nil {
		t = *m.Type
	}
	v := "/"
	if m.Value != nil {
		v = *m.Value
	}
	if !slices.Contains(gwPathMatchTypes, string(t)) {
		is.errf(path+".type", "invalid type %q: want one of %s", t, strings.Join(gwPathMatchTypes, ", "))
		return t
	}
	if len(v) > 1024 {
		is.errf(path+".value", "value is longer than 1024 characters")
		return t
	}
	if t == gwv1.PathMatchRegularExpression {
		if _, err := regexp.Compile(v); err != nil {
			is.errf(path+".value", "invalid regular expression %q: %v", v, err)
		}
		return t
	}
	switch {
	case !strings.HasPrefix(v, "/"):
		is.errf(path+".value", "value %q must be an absolute path (start with /)", v)
	case strings.Contains(v, "//"):
		is.errf(path+".value", "value %q must not contain '//'", v)
	case strings.Contains(v, "/./") || strings.Contains(v, "/../") || strings.HasSuffix(v, "/.") || strings.HasSuffix(v, "/.."):
		is.errf(path+".value", "value %q must not contain the path segments '.' or '..'", v)
	case strings.Contains(strings.ToLower(v), "%2f") || strings.Contains(v, "#"):
		is.errf(path+".value", "value %q must not contain '%%2f', '%%2F' or '#'", v)
	}
	return t
}

func checkValueMatch[T ~string](is *issues, path, name string, typ *T, value string) {
	if !gwHeaderName.MatchString(name) {
		is.errf(path+".name", "invalid name %q: want an HTTP header or query parameter name (RFC 7230 token)", name)
	}
	if typ != nil && !slices.Contains(gwValueMatchTypes, string(*typ)) {
		is.errf(path+".type", "invalid type %q: want Exact or RegularExpression", *typ)
		return
	}
	if typ != nil && *typ == "RegularExpression" {
		if _, err := regexp.Compile(value); err != nil {
			is.errf(path+".value", "invalid regular expression %q: %v", value, err)
		}
	}
}

// checkGWDuration checks a Gateway API duration (GEP-2257) and returns it.
func checkGWDuration(is *issues, path string, d *gwv1.Duration) time.Duration {
	if d == nil {
		return 0
	}
	if !gwDuration.MatchString(string(*d)) {
		is.errf(path, "invalid duration %q: want one to four numbers each with a unit of h, m, s or ms, such as 1m30s", *d)
		return 0
	}
	v, _ := time.ParseDuration(string(*d))
	return v
}

// checkBackendRef checks a backend reference at path.
func checkBackendRef(is *issues, path string, b gwv1.BackendObjectReference) {
	if b.Name == "" {
		is.errf(path+".name", "name is required")
	}
	if isServiceRef(b.Group, b.Kind) && b.Port == nil {
		is.errf(path+".port", "port is required for a Service")
	}
	if b.Group != nil && *b.Group == "networking.istio.io" && b.Kind != nil && *b.Kind == "Hostname" && b.Name != "" {
		checkHostname(is, path+".name", string(b.Name), false) // Istio's: a host, as a destination names it
	}
	if b.Port != nil && (*b.Port < 1 || *b.Port > 65535) {
		is.errf(path+".port", "port %d is out of range [1, 65535]", *b.Port)
	}
}

// isServiceRef reports whether a reference's group and kind (defaults:
// core group, Service) name a Kubernetes Service.
func isServiceRef(group *gwv1.Group, kind *gwv1.Kind) bool {
	return (group == nil || *group == "" || *group == "core") && (kind == nil || *kind == "Service")
}

// filterFields names the field each core filter type takes.
var filterFields = map[gwv1.HTTPRouteFilterType]string{
	gwv1.HTTPRouteFilterRequestHeaderModifier:  "requestHeaderModifier",
	gwv1.HTTPRouteFilterResponseHeaderModifier: "responseHeaderModifier",
	gwv1.HTTPRouteFilterRequestRedirect:        "requestRedirect",
	gwv1.HTTPRouteFilterURLRewrite:             "urlRewrite",
	gwv1.HTTPRouteFilterRequestMirror:          "requestMirror",
	gwv1.HTTPRouteFilterCORS:                   "cors",
	gwv1.HTTPRouteFilterExternalAuth:           "externalAuth",
	gwv1.HTTPRouteFilterExtensionRef:           "extensionRef",
}

// checkFilters checks a rule's (or, backend, a backendRef's) filters:
// each type with its own field and no other, the modifiers and rewrites
// at most once, not both a redirect and a rewrite.
func checkFilters(is *issues, path string, fs []gwv1.HTTPRouteFilter, backend bool) {
	checkFiltersOf(is, path, fs, backend, false)
}

// grpcFilterTypes are the filter types a GRPCRoute takes.
var grpcFilterTypes = []gwv1.HTTPRouteFilterType{
	gwv1.HTTPRouteFilterRequestHeaderModifier, gwv1.HTTPRouteFilterResponseHeaderModifier,
	gwv1.HTTPRouteFilterRequestMirror, gwv1.HTTPRouteFilterExtensionRef,
}

// checkFiltersOf is checkFilters, of a GRPCRoute's filters when grpc.
func checkFiltersOf(is *issues, path string, fs []gwv1.HTTPRouteFilter, backend, grpc bool) {
	seen := map[gwv1.HTTPRouteFilterType]int{}
	for i, f := range fs {
		p := fmt.Sprintf("%s[%d]", path, i)
		set := map[string]bool{
			"requestHeaderModifier": f.RequestHeaderModifier != nil, "responseHeaderModifier": f.ResponseHeaderModifier != nil,
			"requestRedirect": f.RequestRedirect != nil, "urlRewrite": f.URLRewrite != nil, "requestMirror": f.RequestMirror != nil,
			"cors": f.CORS != nil, "externalAuth": f.ExternalAuth != nil, "extensionRef": f.ExtensionRef != nil,
		}
		want, known := filterFields[f.Type]
		switch {
		case f.Type == "":
			is.errf(p+".type", "type is required")
			continue
		case grpc && !slices.Contains(grpcFilterTypes, f.Type):
			is.errf(p+".type", "invalid filter type %q: want one of RequestHeaderModifier, ResponseHeaderModifier, RequestMirror, ExtensionRef", f.Type)
			continue
		case !known:
			is.errf(p+".type", "invalid filter type %q: want one of RequestHeaderModifier, ResponseHeaderModifier, RequestRedirect, URLRewrite, RequestMirror, CORS, ExternalAuth, ExtensionRef", f.Type)
			continue
		case !set[want]:
			is.errf(p+"."+want, "%s is required for filter type %s", want, f.Type)
		}
		for _, field := range slices.Sorted(maps.Keys(set)) {
			if set[field] && field != want {
				is.errf(p+"."+field, "%s must not be set for filter type %s", field, f.Type)
			}
		}
		switch f.Type {
		case gwv1.HTTPRouteFilterRequestHeaderModifier, gwv1.HTTPRouteFilterResponseHeaderModifier,
			gwv1.HTTPRouteFilterRequestRedirect, gwv1.HTTPRouteFilterURLRewrite:
			if j, dup := seen[f.Type]; dup {
				is.errf(p+".type", "filter type %s is already used by %s[%d]; it may appear once", f.Type, path, j)
			}
			seen[f.Type] = i
		case gwv1.HTTPRouteFilterCORS:
			if j, dup := seen[f.Type]; dup {
				is.errf(p+".type", "filter type %s is already used by %s[%d]; it may appear once", f.Type, path, j)
			}
			seen[f.Type] = i
			if c := f.CORS; c != nil && c.MaxAge < 0 {
				is.errf(p+".cors.maxAge", "maxAge must not be negative, got %d", c.MaxAge)
			}
		case gwv1.HTTPRouteFilterExternalAuth, gwv1.HTTPRouteFilterExtensionRef:
			is.warnf(p+".type", "filter type %s is not supported by Weft yet: requests this rule matches are answered 500, as the Gateway API requires", f.Type)
		}
		if backend && (f.Type == gwv1.HTTPRouteFilterRequestRedirect || f.Type == gwv1.HTTPRouteFilterURLRewrite || f.Type == gwv1.HTTPRouteFilterRequestMirror || f.Type == gwv1.HTTPRouteFilterCORS) {
			is.errf(p+".type", "filter type %s is not supported on a backendRef by Weft; put it on the rule", f.Type)
		}
		checkHeaderFilter(is, p+".requestHeaderModifier", f.RequestHeaderModifier)
		checkHeaderFilter(is, p+".responseHeaderModifier", f.ResponseHeaderModifier)
		if r := f.RequestRedirect; r != nil {
			rp := p + ".requestRedirect"
			if r.Scheme != nil && *r.Scheme != "http" && *r.Scheme != "https" {
				is.errf(rp+".scheme", "invalid scheme %q: want http or https", *r.Scheme)
			}
			if r.Hostname != nil {
				checkHostname(is, rp+".hostname", string(*r.Hostname), false)
			}
			if r.Port != nil && (*r.Port < 1 || *r.Port > 65535) {
				is.errf(rp+".port", "port %d is out of range [1, 65535]", *r.Port)
			}
			if r.StatusCode != nil && !slices.Contains(gwRedirectCodes, *r.StatusCode) {
				is.errf(rp+".statusCode", "invalid statusCode %d: want 301, 302, 303, 307 or 308", *r.StatusCode)
			}
			checkPathModifier(is, rp+".path", r.Path)
		}
		if r := f.URLRewrite; r != nil {
			if r.Hostname != nil {
				checkHostname(is, p+".urlRewrite.hostname", string(*r.Hostname), false)
			}
			checkPathModifier(is, p+".urlRewrite.path", r.Path)
		}
		if m := f.RequestMirror; m != nil {
			mp := p + ".requestMirror"
			checkBackendRef(is, mp+".backendRef", m.BackendRef)
			if m.Percent != nil && m.Fraction != nil {
				is.errf(mp, "set only one of percent and fraction")
			}
			if m.Percent != nil && (*m.Percent < 0 || *m.Percent > 100) {
				is.errf(mp+".percent", "percent %d is out of range [0, 100]", *m.Percent)
			}
			if fr := m.Fraction; fr != nil {
				den := int32(100)
				if fr.Denominator != nil {
					den = *fr.Denominator
				}
				if den < 1 || fr.Numerator < 0 || fr.Numerator > den {
					is.errf(mp+".fraction", "numerator must be between 0 and the denominator, which must be at least 1")
				}
			}
		}
	}
	if _, r := seen[gwv1.HTTPRouteFilterRequestRedirect]; r {
		if _, w := seen[gwv1.HTTPRouteFilterURLRewrite]; w {
			is.errf(path, "a RequestRedirect and a URLRewrite cannot be used together")
		}
	}
}

func checkHeaderFilter(is *issues, path string, f *gwv1.HTTPHeaderFilter) {
	if f == nil {
		return
	}
	for _, list := range []struct {
		name    string
		headers []gwv1.HTTPHeader
	}{{"set", f.Set}, {"add", f.Add}} {
		seen := map[string]int{}
		for i, h := range list.headers {
			p := fmt.Sprintf("%s.%s[%d].name", path, list.name, i)
			if !gwHeaderName.MatchString(string(h.Name)) {
				is.errf(p, "invalid header name %q", h.Name)
			}
			key := strings.ToLower(string(h.Name))
			if j, dup := seen[key]; dup {
				is.errf(p, "header %q is already in %s[%d]; names must be unique (case-insensitively)", h.Name, list.name, j)
			}
			seen[key] = i
		}
	}
	for i, h := range f.Remove {
		if !gwHeaderName.MatchString(h) {
			is.errf(fmt.Sprintf("%s.remove[%d]", path, i), "invalid header name %q", h)
		}
	}
}

func checkPathModifier(is *issues, path string, m *gwv1.HTTPPathModifier) {
	if m == nil {
		return
	}
	switch m.Type {
	case gwv1.FullPathHTTPPathModifier:
		if m.ReplaceFullPath == nil {
			is.errf(path+".replaceFullPath", "replaceFullPath is required for type ReplaceFullPath")
		}
		if m.ReplacePrefixMatch != nil {
			is.errf(path+".replacePrefixMatch", "replacePrefixMatch must not be set for type ReplaceFullPath")
		}
	case gwv1.PrefixMatchHTTPPathModifier:
		if m.ReplacePrefixMatch == nil {
			is.errf(path+".replacePrefixMatch", "replacePrefixMatch is required for type ReplacePrefixMatch")
		}
		if m.ReplaceFullPath != nil {
			is.errf(path+".replaceFullPath", "replaceFullPath must not be set for type ReplacePrefixMatch")
		}
	default:
		is.errf(path+".type", "invalid type %q: want ReplaceFullPath or ReplacePrefixMatch", m.Type)
	}
}
