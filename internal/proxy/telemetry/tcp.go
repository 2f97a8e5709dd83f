package telemetry

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Istio's TCP metrics (tcp_proxy connections) carry the request labels
// but the response code and gRPC status; request_protocol is "tcp".
var tcpLabels = []string{
	"reporter",
	"source_workload", "source_workload_namespace", "source_app", "source_version",
	"source_canonical_service", "source_canonical_revision", "source_cluster",
	"destination_service", "destination_service_name", "destination_service_namespace",
	"destination_workload", "destination_workload_namespace", "destination_app", "destination_version",
	"destination_canonical_service", "destination_canonical_revision", "destination_cluster",
	"request_protocol", "response_flags",
	"connection_security_policy", "source_principal", "destination_principal",
}

// TCPMetrics records Istio's TCP metrics:
// istio_tcp_connections_opened_total, istio_tcp_connections_closed_total,
// istio_tcp_sent_bytes_total (downstream to upstream) and
// istio_tcp_received_bytes_total (upstream to downstream). Safe for
// concurrent use.
type TCPMetrics struct {
	opened, closed, sent, received *prometheus.CounterVec
}

// NewTCPMetrics registers the TCP metrics with reg (or reuses those
// already registered there).
func NewTCPMetrics(reg prometheus.Registerer) (*TCPMetrics, error) {
	m := &TCPMetrics{}
	for i, v := range []**prometheus.CounterVec{&m.opened, &m.closed, &m.sent, &m.received} {
		c, err := Register(reg, statSpecs[statTCPOpened+i].newVec(tcpLabels).(*prometheus.CounterVec))
		if err != nil {
			return nil, err
		}
		*v = c
	}
	return m, nil
}

// TCPKey identifies the series of one TCP connection. Src, Dst and Sec
// are interned labels (Sec nil: all unknown).
type TCPKey struct {
	Src     *SrcLabels
	Dst     *DstLabels
	Sec     *SecLabels
	Inbound bool   // reporter="destination"; else "source"
	Flags   string // response_flags; "" is reported as "-"
}

// TCPSeries are the counters of one TCPKey.
type TCPSeries struct {
	Opened, Closed, Sent, Received prometheus.Counter
}

// Series returns the counters of k. Called once per connection.
func (m *TCPMetrics) Series(k TCPKey) TCPSeries {
	lv := tcpLabelValues(k)
	return TCPSeries{Opened: m.opened.WithLabelValues(lv...), Closed: m.closed.WithLabelValues(lv...),
		Sent: m.sent.WithLabelValues(lv...), Received: m.received.WithLabelValues(lv...)}
}

// tcpLabelValues are the standard label values of a TCP connection.
func tcpLabelValues(k TCPKey) []string {
	sec := k.Sec
	if sec == nil {
		sec = &SecLabels{Policy: Unknown, SourcePrincipal: Unknown, DestinationPrincipal: Unknown}
	}
	return peerLabelValues(k.Inbound, k.Src, k.Dst, sec, "tcp", orDash(k.Flags))
}
