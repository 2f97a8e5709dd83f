// Package cluster is the proxy's runtime of its upstream clusters: a
// Cluster resource and its endpoint assignment translated into an
// immutable Cluster that picks an endpoint for each request — by priority
// and locality, then with the cluster's load balancer (round robin, least
// request, random, ring hash, Maglev, with slow start) — and the state
// that outlives one configuration: circuit breakers, outlier detection,
// the connection pool (internal/proxy/upstream) and Envoy's per-cluster
// statistics. STRICT_DNS and LOGICAL_DNS clusters resolve their endpoints'
// names in the proxy, through a Resolver (dnscluster.go).
//
// A Cluster is immutable and safe for concurrent use; picking takes no
// lock. What must survive an update lives in the cluster's state, which a
// new Cluster built from an unchanged Cluster resource shares with the
// previous one (Build).
package cluster

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"strconv"
	"sync/atomic"
	"weft.dev/weft/internal/proxy/xdswire"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"

	"weft.dev/weft/internal/proxy/telemetry"
	"weft.dev/weft/internal/proxy/tlssocket"
	"weft.dev/weft/internal/proxy/upstream"
	"weft.dev/weft/internal/xds/contract"
)

// state is the part of a cluster that survives updates which leave the
// Cluster resource unchanged: the connection pool, the round-robin
// position, the circuit breakers, outlier detection and slow start. It is
// shared by successive Clusters and safe for concurrent use.
type state struct {
	up      upstream.Lazy    // connections to the endpoints; the pool is built at the first request
	next    atomic.Uint64    // round-robin position
	breaker *Breaker         // circuit_breakers (breaker.go)
	outlier *outlierDetector // outlier_detection (outlier.go); nil when off
	warm    warmTracker      // slow start (slowstart.go)
	orig    *originalDst     // an ORIGINAL_DST cluster's hosts (origdst.go); nil otherwise
	dns     *dnsHosts        // a STRICT_DNS or LOGICAL_DNS cluster's hosts (dnscluster.go); nil otherwise
}

// stateFor is a new state for cluster c (ORIGINAL_DST and DNS hosts
// aside): its pool built with uo, counted in stats, its breakers and
// outlier detection.
func (b *Builder) stateFor(c *clusterv3.Cluster, uo upstream.Options, stats *statRef) (*state, error) {
	uo.CountConnections(func() { stats.get().CxTotal.Inc() })
	uo.CountActive(refActive{stats})
	st := newState(uo)
	if err := configureState(st, c, stats); err != nil {
		return nil, err
	}
	return st, nil
}

// cellState is c's built state; nil for a nil c or a state not built.
func (c *Cluster) cellState() *state {
	if c == nil {
		return nil
	}
	return c.cell.built()
}

func newState(o upstream.Options) *state {
	s := &state{}
	s.up.Init(o)
	s.next.Store(rand.Uint64()) // proxies should not all start on the same endpoint
	return s
}

// Cluster is a translated Cluster with its endpoints. Immutable; safe for
// concurrent use.
type Cluster struct {
	name string
	// What it was built from, to tell an unchanged resource: the
	// encodings (BuildWire), or, without them, the messages themselves
	// (Build). A sidecar of a large mesh keeps thousands of clusters; the
	// decoded messages would be most of its heap.
	cfg     *clusterv3.Cluster
	cla     *endpointv3.ClusterLoadAssignment
	cfgWire xdswire.Packed
	claWire xdswire.Packed
	eds     string     // an EDS cluster's EDS service name; "" for other types
	cell    *stateCell // its state, maybe built at the first use (lazy.go)
	// picker is the cluster's endpoints, built with it; or lazy, built
	// at the first pick; or neither, for a cluster resolved by DNS: its
	// state's is current (pick).
	picker *picker
	lazy   *lazyPicker
	stats  *statRef // envoy_cluster_* counters (stats.go), allocated at the first request
	// Metric labels: dstNoEndpoint when no endpoint was chosen (UH) and
	// dstInbound when this cluster serves an inbound listener, each
	// interned at its first use (a sidecar holds thousands of outbound
	// clusters that never need them) from labels, the service its
	// metrics name, with what b interns.
	labels        *dstLabels
	dstNoEndpoint atomic.Pointer[telemetry.DstLabels]
	dstInbound    atomic.Pointer[telemetry.DstLabels]
	b             *Builder
	// passthrough: a cluster with no service of its own that forwards to
	// the original destination or nowhere (PassthroughCluster,
	// BlackHoleCluster): its metrics name the cluster.
	passthrough bool
}

