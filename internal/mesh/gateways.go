package mesh

import (
	"slices"
	"strings"

	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/config"
)

// GatewayIndex finds the Gateways that configure a gateway proxy (by
// their selectors) and the VirtualServices bound to each Gateway, as
// Istio's gateway model: a VirtualService binds with spec.gateways
// ("<namespace>/<name>", or a name in its own namespace), and serves on a
// Gateway's server only the hosts both name, when the server's host
// namespace admits the VirtualService's. Immutable after construction.
type GatewayIndex struct {
	gateways []*config.Gateway                   // first seen first
	bound    map[string][]*config.VirtualService // by "<namespace>/<name>", first seen first
}

func newGatewayIndex(gws []*config.Gateway, vss []*config.VirtualService) *GatewayIndex {
	idx := &GatewayIndex{gateways: slices.Clone(gws), bound: map[string][]*config.VirtualService{}}
	slices.SortFunc(idx.gateways, config.FirstSeen)
	ordered := slices.Clone(vss)
	slices.SortFunc(ordered, config.FirstSeen)
	for _, vs := range ordered {
		seen := map[string]bool{}
		for _, g := range vs.Spec.GetGateways() {
			if g == GatewayMesh {
				continue
			}
			ref := config.GatewayRef(g, vs.Namespace)
			if !seen[ref] {
				seen[ref] = true
				idx.bound[ref] = append(idx.bound[ref], vs)
			}
		}
	}
	return idx
}

// ForWorkload returns the Gateways whose selector picks a gateway proxy
// of namespace ns with these labels, first seen first: Istio Gateways
// from any namespace (an empty selector picks every gateway proxy, as in
// Istio), Gateways translated from the Gateway API from ns only, as a
// Gateway API Gateway is served by its own namespace's deployment.
func (i *GatewayIndex) ForWorkload(ns string, labels map[string]string) []*config.Gateway {
	if i == nil {
		return nil
	}
	var out []*config.Gateway
	for _, gw := range i.gateways {
		if _, translated := gw.Annotations[config.AnnotationGeneratedFrom]; translated && gw.Namespace != ns {
			continue
		}
		if selects(gw.Spec.GetSelector(), labels) {
			out = append(out, gw)
		}
	}
	return out
}

func selects(selector, labels map[string]string) bool {
	for k, v := range selector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// Bound returns the VirtualServices bound to gw that a gateway proxy in
// namespace proxyNS can see (exportTo), first seen first.
func (i *GatewayIndex) Bound(gw *config.Gateway, proxyNS string) []*config.VirtualService {
	if i == nil {
		return nil
	}
	var out []*config.VirtualService
	for _, vs := range i.bound[gw.Namespace+"/"+gw.Name] {
		if exportedTo(vs.Spec.GetExportTo(), vs.Namespace, proxyNS) {
			out = append(out, vs)
		}
	}
	return out
}

// exportedTo reports whether a resource of namespace ns with exportTo is
// visible in namespace to: everywhere by default or with "*", "." is its
// own namespace, else the listed namespaces.
func exportedTo(exportTo []string, ns, to string) bool {
	if len(exportTo) == 0 {
		return true
	}
	for _, e := range exportTo {
		if e == "*" || e == to || e == "." && ns == to {
			return true
		}
	}
	return false
}

// ServerHosts returns the hosts of a VirtualService vs that a server of
// gateway gw serves: for each of the server's hosts whose namespace part
// admits vs ("*", "." for the Gateway's namespace, or vs's namespace),
// the intersection with each of vs's hosts (the more specific of the two
// when one covers the other), deduplicated, in vs's host order.
func ServerHosts(gw *config.Gateway, srv *networking.Server, vs *config.VirtualService) []string {
	var out []string
	for _, vh := range vs.Spec.GetHosts() {
		for _, sh := range srv.GetHosts() {
			ns, host := config.ParseServerHost(sh)
			switch {
			case ns == ".":
				if vs.Namespace != gw.Namespace {
					continue
				}
			case ns != "*" && ns != vs.Namespace:
				continue
			}
			if h, ok := IntersectHosts(vh, host); ok && !slices.Contains(out, h) {
				out = append(out, h)
			}
		}
	}
	return out
}

// IntersectHosts returns the more specific of a and b (each "*",
// "*.suffix" or a name) when one covers the other.
func IntersectHosts(a, b string) (string, bool) {
	switch {
	case covers(a, b):
		return b, true
	case covers(b, a):
		return a, true
	}
	return "", false
}

// covers reports whether pattern covers host (every name host matches,
// pattern matches too).
func covers(pattern, host string) bool {
	switch {
	case pattern == "*":
		return true
	case pattern == host:
		return true
	case strings.HasPrefix(pattern, "*."):
		suffix := pattern[1:] // ".example.com"
		return strings.HasSuffix(host, suffix) && len(host) > len(suffix)
	}
	return false
}
