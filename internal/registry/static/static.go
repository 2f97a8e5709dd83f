// Package static builds the registry model from config: ServiceEntries
// become services, and their inline endpoints or the WorkloadEntries their
// workloadSelector picks become endpoints.
package static

import (
	"maps"
	"net/netip"
	"slices"

	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/registry"
)

// Source is the Service.Source of every service Build produces.
const Source = "static"

// Build turns the ServiceEntries of cfg (any resolution: STATIC, NONE,
// DNS; inline endpoints or a workloadSelector) and the WorkloadEntries they
// select into registry services and endpoints. A ServiceEntry with
// resolution DNS or DNS_ROUND_ROBIN and neither endpoints nor a
// workloadSelector has its host as its endpoint (the proxies resolve it). There is one Service per
// ServiceEntry host, resolved in the ServiceEntry's namespace, and one
// Endpoint per (host, service port, workload). A workload's endpoint port is
// its ports[<service port name>], else the service port's target port, else
// the service port number. When several ServiceEntries define the same
// FQDN, the one seen first (config.FirstSeen) defines it, with its ports
// and endpoints; config validation reports the others. A nil cfg yields
// an empty snapshot. Build is a pure function; it does not modify cfg.
func Build(cfg *config.Snapshot, domainSuffix string) *registry.Snapshot {
	return BuildWith(cfg, Options{DomainSuffix: domainSuffix})
}

// Options configure BuildWith.
type Options struct {
	// DomainSuffix expands short hosts; "" means the default.
	DomainSuffix string
	// Workloads are the other registries' instances (Kubernetes Pods, …)
	// that a ServiceEntry's workloadSelector selects besides
	// WorkloadEntries, as Istio's ServiceEntry selects Pods: those in the
	// ServiceEntry's namespace whose labels include the selector's. A
	// workload's endpoint port is its Ports[<service port name>], else
	// the service port's target port, else its number; its health is the
	// workload's. The slice is only read.
	Workloads []*registry.Workload
}

// BuildWith is Build with ServiceEntries' workloadSelectors also selecting
// opts.Workloads.
func BuildWith(cfg *config.Snapshot, opts Options) *registry.Snapshot {
	domainSuffix := opts.DomainSuffix
	if cfg == nil {
		return registry.NewSnapshot(nil, nil)
	}
	var (
		services  []*registry.Service
		endpoints []*registry.Endpoint
		seen      = map[string]bool{}
	)
	ses := slices.Clone(cfg.ServiceEntries)
	slices.SortFunc(ses, config.FirstSeen)
	ix := indexWorkloads(cfg, opts.Workloads)
	for _, se := range ses {
		ports := servicePorts(se.Spec)
		addrs := serviceAddresses(se.Spec)
		res := resolution(se.Spec.GetResolution())
		workloads := selectWorkloads(se, ix)
		for _, h := range se.Spec.GetHosts() {
			host := registry.ResolveHost(h, se.Namespace, domainSuffix, nil)
			if seen[host] {
				continue // written twice, or defined by an earlier ServiceEntry: the first wins
			}
			seen[host] = true
			services = append(services, &registry.Service{
				Hostname:   host,
				Namespace:  se.Namespace,
				Ports:      ports,
				Source:     Source,
				Addresses:  addrs,
				Resolution: res,
				ExportTo:   registry.ResolveExportTo(se.Spec.GetExportTo(), se.Namespace),
			})
			for _, p := range ports {
				for _, w := range workloads {
					endpoints = append(endpoints, endpoint(host, p, w))
				}
				if res.ResolvedByDNS() && len(se.Spec.GetEndpoints()) == 0 && se.Spec.GetWorkloadSelector() == nil {
					endpoints = append(endpoints, hostEndpoint(host, p, se))
				}
			}
		}
	}
	return registry.New(registry.Contents{Services: services, Endpoints: endpoints, Workloads: workloadEntries(cfg)})
}

// resolution is the registry's resolution of a ServiceEntry's.
func resolution(r networking.ServiceEntry_Resolution) registry.Resolution {
	switch r {
	case networking.ServiceEntry_DNS:
		return registry.DNS
	case networking.ServiceEntry_DNS_ROUND_ROBIN:
		return registry.DNSRoundRobin
	}
	return registry.ClientSide
}