// Name is the cluster's name.
func (c *Cluster) Name() string { return c.name }

// Stats is the cluster's envoy_cluster_* counter set, allocated at the
// first call (the first request); until then the cluster scrapes as
// zeros. Lock-free once allocated.
func (c *Cluster) Stats() *Stats { return c.stats.get() }

// Upstream is the cluster's connection pool, built at the first call
// (the first request). Lock-free once built.
func (c *Cluster) Upstream() *upstream.Pool { return c.cell.get().up.Pool() }

// Broken lists the cluster's TLS sockets that cannot make handshakes
// (upstream.Pool.Broken), without building its pool.
func (c *Cluster) Broken() []error {
	if st := c.cell.built(); st != nil {
		return st.up.Broken()
	}
	return nil // a state waits only when every socket works (build)
}

// Breaker is the cluster's circuit breaker.
func (c *Cluster) Breaker() *Breaker { return c.cell.get().breaker }

// DstNoEndpoint labels a request routed to this cluster before (or
// without) an endpoint being chosen. Lock-free once interned, at the
// first call.
func (c *Cluster) DstNoEndpoint() *telemetry.DstLabels {
	if d := c.dstNoEndpoint.Load(); d != nil {
		return d
	}
	svc := c.labels.svc
	d := c.labels.m.InternDst(telemetry.DstLabels{Service: svc.host, ServiceName: svc.name, ServiceNamespace: svc.namespace,
		Workload: telemetry.Unknown, WorkloadNamespace: telemetry.Unknown, App: telemetry.Unknown, Version: telemetry.Unknown})
	c.dstNoEndpoint.Store(d) // a racing call interned the same
	return d
}

// Passthrough reports whether the cluster stands for destinations outside
// the mesh (Istio's PassthroughCluster and BlackHoleCluster: an
// ORIGINAL_DST cluster, or a STATIC one without endpoints, that names no
// service in its metadata). Its metrics name the cluster as the service;
// an HTTP request to it is labelled with its Host
// (telemetry.Metrics.HostDst).
func (c *Cluster) Passthrough() bool { return c.passthrough }

// DstInbound labels a request this cluster serves on an inbound listener:
// the destination is the proxy's own workload.
func (c *Cluster) DstInbound() *telemetry.DstLabels {
	if d := c.dstInbound.Load(); d != nil {
		return d
	}
	// The service clusterService read, as build labelled it.
	svc := c.labels.svc
	if c.passthrough {
		svc = serviceRef{host: c.name, name: c.name, namespace: telemetry.Unknown}
	}
	d := c.b.Metrics.InternDst(telemetry.IdentityDst(c.b.Identity, svc.host, svc.name, svc.namespace))
	c.dstInbound.Store(d) // a racing call interned the same
	return d
}

// Pick returns an endpoint for a request with hash k (used by the hashing
// balancers), or nil when no endpoint is available. Lock-free; called on
// the request goroutine.
func (c *Cluster) Pick(k HashKey) *Endpoint { return c.pick().pick(k) }

// pick is the cluster's picker: its own (built now if it waited for its
// first pick), or the current one of the hosts it resolves. Lock-free once
// built.
func (c *Cluster) pick() *picker {
	if c.picker != nil {
		return c.picker
	}
	if c.lazy != nil {
		return c.lazy.get()
	}
	if st := c.cell.built(); st != nil && st.dns != nil {
		if p := st.dns.cur.Load(); p != nil {
			return p
		}
	}
	return emptyPicker
}

