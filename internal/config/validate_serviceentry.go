package config

import (
	"fmt"
	"strings"

	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/registry"
)

// ServiceEntries and WorkloadEntries, rule by rule as Istio's
// ValidateServiceEntry / ValidateWorkloadEntry and the CRD schemas check
// them, plus Weft's limits: proxies reach endpoints over TCP only (no unix
// sockets), and a DNS name as an endpoint address is resolved by the
// proxies only in the clusters of ServiceEntries with resolution DNS.

// istioProtocol is Istio's protocol.Parse: the canonical name of a port
// protocol Istio knows, or "" (unsupported; "" is also sniffing).
func istioProtocol(s string) string {
	switch strings.ToLower(s) {
	case "tcp":
		return "TCP"
	case "udp":
		return "UDP"
	case "grpc":
		return "GRPC"
	case "grpc-web":
		return "GRPC-Web"
	case "http":
		return "HTTP"
	case "http_proxy":
		return "HTTP_PROXY"
	case "http2":
		return "HTTP2"
	case "https":
		return "HTTPS"
	case "tls":
		return "TLS"
	case "mongo":
		return "Mongo"
	case "redis":
		return "Redis"
	case "mysql":
		return "MySQL"
	}
	return ""
}

func istioIsHTTP(p string) bool {
	switch p {
	case "HTTP", "HTTP2", "HTTP_PROXY", "GRPC", "GRPC-Web":
		return true
	}
	return false
}

func istioIsTLS(p string) bool { return p == "HTTPS" || p == "TLS" }

func istioIsTCP(p string) bool {
	switch p {
	case "TCP", "HTTPS", "TLS", "Mongo", "Redis", "MySQL":
		return true
	}
	return false
}

