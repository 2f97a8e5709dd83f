// Package registry is Weft's one model of services and endpoints. Every
// registry source (static ServiceEntry/WorkloadEntry today, Kubernetes and
// Consul later) produces the same Service and Endpoint values, and an
// immutable Snapshot indexes them for the xDS generators.
package registry

import (
	"cmp"
	"net/netip"
	"slices"
	"sort"
	"strings"
)

// DefaultDomainSuffix is the cluster domain used to expand short names.
const DefaultDomainSuffix = "cluster.local"

// Protocol is a service port's application protocol, spelled as Istio does.
type Protocol string

// Protocols Weft understands. Anything else is treated as TCP.
const (
	HTTP  Protocol = "HTTP"
	HTTP2 Protocol = "HTTP2"
	GRPC  Protocol = "GRPC"
	HTTPS Protocol = "HTTPS"
	TLS   Protocol = "TLS"
	TCP   Protocol = "TCP"
	// Auto is a port whose protocol is not declared (a Kubernetes port
	// with neither appProtocol nor a protocol name, a ServiceEntry port
	// without protocol): a captured sidecar detects HTTP/1.1 and h2c from
	// a connection's first bytes and routes it as HTTP, and carries
	// anything else as TCP (Istio's protocol sniffing). Elsewhere (an
	// explicit proxy, which only carries HTTP it is sent) it is TCP.
	Auto Protocol = "AUTO"
)

// ParseProtocol maps an Istio protocol name (case-insensitive, "GRPC-Web"
// included) to a Protocol. Unknown names return TCP and false.
func ParseProtocol(s string) (Protocol, bool) {
	switch strings.ToUpper(s) {
	case "HTTP":
		return HTTP, true
	case "HTTP2":
		return HTTP2, true
	case "GRPC", "GRPC-WEB":
		return GRPC, true
	case "HTTPS":
		return HTTPS, true
	case "TLS":
		return TLS, true
	case "TCP", "MONGO", "MYSQL", "REDIS":
		return TCP, true
	}
	return TCP, false
}

// IsHTTP reports whether the port carries HTTP of any version.
func (p Protocol) IsHTTP() bool { return p == HTTP || p == HTTP2 || p == GRPC }

// Sniffed reports whether a captured sidecar detects the port's protocol
// from each connection's first bytes.
func (p Protocol) Sniffed() bool { return p == Auto }

// IsHTTP2 reports whether upstream connections must speak HTTP/2 (h2c).
func (p Protocol) IsHTTP2() bool { return p == HTTP2 || p == GRPC }

// Port is one port of a service.
type Port struct {
	Name     string
	Number   uint32
	Protocol Protocol
	// TargetPort is the default endpoint port when an endpoint does not map
	// this port by name; zero means Number.
	TargetPort uint32
	// TargetPortName is a Kubernetes Service port's named targetPort ("" when
	// numeric): a selected workload receives the port on its port of that
	// name.
	TargetPortName string
}

// Service is a named, addressable set of endpoints.
type Service struct {
	// Hostname is the fully qualified name, e.g. reviews.default.svc.cluster.local.
	Hostname  string
	Namespace string
	Ports     []Port
	// Aliases are further names clients may use for the service (Consul's
	// bare service name, "order" for order.service.consul). They are
	// domains of the service's virtual hosts, not hosts of their own:
	// routing rules, subsets and clusters are those of Hostname.
	Aliases []string
	// Source names where the service came from ("static", "kubernetes", …),
	// for diagnostics only.
	Source string
	// Selector, when not empty, are the labels of the workloads the
	// service selects (a Kubernetes Service's spec.selector). Its own
	// registry provides the endpoints of its own workloads (Pods, through
	// EndpointSlices); workloads of other registries in its namespace
	// whose labels match — WorkloadEntries, auto-registered VMs — become
	// endpoints too (aggregate.Merge), as Istio's Services select
	// WorkloadEntries.
	Selector map[string]string
	// Addresses are the service's virtual IPs (a Kubernetes Service's
	// cluster IPs, a ServiceEntry's spec.addresses): a captured client
	// dialling one of them on a service port reaches the service. Empty
	// for headless and ExternalName services. Only read.
	Addresses []netip.Addr
	// Resolution is how proxies find the service's endpoints: from the
	// control plane (EDS, the zero value) or by resolving the endpoints'
	// DNS names themselves (a ServiceEntry's resolution DNS or
	// DNS_ROUND_ROBIN).
	Resolution Resolution
	// ExportTo lists the namespaces whose sidecars may see the service
	// (a ServiceEntry's spec.exportTo, a Kubernetes Service's
	// networking.istio.io/exportTo annotation, "." resolved to its own
	// namespace): nil, or "*" among them, is every namespace; an empty
	// non-nil list ("~") none.
	ExportTo []string
	// TrafficDistribution is where clients should prefer endpoints, from
	// a Kubernetes Service's spec.trafficDistribution (or Istio's
	// networking.istio.io/traffic-distribution annotation), normalized:
	// TrafficPreferSameZone ("PreferClose" too), TrafficPreferSameNode,
	// or "" (anywhere).
	TrafficDistribution string
}

