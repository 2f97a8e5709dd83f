package server

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"iter"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"unsafe"
	"weak"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/xds/generate"
)

// typeOrder fixes the order of a nodeSnapshot's sets and of the per-type
// versions snapshotOf returns.
var typeOrder = [...]string{resource.ListenerType, resource.RouteType, resource.ClusterType, resource.EndpointType, resource.VirtualHostType, resource.SecretType}

// pushOrder is the order a stream sends types in when several changed:
// Envoy's make-before-break order, clusters and their endpoints before
// the listeners and routes that use them. Virtual hosts taken by VHDS
// (wildcard, so they need no subscription) go before the listeners: a
// route configuration new to a proxy — a listener gained an HTTP port —
// is asked for only once its listener has arrived, and by then its
// virtual hosts are held, so it is never applied with its catch-all
// alone. A virtual host needs its clusters, not its listener.
//
// Secrets (a gateway's credentials, asked for by name once a listener
// names them) go before the listeners too: a changed certificate is in
// place before a listener that needs it.
var pushOrder = [...]string{resource.ClusterType, resource.EndpointType, resource.VirtualHostType, resource.SecretType, resource.ListenerType, resource.RouteType}

func typeIndex(typeURL string) int {
	for i, t := range typeOrder {
		if t == typeURL {
			return i
		}
	}
	return -1
}

// nodeSnapshot is everything one proxy is served: one typeSet per type,
// in typeOrder. Immutable; replaced whole when any type changes.
type nodeSnapshot struct {
	sets [len(typeOrder)]*typeSet
}

// set is the snapshot's resources of typeURL (nil for a type not served).
func (n *nodeSnapshot) set(typeURL string) *typeSet {
	if i := typeIndex(typeURL); i >= 0 {
		return n.sets[i]
	}
	return nil
}

// version is the snapshot's version of typeURL ("" for a type not served).
func (n *nodeSnapshot) version(typeURL string) string {
	if set := n.set(typeURL); set != nil {
		return set.version
	}
	return ""
}

// encoded is one resource as it goes on the wire, encoded once per mesh
// snapshot and shared by every proxy and stream that is sent it. Read
// only: the gRPC encoder of many streams reads it at once.
type encoded struct {
	name    string
	version string // its delta version (a content hash)
	any     *anypb.Any
	delta   *discovery.Resource
}

// typeSet is the resources of one type as one proxy receives them,
// shared by every proxy that receives the same (the sets are looked up by
// content, see Server.setOf). Immutable. It is kept small, because a set
// that holds a proxy's own resources (its inbound clusters and
// listeners) is one per proxy: one pointer per resource, sorted by name;
// the name list is made only when a subscription by name needs it.
type typeSet struct {
	typeURL string
	// version is a digest of every resource's encoding, in order: the
	// state-of-the-world version, and what identifies the set.
	version string
	// The resources, sorted by name, each name once (all): items, or —
	// for a proxy's set made of a shared set and its own resources —
	// base's items merged with own (those of its own whose names base
	// has not, sorted). A proxy's cluster set then costs its own few
	// resources rather than a copy of the scope's thousands of pointers
	// (24 KB a proxy at 1,000 services).
	items []*encoded
	base  *typeSet
	own   []*encoded
	n     int // how many in all
	names func() []string
	diffs sync.Map // older set's version -> *setDiff, for delta pushes
}

func newTypeSet(typeURL, version string, items []*encoded) *typeSet {
	return withNames(&typeSet{typeURL: typeURL, version: version, items: items, n: len(items)})
}

// newMergedSet is the set of base's resources and own's (sorted by name,
// each name once); where a name is in both, base's resource is the
// set's.
func newMergedSet(typeURL, version string, base *typeSet, own []*encoded) *typeSet {
	own = slices.DeleteFunc(own, func(e *encoded) bool { return base.has(e.name) })
	return withNames(&typeSet{typeURL: typeURL, version: version, base: base, own: slices.Clip(own), n: base.n + len(own)})
}

