package config

import (
	"strings"

	"weft.dev/weft/internal/registry"
)

// HostNamespace is the namespace a service host belongs to when choosing
// its DestinationRule: serviceNamespace (the namespace of the registry
// service or ServiceEntry that defines fqdn; "" when none does), else the
// namespace label of a cluster-local name (name.ns.svc.<domainSuffix>),
// else "". An empty domainSuffix means cluster.local.
func HostNamespace(fqdn, serviceNamespace, domainSuffix string) string {
	if serviceNamespace != "" {
		return serviceNamespace
	}
	if domainSuffix == "" {
		domainSuffix = registry.DefaultDomainSuffix
	}
	if base, ok := strings.CutSuffix(fqdn, ".svc."+domainSuffix); ok {
		if dot := strings.LastIndexByte(base, '.'); dot >= 0 {
			return base[dot+1:]
		}
	}
	return ""
}

// SelectDestinationRule returns the one DestinationRule in force for the
// service fqdn among drs, or nil when none applies. It is the only rule
// deciding this: the xDS generators (through mesh) use the subsets of the
// rule it returns and nothing else, and validation accepts a subset
// reference only if that same rule defines the subset.
//
// resolve expands a DestinationRule's spec.host, written in the rule's
// namespace, into an FQDN. A rule applies only when its resolved host is
// fqdn exactly: a wildcard host ("*.example.com") is not expanded, so it
// governs only a service whose host is written the same way. Among the
// rules that apply, one in hostNamespace (see HostNamespace) wins;
// otherwise the first by namespace, then name. The order of drs does not
// matter; rules with a nil Spec are skipped.
func SelectDestinationRule(fqdn, hostNamespace string, drs []*DestinationRule, resolve func(host, namespace string) string) *DestinationRule {
	var best *DestinationRule
	for _, dr := range drs {
		if dr == nil || dr.Spec == nil || resolve(dr.Spec.GetHost(), dr.Namespace) != fqdn {
			continue
		}
		if best == nil || drPrecedes(dr, best, hostNamespace) {
			best = dr
		}
	}
	return best
}

// drPrecedes reports whether a takes precedence over b for a host of
// namespace hostNS.
func drPrecedes(a, b *DestinationRule, hostNS string) bool {
	aOwn, bOwn := hostNS != "" && a.Namespace == hostNS, hostNS != "" && b.Namespace == hostNS
	if aOwn != bOwn {
		return aOwn
	}
	if a.Namespace != b.Namespace {
		return a.Namespace < b.Namespace
	}
	return a.Name < b.Name
}
