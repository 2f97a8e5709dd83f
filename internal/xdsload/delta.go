package xdsload

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// deltaState is what a delta proxy holds, as weft-proxy's delta client
// does: the version of every resource it has, which survives reconnects
// (a new stream announces it as initial_resource_versions and gets only
// the differences), the names its listeners and clusters reference, and
// the RDS and EDS names subscribed. It keeps no resource bodies.
type deltaState struct {
	// rv is, per type (typeOrder), the version of each resource held.
	rv [4]map[string]string
	// refs is, per wildcard type (CDS, LDS), the EDS or RDS names each
	// held resource references.
	refs [2]map[string][]string
	// received marks CDS and LDS once a response of the type came.
	received [2]bool
	// subs are the EDS and RDS names subscribed (indices 2, 3), sorted;
	// missing counts those not held.
	subs    [4][]string
	missing [4]int

	// Per stream.
	stream   discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	nodeSent bool
	unacked  [4]string // nonce of the last response of each type not ACKed; "" if none
	seen     [4][]*probe
}

func newDeltaState() *deltaState {
	s := &deltaState{}
	for t := range s.rv {
		s.rv[t] = map[string]string{}
	}
	for t := range s.refs {
		s.refs[t] = map[string][]string{}
	}
	return s
}

// dependent is the type whose names resources of wildcard type t
// reference: EDS for clusters, RDS for listeners.
func dependent(t int) int { return t + 2 }

// deltaStream opens one delta ADS stream and serves it until it breaks or
// ctx is done. The first requests subscribe to CDS and LDS (wildcard) and
// to the EDS and RDS names a previous stream had, each with the versions
// held.
func (p *Proxy) deltaStream(ctx context.Context, ads discovery.AggregatedDiscoveryServiceClient) error {
	if p.delta == nil {
		p.delta = newDeltaState()
	}
	s := p.delta
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := ads.DeltaAggregatedResources(sctx, grpc.MaxCallRecvMsgSize(64<<20))
	if err != nil {
		return fmt.Errorf("proxy %s: opening delta ADS stream: %w", p.Identity.ID, err)
	}
	s.stream, s.nodeSent, s.unacked, s.seen = st, false, [4]string{}, [4][]*probe{}
	defer func() { s.stream = nil }()
	p.mu.Lock()
	p.cnt.Streams++
	p.mu.Unlock()
	for t := range typeOrder {
		names := []string{"*"}
		if t >= 2 {
			if len(s.subs[t]) == 0 {
				continue
			}
			names = slices.Clone(s.subs[t])
		}
		req := &discovery.DeltaDiscoveryRequest{TypeUrl: typeOrder[t], ResourceNamesSubscribe: names}
		if len(s.rv[t]) > 0 {
			req.InitialResourceVersions = maps.Clone(s.rv[t])
		}
		if err := p.deltaSend(s, req); err != nil {
			return err
		}
	}
	for {
		r, err := st.Recv()
		if err != nil {
			return fmt.Errorf("proxy %s: receiving from delta ADS stream: %w", p.Identity.ID, err)
		}
		if err := p.deltaHandle(s, r); err != nil {
			return err
		}
	}
}

func (p *Proxy) deltaSend(s *deltaState, req *discovery.DeltaDiscoveryRequest) error {
	if !s.nodeSent {
		req.Node = p.Identity.Node()
	}
	if err := s.stream.Send(req); err != nil {
		return fmt.Errorf("proxy %s: sending delta %s request: %w", p.Identity.ID, shortTypes[typeIndex(req.GetTypeUrl())], err)
	}
	s.nodeSent = true
	return nil
}

// deltaHandle takes one response in: it records the versions of the
// resources it carries (EDS and RDS ones only if subscribed, as
// weft-proxy), drops the removed ones, updates the EDS and RDS
// subscriptions when listeners or clusters changed, and ACKs once the set
// is complete.
func (p *Proxy) deltaHandle(s *deltaState, r *discovery.DeltaDiscoveryResponse) error {
	t := typeIndex(r.GetTypeUrl())
	if t < 0 {
		return nil
	}
	p.count(t, proto.Size(r), len(r.GetResources()))
	s.unacked[t] = r.GetNonce()
	probes := p.probes.active(t)
	for _, res := range r.GetResources() {
		a := res.GetResource()
		if a == nil {
			continue // a TTL heartbeat
		}
		name := res.GetName()
		if name == "" { // the name is field 1 of all four types
			name, _ = firstString(a.GetValue())
		}
		_, held := s.rv[t][name]
		if t >= 2 {
			if _, ok := slices.BinarySearch(s.subs[t], name); !ok {
				continue
			}
			if !held {
				s.missing[t]--
			}
		} else {
			s.refs[t][name] = p.names.referenced(t, a.GetValue())
		}
		s.rv[t][name] = res.GetVersion()
		if len(probes) > 0 {
			s.seen[t] = spot(s.seen[t], probes, a.GetValue())
		}
	}
	for _, name := range r.GetRemovedResources() {
		if _, held := s.rv[t][name]; !held {
			continue
		}
		delete(s.rv[t], name)
		if t >= 2 {
			s.missing[t]++ // still subscribed: the set waits for it
		} else {
			delete(s.refs[t], name)
		}
	}
	if t < 2 {
		s.received[t] = true
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
	set := map[string]bool{}
	for _, names := range s.refs[dep-2] {
		for _, n := range names {
			set[n] = true
		}
	}
	want := slices.Sorted(maps.Keys(set))
	have := s.subs[dep]
	if slices.Equal(want, have) {
		return nil
	}
	var add, drop []string
	for _, n := range want {
		if _, ok := slices.BinarySearch(have, n); !ok {
			add = append(add, n)
		}
	}
	for _, n := range have {
		if !set[n] {
			drop = append(drop, n)
			delete(s.rv[dep], n)
		}
	}
	s.subs[dep] = want
	s.missing[dep] = 0
	for _, n := range want {
		if _, ok := s.rv[dep][n]; !ok {
			s.missing[dep]++
		}
	}
	return p.deltaSend(s, &discovery.DeltaDiscoveryRequest{
		TypeUrl:                  typeOrder[dep],
		ResourceNamesSubscribe:   add,
		ResourceNamesUnsubscribe: drop,
	})
}

// deltaMaybeACK ACKs the last response of every type not yet ACKed once
// the set is complete: CDS and LDS received, and every subscribed EDS and
// RDS name held.
func (p *Proxy) deltaMaybeACK(s *deltaState) error {
	if !s.received[0] || !s.received[1] || s.missing[2] > 0 || s.missing[3] > 0 {
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