// Values of Service.TrafficDistribution.
const (
	TrafficPreferSameZone = "PreferSameZone"
	TrafficPreferSameNode = "PreferSameNode"
)

// ParseTrafficDistribution normalizes a trafficDistribution value (the
// Kubernetes field's or the annotation's, case-insensitive): "" for any
// other value.
func ParseTrafficDistribution(v string) string {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "preferclose", "prefersamezone":
		return TrafficPreferSameZone
	case "prefersamenode":
		return TrafficPreferSameNode
	}
	return ""
}

// Resolution is how a service's endpoint addresses become the addresses
// proxies connect to, as a ServiceEntry's resolution says.
type Resolution int

// Resolutions.
const (
	// ClientSide: the endpoints are addresses the control plane sends
	// (EDS): Kubernetes, Consul, ServiceEntry resolution STATIC or NONE.
	ClientSide Resolution = iota
	// DNS: every endpoint is a name (or an IP address) the proxy
	// resolves, and every address of every name is a host of the
	// cluster (Envoy's STRICT_DNS). A ServiceEntry with resolution DNS
	// and no endpoints has one endpoint per port: its host.
	DNS
	// DNSRoundRobin: the one endpoint is a name the proxy resolves, and
	// new connections go to the first address of the latest answer
	// (Envoy's LOGICAL_DNS).
	DNSRoundRobin
)

// String is the ServiceEntry's spelling of the resolution.
func (r Resolution) String() string {
	switch r {
	case DNS:
		return "DNS"
	case DNSRoundRobin:
		return "DNS_ROUND_ROBIN"
	}
	return "CLIENT_SIDE"
}

// ResolvedByDNS reports whether proxies resolve the endpoints' names.
func (r Resolution) ResolvedByDNS() bool { return r == DNS || r == DNSRoundRobin }

// Port returns the service port with the given number.
func (s *Service) Port(number uint32) (Port, bool) {
	for _, p := range s.Ports {
		if p.Number == number {
			return p, true
		}
	}
	return Port{}, false
}

// Health of an endpoint as the registry sees it.
type Health int

// Health values.
const (
	Healthy Health = iota
	Unhealthy
	// Draining is an endpoint that is going away (a terminating Pod that
	// still serves): it gets no new requests, as Envoy's DRAINING.
	Draining
)

// Endpoint is one instance of a service on one service port.
type Endpoint struct {
	// ServiceHostname and ServicePort identify the service port this
	// endpoint serves.
	ServiceHostname string
	ServicePort     uint32
	// Address and Port are where the endpoint receives traffic (for a
	// sidecar-fronted workload: the sidecar's inbound listener).
	Address string
	Port    uint32
	// Labels select subsets (version, stage, canarytag, …).
	Labels map[string]string
	// Locality is "region/zone/subzone"; any part may be empty.
	Locality string
	// Weight is the relative load-balancing weight; zero means 1.
	Weight         uint32
	ServiceAccount string
	// WorkloadName and Namespace name the workload (for metrics).
	WorkloadName string
	Namespace    string
	Health       Health
}

// Snapshot is an immutable view of every service and endpoint in the mesh.
// Build one with NewSnapshot; do not modify it after.
type Snapshot struct {
	services  map[string]*Service
	endpoints map[string][]*Endpoint // by service hostname
	hostnames []string               // sorted
	workloads []*Workload            // sorted by namespace, name
	byAddr    map[netip.Addr][]*Service
	// epsAt indexes endpoints by address, in EndpointsAt's order: a
	// generator asks once per proxy, on every push.
	epsAt map[string][]*Endpoint
}