// emptyPicker has no endpoint.
var emptyPicker = &picker{}

// PickExcept is Pick for a retry: the priority levels in skip (bit i:
// level i) are left out of the priority load, as a retry priority asks
// (PrevPriorities), and the endpoints in exclude are avoided while
// another endpoint is available.
func (c *Cluster) PickExcept(k HashKey, skip uint64, exclude []*Endpoint) *Endpoint {
	return c.pick().pickExcept(k, skip, exclude)
}

// SharesState reports whether c carries on the state of other: pool,
// breakers and outlier detection. A Cluster built on top of an unchanged
// Cluster resource does.
func (c *Cluster) SharesState(other *Cluster) bool { return other != nil && c.cell == other.cell }

// RetainConnections closes the pooled connections of endpoints that are
// no longer in the cluster. Called once c is the running configuration.
func (c *Cluster) RetainConnections() {
	st := c.cell.built()
	if st == nil {
		return // no state yet, so no connections
	}
	if d := st.dns; d != nil {
		d.mu.Lock()
		st.retain(c.pick())
		d.mu.Unlock()
		d.start()
		return
	}
	p := c.picker
	if c.lazy != nil {
		if st.up.Built() == nil {
			return // no connections: nothing to close, nothing to build yet
		}
		p = c.lazy.get() // the cluster has served: it will serve
	}
	st.retain(p)
}

// retain closes the pooled connections of endpoints not in p (nor among
// an ORIGINAL_DST cluster's hosts), once the pool is built; before, there
// are none.
func (st *state) retain(p *picker) {
	pool := st.up.Built()
	if pool == nil {
		return
	}
	keep := p.conns()
	if st.orig != nil {
		keep = append(keep, st.orig.conns()...)
	}
	pool.Retain(keep)
}

// CloseIdle closes the idle connections of the cluster's state and stops
// its outlier detection and its DNS refresh (waiting for the goroutine
// to end). Called when no running configuration uses that state any more
// (or at shutdown): connections given back by requests still in flight
// are closed too.
func (c *Cluster) CloseIdle() { c.cell.closeIdle() }

// closeIdle is CloseIdle of a built state.
func (st *state) closeIdle() {
	if st.dns != nil {
		st.dns.stop()
	}
	st.up.CloseIdle()
	if st.outlier != nil {
		st.outlier.stop()
	}
}

// Builder builds Clusters. Its fields are set once, before the first
// Build; Build is called from one goroutine at a time (translation).
type Builder struct {
	Metrics  *telemetry.Metrics // interns the endpoints' destination labels
	Stats    *StatVecs          // envoy_cluster_* counters
	Identity contract.Identity  // the proxy's own workload: inbound destination labels
	Secrets  tlssocket.Secrets  // SDS default and ROOTCA for upstream TLS; nil: none
	// Resolver resolves the names of STRICT_DNS and LOGICAL_DNS clusters;
	// nil: SystemResolver.
	Resolver Resolver
	// Logger reports DNS lookups that fail; nil: slog.Default().
	Logger *slog.Logger
}

// Build translates Cluster c with the endpoint assignments eps (keyed by
// EDS service name; a missing one means no endpoints yet). prev is the
// same-named Cluster of the running configuration, or nil: its state is
// kept when c is unchanged, its endpoints too when the assignment is.
// Errors name the field of c (or of its assignment) that is wrong.
func (b *Builder) Build(c *clusterv3.Cluster, eps map[string]*endpointv3.ClusterLoadAssignment, prev *Cluster) (*Cluster, error) {
	return b.BuildWire(xdswire.Packed{}, func() (*clusterv3.Cluster, error) { return c, nil }, AssignmentMaps{Messages: eps}, prev)
}

