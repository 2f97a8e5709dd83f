package telemetry

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"weft.dev/weft/internal/celexpr"
	"weft.dev/weft/internal/xds/contract"
)

// Metric overrides: Istio's stats filter config (contract.StatsConfig,
// from the Telemetry API's metrics overrides) compiled for one listener
// side.
//
// A metric whose labels are overridden is a series family of its own
// label names. Its series live in vectors kept per registry and label
// names (families), gathered through one unchecked collector: Prometheus'
// exposition allows one metric name to carry series of different label
// names, which is what Envoy exposes for Istio's overridden metrics too.
// A metric whose label names end up Istio's standard ones uses the
// standard vector, so equal series are one series wherever they come from.

// The metrics a stats config can override.
const (
	statRequests = iota
	statDuration
	statRequestBytes
	statResponseBytes
	statTCPOpened
	statTCPClosed
	statTCPSent
	statTCPReceived
	numStats
)

// statSpec describes one metric: its stats config name, Prometheus name,
// help, and whether it is a histogram.
type statSpec struct {
	config, name, help string
	histogram, tcp     bool
}

var statSpecs = [numStats]statSpec{
	{contract.StatRequestsTotal, "istio_requests_total", "Total requests handled by the proxy.", false, false},
	{contract.StatRequestDuration, "istio_request_duration_milliseconds", "Request duration in milliseconds.", true, false},
	{contract.StatRequestBytes, "istio_request_bytes", "Request size in bytes: headers and body, as the proxy received them.", true, false},
	{contract.StatResponseBytes, "istio_response_bytes", "Response size in bytes: headers and body, as the proxy sent them.", true, false},
	{contract.StatTCPOpened, "istio_tcp_connections_opened_total", "TCP connections the proxy opened to an upstream (tcp_proxy).", false, true},
	{contract.StatTCPClosed, "istio_tcp_connections_closed_total", "TCP connections through the proxy that ended.", false, true},
	{contract.StatTCPSentBytes, "istio_tcp_sent_bytes_total", "Bytes sent from the downstream to the upstream of TCP connections.", false, true},
	{contract.StatTCPReceivedBytes, "istio_tcp_received_bytes_total", "Bytes received from the upstream for the downstream of TCP connections.", false, true},
}

func (s statSpec) standardLabels() []string {
	if s.tcp {
		return tcpLabels
	}
	return metricLabels
}

func (s statSpec) newVec(labels []string) prometheus.Collector {
	if s.histogram {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: s.name, Help: s.help, Buckets: Buckets}, labels)
	}
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: s.name, Help: s.help}, labels)
}

// Stats is a compiled stats config: per metric, dropped, or which labels
// it has and where each value comes from. A nil *Stats, and a metric
// without an override, report Istio's standard labels. Immutable; shared
// by every request of the listeners it was compiled for.
type Stats struct {
	shapes [numStats]*shape
}

// shape is one overridden metric.
type shape struct {
	drop    bool
	labels  []string
	from    []labelFrom
	counter *prometheus.CounterVec   // counters
	hist    *prometheus.HistogramVec // histograms
}

// labelFrom is where a label's value comes from: the standard label at
// index std, or expr.
type labelFrom struct {
	std  int
	expr *celexpr.Value
}

