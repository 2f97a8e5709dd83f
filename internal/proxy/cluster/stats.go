package cluster

import (
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

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

// Stats is the counter set of one cluster. Its counters and gauges are
// plain atomics in this one struct, exported when scraped by the StatVecs
// collector: a sidecar holds every cluster of a mesh (three per service),
// and a Prometheus child per statistic cost about 0.5 KB each, 18 KB per
// cluster, where this costs one allocation of ~0.4 KB. Recording is one
// atomic operation. Safe for concurrent use; obtained with StatVecs.For.
type Stats struct {
	// Requests.
	RqTotal           Counter // upstream_rq_total: attempts sent upstream (each retry counts)
	RqCompleted       Counter // upstream_rq_completed: attempts that got a response
	RqTimeout         Counter // upstream_rq_timeout: route timeout fired
	RqPerTryTimeout   Counter // upstream_rq_per_try_timeout
	RqRetry           Counter // upstream_rq_retry
	RqRetrySuccess    Counter // upstream_rq_retry_success
	RqRetryOverflow   Counter // upstream_rq_retry_overflow: retry refused by max_retries
	RqPendingTotal    Counter // upstream_rq_pending_total: requests that waited for a connection
	RqPendingOverflow Counter // upstream_rq_pending_overflow: rejected by max_pending_requests or max_requests (UO)
	RqActive          Gauge   // upstream_rq_active
	RqPendingActive   Gauge   // upstream_rq_pending_active
	// Connections.
	CxTotal       Counter // upstream_cx_total: connections opened (failed connects included)
	CxNoneHealthy Counter // upstream_cx_none_healthy: no endpoint to connect to (UH; BlackHoleCluster)
	CxConnectFail Counter // upstream_cx_connect_fail
	CxOverflow    Counter // upstream_cx_overflow: max_connections was reached
	CxActive      Gauge   // upstream_cx_active: connections open now (counted by the pool)
	// RqTime is upstream_rq_time: milliseconds from sending an attempt to
	// the end of its response (Envoy's default buckets). Its buckets are
	// allocated at the first observation; until then a scrape shows an
	// empty histogram.
	RqTime lazyHistogram
	// Circuit breaker state (circuit_breakers.default.*_open): 1 while the
	// limit is reached.
	CbCxOpen        Gauge
	CbRqPendingOpen Gauge
	CbRqOpen        Gauge
	CbRqRetryOpen   Gauge
	// Outlier detection.
	OdEjectionsActive        Gauge   // outlier_detection_ejections_active
	OdEjectionsTotal         Counter // outlier_detection_ejections_total
	OdEjectionsEnforcedTotal Counter // outlier_detection_ejections_enforced_total
	OdEjectionsOverflow      Counter // outlier_detection_ejections_overflow: max_ejection_percent prevented one
	OdEnforced5xx            Counter // outlier_detection_ejections_enforced_consecutive_5xx
	OdEnforcedGateway        Counter // outlier_detection_ejections_enforced_consecutive_gateway_failure
	OdEnforcedLocalOrigin    Counter // outlier_detection_ejections_enforced_consecutive_local_origin_failure
	OdDetected5xx            Counter // outlier_detection_ejections_detected_consecutive_5xx
	OdDetectedGateway        Counter // outlier_detection_ejections_detected_consecutive_gateway_failure
	OdDetectedLocalOrigin    Counter // outlier_detection_ejections_detected_consecutive_local_origin_failure

	// upstream_rq{envoy_response_code} and upstream_rq_xx{envoy_response_code_class}
	// (Response).
	codeVec   *prometheus.CounterVec
	codes     atomic.Pointer[[]codeCounter] // copy on write, a few entries
	codesMu   sync.Mutex                    // adding a code
	classes   [6]Counter                    // [1..5]: 1xx..5xx by the first digit
	clusterNm string
}

// counters lists the counters of s in the order of clusterCounterNames.
func (s *Stats) counters() [22]*Counter {
	return [22]*Counter{
		&s.RqTotal, &s.RqCompleted, &s.RqTimeout, &s.RqPerTryTimeout,
		&s.RqRetry, &s.RqRetrySuccess, &s.RqRetryOverflow,
		&s.RqPendingTotal, &s.RqPendingOverflow,
		&s.CxTotal, &s.CxNoneHealthy, &s.CxConnectFail, &s.CxOverflow,
		&s.OdEjectionsTotal, &s.OdEjectionsEnforcedTotal,
		&s.OdEjectionsOverflow,
		&s.OdEnforced5xx, &s.OdEnforcedGateway, &s.OdEnforcedLocalOrigin,
		&s.OdDetected5xx, &s.OdDetectedGateway, &s.OdDetectedLocalOrigin,
	}
}

// gauges lists the gauges of s in the order of clusterGaugeNames.
func (s *Stats) gauges() [8]*Gauge {
	return [8]*Gauge{
		&s.RqActive, &s.RqPendingActive, &s.CxActive,
		&s.CbCxOpen, &s.CbRqPendingOpen, &s.CbRqOpen, &s.CbRqRetryOpen,
		&s.OdEjectionsActive,
	}
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
// the counter set of every cluster name seen; it is itself the collector
// of the counters and gauges of those sets. Safe for concurrent use.
type StatVecs struct {
	counters map[string]*prometheus.CounterVec // the DNS clusters' update_* (forDNS)
	cDescs   [22]*prometheus.Desc              // clusterCounterNames
	gDescs   [8]*prometheus.Desc               // clusterGaugeNames
	codes    *prometheus.CounterVec            // upstream_rq{envoy_response_code}
	classes  *prometheus.Desc                  // upstream_rq_xx{envoy_response_code_class}
	rqTime   *prometheus.HistogramVec          // upstream_rq_time: children of used clusters; collected here, not registered
	rqTimeD  *prometheus.Desc                  // upstream_rq_time, for clusters without an observation yet
	members  *membership                       // membership_total, membership_healthy

	families map[string]family // by family name: what Family builds

	mu     sync.Mutex // translation and scrapes only, never per request
	byName map[string]*statRef
	// byNameSorted is byName's sets sorted by name, for scrapes; nil
	// when a name was added since it was made.
	byNameSorted []*statRef
}

// statRef is the counter set of one cluster name, allocated at its first
// use (get): a sidecar holds every cluster of its mesh and most never
// carry a request; until then the name scrapes as zeros (peek). Safe for
// concurrent use.
type statRef struct {
	name string
	v    *StatVecs
	s    atomic.Pointer[Stats]
}

// get returns the counter set, allocating it at the first call.
// Lock-free once allocated.
func (r *statRef) get() *Stats {
	if s := r.s.Load(); s != nil {
		return s
	}
	r.s.CompareAndSwap(nil, r.v.newStats(r.name))
	return r.s.Load()
}

// peek returns the counter set, or zeros when there is none yet. For
// scrapes: never written through.
func (r *statRef) peek() *Stats {
	if s := r.s.Load(); s != nil {
		return s
	}
	return &zeroStats
}

// zeroStats is what a cluster that never counted anything scrapes as.
var zeroStats Stats

// refActive counts a pool's open connections in upstream_cx_active of a
// statRef (upstream.ActiveCounter).
type refActive struct{ r *statRef }

func (a refActive) Inc() { a.r.get().CxActive.Inc() }
func (a refActive) Dec() { a.r.get().CxActive.Dec() }

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
		byName:   map[string]*statRef{},
		classes: prometheus.NewDesc("envoy_cluster_upstream_rq_xx",
			"Envoy cluster statistic upstream_rq_<class>xx: upstream responses by status class (1-5).",
			[]string{NameLabel, "envoy_response_code_class"}, nil),
		rqTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "envoy_cluster_upstream_rq_time", Help: rqTimeHelp, Buckets: telemetry.Buckets,
		}, []string{NameLabel}),
		rqTimeD: prometheus.NewDesc("envoy_cluster_upstream_rq_time", rqTimeHelp, []string{NameLabel}, nil),
	}
	for i, n := range clusterCounterNames {
		v.cDescs[i] = prometheus.NewDesc("envoy_cluster_"+n, "Envoy cluster statistic "+n+".", []string{NameLabel}, nil)
	}
	for i, n := range clusterGaugeNames {
		v.gDescs[i] = prometheus.NewDesc("envoy_cluster_"+n, "Envoy cluster statistic "+n+".", []string{NameLabel}, nil)
	}
	v.families = v.familyIndex()
	// The counter sets: a second StatVecs on the same registry shares the
	// first one's, as the families below are shared. A registry that
	// takes family sources builds them one family at a time when scraped.
	if fr, ok := reg.(telemetry.FamilyRegisterer); ok {
		got, err := fr.RegisterFamilies(v)
		if err != nil {
			return nil, err
		}
		if got, ok := got.(*StatVecs); ok && got != v {
			return got, nil
		} else if !ok {
			return nil, fmt.Errorf("cluster statistics: families registered by a %T", got)
		}
	} else if got, err := telemetry.Register(reg, v); err != nil {
		return nil, err
	} else if got != v {
		return got, nil
	}
	for _, n := range dnsCounterNames {
		c, err := telemetry.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "envoy_cluster_" + n, Help: "Envoy cluster statistic " + n + ".",
		}, []string{NameLabel}))
		if err != nil {
			return nil, err
		}
		v.counters[n] = c
	}
	var err error
	if v.codes, err = telemetry.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "envoy_cluster_upstream_rq", Help: "Envoy cluster statistic upstream_rq_<code>: upstream responses by status code.",
	}, []string{NameLabel, "envoy_response_code"})); err != nil {
		return nil, err
	}
	v.members = newMembership()
	if fr, ok := reg.(telemetry.FamilyRegisterer); ok {
		// Written family by family, and straight as text (membership.go).
		got, err := fr.RegisterFamilies(v.members)
		if err != nil {
			return nil, err
		}
		m, ok := got.(*membership)
		if !ok {
			return nil, fmt.Errorf("cluster membership: families registered by a %T", got)
		}
		v.members = m
	} else if v.members, err = telemetry.Register(reg, v.members); err != nil {
		return nil, err
	}
	return v, nil
}

