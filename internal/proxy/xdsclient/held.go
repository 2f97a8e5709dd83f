package xdsclient

import (
	"fmt"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
)

// held is one resource as the client keeps it between responses: its
// encoding and what the state machine needs to know of it (which route
// configurations, clusters and assignments it names). The decoded message
// is kept only until it is handed to the Applier once (resourceSet.resources);
// later sets decode it again from wire. A sidecar of a large mesh holds
// thousands of resources whose decoded form is several times their
// encoding, and the data plane keeps what it compiled from them.
type held struct {
	// wire is the deterministic encoding of the decoded message: equal
	// resources have equal bytes, whatever the control plane's encoding.
	wire   []byte
	msg    proto.Message // nil once handed out
	rds    []string      // a listener's RDS names
	hcmErr error         // a listener's malformed HTTP connection manager
	routed []string      // the clusters a route configuration, or a listener's inline routes, send to
	eds    string        // an EDS cluster's EDS name
	hasEDS bool
}

// hold keeps msg, a decoded and validated resource.
func hold(msg proto.Message) (*held, error) {
	wire, err := proto.MarshalOptions{Deterministic: true}.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("encoding: %w", err)
	}
	h := &held{wire: wire, msg: msg}
	switch m := msg.(type) {
	case *listener.Listener:
		h.rds, h.hcmErr = hcmRouteNames(m)
		for _, rc := range inlineRouteConfigs(m) {
			h.routed = appendRouted(h.routed, rc)
		}
	case *route.RouteConfiguration:
		h.routed = appendRouted(nil, m)
	case *cluster.Cluster:
		h.eds, h.hasEDS = edsName(m)
	}
	return h, nil
}

// appendRouted appends the clusters rc's routes send to.
func appendRouted(names []string, rc *route.RouteConfiguration) []string {
	for _, vh := range rc.GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			a := r.GetRoute()
			if c := a.GetCluster(); c != "" {
				names = append(names, c)
			}
			for _, wc := range a.GetWeightedClusters().GetClusters() {
				names = append(names, wc.GetName())
			}
		}
	}
	return names
}

// take returns the decoded message, decoding wire again when it was handed
// out before, and forgets it: the receiver owns it.
func take[M proto.Message](h *held, fresh func() M) M {
	if m, ok := h.msg.(M); ok {
		h.msg = nil
		return m
	}
	m := fresh()
	if err := proto.Unmarshal(h.wire, m); err != nil {
		// Encoded by hold from a valid message: cannot happen.
		panic(fmt.Sprintf("xdsclient: decoding a held resource: %v", err))
	}
	return m
}

func newListener() *listener.Listener                { return &listener.Listener{} }
func newRoute() *route.RouteConfiguration            { return &route.RouteConfiguration{} }
func newCluster() *cluster.Cluster                   { return &cluster.Cluster{} }
func newAssignment() *endpoint.ClusterLoadAssignment { return &endpoint.ClusterLoadAssignment{} }