func withNames(set *typeSet) *typeSet {
	set.names = sync.OnceValue(func() []string {
		names := make([]string, 0, set.n)
		for e := range set.all() {
			names = append(names, e.name)
		}
		return names
	})
	return set
}

// all yields the set's resources in name order.
func (set *typeSet) all() iter.Seq[*encoded] {
	return func(yield func(*encoded) bool) {
		if set.base == nil {
			for _, e := range set.items {
				if !yield(e) {
					return
				}
			}
			return
		}
		own := set.own
		for e := range set.base.all() {
			for len(own) > 0 && own[0].name < e.name {
				if !yield(own[0]) {
					return
				}
				own = own[1:]
			}
			if !yield(e) {
				return
			}
		}
		for _, e := range own {
			if !yield(e) {
				return
			}
		}
	}
}

// list is all as a slice: the set's own for a set without base, else a
// new one.
func (set *typeSet) list() []*encoded {
	if set.base == nil {
		return set.items
	}
	return slices.AppendSeq(make([]*encoded, 0, set.n), set.all())
}

// get is the resource called name, or nil.
func (set *typeSet) get(name string) *encoded {
	if set == nil {
		return nil
	}
	if set.base != nil {
		if e := findEncoded(set.own, name); e != nil {
			return e
		}
		return set.base.get(name)
	}
	return findEncoded(set.items, name)
}

func findEncoded(items []*encoded, name string) *encoded {
	i, ok := slices.BinarySearchFunc(items, name, func(e *encoded, n string) int { return cmpString(e.name, n) })
	if !ok {
		return nil
	}
	return items[i]
}

// has reports whether name is one of the set's resources.
func (set *typeSet) has(name string) bool { return set.get(name) != nil }

// anys lists every resource as a state-of-the-world response does.
func (set *typeSet) anys() []*anypb.Any {
	out := make([]*anypb.Any, 0, set.n)
	for e := range set.all() {
		out = append(out, e.any)
	}
	return out
}

// deltas lists every resource as a delta response does.
func (set *typeSet) deltas() []*discovery.Resource {
	out := make([]*discovery.Resource, 0, set.n)
	for e := range set.all() {
		out = append(out, e.delta)
	}
	return out
}

// setDiff is what a delta response carries to a proxy that has all of an
// older set to bring it to all of a newer one.
type setDiff struct {
	resources []*discovery.Resource
	removed   []string
	sameNames bool // both sets have the same names (only versions changed)

	// body is resources as they go on the wire (deltaWithBody), encoded
	// once for the proxies that take the step while any of them still
	// holds it, and held only weakly (a weak pointer to its first byte;
	// nbody its length): a set keeps a diff from every older set a proxy
	// came from for as long as the set lives, and when proxies fall
	// behind — a storm of endpoint changes with the control plane short
	// of CPU — they come from many, and sets of many generations live at
	// once. Held strongly, those bodies were 476 MB of a 650 MB heap at
	// 2,000 proxies (docs/benchmarks.md, "Diffs for proxies that fell
	// behind"). Once no response in flight refers to a body, the
	// collector takes it, and the next proxy to take the step encodes it
	// again.
	mu    sync.Mutex
	body  weak.Pointer[byte]
	nbody int
}

// encoded returns d's resources as they go on the wire.
func (d *setDiff) encoded() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	if p := d.body.Value(); p != nil {
		return unsafe.Slice(p, d.nbody)
	}
	b := encodeResources(d.resources)
	if len(b) > 0 {
		d.body, d.nbody = weak.Make(&b[0]), len(b)
	}
	return b
}

