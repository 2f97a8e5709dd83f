package registry

import "strings"

// ResolveHost expands a host as written in a resource of namespace ns into a
// fully qualified name, the way Istio users expect:
//
//	reviews                          -> reviews.<ns>.svc.<suffix>
//	reviews.prod                     -> reviews.prod.svc.<suffix>  (when that service is known)
//	reviews.prod.svc                 -> reviews.prod.svc.<suffix>
//	reviews.prod.svc.cluster.local   -> unchanged
//	api.example.com, *.example.com   -> unchanged
//
// known, when non-nil, reports whether an FQDN exists; it decides the
// two-label case, which is otherwise ambiguous with external names.
func ResolveHost(host, ns, suffix string, known func(fqdn string) bool) string {
	if suffix == "" {
		suffix = DefaultDomainSuffix
	}
	if host == "" || host == "*" || strings.HasPrefix(host, "*") {
		return host
	}
	switch parts := strings.Split(host, "."); {
	case len(parts) == 1:
		return host + "." + ns + ".svc." + suffix
	case len(parts) == 3 && parts[2] == "svc":
		return host + "." + suffix
	case len(parts) == 2 && known != nil:
		if fq := host + ".svc." + suffix; known(fq) {
			return fq
		}
	}
	return host
}

// ShortNames returns the names a client in namespace clientNS may use for
// hostname, most specific last: for reviews.default.svc.cluster.local seen
// from namespace default that is reviews, reviews.default,
// reviews.default.svc and the FQDN itself; from another namespace the bare
// name is left out. Hostnames outside the cluster domain have only themselves.
func ShortNames(hostname, clientNS, suffix string) []string {
	if suffix == "" {
		suffix = DefaultDomainSuffix
	}
	tail := ".svc." + suffix
	if !strings.HasSuffix(hostname, tail) {
		return []string{hostname}
	}
	base := strings.TrimSuffix(hostname, tail) // name.ns
	dot := strings.LastIndexByte(base, '.')
	if dot < 0 {
		return []string{hostname}
	}
	name, ns := base[:dot], base[dot+1:]
	var out []string
	if ns == clientNS {
		out = append(out, name)
	}
	return append(out, base, base+".svc", hostname)
}
