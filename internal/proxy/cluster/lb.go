package cluster

import (
	"math/rand/v2"
	"slices"
	"sort"
	"sync/atomic"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"weft.dev/weft/internal/proxy/telemetry"
	"weft.dev/weft/internal/proxy/upstream"
	"weft.dev/weft/internal/xds/contract"
)

// maxSchedule bounds the length of a weighted round-robin schedule; larger
// weight sums are scaled down proportionally.
const maxSchedule = 1 << 16

// defaultOverprovisioning is Envoy's overprovisioning factor (1.4) in
// percent: a priority whose healthy share times the factor reaches 100 keeps
// all the traffic.
const defaultOverprovisioning = 140

// Endpoint is one upstream host of a cluster. Immutable but for its
// in-flight counter and outlier state; safe for concurrent use.
type Endpoint struct {
	addr    string // host:port, dialled and used as the request URL host
	weight  uint32
	healthy bool // EDS health_status HEALTHY or UNKNOWN
	// dst is the outbound destination metric labels, interned at the
	// first Dst from labels and workload: most endpoints of a large
	// mesh's sidecar never carry a request, and an interned set of
	// labels costs ~350 bytes where the two fields cost 24.
	dst      atomic.Pointer[telemetry.DstLabels]
	labels   *dstLabels // the cluster's service (nil for an original destination's host: dst is set when made)
	workload string     // the endpoint's istio workload metadata (contract.ParseWorkloadMetadata)
	// conns are the endpoint's connections in its transport socket
	// (sock) of the cluster's pool (up), looked up at first use
	// (Conns): a cluster's pool is built when it carries its first
	// request.
	conns atomic.Pointer[upstream.Conns]
	up    *upstream.Lazy
	sock  int
	md    *core.Metadata     // LbEndpoint metadata, until sock is set (Build)
	sec   telemetry.SecCache // security labels of requests over mutual TLS
	// active counts the requests in flight to this endpoint (LEAST_REQUEST):
	// BeginRequest and EndRequest around each attempt.
	active atomic.Int64
	warm   *warming    // slow start; nil when not warming (slowstart.go)
	od     *hostHealth // outlier detection state (outlier.go); nil when off
}

// Addr is the endpoint's host:port: what is dialled, and the host of the
// upstream request's URL.
func (e *Endpoint) Addr() string { return e.addr }

// Conns is the endpoint's connections (plaintext or TLS, as its
// transport socket says), created (and the cluster's pool built) at the
// first call. Lock-free once created.
func (e *Endpoint) Conns() *upstream.Conns {
	if c := e.conns.Load(); c != nil {
		return c
	}
	if e.up == nil {
		return nil
	}
	// The pool gives every caller the same Conns for the same address
	// and socket, so racing first calls agree.
	e.conns.CompareAndSwap(nil, e.up.Pool().EndpointIn(e.addr, e.sock))
	return e.conns.Load()
}

// SecCache is where the request path keeps the endpoint's security
// metric labels (source_principal, destination_principal).
func (e *Endpoint) SecCache() *telemetry.SecCache { return &e.sec }

// Dst labels a request sent to this endpoint from an outbound listener.
// Lock-free once interned, at the first call.
func (e *Endpoint) Dst() *telemetry.DstLabels {
	if d := e.dst.Load(); d != nil {
		return d
	}
	return e.internDst()
}

// dstLabels is what the endpoints of one translation share to intern
// their destination labels: the cluster's service and the metrics.
type dstLabels struct {
	m   *telemetry.Metrics
	svc serviceRef
}

// internDst interns the endpoint's destination labels; a racing call
// interns the same.
func (e *Endpoint) internDst() *telemetry.DstLabels {
	l := e.labels
	wl, ns, app, ver, clusterID := contract.ParseWorkloadMetadata(e.workload)
	d := l.m.InternDst(telemetry.DstLabels{Service: l.svc.host, ServiceName: l.svc.name, ServiceNamespace: l.svc.namespace,
		Workload: telemetry.OrUnknown(wl), WorkloadNamespace: telemetry.OrUnknown(ns), App: telemetry.OrUnknown(app), Version: telemetry.OrUnknown(ver),
		Cluster: clusterID}) // canonical service and revision: app (else workload) and version (else "latest"), by InternDst
	e.dst.Store(d)
	return d
}