// validateServiceEntry checks se, defined in namespace ns ("" when unknown).
func validateServiceEntry(is *issues, ns string, se *networking.ServiceEntry) {
	res := se.GetResolution()
	sel := se.GetWorkloadSelector()
	if sel != nil {
		validateSelectorLabels(is, "spec.workloadSelector.labels", sel.GetLabels())
		checkMaxItems(is, "spec.workloadSelector.labels", "labels", len(sel.GetLabels()), 256)
		if len(sel.GetLabels()) == 0 {
			is.warnf("spec.workloadSelector", "workloadSelector has no labels, so it selects every WorkloadEntry in the namespace")
		}
		if len(se.GetEndpoints()) > 0 {
			is.errf("spec.workloadSelector", "workloadSelector and endpoints are mutually exclusive")
		}
	}

	if len(se.GetHosts()) == 0 {
		is.errf("spec.hosts", "at least one host is required")
	}
	checkMaxItems(is, "spec.hosts", "hosts", len(se.GetHosts()), 256)
	for i, h := range se.GetHosts() {
		p := fmt.Sprintf("spec.hosts[%d]", i)
		if h == "*" {
			is.errf(p, "host \"*\" is not allowed: a ServiceEntry names the hosts it defines")
			continue
		}
		if err := checkWildcardDomain(h); err != nil {
			is.errf(p, "%v", err)
			continue
		}
		if res != networking.ServiceEntry_DYNAMIC_DNS && strings.Contains(h, "*") && !strings.HasPrefix(h, "*.") {
			is.warnf(p, "partial wildcard %q is not supported: only a whole first label may be a wildcard (\"*.example.com\")", h)
		}
	}

	checkMaxItems(is, "spec.addresses", "addresses", len(se.GetAddresses()), 256)
	cidr := false
	for i, a := range se.GetAddresses() {
		p := fmt.Sprintf("spec.addresses[%d]", i)
		checkMaxLen(is, p, "address", a, 64)
		cidr = cidr || strings.Contains(a, "/")
		if err := checkIPSubnet(a); err != nil {
			is.errf(p, "%v", err)
		}
	}
	if cidr && res != networking.ServiceEntry_NONE && res != networking.ServiceEntry_STATIC {
		is.errf("spec.addresses", "CIDR addresses are allowed only with resolution NONE or STATIC, not %s", res)
	}

	// Istio allocates addresses itself unless resolution is NONE (or the
	// resource opts out with a label, which validation does not see).
	autoAllocate := res != networking.ServiceEntry_NONE && len(se.GetAddresses()) == 0
	checkMaxItems(is, "spec.ports", "ports", len(se.GetPorts()), 256)
	numbers, names := map[uint32]int{}, map[string]int{}
	servicePorts := map[string]bool{}
	for i, p := range se.GetPorts() {
		pp := fmt.Sprintf("spec.ports[%d]", i)
		if n := p.GetNumber(); n < 1 || n > 65535 {
			is.errf(pp+".number", "port number %d out of range 1-65535", n)
		} else if first, dup := numbers[p.GetNumber()]; dup {
			is.errf(pp+".number", "duplicate port number %d (also spec.ports[%d])", p.GetNumber(), first)
		} else {
			numbers[p.GetNumber()] = i
		}
		if err := checkPortName(p.GetName()); err != nil {
			is.errf(pp+".name", "%v", err)
		} else if first, dup := names[p.GetName()]; dup {
			is.errf(pp+".name", "duplicate port name %q (also spec.ports[%d])", p.GetName(), first)
		} else {
			names[p.GetName()] = i
		}
		servicePorts[p.GetName()] = true
		if t := p.GetTargetPort(); t != 0 {
			if err := checkPort(int64(t)); err != nil {
				is.errf(pp+".targetPort", "%v", err)
			}
		}
		proto := p.GetProtocol()
		switch _, weftKnows := registry.ParseProtocol(proto); {
		case proto == "":
		case istioProtocol(proto) == "":
			is.errf(pp+".protocol", "unsupported protocol %q; want HTTP, HTTP2, GRPC, GRPC-Web, HTTPS, TLS, TCP, Mongo, Redis, MySQL or UDP", proto)
		case !weftKnows:
			is.warnf(pp+".protocol", "Weft does not support protocol %q yet; the port is treated as TCP", proto)
		}
		if len(se.GetAddresses()) == 0 && !autoAllocate && (proto == "" || proto == "TCP") {
			is.warnf(pp, "addresses are required for ports serving TCP (or unset) protocol when IP autoallocation is not enabled (resolution NONE)")
		}
	}

	switch res {
	case networking.ServiceEntry_NONE:
		if len(se.GetEndpoints()) > 0 {
			is.errf("spec.endpoints", "endpoints are not allowed with resolution NONE (the default); set resolution: STATIC for IP addresses")
		}
		if sel != nil {
			is.warnf("spec.workloadSelector", "workloadSelector should not be set with resolution NONE")
		}
	case networking.ServiceEntry_STATIC:
		for i, ep := range se.GetEndpoints() {
			validateWorkloadEntry(is, fmt.Sprintf("spec.endpoints[%d]", i), ep, servicePorts, false)
		}
	case networking.ServiceEntry_DNS, networking.ServiceEntry_DNS_ROUND_ROBIN:
		if len(se.GetEndpoints()) == 0 {
			for i, h := range se.GetHosts() {
				if err := checkFQDN(h); err != nil {
					is.errf(fmt.Sprintf("spec.hosts[%d]", i), "with resolution %s and no endpoints, hosts are resolved by DNS and must be DNS names without wildcards: %v", res, err)
					break
				}
			}
			// The proxies resolve the hosts themselves (a STRICT_DNS or
			// LOGICAL_DNS cluster), as Envoy does for Istio.
		}
		if res == networking.ServiceEntry_DNS_ROUND_ROBIN && len(se.GetEndpoints()) > 1 {
			is.errf("spec.endpoints", "resolution DNS_ROUND_ROBIN allows at most one endpoint, not %d", len(se.GetEndpoints()))
		}
		for i, ep := range se.GetEndpoints() {
			validateWorkloadEntry(is, fmt.Sprintf("spec.endpoints[%d]", i), ep, servicePorts, true)
		}
		if len(se.GetAddresses()) > 0 && len(se.GetHosts()) > 1 {
			for _, p := range se.GetPorts() {
				if istioIsTCP(istioProtocol(p.GetProtocol())) {
					is.warnf("spec.hosts", "a ServiceEntry with addresses and a TCP port should have a single host")
					break
				}
			}
		}
	case networking.ServiceEntry_DYNAMIC_DNS:
		for i, h := range se.GetHosts() {
			if !strings.HasPrefix(h, "*") {
				is.errf(fmt.Sprintf("spec.hosts[%d]", i), "with resolution DYNAMIC_DNS every host must be a wildcard (\"*.example.com\")")
			}
		}
		if len(se.GetAddresses()) > 0 {
			is.errf("spec.addresses", "addresses are not allowed with resolution DYNAMIC_DNS")
		}
		if len(se.GetEndpoints()) > 0 {
			is.errf("spec.endpoints", "endpoints are not allowed with resolution DYNAMIC_DNS: the destination comes from the request's host")
		}
		for i, p := range se.GetPorts() {
			switch istioProtocol(p.GetProtocol()) {
			case "HTTP", "TLS", "GRPC", "HTTP2":
			default:
				is.errf(fmt.Sprintf("spec.ports[%d].protocol", i), "with resolution DYNAMIC_DNS a port must be HTTP, TLS, GRPC or HTTP2")
			}
		}
		if l := se.GetLocation(); l != networking.ServiceEntry_MESH_EXTERNAL && l != networking.ServiceEntry_MESH_INTERNAL {
			is.errf("spec.location", "with resolution DYNAMIC_DNS location must be MESH_EXTERNAL or MESH_INTERNAL")
		}
		is.warnf("spec.resolution", "Weft does not support resolution DYNAMIC_DNS yet: this service has no endpoints and requests to it fail (503)")
	default:
		is.errf("spec.resolution", "unsupported resolution %s", res)
	}

	// Plain TCP carries no host name, so several hosts are told apart only
	// with HTTP (authority) or TLS (SNI); Istio allows it with NONE.
	if res != networking.ServiceEntry_NONE && len(se.GetHosts()) > 1 {
		for i, p := range se.GetPorts() {
			if proto := istioProtocol(p.GetProtocol()); !istioIsHTTP(proto) && !istioIsTLS(proto) {
				is.errf(fmt.Sprintf("spec.ports[%d].protocol", i), "a ServiceEntry with several hosts needs HTTP or TLS ports (set protocol), since plain TCP cannot tell the hosts apart")
				break
			}
		}
	}
	validateExportTo(is, ns, "spec.exportTo", se.GetExportTo(), true)
}