// Assignments are the EDS assignments a build reads, by EDS service name.
type Assignments interface {
	// Wire is the named assignment's encoding; zero when it has none (a
	// stand-in, a missing one, a set built from messages).
	Wire(name string) xdswire.Packed
	// Assignment is the named assignment, decoded if need be; nil when
	// there is none.
	Assignment(name string) (*endpointv3.ClusterLoadAssignment, error)
}

// AssignmentMaps are Assignments given as messages and encodings by name;
// either map may be nil, and a nil message is decoded from its encoding.
type AssignmentMaps struct {
	Messages  map[string]*endpointv3.ClusterLoadAssignment
	Encodings map[string]xdswire.Packed
}

// Wire implements Assignments.
func (a AssignmentMaps) Wire(name string) xdswire.Packed { return a.Encodings[name] }

// Assignment implements Assignments.
func (a AssignmentMaps) Assignment(name string) (*endpointv3.ClusterLoadAssignment, error) {
	if m := a.Messages[name]; m != nil {
		return m, nil
	}
	w, ok := a.Encodings[name]
	if !ok {
		return nil, nil
	}
	m := &endpointv3.ClusterLoadAssignment{}
	if err := w.Unmarshal(m); err != nil {
		return nil, fmt.Errorf("cluster load assignment %q: %w", name, err)
	}
	return m, nil
}

// BuildWire is Build given the encoding of the Cluster (cWire) and of
// the assignments, as xdsclient.Wire has them, and the Cluster decoded
// only when asked (decode): when prev was built from the same bytes of
// both, prev itself is returned and nothing is decoded; otherwise an
// unchanged resource is told by its bytes, and the Cluster keeps them
// instead of the decoded resource and assignment. With a zero cWire it is
// Build.
func (b *Builder) BuildWire(cWire xdswire.Packed, decode func() (*clusterv3.Cluster, error), eps Assignments, prev *Cluster) (*Cluster, error) {
	if prev.builtFrom(cWire, eps) {
		return prev, nil
	}
	c, err := decode()
	if err != nil {
		return nil, err
	}
	ct, err := b.build(c, cWire, eps, prev)
	if err != nil {
		return nil, err
	}
	if !ct.cfgWire.IsZero() {
		ct.cfg = nil
	}
	if !ct.claWire.IsZero() {
		ct.cla = nil
	}
	return ct, nil
}

// Encodings are what c was built from, when it was built from encodings
// (BuildWire): its own, and for an EDS cluster its EDS service name and
// its assignment's encoding (zero for a stand-in or a missing one).
// Zero, "", zero when built from messages (Build).
func (c *Cluster) Encodings() (cfg xdswire.Packed, eds string, cla xdswire.Packed) {
	if c.eds == "" {
		return c.cfgWire, "", xdswire.Packed{}
	}
	return c.cfgWire, c.eds, c.claWire
}

// builtFrom reports whether c (may be nil) was built from the encoding
// cWire and from its assignment as eps encodes it now: it can serve as it
// is. A sidecar of a large mesh holds thousands of clusters, and an
// endpoint push changes a few.
func (c *Cluster) builtFrom(cWire xdswire.Packed, eps Assignments) bool {
	if c == nil || c.cfgWire.IsZero() || cWire.IsZero() || !c.cfgWire.Equal(cWire) {
		return false
	}
	if c.eds == "" {
		return true // not EDS: the endpoints are part of the cluster, or none
	}
	w := eps.Wire(c.eds)
	return !w.IsZero() && !c.claWire.IsZero() && w.Equal(c.claWire)
}