// BeginRequest counts an attempt in flight to the endpoint, as
// LEAST_REQUEST balancing weighs endpoints; EndRequest ends it. Lock-free.
func (e *Endpoint) BeginRequest() { e.active.Add(1) }

// EndRequest ends an attempt counted by BeginRequest.
func (e *Endpoint) EndRequest() { e.active.Add(-1) }

// InFlight is the number of attempts begun and not yet ended.
func (e *Endpoint) InFlight() int64 { return e.active.Load() }

// available reports whether the endpoint may be picked: healthy per EDS
// and not ejected by outlier detection. Every policy asks this.
func (e *Endpoint) available() bool { return e.healthy && !e.od.ejected() }

// HashKey is the request hash a route's hash policies produced. OK is
// false when none produced a value (hashing balancers then pick at random,
// as Envoy does).
type HashKey struct {
	Hash uint64
	OK   bool
}

// balancer picks among the endpoints of one priority. Implementations are
// immutable (but for atomic counters) and safe for concurrent use; pick
// returns nil when no endpoint passes ok.
type balancer interface {
	pick(k HashKey, ok func(*Endpoint) bool) *Endpoint
}

// priorityLevel is one priority of a cluster: every endpoint (for the
// health share) and the balancer over the EDS-healthy ones.
type priorityLevel struct {
	all     []*Endpoint
	healthy []*Endpoint
	lb      balancer
}

// picker chooses an endpoint for a request: first a priority, by Envoy's
// priority load (the healthy share of each priority times the
// overprovisioning factor, spilling the rest to the next), then an endpoint
// within it with the cluster's lb_policy. Immutable; pick is safe for
// concurrent use and takes no lock.
type picker struct {
	endpoints     []*Endpoint // every endpoint of every priority
	levels        []*priorityLevel
	overprovision uint64 // percent
}

// buildPicker lays out the levels (byPrio in priority order, empty
// priorities removed by the caller) with one balancer each.
func buildPicker(byPrio [][]*Endpoint, cfg lbConfig, next *atomic.Uint64, overprovision uint64) *picker {
	p := &picker{overprovision: overprovision}
	for _, eps := range byPrio {
		lvl := &priorityLevel{all: eps}
		for _, e := range eps {
			if e.healthy {
				lvl.healthy = append(lvl.healthy, e)
			}
		}
		lvl.lb = cfg.newBalancer(lvl.healthy, next)
		p.levels = append(p.levels, lvl)
		p.endpoints = append(p.endpoints, eps...)
	}
	return p
}

// conns lists the connections of every endpoint, creating those not
// created yet (call it once the pool is built).
func (p *picker) conns() []*upstream.Conns {
	out := make([]*upstream.Conns, 0, len(p.endpoints))
	for _, e := range p.endpoints {
		if c := e.Conns(); c != nil {
			out = append(out, c)
		}
	}
	return out
}

// pick returns an endpoint for the request, or nil when no endpoint is
// available. exclude lists endpoints not to use (e.g. ones a retry already
// tried); they are avoided when another endpoint is available.
func (p *picker) pick(k HashKey, exclude ...*Endpoint) *Endpoint {
	return p.pickExcept(k, 0, exclude)
}

// pickExcept is pick with the levels in skip (bit i: level i) left out of
// the priority load, as a retry priority asks (retrypriority.go).
func (p *picker) pickExcept(k HashKey, skip uint64, exclude []*Endpoint) *Endpoint {
	ok := func(e *Endpoint) bool { return e.available() }
	if len(exclude) > 0 {
		ok = func(e *Endpoint) bool {
			for _, x := range exclude {
				if x == e {
					return false
				}
			}
			return e.available()
		}
	}
	if e := p.pickWith(k, ok, skip); e != nil || len(exclude) == 0 {
		return e
	}
	return p.pickWith(k, (*Endpoint).available, skip)
}

