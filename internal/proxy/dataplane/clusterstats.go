package dataplane

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"weft.dev/weft/internal/proxy/telemetry"
)

// Envoy's per-cluster statistics, exported as Envoy's Prometheus endpoint
// does (and so as Istio's sidecars show them): envoy_cluster_<stat> with the
// label envoy_cluster_name. Counters keep Envoy's names exactly (no _total
// suffix is added), so dashboards built for Envoy keep working.
//
// Stats belong to a cluster name, not to one version of the cluster: like
// Envoy's stat scopes they survive cluster updates.

const clusterNameLabel = "envoy_cluster_name"

// clusterStats is the counter set of one cluster. Every field is a
// prometheus child already bound to the cluster name, so recording is one
// atomic add. Safe for concurrent use; obtained with clusterStatVecs.stats.
type clusterStats struct {
	// Requests.
	rqTotal           prometheus.Counter // upstream_rq_total: attempts sent upstream (each retry counts)
	rqCompleted       prometheus.Counter // upstream_rq_completed: attempts that got a response
	rqTimeout         prometheus.Counter // upstream_rq_timeout: route timeout fired
	rqPerTryTimeout   prometheus.Counter // upstream_rq_per_try_timeout
	rqRetry           prometheus.Counter // upstream_rq_retry
	rqRetrySuccess    prometheus.Counter // upstream_rq_retry_success
	rqRetryOverflow   prometheus.Counter // upstream_rq_retry_overflow: retry refused by max_retries
	rqPendingTotal    prometheus.Counter // upstream_rq_pending_total: requests that waited for a connection
	rqPendingOverflow prometheus.Counter // upstream_rq_pending_overflow: rejected by max_pending_requests or max_requests (UO)
	rqActive          prometheus.Gauge   // upstream_rq_active
	rqPendingActive   prometheus.Gauge   // upstream_rq_pending_active
	// Connections.
	cxConnectFail prometheus.Counter // upstream_cx_connect_fail
	cxOverflow    prometheus.Counter // upstream_cx_overflow: max_connections was reached
	// Circuit breaker state (circuit_breakers.default.*_open): 1 while the
	// limit is reached.
	cbCxOpen        prometheus.Gauge
	cbRqPendingOpen prometheus.Gauge
	cbRqOpen        prometheus.Gauge
	cbRqRetryOpen   prometheus.Gauge
	// Outlier detection.
	odEjectionsActive        prometheus.Gauge   // outlier_detection_ejections_active
	odEjectionsTotal         prometheus.Counter // outlier_detection_ejections_total
	odEjectionsEnforcedTotal prometheus.Counter // outlier_detection_ejections_enforced_total
	odEjectionsOverflow      prometheus.Counter // outlier_detection_ejections_overflow: max_ejection_percent prevented one
	odEnforced5xx            prometheus.Counter // outlier_detection_ejections_enforced_consecutive_5xx
	odEnforcedGateway        prometheus.Counter // outlier_detection_ejections_enforced_consecutive_gateway_failure
	odEnforcedLocalOrigin    prometheus.Counter // outlier_detection_ejections_enforced_consecutive_local_origin_failure
	odDetected5xx            prometheus.Counter // outlier_detection_ejections_detected_consecutive_5xx
	odDetectedGateway        prometheus.Counter // outlier_detection_ejections_detected_consecutive_gateway_failure
	odDetectedLocalOrigin    prometheus.Counter // outlier_detection_ejections_detected_consecutive_local_origin_failure
}

// clusterStatVecs holds the families; one per registry.
type clusterStatVecs struct {
	counters map[string]*prometheus.CounterVec
	gauges   map[string]*prometheus.GaugeVec

	mu     sync.Mutex // translation only, never per request
	byName map[string]*clusterStats
}

var clusterCounterNames = []string{
	"upstream_rq_total", "upstream_rq_completed", "upstream_rq_timeout", "upstream_rq_per_try_timeout",
	"upstream_rq_retry", "upstream_rq_retry_success", "upstream_rq_retry_overflow",
	"upstream_rq_pending_total", "upstream_rq_pending_overflow",
	"upstream_cx_connect_fail", "upstream_cx_overflow",
	"outlier_detection_ejections_total", "outlier_detection_ejections_enforced_total",
	"outlier_detection_ejections_overflow",
	"outlier_detection_ejections_enforced_consecutive_5xx",
	"outlier_detection_ejections_enforced_consecutive_gateway_failure",
	"outlier_detection_ejections_enforced_consecutive_local_origin_failure",
	"outlier_detection_ejections_detected_consecutive_5xx",
	"outlier_detection_ejections_detected_consecutive_gateway_failure",
	"outlier_detection_ejections_detected_consecutive_local_origin_failure",
}

