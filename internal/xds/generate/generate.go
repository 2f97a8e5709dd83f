// Package generate turns a mesh snapshot and one proxy's identity into the
// Envoy v3 resources that proxy serves, exactly as docs/architecture.md
// ("The wire contract") describes. Everything here is a pure function of its
// inputs: no I/O, no clocks, no shared state, deterministic (sorted) output,
// safe to call from many goroutines at once.
package generate

import (
	"crypto/sha256"
	"fmt"
	"hash/fnv"
	"slices"
	"sync"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/xds/contract"
)

// Resources is everything one proxy gets, one slice per xDS type, each
// sorted by resource name. The slices are the caller's; the resources in
// them may be shared with other proxies of the same mesh snapshot
// (memo.go) and must never be modified.
type Resources struct {
	Listeners []types.Resource // *listener.Listener
	Routes    []types.Resource // *route.RouteConfiguration
	Clusters  []types.Resource // *cluster.Cluster
	Endpoints []types.Resource // *endpoint.ClusterLoadAssignment
	// VirtualHosts are the route configurations' virtual hosts of a
	// proxy that takes them by VHDS (contract.FeatureVHDS); nil for
	// every other proxy.
	VirtualHosts []types.Resource // *route.VirtualHost

	// ClusterParts and EndpointParts, when their Shared is set, say how
	// Clusters and Endpoints were made (ForProxy sets them): see Parts.
	ClusterParts, EndpointParts Parts
}

// Parts splits a type's resources in two: Shared, a list shared by every
// proxy of the same scope, one slice per mesh snapshot (read only; its
// identity may key a cache that lives as long as the snapshot), and Own,
// the proxy's own resources. The type's list is the two merged by name,
// Shared first where names tie. A server can then do the work of the
// shared part once per snapshot rather than once per proxy.
type Parts struct {
	Shared, Own []types.Resource
	// Lazy, when set (by SharedParts and ForProxyParts), stands for
	// Shared: the same resources, sorted by name, none built yet. The
	// list is shared like Shared.
	Lazy []Lazy
	// LazyKey names Lazy across mesh snapshots: the list under the same
	// LazyKey in the snapshot this one carries over from is most likely
	// the same but for a few entries (an endpoint change brings a list
	// up to date rather than making it anew), so a server that kept what
	// it made of that list need only redo the entries whose Keys
	// differ. Comparable; nil when there is no Lazy.
	LazyKey any
}

// Lazy is a shared resource that is built only on request. Two Lazies
// whose Keys are equal (==) build equal resources, in one mesh snapshot
// and in those that carry over from it (mesh.Snapshot.MemoCarryRoutes):
// a server that keeps a resource's encoding under its Key, carried the
// same way, never needs the Go value again, and an endpoint change
// builds only the clusters and assignments whose endpoints changed.
// (Their Go values, kept for carrying over, were ~20 MB at 1,000
// services.)
//
// Build builds the resource from the snapshot it is given: the one the
// list was made in, or a later one that the list was brought up to date
// for (a list carried over an endpoint change keeps the entries whose
// endpoints did not change, and their builders). A builder keeps no
// reference to the snapshot it was made in.
type Lazy struct {
	Name  string
	Key   any
	Build func(*mesh.Snapshot) types.Resource
}

// ByType returns the resources keyed by type URL, the form
// go-control-plane's cache takes.
func (r Resources) ByType() map[resource.Type][]types.Resource {
	return map[resource.Type][]types.Resource{
		resource.ListenerType:    r.Listeners,
		resource.RouteType:       r.Routes,
		resource.ClusterType:     r.Clusters,
		resource.EndpointType:    r.Endpoints,
		resource.VirtualHostType: r.VirtualHosts,
	}
}

// ForProxy generates the listeners, routes, clusters and endpoints for the
// proxy id in snapshot s. It never blocks and never fails: config the
// generators cannot express is left out (validation in internal/config is
// where users hear about it).
//
// A captured proxy (id.Captured()) gets the virtual listeners of
// capture.go instead of the explicit outbound listener and the
// per-endpoint inbound listeners; a gateway (id.Router()) gets the
// listeners of the Gateways that select it (gateway.go).
func ForProxy(s *mesh.Snapshot, id contract.Identity) Resources {
	return forProxy(s, id, true)
}

