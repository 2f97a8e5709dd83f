// Package telemetry records the proxy's Istio-standard request metrics
// (istio_requests_total, istio_request_duration_milliseconds,
// istio_request_bytes, istio_response_bytes, and the istio_tcp_* ones in
// tcp.go, with all of Istio's standard labels, the security, canonical
// service and cluster ones included) and reads
// and writes Istio's metadata exchange headers, which tell a server-side
// proxy who the calling workload is.
//
// Label values are interned: equal label sets share one pointer, so the
// per-request series key is small and compares pointers, and recording a
// request takes no lock once its series has been seen.
package telemetry

import (
	"errors"
	"sync"
	"sync/atomic"
	"weak"

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

// Buckets are Envoy's default histogram buckets, which Istio's sidecars
// use for istio_request_duration_milliseconds, istio_request_bytes and
// istio_response_bytes (and Envoy for envoy_cluster_upstream_rq_time).
var Buckets = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}

// Istio's standard labels of the request metrics, in the order the label
// values are built (newSeries).
var metricLabels = []string{
	"reporter",
	"source_workload", "source_workload_namespace", "source_app", "source_version",
	"source_canonical_service", "source_canonical_revision", "source_cluster",
	"destination_service", "destination_service_name", "destination_service_namespace",
	"destination_workload", "destination_workload_namespace", "destination_app", "destination_version",
	"destination_canonical_service", "destination_canonical_revision", "destination_cluster",
	"request_protocol", "response_code", "grpc_response_status", "response_flags",
	"connection_security_policy", "source_principal", "destination_principal",
}

// SrcLabels are the source_* labels of a request. Obtain them interned
// (Metrics.InternSrc, which fills in the canonical service, revision and
// cluster when they are empty); never modify an interned value.
type SrcLabels struct {
	Workload, Namespace, App, Version            string
	CanonicalService, CanonicalRevision, Cluster string
}

// DstLabels are the destination_* labels of a request. Obtain them
// interned (Metrics.InternDst, which fills in the canonical service,
// revision and cluster when they are empty); never modify an interned
// value.
type DstLabels struct {
	Service, ServiceName, ServiceNamespace       string
	Workload, WorkloadNamespace, App, Version    string
	CanonicalService, CanonicalRevision, Cluster string
}

// Istio's canonical service labels, and the value of a canonical revision
// nothing names.
const (
	LabelCanonicalName     = "service.istio.io/canonical-name"
	LabelCanonicalRevision = "service.istio.io/canonical-revision"
	RevisionLatest         = "latest"
)

// Canonical returns the canonical service and revision of a workload
// with these labels, as Istio derives them: the canonical-name label,
// else app.kubernetes.io/name, else app, else the workload's name; the
// canonical-revision label, else app.kubernetes.io/version, else version,
// else "latest". Empty results are Unknown.
func Canonical(labels map[string]string, workload string) (service, revision string) {
	service = firstSet(labels[LabelCanonicalName], labels["app.kubernetes.io/name"], labels["app"], workload)
	revision = firstSet(labels[LabelCanonicalRevision], labels["app.kubernetes.io/version"], labels["version"], RevisionLatest)
	if service == "" {
		service, revision = Unknown, Unknown
	}
	return service, revision
}

