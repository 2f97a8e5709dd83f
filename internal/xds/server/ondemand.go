package server

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"weft.dev/weft/internal/xds/contract"
	"weft.dev/weft/internal/xds/generate"
)

// Proxyless gRPC clients (contract.Identity.Proxyless) are served on
// demand: their snapshot holds exactly the resources their streams' latest
// requests of each type name (generate.ForProxyless), regenerated whenever
// a request names a different set, before the cache sees that request.
// grpc-go opens one ADS stream per channel target, all with the same node,
// so a node's snapshot is the union of what its streams name, and it lives
// in a cache of its own that is not in ADS mode (cacheMux): that cache
// answers each stream with the resources its request names, where an ADS
// mode cache answers only requests that name every resource of the
// snapshot. Each type's version also covers the names asked for, so every
// change of subscription gets a response; a name that resolves to nothing
// is simply absent from it (gRPC reports it as not found after its
// resource timeout).
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
	s.write(p, cur)
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
func (s *Server) generateFor(p *proxy, cur *versioned) (cachev3.ResourceSnapshot, []string, uint64, error) {
	if !p.id.Proxyless() {
		snap, versions, err := buildSnapshot(cur.m, generate.ForProxy(cur.m, p.id))
		return snap, versions, 0, err
	}
	p.mu.Lock()
	names, gen := unionOf(p.subs), p.namesGen
	p.mu.Unlock()
	snap, versions, err := snapshotOf(cur.m, generate.ForProxyless(cur.m, p.id, names))
	if err != nil {
		return nil, nil, 0, err
	}
	// Salt each type's version with the names asked for, so that a new
	// subscription is answered even when it adds nothing that exists.
	for i, typ := range typeOrder {
		v := versions[i] + "-" + namesHash(*namesOf(&names, typ))
		items := snap.Resources[cachev3.GetResponseType(typ)].Items
		snap.Resources[cachev3.GetResponseType(typ)] = cachev3.Resources{Version: v, Items: items}
		versions[i] = v
	}
	return proxylessSnapshot{snap}, versions, gen, nil
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

// proxylessSnapshot marks a proxyless client's snapshot, so cacheMux
// stores it in the proxyless cache.
type proxylessSnapshot struct{ *cachev3.Snapshot }

// cacheMux is the SnapshotCache the server uses: sidecars' snapshots in an
// ADS mode cache, proxyless clients' in one that is not (see above). A
// watch goes to the cache of its node's kind (node metadata GENERATOR), a
// snapshot to the cache of its kind (proxylessSnapshot or not).
type cacheMux struct {
	sidecars, proxyless cachev3.SnapshotCache
}

var _ cachev3.SnapshotCache = (*cacheMux)(nil)

func newCacheMux(sidecars, proxyless cachev3.SnapshotCache) *cacheMux {
	return &cacheMux{sidecars: sidecars, proxyless: proxyless}
}

func (m *cacheMux) forNode(n *core.Node) cachev3.SnapshotCache {
	if n.GetMetadata().GetFields()[contract.MetaGenerator].GetStringValue() == contract.GeneratorGRPC {
		return m.proxyless
	}
	return m.sidecars
}

func (m *cacheMux) CreateWatch(req *cachev3.Request, sub cachev3.Subscription, resp chan cachev3.Response) (func(), error) {
	return m.forNode(req.GetNode()).CreateWatch(req, sub, resp)
}

func (m *cacheMux) CreateDeltaWatch(req *cachev3.DeltaRequest, sub cachev3.Subscription, resp chan cachev3.DeltaResponse) (func(), error) {
	return m.forNode(req.GetNode()).CreateDeltaWatch(req, sub, resp)
}

func (m *cacheMux) Fetch(ctx context.Context, req *cachev3.Request) (cachev3.Response, error) {
	return m.forNode(req.GetNode()).Fetch(ctx, req)
}

func (m *cacheMux) SetSnapshot(ctx context.Context, node string, snap cachev3.ResourceSnapshot) error {
	if ps, ok := snap.(proxylessSnapshot); ok {
		return m.proxyless.SetSnapshot(ctx, node, ps.Snapshot)
	}
	return m.sidecars.SetSnapshot(ctx, node, snap)
}

func (m *cacheMux) GetSnapshot(node string) (cachev3.ResourceSnapshot, error) {
	if snap, err := m.sidecars.GetSnapshot(node); err == nil {
		return snap, nil
	}
	return m.proxyless.GetSnapshot(node)
}

// ClearSnapshot clears the node from both: a node id may reconnect as the
// other kind.
func (m *cacheMux) ClearSnapshot(node string) {
	m.sidecars.ClearSnapshot(node)
	m.proxyless.ClearSnapshot(node)
}

func (m *cacheMux) GetStatusInfo(node string) cachev3.StatusInfo {
	if info := m.sidecars.GetStatusInfo(node); info != nil {
		return info
	}
	return m.proxyless.GetStatusInfo(node)
}

func (m *cacheMux) GetStatusKeys() []string {
	return append(m.sidecars.GetStatusKeys(), m.proxyless.GetStatusKeys()...)
}

// namesHash is a short digest of a sorted list of names.
func namesHash(names []string) string {
	h := sha256.New()
	for _, n := range names {
		fmt.Fprintf(h, "%d:%s", len(n), n)
	}
	return hex.EncodeToString(h.Sum(nil)[:4])
}
