package server

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
)

// The ADS service's stream engine. A stream is driven by its transport
// (wirestream.go): its requests are handled in order by a request
// goroutine that runs while there are some; when the proxy's snapshot
// changes, or the bytes-in-flight bound has room again, a push goroutine
// is started for the stream and ends once it has sent what changed. An
// idle stream thus has no goroutine at all. A stream's state per type is
// small: it points at the shared sets it sent and, for a subscription by
// name, at the set's own sorted name list whenever the proxy names
// exactly the set's resources (a sidecar's EDS and RDS subscriptions
// do), so 2,000 proxies of one mesh do not hold 2,000 copies of anything.
//
// A stream never blocks another: a proxy that reads slowly holds up only
// its own stream's goroutines (its request or push goroutine, blocked in
// a send with the stream's lock held), its wake-ups merge into one
// pending push, at most one push goroutine runs per stream, and when it
// catches up it is sent the newest snapshot, not the ones in between.
// Waking a stream never waits for its lock.

// adsRequest is a request of either kind.
type adsRequest interface {
	GetNode() *core.Node
	GetTypeUrl() string
}

type sotwRequest struct{ *discovery.DiscoveryRequest }
type deltaRequest struct {
	*discovery.DeltaDiscoveryRequest
}

// adsStream is one open stream. Its state is guarded by mu, which the
// request goroutine holds while handling a request and a push goroutine
// while pushing, each including the send; the wake-up state by wmu, which
// is never held while taking another lock, so notify may be called with
// any lock held.
type adsStream struct {
	key streamKey
	// verified: the endpoint checked the node against the peer's
	// certificate (Endpoint.AuthorizeNode); only then are secrets sent.
	verified bool
	mu       sync.Mutex
	p        *proxy // set by the first request
	send     func(any) error
	// nonce and types: guarded by mu.
	nonce int64
	types map[string]*subscription

	wmu     sync.Mutex
	woken   bool        // the snapshot or the room changed since the last push
	pushing bool        // a push goroutine runs (at most one)
	closed  bool        // the handler is ending: start no push goroutine
	pushErr error       // a push failed: the stream ends with it
	startFn func()      // starts the push goroutine (go, under wmu); nil outside runStream
	end     func(error) // ends the stream with the error's status; a blocked Recv returns
}

// subscription is a stream's state of one type.
type subscription struct {
	typeURL   string
	requested bool // a request for the type arrived
	wildcard  bool
	named     bool     // names were given once (state of the world: an empty list no longer means wildcard)
	names     []string // sorted, each once; the set's own list when equal
	nonce     string   // of the last response
	// inflight: the last response is not answered yet. Nothing more of
	// the type is sent until it is: at most one response per type in
	// flight, and a proxy that falls behind gets the newest state next,
	// not every one in between.
	inflight bool

	// State of the world.
	sentSet      *typeSet // what the last response was cut from...
	sentWildcard bool     // ...for this subscription
	sentNames    []string
	sentVersion  string        // version of the last response
	ackedVersion string        // version_info of the last request: what the proxy runs
	nacked       bool          // the last response was rejected...
	hold         *nodeSnapshot // ...while the snapshot was this one: send nothing until it changes

	// Delta: the proxy has the resources of haveSet its subscription
	// (haveWildcard, haveNames) then covered, except for overrides (name ->
	// version, "" for "does not have it"), which also hold the
	// initial_resource_versions of a reconnecting proxy.
	everSent     bool
	haveSet      *typeSet
	haveWildcard bool
	haveNames    []string
	haveIsWhole  bool // haveSet's every resource: haveWildcard, or haveNames are its names
	overrides    map[string]string
}

func (s *Server) newStream(delta bool) *adsStream {
	return &adsStream{
		key:   streamKey{delta: delta, id: s.streamIDs.Add(1)},
		types: map[string]*subscription{},
	}
}

// notify records that the stream has something to push and starts its
// push goroutine unless one runs. It never blocks: callers hold a
// proxy's lock or the flight budget's.
func (st *adsStream) notify() {
	st.wmu.Lock()
	st.woken = true
	if !st.pushing && !st.closed && st.startFn != nil {
		// Under wmu, so the handler, once it has marked the stream
		// closed, waits for every push goroutine that will ever start.
		st.pushing = true
		st.startFn()
	}
	st.wmu.Unlock()
}

