package mesh

import (
	"fmt"
	"strings"
	"sync"

	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/registry"
)

// Scoping: which services a proxy is sent.
//
// A Sidecar resource (config.SelectSidecar picks the one of a workload)
// lists egress hosts, "namespace/dnsName", per port or for every port; a
// proxy is sent the clusters, endpoints and routes of the service ports
// its Sidecar's egress hosts match, and nothing of the others, as Istio's
// SidecarScope. Without a Sidecar a proxy sees every service
// (EgressScopeMesh, Istio's default), or, under EgressScopeNamespace, the
// services of its own namespace and the root namespace plus every service
// the VirtualServices of those reach: a proxy's configuration then grows
// with what it calls, not with the mesh. Whatever the scope, a service
// is never sent to the sidecars of a namespace its exportTo leaves out.

// EgressScope is what a proxy without a Sidecar is sent.
type EgressScope string

// Egress scopes.
const (
	// EgressScopeMesh: every service of the mesh (Istio's default).
	EgressScopeMesh EgressScope = "mesh"
	// EgressScopeNamespace: the services of the proxy's namespace and of
	// the root namespace, and the destinations of their routes.
	EgressScopeNamespace EgressScope = "namespace"
)

// ParseEgressScope reads "mesh" or "namespace".
func ParseEgressScope(s string) (EgressScope, error) {
	switch e := EgressScope(s); e {
	case EgressScopeMesh, EgressScopeNamespace:
		return e, nil
	}
	return "", fmt.Errorf("egress scope %q: want %s or %s", s, EgressScopeMesh, EgressScopeNamespace)
}

// ScopeIndex answers, per proxy, what it sees. Safe for concurrent use;
// what it computes is cached for the snapshot's lifetime (one entry per
// Sidecar and namespace that asked).
type ScopeIndex struct {
	in       scopeInputs
	sidecars []*config.Sidecar
	def      EgressScope
	exported bool     // some service is exported to fewer than every namespace
	cache    sync.Map // scopeKey → *Visibility
}

// scopeInputs is what of a snapshot the scopes read: the services (the
// registry's, never its endpoints), the VirtualServices, the root
// namespace. Not the snapshot itself, so that an index shared by later
// snapshots (BuildFrom) does not keep the one it was made in alive.
type scopeInputs struct {
	// always are the services every scoped proxy sees: the external
	// authorization providers of the mesh config, which its CUSTOM
	// AuthorizationPolicies may call whatever its Sidecar says.
	always         []hostPort
	rootNS, suffix string
	reg            *registry.Snapshot
	routes         *RouteIndex
}

func (in scopeInputs) resolve(host, ns string) string {
	return resolver{reg: in.reg, suffix: in.suffix}.resolve(host, ns)
}

type scopeKey struct {
	sidecar string // Meta.Key() of the Sidecar; "" for the default scope
	ns      string
}

// Visibility is the set of service ports one proxy is sent, and its
// outbound traffic policy. A nil *Visibility sees everything.
type Visibility struct {
	// Sidecar is the Sidecar that scoped it; nil for the default scope.
	Sidecar *config.Sidecar
	ports   map[string]map[uint32]bool // hostname → visible ports; nil map: every port
	otp     OutboundTrafficPolicy      // "": the mesh's
}

// Port reports whether port of svc is visible.
func (v *Visibility) Port(svc *registry.Service, port uint32) bool {
	if v == nil {
		return true
	}
	ports, ok := v.ports[svc.Hostname]
	return ok && (ports == nil || ports[port])
}

// Service reports whether any port of svc is visible.
func (v *Visibility) Service(svc *registry.Service) bool {
	if v == nil {
		return true
	}
	_, ok := v.ports[svc.Hostname]
	return ok
}

// Count is how many services are visible (-1: every service).
func (v *Visibility) Count() int {
	if v == nil {
		return -1
	}
	return len(v.ports)
}

// OutboundTrafficPolicy is the proxy's: its Sidecar's, else the mesh's.
func (v *Visibility) OutboundTrafficPolicy(s *Snapshot) OutboundTrafficPolicy {
	if v != nil && v.otp != "" {
		return v.otp
	}
	return s.OutboundTrafficPolicy
}

