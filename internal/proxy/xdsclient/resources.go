// Package xdsclient is the proxy's ADS client: it subscribes to listeners,
// routes, clusters and endpoints over one gRPC stream, ACKs what the
// data plane applied and NACKs (with the reason) what it could not, and
// when the stream ends moves on to the next control plane replica at once
// (backing off only once all failed). It hands the data plane only
// complete, consistent resource sets.
package xdsclient

import (
	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// Resources is one complete set of xDS resources: every RDS name referenced
// by a listener and every EDS name referenced by a cluster is present (an
// EDS cluster whose assignment has not arrived may map to an empty
// assignment only after the first complete set was applied). The maps are
// keyed by resource name and must not be modified by the receiver; the
// client keeps no reference to the decoded messages.
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
	Listeners, Routes, Clusters, Endpoints map[string][]byte
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