// diffFrom is what changed from old to set, both taken whole. It is
// computed once for all the proxies that make the same step (a walk of
// both sorted lists).
func (set *typeSet) diffFrom(old *typeSet) *setDiff {
	if d, ok := set.diffs.Load(old.version); ok {
		return d.(*setDiff)
	}
	d := &setDiff{sameNames: true}
	a, b := set.list(), old.list()
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case j == len(b) || (i < len(a) && a[i].name < b[j].name):
			d.resources = append(d.resources, a[i].delta)
			d.sameNames = false
			i++
		case i == len(a) || b[j].name < a[i].name:
			d.removed = append(d.removed, b[j].name)
			d.sameNames = false
			j++
		default:
			if a[i].version != b[j].version {
				d.resources = append(d.resources, a[i].delta)
			}
			i++
			j++
		}
	}
	v, _ := set.diffs.LoadOrStore(old.version, d)
	return v.(*setDiff)
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// setKey finds a set by content.
type setKey struct{ typeURL, version string }

// setCache finds the typeSet of some content if one is alive anywhere,
// so proxies that receive the same resources share one set (its maps,
// its response lists, its delta diffs), across mesh snapshots too: a
// type that did not change keeps its very set. Entries go when the last
// proxy lets go of their set.
type setCache struct {
	mu   sync.Mutex
	sets map[setKey]weak.Pointer[typeSet]
}

func (c *setCache) get(k setKey) *typeSet {
	c.mu.Lock()
	defer c.mu.Unlock()
	if w, ok := c.sets[k]; ok {
		if set := w.Value(); set != nil {
			return set
		}
		delete(c.sets, k)
	}
	return nil
}

// put stores set unless a live set of the same content got there first,
// and returns the one to use.
func (c *setCache) put(set *typeSet) *typeSet {
	k := setKey{set.typeURL, set.version}
	c.mu.Lock()
	defer c.mu.Unlock()
	if w, ok := c.sets[k]; ok {
		if old := w.Value(); old != nil {
			return old
		}
	}
	if c.sets == nil {
		c.sets = map[setKey]weak.Pointer[typeSet]{}
	}
	c.sets[k] = weak.Make(set)
	return set
}

// prune forgets sets no proxy holds any more, and the diffs from them
// that live sets keep: no proxy will take those steps again.
func (c *setCache) prune() {
	c.mu.Lock()
	defer c.mu.Unlock()
	var live []*typeSet
	for k, w := range c.sets {
		if set := w.Value(); set != nil {
			live = append(live, set)
		} else {
			delete(c.sets, k)
		}
	}
	for _, set := range live {
		set.diffs.Range(func(from, _ any) bool {
			if _, ok := c.sets[setKey{set.typeURL, from.(string)}]; !ok {
				set.diffs.Delete(from)
			}
			return true
		})
	}
}

// snapshotOf turns resources generated from m into a node snapshot and
// its per-type versions (in typeOrder). Each type's version is a hash of
// its resources, so a type whose content did not change keeps its
// version, and its set, and is not sent again.
func (s *Server) snapshotOf(m *mesh.Snapshot, r generate.Resources) (*nodeSnapshot, []string, error) {
	byType := r.ByType()
	snap := &nodeSnapshot{}
	versions := make([]string, len(typeOrder))
	for i, typ := range typeOrder {
		var (
			set *typeSet
			err error
		)
		switch parts := partsOf(r, typ); {
		case m != nil && len(parts.Lazy) > 0:
			set, err = s.setOfLazyParts(m, typ, parts)
		case m != nil && len(parts.Shared) > 0:
			set, err = s.setOfParts(m, typ, parts)
		case byType[typ] == nil && len(parts.Own) > 0:
			set, err = s.setOf(m, typ, parts.Own) // ForProxyParts, nothing shared
		default:
			set, err = s.setOf(m, typ, byType[typ])
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", typ, err)
		}
		snap.sets[i] = set
		versions[i] = set.version
	}
	return snap, versions, nil
}

// partsOf is how r's list of typeURL was made, if r says.
func partsOf(r generate.Resources, typeURL string) generate.Parts {
	switch typeURL {
	case resource.ClusterType:
		return r.ClusterParts
	case resource.EndpointType:
		return r.EndpointParts
	}
	return generate.Parts{}
}