func (b *Builder) build(c *clusterv3.Cluster, cWire xdswire.Packed, eps Assignments, prev *Cluster) (*Cluster, error) {
	ct := &Cluster{name: c.GetName(), cfg: c, cfgWire: cWire}
	var cla *endpointv3.ClusterLoadAssignment
	switch c.GetClusterDiscoveryType().(type) {
	case *clusterv3.Cluster_Type, nil:
	default:
		return nil, fmt.Errorf("cluster_type: custom cluster types are unsupported")
	}
	switch c.GetType() {
	case clusterv3.Cluster_EDS:
		ct.eds = c.GetEdsClusterConfig().GetServiceName()
		if ct.eds == "" || ct.eds == ct.name {
			ct.eds = ct.name // one string for both
		}
		// A missing assignment means no endpoints yet (see
		// xdsclient.Resources); it is decoded once the state is known
		// (an unchanged one is not).
		if !cWire.IsZero() {
			ct.claWire = eps.Wire(ct.eds) // zero for a stand-in or a missing one: compared as changed
		}
	case clusterv3.Cluster_STATIC, clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_LOGICAL_DNS:
		cla = c.GetLoadAssignment()
		if cla == nil {
			cla = &endpointv3.ClusterLoadAssignment{ClusterName: c.GetName()}
		}
		ct.claWire = cWire // part of the cluster
	case clusterv3.Cluster_ORIGINAL_DST:
		// Envoy's rules: the cluster provides the load balancer, and its
		// hosts are the connections' original destinations, not a list.
		if c.GetLbPolicy() != clusterv3.Cluster_CLUSTER_PROVIDED {
			return nil, fmt.Errorf("lb_policy: an ORIGINAL_DST cluster must use CLUSTER_PROVIDED, not %s", c.GetLbPolicy())
		}
		if c.GetLoadAssignment() != nil {
			return nil, fmt.Errorf("load_assignment: an ORIGINAL_DST cluster takes no endpoints")
		}
	default:
		return nil, fmt.Errorf("type: %s is unsupported", c.GetType())
	}
	origDst := c.GetType() == clusterv3.Cluster_ORIGINAL_DST
	var lbc lbConfig
	var err error
	if !origDst {
		if lbc, err = parseLBConfig(c); err != nil {
			return nil, err
		}
	}
	if c.GetLoadBalancingPolicy() != nil {
		return nil, fmt.Errorf("load_balancing_policy: unsupported")
	}
	uo, err := upstream.ParseOptions(c, b.Secrets)
	if err != nil {
		return nil, err
	}
	svc, err := clusterService(c)
	if err != nil {
		return nil, err
	}
	outSvc := svc
	if svc == unknownService && (origDst || c.GetType() == clusterv3.Cluster_STATIC && len(cla.GetEndpoints()) == 0) {
		// Istio's PassthroughCluster, InboundPassthroughCluster and
		// BlackHoleCluster: the metrics name the cluster, so ALLOW_ANY
		// and REGISTRY_ONLY traffic is visible. On the source side, as
		// Istio's stats filter, destination_service_name is the cluster
		// and destination_service unknown (an HTTP request's Host, which
		// the request path sets: telemetry.Metrics.HostDst).
		ct.passthrough = true
		svc = serviceRef{host: ct.name, name: ct.name, namespace: telemetry.Unknown}
		outSvc = serviceRef{host: telemetry.Unknown, name: ct.name, namespace: telemetry.Unknown}
	}
	// The endpoints' labels name svc, the cluster's own outSvc: the
	// same but for a passthrough cluster, which has no endpoints.
	ct.labels = &dstLabels{m: b.Metrics, svc: outSvc}
	epLabels := ct.labels
	if svc != outSvc {
		epLabels = &dstLabels{m: b.Metrics, svc: svc}
	}
	ct.b = b

	ct.stats = b.Stats.ref(ct.name)
	if prev != nil && sameResource(prev.cfgWire, cWire, prev.cfg, c) {
		ct.cell = prev.cell
		ct.cell.handTo(ct)
	} else if ct.buildsFromWire(lbc, epLabels) && len(uo.Broken()) == 0 {
		// May wait for its first use (stateCell), as its picker may
		// (mayWait): checked now, built from cWire then.
		if _, err := newBreaker(c, uo.HTTP2(), ct.stats); err != nil {
			return nil, err
		}
		if _, err := parseOutlierDetection(c); err != nil {
			return nil, err
		}
		ct.cell = &stateCell{from: ct}
	} else {
		st, err := b.stateFor(c, uo, ct.stats)
		if err != nil {
			return nil, err
		}
		ct.cell = builtCell(st)
		if origDst {
			if st.orig, err = newOriginalDst(c); err != nil {
				return nil, err
			}
		}
		if t := c.GetType(); t == clusterv3.Cluster_STRICT_DNS || t == clusterv3.Cluster_LOGICAL_DNS {
			if err := b.newDNSHosts(ct, cla, epLabels, lbc, prev); err != nil {
				return nil, err
			}
		}
	}
	if ct.eds != "" {
		if prev != nil && ct.cell == prev.cell && !prev.claWire.IsZero() && !ct.claWire.IsZero() &&
			prev.claWire.Equal(ct.claWire) {
			ct.picker, ct.lazy = prev.picker, prev.lazy // carried over undecoded
			return ct, nil
		}
		if cla, err = eps.Assignment(ct.eds); err != nil {
			return nil, err
		}
	}
	ct.cla = cla
	if st := ct.cell.built(); st != nil && st.dns != nil {
		return ct, nil // the hosts are the state's, resolved (dnscluster.go)
	}
	if prev != nil && ct.cell == prev.cell && sameResource(prev.claWire, ct.claWire, prev.cla, cla) {
		ct.cla, ct.picker, ct.lazy = prev.cla, prev.picker, prev.lazy
		return ct, nil
	}
	localityWeighted := c.GetCommonLbConfig().GetLocalityWeightedLbConfig() != nil
	if ct.mayWait(lbc, epLabels, prev) {
		// Checked now, as any other, and built at the first pick.
		levels, err := translateEndpoints(cla, epLabels, localityWeighted)
		if err != nil {
			return nil, err
		}
		ct.lazy = &lazyPicker{from: ct}
		for _, eps := range levels {
			for _, e := range eps {
				ct.lazy.total++
				if e.healthy {
					ct.lazy.healthy++
				}
			}
		}
		return ct, nil
	}
	ct.picker, err = b.newPicker(ct.cell.get(), cla, epLabels, lbc, localityWeighted)
	if err != nil {
		return nil, err
	}
	return ct, nil
}

