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

// held is one resource as the client keeps it between responses: its
// encoding and what the state machine needs to know of it (which route
// configurations, clusters and assignments it names). The decoded message
// of a listener is kept only until it is handed to the Applier once
// (resourceSet.resources); later sets hand only the encoding, which the
// Applier compares with what it built from or decodes (Resources.Listener).
// Virtual hosts are merged into their route configuration from their
// encodings (vhds.go). Route configurations, clusters and load
// assignments are never handed decoded: a sidecar of a large mesh
// receives thousands of clusters and assignments and a route
// configuration of a thousand virtual hosts, whose decoded form is
// several times their encoding. Holding them decoded until the set was
// applied made its first configuration peak at twice the heap it settles
// at, and the decoded route configuration (4.5 MB for 1,000 services),
// alive while every cluster was built, left that much of the heap in
// holes once it was freed. The Applier decodes each when it builds it,
// and drops it before the next.
type held struct {
	// wire is the deterministic encoding of the decoded message, packed:
	// equal resources have equal packs, whatever the control plane's
	// encoding.
	wire   xdswire.Packed
	eds    string // an EDS cluster's EDS name
	hasEDS bool
	// *routing is set for listeners, route configurations and virtual
	// hosts, nil for the thousands of clusters and assignments (but for
	// a cluster that names secrets over ADS: its sds).
	*routing
}

// routing is what a held listener, route configuration or virtual host
// names.
type routing struct {
	msg    proto.Message // a listener until handed out
	rds    []string      // a listener's RDS names
	sds    []string      // the SDS secrets over ADS a listener or cluster names (a gateway's credentials)
	hcmErr error         // a listener's malformed HTTP connection manager
	routed []string      // the clusters a route configuration, or a listener's inline routes, send to
	vhds   bool          // a route configuration that takes its virtual hosts by VHDS
}

// hold keeps msg, a decoded and validated resource.
func hold(msg proto.Message) (*held, error) {
	wire, err := xdswire.Pack(msg)
	if err != nil {
		return nil, fmt.Errorf("encoding: %w", err)
	}
	h := &held{wire: wire}
	switch m := msg.(type) {
	case *listener.Listener:
		r := &routing{msg: m}
		var filterSecrets []string
		r.rds, filterSecrets, r.hcmErr = hcmRouteNames(m)
		r.sds = appendSocketSecrets(filterSecrets, m)
		for _, rc := range inlineRouteConfigs(m) {
			r.routed = appendRouted(r.routed, rc)
		}
		h.routing = r
	case *route.RouteConfiguration:
		h.routing = &routing{routed: appendRouted(nil, m), vhds: m.GetVhds() != nil}
	case *route.VirtualHost:
		h.routing = &routing{routed: appendVhostRouted(nil, m)}
	case *cluster.Cluster:
		h.eds, h.hasEDS = edsName(m)
		if h.eds == m.GetName() {
			h.eds = m.GetName() // the name's string (the set's key), not a copy: Istio's EDS names are the clusters'
		}
		if sds := clusterSecrets(m); len(sds) > 0 {
			// An egress gateway's credential: the only clusters with a
			// routing, which holds the names (never a message).
			h.routing = &routing{sds: sds}
		}
	}
	return h, nil
}

// appendRouted appends the clusters rc's routes send to.
func appendRouted(names []string, rc *route.RouteConfiguration) []string {
	for _, vh := range rc.GetVirtualHosts() {
		names = appendVhostRouted(names, vh)
	}
	return names
}

// appendVhostRouted appends the clusters vh's routes send to.
func appendVhostRouted(names []string, vh *route.VirtualHost) []string {
	for _, r := range vh.GetRoutes() {
		a := r.GetRoute()
		if c := a.GetCluster(); c != "" {
			names = append(names, c)
		}
		for _, wc := range a.GetWeightedClusters().GetClusters() {
			names = append(names, wc.GetName())
		}
	}
	return names
}

// fresh returns the decoded message if it was not handed out yet, and
// forgets it: the receiver owns it. Otherwise it returns nil: the
// receiver has what it built from the same encoding, or decodes it
// (Resources.Cluster and the like).
func fresh[M interface {
	proto.Message
	comparable
}](h *held) M {
	var zero M
	if h.routing == nil {
		return zero
	}
	if m, ok := h.msg.(M); ok {
		h.msg = nil
		return m
	}
	return zero
}

// sameAs reports whether h, just received, encodes what old did: the set
// then keeps old (and hands no decoded message of it again).
func (h *held) sameAs(old *held) bool { return old != nil && h.wire.Equal(old.wire) }

// keep returns old when h encodes what it did, else h.
func keep(h, old *held) *held {
	if h.sameAs(old) {
		return old
	}
	return h
}

// keepUnchanged replaces each resource of in that encodes what the
// same-named one of cur did by cur's.
func keepUnchanged(in, cur map[string]*held) {
	for n, h := range in {
		if o := cur[n]; h.sameAs(o) {
			in[n] = o
		}
	}
}

func newListener() *listener.Listener                { return &listener.Listener{} }
func newRoute() *route.RouteConfiguration            { return &route.RouteConfiguration{} }
func newCluster() *cluster.Cluster                   { return &cluster.Cluster{} }
func newAssignment() *endpoint.ClusterLoadAssignment { return &endpoint.ClusterLoadAssignment{} }
