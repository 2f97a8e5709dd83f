// Package telemetry records the proxy's Istio-standard request metrics
// (istio_requests_total, istio_request_duration_milliseconds) and reads
// and writes Istio's metadata exchange headers, which tell a server-side
// proxy who the calling workload is.
//
// Label values are interned: equal label sets share one pointer, so the
// per-request series key is small and compares pointers, and recording a
// request takes no lock once its series has been seen.
package telemetry

import (
	"errors"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Unknown is Istio's value for a label the proxy does not know.
const Unknown = "unknown"

// OrUnknown returns s, or Unknown when s is empty.
func OrUnknown(s string) string {
	if s == "" {
		return Unknown
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

// SrcLabels are the source_* labels of a request. Obtain them interned
// (Metrics.InternSrc); never modify an interned value.
type SrcLabels struct{ Workload, Namespace, App, Version string }

// DstLabels are the destination_* labels of a request. Obtain them
// interned (Metrics.InternDst); never modify an interned value.
type DstLabels struct {
	Service, ServiceName, ServiceNamespace    string
	Workload, WorkloadNamespace, App, Version string
}

// Key identifies the series one finished request is counted in. Small and
// comparable; Src and Dst must be interned.
type Key struct {
	Src      *SrcLabels
	Dst      *DstLabels
	Inbound  bool // reporter="destination"; else "source"
	GRPC     bool // request_protocol="grpc"; else "http"
	Code     int
	GRPCCode string
	Flags    string // response_flags; "" is reported as "-"
}

type series struct {
	requests prometheus.Counter
	duration prometheus.Observer
}

// Metrics records istio_* request metrics. All methods are safe for
// concurrent use; Record takes no lock once a series has been seen.
type Metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec

	cache sync.Map // Key -> *series

	internMu sync.Mutex // translation and peer decoding only, never per request
	srcs     map[SrcLabels]*SrcLabels
	dsts     map[DstLabels]*DstLabels
	unknown  *DstLabels
}

// NewMetrics registers the request metrics with reg. Several proxies may
// share a registry: metrics already registered there are reused.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{srcs: map[SrcLabels]*SrcLabels{}, dsts: map[DstLabels]*DstLabels{}}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "istio_requests_total",
		Help: "Total requests handled by the proxy.",
	}, metricLabels)
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "istio_request_duration_milliseconds",
		Help:    "Request duration in milliseconds.",
		Buckets: durationBuckets,
	}, metricLabels)
	m.unknown = m.InternDst(DstLabels{Service: Unknown, ServiceName: Unknown, ServiceNamespace: Unknown,
		Workload: Unknown, WorkloadNamespace: Unknown, App: Unknown, Version: Unknown})
	var err error
	if m.requests, err = Register(reg, m.requests); err != nil {
		return nil, err
	}
	if m.duration, err = Register(reg, m.duration); err != nil {
		return nil, err
	}
	return m, nil
}

// Register registers c, or returns the collector already registered under
// the same description (several data planes may share a registry).
func Register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
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

// InternSrc returns the shared copy of s. It takes a lock: call it when
// translating configuration or decoding a new peer, not per request.
func (m *Metrics) InternSrc(s SrcLabels) *SrcLabels {
	m.internMu.Lock()
	defer m.internMu.Unlock()
	if p, ok := m.srcs[s]; ok {
		return p
	}
	p := &s
	m.srcs[s] = p
	return p
}

// InternDst returns the shared copy of d. It takes a lock: call it when
// translating configuration, not per request.
func (m *Metrics) InternDst(d DstLabels) *DstLabels {
	m.internMu.Lock()
	defer m.internMu.Unlock()
	if p, ok := m.dsts[d]; ok {
		return p
	}
	p := &d
	m.dsts[d] = p
	return p
}

// Record counts one finished request that took ms milliseconds.
func (m *Metrics) Record(k Key, ms float64) {
	s, ok := m.cache.Load(k)
	if !ok {
		s, _ = m.cache.LoadOrStore(k, m.newSeries(k))
	}
	se := s.(*series)
	se.requests.Inc()
	se.duration.Observe(ms)
}

func (m *Metrics) newSeries(k Key) *series {
	reporter, proto, flags := "source", "http", k.Flags
	if k.Inbound {
		reporter = "destination"
	}
	if k.GRPC {
		proto = "grpc"
	}
	if flags == "" {
		flags = "-"
	}
	code := strconv.Itoa(k.Code)
	lv := []string{reporter,
		k.Src.Workload, k.Src.Namespace, k.Src.App, k.Src.Version,
		k.Dst.Service, k.Dst.ServiceName, k.Dst.ServiceNamespace,
		k.Dst.Workload, k.Dst.WorkloadNamespace, k.Dst.App, k.Dst.Version,
		proto, code, k.GRPCCode, flags}
	return &series{requests: m.requests.WithLabelValues(lv...), duration: m.duration.WithLabelValues(lv...)}
}

// UnknownDst labels requests whose destination is not known (no route).
func (m *Metrics) UnknownDst() *DstLabels { return m.unknown }
