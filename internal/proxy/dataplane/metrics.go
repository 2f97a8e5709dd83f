package dataplane

import (
	"errors"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

const unknown = "unknown"

func orUnknown(s string) string {
	if s == "" {
		return unknown
	}
	return s
}

// Istio's default buckets for istio_request_duration_milliseconds.
var durationBuckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}

var metricLabels = []string{
	"reporter",
	"source_workload", "source_workload_namespace", "source_app", "source_version",
	"destination_service", "destination_service_name", "destination_service_namespace",
	"destination_workload", "destination_workload_namespace", "destination_app", "destination_version",
	"request_protocol", "response_code", "grpc_response_status", "response_flags",
}

// srcLabels and dstLabels are interned: equal values share one pointer, so
// the per-request series key compares pointers instead of strings.
type srcLabels struct{ workload, namespace, app, version string }

type dstLabels struct {
	service, serviceName, serviceNamespace    string
	workload, workloadNamespace, app, version string
}

// seriesKey identifies one label combination. Small and comparable.
type seriesKey struct {
	src      *srcLabels
	dst      *dstLabels
	inbound  bool
	grpc     bool
	code     int
	grpcCode string
	flags    string
}

type series struct {
	requests prometheus.Counter
	duration prometheus.Observer
}

// metrics records istio_* request metrics. All methods are safe for
// concurrent use; record takes no lock once a series has been seen.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	clusters *clusterStatVecs // envoy_cluster_* (clusterstats.go)

	cache sync.Map // seriesKey -> *series

	internMu sync.Mutex // translation and peer decoding only, never per request
	srcs     map[srcLabels]*srcLabels
	dsts     map[dstLabels]*dstLabels
	unknown  *dstLabels
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{srcs: map[srcLabels]*srcLabels{}, dsts: map[dstLabels]*dstLabels{}}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "istio_requests_total",
		Help: "Total requests handled by the proxy.",
	}, metricLabels)
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "istio_request_duration_milliseconds",
		Help:    "Request duration in milliseconds.",
		Buckets: durationBuckets,
	}, metricLabels)
	m.unknown = m.internDst(dstLabels{unknown, unknown, unknown, unknown, unknown, unknown, unknown})
	var err error
	if m.requests, err = register(reg, m.requests); err != nil {
		return nil, err
	}
	if m.duration, err = register(reg, m.duration); err != nil {
		return nil, err
	}
	if m.clusters, err = newClusterStatVecs(reg); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c, or returns the collector already registered under
// the same description (several data planes may share a registry).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, err
	}
	return c, nil
}

func (m *metrics) internSrc(s srcLabels) *srcLabels {
	m.internMu.Lock()
	defer m.internMu.Unlock()
	if p, ok := m.srcs[s]; ok {
		return p
	}
	p := &s
	m.srcs[s] = p
	return p
}

func (m *metrics) internDst(d dstLabels) *dstLabels {
	m.internMu.Lock()
	defer m.internMu.Unlock()
	if p, ok := m.dsts[d]; ok {
		return p
	}
	p := &d
	m.dsts[d] = p
	return p
}

// record counts one finished request.
func (m *metrics) record(k seriesKey, ms float64) {
	s, ok := m.cache.Load(k)
	if !ok {
		s, _ = m.cache.LoadOrStore(k, m.newSeries(k))
	}
	se := s.(*series)
	se.requests.Inc()
	se.duration.Observe(ms)
}

func (m *metrics) newSeries(k seriesKey) *series {
	reporter, proto, flags := "source", "http", k.flags
	if k.inbound {
		reporter = "destination"
	}
	if k.grpc {
		proto = "grpc"
	}
	if flags == "" {
		flags = "-"
	}
	code := strconv.Itoa(k.code)
	lv := []string{reporter,
		k.src.workload, k.src.namespace, k.src.app, k.src.version,
		k.dst.service, k.dst.serviceName, k.dst.serviceNamespace,
		k.dst.workload, k.dst.workloadNamespace, k.dst.app, k.dst.version,
		proto, code, k.grpcCode, flags}
	return &series{requests: m.requests.WithLabelValues(lv...), duration: m.duration.WithLabelValues(lv...)}
}

// unknownDst labels requests whose destination is not known (no route).
func (m *metrics) unknownDst() *dstLabels { return m.unknown }
