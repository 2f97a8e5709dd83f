package consul

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/consul/api"

	"weft.dev/weft/internal/registry"
)

// Keys a Consul service's meta (or a `key=value` tag) may set to tell Weft
// how to treat it. They configure the mapping and are not labels.
const (
	// MetaProtocol is the port protocol (http, http2, grpc, https, tls,
	// tcp), the key Istio's Consul adapter read.
	MetaProtocol = "protocol"
	// MetaHost names further mesh hosts the service also serves,
	// comma-separated (e.g. order.default.svc.cluster.local): the way a
	// Consul service and a Kubernetes Service become one host.
	MetaHost = "weft-host"
	// MetaServiceAccount is the instance's service account (its mesh
	// identity spiffe://<trust domain>/ns/<namespace>/sa/<account>).
	MetaServiceAccount = "service-account"
	// NodeMetaZone and NodeMetaSubzone are the node meta keys read for the
	// locality's zone and subzone when Consul reports no locality.
	NodeMetaZone    = "zone"
	NodeMetaSubzone = "subzone"
)

// consulService is the service of the Consul servers themselves; it is
// not part of the mesh.
const consulService = "consul"

// converter turns the health entries of Consul services into registry
// values. It is pure: the same input gives the same output.
type converter struct {
	source    string // Service.Source
	domain    string // "service.consul"
	namespace string // default namespace of services and endpoints
	alias     bool   // also publish the bare service name
}

// result is what one Consul service contributes to the snapshot.
type result struct {
	services  []*registry.Service
	endpoints []*registry.Endpoint
	warnings  []string // mapping problems worth a log line (e.g. an unknown protocol)
}

