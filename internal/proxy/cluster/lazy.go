package cluster

import (
	"log/slog"
	"sync"
	"sync/atomic"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
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
	return c.b.newPicker(c.state, cla, c.labels, lbc, cfg.GetCommonLbConfig().GetLocalityWeightedLbConfig() != nil)
}
