package cluster

import (
	"math"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Counter is a cluster statistic that only goes up, by whole requests,
// connections or ejections. The zero value is ready; it must not be
// copied. Exported by the StatVecs collector.
type Counter struct{ n atomic.Uint64 }

// Inc adds one.
func (c *Counter) Inc() { c.n.Add(1) }

// Value is the count so far.
func (c *Counter) Value() float64 { return float64(c.n.Load()) }

// Gauge is a cluster statistic that goes up and down. The zero value is
// ready; it must not be copied. Exported by the StatVecs collector.
type Gauge struct{ bits atomic.Uint64 }

// Set sets the gauge to v.
func (g *Gauge) Set(v float64) { g.bits.Store(math.Float64bits(v)) }

// Add adds v (which may be negative).
func (g *Gauge) Add(v float64) {
	for {
		old := g.bits.Load()
		if g.bits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			return
		}
	}
}

// Sub subtracts v.
func (g *Gauge) Sub(v float64) { g.Add(-v) }

// Inc adds one.
func (g *Gauge) Inc() { g.Add(1) }

// Dec subtracts one.
func (g *Gauge) Dec() { g.Add(-1) }

// Value is the gauge's value.
func (g *Gauge) Value() float64 { return math.Float64frombits(g.bits.Load()) }

// histogram is a child of a HistogramVec: an Observer that is also the
// Metric a collector sends.
type histogram interface {
	prometheus.Observer
	prometheus.Metric
}

// lazyHistogram is a cluster's histogram, whose buckets are allocated at
// its first observation: most clusters of a large mesh are never used by
// a given sidecar. Safe for concurrent use.
type lazyHistogram struct {
	vec  *prometheus.HistogramVec
	name string
	h    atomic.Pointer[histogram]
}

// Observe records v.
func (l *lazyHistogram) Observe(v float64) {
	h := l.h.Load()
	if h == nil {
		// The vector returns the same child for the same name, so two
		// first observations at once share it.
		c := l.vec.WithLabelValues(l.name).(histogram)
		l.h.Store(&c)
		h = &c
	}
	(*h).Observe(v)
}
