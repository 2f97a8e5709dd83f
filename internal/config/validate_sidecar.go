package config

import (
	"fmt"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
)

// validateSidecar is Istio's ValidateSidecar for what Weft reads of a
// Sidecar — workloadSelector, egress hosts and ports, outboundTrafficPolicy
// — plus a warning for each part Weft ignores (ingress listeners, egress
// bind and captureMode, inboundConnectionPool, egressProxy), so nobody
// believes a setting took effect that did not.
func validateSidecar(is *issues, sc *networking.Sidecar) {
	if sel := sc.GetWorkloadSelector(); sel != nil {
		validateSelectorLabels(is, "spec.workloadSelector.labels", sel.GetLabels())
		if len(sel.GetLabels()) == 0 {
			is.warnf("spec.workloadSelector", "workloadSelector has no labels, so the Sidecar applies to every workload of its namespace")
		}
	}
	if len(sc.GetEgress()) == 0 && len(sc.GetIngress()) == 0 && sc.GetOutboundTrafficPolicy() == nil && sc.GetInboundConnectionPool() == nil {
		is.errf("spec", "empty Sidecar: set egress, ingress or outboundTrafficPolicy")
	}
	for i, in := range sc.GetIngress() {
		p := fmt.Sprintf("spec.ingress[%d]", i)
		if in.GetPort() == nil {
			is.errf(p+".port", "port is required for ingress listeners")
			continue
		}
		is.warnf(p, "ingress listeners are not supported by Weft and are ignored: inbound traffic is served per the workload's service ports")
	}
	if sc.GetInboundConnectionPool() != nil {
		is.warnf("spec.inboundConnectionPool", "inboundConnectionPool is not supported by Weft and is ignored")
	}

	ports := map[uint32]bool{}
	catchAll := false
	for i, eg := range sc.GetEgress() {
		p := fmt.Sprintf("spec.egress[%d]", i)
		if eg == nil {
			is.errf(p, "egress listener may not be null")
			continue
		}
		if port := eg.GetPort(); port == nil {
			switch {
			case catchAll:
				is.errf(p+".port", "egress can have only one listener without port")
				continue
			case i != len(sc.GetEgress())-1:
				is.errf(p+".port", "the egress listener without port must be the last listener")
			}
			catchAll = true
		} else {
			if port.GetNumber() == 0 {
				is.errf(p+".port.number", "port 0 (a Unix domain socket listener) is not supported by Weft")
			} else if err := checkPort(int64(port.GetNumber())); err != nil {
				is.errf(p+".port.number", "%v", err)
			}
			if port.GetName() != "" {
				if err := checkPortName(port.GetName()); err != nil {
					is.errf(p+".port.name", "%v", err)
				}
			}
			if ports[port.GetNumber()] {
				is.errf(p+".port.number", "port %d is used by another egress listener", port.GetNumber())
			}
			ports[port.GetNumber()] = true
		}
		if eg.GetBind() != "" {
			is.warnf(p+".bind", "bind is ignored by Weft: a captured proxy takes every outbound connection on its capture port")
		}
		if eg.GetCaptureMode() != networking.CaptureMode_DEFAULT {
			is.warnf(p+".captureMode", "captureMode is ignored by Weft (the pod's interception mode applies)")
		}
		if len(eg.GetHosts()) == 0 {
			is.errf(p+".hosts", "an egress listener must contain at least one host")
		}
		seen := map[string]map[string]bool{}
		for j, h := range eg.GetHosts() {
			hp := fmt.Sprintf("%s.hosts[%d]", p, j)
			ns, host, err := parseEgressHost(h)
			if err != nil {
				is.errf(hp, "%v", err)
				continue
			}
			if strings.HasPrefix(ns, "~") {
				continue
			}
			if seen[ns] == nil {
				seen[ns] = map[string]bool{}
			}
			if seen[ns][host] || seen[ns]["*"] || host == "*" && len(seen[ns]) > 0 {
				is.warnf(hp, "duplicated egress host %q", h)
			}
			seen[ns][host] = true
		}
		if seen["*"]["*"] && len(seen) > 1 {
			is.warnf(p+".hosts", `"*/*" selects every service: the other hosts add nothing`)
		}
	}

	if tp := sc.GetOutboundTrafficPolicy(); tp != nil {
		if tp.GetEgressProxy() != nil {
			is.warnf("spec.outboundTrafficPolicy.egressProxy", "egressProxy is not supported by Weft and is ignored")
		}
	}
}

// parseEgressHost splits an egress host "namespace/dnsName" and checks it
// as Istio's ValidateNamespaceSlashWildcardHostname: namespace is "*",
// ".", "~" or a namespace name; dnsName is "*", "*.suffix" or a fully
// qualified name (no short names, no partial wildcards).
func parseEgressHost(h string) (ns, host string, err error) {
	ns, host, ok := strings.Cut(h, "/")
	switch {
	case !ok:
		return "", "", fmt.Errorf("host %q must be of the form namespace/dnsName", h)
	case ns == "" || host == "":
		return "", "", fmt.Errorf("host %q: namespace and dnsName must not be empty", h)
	case ns != "*" && ns != "." && ns != "~" && !isDNSLabel(ns):
		return "", "", fmt.Errorf("host %q: namespace %q must be \"*\", \".\", \"~\" or a namespace name", h, ns)
	case host == "*":
		return ns, host, nil
	case !strings.Contains(host, "."):
		return "", "", fmt.Errorf("host %q: short names (non FQDN) are not allowed", h)
	case strings.Contains(host, "*") && !strings.HasPrefix(host, "*."):
		return "", "", fmt.Errorf("host %q: partial wildcard %q not allowed", h, host)
	}
	if err := checkWildcardDomain(host); err != nil {
		return "", "", fmt.Errorf("host %q: %v", h, err)
	}
	return ns, host, nil
}