// validateWorkloadEntry is Istio's validateWorkloadEntry and the CRD's
// rules, for a WorkloadEntry (servicePorts nil, DNS names allowed by
// Istio) or a ServiceEntry endpoint (the ServiceEntry's port names; DNS
// names allowed with resolution DNS only). Weft is stricter on unix
// socket addresses (proxies dial endpoints over TCP) and warns about a
// WorkloadEntry named by DNS, which only a ServiceEntry with resolution
// DNS resolves in its proxies.
func validateWorkloadEntry(is *issues, path string, we *networking.WorkloadEntry, servicePorts map[string]bool, dnsAllowed bool) {
	addr := we.GetAddress()
	checkMaxLen(is, path+".address", "address", addr, 256)
	checkMaxLen(is, path+".locality", "locality", we.GetLocality(), 2048)
	checkMaxLen(is, path+".network", "network", we.GetNetwork(), 2048)
	checkMaxLen(is, path+".serviceAccount", "serviceAccount", we.GetServiceAccount(), 253)
	checkMaxItems(is, path+".labels", "labels", len(we.GetLabels()), 256)
	checkMaxItems(is, path+".ports", "ports", len(we.GetPorts()), 128)
	unix := strings.HasPrefix(addr, "unix://")
	switch {
	case addr == "" && we.GetNetwork() == "":
		is.errf(path+".address", "address is required")
	case addr == "":
		// Istio warns and reaches the workload through its network's
		// gateway; Weft has no multi-network gateways, and an endpoint
		// without an address would make proxies reject the whole update.
		is.errf(path+".address", "address is required (multi-network endpoints without an address are not supported yet)")
	case unix:
		if err := checkUnixAddress(strings.TrimPrefix(addr, "unix://")); err != nil {
			is.errf(path+".address", "%v", err)
		}
		if len(we.GetPorts()) > 0 {
			is.errf(path+".ports", "a unix socket endpoint must not have ports")
		}
		if servicePorts != nil && len(servicePorts) != 1 {
			is.errf(path+".address", "a unix socket endpoint needs a ServiceEntry with exactly one port")
		}
		is.errf(path+".address", "unix socket endpoints are not supported by Weft: proxies reach endpoints over TCP; use an IP address")
	case isIP(addr):
	case strings.Trim(addr, "0123456789.") == "":
		is.errf(path+".address", "address %q is not a valid IP address (four numbers 0-255)", addr)
	case !dnsAllowed:
		is.errf(path+".address", "address %q must be an IP address with resolution STATIC", addr)
	case checkFQDN(addr) != nil:
		is.errf(path+".address", "address %q is not an IP address or a DNS name", addr)
	case servicePorts != nil:
		// An endpoint of a ServiceEntry with resolution DNS: its cluster
		// is STRICT_DNS (or LOGICAL_DNS), the proxies resolve the name.
	default:
		// A WorkloadEntry: Istio accepts it. A ServiceEntry with
		// resolution DNS selecting it resolves the name in its proxies;
		// one with resolution STATIC (or a Kubernetes Service) sends the
		// name in EDS, which weft-proxy resolves when it connects but
		// Envoy refuses. Say so rather than reject valid Istio config.
		is.warnf(path+".address", "address %q is a DNS name: proxies resolve it for ServiceEntries with resolution DNS that select this workload; others (resolution STATIC, Kubernetes Services) send the name in EDS, which weft-proxy resolves when it connects but Envoy proxies reject; prefer the workload's IP address", addr)
	}
	for _, name := range sortedKeys(we.GetPorts()) {
		pp := path + ".ports." + name
		if servicePorts != nil && !servicePorts[name] {
			is.errf(pp, "port name %q is not a port of the ServiceEntry", name)
		}
		if err := checkPortName(name); err != nil {
			is.errf(pp, "%v", err)
		} else if len(name) >= 63 {
			is.errf(pp, "port name %q is %d characters long; at most 62 are allowed", name, len(name))
		}
		if err := checkPort(int64(we.GetPorts()[name])); err != nil {
			is.errf(pp, "%v", err)
		}
	}
	validateLabels(is, path+".labels", we.GetLabels())
	// Stricter than Istio: a locality is region/zone/subzone, and more
	// parts would be silently cut.
	if l := we.GetLocality(); l != "" && strings.Count(l, "/") > 2 {
		is.errf(path+".locality", "locality %q must be region/zone/subzone", l)
	}
}