const rqTimeHelp = "Envoy cluster statistic upstream_rq_time: milliseconds from sending an upstream request to the end of its response."

// Describe implements prometheus.Collector for the counter sets.
func (v *StatVecs) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range v.cDescs {
		ch <- d
	}
	for _, d := range v.gDescs {
		ch <- d
	}
	ch <- v.classes
	ch <- v.rqTimeD
}

// classPairs are the envoy_response_code_class label pairs, by class.
var classPairs = func() (p [6]*dto.LabelPair) {
	for i := 1; i <= 5; i++ {
		p[i] = &dto.LabelPair{Name: proto.String("envoy_response_code_class"), Value: proto.String(strconv.Itoa(i))}
	}
	return p
}()

// Collect implements prometheus.Collector: every statistic of every
// cluster name seen, zeros included, as Envoy exports them. A scrape of a
// large mesh's sidecar sends a few hundred thousand series: each is one
// small allocation here, with label pairs shared per cluster.
func (v *StatVecs) Collect(ch chan<- prometheus.Metric) {
	v.mu.Lock()
	all := make([]*statRef, 0, len(v.byName))
	for _, r := range v.byName {
		all = append(all, r)
	}
	v.mu.Unlock()
	for _, r := range all {
		s := r.peek()
		name := []*dto.LabelPair{{Name: proto.String(NameLabel), Value: proto.String(r.name)}}
		ms := make([]clusterMetric, 22+8+5) // one allocation for the cluster's series
		i := 0
		for j, c := range s.counters() {
			ms[i] = clusterMetric{desc: v.cDescs[j], val: c.Value(), labels: name}
			i++
		}
		for j, g := range s.gauges() {
			ms[i] = clusterMetric{desc: v.gDescs[j], gauge: true, val: g.Value(), labels: name}
			i++
		}
		for c := 1; c <= 5; c++ {
			ms[i] = clusterMetric{desc: v.classes, val: s.classes[c].Value(), labels: []*dto.LabelPair{name[0], classPairs[c]}}
			i++
		}
		for j := range ms {
			ch <- &ms[j]
		}
		if h := s.RqTime.h.Load(); h != nil {
			ch <- *h
			continue
		}
		ch <- &emptyHistogram{desc: v.rqTimeD, labels: name}
	}
}