func firstSet(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

// canonicalDefaults fills empty canonical labels from what the other
// labels say (app or workload, version or "latest"), and an empty
// cluster with Unknown.
func canonicalDefaults(svc, rev, cluster *string, app, version, workload string) {
	known := func(v string) string {
		if v == Unknown {
			return ""
		}
		return v
	}
	if *svc == "" {
		*svc = OrUnknown(firstSet(known(app), known(workload)))
	}
	if *rev == "" {
		switch {
		case *svc == Unknown:
			*rev = Unknown
		case known(version) != "":
			*rev = version
		default:
			*rev = RevisionLatest
		}
	}
	if *cluster == "" {
		*cluster = Unknown
	}
}

// SecLabels are the security labels of a request, as Istio reports
// them: connection_security_policy ("mutual_tls" or "none" on the
// destination side; "unknown" on the source side, which cannot know the
// server's policy), source_principal and destination_principal (SPIFFE
// IDs, "unknown" without mutual TLS). Obtain them interned
// (Metrics.InternSec); never modify an interned value.
type SecLabels struct{ Policy, SourcePrincipal, DestinationPrincipal string }

// Connection security policies.
const (
	PolicyMutualTLS = "mutual_tls"
	PolicyNone      = "none"
)

// Key identifies the series one finished request is counted in. Small and
// comparable; Src, Dst and Sec must be interned (Sec may be nil: all
// unknown).
type Key struct {
	Src      *SrcLabels
	Dst      *DstLabels
	Sec      *SecLabels
	Inbound  bool // reporter="destination"; else "source"
	GRPC     bool // request_protocol="grpc"; else "http"
	Code     int
	GRPCCode string
	Flags    string // response_flags; "" is reported as "-"
}

type series struct {
	requests           prometheus.Counter
	duration           prometheus.Observer
	reqBytes, rspBytes prometheus.Observer
}

// Metrics records istio_* request metrics. All methods are safe for
// concurrent use; Record takes no lock once a series has been seen.
type Metrics struct {
	requests           *prometheus.CounterVec
	duration           *prometheus.HistogramVec
	reqBytes, rspBytes *prometheus.HistogramVec

	cache sync.Map // Key -> *series

	// The interned labels: translation and peer decoding only, never
	// per request.
	srcs    internTable[SrcLabels]
	dsts    internTable[DstLabels]
	secs    internTable[SecLabels]
	unknown *DstLabels
	// unknownSec and noneSec are the labels of a request without mutual
	// TLS, on the source and the destination side.
	unknownSec, noneSec *SecLabels

	hosts hostDsts // HostDst (passthrough.go)
}

// NewMetrics registers the request metrics with reg. Several proxies may
// share a registry: metrics already registered there are reused.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{}
	m.requests = statSpecs[statRequests].newVec(metricLabels).(*prometheus.CounterVec)
	m.duration = statSpecs[statDuration].newVec(metricLabels).(*prometheus.HistogramVec)
	m.reqBytes = statSpecs[statRequestBytes].newVec(metricLabels).(*prometheus.HistogramVec)
	m.rspBytes = statSpecs[statResponseBytes].newVec(metricLabels).(*prometheus.HistogramVec)
	m.unknown = m.InternDst(DstLabels{Service: Unknown, ServiceName: Unknown, ServiceNamespace: Unknown,
		Workload: Unknown, WorkloadNamespace: Unknown, App: Unknown, Version: Unknown})
	m.unknownSec = m.InternSec(SecLabels{Policy: Unknown, SourcePrincipal: Unknown, DestinationPrincipal: Unknown})
	m.noneSec = m.InternSec(SecLabels{Policy: PolicyNone, SourcePrincipal: Unknown, DestinationPrincipal: Unknown})
	var err error
	if m.requests, err = Register(reg, m.requests); err != nil {
		return nil, err
	}
	if m.duration, err = Register(reg, m.duration); err != nil {
		return nil, err
	}
	if m.reqBytes, err = Register(reg, m.reqBytes); err != nil {
		return nil, err
	}
	if m.rspBytes, err = Register(reg, m.rspBytes); err != nil {
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
	canonicalDefaults(&s.CanonicalService, &s.CanonicalRevision, &s.Cluster, s.App, s.Version, s.Workload)
	return m.srcs.intern(s)
}

// InternDst returns the shared copy of d. It takes a lock: call it when
// translating configuration, not per request.
func (m *Metrics) InternDst(d DstLabels) *DstLabels {
	canonicalDefaults(&d.CanonicalService, &d.CanonicalRevision, &d.Cluster, d.App, d.Version, d.Workload)
	return m.dsts.intern(d)
}

// InternSec returns the shared copy of s. It takes a lock: call it when a
// connection is set up, not per request.
func (m *Metrics) InternSec(s SecLabels) *SecLabels {
	return m.secs.intern(s)
}

// internTable interns values of T: one shared copy per distinct value,
// kept only while something refers to it. The labels of endpoints and
// peers that went away (a node or VM replaced, a workload renamed) are
// then not kept for the life of the process; a series still counting a
// request keeps its labels. Entries whose copy was collected are swept
// once as many values were added since the last sweep as half the table
// holds (at least sweepEvery): amortised constant time, and at most
// about twice the live values plus sweepEvery entries.
type internTable[T comparable] struct {
	mu    sync.Mutex
	m     map[T]weak.Pointer[T]
	added int // values added since the last sweep
}

const sweepEvery = 1024

// intern returns the shared copy of v.
func (t *internTable[T]) intern(v T) *T {
	t.mu.Lock()
	defer t.mu.Unlock()
	if p := t.m[v].Value(); p != nil {
		return p
	}
	if t.m == nil {
		t.m = map[T]weak.Pointer[T]{}
	}
	if t.added++; t.added >= sweepEvery && 2*t.added >= len(t.m) {
		for k, wp := range t.m {
			if wp.Value() == nil {
				delete(t.m, k)
			}
		}
		t.added = 0
	}
	p := new(T)
	*p = v
	t.m[v] = weak.Make(p)
	return p
}

// len is how many values are interned (or gone, not yet swept).
func (t *internTable[T]) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.m)
}

