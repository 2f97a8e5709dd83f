package xdsload

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
)

// deltaState is what a delta proxy holds, as weft-proxy's delta client
// does: the version of every resource it has, which survives reconnects
// (a new stream announces it as initial_resource_versions and gets only
// the differences), the names its listeners and clusters reference, and
// the RDS and EDS names subscribed. It keeps no resource bodies, and
// names and versions as the fleet's interned ids: at 2,000 proxies of
// 3,000 clusters each, maps of strings were gigabytes.
type deltaState struct {
	// held is, per type (typeOrder), each resource held by name.
	held [numTypes]map[uint32]heldResource
	// received marks each type once a response of it came; complete
	// needs those of the wildcard types (CDS, LDS, VHDS).
	received [numTypes]bool
	// subs are the EDS and RDS names subscribed (indices 2, 3), sorted;
	// missing counts those not held.
	subs    [numTypes][]uint32
	missing [numTypes]int

	// Per stream.
	stream   rawStream
	nodeSent bool
	unacked  [numTypes]string // nonce of the last response of each type not ACKed; "" if none
	seen     [numTypes][]*probe
}

// heldResource is one resource a delta proxy holds: its version and, for
// a cluster or listener, the list (refCache) of the EDS or RDS names it
// references.
type heldResource struct {
	version uint32
	refs    uint32
}

func newDeltaState() *deltaState {
	s := &deltaState{}
	for t := range s.held {
		s.held[t] = map[uint32]heldResource{}
	}
	return s
}

// dependent is the type whose names resources of wildcard type t
// reference: EDS for clusters, RDS for listeners.
func dependent(t int) int { return t + 2 }

// referencing reports whether resources of type t (CDS, LDS) reference
// names of another type (dependent).
func referencing(t int) bool { return t < 2 }

// byName reports whether type t (EDS, RDS) is subscribed by name, the
// names its referencing type's resources hold; the others (CDS, LDS,
// VHDS) are wildcards.
func byName(t int) bool { return t == 2 || t == 3 }

// subscribes reports whether the proxy subscribes to type t on a new
// stream: the wildcards (VHDS only if the proxy takes it), and EDS and
// RDS once it knows names of them.
func (p *Proxy) subscribes(s *deltaState, t int) bool {
	switch {
	case t == vhdsIndex:
		return p.vhds
	case byName(t):
		return len(s.subs[t]) > 0
	}
	return true
}

// complete reports whether the proxy holds a complete set it may ACK:
// CDS and LDS received (and VHDS, if it takes it), and every subscribed
// EDS and RDS name held.
func (p *Proxy) complete(s *deltaState) bool {
	if !s.received[0] || !s.received[1] || (p.vhds && !s.received[vhdsIndex]) {
		return false
	}
	return s.missing[2] == 0 && s.missing[3] == 0
}

// deltaStream opens one delta ADS stream and serves it until it breaks or
// ctx is done. The first requests subscribe to CDS and LDS (wildcard), to
// the EDS and RDS names a previous stream had and, with VHDS, to
// VirtualHost (wildcard), each with the versions held.
func (p *Proxy) deltaStream(ctx context.Context, conn grpc.ClientConnInterface) error {
	if p.delta == nil {
		p.delta = newDeltaState()
	}
	s := p.delta
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := openStream(sctx, conn, Delta)
	if err != nil {
		return fmt.Errorf("proxy %s: opening delta ADS stream: %w", p.Identity.ID, err)
	}
	s.stream, s.nodeSent, s.unacked, s.seen = st, false, [numTypes]string{}, [numTypes][]*probe{}
	defer func() { s.stream = rawStream{} }()
	p.mu.Lock()
	p.cnt.Streams++
	p.mu.Unlock()
	for t := range typeOrder {
		if !p.subscribes(s, t) {
			continue
		}
		if err := p.deltaSend(s, p.initialRequest(s, t)); err != nil {
			return err
		}
	}
	for {
		var m rawMessage
		if err := st.recv(&m); err != nil {
			return fmt.Errorf("proxy %s: receiving from delta ADS stream: %w", p.Identity.ID, err)
		}
		err := p.deltaHandle(s, m.bytes(), time.Now())
		m.free()
		if err != nil {
			return err
		}
	}
}

// initialRequest is a new stream's subscription to type t: the wildcard
// or the names subscribed, with the versions held as
// initial_resource_versions.
func (p *Proxy) initialRequest(s *deltaState, t int) *discovery.DeltaDiscoveryRequest {
	in := p.shared.in
	names := []string{"*"}
	if byName(t) {
		names = in.strings(s.subs[t])
	}
	req := &discovery.DeltaDiscoveryRequest{TypeUrl: typeOrder[t], ResourceNamesSubscribe: names}
	if len(s.held[t]) > 0 {
		req.InitialResourceVersions = make(map[string]string, len(s.held[t]))
		for n, h := range s.held[t] {
			req.InitialResourceVersions[in.str(n)] = in.str(h.version)
		}
	}
	return req
}