func newScopeIndex(s *Snapshot, sidecars []*config.Sidecar, def EgressScope) *ScopeIndex {
	if def == "" {
		def = EgressScopeMesh
	}
	in := scopeInputs{rootNS: s.RootNamespace, suffix: s.DomainSuffix, reg: s.Registry, routes: s.Routes, always: extAuthzServices(s)}
	x := &ScopeIndex{in: in, sidecars: sidecars, def: def}
	for _, svc := range s.Registry.Services() {
		if svc.ExportTo != nil {
			x.exported = true
			break
		}
	}
	return x
}

// For returns what a proxy of namespace ns with these labels sees.
func (x *ScopeIndex) For(ns string, labels map[string]string) *Visibility {
	if x == nil {
		return nil
	}
	sc := config.SelectSidecar(x.in.rootNS, ns, labels, x.sidecars)
	if sc == nil && x.def == EgressScopeMesh && !x.exported {
		return nil
	}
	key := scopeKey{ns: ns}
	if sc != nil {
		key.sidecar = sc.Key()
	}
	if v, ok := x.cache.Load(key); ok {
		return v.(*Visibility)
	}
	var v *Visibility
	switch {
	case sc != nil:
		v = x.withAlways(x.sidecarVisibility(sc, ns))
	case x.def == EgressScopeMesh:
		v = nil2all(&Visibility{ports: map[string]map[uint32]bool{}}, x.in.reg, ns)
	default:
		v = x.withAlways(x.namespaceVisibility(ns))
	}
	actual, _ := x.cache.LoadOrStore(key, v)
	return actual.(*Visibility)
}

// extAuthzServices are the services (and ports) of the mesh config's
// envoyExtAuthzHttp and envoyExtAuthzGrpc providers the registry has.
func extAuthzServices(s *Snapshot) []hostPort {
	var out []hostPort
	for _, p := range s.Telemetry.MeshConfig().GetExtensionProviders() {
		if p.GetEnvoyExtAuthzHttp() == nil && p.GetEnvoyExtAuthzGrpc() == nil {
			continue
		}
		if host := ExtAuthzHost(p); s.Registry.Service(host) != nil {
			out = append(out, hostPort{host, ExtAuthzPort(p)})
		}
	}
	return out
}

// withAlways adds the services every scoped proxy sees to v.
func (x *ScopeIndex) withAlways(v *Visibility) *Visibility {
	if v == nil || v.ports == nil {
		return v
	}
	for _, hp := range x.in.always {
		v.add(hp.host, hp.port)
	}
	return v
}

// ForGateway returns what a gateway of namespace ns sees: every service
// exported to ns (Sidecar resources do not apply to gateways, exportTo
// does, as in Istio).
func (x *ScopeIndex) ForGateway(ns string) *Visibility {
	if x == nil || !x.exported {
		return nil
	}
	key := scopeKey{sidecar: "\x00gateway", ns: ns}
	if v, ok := x.cache.Load(key); ok {
		return v.(*Visibility)
	}
	v := nil2all(&Visibility{ports: map[string]map[uint32]bool{}}, x.in.reg, ns)
	actual, _ := x.cache.LoadOrStore(key, v)
	return actual.(*Visibility)
}

// egressHost is one parsed "namespace/dnsName".
type egressHost struct {
	ns   string // "*" any, else a namespace ("." resolved)
	host string // "*", "*.suffix" or an FQDN
}

func (h egressHost) matches(svc *registry.Service) bool {
	if h.ns != "*" && h.ns != svc.Namespace {
		return false
	}
	if strings.HasPrefix(h.host, "*") {
		return hostMatchesWildcard(svc.Hostname, h.host)
	}
	return svc.Hostname == h.host
}

