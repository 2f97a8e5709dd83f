package server

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the server's counters. Each has an atomic twin where tests
// or status pages read it directly.
type metrics struct {
	pushRounds   countingCounter
	proxyPushes  prometheus.Counter
	updates      prometheus.Counter
	nacks        prometheus.Counter
	errors       prometheus.Counter
	proxies      prometheus.Gauge
	streams      prometheus.Gauge
	pushDuration prometheus.Histogram
}

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
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "weft_xds_streams", Help: "Open xDS streams.",
		}),
		pushDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "weft_xds_push_duration_seconds", Help: "Time to regenerate every connected proxy in one push round.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 8),
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.pushRounds, m.proxyPushes, m.updates, m.nacks, m.errors, m.proxies, m.streams, m.pushDuration} {
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