// takeWake reports whether the stream was woken since the last call, and
// clears it; with done, it also ends the push goroutine when there is
// nothing to push (under wmu, so a wake-up between the two cannot be
// lost).
func (st *adsStream) takeWake(done bool) bool {
	st.wmu.Lock()
	defer st.wmu.Unlock()
	w := st.woken && !st.closed
	st.woken = false
	if !w && done {
		st.pushing = false
	}
	return w
}

// setOf is what the stream may be sent of snap's resources of typeURL:
// secrets only on a stream whose node the endpoint verified (the secure
// port proves a proxy's namespace; anyone can claim one on the
// plaintext port).
func (st *adsStream) setOf(snap *nodeSnapshot, typeURL string) *typeSet {
	set := snap.set(typeURL)
	if typeURL == resource.SecretType && !st.verified && set != nil && set.n > 0 {
		return noSecrets
	}
	return set
}

// noSecrets is the empty set of secrets.
var noSecrets = newTypeSet(resource.SecretType, "unverified", nil)

func (st *adsStream) sub(typeURL string) *subscription {
	sub := st.types[typeURL]
	if sub == nil {
		sub = &subscription{typeURL: typeURL}
		st.types[typeURL] = sub
	}
	return sub
}

func (st *adsStream) nextNonce() string {
	st.nonce++
	return strconv.FormatInt(st.nonce, 10)
}

// endWait is how long ending a stream waits for a request being handled
// or a push under way, so that it can end the stream with a status.
const endWait = 500 * time.Millisecond

// pushLoop is a stream's push goroutine: it pushes while the stream is
// woken and ends when it is not, or when the stream ends. A failed push
// ends the stream with its error (unless the stream was ending anyway).
func (s *Server) pushLoop(ctx context.Context, st *adsStream) {
	for st.takeWake(true) {
		st.mu.Lock()
		err := s.pushStream(st)
		st.mu.Unlock()
		if err != nil {
			st.wmu.Lock()
			if ctx.Err() == nil {
				st.pushErr = err
			}
			st.closed, st.pushing = true, false
			st.wmu.Unlock()
			st.end(err)
			return
		}
	}
}

