package xdsload

import (
	"context"
	"crypto/tls"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/encoding/protowire"

	"weft.dev/weft/internal/proxy/xdsclient"
	"weft.dev/weft/internal/xds/contract"
)

// FleetOptions configure a Fleet.
type FleetOptions struct {
	// Address is the control plane's plaintext ADS address (weft serve
	// --xds-plaintext-address), or with ClientTLS its secure one
	// (--xds-address).
	Address string
	// ClientTLS, when set, gives each proxy its TLS configuration (its
	// workload certificate as its client certificate, the mesh's root):
	// every proxy then dials Address over TLS on a connection of its own,
	// as weft-proxy does on the control plane's secure port, whose node
	// check wants each stream's node to match its connection's
	// certificate. Conns is then ignored.
	ClientTLS func(contract.Identity) (*tls.Config, error)
	// Proxies is the number of simulated proxies (N).
	Proxies int
	// Conns is the number of gRPC connections the streams share, round
	// robin; 0 or >= Proxies gives every proxy its own, as real sidecars
	// have (the control plane then pays per-connection costs — HTTP/2
	// framing, flow-control windows, keepalive — as it would in a mesh).
	Conns int
	// Captured makes the proxies captured sidecars (INTERCEPTION_MODE
	// REDIRECT, as injected pods are); otherwise explicit ones with an
	// outbound listener on 127.0.0.1:15001.
	Captured bool
	// Protocol is the ADS variant the proxies speak; "" is Delta, as
	// weft-proxy's default.
	Protocol Protocol
	// VHDS makes delta proxies take their route configurations' virtual
	// hosts by VHDS, as weft-proxy's delta client does
	// (contract.FeatureVHDS): each route configuration then comes without
	// virtual hosts, and each virtual host is a resource of type
	// VirtualHost, subscribed to as a wildcard after the other types. Set
	// it to play weft-proxy (bench/xdsload's --vhds is on by default);
	// it is ignored with SotW.
	VHDS bool
	// Decode is how much of each response a proxy decodes; "" is
	// DecodeEnvelope.
	Decode Decode
}

// Protocol is an ADS variant.
type Protocol string

// The ADS variants a simulated proxy speaks.
const (
	// Delta is incremental ADS (DeltaAggregatedResources): a response
	// carries only the resources that changed, and removals by name.
	Delta Protocol = "delta"
	// SotW is state-of-the-world ADS (StreamAggregatedResources): a
	// response carries every resource of its type the proxy subscribes to.
	SotW Protocol = "sotw"
)

// ParseProtocol reads "delta" or "sotw".
func ParseProtocol(s string) (Protocol, error) {
	switch p := Protocol(s); p {
	case Delta, SotW:
		return p, nil
	}
	return "", fmt.Errorf("xDS protocol %q: want delta or sotw", s)
}

// Fleet is N simulated proxies, each playing one workload of the mesh
// (its address, namespace, labels and service account) with its own node id.
type Fleet struct {
	opts    FleetOptions
	proxies []*Proxy
	conns   []*grpc.ClientConn
	probes  *probeBoard
	wg      sync.WaitGroup
}

// NewFleet builds the proxies; proxy i plays workload i modulo their count
// (a second proxy of the same workload gets a distinct node id).
func NewFleet(opts FleetOptions, workloads []Workload) (*Fleet, error) {
	if opts.Proxies < 1 {
		return nil, fmt.Errorf("fleet: %d proxies: need at least 1", opts.Proxies)
	}
	if len(workloads) == 0 {
		return nil, fmt.Errorf("fleet: no workloads to play")
	}
	if opts.Conns <= 0 || opts.Conns > opts.Proxies || opts.ClientTLS != nil {
		opts.Conns = opts.Proxies
	}
	if opts.Protocol == "" {
		opts.Protocol = Delta
	}
	if _, err := ParseProtocol(string(opts.Protocol)); err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	opts.VHDS = opts.VHDS && opts.Protocol == Delta
	if opts.Decode == "" {
		opts.Decode = DecodeEnvelope
	}
	if _, err := ParseDecode(string(opts.Decode)); err != nil {
		return nil, fmt.Errorf("fleet: %w", err)
	}
	f := &Fleet{opts: opts, probes: &probeBoard{}}
	shared := newFleetShared(opts.Decode)
	for i := range opts.Proxies {
		w := workloads[i%len(workloads)]
		id := contract.Identity{
			ID:             fmt.Sprintf("sidecar~%s~%s-%d.%s~%s.svc.cluster.local", w.IP, w.Name, i, w.Namespace, w.Namespace),
			Namespace:      w.Namespace,
			WorkloadName:   w.Service,
			Labels:         map[string]string{"app": w.Service, "version": w.Version},
			IPs:            []string{w.IP},
			ServiceAccount: w.Service,
			ClusterID:      "Kubernetes",
			VHDS:           opts.VHDS,
		}
		if opts.Captured {
			id.InterceptionMode = contract.InterceptionRedirect
		} else {
			id.OutboundAddress = contract.DefaultOutboundAddress
		}
		f.proxies = append(f.proxies, &Proxy{Identity: id, index: i, protocol: opts.Protocol, vhds: opts.VHDS, shared: shared, probes: f.probes})
	}
	return f, nil
}

