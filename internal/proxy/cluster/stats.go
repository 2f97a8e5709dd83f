package cluster

import (
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

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

// NameLabel is the label that names the cluster of an envoy_cluster_*
// statistic; other per-cluster metrics use it too.
const NameLabel = "envoy_cluster_name"

// Stats is the counter set of one cluster. Every field is a prometheus
// child already bound to the cluster name, so recording is one atomic add.
// Safe for concurrent use; obtained with StatVecs.For.
type Stats struct {
	// Requests.
	RqTotal           prometheus.Counter // upstream_rq_total: attempts sent upstream (each retry counts)
	RqCompleted       prometheus.Counter // upstream_rq_completed: attempts that got a response
	RqTimeout         prometheus.Counter // upstream_rq_timeout: route timeout fired
	RqPerTryTimeout   prometheus.Counter // upstream_rq_per_try_timeout
	RqRetry           prometheus.Counter // upstream_rq_retry
	RqRetrySuccess    prometheus.Counter // upstream_rq_retry_success
	RqRetryOverflow   prometheus.Counter // upstream_rq_retry_overflow: retry refused by max_retries
	RqPendingTotal    prometheus.Counter // upstream_rq_pending_total: requests that waited for a connection
	RqPendingOverflow prometheus.Counter // upstream_rq_pending_overflow: rejected by max_pending_requests or max_requests (UO)
	RqActive          prometheus.Gauge   // upstream_rq_active
	RqPendingActive   prometheus.Gauge   // upstream_rq_pending_active
	// Connections.
	CxTotal       prometheus.Counter // upstream_cx_total: connections opened (failed connects included)
	CxNoneHealthy prometheus.Counter // upstream_cx_none_healthy: no endpoint to connect to (UH; BlackHoleCluster)
	CxConnectFail prometheus.Counter // upstream_cx_connect_fail
	CxOverflow    prometheus.Counter // upstream_cx_overflow: max_connections was reached
	CxActive      prometheus.Gauge   // upstream_cx_active: connections open now (counted by the pool)
	// RqTime is upstream_rq_time: milliseconds from sending an attempt to
	// the end of its response (Envoy's default buckets).
	RqTime prometheus.Observer
	// Circuit breaker state (circuit_breakers.default.*_open): 1 while the
	// limit is reached.
	CbCxOpen        prometheus.Gauge
	CbRqPendingOpen prometheus.Gauge
	CbRqOpen        prometheus.Gauge
	CbRqRetryOpen   prometheus.Gauge
	// Outlier detection.
	OdEjectionsActive        prometheus.Gauge   // outlier_detection_ejections_active
	OdEjectionsTotal         prometheus.Counter // outlier_detection_ejections_total
	OdEjectionsEnforcedTotal prometheus.Counter // outlier_detection_ejections_enforced_total
	OdEjectionsOverflow      prometheus.Counter // outlier_detection_ejections_overflow: max_ejection_percent prevented one
	OdEnforced5xx            prometheus.Counter // outlier_detection_ejections_enforced_consecutive_5xx
	OdEnforcedGateway        prometheus.Counter // outlier_detection_ejections_enforced_consecutive_gateway_failure
	OdEnforcedLocalOrigin    prometheus.Counter // outlier_detection_ejections_enforced_consecutive_local_origin_failure
	OdDetected5xx            prometheus.Counter // outlier_detection_ejections_detected_consecutive_5xx
	OdDetectedGateway        prometheus.Counter // outlier_detection_ejections_detected_consecutive_gateway_failure
	OdDetectedLocalOrigin    prometheus.Counter // outlier_detection_ejections_detected_consecutive_local_origin_failure

	// upstream_rq{envoy_response_code} and upstream_rq_xx{envoy_response_code_class}
	// (Response).
	codeVec   *prometheus.CounterVec
	codes     atomic.Pointer[[]codeCounter] // copy on write, a few entries
	codesMu   sync.Mutex                    // adding a code
	classes   [6]prometheus.Counter         // [1..5]: 1xx..5xx by the first digit
	clusterNm string
}

type codeCounter struct {
	code int
	c    prometheus.Counter
}

// Response counts one upstream response with this status code, as
// Envoy's upstream_rq_<code> and upstream_rq_<class>xx (exported as
// envoy_cluster_upstream_rq{envoy_response_code="503"} and
// envoy_cluster_upstream_rq_xx{envoy_response_code_class="5"}). A code
// seen before takes no lock.
func (s *Stats) Response(code int) {
	if code >= 100 && code < 600 {
		s.classes[code/100].Inc()
	}
	if p := s.codes.Load(); p != nil {
		for _, cc := range *p {
			if cc.code == code {
				cc.c.Inc()
				return
			}
		}
	}
	s.codesMu.Lock()
	defer s.codesMu.Unlock()
	var cur []codeCounter
	if p := s.codes.Load(); p != nil {
		cur = *p
	}
	for _, cc := range cur {
		if cc.code == code {
			cc.c.Inc()
			return
		}
	}
	next := append(append(make([]codeCounter, 0, len(cur)+1), cur...),
		codeCounter{code, s.codeVec.WithLabelValues(s.clusterNm, strconv.Itoa(code))})
	s.codes.Store(&next)
	next[len(next)-1].c.Inc()
}

// StatVecs holds the envoy_cluster_* metric families of one registry and
// the counter set of every cluster name seen. Safe for concurrent use.
type StatVecs struct {
	counters map[string]*prometheus.CounterVec
	gauges   map[string]*prometheus.GaugeVec
	codes    *prometheus.CounterVec   // upstream_rq{envoy_response_code}
	classes  *prometheus.CounterVec   // upstream_rq_xx{envoy_response_code_class}
	rqTime   *prometheus.HistogramVec // upstream_rq_time
	members  *membership              // membership_total, membership_healthy

	mu     sync.Mutex // translation only, never per request
	byName map[string]*Stats
}

var clusterCounterNames = []string{
	"upstream_rq_total", "upstream_rq_completed", "upstream_rq_timeout", "upstream_rq_per_try_timeout",
	"upstream_rq_retry", "upstream_rq_retry_success", "upstream_rq_retry_overflow",
	"upstream_rq_pending_total", "upstream_rq_pending_overflow",
	"upstream_cx_total", "upstream_cx_none_healthy", "upstream_cx_connect_fail", "upstream_cx_overflow",
	"outlier_detection_ejections_total", "outlier_detection_ejections_enforced_total",
	"outlier_detection_ejections_overflow",
	"outlier_detection_ejections_enforced_consecutive_5xx",
	"outlier_detection_ejections_enforced_consecutive_gateway_failure",
	"outlier_detection_ejections_enforced_consecutive_local_origin_failure",
	"outlier_detection_ejections_detected_consecutive_5xx",
	"outlier_detection_ejections_detected_consecutive_gateway_failure",
	"outlier_detection_ejections_detected_consecutive_local_origin_failure",
}

// dnsCounterNames are counted by the clusters the proxy resolves (per
// name lookup), and exported only for them.
var dnsCounterNames = []string{"update_attempt", "update_success", "update_failure", "update_no_rebuild"}

// forDNS returns the update_* counters of the named cluster.
func (v *StatVecs) forDNS(name string) dnsStats {
	c := func(n string) prometheus.Counter { return v.counters[n].WithLabelValues(name) }
	return dnsStats{attempt: c("update_attempt"), success: c("update_success"), failure: c("update_failure"),
		noRebuild: c("update_no_rebuild")}
}

var clusterGaugeNames = []string{
	"upstream_rq_active", "upstream_rq_pending_active", "upstream_cx_active",
	"circuit_breakers_default_cx_open", "circuit_breakers_default_rq_pending_open",
	"circuit_breakers_default_rq_open", "circuit_breakers_default_rq_retry_open",
	"outlier_detection_ejections_active",
}

// NewStatVecs registers the envoy_cluster_* families with reg (reusing
// those already registered there).
func NewStatVecs(reg prometheus.Registerer) (*StatVecs, error) {
	v := &StatVecs{
		counters: map[string]*prometheus.CounterVec{},
		gauges:   map[string]*prometheus.GaugeVec{},
		byName:   map[string]*Stats{},
	}
	for _, n := range slices.Concat(clusterCounterNames, dnsCounterNames) {
		c, err := telemetry.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "envoy_cluster_" + n, Help: "Envoy cluster statistic " + n + ".",
		}, []string{NameLabel}))
		if err != nil {
			return nil, err
		}
		v.counters[n] = c
	}
	for _, n := range clusterGaugeNames {
		g, err := telemetry.Register(reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "envoy_cluster_" + n, Help: "Envoy cluster statistic " + n + ".",
		}, []string{NameLabel}))
		if err != nil {
			return nil, err
		}
		v.gauges[n] = g
	}
	var err error
	if v.codes, err = telemetry.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "envoy_cluster_upstream_rq", Help: "Envoy cluster statistic upstream_rq_<code>: upstream responses by status code.",
	}, []string{NameLabel, "envoy_response_code"})); err != nil {
		return nil, err
	}
	if v.classes, err = telemetry.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "envoy_cluster_upstream_rq_xx", Help: "Envoy cluster statistic upstream_rq_<class>xx: upstream responses by status class (1-5).",
	}, []string{NameLabel, "envoy_response_code_class"})); err != nil {
		return nil, err
	}
	if v.rqTime, err = telemetry.Register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "envoy_cluster_upstream_rq_time", Help: "Envoy cluster statistic upstream_rq_time: milliseconds from sending an upstream request to the end of its response.",
		Buckets: telemetry.Buckets,
	}, []string{NameLabel})); err != nil {
		return nil, err
	}
	if v.members, err = telemetry.Register(reg, newMembership()); err != nil {
		return nil, err
	}
	return v, nil
}