// sharedSetKey keys the set of a generator's shared list in
// mesh.Snapshot.Memo: the list's first element's address and its length
// (the memo that made the list keeps it alive as long as the snapshot).
type sharedSetKey struct {
	typeURL string
	first   *types.Resource
	n       int
}

type setOrErr struct {
	set *typeSet
	err error
}

// setOfParts is the set of parts.Shared merged with parts.Own. The shared
// part's set is made once per mesh snapshot, so a proxy costs only its
// own resources and one merge of pointers; its version is a digest of the
// shared set's version and the own resources' digests.
func (s *Server) setOfParts(m *mesh.Snapshot, typeURL string, parts generate.Parts) (*typeSet, error) {
	own := make([]*digests, len(parts.Own))
	for i, it := range parts.Own {
		d := resourceDigest(m, typeURL, it)
		if d.err != nil {
			return nil, d.err
		}
		own[i] = d
	}
	return s.setOfSharedAndOwn(m, typeURL, parts.Shared, own)
}

// setOfLazyParts is setOfParts for parts whose shared list is Lazy.
func (s *Server) setOfLazyParts(m *mesh.Snapshot, typeURL string, parts generate.Parts) (*typeSet, error) {
	own := make([]*digests, len(parts.Own))
	for i, it := range parts.Own {
		d := resourceDigest(m, typeURL, it)
		if d.err != nil {
			return nil, d.err
		}
		own[i] = d
	}
	return s.setOfLazyAndOwn(m, typeURL, parts, own)
}

// setOfSharedAndOwn is setOfParts with the own resources encoded already.
func (s *Server) setOfSharedAndOwn(m *mesh.Snapshot, typeURL string, sharedList []types.Resource, ownDs []*digests) (*typeSet, error) {
	so := m.Memo(sharedSetKey{typeURL, &sharedList[0], len(sharedList)}, func() any {
		set, err := s.setOf(m, typeURL, sharedList)
		return setOrErr{set, err}
	}).(setOrErr)
	if so.err != nil {
		return nil, so.err
	}
	return s.withOwn(typeURL, so.set, ownDs), nil
}

// setOfLazyAndOwn is setOfSharedAndOwn for a Lazy shared list.
func (s *Server) setOfLazyAndOwn(m *mesh.Snapshot, typeURL string, parts generate.Parts, ownDs []*digests) (*typeSet, error) {
	shared, err := s.setOfLazy(m, typeURL, parts.Lazy, parts.LazyKey)
	if err != nil {
		return nil, err
	}
	return s.withOwn(typeURL, shared, ownDs), nil
}

// withOwn is the set of shared's resources and the own ones.
func (s *Server) withOwn(typeURL string, shared *typeSet, ownDs []*digests) *typeSet {
	if len(ownDs) == 0 {
		return shared
	}
	own := make([]*encoded, len(ownDs))
	h := sha256.New()
	h.Write([]byte(shared.version))
	for i, d := range ownDs {
		h.Write(d.sum[:])
		own[i] = &d.enc
	}
	version := hex.EncodeToString(h.Sum(nil)[:8])
	if set := s.sets.get(setKey{typeURL, version}); set != nil {
		return set
	}
	slices.SortStableFunc(own, func(a, b *encoded) int { return cmpString(a.name, b.name) })
	own = slices.CompactFunc(own, func(a, b *encoded) bool { return a.name == b.name })
	return s.sets.put(newMergedSet(typeURL, version, shared, own))
}

// lazySetKey keys the set of a generator's shared Lazy list in
// mesh.Snapshot.Memo, as sharedSetKey.
type lazySetKey struct {
	typeURL string
	first   *generate.Lazy
	n       int
}