// Protocol is the ADS variant the proxies speak.
func (f *Fleet) Protocol() Protocol { return f.opts.Protocol }

// Decode is how much of each response the proxies decode.
func (f *Fleet) Decode() Decode { return f.opts.Decode }

// VHDS reports whether the proxies take virtual hosts by VHDS: asked for
// (FleetOptions.VHDS) and speaking delta.
func (f *Fleet) VHDS() bool { return f.opts.VHDS }

// RouteType is the type ("RDS" or "VHDS") of the responses that carry a
// VirtualService's routes to the proxies, where a config change's marker
// is to be watched for: VHDS when they take virtual hosts by VHDS (their
// route configurations then carry none), else RDS.
func (f *Fleet) RouteType() string {
	if f.opts.VHDS {
		return shortTypes[vhdsIndex]
	}
	return shortTypes[3]
}

// Proxies returns the simulated proxies.
func (f *Fleet) Proxies() []*Proxy { return f.proxies }

// Start dials the connections and starts every proxy's stream; they run
// until ctx is done. Call Wait after that to have them ended. Start may be
// called once.
func (f *Fleet) Start(ctx context.Context) error {
	for i := range f.opts.Conns {
		creds := insecure.NewCredentials()
		if f.opts.ClientTLS != nil {
			conf, err := f.opts.ClientTLS(f.proxies[i].Identity)
			if err != nil {
				f.close()
				return fmt.Errorf("fleet: TLS for proxy %d: %w", i, err)
			}
			creds = credentials.NewTLS(conf)
		}
		c, err := grpc.NewClient(f.opts.Address, append(xdsclient.DialOptions(), // as weft-proxy
			grpc.WithTransportCredentials(creds),
			grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 20 * time.Second, PermitWithoutStream: true}),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)),
		)...)
		if err != nil {
			f.close()
			return fmt.Errorf("fleet: dialing %s: %w", f.opts.Address, err)
		}
		f.conns = append(f.conns, c)
	}
	for i, p := range f.proxies {
		conn := f.conns[i%len(f.conns)]
		f.wg.Go(func() { p.run(ctx, conn) })
	}
	return nil
}

// Wait returns when every stream started by Start has ended (its context
// is done), and closes the connections.
func (f *Fleet) Wait() {
	f.wg.Wait()
	f.close()
}

func (f *Fleet) close() {
	for _, c := range f.conns {
		_ = c.Close()
	}
	f.conns = nil
}

// Synced counts the proxies that have ACKed a complete config.
func (f *Fleet) Synced() int {
	n := 0
	for _, p := range f.proxies {
		if p.synced.Load() {
			n++
		}
	}
	return n
}

// Counters returns every proxy's counters, in proxy order.
func (f *Fleet) Counters() []Counters {
	out := make([]Counters, len(f.proxies))
	for i, p := range f.proxies {
		out[i] = p.Counters()
	}
	return out
}

// Watch starts watching for marker in responses of the given type
// ("CDS", "LDS", "EDS", "RDS" or "VHDS"; RouteType says which of the last
// two carries routes): each proxy's ACK of the first response carrying it
// is timed from start. Call before making the change. It panics on
// another type name, a programming error.
func (f *Fleet) Watch(typ, marker string, start time.Time) *Probe {
	return f.WatchNamespace(typ, marker, start, "")
}