// For returns the counter set of the named cluster, creating it on first
// use. It takes a lock: call it while translating, not per request.
func (v *StatVecs) For(name string) *Stats {
	v.mu.Lock()
	defer v.mu.Unlock()
	if s := v.byName[name]; s != nil {
		return s
	}
	c := func(n string) prometheus.Counter { return v.counters[n].WithLabelValues(name) }
	g := func(n string) prometheus.Gauge { return v.gauges[n].WithLabelValues(name) }
	s := &Stats{
		RqTotal:                  c("upstream_rq_total"),
		RqCompleted:              c("upstream_rq_completed"),
		RqTimeout:                c("upstream_rq_timeout"),
		RqPerTryTimeout:          c("upstream_rq_per_try_timeout"),
		RqRetry:                  c("upstream_rq_retry"),
		RqRetrySuccess:           c("upstream_rq_retry_success"),
		RqRetryOverflow:          c("upstream_rq_retry_overflow"),
		RqPendingTotal:           c("upstream_rq_pending_total"),
		RqPendingOverflow:        c("upstream_rq_pending_overflow"),
		RqActive:                 g("upstream_rq_active"),
		RqPendingActive:          g("upstream_rq_pending_active"),
		CxTotal:                  c("upstream_cx_total"),
		CxNoneHealthy:            c("upstream_cx_none_healthy"),
		CxConnectFail:            c("upstream_cx_connect_fail"),
		CxOverflow:               c("upstream_cx_overflow"),
		CxActive:                 g("upstream_cx_active"),
		RqTime:                   v.rqTime.WithLabelValues(name),
		CbCxOpen:                 g("circuit_breakers_default_cx_open"),
		CbRqPendingOpen:          g("circuit_breakers_default_rq_pending_open"),
		CbRqOpen:                 g("circuit_breakers_default_rq_open"),
		CbRqRetryOpen:            g("circuit_breakers_default_rq_retry_open"),
		OdEjectionsActive:        g("outlier_detection_ejections_active"),
		OdEjectionsTotal:         c("outlier_detection_ejections_total"),
		OdEjectionsEnforcedTotal: c("outlier_detection_ejections_enforced_total"),
		OdEjectionsOverflow:      c("outlier_detection_ejections_overflow"),
		OdEnforced5xx:            c("outlier_detection_ejections_enforced_consecutive_5xx"),
		OdEnforcedGateway:        c("outlier_detection_ejections_enforced_consecutive_gateway_failure"),
		OdEnforcedLocalOrigin:    c("outlier_detection_ejections_enforced_consecutive_local_origin_failure"),
		OdDetected5xx:            c("outlier_detection_ejections_detected_consecutive_5xx"),
		OdDetectedGateway:        c("outlier_detection_ejections_detected_consecutive_gateway_failure"),
		OdDetectedLocalOrigin:    c("outlier_detection_ejections_detected_consecutive_local_origin_failure"),
		codeVec:                  v.codes,
		clusterNm:                name,
	}
	for i := 1; i <= 5; i++ {
		s.classes[i] = v.classes.WithLabelValues(name, strconv.Itoa(i))
	}
	v.byName[name] = s
	return s
}