var clusterGaugeNames = []string{
	"upstream_rq_active", "upstream_rq_pending_active",
	"circuit_breakers_default_cx_open", "circuit_breakers_default_rq_pending_open",
	"circuit_breakers_default_rq_open", "circuit_breakers_default_rq_retry_open",
	"outlier_detection_ejections_active",
}

func newClusterStatVecs(reg prometheus.Registerer) (*clusterStatVecs, error) {
	v := &clusterStatVecs{
		counters: map[string]*prometheus.CounterVec{},
		gauges:   map[string]*prometheus.GaugeVec{},
		byName:   map[string]*clusterStats{},
	}
	for _, n := range clusterCounterNames {
		c, err := telemetry.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "envoy_cluster_" + n, Help: "Envoy cluster statistic " + n + ".",
		}, []string{clusterNameLabel}))
		if err != nil {
			return nil, err
		}
		v.counters[n] = c
	}
	for _, n := range clusterGaugeNames {
		g, err := telemetry.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "envoy_cluster_" + n, Help: "Envoy cluster statistic " + n + ".",
		}, []string{clusterNameLabel}))
		if err != nil {
			return nil, err
		}
		v.gauges[n] = g
	}
	return v, nil
}

// stats returns the counter set of the named cluster, creating it on first
// use. Called while translating, never per request.
func (v *clusterStatVecs) stats(name string) *clusterStats {
	v.mu.Lock()
	defer v.mu.Unlock()
	if s := v.byName[name]; s != nil {
		return s
	}
	c := func(n string) prometheus.Counter { return v.counters[n].WithLabelValues(name) }
	g := func(n string) prometheus.Gauge { return v.gauges[n].WithLabelValues(name) }
	s := &clusterStats{
		rqTotal:                  c("upstream_rq_total"),
		rqCompleted:              c("upstream_rq_completed"),
		rqTimeout:                c("upstream_rq_timeout"),
		rqPerTryTimeout:          c("upstream_rq_per_try_timeout"),
		rqRetry:                  c("upstream_rq_retry"),
		rqRetrySuccess:           c("upstream_rq_retry_success"),
		rqRetryOverflow:          c("upstream_rq_retry_overflow"),
		rqPendingTotal:           c("upstream_rq_pending_total"),
		rqPendingOverflow:        c("upstream_rq_pending_overflow"),
		rqActive:                 g("upstream_rq_active"),
		rqPendingActive:          g("upstream_rq_pending_active"),
		cxConnectFail:            c("upstream_cx_connect_fail"),
		cxOverflow:               c("upstream_cx_overflow"),
		cbCxOpen:                 g("circuit_breakers_default_cx_open"),
		cbRqPendingOpen:          g("circuit_breakers_default_rq_pending_open"),
		cbRqOpen:                 g("circuit_breakers_default_rq_open"),
		cbRqRetryOpen:            g("circuit_breakers_default_rq_retry_open"),
		odEjectionsActive:        g("outlier_detection_ejections_active"),
		odEjectionsTotal:         c("outlier_detection_ejections_total"),
		odEjectionsEnforcedTotal: c("outlier_detection_ejections_enforced_total"),
		odEjectionsOverflow:      c("outlier_detection_ejections_overflow"),
		odEnforced5xx:            c("outlier_detection_ejections_enforced_consecutive_5xx"),
		odEnforcedGateway:        c("outlier_detection_ejections_enforced_consecutive_gateway_failure"),
		odEnforcedLocalOrigin:    c("outlier_detection_ejections_enforced_consecutive_local_origin_failure"),
		odDetected5xx:            c("outlier_detection_ejections_detected_consecutive_5xx"),
		odDetectedGateway:        c("outlier_detection_ejections_detected_consecutive_gateway_failure"),
		odDetectedLocalOrigin:    c("outlier_detection_ejections_detected_consecutive_local_origin_failure"),
	}
	v.byName[name] = s
	return s
}