// WatchNamespace is Watch for the proxies of one namespace only (all of
// them when namespace is ""): with namespace scoping, a change of a
// service is sent to the proxies that see it, and only their ACKs count.
func (f *Fleet) WatchNamespace(typ, marker string, start time.Time, namespace string) *Probe {
	t := -1
	for i, s := range shortTypes {
		if s == typ {
			t = i
		}
	}
	if t < 0 {
		panic("xdsload: unknown type " + typ)
	}
	// Length-prefixed, as the string is encoded: 10.128.0.1 must not match 10.128.0.12.
	pr := &probe{marker: protowire.AppendString(nil, marker), typ: t, start: start, acks: make([]atomic.Int64, len(f.proxies)),
		recvs: make([]atomic.Int64, len(f.proxies)), expected: make([]bool, len(f.proxies)), done: make(chan struct{})}
	n := 0
	for i, p := range f.proxies {
		if namespace == "" || p.Identity.Namespace == namespace {
			pr.expected[i] = true
			n++
		}
	}
	pr.remaining.Store(int64(n))
	if n == 0 {
		close(pr.done)
	}
	f.probes.add(pr)
	return &Probe{p: pr, board: f.probes}
}

// Probe follows one change to every proxy.
type Probe struct {
	p     *probe
	board *probeBoard
}

// Wait blocks until every proxy watched ACKed the change or ctx is done,
// stops watching, and returns each watched proxy's latency (-1 for one
// that did not ACK).
func (p *Probe) Wait(ctx context.Context) []time.Duration {
	select {
	case <-p.p.done:
	case <-ctx.Done():
	}
	p.board.remove(p.p)
	return p.p.latencies(p.p.acks)
}

// Received returns, after Wait, how long after the change each watched
// proxy received the first response carrying it (-1 for one that did
// not): the control plane's part of the latency, without the time the
// simulator took to read the rest of the set and ACK.
func (p *Probe) Received() []time.Duration { return p.p.latencies(p.p.recvs) }

type probe struct {
	marker    []byte
	typ       int
	start     time.Time
	acks      []atomic.Int64 // unix nanoseconds of each proxy's ACK; 0 until then
	recvs     []atomic.Int64 // unix nanoseconds of each proxy's receipt; 0 until then
	expected  []bool         // the proxies watched
	remaining atomic.Int64
	done      chan struct{}
}

// latencies are the times in ts of the expected proxies since start, -1
// for those not set.
func (p *probe) latencies(ts []atomic.Int64) []time.Duration {
	out := make([]time.Duration, 0, len(ts))
	for i := range ts {
		if !p.expected[i] {
			continue
		}
		if at := ts[i].Load(); at != 0 {
			out = append(out, time.Duration(at-p.start.UnixNano()))
		} else {
			out = append(out, -1)
		}
	}
	return out
}

// received records that proxy i received the change at at (the first
// time only).
func (p *probe) received(i int, at time.Time) {
	if p.expected[i] {
		p.recvs[i].CompareAndSwap(0, at.UnixNano())
	}
}

func (p *probe) ack(i int, at time.Time) {
	if p.expected[i] && p.acks[i].CompareAndSwap(0, at.UnixNano()) && p.remaining.Add(-1) == 0 {
		close(p.done)
	}
}

// probeBoard is the set of active probes, read by every stream on every
// response.
type probeBoard struct {
	list atomic.Pointer[[]*probe]
	mu   sync.Mutex
}

func (b *probeBoard) active(t int) []*probe {
	l := b.list.Load()
	if l == nil {
		return nil
	}
	var out []*probe
	for _, p := range *l {
		if p.typ == t {
			out = append(out, p)
		}
	}
	return out
}

func (b *probeBoard) add(p *probe) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var l []*probe
	if cur := b.list.Load(); cur != nil {
		l = append(l, *cur...)
	}
	l = append(l, p)
	b.list.Store(&l)
}

func (b *probeBoard) remove(p *probe) {
	b.mu.Lock()
	defer b.mu.Unlock()
	cur := b.list.Load()
	if cur == nil {
		return
	}
	var l []*probe
	for _, q := range *cur {
		if q != p {
			l = append(l, q)
		}
	}
	b.list.Store(&l)
}

// Percentiles of latencies; missing ones (-1) are counted apart.
type Percentiles struct {
	P50, P99, Max time.Duration
	Missing       int // proxies that never ACKed
	N             int // proxies watched
}

func percentiles(ds []time.Duration) Percentiles {
	var ok []time.Duration
	p := Percentiles{N: len(ds)}
	for _, d := range ds {
		if d < 0 {
			p.Missing++
			continue
		}
		ok = append(ok, d)
	}
	if len(ok) == 0 {
		return p
	}
	sort.Slice(ok, func(i, j int) bool { return ok[i] < ok[j] })
	at := func(q float64) time.Duration {
		i := int(q*float64(len(ok))+0.5) - 1
		return ok[max(0, min(i, len(ok)-1))]
	}
	p.P50, p.P99, p.Max = at(0.50), at(0.99), ok[len(ok)-1]
	return p
}
