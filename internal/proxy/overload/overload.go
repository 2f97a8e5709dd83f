// Package overload is the proxy's overload manager, after Envoy's: it
// samples one resource — the memory the Go runtime holds for heap objects
// and goroutine stacks, against a limit — and turns two overload actions
// on while the pressure is over their thresholds and off once it is
// back under them: reject_incoming_connections (new connections are
// closed at once) and disable_http_keepalive (every response closes its
// connection). The data plane reads the actions on its accept and
// request paths; they cost one atomic load each.
package overload

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"runtime/metrics"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults for zero Options fields.
const (
	// DefaultRejectConnectionsAt is the pressure (memory used over the
	// limit) at which new connections are rejected: at 90 % there is
	// still room for the connections already held to finish what they
	// started.
	DefaultRejectConnectionsAt = 0.90
	// DefaultDisableKeepaliveAt is the pressure at which every response
	// closes its connection, so clients spread their next requests to
	// other replicas and the proxy's connections (and their buffers)
	// fall away.
	DefaultDisableKeepaliveAt = 0.95
	// DefaultInterval is how often memory is sampled: a runtime/metrics
	// read of two values, a few microseconds.
	DefaultInterval = 250 * time.Millisecond
)

// Envoy's names for the resource monitor and the actions, as its
// Prometheus endpoint spells the gauges overload.<name>.pressure and
// overload.<name>.active.
const (
	monitorFixedHeap         = "envoy.resource_monitors.fixed_heap"
	actionRejectConnections  = "envoy.overload_actions.reject_incoming_connections"
	actionDisableKeepalive   = "envoy.overload_actions.disable_http_keepalive"
	promOverloadPrefix       = "envoy_overload_"
	runtimeHeapObjectsMetric = "/memory/classes/heap/objects:bytes"
	runtimeStacksMetric      = "/memory/classes/heap/stacks:bytes"
)

// Options configures a Manager.
type Options struct {
	// MemoryLimit is the memory, in bytes, the pressure is measured
	// against; 0 turns the guard off (no action is ever active).
	MemoryLimit uint64
	// RejectConnectionsAt and DisableKeepaliveAt are the pressures (0 to
	// 1) at which the actions turn on; 0 means the defaults.
	RejectConnectionsAt, DisableKeepaliveAt float64
	// Interval is the sampling period; 0 means DefaultInterval.
	Interval time.Duration
	// Registerer receives the gauges; nil: a private registry.
	Registerer prometheus.Registerer
	Logger     *slog.Logger // nil: discard
}

// Manager turns the overload actions on and off. Its methods may be
// called from any goroutine; Run once.
type Manager struct {
	opts             Options
	log              *slog.Logger
	samples          []metrics.Sample // owned by Run's goroutine
	pressure         atomic.Uint64    // math.Float64bits of the last pressure
	rejectConns      atomic.Bool
	disableKeepalive atomic.Bool
}

// New checks opts and registers the gauges
// envoy_overload_envoy_resource_monitors_fixed_heap_pressure and
// envoy_overload_<action>_active.
func New(opts Options) (*Manager, error) {
	if opts.RejectConnectionsAt == 0 {
		opts.RejectConnectionsAt = DefaultRejectConnectionsAt
	}
	if opts.DisableKeepaliveAt == 0 {
		opts.DisableKeepaliveAt = DefaultDisableKeepaliveAt
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"RejectConnectionsAt", opts.RejectConnectionsAt}, {"DisableKeepaliveAt", opts.DisableKeepaliveAt}} {
		if !(f.v > 0 && f.v <= 1) {
			return nil, fmt.Errorf("overload: %s %v: want a fraction in (0, 1]", f.name, f.v)
		}
	}
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Registerer == nil {
		opts.Registerer = prometheus.NewRegistry()
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	m := &Manager{opts: opts, log: opts.Logger.With("component", "overload"),
		samples: []metrics.Sample{{Name: runtimeHeapObjectsMetric}, {Name: runtimeStacksMetric}}}
	active := func(b *atomic.Bool) func() float64 {
		return func() float64 {
			if b.Load() {
				return 1
			}
			return 0
		}
	}
	for _, g := range []struct {
		name, help string
		f          func() float64
	}{
		{promName(monitorFixedHeap, "pressure"), "Memory held for Go heap objects and goroutine stacks over the overload memory limit (0 when the guard is off).",
			func() float64 { return math.Float64frombits(m.pressure.Load()) }},
		{promName(actionRejectConnections, "active"), "1 while new connections are closed at once because memory is over the reject threshold.", active(&m.rejectConns)},
		{promName(actionDisableKeepalive, "active"), "1 while every response closes its connection because memory is over the keep-alive threshold.", active(&m.disableKeepalive)},
	} {
		if err := opts.Registerer.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: g.name, Help: g.help}, g.f)); err != nil {
			return nil, fmt.Errorf("overload: metrics: %w", err)
		}
	}
	return m, nil
}

// promName is Envoy's stat overload.<name>.<stat> as its Prometheus
// endpoint names it.
func promName(name, stat string) string {
	b := []byte(promOverloadPrefix + name + "_" + stat)
	for i, c := range b {
		if c == '.' {
			b[i] = '_'
		}
	}
	return string(b)
}

// Run samples memory every Interval until ctx ends; with no MemoryLimit
// it returns at once. The actions are all off when it returns.
func (m *Manager) Run(ctx context.Context) {
	if m.opts.MemoryLimit == 0 {
		return
	}
	defer m.update(0)
	m.log.Info("overload guard on", "memory_limit", m.opts.MemoryLimit,
		"reject_connections_at", m.opts.RejectConnectionsAt, "disable_keepalive_at", m.opts.DisableKeepaliveAt)
	t := time.NewTicker(m.opts.Interval)
	defer t.Stop()
	for {
		m.update(m.used())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// used is the memory the runtime holds for heap objects (live, and dead
// ones not yet swept) and goroutine stacks.
func (m *Manager) used() uint64 {
	metrics.Read(m.samples)
	var n uint64
	for _, s := range m.samples {
		if s.Value.Kind() == metrics.KindUint64 {
			n += s.Value.Uint64()
		}
	}
	return n
}

// update sets the pressure from used bytes and the actions from it.
func (m *Manager) update(used uint64) {
	p := 0.0
	if m.opts.MemoryLimit > 0 {
		p = float64(used) / float64(m.opts.MemoryLimit)
	}
	m.pressure.Store(math.Float64bits(p))
	for _, a := range []struct {
		name string
		b    *atomic.Bool
		at   float64
	}{{actionRejectConnections, &m.rejectConns, m.opts.RejectConnectionsAt}, {actionDisableKeepalive, &m.disableKeepalive, m.opts.DisableKeepaliveAt}} {
		on := used > 0 && p >= a.at
		if a.b.Swap(on) != on {
			if on {
				m.log.Warn("overload action on", "action", a.name, "pressure", p, "threshold", a.at, "used_bytes", used, "limit_bytes", m.opts.MemoryLimit)
			} else {
				m.log.Info("overload action off", "action", a.name, "pressure", p, "threshold", a.at)
			}
		}
	}
}

// RejectIncomingConnections reports whether new connections are to be
// closed at once. Lock-free; nil-safe (false).
func (m *Manager) RejectIncomingConnections() bool { return m != nil && m.rejectConns.Load() }

// DisableHTTPKeepalive reports whether responses are to close their
// connections. Lock-free; nil-safe (false).
func (m *Manager) DisableHTTPKeepalive() bool { return m != nil && m.disableKeepalive.Load() }