// emptyHistogram is upstream_rq_time of a cluster without an observation:
// every bucket at zero, shared by all such clusters.
type emptyHistogram struct {
	desc   *prometheus.Desc
	labels []*dto.LabelPair
}

var emptyRqTime = func() *dto.Histogram {
	h := &dto.Histogram{SampleCount: proto.Uint64(0), SampleSum: proto.Float64(0)}
	for _, b := range telemetry.Buckets {
		h.Bucket = append(h.Bucket, &dto.Bucket{UpperBound: proto.Float64(b), CumulativeCount: proto.Uint64(0)})
	}
	return h
}()

func (m *emptyHistogram) Desc() *prometheus.Desc { return m.desc }

func (m *emptyHistogram) Write(out *dto.Metric) error {
	out.Histogram = emptyRqTime // read only, as is every gathered metric
	out.Label = m.labels
	return nil
}

// clusterMetric is one statistic of one cluster as a scrape sees it.
type clusterMetric struct {
	desc   *prometheus.Desc
	gauge  bool
	val    float64
	labels []*dto.LabelPair // sorted by name; shared, never modified
}

func (m *clusterMetric) Desc() *prometheus.Desc { return m.desc }

func (m *clusterMetric) Write(out *dto.Metric) error {
	if m.gauge {
		out.Gauge = &dto.Gauge{Value: &m.val}
	} else {
		out.Counter = &dto.Counter{Value: &m.val}
	}
	out.Label = m.labels
	return nil
}

// For returns the counter set of the named cluster, creating it on first
// use. It takes a lock: call it while translating, not per request.
func (v *StatVecs) For(name string) *Stats { return v.ref(name).get() }

// ref returns the named cluster's statRef, creating it on first use (the
// name is exported from then on, as zeros until its set is allocated).
// It takes a lock: call it while translating, not per request.
func (v *StatVecs) ref(name string) *statRef {
	v.mu.Lock()
	defer v.mu.Unlock()
	if r := v.byName[name]; r != nil {
		return r
	}
	r := &statRef{name: name, v: v}
	v.byName[name] = r
	v.byNameSorted = nil
	return r
}

// newStats allocates the counter set of the named cluster.
func (v *StatVecs) newStats(name string) *Stats {
	return &Stats{
		RqTime:    lazyHistogram{vec: v.rqTime, name: name},
		codeVec:   v.codes,
		clusterNm: name,
	}
}
