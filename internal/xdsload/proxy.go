package xdsload

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"weft.dev/weft/internal/proxy/xdsclient"
	"weft.dev/weft/internal/xds/contract"
)

// Type URLs, as weft-proxy subscribes in this order on a new stream.
const (
	typeCluster     = xdsclient.TypeCluster
	typeListener    = xdsclient.TypeListener
	typeEndpoint    = xdsclient.TypeEndpoint
	typeRoute       = xdsclient.TypeRoute
	typeVirtualHost = xdsclient.TypeVirtualHost
)

var typeOrder = [...]string{typeCluster, typeListener, typeEndpoint, typeRoute, typeVirtualHost}

// numTypes is the number of types a proxy may subscribe to, the length of
// its per-type arrays.
const numTypes = len(typeOrder)

// vhdsIndex is the index in typeOrder of the VirtualHost type, which only
// a delta proxy with VHDS (FleetOptions.VHDS) subscribes to: a wildcard,
// right after CDS, LDS, EDS and RDS, as weft-proxy.
const vhdsIndex = 4

func typeIndex(t string) int { return slices.Index(typeOrder[:], t) }

// shortTypes name the types in reports, indexed as typeOrder.
var shortTypes = [...]string{"CDS", "LDS", "EDS", "RDS", "VHDS"}

// Counters are what one simulated proxy received and sent. Read them with
// Proxy.Counters; they only grow.
type Counters struct {
	Responses uint64           // DiscoveryResponses received
	Bytes     uint64           // their encoded size
	Resources uint64           // resources in them (not counting delta removals)
	ByType    [numTypes]uint64 // responses per type, in typeOrder (CDS, LDS, EDS, RDS, VHDS)
	ACKs      uint64           // ACK requests sent
	Streams   uint64           // streams opened (1 + reconnects)
}

func (c Counters) sub(o Counters) Counters {
	d := Counters{Responses: c.Responses - o.Responses, Bytes: c.Bytes - o.Bytes, Resources: c.Resources - o.Resources,
		ACKs: c.ACKs - o.ACKs, Streams: c.Streams - o.Streams}
	for i := range d.ByType {
		d.ByType[i] = c.ByType[i] - o.ByType[i]
	}
	return d
}

// Proxy is one simulated sidecar: an ADS stream, delta or state of the
// world (FleetOptions.Protocol), that subscribes and ACKs as weft-proxy's
// xdsclient does — wildcard CDS and LDS first, then RDS and EDS by the
// names the listeners and clusters reference (and, delta with VHDS,
// wildcard VirtualHost), the node on the first request only, and an ACK
// for every type received once the set is complete — without building a
// data plane. It reads each response's
// envelope off the wire (wire.go says why) and decodes only the listeners
// and clusters it has not seen before, for the names they reference, with
// a cache shared by the fleet; FleetOptions.Decode DecodeFull also
// decodes every resource, as a real proxy must.
type Proxy struct {
	Identity contract.Identity
	index    int
	protocol Protocol
	shared   *fleetShared
	probes   *probeBoard
	// vhds is set when the proxy takes its route configurations' virtual
	// hosts by VHDS (delta only; Identity.VHDS says so to the server).
	vhds bool
	// delta is what a delta proxy holds across its streams; owned by the
	// goroutine running run.
	delta *deltaState

	mu      sync.Mutex
	cnt     Counters
	lastErr error       // why the last stream ended, nil while the first runs
	synced  atomic.Bool // a first complete set was ACKed
}

// fleetShared is what the proxies of a fleet share: the interned names
// and versions, the names each cluster and listener references, and how
// much of a response to decode.
type fleetShared struct {
	in     *interner
	refs   *refCache
	decode Decode
}

func newFleetShared(d Decode) *fleetShared {
	in := newInterner()
	if d == "" {
		d = DecodeEnvelope
	}
	return &fleetShared{in: in, refs: newRefCache(in), decode: d}
}

// LastError is why the proxy's last stream broke (it then opens a new
// one), or nil. Safe for concurrent use.
func (p *Proxy) LastError() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lastErr
}

// Counters returns a copy of the counters. Safe for concurrent use.
func (p *Proxy) Counters() Counters {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cnt
}