// ForProxyParts is ForProxy for a server that reads clusters and
// endpoints only from ClusterParts and EndpointParts: Clusters and
// Endpoints are left nil, which spares merging and copying the shared
// lists (thousands of entries in a large mesh) once per proxy, and the
// shared clusters and endpoints are the parts' Lazy lists, not built.
func ForProxyParts(s *mesh.Snapshot, id contract.Identity) Resources {
	return forProxy(s, id, false)
}

func forProxy(s *mesh.Snapshot, id contract.Identity, merged bool) Resources {
	if !merged {
		ck, lazy := sharedOutboundClustersLazyKeyed(s, id)
		own := buildOwn(s, id, Parts{Lazy: lazy})
		ek, eps := sharedOutboundEndpointsLazyKeyed(s, id)
		return Resources{
			Listeners:     own.Listeners,
			Routes:        own.Routes,
			VirtualHosts:  own.VirtualHosts,
			ClusterParts:  Parts{Lazy: lazy, LazyKey: ck, Own: own.ClusterParts.Own},
			EndpointParts: Parts{Lazy: eps, LazyKey: ek},
		}
	}
	shared := sharedOutboundClusters(s, id)
	own := buildOwn(s, id, Parts{Shared: shared})
	eps := sharedOutboundEndpoints(s, id)
	return Resources{
		Listeners:     own.Listeners,
		Routes:        own.Routes,
		VirtualHosts:  own.VirtualHosts,
		ClusterParts:  Parts{Shared: shared, Own: own.ClusterParts.Own},
		EndpointParts: Parts{Shared: eps},
		Clusters:      mergeSorted(shared, own.ClusterParts.Own),
		Endpoints:     slices.Clone(eps),
	}
}

// SharedParts is ForProxyParts without the proxy's own resources: only
// ClusterParts.Lazy and EndpointParts.Lazy are set (memo lookups, no
// per-proxy work). With OutboundKey and InboundKey, a server that keeps
// what it derives from the proxy's own resources (their encodings) builds
// them (BuildOutbound, BuildInbound) only when it has nothing kept for
// the key.
func SharedParts(s *mesh.Snapshot, id contract.Identity) Resources {
	ck, cs := sharedOutboundClustersLazyKeyed(s, id)
	ek, es := sharedOutboundEndpointsLazyKeyed(s, id)
	return Resources{
		ClusterParts:  Parts{Lazy: cs, LazyKey: ck},
		EndpointParts: Parts{Lazy: es, LazyKey: ek},
	}
}

// A proxy's own resources — ForProxyParts' Listeners, Routes and
// ClusterParts.Own — come in two parts, each with a key under which a
// server can keep their encodings, so that it builds and encodes each
// distinct part once rather than once per proxy:
//
//   - the outbound part (BuildOutbound, OutboundKey): the listeners and
//     route configurations that read the VirtualServices and the proxy's
//     scope: a captured sidecar's virtual outbound listener and its route
//     configurations (one per HTTP port: at 1,000 services, 891 KiB for
//     port 80), an explicit sidecar's outbound listener and http_proxy,
//     all of a gateway's listeners and routes. Proxies of one namespace,
//     scope and telemetry (and tracing tags) get the same;
//   - the inbound part (BuildInbound, InboundKey): a sidecar's inbound
//     listeners and clusters, the passthrough clusters, a tracing
//     collector's cluster. They read no VirtualService and nothing of
//     the registry but the endpoints at the proxy's addresses, so a
//     route change carries them over.

