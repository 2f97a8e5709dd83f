package route

import (
	"strings"
)

// Routing without the request's header fields, for the proxy's byte path
// (forward/bytepath.go): a request read as bytes is routed by Host, path
// and query alone when nothing the virtual host could match on needs
// more, and forwarded as bytes when its route asks nothing of the
// request but the cluster.

// RoutePlain returns the route of a request with this Host, path (as
// sent, escaped) and query, as Route would return it, and ok. ok is
// false when that cannot be decided from those alone: no virtual host
// serves host, it redirects to TLS, or one of its routes up to the
// matching one would read a header, the query's parameters or the
// content type. Route then decides.
func (t *Table) RoutePlain(host, path, rawQuery string) (re *Entry, ok bool) {
	if t.ignorePort {
		host = hostWithoutPort(host)
	}
	vh := t.virtualHost(lowerASCII(host))
	if vh == nil || vh.tlsRedirect != nil {
		return nil, false
	}
	for _, re := range vh.routes {
		if re.grpc || len(re.headers) > 0 || len(re.query) > 0 {
			return nil, false // decided by more than the path
		}
		if re.path.match(path, rawQuery) {
			return re, true
		}
	}
	return nil, false
}

// Plain reports whether the route forwards a request as it came, to a
// cluster it names (or one of its weighted clusters): no header, host or
// path rewrites, no redirect or direct response, no mirrors, no hash
// policy, no timeouts, no typed_per_filter_config. Its retry policy is
// kept: retries happen on the request path's general code.
func (re *Entry) Plain() bool {
	return re.Direct == nil && re.entryRare == noRare && len(re.Mirrors) == 0 &&
		re.Timeout == 0 && (re.Retry == nil || re.Retry.PerTry == 0) &&
		re.mutations.request == nil && re.mutations.response == nil && !re.clusterMutations &&
		(re.cluster != "" || len(re.weighted) > 0)
}

// PickPlain is PickCluster for a Plain route.
func (re *Entry) PickPlain() string { return re.PickCluster(nil) }

// lowerASCII is strings.ToLower without an allocation for a host that is
// already lower case.
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}
