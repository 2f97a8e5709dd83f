package xdsclient

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"weft.dev/weft/internal/xds/contract"
)

// VHDS (Envoy's Virtual Host Discovery Service) on a delta stream: the
// client lists contract.FeatureVHDS among its node's client_features and
// subscribes to every virtual host (wildcard); a route configuration that
// says vhds then arrives without its virtual hosts, and each of them as a
// resource of its own named "<route configuration>/<virtual host>". A
// change to one service's routes is then a response of that service's
// virtual hosts, not of every route configuration that holds one.
//
// The Applier never sees the split: the client merges each such route
// configuration with its virtual hosts (names without the prefix, sorted,
// then the configuration's own ones) into the route configuration a
// control plane without VHDS would have sent, and hands that over when
// either part changed. Until the first VHDS response has come, such a
// route configuration counts as missing, so a first config is applied
// with its virtual hosts, never without.

// vhdsSet is what a resourceSet holds of VHDS: the route configurations
// that take virtual hosts by VHDS, as received, and every virtual host
// received, by resource name. Virtual hosts are kept whatever route
// configuration is subscribed: the control plane sends each once, and a
// route configuration subscribed again later needs them.
type vhdsSet struct {
	bases  map[string]*held
	vhosts map[string]*held
}

func (v *vhdsSet) clone() *vhdsSet {
	if v == nil {
		return nil
	}
	return &vhdsSet{bases: maps.Clone(v.bases), vhosts: maps.Clone(v.vhosts)}
}

// forget drops the route configuration rc (no longer subscribed).
func (v *vhdsSet) forget(rc string) {
	if v != nil {
		delete(v.bases, rc)
	}
}

// vhdsState is s.vhds, made on first use.
func (s *resourceSet) vhdsState() *vhdsSet {
	if s.vhds == nil {
		s.vhds = &vhdsSet{bases: map[string]*held{}, vhosts: map[string]*held{}}
	}
	return s.vhds
}

// putRoute takes in route configuration h, named name: as it is, or —
// when it says vhds — as the base of the merged one.
func (s *resourceSet) putRoute(name string, h *held) error {
	if !h.vhds {
		s.vhds.forget(name)
		s.routes[name] = keep(h, s.routes[name])
		return nil
	}
	h.msg = nil // never handed out: merge decodes the encoding
	s.vhdsState().bases[name] = h
	return s.remerge(name)
}

// dropRoute forgets the route configuration name, removed by the control
// plane.
func (s *resourceSet) dropRoute(name string) {
	delete(s.routes, name)
	s.vhds.forget(name)
}

// putVirtualHost takes in one virtual host (h, or a removal when h is
// nil) and returns the route configuration it belongs to.
func (s *resourceSet) putVirtualHost(name string, h *held) string {
	v := s.vhdsState()
	if h == nil {
		delete(v.vhosts, name)
	} else {
		v.vhosts[name] = keep(h, v.vhosts[name])
	}
	rc, _, _ := contract.SplitVirtualHostName(name)
	return rc
}

// remerge rebuilds the merged route configuration of each base named in
// rcs (all of them when rcs is nil) from its base and virtual hosts. A
// base is left unmerged — missing for the Applier — until a VHDS
// response has come.
func (s *resourceSet) remerge(rcs ...string) error {
	if s.vhds == nil {
		return nil
	}
	if rcs == nil {
		rcs = slices.Sorted(maps.Keys(s.vhds.bases))
	}
	for _, name := range rcs {
		base, ok := s.vhds.bases[name]
		if !ok {
			continue
		}
		if !s.received[TypeVirtualHost] {
			delete(s.routes, name)
			continue
		}
		h, err := s.vhds.merge(name, base)
		if err != nil {
			return err
		}
		if s.canon != nil {
			s.canon(h)
		}
		s.routes[name] = keep(h, s.routes[name])
	}
	return nil
}

// merge is the route configuration base (named name) with its virtual
// hosts: those of VHDS, sorted by name and named without the prefix,
// then its own.
func (v *vhdsSet) merge(name string, base *held) (*held, error) {
	rc := &route.RouteConfiguration{}
	if err := base.wire.Unmarshal(rc); err != nil {
		return nil, fmt.Errorf("route configuration %q: decoding: %w", name, err)
	}
	prefix := contract.VirtualHostName(name, "")
	var names []string
	for n := range v.vhosts {
		if strings.HasPrefix(n, prefix) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	vhs := make([]*route.VirtualHost, 0, len(names)+len(rc.GetVirtualHosts()))
	for _, n := range names {
		vh := &route.VirtualHost{}
		if err := v.vhosts[n].wire.Unmarshal(vh); err != nil {
			return nil, fmt.Errorf("virtual host %q: decoding: %w", n, err)
		}
		vh.Name = strings.TrimPrefix(vh.GetName(), prefix)
		vhs = append(vhs, vh)
	}
	rc.VirtualHosts = append(vhs, rc.GetVirtualHosts()...)
	rc.Vhds = nil // what the Applier gets is whole
	h, err := hold(rc)
	if err != nil {
		return nil, fmt.Errorf("route configuration %q: %w", name, err)
	}
	return h, nil
}