// OutboundKey identifies the outbound part of the proxy id's own
// resources in s (BuildOutbound): two calls give keys that are equal
// (==) only when the parts are equal, in s or in a snapshot that carries
// over from it with mesh.Snapshot.MemoCarry (when only endpoints
// changed). identityKey is IdentityKey(id).
//
// A sidecar's outbound part depends on its scope, namespace, interception
// mode, Telemetry resources and HTTP/1.0 setting, its labels only where
// a VirtualService matches on sourceLabels, an explicit sidecar's on its
// outbound address, and on what tracing writes into its connection
// managers (its canonical service and revision, when it traces); a
// gateway's on the gateway itself.
func OutboundKey(s *mesh.Snapshot, id contract.Identity, identityKey string) any {
	if id.Router() {
		// A gateway's listeners read the endpoints at its addresses
		// (targetPort).
		eps := ownEndpoints(s, id)
		return s.MemoCarry(routerKey{identityKey}, func(prev any) bool { return prev.(*routerOwn).eps == eps }, func() any {
			return &routerOwn{eps: eps}
		}).(*routerOwn)
	}
	k := outboundPartKey{outboundKey: keyOf(s, id), tracing: clientTracingKey(s, id), vhds: id.VHDS, http10: id.HTTP10}
	if !id.Captured() {
		k.address = id.OutboundAddress
	}
	return k
}

// outboundPartKey is a sidecar's OutboundKey.
type outboundPartKey struct {
	outboundKey
	address string // an explicit sidecar's outbound listener address
	tracing string // clientTracingKey
	vhds    bool   // the virtual hosts come apart (splitVirtualHosts)
	http10  bool   // the proxy accepts HTTP/1.0 (contract.MetaHTTP10)
}

// routerKey keys a gateway's OutboundKey in the memo: a gateway's
// listeners are its own. routerOwn is the key itself, a new one per
// snapshot unless carried over, with the digest of the endpoints at the
// gateway's addresses it was made for.
type routerKey struct{ identity string }

type routerOwn struct{ eps uint64 }

// ownEndpoints is a digest of the endpoints at the proxy's addresses.
func ownEndpoints(s *mesh.Snapshot, id contract.Identity) uint64 {
	h := fnv.New64a()
	for _, ep := range s.Registry.EndpointsAt(id.IPs) {
		mesh.HashEndpoint(h, ep)
	}
	return h.Sum64()
}

// BuildOutbound builds the outbound part of the proxy id's own resources
// (see OutboundKey): its listeners, its routes and, for a proxy that takes
// them by VHDS (id.VHDS), the routes' virtual hosts, each sorted by name.
// They may be shared with other proxies and must not be modified.
func BuildOutbound(s *mesh.Snapshot, id contract.Identity) (listeners, routes, vhosts []types.Resource) {
	listeners, routes, lazy := BuildOutboundLazy(s, id)
	for _, l := range lazy {
		vhosts = append(vhosts, l.Build(s))
	}
	return listeners, routes, vhosts
}

// BuildOutboundLazy is BuildOutbound with the virtual hosts Lazy: those
// with a Key are carried over a route change that leaves them as they
// were (mesh.Snapshot.MemoCarryRoutes), so a server that keeps their
// encodings under their Keys builds and encodes only the ones a change
// touched.
func BuildOutboundLazy(s *mesh.Snapshot, id contract.Identity) (listeners, routes []types.Resource, vhosts []Lazy) {
	switch {
	case id.Router():
		// A gateway: the Gateways' listeners, no application behind it
		// (gateway.go).
		listeners, routes = gatewayListeners(s, id)
	case id.Captured():
		out, rcs := sharedVirtualOutbound(s, id) // capture.go
		listeners, routes = []types.Resource{out}, rcs
	default:
		if l := outboundListener(s, id); l != nil {
			// The http_proxy route configuration exists exactly when a
			// listener refers to it, so the set stays consistent.
			rc := sharedOutboundRoutes(s, id)
			listeners, routes = []types.Resource{withCORSFilter(l, rc)}, []types.Resource{rc}
		}
	}
	sortByName(listeners)
	sortByName(routes)
	traceListeners(s, id, listeners) // tracing.go
	statsListeners(s, id, listeners) // stats.go
	if id.VHDS {
		routes, vhosts = splitVirtualHosts(s, id, routes) // vhds.go
	}
	return listeners, routes, vhosts
}