// UnknownSec labels a request the source side sent without mutual TLS
// (and every source-side request's policy).
func (m *Metrics) UnknownSec() *SecLabels { return m.unknownSec }

// NoneSec labels a request the destination side received without
// mutual TLS.
func (m *Metrics) NoneSec() *SecLabels { return m.noneSec }

// Record counts one finished request that took ms milliseconds, whose
// request was reqBytes long and response rspBytes (headers and bodies).
func (m *Metrics) Record(k Key, ms float64, reqBytes, rspBytes int64) {
	se := m.series(k)
	se.requests.Inc()
	se.duration.Observe(ms)
	se.reqBytes.Observe(float64(reqBytes))
	se.rspBytes.Observe(float64(rspBytes))
}

// series returns the standard series of k, made on first use.
func (m *Metrics) series(k Key) *series {
	s, ok := m.cache.Load(k)
	if !ok {
		s, _ = m.cache.LoadOrStore(k, m.newSeries(k))
	}
	return s.(*series)
}

func (m *Metrics) newSeries(k Key) *series {
	lv := m.labelValues(k)
	return &series{requests: m.requests.WithLabelValues(lv...), duration: m.duration.WithLabelValues(lv...),
		reqBytes: m.reqBytes.WithLabelValues(lv...), rspBytes: m.rspBytes.WithLabelValues(lv...)}
}

// UnknownDst labels requests whose destination is not known (no route).
func (m *Metrics) UnknownDst() *DstLabels { return m.unknown }

// SecCache remembers the interned security labels last used for one
// upstream endpoint, so a request over mutual TLS finds its labels with
// two atomic loads and a string comparison. The zero value is ready;
// safe for concurrent use.
type SecCache struct{ p atomic.Pointer[secEntry] }

type secEntry struct {
	local, peer string
	labels      *SecLabels
}

// Source returns the source-side labels of a request sent over mutual
// TLS by local (this proxy's principal) to peer (the endpoint's
// principal): policy unknown, as Istio reports it on the source side.
func (c *SecCache) Source(m *Metrics, local, peer string) *SecLabels {
	if e := c.p.Load(); e != nil && e.peer == peer && e.local == local {
		return e.labels
	}
	l := m.InternSec(SecLabels{Policy: Unknown, SourcePrincipal: OrUnknown(local), DestinationPrincipal: OrUnknown(peer)})
	c.p.Store(&secEntry{local: local, peer: peer, labels: l})
	return l
}