// hostEndpoint is the endpoint of a ServiceEntry with resolution DNS (or
// DNS_ROUND_ROBIN) that has neither endpoints nor a workloadSelector: the
// host itself, resolved by the proxies, at the port's target port (else
// its number), as Istio's conversion makes it. It has no labels (so no
// mutual TLS) and is named after the ServiceEntry.
func hostEndpoint(host string, p registry.Port, se *config.ServiceEntry) *registry.Endpoint {
	port := p.TargetPort
	if port == 0 {
		port = p.Number
	}
	return &registry.Endpoint{
		ServiceHostname: host,
		ServicePort:     p.Number,
		Address:         host,
		Port:            port,
		WorkloadName:    se.Name,
		Namespace:       se.Namespace,
		Health:          registry.Healthy,
	}
}

// workloadEntries are the config's WorkloadEntries as workloads, which
// other registries' services (a Kubernetes Service's selector) may select.
func workloadEntries(cfg *config.Snapshot) []*registry.Workload {
	var out []*registry.Workload
	for _, we := range cfg.WorkloadEntries {
		if we.Spec.GetAddress() == "" {
			continue
		}
		out = append(out, &registry.Workload{
			Name: we.Name, Namespace: we.Namespace, Address: we.Spec.GetAddress(),
			Labels: we.Spec.GetLabels(), ServiceAccount: we.Spec.GetServiceAccount(), Locality: we.Spec.GetLocality(),
			Health: registry.Healthy, Ports: we.Spec.GetPorts(), Source: Source,
		})
	}
	return out
}

// serviceAddresses are a ServiceEntry's spec.addresses that are single IPs
// (a /32 or /128 CIDR counts as one). Wider CIDRs, allowed with
// resolution NONE or STATIC, are not virtual IPs of one service and are
// not modelled yet; validation rejects anything unparseable.
func serviceAddresses(se *networking.ServiceEntry) []netip.Addr {
	var out []netip.Addr
	for _, a := range se.GetAddresses() {
		if ip, err := netip.ParseAddr(a); err == nil {
			out = append(out, ip.Unmap())
		} else if p, err := netip.ParsePrefix(a); err == nil && p.IsSingleIP() {
			out = append(out, p.Addr().Unmap())
		}
	}
	return out
}

func servicePorts(se *networking.ServiceEntry) []registry.Port {
	ports := make([]registry.Port, 0, len(se.GetPorts()))
	for _, p := range se.GetPorts() {
		proto, _ := registry.ParseProtocol(p.GetProtocol())
		if p.GetProtocol() == "" {
			proto = registry.Auto // Istio sniffs a port without protocol
		}
		ports = append(ports, registry.Port{
			Name:       p.GetName(),
			Number:     p.GetNumber(),
			Protocol:   proto,
			TargetPort: p.GetTargetPort(),
		})
	}
	return ports
}

// workload is one instance behind a ServiceEntry: an inline endpoint or
// WorkloadEntry (spec), or another registry's workload (reg).
type workload struct {
	name, namespace string
	spec            *networking.WorkloadEntry
	reg             *registry.Workload
}

// workloadIndex holds the workloads a workloadSelector may pick: the
// WorkloadEntries with an address, then the other registries' workloads
// with one, each list in that order, by namespace and by each of their
// labels ("key=value"), so a ServiceEntry looks only at the workloads of
// its namespace that carry one of its selector's labels, not at every
// workload of the mesh.
type workloadIndex struct {
	byNS    map[string][]workload
	byLabel map[string]map[string][]workload // namespace -> "k=v" -> workloads
}