// lazyDigestKey keys a Lazy resource's digests in mesh.Snapshot.Memo:
// its Key, carried over as the generator carries the resource (routes
// and endpoints may change), so an unchanged resource is neither built
// nor encoded again, and its Go value is garbage once encoded.
type lazyDigestKey struct {
	typeURL string
	k       any
}

// lazyListSetKey keys the set of a Lazy list by the list's LazyKey
// (generate.Parts), which names it across mesh snapshots.
type lazyListSetKey struct {
	typeURL string
	listKey any
}

// lazySet is the set of a Lazy list and what it was made of.
type lazySet struct {
	list []generate.Lazy
	ds   []*digests
	set  *typeSet
	err  error
}

// setOfLazy is the shared set of a Lazy list, made once per mesh
// snapshot; it builds and encodes only the resources whose encodings
// this snapshot or the one it carries over from has not got. With a
// listKey (generate.Parts.LazyKey), the set the snapshot carried over
// from made of the list under that key is where encodings are taken
// from first, by position: an entry with the same name and Key as the
// one there is not even looked up. An endpoint change to one service at
// 1,000 services so costs its few entries, not 6,000 lookups (~11 ms a
// change, on the path of every proxy's push).
func (s *Server) setOfLazy(m *mesh.Snapshot, typeURL string, list []generate.Lazy, listKey any) (*typeSet, error) {
	build := func(prev *lazySet) any {
		ds, err := lazyDigestsFrom(m, typeURL, list, prev)
		if err != nil {
			return &lazySet{err: err}
		}
		return &lazySet{list: list, ds: ds, set: s.setOfDigests(typeURL, ds)}
	}
	byIdentity := func() *lazySet {
		return m.Memo(lazySetKey{typeURL, &list[0], len(list)}, func() any { return build(nil) }).(*lazySet)
	}
	var ls *lazySet
	if listKey == nil {
		ls = byIdentity()
	} else {
		ls = m.MemoDeriveRoutes(lazyListSetKey{typeURL, listKey}, func(prev any) any {
			if p := prev.(*lazySet); p.err == nil {
				return build(p)
			}
			return build(nil)
		}, func() any { return build(nil) }).(*lazySet)
		if ls.err == nil && (len(ls.list) != len(list) || &ls.list[0] != &list[0]) {
			// Two lists under one key in a snapshot: a generator bug,
			// but not one to send wrong resources for.
			ls = byIdentity()
		}
	}
	return ls.set, ls.err
}

// setOf is the shared set of resources.
func (s *Server) setOf(m *mesh.Snapshot, typeURL string, resources []types.Resource) (*typeSet, error) {
	ds := make([]*digests, len(resources))
	for i, it := range resources {
		d := resourceDigest(m, typeURL, it)
		if d.err != nil {
			return nil, d.err
		}
		ds[i] = d
	}
	return s.setOfDigests(typeURL, ds), nil
}

// setOfDigests is the set of resources encoded already.
func (s *Server) setOfDigests(typeURL string, ds []*digests) *typeSet {
	h := sha256.New()
	for _, d := range ds {
		h.Write(d.sum[:])
	}
	version := hex.EncodeToString(h.Sum(nil)[:8])
	if set := s.sets.get(setKey{typeURL, version}); set != nil {
		return set
	}
	items := make([]*encoded, len(ds))
	for i, d := range ds {
		items[i] = &d.enc
	}
	slices.SortStableFunc(items, func(a, b *encoded) int { return cmpString(a.name, b.name) })
	// A name twice is a generator bug; the first one wins, as Envoy would
	// keep it.
	items = slices.CompactFunc(items, func(a, b *encoded) bool { return a.name == b.name })
	set := newTypeSet(typeURL, version, slices.Clip(items))
	return s.sets.put(set)
}

// outKey and inKey key the encodings of a proxy's own resources in
// mesh.Snapshot.Memo: outKey its outbound part (generate.OutboundKey,
// shared by the proxies of one namespace and scope, carried over
// endpoint changes as the generator carries the part), inKey its inbound
// part (generate.InboundKey, carried over route changes too).
type (
	outKey struct{ k any }
	inKey  struct{ k any }
)

