package cluster

import (
	"log/slog"
	"sync"
	"sync/atomic"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"weft.dev/weft/internal/proxy/upstream"
)

// lazyPicker is the picker of a cluster that has not been picked from
// yet (Cluster.mayWait): built at the first pick from the encodings of
// the Cluster that made it, which were checked when they arrived. It
// is shared by the Clusters that carry it over (same state, same
// assignment), so it is built once.
type lazyPicker struct {
	p  atomic.Pointer[picker]
	mu sync.Mutex // building
	// from is the Cluster whose encodings, labels and state it is built
	// with; nil once built.
	from *Cluster
	// total and healthy are the membership gauges until it is built:
	// the endpoints as checked, and those EDS says are healthy (none can
	// be ejected before a request).
	total, healthy int
}

// built reports whether the picker has been built.
func (l *lazyPicker) built() bool { return l.p.Load() != nil }

// get returns the picker, building it at the first call. Lock-free once
// built.
func (l *lazyPicker) get() *picker {
	if p := l.p.Load(); p != nil {
		return p
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if p := l.p.Load(); p != nil {
		return p
	}
	p, err := l.from.buildPicker()
	if err != nil {
		// The same bytes were checked when they arrived.
		log := l.from.b.Logger
		if log == nil {
			log = slog.Default()
		}
		log.Error("cluster endpoints could not be built", "cluster", l.from.name, "error", err)
		p = emptyPicker
	}
	l.p.Store(p)
	l.from = nil
	return p
}

// membership is the membership gauges: from the picker once built.
func (l *lazyPicker) membership() (total, healthy int, ok bool) {
	if l.built() {
		return 0, 0, false
	}
	return l.total, l.healthy, true
}

// buildPicker builds c's picker from its encodings, as build would have.
func (c *Cluster) buildPicker() (*picker, error) {
	cfg := &clusterv3.Cluster{}
	if err := c.cfgWire.Unmarshal(cfg); err != nil {
		return nil, err
	}
	lbc, err := parseLBConfig(cfg)
	if err != nil {
		return nil, err
	}
	cla := &endpointv3.ClusterLoadAssignment{}
	if err := c.claWire.Unmarshal(cla); err != nil {
		return nil, err
	}
	return c.b.newPicker(c.cell.get(), cla, c.labels, lbc, cfg.GetCommonLbConfig().GetLocalityWeightedLbConfig() != nil)
}

// stateCell holds a cluster's state — connection pool, circuit breaker,
// outlier detection — and is shared by the Clusters that carry that
// state over (built on an unchanged Cluster resource). A cluster that
// may wait for its first pick (Cluster.mayWait) waits for its state too:
// the cell builds it at the first use, from the encoding of the Cluster
// it was handed (from), checked when it arrived. A sidecar of a large mesh
// holds thousands of clusters that never carry one of its requests; their
// states were 250 bytes each.
type stateCell struct {
	p  atomic.Pointer[state]
	mu sync.Mutex // building, closing
	// from builds the state; nil once built (or for a cell built at once).
	from *Cluster
	// closed: CloseIdle ran before the state was built, so a state built
	// later (a request still in flight on a retired cluster) is closed at
	// once, as a pool built after its CloseIdle is.
	closed bool
}

// builtCell is a cell holding st.
func builtCell(st *state) *stateCell {
	c := &stateCell{}
	c.p.Store(st)
	return c
}

// built is the state, or nil while it waits for its first use.
func (c *stateCell) built() *state { return c.p.Load() }

// get returns the state, building it at the first call. Lock-free once
// built.
func (c *stateCell) get() *state {
	if st := c.p.Load(); st != nil {
		return st
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.p.Load(); st != nil {
		return st
	}
	from := c.from
	st, err := from.buildState()
	if err != nil {
		// The same bytes were checked when they arrived.
		log := from.b.Logger
		if log == nil {
			log = slog.Default()
		}
		log.Error("cluster state could not be built: Envoy's default circuit breakers, no TLS", "cluster", from.name, "error", err)
		st = newState(upstream.Options{})
		st.breaker, _ = newBreaker(&clusterv3.Cluster{}, false, from.stats)
	}
	if c.closed {
		st.closeIdle()
	}
	c.p.Store(st)
	c.from = nil
	return st
}

// handTo makes ct, which carries the cell over, the Cluster it builds
// from, so the one it replaces is not kept for it.
func (c *stateCell) handTo(ct *Cluster) {
	c.mu.Lock()
	if c.from != nil {
		c.from = ct
	}
	c.mu.Unlock()
}

// closeIdle closes the state's idle connections and stops what runs for
// it (Cluster.CloseIdle); a state not built yet is closed when it is.
func (c *stateCell) closeIdle() {
	c.mu.Lock()
	st := c.p.Load()
	if st == nil {
		c.closed = true
	}
	c.mu.Unlock()
	if st != nil {
		st.closeIdle()
	}
}

// buildState builds c's state from its encoding, as build would have.
func (c *Cluster) buildState() (*state, error) {
	cfg := &clusterv3.Cluster{}
	if err := c.cfgWire.Unmarshal(cfg); err != nil {
		return nil, err
	}
	uo, err := upstream.ParseOptions(cfg, c.b.Secrets)
	if err != nil {
		return nil, err
	}
	return c.b.stateFor(cfg, uo, c.stats)
}