func indexWorkloads(cfg *config.Snapshot, others []*registry.Workload) workloadIndex {
	ix := workloadIndex{byNS: map[string][]workload{}, byLabel: map[string]map[string][]workload{}}
	add := func(w workload, labels map[string]string) {
		ix.byNS[w.namespace] = append(ix.byNS[w.namespace], w)
		m := ix.byLabel[w.namespace]
		if m == nil {
			m = map[string][]workload{}
			ix.byLabel[w.namespace] = m
		}
		for k, v := range labels {
			m[k+"="+v] = append(m[k+"="+v], w)
		}
	}
	for _, we := range cfg.WorkloadEntries {
		if we.Spec.GetAddress() != "" {
			add(workload{name: we.Name, namespace: we.Namespace, spec: we.Spec}, we.Spec.GetLabels())
		}
	}
	for _, w := range others {
		if w.Address != "" {
			name := w.WorkloadName
			if name == "" {
				name = w.Name
			}
			add(workload{name: name, namespace: w.Namespace, reg: w}, w.Labels)
		}
	}
	return ix
}

// labels are a workload's labels, whichever kind it is.
func (w workload) labels() map[string]string {
	if w.reg != nil {
		return w.reg.Labels
	}
	return w.spec.GetLabels()
}

// selectWorkloads returns the ServiceEntry's inline endpoints, or else the
// WorkloadEntries of its namespace whose labels include its
// workloadSelector's labels (then the other registries' workloads that
// do). Workloads without an address (Istio's multi-network endpoints,
// which config validation rejects) are left out: an endpoint with an
// empty address makes the proxy reject the whole update.
func selectWorkloads(se *config.ServiceEntry, ix workloadIndex) []workload {
	var out []workload
	for _, ep := range se.Spec.GetEndpoints() {
		if ep.GetAddress() == "" {
			continue
		}
		name := ep.GetLabels()["app"]
		if name == "" {
			name = ep.GetAddress()
		}
		out = append(out, workload{name: name, namespace: se.Namespace, spec: ep})
	}
	sel := se.Spec.GetWorkloadSelector()
	if len(se.Spec.GetEndpoints()) > 0 || sel == nil {
		return out
	}
	// The candidates: the workloads with the rarest of the selector's
	// labels (all of the namespace's for an empty selector).
	cands := ix.byNS[se.Namespace]
	for k, v := range sel.GetLabels() {
		if l := ix.byLabel[se.Namespace][k+"="+v]; len(l) < len(cands) {
			cands = l
		}
	}
	for _, w := range cands {
		if labelsMatch(sel.GetLabels(), w.labels()) {
			out = append(out, w)
		}
	}
	return out
}

// labelsMatch reports whether have includes every label of want. An empty
// selector matches every workload, as in Istio.
func labelsMatch(want, have map[string]string) bool {
	for k, v := range want {
		if got, ok := have[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func endpoint(host string, p registry.Port, w workload) *registry.Endpoint {
	if w.reg != nil {
		return registryEndpoint(host, p, w)
	}
	port := w.spec.GetPorts()[p.Name]
	if port == 0 {
		port = p.TargetPort
	}
	if port == 0 {
		port = p.Number
	}
	return &registry.Endpoint{
		ServiceHostname: host,
		ServicePort:     p.Number,
		Address:         w.spec.GetAddress(),
		Port:            port,
		Labels:          maps.Clone(w.spec.GetLabels()),
		Locality:        w.spec.GetLocality(),
		Weight:          w.spec.GetWeight(),
		ServiceAccount:  w.spec.GetServiceAccount(),
		WorkloadName:    w.name,
		Namespace:       w.namespace,
		Health:          registry.Healthy,
	}
}

// registryEndpoint is the endpoint of another registry's workload.
func registryEndpoint(host string, p registry.Port, w workload) *registry.Endpoint {
	port := w.reg.Ports[p.Name]
	if port == 0 {
		port = p.TargetPort
	}
	if port == 0 {
		port = p.Number
	}
	return &registry.Endpoint{
		ServiceHostname: host,
		ServicePort:     p.Number,
		Address:         w.reg.Address,
		Port:            port,
		Labels:          maps.Clone(w.reg.Labels),
		Locality:        w.reg.Locality,
		ServiceAccount:  w.reg.ServiceAccount,
		WorkloadName:    w.name,
		Namespace:       w.namespace,
		Health:          w.reg.Health,
	}
}