// partDigests are the encodings of a part of a proxy's own resources, by
// type in typeOrder. They are what the server keeps of them: the
// resources themselves are garbage once encoded (tens of KB a proxy as
// Go values), unless the generator shares them.
type partDigests struct {
	lists [len(typeOrder)][]*digests
	err   error
	// sets are the sets of lists alone, made once for every proxy that
	// has this part and nothing else of the type (a VHDS proxy's
	// thousands of virtual hosts would otherwise be digested into a set
	// version once per proxy).
	sets [len(typeOrder)]atomic.Pointer[typeSet]
}

// setAlone is the set of the part's resources of type i alone.
func (o *partDigests) setAlone(s *Server, i int) *typeSet {
	if set := o.sets[i].Load(); set != nil {
		return set
	}
	set := s.setOfDigests(typeOrder[i], o.lists[i])
	o.sets[i].Store(set)
	return set
}

// partDigestsOf encodes lists, resources by type in typeOrder.
func partDigestsOf(m *mesh.Snapshot, lists [len(typeOrder)][]types.Resource) *partDigests {
	o := &partDigests{}
	for i, typ := range typeOrder {
		ds := make([]*digests, len(lists[i]))
		for j, it := range lists[i] {
			d := resourceDigest(m, typ, it)
			if d.err != nil {
				o.err = fmt.Errorf("%s: %w", typ, d.err)
				return o
			}
			ds[j] = d
		}
		o.lists[i] = ds
	}
	return o
}

// lazyDigests encodes list, keeping the encodings of the resources
// with a Key under it, carried over as the generator carries the Key
// (generate.Lazy): an endpoint change re-encodes the load assignments
// whose endpoints changed, a route change to one service its virtual
// hosts, not the thousands beside them. A resource without a Key is
// built and encoded again.
func lazyDigests(m *mesh.Snapshot, typeURL string, list []generate.Lazy) ([]*digests, error) {
	return lazyDigestsFrom(m, typeURL, list, nil)
}

// lazyDigestsFrom is lazyDigests taking the digests of prev (the set of
// a list like this one, in this snapshot or the one it carries over
// from) for the entries that are at the same position in both with the
// same name and Key.
func lazyDigestsFrom(m *mesh.Snapshot, typeURL string, list []generate.Lazy, prev *lazySet) ([]*digests, error) {
	ds := make([]*digests, len(list))
	for i := range list {
		it := &list[i]
		var d *digests
		switch {
		case it.Key == nil:
			d = resourceDigest(m, typeURL, it.Build(m))
		case prev != nil && i < len(prev.list) && prev.list[i].Key == it.Key && prev.list[i].Name == it.Name:
			d = prev.ds[i]
		default:
			d = m.MemoCarryRoutes(lazyDigestKey{typeURL, it.Key}, nil, func() any {
				return resourceDigest(nil, typeURL, it.Build(m))
			}).(*digests)
		}
		if d.err != nil {
			return nil, d.err
		}
		ds[i] = d
	}
	return ds, nil
}

var (
	listenerIdx = typeIndex(resource.ListenerType)
	routeIdx    = typeIndex(resource.RouteType)
	clusterIdx  = typeIndex(resource.ClusterType)
	vhostIdx    = typeIndex(resource.VirtualHostType)
	secretIdx   = typeIndex(resource.SecretType)
)

