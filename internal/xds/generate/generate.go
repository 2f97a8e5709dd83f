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
}

// Lazy is a shared resource that is built only on request. Two Lazies
// whose Keys are equal (==) build equal resources, in one mesh snapshot
// and in those that carry over from it (mesh.Snapshot.MemoCarryRoutes):
// a server that keeps a resource's encoding under its Key, carried the
// same way, never needs the Go value again, and an endpoint change
// builds only the clusters and assignments whose endpoints changed.
// (Their Go values, kept for carrying over, were ~20 MB at 1,000
// services.)
type Lazy struct {
	Name  string
	Key   any
	Build func() types.Resource
}

// ByType returns the resources keyed by type URL, the form
// go-control-plane's cache takes.
func (r Resources) ByType() map[resource.Type][]types.Resource {
	return map[resource.Type][]types.Resource{
		resource.ListenerType: r.Listeners,
		resource.RouteType:    r.Routes,
		resource.ClusterType:  r.Clusters,
		resource.EndpointType: r.Endpoints,
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
		lazy := sharedOutboundClustersLazy(s, id)
		own := buildOwn(s, id, Parts{Lazy: lazy})
		return Resources{
			Listeners:     own.Listeners,
			Routes:        own.Routes,
			ClusterParts:  Parts{Lazy: lazy, Own: own.ClusterParts.Own},
			EndpointParts: Parts{Lazy: sharedOutboundEndpointsLazy(s, id)},
		}
	}
	shared := sharedOutboundClusters(s, id)
	own := buildOwn(s, id, Parts{Shared: shared})
	eps := sharedOutboundEndpoints(s, id)
	return Resources{
		Listeners:     own.Listeners,
		Routes:        own.Routes,
		ClusterParts:  Parts{Shared: shared, Own: own.ClusterParts.Own},
		EndpointParts: Parts{Shared: eps},
		Clusters:      mergeSorted(shared, own.ClusterParts.Own),
		Endpoints:     slices.Clone(eps),
	}
}

// SharedParts is ForProxyParts without the proxy's own resources: only
// ClusterParts.Lazy and EndpointParts.Lazy are set (memo lookups, no
// per-proxy work). With OwnKey, a server that keeps what it derives from
// the proxy's own resources (their encodings) calls ForProxyParts only
// when it has nothing kept for the key.
func SharedParts(s *mesh.Snapshot, id contract.Identity) Resources {
	return Resources{
		ClusterParts:  Parts{Lazy: sharedOutboundClustersLazy(s, id)},
		EndpointParts: Parts{Lazy: sharedOutboundEndpointsLazy(s, id)},
	}
}

// OwnKey identifies the proxy's own resources in s (its listeners,
// routes and ClusterParts.Own, as ForProxyParts builds them): two calls
// give the same key (==) only when those are the same, in this snapshot
// or in one it carries over from (mesh.Snapshot.MemoCarry: when only
// endpoints changed and none at the proxy's addresses). The resources
// themselves are not kept: a proxy's inbound listeners and clusters cost
// tens of KB as Go values, and a server needs only their encodings.
func OwnKey(s *mesh.Snapshot, id contract.Identity) any {
	return OwnKeyFor(s, id, IdentityKey(id))
}

// IdentityKey is a digest of every field of id (maps in key order): what
// OwnKeyFor keys a proxy by. A digest, not the formatted identity itself
// (about 1 KB a proxy, kept as a memo key). It costs a formatting of the
// whole identity, so a server that asks for a proxy's OwnKey at every
// push computes it once per proxy.
func IdentityKey(id contract.Identity) string {
	sum := sha256.Sum256([]byte(fmt.Sprintf("%+v", id)))
	return string(sum[:])
}

// OwnKeyFor is OwnKey with id's IdentityKey given.
func OwnKeyFor(s *mesh.Snapshot, id contract.Identity, identityKey string) any {
	own := func() uint64 {
		h := fnv.New64a()
		for _, ep := range s.Registry.EndpointsAt(id.IPs) {
			mesh.HashEndpoint(h, ep)
		}
		return h.Sum64()
	}
	key := proxyKey{identityKey}
	return s.MemoCarry(key, func(prev any) bool { return prev.(*proxyOwn).eps == own() }, func() any {
		return &proxyOwn{eps: own()}
	}).(*proxyOwn)
}

// proxyOwn is OwnKey's key: the digest of the proxy's own endpoints
// (EndpointsAt its addresses) that its own resources are built from.
type proxyOwn struct {
	eps uint64
}

type proxyKey struct{ identity string }

// buildOwn builds a proxy's listeners, routes and own clusters
// (ClusterParts.Own; Shared is left nil): what a proxy's inbound side is
// made of reads the endpoints at its addresses, nothing else of the
// registry but its services (OwnKey). The listeners and routes shared
// with other proxies come from the snapshot's memo. shared is the
// proxy's outbound clusters, built or Lazy (tracing adds a collector
// cluster only when no service has its name).
func buildOwn(s *mesh.Snapshot, id contract.Identity, shared Parts) Resources {
	var (
		r     Resources
		local []types.Resource // inbound (and passthrough) clusters
	)
	switch {
	case id.Router():
		// A gateway: the Gateways' listeners, no application behind it
		// (gateway.go).
		r.Listeners, r.Routes = gatewayListeners(s, id)
	case id.Captured():
		r.Listeners, r.Routes, local = captured(s, id)
	default:
		if l := outboundListener(s, id); l != nil {
			// The http_proxy route configuration exists exactly when a
			// listener refers to it, so the set stays consistent.
			rc := sharedOutboundRoutes(s, id)
			r.Listeners = append(r.Listeners, withCORSFilter(l, rc))
			r.Routes = append(r.Routes, rc)
		}
		var inL []types.Resource
		inL, local = inbound(s, id)
		r.Listeners = append(r.Listeners, inL...)
	}
	sortByName(local)
	r.ClusterParts = Parts{Shared: shared.Shared, Lazy: shared.Lazy, Own: local}
	sortByName(r.Listeners)
	sortByName(r.Routes)
	withTracing(s, id, &r) // tracing.go
	withStats(s, id, &r)   // stats.go
	r.ClusterParts.Shared, r.ClusterParts.Lazy = nil, nil
	return r
}
