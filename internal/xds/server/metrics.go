package server

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the server's counters. Each has an atomic twin where tests
// or status pages read it directly.
//
// Besides Weft's own (weft_xds_*), the server exports istiod's names where
// istiod has the metric, so Istio's dashboards and alerts work unchanged:
// pilot_xds (open xDS connections), pilot_xds_pushes{type} (responses
// sent, by lds, rds, cds, eds), pilot_total_xds_rejects{type} (responses
// proxies refused) and pilot_proxy_convergence_time (seconds from a mesh
// change reaching the server to a proxy ACKing every type it changed).
type metrics struct {
	pushRounds   countingCounter
	proxyPushes  prometheus.Counter
	updates      prometheus.Counter
	nacks        prometheus.Counter
	errors       prometheus.Counter
	proxies      prometheus.Gauge
	streams      prometheus.Gauge // weft_xds_streams, mirrored in pilot_xds
	pushDuration prometheus.Histogram

	pilotXDS    prometheus.Gauge
	xdsPushes   *prometheus.CounterVec // pilot_xds_pushes{type}
	xdsRejects  *prometheus.CounterVec // pilot_total_xds_rejects{type}
	convergence prometheus.Histogram   // pilot_proxy_convergence_time
	// pushesByType and rejectsByType are the children of the four
	// types, so counting one takes no map lookup in the vector.
	pushesByType, rejectsByType map[string]prometheus.Counter
	// activity counts responses sent, snapshots received and push
	// rounds: it moves while the server works (Server.Activity).
	activity atomic.Uint64
}

// metricType is istiod's short name of an xDS type in the type label of
// its metrics (v3.GetMetricType): lds, rds, cds, eds, sds; vhds (which istiod
// does not serve); else the type URL.
func metricType(typeURL string) string {
	switch typeURL {
	case resource.ListenerType:
		return "lds"
	case resource.RouteType:
		return "rds"
	case resource.ClusterType:
		return "cds"
	case resource.EndpointType:
		return "eds"
	case resource.VirtualHostType:
		return "vhds"
	case resource.SecretType:
		return "sds"
	}
	return typeURL
}

// pushed counts a response of typeURL about to be sent (pilot_xds_pushes).
func (m *metrics) pushed(typeURL string) {
	m.activity.Add(1)
	if c, ok := m.pushesByType[typeURL]; ok {
		c.Inc()
		return
	}
	m.xdsPushes.WithLabelValues(metricType(typeURL)).Inc()
}

// rejected counts a response of typeURL a proxy refused
// (pilot_total_xds_rejects).
func (m *metrics) rejected(typeURL string) {
	if c, ok := m.rejectsByType[typeURL]; ok {
		c.Inc()
		return
	}
	m.xdsRejects.WithLabelValues(metricType(typeURL)).Inc()
}

// mirroredGauge is a gauge whose changes are also made to twin: the
// same quantity under a second name.
type mirroredGauge struct {
	prometheus.Gauge
	twin prometheus.Gauge
}

func (g mirroredGauge) Inc()          { g.Gauge.Inc(); g.twin.Inc() }
func (g mirroredGauge) Dec()          { g.Gauge.Dec(); g.twin.Dec() }
func (g mirroredGauge) Set(v float64) { g.Gauge.Set(v); g.twin.Set(v) }

type countingCounter struct {
	prometheus.Counter
	n *atomic.Uint64
}

func (c countingCounter) Add(v uint64) {
	c.n.Add(v)
	c.Counter.Add(float64(v))
}

func (c countingCounter) Load() uint64 { return c.n.Load() }

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		pushRounds: countingCounter{n: new(atomic.Uint64), Counter: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_xds_pushes_total", Help: "Debounced push rounds: each regenerates every connected proxy.",
		})},
		proxyPushes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_xds_proxy_pushes_total", Help: "Per-proxy snapshots written because some resource changed.",
		}),
		updates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_xds_updates_total", Help: "Mesh snapshots handed to the server (before debouncing).",
		}),
		nacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_xds_nacks_total", Help: "Responses a proxy rejected.",
		}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weft_xds_push_errors_total", Help: "Per-proxy pushes that failed to build or store.",
		}),
		proxies: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_xds_connected_proxies", Help: "Distinct nodes with at least one open stream.",
		}),
		pilotXDS: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "pilot_xds", Help: "Open xDS connections (istiod's name; the same as weft_xds_streams).",
		}),
		xdsPushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pilot_xds_pushes", Help: "xDS responses sent to proxies, by type (lds, rds, cds, eds), as istiod counts them.",
		}, []string{"type"}),
		xdsRejects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pilot_total_xds_rejects", Help: "xDS responses proxies rejected (NACKed), by type (lds, rds, cds, eds).",
		}, []string{"type"}),
		convergence: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "pilot_proxy_convergence_time",
			Help:    "Seconds from a mesh change reaching the xDS server to a proxy ACKing every type the change altered for it.",
			Buckets: []float64{.1, .5, 1, 3, 5, 10, 20, 30}, // istiod's
		}),
		pushDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "weft_xds_push_duration_seconds", Help: "Time to regenerate every connected proxy in one push round.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8),
		}),
	}
	m.streams = mirroredGauge{Gauge: prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "weft_xds_streams", Help: "Open xDS streams.",
	}), twin: m.pilotXDS}
	m.pushesByType, m.rejectsByType = map[string]prometheus.Counter{}, map[string]prometheus.Counter{}
	for _, t := range typeOrder {
		m.pushesByType[t] = m.xdsPushes.WithLabelValues(metricType(t))
		m.rejectsByType[t] = m.xdsRejects.WithLabelValues(metricType(t))
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.pushRounds, m.proxyPushes, m.updates, m.nacks, m.errors, m.proxies,
			m.streams.(mirroredGauge).Gauge, m.pushDuration, m.pilotXDS, m.xdsPushes, m.xdsRejects, m.convergence} {
			if err := reg.Register(c); err != nil {
				var are prometheus.AlreadyRegisteredError
				if !errors.As(err, &are) {
					panic(fmt.Sprintf("xds server: registering metrics: %v", err))
				}
			}
		}
	}
	return m
}