// mayWait reports whether c, being built on top of prev (may be nil),
// may build its picker at its first pick rather than now: an EDS
// cluster built from encodings (which it keeps to build from), whose
// state has carried no request (no pool: no connection to keep or
// close) and had no picker built (outlier detection tracks none of its
// endpoints), without slow start (whose window counts from when an
// endpoint arrives). A sidecar of a large mesh holds thousands of
// clusters that never carry one of its requests; their endpoints,
// balancers and pickers were a tenth of its heap.
func (c *Cluster) mayWait(lbc lbConfig, epLabels *dstLabels, prev *Cluster) bool {
	if !c.buildsFromWire(lbc, epLabels) || c.claWire.IsZero() {
		return false
	}
	if st := c.cell.built(); st != nil && st.up.Built() != nil {
		return false
	}
	if prev != nil && prev.cell == c.cell && (prev.picker != nil || prev.lazy != nil && prev.lazy.built()) {
		return false
	}
	return true
}

// buildsFromWire reports whether what c builds later (its state, its
// picker) can be built from the encodings it keeps, as now: an EDS
// cluster built from encodings, its endpoints labelled as the cluster
// (not a passthrough one), without slow start (whose window counts
// from when an endpoint arrives).
func (c *Cluster) buildsFromWire(lbc lbConfig, epLabels *dstLabels) bool {
	return c.eds != "" && !c.cfgWire.IsZero() && epLabels == c.labels && lbc.slowStart == nil
}