// NewSnapshot indexes services and endpoints. Endpoints of unknown services
// are kept (a generator may still want them) and sorted deterministically.
// When two services share a hostname the first one wins.
func NewSnapshot(services []*Service, endpoints []*Endpoint) *Snapshot {
	s := &Snapshot{services: map[string]*Service{}, endpoints: map[string][]*Endpoint{}}
	for _, svc := range services {
		if _, dup := s.services[svc.Hostname]; dup {
			continue
		}
		s.services[svc.Hostname] = svc
		s.hostnames = append(s.hostnames, svc.Hostname)
	}
	sort.Strings(s.hostnames)
	for _, h := range s.hostnames {
		for _, a := range s.services[h].Addresses {
			a = a.Unmap()
			if s.byAddr == nil {
				s.byAddr = map[netip.Addr][]*Service{}
			}
			s.byAddr[a] = append(s.byAddr[a], s.services[h])
		}
	}
	for _, ep := range endpoints {
		s.endpoints[ep.ServiceHostname] = append(s.endpoints[ep.ServiceHostname], ep)
	}
	for _, eps := range s.endpoints {
		sort.SliceStable(eps, func(i, j int) bool {
			if eps[i].ServicePort != eps[j].ServicePort {
				return eps[i].ServicePort < eps[j].ServicePort
			}
			if eps[i].Address != eps[j].Address {
				return eps[i].Address < eps[j].Address
			}
			return eps[i].Port < eps[j].Port
		})
	}
	s.epsAt = map[string][]*Endpoint{}
	for _, h := range sortedKeys(s.endpoints) {
		for _, ep := range s.endpoints[h] {
			s.epsAt[ep.Address] = append(s.epsAt[ep.Address], ep)
		}
	}
	return s
}

// Service returns the service with the given FQDN, or nil.
func (s *Snapshot) Service(hostname string) *Service {
	if s == nil {
		return nil
	}
	return s.services[hostname]
}

// Services returns all services sorted by hostname.
func (s *Snapshot) Services() []*Service {
	if s == nil {
		return nil
	}
	out := make([]*Service, 0, len(s.hostnames))
	for _, h := range s.hostnames {
		out = append(out, s.services[h])
	}
	return out
}

// ServiceAt returns the services whose virtual IPs include a, sorted by
// hostname. There is more than one only when services overlap (two
// ServiceEntries written with one address); callers take the first, as
// Istio does. An IPv4-mapped IPv6 address is looked up as IPv4.
func (s *Snapshot) ServiceAt(a netip.Addr) []*Service {
	if s == nil {
		return nil
	}
	return s.byAddr[a.Unmap()]
}

// Endpoints returns the endpoints of one service port (all ports when port
// is zero), sorted by port, address.
func (s *Snapshot) Endpoints(hostname string, port uint32) []*Endpoint {
	if s == nil {
		return nil
	}
	all := s.endpoints[hostname]
	if port == 0 {
		return all
	}
	var out []*Endpoint
	for _, ep := range all {
		if ep.ServicePort == port {
			out = append(out, ep)
		}
	}
	return out
}

// EndpointsAt returns every endpoint whose address is one of addrs, sorted
// by service hostname, service port, address. The generators use it to find
// the workloads a proxy fronts. The result is shared: read only.
func (s *Snapshot) EndpointsAt(addrs []string) []*Endpoint {
	if s == nil || len(addrs) == 0 {
		return nil
	}
	if len(addrs) == 1 {
		return s.epsAt[addrs[0]]
	}
	var out []*Endpoint
	seen := make(map[string]bool, len(addrs))
	for _, a := range addrs {
		if !seen[a] {
			seen[a] = true
			out = append(out, s.epsAt[a]...)
		}
	}
	slices.SortStableFunc(out, func(a, b *Endpoint) int {
		return cmp.Or(cmp.Compare(a.ServiceHostname, b.ServiceHostname), cmp.Compare(a.ServicePort, b.ServicePort),
			cmp.Compare(a.Address, b.Address), cmp.Compare(a.Port, b.Port))
	})
	return out
}

func sortWorkloads(ws []*Workload) []*Workload {
	out := append([]*Workload(nil), ws...)
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// LabelString renders labels as "{k=v, k=v}", sorted by key, for messages.
func LabelString(l map[string]string) string {
	keys := sortedKeys(l)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+l[k])
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// HasLabels reports whether have includes every label of want (an empty
// want selects everything, as a subset without labels does).
func HasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if got, ok := have[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// ExportedTo reports whether the sidecars of namespace ns may see s.
func (s *Service) ExportedTo(ns string) bool {
	if s.ExportTo == nil {
		return true
	}
	for _, e := range s.ExportTo {
		if e == "*" || e == ns {
			return true
		}
	}
	return false
}

// ResolveExportTo turns an exportTo list of a resource of namespace ns
// into Service.ExportTo: nil for every namespace (none given, or "*"),
// "." as ns, "~" as none.
func ResolveExportTo(exportTo []string, ns string) []string {
	if len(exportTo) == 0 {
		return nil
	}
	out := make([]string, 0, len(exportTo))
	for _, e := range exportTo {
		switch e {
		case "*":
			return nil
		case "~":
		case ".":
			out = append(out, ns)
		default:
			out = append(out, e)
		}
	}
	return out
}