func (p *Proxy) deltaSend(s *deltaState, req *discovery.DeltaDiscoveryRequest) error {
	if !s.nodeSent {
		req.Node = p.Identity.Node()
	}
	if err := s.stream.SendMsg(req); err != nil {
		return fmt.Errorf("proxy %s: sending delta %s request: %w", p.Identity.ID, shortTypes[typeIndex(req.GetTypeUrl())], err)
	}
	s.nodeSent = true
	return nil
}

// deltaHandle takes one response b in, received at at: it records the
// versions of the resources it carries (EDS and RDS ones only if
// subscribed, as weft-proxy), drops the removed ones, updates the EDS and
// RDS subscriptions when listeners or clusters changed, and ACKs once the
// set is complete.
func (p *Proxy) deltaHandle(s *deltaState, b []byte, at time.Time) error {
	e, err := readEnvelope(b, true)
	if err != nil {
		return fmt.Errorf("proxy %s: reading a delta response: %w", p.Identity.ID, err)
	}
	t := p.typeOf(e.typeURL)
	if t < 0 {
		return nil
	}
	p.count(t, len(b), e.resources)
	s.unacked[t] = string(e.nonce)
	probes := p.probes.active(t)
	sh := p.shared
	held := s.held[t]
	err = eachDeltaResource(b, func(r deltaResource, removed bool) error {
		if removed {
			name, ok := sh.in.lookup(r.name)
			if !ok {
				return nil
			}
			if _, ok := held[name]; !ok {
				return nil
			}
			delete(held, name)
			if byName(t) {
				s.missing[t]++ // still subscribed: the set waits for it
			}
			return nil
		}
		if !r.hasBody {
			return nil // a TTL heartbeat
		}
		if sh.decode == DecodeFull {
			if err := decodeFull(t, r.value); err != nil {
				return err
			}
		}
		name := sh.in.id(r.name)
		_, had := held[name]
		h := heldResource{version: sh.in.id(r.version)}
		if byName(t) {
			if _, ok := slices.BinarySearch(s.subs[t], name); !ok {
				return nil
			}
			if !had {
				s.missing[t]--
			}
		} else if referencing(t) {
			h.refs = sh.refs.referenced(t, r.value)
		}
		held[name] = h
		if len(probes) > 0 {
			s.seen[t] = p.spot(s.seen[t], probes, r.value, at)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("proxy %s: reading a delta %s response: %w", p.Identity.ID, shortTypes[t], err)
	}
	s.received[t] = true
	if referencing(t) {
		if err := p.deltaResubscribe(s, dependent(t)); err != nil {
			return err
		}
	}
	return p.deltaMaybeACK(s)
}

// deltaResubscribe recomputes the names of type dep (EDS or RDS) the held
// clusters or listeners reference and, if they changed, subscribes to the
// new ones and unsubscribes from those no longer referenced (forgetting
// what it held of them).
func (p *Proxy) deltaResubscribe(s *deltaState, dep int) error {
	refs := p.shared.refs
	set := map[uint32]struct{}{}
	for _, h := range s.held[dep-2] {
		for _, n := range refs.list(h.refs) {
			set[n] = struct{}{}
		}
	}
	want := slices.Sorted(maps.Keys(set))
	have := s.subs[dep]
	if slices.Equal(want, have) {
		return nil
	}
	var add, drop []uint32
	for _, n := range want {
		if _, ok := slices.BinarySearch(have, n); !ok {
			add = append(add, n)
		}
	}
	for _, n := range have {
		if _, ok := set[n]; !ok {
			drop = append(drop, n)
			delete(s.held[dep], n)
		}
	}
	s.subs[dep] = want
	s.missing[dep] = 0
	for _, n := range want {
		if _, ok := s.held[dep][n]; !ok {
			s.missing[dep]++
		}
	}
	in := p.shared.in
	req := &discovery.DeltaDiscoveryRequest{TypeUrl: typeOrder[dep]}
	if len(add) > 0 {
		req.ResourceNamesSubscribe = in.strings(add)
	}
	if len(drop) > 0 {
		req.ResourceNamesUnsubscribe = in.strings(drop)
	}
	return p.deltaSend(s, req)
}

// deltaMaybeACK ACKs the last response of every type not yet ACKed once
// the set is complete (complete).
func (p *Proxy) deltaMaybeACK(s *deltaState) error {
	if !p.complete(s) {
		return nil
	}
	now := time.Now()
	for t := range typeOrder {
		if s.unacked[t] == "" {
			continue
		}
		if err := p.deltaSend(s, &discovery.DeltaDiscoveryRequest{TypeUrl: typeOrder[t], ResponseNonce: s.unacked[t]}); err != nil {
			return err
		}
		s.unacked[t] = ""
		p.recordACK(s.seen[t], now)
		s.seen[t] = nil
	}
	p.synced.Store(true)
	return nil
}
