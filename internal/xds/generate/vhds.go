package generate

import (
	"slices"
	"strings"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/reflect/protoreflect"

	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/xds/contract"
)

// splitVirtualHosts is how a proxy that takes virtual hosts by VHDS
// (contract.FeatureVHDS) gets its route configurations: each one without
// its virtual hosts and with vhds set (ADS), and each virtual host as a
// resource of its own, named contract.VirtualHostName(rc, vh) — but for
// a catch-all one (domain "*"), which stays in the route configuration. A route
// change then sends the virtual hosts it changed, not every route
// configuration that holds one (at 1,000 services, 891 KiB to every
// proxy for a change to one service's routes).
//
// The virtual hosts come Lazy, sorted by name: an outbound service
// port's has a Key that outlives a route change that leaves it as it was
// (outboundVHostKey), so it is built and encoded again only when it
// changed; the others have none. routes may be shared: the results are
// new messages that share the originals' fields (read only), so nothing
// is copied deeply.
func splitVirtualHosts(s *mesh.Snapshot, id contract.Identity, routes []types.Resource) (rcs []types.Resource, vhosts []Lazy) {
	rcs = make([]types.Resource, len(routes))
	for i, r := range routes {
		rc := r.(*route.RouteConfiguration)
		bare := &route.RouteConfiguration{}
		shallowCopy(bare, rc, "virtual_hosts")
		bare.Vhds = &route.Vhds{ConfigSource: adsConfigSource()}
		rcs[i] = bare
		for _, vh := range rc.GetVirtualHosts() {
			if slices.Contains(vh.GetDomains(), "*") {
				// The catch-all (allow_any, block_all, a gateway's "*")
				// stays: it changes with the Sidecar's policy, not with
				// a service, and a proxy puts the route configuration's
				// own virtual hosts after those of VHDS, where the
				// generator had it.
				bare.VirtualHosts = append(bare.VirtualHosts, vh)
				continue
			}
			name := contract.VirtualHostName(rc.GetName(), vh.GetName())
			vhosts = append(vhosts, Lazy{
				Name: name,
				Key:  outboundVHostKey(s, id, rc.GetName(), vh),
				Build: func(*mesh.Snapshot) types.Resource {
					named := &route.VirtualHost{}
					shallowCopy(named, vh, "")
					named.Name = name
					return named
				},
			})
		}
	}
	slices.SortFunc(vhosts, func(a, b Lazy) int { return strings.Compare(a.Name, b.Name) })
	return rcs, vhosts
}

// shallowCopy sets every populated field of src on dst, but the one named
// skip: messages and lists are shared, not copied.
func shallowCopy[M interface{ ProtoReflect() protoreflect.Message }](dst, src M, skip protoreflect.Name) {
	d := dst.ProtoReflect()
	src.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Name() != skip {
			d.Set(fd, v)
		}
		return true
	})
}