// sidecarSnapshot is snapshotOf(m, generate.ForProxyParts(m, p.id)) that
// builds and encodes each part of the proxy's own resources only when m
// (or the snapshot it carries over from) has not got its encodings yet:
// the outbound part once per distinct OutboundKey (a route change
// rebuilds it once per namespace and scope, not once per proxy), the
// inbound part once per proxy, and again only when what it reads changed.
func (s *Server) sidecarSnapshot(m *mesh.Snapshot, p *proxy) (*nodeSnapshot, []string, error) {
	id, ik := p.id, p.identityKey()
	out := m.MemoCarry(outKey{generate.OutboundKey(m, id, ik)}, nil, func() any {
		var lists [len(typeOrder)][]types.Resource
		var vhosts []generate.Lazy
		lists[listenerIdx], lists[routeIdx], vhosts = generate.BuildOutboundLazy(m, id)
		o := partDigestsOf(m, lists)
		if o.err == nil {
			if o.lists[vhostIdx], o.err = lazyDigests(m, resource.VirtualHostType, vhosts); o.err != nil {
				o.err = fmt.Errorf("%s: %w", resource.VirtualHostType, o.err)
			}
		}
		return o
	}).(*partDigests)
	if out.err != nil {
		return nil, nil, out.err
	}
	shared := generate.SharedParts(m, id)
	in := m.MemoCarryRoutes(inKey{generate.InboundKey(m, id, ik)}, nil, func() any {
		var lists [len(typeOrder)][]types.Resource
		lists[listenerIdx], lists[clusterIdx] = generate.BuildInbound(m, id, shared.ClusterParts)
		return partDigestsOf(m, lists)
	}).(*partDigests)
	if in.err != nil {
		return nil, nil, in.err
	}
	snap := &nodeSnapshot{}
	versions := make([]string, len(typeOrder))
	for i, typ := range typeOrder {
		own := in.lists[i]
		if len(own) == 0 && len(out.lists[i]) > 0 && len(partsOf(shared, typ).Lazy) == 0 && len(partsOf(shared, typ).Shared) == 0 {
			snap.sets[i] = out.setAlone(s, i)
			versions[i] = snap.sets[i].version
			continue
		}
		if o := out.lists[i]; len(o) > 0 {
			// Sorted by name, as the generator lists them: the set's
			// version digests them in that order.
			own = append(slices.Clip(o), own...)
			slices.SortStableFunc(own, func(a, b *digests) int { return cmpString(a.enc.name, b.enc.name) })
		}
		var set *typeSet
		if parts := partsOf(shared, typ); len(parts.Lazy) > 0 {
			var err error
			if set, err = s.setOfLazyAndOwn(m, typ, parts, own); err != nil {
				return nil, nil, fmt.Errorf("%s: %w", typ, err)
			}
		} else if len(parts.Shared) > 0 {
			var err error
			if set, err = s.setOfSharedAndOwn(m, typ, parts.Shared, own); err != nil {
				return nil, nil, fmt.Errorf("%s: %w", typ, err)
			}
		} else {
			set = s.setOfDigests(typ, own)
		}
		snap.sets[i] = set
		versions[i] = set.version
	}
	if secrets := generate.Secrets(m, id); len(secrets) > 0 {
		set, err := s.setOfSecrets(m, secrets)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", resource.SecretType, err)
		}
		snap.sets[secretIdx], versions[secretIdx] = set, set.version
	}
	return snap, versions, nil
}

// setOfSecrets is the set of a gateway's secrets, made once per snapshot
// for the gateways that share the list (generate.Secrets memoizes it per
// namespace, and per Gateway API certificates of other namespaces).
func (s *Server) setOfSecrets(m *mesh.Snapshot, secrets []types.Resource) (*typeSet, error) {
	so := m.Memo(sharedSetKey{resource.SecretType, &secrets[0], len(secrets)}, func() any {
		set, err := s.setOf(m, resource.SecretType, secrets)
		return setOrErr{set, err}
	}).(setOrErr)
	return so.set, so.err
}

// digestKey keys a resource's digests in mesh.Snapshot.Memo: the
// resource's identity, as a weak pointer for the xDS types, so the memo
// does not keep a resource alive (a proxy's own resources are garbage
// once encoded; shared ones are kept by the generator's memo). A weak
// pointer is never equal to one made for another object, even at the
// same address after the first was collected.
type digestKey struct{ k any }