func isDone(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// closeStream forgets the stream and, with its proxy's last stream, the
// proxy.
func (s *Server) closeStream(st *adsStream) {
	s.flight.drop(st)
	if st.p == nil {
		return
	}
	st.p.mu.Lock()
	delete(st.p.live, st)
	st.p.mu.Unlock()
	if !st.key.delta {
		s.unsubscribe(st.key) // ondemand.go
	}
	s.streamClosed(st.key)
}

// handle serves one request.
func (s *Server) handle(st *adsStream, r adsRequest) error {
	if st.p == nil {
		p, err := s.streamRequest(st.key, r.GetNode())
		if err != nil {
			return err
		}
		st.p = p
		p.mu.Lock()
		if p.live == nil {
			p.live = map[*adsStream]struct{}{}
		}
		p.live[st] = struct{}{}
		p.mu.Unlock()
	}
	if typeIndex(r.GetTypeUrl()) < 0 {
		s.log.Debug("request for a type the server does not serve", "node", st.p.id.ID, "type", r.GetTypeUrl())
		return nil
	}
	switch r := r.(type) {
	case sotwRequest:
		return s.handleSotW(st, r.DiscoveryRequest)
	case deltaRequest:
		return s.handleDelta(st, r.DeltaDiscoveryRequest)
	}
	return nil
}

// pushStream sends every type whose resources changed, in pushOrder.
func (s *Server) pushStream(st *adsStream) error {
	if st.p == nil {
		return nil
	}
	for _, typ := range pushOrder {
		sub := st.types[typ]
		if sub == nil || !sub.requested {
			continue
		}
		var err error
		if st.key.delta {
			err = s.sendDelta(st, sub)
		} else {
			err = s.sendSotW(st, sub)
		}
		if errors.Is(err, errNoRoom) {
			return nil // woken when there is room; then all types are looked at again
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// errNoRoom: a response does not fit in the bytes-in-flight bound now;
// the stream is woken when it may (flight.go).
var errNoRoom = errors.New("no room in flight")

func ignoreNoRoom(err error) error {
	if errors.Is(err, errNoRoom) {
		return nil
	}
	return err
}

// setNames replaces sub's names with names, sorted, each once, and each
// the set's own string where the set has it (the request's copies are
// then garbage); when they are exactly the set's names, sub keeps the
// set's list itself.
func (sub *subscription) setNames(names []string, set *typeSet) {
	names = slices.Compact(slices.Sorted(slices.Values(names)))
	if set != nil {
		// Compared item by item first: a set's name list is made only for
		// a subscription that takes it (a wildcard subscription, whose
		// names are empty, would otherwise make one per proxy for its
		// own cluster set: 48 MB at 2,000 proxies).
		if len(names) == set.n && len(names) > 0 && sameItems(names, set) {
			sub.names = set.names()
			return
		}
		for i, n := range names {
			if e := set.get(n); e != nil {
				names[i] = e.name
			}
		}
	}
	sub.names = slices.Clip(names)
}

// sameItems reports whether names (as many as set has) are exactly the
// names of set's resources, in order.
func sameItems(names []string, set *typeSet) bool {
	i := 0
	for e := range set.all() {
		if names[i] != e.name {
			return false
		}
		i++
	}
	return true
}

// subscribes reports whether sub takes the resource name.
func (sub *subscription) subscribes(name string) bool {
	if sub.wildcard {
		return true
	}
	_, ok := slices.BinarySearch(sub.names, name)
	return ok
}

// whole reports whether sub takes every resource of set and nothing else
// that could exist.
func (sub *subscription) whole(set *typeSet) bool {
	return sub.wildcard || (len(sub.names) == set.n && sameNames(sub.names, set.names()))
}

// ---- State of the world ----

func (s *Server) handleSotW(st *adsStream, req *discovery.DiscoveryRequest) error {
	typ, nonce := req.GetTypeUrl(), req.GetResponseNonce()
	sub := st.sub(typ)
	s.answered(st.key, st.p.id.ID, typ, nonce, req.GetErrorDetail())
	// The version_info of a request is the version the proxy last
	// accepted: what it runs.
	st.p.recordAcked(typ, req.GetVersionInfo(), time.Now())
	if nonce != "" && nonce != sub.nonce {
		return nil // answers a superseded response; a newer one is on its way
	}
	if sub.inflight {
		s.flight.give(st, typ)
	}
	sub.inflight = false
	if err := s.subscribe(st.key, req); err != nil { // ondemand.go: proxyless clients
		return status.Error(codes.Unavailable, err.Error())
	}
	snap := st.p.snapshot()
	names := req.GetResourceNames()
	switch {
	case slices.Contains(names, "*"):
		sub.wildcard, sub.named, sub.names = true, true, nil
	case len(names) == 0 && !sub.named:
		sub.wildcard = true // legacy wildcard: no names ever given
	default:
		sub.wildcard, sub.named = false, true
		var set *typeSet
		if snap != nil {
			set = st.setOf(snap, typ)
		}
		sub.setNames(names, set)
	}
	sub.requested = true
	sub.ackedVersion = req.GetVersionInfo()
	if req.GetErrorDetail() != nil {
		// Do not send what was just rejected again; wait for the
		// snapshot to change (see sendSotW).
		sub.nacked, sub.hold = true, snap
		return nil
	}
	return ignoreNoRoom(s.sendSotW(st, sub))
}

// sotwResponse is what sub is sent of set.
func sotwResponse(sub *subscription, set *typeSet) []*anypb.Any {
	if sub.whole(set) {
		return set.anys()
	}
	var out []*anypb.Any
	for _, n := range sub.names {
		if e := set.get(n); e != nil {
			out = append(out, e.any)
		}
	}
	return out
}

// sameSlice reports whether a and b are one list (not only equal ones).
func sameSlice(a, b []string) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

// sameNames compares sorted name lists, cheaply when they are one list.
func sameNames(a, b []string) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0] || slices.Equal(a, b))
}

// sendSotW sends sub's type if its set or the subscription changed since
// it was last sent. After a NACK it sends nothing until the proxy's
// snapshot changes in any type: a proxy applies all types together and
// rejects every type of a set that failed, so a version rejected
// alongside a bad listener can be fine next to a fixed one and is then
// sent again, unless it is what the proxy runs.
func (s *Server) sendSotW(st *adsStream, sub *subscription) error {
	snap := st.p.snapshot()
	if snap == nil {
		return nil
	}
	if sub.inflight {
		return nil // sent when the proxy answers
	}
	set := st.setOf(snap, sub.typeURL)
	version := set.version
	if sub.nacked {
		if snap == sub.hold {
			return nil
		}
		if version == sub.ackedVersion {
			sub.nacked, sub.hold = false, nil
			sub.sentSet, sub.sentWildcard, sub.sentNames, sub.sentVersion = set, sub.wildcard, sub.names, version
			return nil
		}
	} else if sub.nonce != "" && sub.sentSet == set && sub.sentWildcard == sub.wildcard && sameNames(sub.sentNames, sub.names) {
		return nil
	}
	resources := sotwResponse(sub, set)
	if !s.flight.take(st, sub.typeURL, sotwSize(resources)) {
		return errNoRoom
	}
	resp := &discovery.DiscoveryResponse{
		VersionInfo: version,
		Resources:   resources,
		TypeUrl:     sub.typeURL,
		Nonce:       st.nextNonce(),
	}
	s.sentResponse(st.key, sub.typeURL, resp.Nonce, version)
	sub.nonce, sub.inflight, sub.nacked, sub.hold = resp.Nonce, true, false, nil
	sub.sentSet, sub.sentWildcard, sub.sentNames, sub.sentVersion = set, sub.wildcard, sub.names, version
	return st.send(resp)
}

// ---- Delta ----

func (s *Server) handleDelta(st *adsStream, req *discovery.DeltaDiscoveryRequest) error {
	typ, nonce := req.GetTypeUrl(), req.GetResponseNonce()
	sub := st.sub(typ)
	s.answered(st.key, st.p.id.ID, typ, nonce, req.GetErrorDetail())
	var set *typeSet
	if snap := st.p.snapshot(); snap != nil {
		set = snap.set(typ)
	}
	first := !sub.requested
	sub.requested = true
	if first {
		if iv := req.GetInitialResourceVersions(); len(iv) > 0 {
			sub.takeInitial(iv, set)
		}
		if len(req.GetResourceNamesSubscribe()) == 0 {
			sub.wildcard = true // legacy wildcard
		}
	}
	// Subscription changes apply whatever the nonce: they are increments.
	if add, drop := req.GetResourceNamesSubscribe(), req.GetResourceNamesUnsubscribe(); len(add) > 0 || len(drop) > 0 {
		names := slices.Clone(sub.names)
		for _, n := range add {
			if n == "*" {
				sub.wildcard = true
				continue
			}
			names = append(names, n)
		}
		for _, n := range drop {
			if n == "*" {
				sub.wildcard = false
				continue
			}
			names = slices.DeleteFunc(names, func(x string) bool { return x == n })
			// The proxy drops what it no longer wants; if it wants it
			// again, it is sent again. Under a wildcard it must be told
			// whether the resource exists: sent again or removed.
			if sub.overrides == nil {
				sub.overrides = map[string]string{}
			}
			sub.overrides[n] = ""
		}
		sub.setNames(names, set)
	}
	if nonce != "" && nonce != sub.nonce {
		return nil // answers a superseded response; a newer one is on its way
	}
	if sub.inflight {
		s.flight.give(st, typ)
	}
	sub.inflight = false
	if req.GetErrorDetail() != nil {
		return nil // what it rejected is not sent again until it changes
	}
	return ignoreNoRoom(s.sendDelta(st, sub))
}

// sendDelta sends what of sub's type the proxy does not have yet, and
// the removal of what it has that is gone.
func (s *Server) sendDelta(st *adsStream, sub *subscription) error {
	snap := st.p.snapshot()
	if snap == nil {
		return nil
	}
	if sub.inflight {
		return nil // sent when the proxy answers
	}
	set := st.setOf(snap, sub.typeURL)
	var resources []*discovery.Resource
	var removed []string
	// The common step, a proxy that had the whole of the last set and
	// still subscribes as then, to a set with the same names (new
	// endpoints): the shared diff says so without comparing the proxy's
	// thousands of names with the set's, twice.
	// (The same test with the same set is the ACK of that step: nothing
	// to send.)
	fast := sub.overrides == nil && sub.haveSet != nil && sub.haveIsWhole &&
		sub.wildcard == sub.haveWildcard && sameSlice(sub.names, sub.haveNames)
	if fast && sub.haveSet == set {
		return nil
	}
	var d *setDiff
	if fast {
		d = set.diffFrom(sub.haveSet)
		fast = d.sameNames
	}
	whole := fast || sub.whole(set)
	shared := false // resources are d's, shared by every proxy taking the step
	switch {
	case fast:
		resources, removed, shared = d.resources, d.removed, true
	case whole && sub.overrides == nil && sub.haveSet != nil && sub.haveWhole():
		if sub.haveSet == set && (sub.everSent || !sub.wildcard) {
			return nil // (a new wildcard subscription is answered, if only empty)
		}
		d = set.diffFrom(sub.haveSet)
		resources, removed, shared = d.resources, d.removed, true
	case whole && sub.overrides == nil && sub.haveSet == nil:
		resources = set.deltas()
	default:
		resources, removed = sub.diff(set)
	}
	firstWildcard := !sub.everSent && sub.wildcard
	if len(resources) == 0 && len(removed) == 0 && !firstWildcard {
		sub.haveSet, sub.haveWildcard, sub.haveNames, sub.overrides = set, sub.wildcard, sub.names, nil
		sub.haveIsWhole = whole
		return nil
	}
	if !s.flight.take(st, sub.typeURL, deltaSize(resources, removed)) {
		return errNoRoom
	}
	sub.haveSet, sub.haveWildcard, sub.haveNames, sub.overrides = set, sub.wildcard, sub.names, nil
	sub.haveIsWhole = whole
	resp := &discovery.DeltaDiscoveryResponse{
		SystemVersionInfo: set.version,
		Resources:         resources,
		RemovedResources:  removed,
		TypeUrl:           sub.typeURL,
		Nonce:             st.nextNonce(),
	}
	s.sentResponse(st.key, sub.typeURL, resp.Nonce, set.version)
	sub.nonce, sub.everSent, sub.inflight = resp.Nonce, true, true
	if shared && len(resources) > 0 {
		return st.send(&deltaWithBody{resp: resp, body: d.encoded()})
	}
	return st.send(resp)
}

// takeInitial records what a reconnecting proxy says it has (its
// initial_resource_versions, iv) against set, what it is to be served of
// the type: as having the whole of set, except for overrides (the names
// whose version differs or that set has not, with iv's version, and
// set's names iv lacks, with ""). A proxy that reconnects to an
// unchanged mesh so keeps no per-name state at all (it was a copy of its
// thousands of names and versions per stream, held until the first
// response, and a reconnect storm of 2,000 proxies held gigabytes), and
// the request's map is garbage at once. Without a set yet, the request's
// map itself is kept, not a copy.
func (sub *subscription) takeInitial(iv map[string]string, set *typeSet) {
	if set == nil {
		sub.overrides = iv
		return
	}
	var ov map[string]string
	put := func(n, v string) {
		if ov == nil {
			ov = map[string]string{}
		}
		ov[n] = v
	}
	matched := 0
	for n, v := range iv {
		if e := set.get(n); e != nil && e.version == v {
			matched++
			continue
		}
		put(n, v)
	}
	if matched < set.n {
		for e := range set.all() {
			if _, ok := iv[e.name]; !ok {
				put(e.name, "")
			}
		}
	}
	sub.haveSet, sub.haveWildcard, sub.haveNames, sub.haveIsWhole = set, true, nil, false
	sub.overrides = ov
}

// haveWhole reports whether the proxy had the whole of haveSet.
func (sub *subscription) haveWhole() bool {
	return sub.haveWildcard || (len(sub.haveNames) == sub.haveSet.n && sameNames(sub.haveNames, sub.haveSet.names()))
}

// had is the version of name the proxy has, if it has it.
func (sub *subscription) had(name string) (string, bool) {
	if v, ok := sub.overrides[name]; ok {
		return v, v != ""
	}
	e := sub.haveSet.get(name)
	if e == nil {
		return "", false
	}
	if !sub.haveWildcard {
		if _, ok := slices.BinarySearch(sub.haveNames, name); !ok {
			return "", false
		}
	}
	return e.version, true
}

// diff is the general delta computation, resource by resource, for the
// cases the shared setDiffs do not cover (a partial subscription, a
// reconnect with initial versions, a changed subscription).
func (sub *subscription) diff(set *typeSet) ([]*discovery.Resource, []string) {
	var resources []*discovery.Resource
	add := func(e *encoded) {
		if v, ok := sub.had(e.name); !ok || v != e.version {
			resources = append(resources, e.delta)
		}
	}
	if sub.wildcard {
		for e := range set.all() {
			add(e)
		}
	} else {
		for _, n := range sub.names {
			if e := set.get(n); e != nil {
				add(e)
			}
		}
	}
	var removed []string
	gone := func(n string) {
		if _, ok := sub.had(n); ok && !set.has(n) && sub.subscribes(n) {
			removed = append(removed, n)
		}
	}
	if sub.haveSet != nil {
		for e := range sub.haveSet.all() {
			gone(e.name)
		}
	}
	for n := range sub.overrides {
		if !sub.haveSet.has(n) {
			gone(n)
		}
	}
	slices.Sort(removed)
	return resources, slices.Compact(removed)
}