func (p *picker) pickWith(k HashKey, ok func(*Endpoint) bool, skip uint64) *Endpoint {
	switch len(p.levels) {
	case 0:
		return nil
	case 1:
		return p.levels[0].lb.pick(k, ok)
	}
	lvl := p.choosePriority(k, skip)
	if lvl < 0 {
		return nil
	}
	if e := p.levels[lvl].lb.pick(k, ok); e != nil {
		return e
	}
	// The chosen priority had nothing acceptable (e.g. all excluded): try
	// the others in order.
	for i, l := range p.levels {
		if i == lvl {
			continue
		}
		if e := l.lb.pick(k, ok); e != nil {
			return e
		}
	}
	return nil
}

// choosePriority computes Envoy's priority load from the current health of
// each level and picks one: by the request hash when there is one (so a key
// stays in its priority), else at random. -1 when no level has an
// available endpoint.
func (p *picker) choosePriority(k HashKey, skip uint64) int {
	var buf [8]uint64
	loads := p.priorityLoadsExcept(buf[:0], skip)
	if loads == nil {
		return -1
	}
	var x uint64
	if k.OK {
		x = k.Hash % 100
	} else {
		x = rand.Uint64N(100)
	}
	var acc uint64
	for i, l := range loads {
		acc += l
		if x < acc {
			return i
		}
	}
	for i := len(loads) - 1; i >= 0; i-- {
		if loads[i] > 0 {
			return i
		}
	}
	return -1
}

// priorityLoads is Envoy's per-priority load in percent (summing to 100),
// appended to buf: health_i = min(100, overprovision · available_i /
// total_i); each priority takes min(health_i, what is left); when the
// healths sum to less than 100 the loads are scaled up to 100. nil when
// nothing is available.
func (p *picker) priorityLoads(buf []uint64) []uint64 { return p.priorityLoadsExcept(buf, 0) }

// priorityLoadsExcept is priorityLoads with the levels in skip (bit i:
// level i) counted as having nothing available.
func (p *picker) priorityLoadsExcept(buf []uint64, skip uint64) []uint64 {
	health := buf
	var sum uint64
	for i, l := range p.levels {
		var h uint64
		if len(l.all) > 0 && (i >= 64 || skip&(1<<i) == 0) {
			var n uint64
			for _, e := range l.all {
				if e.available() {
					n++
				}
			}
			h = min(100, p.overprovision*n/uint64(len(l.all)))
			if n > 0 && h == 0 {
				h = 1
			}
		}
		health = append(health, h)
		sum += h
	}
	if sum == 0 {
		return nil
	}
	if sum < 100 {
		// Normalize: every priority keeps its share of what is healthy.
		var given uint64
		first := -1
		for i, h := range health {
			health[i] = h * 100 / sum
			given += health[i]
			if first < 0 && health[i] > 0 {
				first = i
			}
		}
		if first >= 0 { // the rounding remainder
			health[first] += 100 - given
		}
		return health
	}
	left := uint64(100)
	for i, h := range health {
		health[i] = min(h, left)
		left -= health[i]
	}
	return health
}

// roundRobin is a lock-free weighted round-robin balancer: an immutable
// schedule in which each endpoint appears in proportion to its weight,
// spread evenly (earliest-deadline-first order, like smooth weighted round
// robin), walked by an atomic counter that lives with the cluster so it
// survives endpoint updates.
type roundRobin struct {
	endpoints []*Endpoint
	schedule  []uint32 // indexes into endpoints; nil when all weights are equal
	next      *atomic.Uint64
}

var _ balancer = (*roundRobin)(nil)

func newRoundRobin(eps []*Endpoint, next *atomic.Uint64) *roundRobin {
	p := &roundRobin{endpoints: eps, next: next}
	if len(eps) < 2 {
		return p
	}
	equal := true
	for _, e := range eps[1:] {
		if e.weight != eps[0].weight {
			equal = false
			break
		}
	}
	if equal {
		return p
	}
	p.schedule = buildSchedule(eps)
	return p
}

