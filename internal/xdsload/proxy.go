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
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"weft.dev/weft/internal/proxy/xdsclient"
	"weft.dev/weft/internal/xds/contract"
)

// Type URLs, as weft-proxy subscribes in this order on a new stream.
const (
	typeCluster  = xdsclient.TypeCluster
	typeListener = xdsclient.TypeListener
	typeEndpoint = xdsclient.TypeEndpoint
	typeRoute    = xdsclient.TypeRoute
)

var typeOrder = [...]string{typeCluster, typeListener, typeEndpoint, typeRoute}

func typeIndex(t string) int { return slices.Index(typeOrder[:], t) }

// shortTypes name the types in reports, indexed as typeOrder.
var shortTypes = [...]string{"CDS", "LDS", "EDS", "RDS"}

// Counters are what one simulated proxy received and sent. Read them with
// Proxy.Counters; they only grow.
type Counters struct {
	Responses uint64    // DiscoveryResponses received
	Bytes     uint64    // their encoded size
	Resources uint64    // resources in them (not counting delta removals)
	ByType    [4]uint64 // responses per type, in typeOrder (CDS, LDS, EDS, RDS)
	ACKs      uint64    // ACK requests sent
	Streams   uint64    // streams opened (1 + reconnects)
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
// names the listeners and clusters reference, the node on the first
// request only, and an ACK for every type received once the set is
// complete — without building a data plane: it decodes only what it needs
// for the names (listeners and clusters, with a cache shared by the fleet
// since most proxies receive identical ones).
type Proxy struct {
	Identity contract.Identity
	index    int
	protocol Protocol
	names    *nameCache
	probes   *probeBoard
	// delta is what a delta proxy holds across its streams; owned by the
	// goroutine running run.
	delta *deltaState

	mu      sync.Mutex
	cnt     Counters
	lastErr error       // why the last stream ended, nil while the first runs
	synced  atomic.Bool // a first complete set was ACKed
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
	ads := discovery.NewAggregatedDiscoveryServiceClient(conn)
	for ctx.Err() == nil {
		var err error
		if p.protocol == SotW {
			err = p.stream(ctx, ads)
		} else {
			err = p.deltaStream(ctx, ads)
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

// spot adds to seen each probe of probes whose marker is in b (the
// encoded resource) and is not in seen yet.
func spot(seen []*probe, probes []*probe, b []byte) []*probe {
	for _, pr := range probes {
		if !slices.Contains(seen, pr) && bytes.Contains(b, pr.marker) {
			seen = append(seen, pr)
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

// streamState is one state-of-the-world stream's view, as xdsclient's state: what was
// received, what is subscribed, what was ACKed.
type streamState struct {
	stream   discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	nodeSent bool
	nonce    [4]string
	version  [4]string
	acked    [4]string
	pending  [4]bool
	received [4]bool
	// Names referenced by the listeners (RDS) and clusters (EDS), sorted,
	// and the names of those received.
	subs [4][]string
	have [4]map[string]bool
	// Probes seen in a response not yet ACKed, per type.
	seen [4][]*probe
}

func (p *Proxy) stream(ctx context.Context, ads discovery.AggregatedDiscoveryServiceClient) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := ads.StreamAggregatedResources(sctx, grpc.MaxCallRecvMsgSize(64<<20))
	if err != nil {
		return fmt.Errorf("proxy %s: opening ADS stream: %w", p.Identity.ID, err)
	}
	s := &streamState{stream: st}
	for i := range s.have {
		s.have[i] = map[string]bool{}
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
		r, err := st.Recv()
		if err != nil {
			return fmt.Errorf("proxy %s: receiving: %w", p.Identity.ID, err)
		}
		if err := p.handle(s, r); err != nil {
			return err
		}
	}
}

func (p *Proxy) send(s *streamState, t int, names []string) error {
	req := &discovery.DiscoveryRequest{
		VersionInfo:   s.acked[t],
		TypeUrl:       typeOrder[t],
		ResponseNonce: s.nonce[t],
		ResourceNames: names,
	}
	if !s.nodeSent {
		req.Node = p.Identity.Node()
	}
	if err := s.stream.Send(req); err != nil {
		return fmt.Errorf("proxy %s: sending %s request: %w", p.Identity.ID, shortTypes[t], err)
	}
	s.nodeSent = true
	return nil
}

func (p *Proxy) handle(s *streamState, r *discovery.DiscoveryResponse) error {
	t := typeIndex(r.GetTypeUrl())
	if t < 0 {
		return nil
	}
	p.count(t, proto.Size(r), len(r.GetResources()))

	s.nonce[t], s.version[t] = r.GetNonce(), r.GetVersionInfo()
	s.pending[t], s.received[t] = true, true
	if probes := p.probes.active(t); len(probes) > 0 {
		for _, a := range r.GetResources() {
			s.seen[t] = spot(s.seen[t], probes, a.GetValue())
		}
	}
	switch t {
	case 0, 1: // CDS, LDS: the state of the world; recompute what EDS, RDS need
		set := map[string]bool{}
		for _, a := range r.GetResources() {
			for _, n := range p.names.referenced(t, a.GetValue()) {
				set[n] = true
			}
		}
		dep := 2 // EDS for clusters
		if t == 1 {
			dep = 3 // RDS for listeners
		}
		want := slices.Sorted(maps.Keys(set))
		if !slices.Equal(want, s.subs[dep]) {
			s.subs[dep] = want
			for n := range s.have[dep] {
				if !set[n] {
					delete(s.have[dep], n)
				}
			}
			if err := p.send(s, dep, want); err != nil {
				return err
			}
		}
	case 2, 3: // EDS, RDS: merged by name
		for _, a := range r.GetResources() {
			if n, ok := firstString(a.GetValue()); ok {
				s.have[t][n] = true
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
			if !s.have[t][n] {
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
		var names []string
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

// firstString reads field 1 of an encoded message as a string: the name of
// a RouteConfiguration and the cluster_name of a ClusterLoadAssignment.
func firstString(b []byte) (string, bool) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return "", false
		}
		b = b[n:]
		if num == 1 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return "", false
			}
			return string(v), true
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return "", false
		}
		b = b[n:]
	}
	return "", false
}

// nameCache maps an encoded Cluster or Listener to the EDS or RDS names it
// references, keyed by a hash of its bytes: proxies receive mostly the
// same resources, so each is decoded about once for the whole fleet.
type nameCache struct {
	mu sync.Mutex
	m  map[uint64][]string
}

func newNameCache() *nameCache { return &nameCache{m: map[uint64][]string{}} }

func (c *nameCache) referenced(t int, b []byte) []string {
	h := xxhash.Sum64(b) ^ uint64(t)
	c.mu.Lock()
	names, ok := c.m[h]
	c.mu.Unlock()
	if ok {
		return names
	}
	switch t {
	case 0:
		var cl cluster.Cluster
		if proto.Unmarshal(b, &cl) == nil && cl.GetType() == cluster.Cluster_EDS {
			n := cl.GetEdsClusterConfig().GetServiceName()
			if n == "" {
				n = cl.GetName()
			}
			names = []string{n}
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
							names = append(names, n)
						}
					}
				}
			}
		}
	}
	c.mu.Lock()
	if len(c.m) > 1<<20 { // bounded: a long storm makes new clusters only rarely
		c.m = map[uint64][]string{}
	}
	c.m[h] = names
	c.mu.Unlock()
	return names
}