// ForgetOutbound drops the Go values of the outbound parts built from s
// (the virtual outbound listeners and route configurations, and the
// service routes they are made of: ~15 MB at 1,000 services): a server
// that keeps the parts' encodings under their OutboundKeys (carried over
// with MemoCarry as the values would have been) calls it once every
// proxy has been served from s. A proxy with an OutboundKey no one had
// before makes BuildOutbound build them again.
func ForgetOutbound(s *mesh.Snapshot) {
	s.Forget(func(k any) bool {
		switch k.(type) {
		case outboundKey, serviceRoutesKey:
			return true
		}
		return false
	})
}

// InboundKey identifies the inbound part of the proxy id's own resources
// in s (BuildInbound): two calls give keys that are equal (==) only when
// the parts are equal, in s or in a snapshot that carries over from it
// with mesh.Snapshot.MemoCarryRoutes: when only endpoints and
// VirtualServices changed, none of the endpoints at the proxy's
// addresses, and the tracing collectors it needs a cluster of its own
// for are the same. identityKey is IdentityKey(id). The resources
// themselves are not kept: a proxy's inbound listeners and clusters cost
// tens of KB as Go values, and a server needs only their encodings.
func InboundKey(s *mesh.Snapshot, id contract.Identity, identityKey string) any {
	eps := sync.OnceValue(func() uint64 { return ownEndpoints(s, id) })
	collectors := sync.OnceValue(func() string {
		return collectorsNeeded(s, id, func() Parts { return Parts{Lazy: sharedOutboundClustersLazy(s, id)} })
	})
	return s.MemoCarryRoutes(proxyKey{identityKey}, func(prev any) bool {
		p := prev.(*proxyOwn)
		return p.eps == eps() && p.collectors == collectors()
	}, func() any {
		return &proxyOwn{eps: eps(), collectors: collectors()}
	}).(*proxyOwn)
}

// IdentityKey is a digest of every field of id (maps in key order): what
// OutboundKey and InboundKey key a proxy by. A digest, not the formatted
// identity itself (about 1 KB a proxy, kept as a memo key). It costs a
// formatting of the whole identity, so a server that asks for a proxy's
// keys at every push computes it once per proxy.
func IdentityKey(id contract.Identity) string {
	sum := sha256.Sum256([]byte(fmt.Sprintf("%+v", id)))
	return string(sum[:])
}

// proxyOwn is InboundKey's key: the digest of the proxy's own endpoints
// (EndpointsAt its addresses) that its inbound part is built from, and
// the collector clusters it adds (collectorsNeeded).
type proxyOwn struct {
	eps        uint64
	collectors string
}

type proxyKey struct{ identity string }

// BuildInbound builds the inbound part of the proxy id's own resources
// (see InboundKey): its inbound listeners, sorted by name, and the
// clusters of its own (ClusterParts.Own: inbound, passthrough and
// tracing collector clusters), sorted by name. shared is the proxy's
// outbound clusters, built (Shared) or Lazy: a tracing collector gets a
// cluster of the proxy's own only when no service has its name.
func BuildInbound(s *mesh.Snapshot, id contract.Identity, shared Parts) (listeners, clusters []types.Resource) {
	switch {
	case id.Router():
		// A gateway has no application behind it.
	case id.Captured():
		in, inClusters := virtualInboundListener(s, id) // capture.go
		listeners = []types.Resource{in}
		clusters = append(inClusters, passthroughClusters()...)
	default:
		listeners, clusters = inbound(s, id)
	}
	sortByName(listeners)
	sortByName(clusters)
	traceListeners(s, id, listeners)
	statsListeners(s, id, listeners)
	return listeners, withCollectorClusters(s, id, shared, clusters)
}

// buildOwn builds a proxy's listeners, routes and own clusters
// (ClusterParts.Own; Shared is left nil): its outbound part and its
// inbound part, merged. shared is the proxy's outbound clusters, built or
// Lazy.
func buildOwn(s *mesh.Snapshot, id contract.Identity, shared Parts) Resources {
	outL, routes, vhosts := BuildOutbound(s, id)
	inL, own := BuildInbound(s, id, shared)
	listeners := append(slices.Clone(outL), inL...)
	sortByName(listeners)
	return Resources{Listeners: listeners, Routes: routes, VirtualHosts: vhosts, ClusterParts: Parts{Own: own}}
}