func (p *roundRobin) pick(_ HashKey, ok func(*Endpoint) bool) *Endpoint {
	n := len(p.endpoints)
	switch n {
	case 0:
		return nil
	case 1:
		if e := p.endpoints[0]; ok(e) {
			return e
		}
		return nil
	}
	size := uint64(n)
	if p.schedule != nil {
		size = uint64(len(p.schedule))
	}
	// Skip unavailable endpoints; bounded so a fully ejected set ends.
	for range min(size, uint64(n)+64) {
		i := p.next.Add(1) % size
		var e *Endpoint
		if p.schedule != nil {
			e = p.endpoints[p.schedule[i]]
		} else {
			e = p.endpoints[i]
		}
		if ok(e) && e.accept() {
			return e
		}
	}
	for _, e := range p.endpoints {
		if ok(e) {
			return e
		}
	}
	return nil
}

// randomLB is Envoy's RANDOM: a random available endpoint, weighted when
// the weights differ (locality weights fold into them).
type randomLB struct {
	endpoints []*Endpoint
	cum       []uint64 // cumulative weights; nil when all are equal
}

var _ balancer = (*randomLB)(nil)

func newRandom(eps []*Endpoint) *randomLB {
	p := &randomLB{endpoints: eps}
	for _, e := range eps {
		if e.weight != eps[0].weight {
			var acc uint64
			for _, e := range eps {
				acc += uint64(max(e.weight, 1))
				p.cum = append(p.cum, acc)
			}
			break
		}
	}
	return p
}

func (p *randomLB) pick(_ HashKey, ok func(*Endpoint) bool) *Endpoint {
	if p.cum == nil {
		return randomAvailable(p.endpoints, ok)
	}
	x := rand.Uint64N(p.cum[len(p.cum)-1])
	i, _ := slices.BinarySearch(p.cum, x+1)
	if e := p.endpoints[i]; ok(e) {
		return e
	}
	return randomAvailable(p.endpoints, ok)
}

// randomAvailable returns a random endpoint that passes ok, or nil.
func randomAvailable(eps []*Endpoint, ok func(*Endpoint) bool) *Endpoint {
	n := len(eps)
	if n == 0 {
		return nil
	}
	start := rand.IntN(n)
	for i := range n {
		if e := eps[(start+i)%n]; ok(e) {
			return e
		}
	}
	return nil
}

// buildSchedule lays out sum(weights) slots, interleaved so that no endpoint
// gets a burst: nginx's smooth weighted round robin when that is cheap
// (O(total·n)), else earliest-deadline-first where slot k of an endpoint with
// weight w has the virtual deadline (k+0.5)/w.
func buildSchedule(eps []*Endpoint) []uint32 {
	weights := make([]uint64, len(eps))
	var total uint64
	for i, e := range eps {
		weights[i] = uint64(max(e.weight, 1))
		total += weights[i]
	}
	if total > maxSchedule {
		scaled := uint64(0)
		for i := range weights {
			weights[i] = max(weights[i]*maxSchedule/total, 1)
			scaled += weights[i]
		}
		total = scaled
	}
	if total*uint64(len(weights)) <= 1<<22 {
		return smoothSchedule(weights, total)
	}
	type slot struct {
		deadline float64
		idx      uint32
	}
	slots := make([]slot, 0, total)
	for i, w := range weights {
		for k := uint64(0); k < w; k++ {
			slots = append(slots, slot{(float64(k) + 0.5) / float64(w), uint32(i)})
		}
	}
	sort.SliceStable(slots, func(a, b int) bool { return slots[a].deadline < slots[b].deadline })
	out := make([]uint32, len(slots))
	for i, s := range slots {
		out[i] = s.idx
	}
	return out
}

// smoothSchedule runs nginx's smooth weighted round robin for one full cycle.
func smoothSchedule(weights []uint64, total uint64) []uint32 {
	cur := make([]int64, len(weights))
	out := make([]uint32, total)
	for s := range out {
		best := 0
		for i, w := range weights {
			cur[i] += int64(w)
			if cur[i] > cur[best] {
				best = i
			}
		}
		cur[best] -= int64(total)
		out[s] = uint32(best)
	}
	return out
}