// run keeps one ADS stream open on conn until ctx is done, opening a new
// one (after a short pause) when it breaks.
func (p *Proxy) run(ctx context.Context, conn grpc.ClientConnInterface) {
	for ctx.Err() == nil {
		var err error
		if p.protocol == SotW {
			err = p.stream(ctx, conn)
		} else {
			err = p.deltaStream(ctx, conn)
		}
		if ctx.Err() != nil {
			return
		}
		p.mu.Lock()
		p.lastErr = err
		p.mu.Unlock()
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// count records one response of type t received: its encoded size and
// the resources it carries.
func (p *Proxy) count(t, size, resources int) {
	p.mu.Lock()
	p.cnt.Responses++
	p.cnt.Bytes += uint64(size)
	p.cnt.Resources += uint64(resources)
	p.cnt.ByType[t]++
	p.mu.Unlock()
}

// spot adds to seen each probe of probes whose marker is in b (an
// encoded resource of a response received at at) and is not in seen
// yet, and records that this proxy received it then.
func (p *Proxy) spot(seen []*probe, probes []*probe, b []byte, at time.Time) []*probe {
	for _, pr := range probes {
		if !slices.Contains(seen, pr) && bytes.Contains(b, pr.marker) {
			seen = append(seen, pr)
			pr.received(p.index, at)
		}
	}
	return seen
}

// recordACK counts one ACK sent at at and times the probes seen in the
// responses it answers.
func (p *Proxy) recordACK(seen []*probe, at time.Time) {
	p.mu.Lock()
	p.cnt.ACKs++
	p.mu.Unlock()
	for _, pr := range seen {
		pr.ack(p.index, at)
	}
}

// typeOf is the index in typeOrder of a type URL the proxy subscribes
// to, or -1: VirtualHost is one only with VHDS.
func (p *Proxy) typeOf(url []byte) int {
	for i, t := range typeOrder {
		if string(url) == t {
			if i == vhdsIndex && !p.vhds {
				return -1
			}
			return i
		}
	}
	return -1
}

// streamState is one state-of-the-world stream's view, as xdsclient's state: what was
// received, what is subscribed, what was ACKed.
type streamState struct {
	stream   rawStream
	nodeSent bool
	nonce    [numTypes]string
	version  [numTypes]string
	acked    [numTypes]string
	pending  [numTypes]bool
	received [numTypes]bool
	// Names (interned ids) referenced by the listeners (RDS) and clusters
	// (EDS), sorted, and the names of those received.
	subs [numTypes][]uint32
	have [numTypes]map[uint32]struct{}
	// Probes seen in a response not yet ACKed, per type.
	seen [numTypes][]*probe
}

func (p *Proxy) stream(ctx context.Context, conn grpc.ClientConnInterface) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := openStream(sctx, conn, SotW)
	if err != nil {
		return fmt.Errorf("proxy %s: opening ADS stream: %w", p.Identity.ID, err)
	}
	s := &streamState{stream: st}
	for i := range s.have {
		s.have[i] = map[uint32]struct{}{}
	}
	p.mu.Lock()
	p.cnt.Streams++
	p.mu.Unlock()
	for _, t := range []int{0, 1} { // wildcard CDS, LDS
		if err := p.send(s, t, nil); err != nil {
			return err
		}
	}
	for {
		var m rawMessage
		if err := st.recv(&m); err != nil {
			return fmt.Errorf("proxy %s: receiving: %w", p.Identity.ID, err)
		}
		err := p.handle(s, m.bytes(), time.Now())
		m.free()
		if err != nil {
			return err
		}
	}
}

func (p *Proxy) send(s *streamState, t int, names []uint32) error {
	req := &discovery.DiscoveryRequest{
		VersionInfo:   s.acked[t],
		TypeUrl:       typeOrder[t],
		ResponseNonce: s.nonce[t],
	}
	if names != nil {
		req.ResourceNames = p.shared.in.strings(names)
	}
	if !s.nodeSent {
		req.Node = p.Identity.Node()
	}
	if err := s.stream.SendMsg(req); err != nil {
		return fmt.Errorf("proxy %s: sending %s request: %w", p.Identity.ID, shortTypes[t], err)
	}
	s.nodeSent = true
	return nil
}

// handle takes in one state-of-the-world response b, received at at.
func (p *Proxy) handle(s *streamState, b []byte, at time.Time) error {
	e, err := readEnvelope(b, false)
	if err != nil {
		return fmt.Errorf("proxy %s: reading a response: %w", p.Identity.ID, err)
	}
	t := p.typeOf(e.typeURL)
	if t < 0 {
		return nil
	}
	p.count(t, len(b), e.resources)

	s.nonce[t], s.version[t] = string(e.nonce), string(e.version)
	s.pending[t], s.received[t] = true, true
	probes := p.probes.active(t)
	sh := p.shared
	var set map[uint32]struct{}
	if t < 2 {
		set = map[uint32]struct{}{}
	}
	err = eachSotWResource(b, func(v []byte) error {
		if sh.decode == DecodeFull {
			if err := decodeFull(t, v); err != nil {
				return err
			}
		}
		if len(probes) > 0 {
			s.seen[t] = p.spot(s.seen[t], probes, v, at)
		}
		if t < 2 {
			for _, n := range sh.refs.list(sh.refs.referenced(t, v)) {
				set[n] = struct{}{}
			}
		} else if n, ok := firstBytes(v); ok { // EDS, RDS: merged by name
			s.have[t][sh.in.id(n)] = struct{}{}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("proxy %s: reading a %s response: %w", p.Identity.ID, shortTypes[t], err)
	}
	if t < 2 { // CDS, LDS: the state of the world; recompute what EDS, RDS need
		dep := dependent(t)
		want := slices.Sorted(maps.Keys(set))
		if !slices.Equal(want, s.subs[dep]) {
			s.subs[dep] = want
			for n := range s.have[dep] {
				if _, ok := set[n]; !ok {
					delete(s.have[dep], n)
				}
			}
			if err := p.send(s, dep, want); err != nil {
				return err
			}
		}
	}
	return p.maybeACK(s)
}

// maybeACK ACKs every type received since the last ACK once the set is
// complete: CDS and LDS received, and every referenced RDS and EDS name.
func (p *Proxy) maybeACK(s *streamState) error {
	if !s.received[0] || !s.received[1] {
		return nil
	}
	for _, t := range []int{2, 3} {
		for _, n := range s.subs[t] {
			if _, ok := s.have[t][n]; !ok {
				return nil
			}
		}
	}
	now := time.Now()
	for t := range typeOrder {
		if !s.pending[t] {
			continue
		}
		s.pending[t] = false
		s.acked[t] = s.version[t]
		var names []uint32
		if t >= 2 {
			names = s.subs[t]
		}
		if err := p.send(s, t, names); err != nil {
			return err
		}
		p.recordACK(s.seen[t], now)
		s.seen[t] = nil
	}
	p.synced.Store(true)
	return nil
}

// refCache maps an encoded Cluster or Listener to the EDS or RDS names it
// references, keyed by a hash of its bytes: proxies receive mostly the
// same resources, so each is decoded about once for the whole fleet. A
// proxy keeps the index of the list (list 0 is empty), not the list.
type refCache struct {
	in    *interner
	mu    sync.RWMutex
	m     map[uint64]uint32
	lists [][]uint32
}

func newRefCache(in *interner) *refCache {
	return &refCache{in: in, m: map[uint64]uint32{}, lists: [][]uint32{nil}}
}

// list returns the names of list i. The caller must not change it.
func (c *refCache) list(i uint32) []uint32 {
	if i == 0 {
		return nil
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.lists[i]
}

// referenced returns the list of the names resource b of type t (CDS or
// LDS) references.
func (c *refCache) referenced(t int, b []byte) uint32 {
	h := xxhash.Sum64(b) ^ uint64(t)
	c.mu.RLock()
	i, ok := c.m[h]
	c.mu.RUnlock()
	if ok {
		return i
	}
	var names []uint32
	switch t {
	case 0:
		var cl cluster.Cluster
		if proto.Unmarshal(b, &cl) == nil && cl.GetType() == cluster.Cluster_EDS {
			n := cl.GetEdsClusterConfig().GetServiceName()
			if n == "" {
				n = cl.GetName()
			}
			names = []uint32{c.in.id([]byte(n))}
		}
	case 1:
		var l listener.Listener
		if proto.Unmarshal(b, &l) == nil {
			chains := l.GetFilterChains()
			if dc := l.GetDefaultFilterChain(); dc != nil {
				chains = append(slices.Clip(chains), dc)
			}
			for _, fc := range chains {
				for _, f := range fc.GetFilters() {
					var m hcm.HttpConnectionManager
					if f.GetTypedConfig().MessageIs(&m) && f.GetTypedConfig().UnmarshalTo(&m) == nil {
						if n := m.GetRds().GetRouteConfigName(); n != "" {
							names = append(names, c.in.id([]byte(n)))
						}
					}
				}
			}
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if i, ok := c.m[h]; ok {
		return i
	}
	// Kept for the run: a proxy holds list indexes, and clusters and
	// listeners change only with config changes, a few per run.
	i = 0
	if len(names) > 0 {
		i = uint32(len(c.lists))
		c.lists = append(c.lists, names)
	}
	c.m[h] = i
	return i
}