// sidecarVisibility applies sc's egress listeners to a proxy of
// namespace ns: a service port is visible when the listener of its port
// (else the port-less one) has a host matching the service.
func (x *ScopeIndex) sidecarVisibility(sc *config.Sidecar, ns string) *Visibility {
	v := &Visibility{Sidecar: sc, ports: map[string]map[uint32]bool{}}
	if tp := sc.Spec.GetOutboundTrafficPolicy(); tp != nil {
		switch tp.GetMode() {
		case networking.OutboundTrafficPolicy_REGISTRY_ONLY:
			v.otp = RegistryOnly
		case networking.OutboundTrafficPolicy_ALLOW_ANY:
			v.otp = AllowAny
		}
	}
	if len(sc.Spec.GetEgress()) == 0 {
		return nil2all(v, x.in.reg, ns)
	}
	byPort := map[uint32][]egressHost{}
	var anyPort []egressHost
	hasAnyPort := false
	for _, eg := range sc.Spec.GetEgress() {
		var hosts []egressHost
		for _, h := range eg.GetHosts() {
			hns, host, ok := strings.Cut(h, "/")
			if !ok || strings.HasPrefix(hns, "~") {
				continue
			}
			if hns == "." {
				hns = ns // the proxy's namespace, also for a root-namespace default
			}
			hosts = append(hosts, egressHost{ns: hns, host: host})
		}
		if eg.GetPort() == nil {
			anyPort, hasAnyPort = hosts, true
			continue
		}
		byPort[eg.GetPort().GetNumber()] = hosts
	}
	for _, svc := range x.in.reg.Services() {
		if !svc.ExportedTo(ns) {
			continue
		}
		for _, p := range svc.Ports {
			hosts, ok := byPort[p.Number]
			if !ok {
				if !hasAnyPort {
					continue
				}
				hosts = anyPort
			}
			for _, h := range hosts {
				if h.matches(svc) {
					v.add(svc.Hostname, p.Number)
					break
				}
			}
		}
	}
	return v
}

// nil2all makes v see every service exported to namespace ns (a Sidecar
// with only an outbound traffic policy; the mesh scope when some service
// is not exported everywhere).
func nil2all(v *Visibility, reg *registry.Snapshot, ns string) *Visibility {
	for _, svc := range reg.Services() {
		if svc.ExportedTo(ns) {
			v.ports[svc.Hostname] = nil
		}
	}
	return v
}

func (v *Visibility) add(host string, port uint32) {
	ports, ok := v.ports[host]
	if ok && ports == nil {
		return // every port already
	}
	if ports == nil {
		ports = map[uint32]bool{}
		v.ports[host] = ports
	}
	ports[port] = true
}

// namespaceVisibility is EgressScopeNamespace for a proxy of namespace
// ns: every port of the services of ns and of the root namespace, then,
// transitively, every service their VirtualServices route or mirror to.
func (x *ScopeIndex) namespaceVisibility(ns string) *Visibility {
	in := x.in
	v := &Visibility{ports: map[string]map[uint32]bool{}}
	var queue []string
	for _, svc := range in.reg.Services() {
		if (svc.Namespace == ns || svc.Namespace == in.rootNS) && svc.ExportedTo(ns) {
			v.ports[svc.Hostname] = nil
			queue = append(queue, svc.Hostname)
		}
	}
	for len(queue) > 0 {
		host := queue[0]
		queue = queue[1:]
		for _, vs := range in.routes.ForHostIn(host, ns) {
			for _, dst := range routeDestinations(vs.Spec) {
				fqdn := in.resolve(dst, vs.Namespace)
				if _, seen := v.ports[fqdn]; seen {
					continue
				}
				if svc := in.reg.Service(fqdn); svc == nil || !svc.ExportedTo(ns) {
					continue
				}
				v.ports[fqdn] = nil
				queue = append(queue, fqdn)
			}
		}
	}
	return v
}

// routeDestinations are the hosts a VirtualService sends to: route and
// mirror destinations of its HTTP, TLS and TCP routes.
func routeDestinations(vs *networking.VirtualService) []string {
	var out []string
	for _, r := range vs.GetHttp() {
		for _, d := range r.GetRoute() {
			out = append(out, d.GetDestination().GetHost())
		}
		if m := r.GetMirror(); m != nil {
			out = append(out, m.GetHost())
		}
		for _, m := range r.GetMirrors() {
			out = append(out, m.GetDestination().GetHost())
		}
	}
	for _, r := range vs.GetTls() {
		for _, d := range r.GetRoute() {
			out = append(out, d.GetDestination().GetHost())
		}
	}
	for _, r := range vs.GetTcp() {
		for _, d := range r.GetRoute() {
			out = append(out, d.GetDestination().GetHost())
		}
	}
	return out
}
