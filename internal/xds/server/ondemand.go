package server

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"weft.dev/weft/internal/xds/generate"
)

// Proxyless gRPC clients (contract.Identity.Proxyless) are served on
// demand: their snapshot holds exactly the resources their streams' latest
// requests of each type name (generate.ForProxyless), regenerated whenever
// a request names a different set, before the cache sees that request.
// grpc-go opens one ADS stream per channel target, all with the same node,
// so a node's snapshot is the union of what its streams name; each stream
// is answered with the resources its request names (ads.go). The
// proxy's per-type versions also cover the names asked for, so every
// change of subscription regenerates it; a name that resolves to nothing
// is simply absent from the response (gRPC reports it as not found after
// its resource timeout).
//
// Only state-of-the-world streams are served this way (gRPC's default);
// a proxyless client on a delta stream gets nothing.

// subscribe records the names a proxyless client's request subscribes to
// and, when they changed, writes its snapshot anew. It is a no-op for
// sidecars and for requests that name what was already named.
func (s *Server) subscribe(key streamKey, req *discovery.DiscoveryRequest) error {
	p := s.streamProxy(key)
	if p == nil || !p.id.Proxyless() {
		return nil
	}
	names := slices.Compact(slices.Sorted(slices.Values(req.GetResourceNames())))
	p.mu.Lock()
	if p.subs == nil {
		p.subs = map[streamKey]generate.Names{}
	}
	n := p.subs[key]
	field := namesOf(&n, req.GetTypeUrl())
	if field == nil || slices.Equal(*field, names) {
		p.mu.Unlock()
		return nil
	}
	*field = names // replaced, never changed in place: writers hold copies
	p.subs[key] = n
	p.namesGen++
	p.mu.Unlock()
	cur := s.current()
	if cur == nil {
		return nil
	}
	if err := s.acquire(); err != nil {
		return err
	}
	defer s.release()
	s.write(p, cur, time.Time{})
	return nil
}

// namesOf is the field of n that holds the names of typeURL; nil for a
// type the server does not serve.
func namesOf(n *generate.Names, typeURL string) *[]string {
	switch typeURL {
	case resource.ListenerType:
		return &n.Listeners
	case resource.RouteType:
		return &n.Routes
	case resource.ClusterType:
		return &n.Clusters
	case resource.EndpointType:
		return &n.Endpoints
	}
	return nil
}

// generateFor generates p's resources from cur: everything for a sidecar,
// what it names for a proxyless client. It returns the snapshot, its
// per-type versions, and the generation of the names it used (0 for a
// sidecar), which write checks is still current before storing.
func (s *Server) generateFor(p *proxy, cur *versioned) (*nodeSnapshot, []string, uint64, error) {
	if !p.id.Proxyless() {
		snap, versions, err := s.sidecarSnapshot(cur.m, p)
		return snap, versions, 0, err
	}
	p.mu.Lock()
	names, gen := unionOf(p.subs), p.namesGen
	p.mu.Unlock()
	snap, versions, err := s.snapshotOf(cur.m, generate.ForProxyless(cur.m, p.id, names))
	if err != nil {
		return nil, nil, 0, err
	}
	// Salt each type's version with the names asked for, so that a new
	// subscription is written even when it adds nothing that exists.
	for i, typ := range typeOrder {
		if n := namesOf(&names, typ); n != nil {
			versions[i] += "-" + namesHash(*n)
		}
	}
	return snap, versions, gen, nil
}

// unsubscribe forgets what a closed stream named. The node's snapshot
// keeps those resources until its next write: no stream asks for them,
// so none is sent them.
func (s *Server) unsubscribe(key streamKey) {
	if p := s.streamProxy(key); p != nil && p.id.Proxyless() {
		p.mu.Lock()
		delete(p.subs, key)
		p.mu.Unlock()
	}
}

// unionOf merges what every stream of a node names, sorted, each once.
func unionOf(subs map[streamKey]generate.Names) generate.Names {
	var u generate.Names
	for _, n := range subs {
		u.Listeners = append(u.Listeners, n.Listeners...)
		u.Routes = append(u.Routes, n.Routes...)
		u.Clusters = append(u.Clusters, n.Clusters...)
		u.Endpoints = append(u.Endpoints, n.Endpoints...)
	}
	for _, f := range []*[]string{&u.Listeners, &u.Routes, &u.Clusters, &u.Endpoints} {
		slices.Sort(*f)
		*f = slices.Compact(*f)
	}
	return u
}

// namesHash is a short digest of a sorted list of names.
func namesHash(names []string) string {
	h := sha256.New()
	for _, n := range names {
		fmt.Fprintf(h, "%d:%s", len(n), n)
	}
	return hex.EncodeToString(h.Sum(nil)[:4])
}