// CompileStats compiles cfg for a proxy whose metrics are registered with
// reg (NewMetrics, NewTCPMetrics). It returns nil for an empty config
// (the standard metrics). The error names the entry and the expression
// that does not parse, or the label name that is not valid.
func CompileStats(reg prometheus.Registerer, cfg contract.StatsConfig) (*Stats, error) {
	if len(cfg.Metrics) == 0 {
		return nil, nil
	}
	fam, err := familiesOf(reg)
	if err != nil {
		return nil, err
	}
	st := &Stats{}
	for i, spec := range statSpecs {
		std := spec.standardLabels()
		labels := slices.Clone(std)
		exprs := map[string]*celexpr.Value{}
		drop, touched := false, false
		for j, m := range cfg.Metrics {
			if m.Name != "" && m.Name != spec.config {
				continue
			}
			touched = true
			drop = drop || m.Drop
			for _, name := range slices.Sorted(mapKeys(m.Dimensions)) {
				if !validLabelName(name) {
					return nil, fmt.Errorf("metrics[%d].dimensions: %q is not a Prometheus label name", j, name)
				}
				v, err := celexpr.ParseValue(m.Dimensions[name])
				if err != nil {
					return nil, fmt.Errorf("metrics[%d].dimensions[%s]: %q: %w", j, name, m.Dimensions[name], err)
				}
				exprs[name] = v
				if !slices.Contains(labels, name) {
					labels = append(labels, name)
				}
			}
			labels = slices.DeleteFunc(labels, func(l string) bool {
				if slices.Contains(m.TagsToRemove, l) {
					delete(exprs, l)
					return true
				}
				return false
			})
		}
		if !touched {
			continue
		}
		sh := &shape{drop: drop}
		st.shapes[i] = sh
		if drop {
			continue
		}
		sh.labels = labels
		for _, l := range labels {
			if e := exprs[l]; e != nil {
				sh.from = append(sh.from, labelFrom{std: -1, expr: e})
			} else {
				sh.from = append(sh.from, labelFrom{std: slices.Index(std, l)})
			}
		}
		vec, err := fam.vec(spec, labels)
		if err != nil {
			return nil, err
		}
		if spec.histogram {
			sh.hist = vec.(*prometheus.HistogramVec)
		} else {
			sh.counter = vec.(*prometheus.CounterVec)
		}
	}
	return st, nil
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func validLabelName(s string) bool {
	if s == "" || strings.HasPrefix(s, "__") {
		return false
	}
	for i, c := range s {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// values computes the shape's label values from the standard ones and src.
func (sh *shape) values(std []string, src celexpr.Source) []string {
	out := make([]string, len(sh.from))
	for i, f := range sh.from {
		if f.expr == nil {
			out[i] = std[f.std]
			continue
		}
		v, ok := f.expr.Eval(src)
		switch {
		case !ok:
			v = Unknown
		case !utf8.ValidString(v):
			v = strings.ToValidUTF8(v, "\uFFFD") // a scrape must stay valid
		}
		out[i] = v
	}
	return out
}

// RecordWith counts one finished request as Record does, with the
// overrides of st (nil: Record), label expressions reading src.
func (m *Metrics) RecordWith(st *Stats, k Key, src celexpr.Source, ms float64, reqBytes, rspBytes int64) {
	if st == nil {
		m.Record(k, ms, reqBytes, rspBytes)
		return
	}
	std := m.labelValues(k)
	obs := [4]float64{1, ms, float64(reqBytes), float64(rspBytes)}
	for i := statRequests; i <= statResponseBytes; i++ {
		sh := st.shapes[i]
		switch {
		case sh == nil:
			// Only the series used: the standard series of a metric
			// dropped here must not appear (at 0) because another is not.
			if i == statRequests {
				m.requests.WithLabelValues(std...).Inc()
			} else {
				[4]*prometheus.HistogramVec{nil, m.duration, m.reqBytes, m.rspBytes}[i].WithLabelValues(std...).Observe(obs[i])
			}
		case sh.drop:
		case sh.counter != nil:
			sh.counter.WithLabelValues(sh.values(std, src)...).Inc()
		default:
			sh.hist.WithLabelValues(sh.values(std, src)...).Observe(obs[i])
		}
	}
}

// SeriesWith returns the counters of one TCP connection as Series does,
// with the overrides of st (nil: Series), label expressions reading src.
// A dropped metric's counter counts nowhere.
func (m *TCPMetrics) SeriesWith(st *Stats, k TCPKey, src celexpr.Source) TCPSeries {
	if st == nil {
		return m.Series(k)
	}
	lv := tcpLabelValues(k)
	stdVecs := [4]*prometheus.CounterVec{m.opened, m.closed, m.sent, m.received}
	out := [4]prometheus.Counter{}
	for i := statTCPOpened; i <= statTCPReceived; i++ {
		j := i - statTCPOpened
		switch sh := st.shapes[i]; {
		case sh == nil:
			out[j] = stdVecs[j].WithLabelValues(lv...) // only the series used: a dropped one must not show as 0
		case sh.drop:
			out[j] = discard{}
		default:
			out[j] = sh.counter.WithLabelValues(sh.values(lv, src)...)
		}
	}
	return TCPSeries{Opened: out[0], Closed: out[1], Sent: out[2], Received: out[3]}
}

// discard is a counter that counts nowhere: a dropped metric.
type discard struct{ prometheus.Counter }

func (discard) Inc()        {}
func (discard) Add(float64) {}

// families holds the vectors of overridden metrics of one registry, by
// metric and label names, and collects them.
type families struct {
	mu   sync.Mutex
	vecs map[string]prometheus.Collector
	std  map[string]prometheus.Collector // the standard vectors, by metric name
}

// familiesByRegistry: one families per registry, however many proxies
// share it, so no series is collected twice.
var familiesByRegistry sync.Map // prometheus.Registerer -> *families

func familiesOf(reg prometheus.Registerer) (*families, error) {
	if f, ok := familiesByRegistry.Load(reg); ok {
		return f.(*families), nil
	}
	f := &families{vecs: map[string]prometheus.Collector{}, std: map[string]prometheus.Collector{}}
	// The standard vectors (registered by NewMetrics and NewTCPMetrics,
	// or now): a shape with the standard label names records there.
	for _, spec := range statSpecs {
		v, err := Register(reg, spec.newVec(spec.standardLabels()))
		if err != nil {
			return nil, fmt.Errorf("metric overrides: %w", err)
		}
		f.std[spec.name] = v
	}
	actual, loaded := familiesByRegistry.LoadOrStore(reg, f)
	if !loaded {
		if err := reg.Register(f); err != nil {
			return nil, fmt.Errorf("metric overrides: %w", err)
		}
	}
	return actual.(*families), nil
}

// vec returns the vector of spec with these label names.
func (f *families) vec(spec statSpec, labels []string) (prometheus.Collector, error) {
	if slices.Equal(labels, spec.standardLabels()) {
		return f.std[spec.name], nil
	}
	key := spec.name + "\x00" + strings.Join(labels, "\x00")
	f.mu.Lock()
	defer f.mu.Unlock()
	if v, ok := f.vecs[key]; ok {
		return v, nil
	}
	v := spec.newVec(labels)
	f.vecs[key] = v
	return v, nil
}

// Describe sends nothing: the collector is unchecked, its metrics share
// names with the standard vectors but not their label names.
func (f *families) Describe(chan<- *prometheus.Desc) {}

// Collect collects every overridden metric's series.
func (f *families) Collect(ch chan<- prometheus.Metric) {
	f.mu.Lock()
	vecs := make([]prometheus.Collector, 0, len(f.vecs))
	for _, v := range f.vecs {
		vecs = append(vecs, v)
	}
	f.mu.Unlock()
	for _, v := range vecs {
		v.Collect(ch)
	}
}

// labelValues are the standard label values of a request (newSeries).
func (m *Metrics) labelValues(k Key) []string {
	proto := "http"
	if k.GRPC {
		proto = "grpc"
	}
	sec := k.Sec
	if sec == nil {
		sec = m.unknownSec
	}
	return peerLabelValues(k.Inbound, k.Src, k.Dst, sec, proto, strconv.Itoa(k.Code), k.GRPCCode, orDash(k.Flags))
}

// peerLabelValues are the label values every standard metric starts
// with (reporter, source_*, destination_*), then middle, then the
// security labels: metricLabels' and tcpLabels' order.
func peerLabelValues(inbound bool, src *SrcLabels, dst *DstLabels, sec *SecLabels, middle ...string) []string {
	reporter := "source"
	if inbound {
		reporter = "destination"
	}
	out := make([]string, 0, 21+len(middle))
	out = append(out, reporter,
		src.Workload, src.Namespace, src.App, src.Version,
		src.CanonicalService, src.CanonicalRevision, src.Cluster,
		dst.Service, dst.ServiceName, dst.ServiceNamespace,
		dst.Workload, dst.WorkloadNamespace, dst.App, dst.Version,
		dst.CanonicalService, dst.CanonicalRevision, dst.Cluster)
	out = append(out, middle...)
	return append(out, sec.Policy, sec.SourcePrincipal, sec.DestinationPrincipal)
}

// orDash is response_flags' value: "-" for none.
func orDash(flags string) string {
	if flags == "" {
		return "-"
	}
	return flags
}
