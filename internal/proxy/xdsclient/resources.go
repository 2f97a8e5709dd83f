// Package xdsclient is the proxy's ADS client: it subscribes to listeners,
// routes, clusters and endpoints over one gRPC stream, ACKs what the
// data plane applied and NACKs (with the reason) what it could not, and
// when the stream ends moves on to the next control plane replica at once
// (backing off only once all failed). It hands the data plane only
// complete, consistent resource sets.
package xdsclient

import (
	"fmt"
	"weft.dev/weft/internal/proxy/xdswire"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
)

// Resources is one complete set of xDS resources: every RDS name referenced
// by a listener and every EDS name referenced by a cluster is present (an
// EDS cluster whose assignment has not arrived may map to an empty
// assignment only after the first complete set was applied). The maps are
// keyed by resource name and must not be modified by the receiver; the
// client keeps no reference to the decoded messages.
//
// A message is nil when Wire holds its encoding and the client did not
// decode it for this set: it hands over decoded only the listeners it
// received since the last set, and route configurations, clusters and
// assignments never (a sidecar of a large mesh holds thousands of
// clusters and a route configuration of a thousand virtual hosts; they
// are decoded one at a time, when built). The Applier carries over what it
// built from an unchanged encoding, or decodes it (Listener, Route,
// Cluster, Endpoint).
type Resources struct {
	Listeners map[string]*listener.Listener
	Routes    map[string]*route.RouteConfiguration
	Clusters  map[string]*cluster.Cluster
	Endpoints map[string]*endpoint.ClusterLoadAssignment
	// Versions are the version_info of each type URL last received.
	Versions map[string]string
	// Wire, when not nil, is the encoding of each resource of the maps
	// above that came from the control plane (not the empty stand-ins of
	// an incomplete set): deterministic protobuf, so an unchanged
	// resource has the same bytes in every set. The Applier may compare
	// them to carry over what it built from a resource, and keep them
	// instead of the decoded messages. Sets built by hand may leave it nil.
	Wire *Wire
}

// Wire is the encoding of a Resources' messages, by the same names.
type Wire struct {
	Listeners, Routes, Clusters, Endpoints map[string]xdswire.Packed
}

// Listener returns the named listener: its message, or a message decoded
// from its encoding when the set holds only that; nil when the set has no
// such listener. A decoded message is the caller's and is not kept.
func (r *Resources) Listener(name string) (*listener.Listener, error) {
	return lookup(r.Listeners, r.wire().Listeners, TypeListener, name, newListener)
}

// Route is Listener for route configurations.
func (r *Resources) Route(name string) (*route.RouteConfiguration, error) {
	return lookup(r.Routes, r.wire().Routes, TypeRoute, name, newRoute)
}

// Cluster is Listener for clusters.
func (r *Resources) Cluster(name string) (*cluster.Cluster, error) {
	return lookup(r.Clusters, r.wire().Clusters, TypeCluster, name, newCluster)
}

// Endpoint is Listener for endpoint assignments (by EDS name).
func (r *Resources) Endpoint(name string) (*endpoint.ClusterLoadAssignment, error) {
	return lookup(r.Endpoints, r.wire().Endpoints, TypeEndpoint, name, newAssignment)
}

func (r *Resources) wire() *Wire {
	if r.Wire == nil {
		return &Wire{}
	}
	return r.Wire
}

// lookup returns ms[name], decoded from wire[name] when that is nil.
func lookup[M interface {
	proto.Message
	comparable
}](ms map[string]M, wire map[string]xdswire.Packed, typeURL, name string, fresh func() M) (M, error) {
	var zero M
	if m := ms[name]; m != zero {
		return m, nil
	}
	b, ok := wire[name]
	if !ok {
		return zero, nil
	}
	m := fresh()
	if err := b.Unmarshal(m); err != nil {
		return zero, fmt.Errorf("%s %q: decoding its encoding: %w", shortType(typeURL), name, err)
	}
	return m, nil
}

// Applier is the data plane seen from the client. Apply is called from the
// client's single stream goroutine, never concurrently; it must either apply
// the whole set atomically and return nil, or leave the running config
// untouched and return an error, which the client sends back as a NACK.
type Applier interface {
	Apply(*Resources) error
}

// ApplierFunc adapts a function to Applier.
type ApplierFunc func(*Resources) error

// Apply calls f.
func (f ApplierFunc) Apply(r *Resources) error { return f(r) }