func digestKeyOf(r types.Resource) digestKey {
	switch r := r.(type) {
	case *listener.Listener:
		return digestKey{weak.Make(r)}
	case *route.RouteConfiguration:
		return digestKey{weak.Make(r)}
	case *cluster.Cluster:
		return digestKey{weak.Make(r)}
	case *endpoint.ClusterLoadAssignment:
		return digestKey{weak.Make(r)}
	case *route.VirtualHost:
		return digestKey{weak.Make(r)}
	}
	return digestKey{r}
}

// digests are a resource's encoding and hashes.
type digests struct {
	sum [sha256.Size]byte // of the length-prefixed encoding: feeds the set's version
	enc encoded
	err error
}

// resourceDigest encodes and hashes r, once per mesh snapshot when m is
// not nil: a resource shared by many proxies (generate's memo.go) is
// encoded once per push, not once per proxy. The encoding is
// deterministic, so a restarted or another control plane gives the same
// resource the same versions, and a reconnecting delta proxy is sent only
// real differences.
func resourceDigest(m *mesh.Snapshot, typeURL string, r types.Resource) *digests {
	compute := func() any {
		name := cachev3.GetResourceName(r)
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
		if err != nil {
			return &digests{err: fmt.Errorf("marshal %s: %w", name, err)}
		}
		var n [8]byte
		binary.LittleEndian.PutUint64(n[:], uint64(len(b)))
		h := sha256.New()
		h.Write(n[:])
		h.Write(b)
		d := &digests{}
		h.Sum(d.sum[:0])
		// The delta version is the digest's first 64 bits in hex: a
		// resource's versions are compared only with its own earlier
		// ones, and every proxy keeps one per resource it holds (a
		// sidecar of a 1,000-service mesh holds 7,000), so 16 characters
		// rather than the 64 of go-control-plane's HashResource.
		version := hex.EncodeToString(d.sum[:8])
		any := &anypb.Any{TypeUrl: typeURL, Value: b}
		d.enc = encoded{
			name:    name,
			version: version,
			any:     any,
			delta:   &discovery.Resource{Name: name, Version: version, Resource: any},
		}
		return encodings.intern(typeURL, d)
	}
	if m == nil {
		return compute().(*digests)
	}
	// Keyed by the resource's identity: a resource carried over from the
	// snapshot before (mesh.Snapshot.MemoCarry) keeps its encoding.
	return m.MemoCarryRoutes(digestKeyOf(r), nil, compute).(*digests)
}

// encodings interns digests by content: proxies of one workload get
// resources of their own that are the same bytes (a captured sidecar's
// inbound listener and clusters name ports, not addresses), each built
// for its proxy; interned, they are kept once (24 sidecars of 6 services
// had 168 encodings of their own, 17 of them distinct).
var encodings interner

type internKey struct {
	typeURL string
	sum     [sha256.Size]byte
}

// interner finds the live digests of some content. An entry goes when
// its digests are collected. Safe for concurrent use.
type interner struct {
	mu sync.Mutex
	m  map[internKey]weak.Pointer[digests]
}

// intern returns the live digests with d's content, or d, which is then
// the one others get.
func (in *interner) intern(typeURL string, d *digests) *digests {
	k := internKey{typeURL, d.sum}
	in.mu.Lock()
	defer in.mu.Unlock()
	if w, ok := in.m[k]; ok {
		if old := w.Value(); old != nil {
			return old
		}
	}
	if in.m == nil {
		in.m = map[internKey]weak.Pointer[digests]{}
	}
	w := weak.Make(d)
	in.m[k] = w
	runtime.AddCleanup(d, in.forget, internEntry{k, w})
	return d
}

type internEntry struct {
	k internKey
	w weak.Pointer[digests]
}

// forget drops e's entry unless another digests took its place.
func (in *interner) forget(e internEntry) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.m[e.k] == e.w {
		delete(in.m, e.k)
	}
}