// hosts returns the mesh hosts of Consul service name: the FQDN
// <name>.<domain> first, then every host the instances name in MetaHost,
// sorted, without duplicates.
func (c converter) hosts(name string, entries []*api.ServiceEntry) []string {
	out := []string{name + "." + c.domain}
	var extra []string
	for _, e := range entries {
		for h := range strings.SplitSeq(instanceValue(e.Service, MetaHost), ",") {
			if h = strings.ToLower(strings.TrimSpace(h)); h != "" {
				extra = append(extra, h)
			}
		}
	}
	slices.Sort(extra)
	for _, h := range extra {
		if !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	return out
}

// aliases are the short names of the FQDN host: the bare service name
// when aliases are on and the name has no dot (a dotted name would read
// as another domain).
func (c converter) aliases(name string) []string {
	if !c.alias || strings.Contains(name, ".") {
		return nil
	}
	return []string{name}
}

// convert maps the instances of one Consul service (the answer of
// /v1/health/service/<name>) to registry services and endpoints. Instances
// of other kinds (Connect proxies, gateways) are left out.
func (c converter) convert(name string, entries []*api.ServiceEntry) result {
	var r result
	typical := make([]*api.ServiceEntry, 0, len(entries))
	for _, e := range entries {
		if e == nil || e.Service == nil || e.Node == nil || e.Service.Kind != api.ServiceKindTypical {
			continue
		}
		typical = append(typical, e)
	}
	if len(typical) == 0 {
		return r
	}
	slices.SortFunc(typical, func(a, b *api.ServiceEntry) int {
		return cmp.Or(cmp.Compare(a.Node.Node, b.Node.Node), cmp.Compare(a.Service.ID, b.Service.ID))
	})

	// Ports: one per distinct instance port; the first instance (in node,
	// ID order) with that port decides its protocol.
	byNumber := map[uint32]registry.Port{}
	for _, e := range typical {
		port, ok := instancePort(e.Service)
		if !ok {
			r.warnings = append(r.warnings, fmt.Sprintf("consul service %s: instance %s on node %s has no port; left out", name, e.Service.ID, e.Node.Node))
			continue
		}
		proto, known := protocolOf(e.Service)
		if !known {
			r.warnings = append(r.warnings, fmt.Sprintf("consul service %s: instance %s on node %s: unknown protocol %q, using TCP", name, e.Service.ID, e.Node.Node, instanceValue(e.Service, MetaProtocol)))
		}
		if have, dup := byNumber[port]; dup {
			if have.Protocol != proto {
				r.warnings = append(r.warnings, fmt.Sprintf("consul service %s: port %d is %s on one instance and %s on instance %s of node %s; using %s", name, port, have.Protocol, proto, e.Service.ID, e.Node.Node, have.Protocol))
			}
			continue
		}
		byNumber[port] = registry.Port{Name: strings.ToLower(string(proto)) + "-" + strconv.FormatUint(uint64(port), 10), Number: port, Protocol: proto}
	}
	if len(byNumber) == 0 {
		return r
	}
	ports := slices.SortedFunc(maps.Values(byNumber), func(a, b registry.Port) int { return cmp.Compare(a.Number, b.Number) })

	ns := c.namespace
	for _, e := range typical {
		if e.Service.Namespace != "" && e.Service.Namespace != "default" {
			ns = e.Service.Namespace // Consul Enterprise namespaces
			break
		}
	}
	for i, host := range c.hosts(name, typical) {
		svc := &registry.Service{Hostname: host, Namespace: cmp.Or(kubeNamespace(host), ns), Ports: ports, Source: c.source}
		if i == 0 {
			svc.Aliases = c.aliases(name)
		}
		r.services = append(r.services, svc)
		for _, e := range typical {
			port, ok := instancePort(e.Service)
			if !ok {
				continue
			}
			r.endpoints = append(r.endpoints, c.endpoint(host, port, e))
		}
	}
	return r
}

// endpoint maps one Consul instance to the endpoint of host on its port.
func (c converter) endpoint(host string, port uint32, e *api.ServiceEntry) *registry.Endpoint {
	addr := e.Service.Address
	if addr == "" {
		addr = e.Node.Address
	}
	health, weight := healthOf(e)
	return &registry.Endpoint{
		ServiceHostname: host,
		ServicePort:     port,
		Address:         addr,
		Port:            port,
		Labels:          Labels(e.Node.Meta, e.Service.Tags, e.Service.Meta),
		Locality:        locality(e),
		Weight:          weight,
		ServiceAccount:  e.Service.Meta[MetaServiceAccount],
		WorkloadName:    e.Node.Node,
		Namespace:       c.instanceNamespace(e.Service),
		Health:          health,
	}
}

// instanceNamespace is the namespace of one instance, the same for all
// its endpoints (its identity is spiffe://<trust domain>/ns/<namespace>/sa/
// <service-account>): its Consul Enterprise namespace, else the namespace
// of the first (sorted) Kubernetes host it names in weft-host — a VM
// migrating into a namespace has that namespace's identity —, else the
// default namespace.
func (c converter) instanceNamespace(s *api.AgentService) string {
	if s.Namespace != "" && s.Namespace != "default" {
		return s.Namespace
	}
	hosts := strings.Split(instanceValue(s, MetaHost), ",")
	for i := range hosts {
		hosts[i] = strings.ToLower(strings.TrimSpace(hosts[i]))
	}
	slices.Sort(hosts)
	for _, h := range hosts {
		if ns := kubeNamespace(h); ns != "" {
			return ns
		}
	}
	return c.namespace
}

// kubeNamespace is the namespace of a Kubernetes host
// <name>.<namespace>.svc[.<domain suffix>], "" for any other host.
func kubeNamespace(host string) string {
	parts := strings.SplitN(host, ".", 4)
	if len(parts) >= 3 && parts[2] == "svc" && parts[0] != "" && parts[1] != "" {
		return parts[1]
	}
	return ""
}

// instancePort is the instance's port, false when it has none (a service
// registered without a port, or one only reachable by a socket path).
func instancePort(s *api.AgentService) (uint32, bool) {
	if s.Port <= 0 || s.Port > 65535 {
		return 0, false
	}
	return uint32(s.Port), true
}

// protocolOf reads the port protocol from meta `protocol`, else a tag
// `protocol=…`; TCP when neither is set (as Istio's Consul adapter did:
// a byte stream works for every protocol, HTTP parsing does not). known is
// false for a value Weft does not understand.
func protocolOf(s *api.AgentService) (p registry.Protocol, known bool) {
	v := instanceValue(s, MetaProtocol)
	if v == "" {
		return registry.TCP, true
	}
	return registry.ParseProtocol(v)
}

// instanceValue is meta[key], else the value of the first tag `key=value`
// (or `key|value`), else "".
func instanceValue(s *api.AgentService, key string) string {
	if v, ok := s.Meta[key]; ok {
		return v
	}
	for _, t := range s.Tags {
		if k, v, ok := splitTag(t); ok && k == key {
			return v
		}
	}
	return ""
}

// splitTag splits a tag `key=value`, or `key|value` as Istio's Consul
// adapter wrote labels, at the first separator. ok is false for a tag
// without one.
func splitTag(t string) (key, value string, ok bool) {
	i := strings.IndexAny(t, "=|")
	if i <= 0 {
		return "", "", false
	}
	return t[:i], t[i+1:], true
}

// reserved are the keys that configure the mapping; they never become
// labels.
var reserved = map[string]bool{MetaProtocol: true, MetaHost: true, MetaServiceAccount: true}

// Labels computes an instance's labels, later sources overriding earlier
// ones for the same key:
//
//  1. node meta (every service on the node shares it), except Consul's
//     own keys (prefix "consul-");
//  2. service tags: `key=value` (or Istio's `key|value`) is label key:
//     value; a tag without a separator, such as `canary`, is label
//     canary: "" (a presence label, as in Kubernetes); when a key appears
//     twice the later tag wins;
//  3. service meta.
//
// The keys that configure the mapping (protocol, weft-host,
// service-account) are not labels. The result is never nil.
func Labels(nodeMeta map[string]string, tags []string, serviceMeta map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range nodeMeta {
		if !strings.HasPrefix(k, "consul-") && !reserved[k] {
			out[k] = v
		}
	}
	for _, t := range tags {
		t = strings.TrimSpace(t)
		if t == "" {
			continue
		}
		k, v, ok := splitTag(t)
		if !ok {
			k, v = t, ""
		}
		if !reserved[k] {
			out[k] = v
		}
	}
	for k, v := range serviceMeta {
		if !reserved[k] {
			out[k] = v
		}
	}
	return out
}

// healthOf maps the instance's checks (node and service checks, as Consul
// aggregates them: maintenance > critical > warning > passing) to endpoint
// health and load-balancing weight: passing → Healthy with the instance's
// passing weight; warning → Healthy with its warning weight (Consul DNS
// keeps answering with warning instances too), Unhealthy when that weight
// is 0; critical, maintenance and any unknown status → Unhealthy.
func healthOf(e *api.ServiceEntry) (registry.Health, uint32) {
	w := e.Service.Weights
	switch e.Checks.AggregatedStatus() {
	case api.HealthPassing:
		return registry.Healthy, weight(w.Passing)
	case api.HealthWarning:
		if w.Warning == 0 && w.Passing > 0 {
			return registry.Unhealthy, 1
		}
		return registry.Healthy, weight(w.Warning)
	default:
		return registry.Unhealthy, 1
	}
}

func weight(w int) uint32 {
	if w <= 0 {
		return 1
	}
	return uint32(min(w, 1<<16)) // Consul bounds weights; keep Envoy's sum in range anyway
}

// locality is "region/zone/subzone": the region is the service's (or
// node's) Consul locality region, else the datacenter; the zone is the
// Consul locality zone, else node meta `zone`; the subzone is node meta
// `subzone`.
func locality(e *api.ServiceEntry) string {
	region, zone := e.Node.Datacenter, e.Node.Meta[NodeMetaZone]
	if e.Service.Datacenter != "" {
		region = e.Service.Datacenter
	}
	for _, l := range []*api.Locality{e.Node.Locality, e.Service.Locality} {
		if l == nil {
			continue
		}
		if l.Region != "" {
			region = l.Region
		}
		if l.Zone != "" {
			zone = l.Zone
		}
	}
	sub := e.Node.Meta[NodeMetaSubzone]
	return strings.TrimRight(region+"/"+zone+"/"+sub, "/")
}