// newPicker translates the endpoints of cla into a picker whose
// endpoints have their connections, outlier and slow start state from st.
func (b *Builder) newPicker(st *state, cla *endpointv3.ClusterLoadAssignment, labels *dstLabels, lbc lbConfig, localityWeighted bool) (*picker, error) {
	levels, err := translateEndpoints(cla, labels, localityWeighted)
	if err != nil {
		return nil, err
	}
	p := buildPicker(levels, lbc, &st.next, overprovisioning(cla))
	pool := st.up.Built() // nil until the cluster's first request
	for _, ep := range p.endpoints {
		ep.up, ep.sock = &st.up, st.up.Socket(ep.md) // its transport socket: TLS or plaintext
		ep.md = nil
		if pool != nil {
			ep.conns.Store(pool.EndpointIn(ep.addr, ep.sock))
		}
	}
	st.outlier.attach(p.endpoints)
	st.warm.attach(p.endpoints, lbc.slowStart)
	return p, nil
}

// newDNSHosts gives the new state of ct, a STRICT_DNS or LOGICAL_DNS
// cluster, its host set: checked, seeded with the last good addresses of
// prev's when it resolved names too, its picker built from them.
func (b *Builder) newDNSHosts(ct *Cluster, cla *endpointv3.ClusterLoadAssignment, labels *dstLabels, lbc lbConfig, prev *Cluster) error {
	localityWeighted := ct.cfg.GetCommonLbConfig().GetLocalityWeightedLbConfig() != nil
	// The endpoints as written (names included) must translate: errors
	// name their fields, as for any other cluster.
	if _, err := translateEndpoints(cla, labels, localityWeighted); err != nil {
		return err
	}
	r := b.Resolver
	if r == nil {
		r = SystemResolver{}
	}
	log := b.Logger
	if log == nil {
		log = slog.Default()
	}
	d, err := newDNSHosts(ct.cfg, cla, r, log, b.Stats.forDNS(ct.name))
	if err != nil {
		return err
	}
	st := ct.cell.built() // built at once (build)
	d.build = func(a *endpointv3.ClusterLoadAssignment) (*picker, error) {
		return b.newPicker(st, a, labels, lbc, localityWeighted)
	}
	d.retain = st.retain
	if pst := prev.cellState(); pst != nil {
		d.seed(pst.dns)
	}
	d.mu.Lock()
	err = d.rebuild()
	d.mu.Unlock()
	if err != nil {
		return err
	}
	st.dns = d
	return nil
}

type serviceRef struct{ host, name, namespace string }

var unknownService = serviceRef{host: telemetry.Unknown, name: telemetry.Unknown, namespace: telemetry.Unknown}

// clusterService reads filter_metadata.istio.services[0].
func clusterService(c *clusterv3.Cluster) (serviceRef, error) {
	md := c.GetMetadata().GetFilterMetadata()[contract.FilterMetadataIstio]
	if md == nil {
		return unknownService, nil
	}
	svcs := md.GetFields()[contract.MetaClusterServices]
	if svcs == nil || len(svcs.GetListValue().GetValues()) == 0 {
		return unknownService, nil
	}
	f := svcs.GetListValue().GetValues()[0].GetStructValue().GetFields()
	if f == nil {
		return serviceRef{}, fmt.Errorf("metadata.filter_metadata.istio.services[0]: want a struct")
	}
	return serviceRef{
		host:      telemetry.OrUnknown(f["host"].GetStringValue()),
		name:      telemetry.OrUnknown(f["name"].GetStringValue()),
		namespace: telemetry.OrUnknown(f["namespace"].GetStringValue()),
	}, nil
}

// endpointKey is the key endpoints and their outlier state are known by:
// host:port of a socket address.
func endpointKey(host string, port uint32) string {
	return net.JoinHostPort(host, strconv.FormatUint(uint64(port), 10))
}

// sameResource reports whether a resource is unchanged: by its encodings
// when both sides have them, else by the messages (a side built without
// encodings keeps its messages).
func sameResource[M proto.Message](prevWire, wire xdswire.Packed, prev, m M) bool {
	switch {
	case !prevWire.IsZero() && !wire.IsZero():
		return prevWire.Equal(wire)
	case !prevWire.IsZero() || !wire.IsZero():
		return false
	}
	return xdswire.Equal(prev, m)
}
