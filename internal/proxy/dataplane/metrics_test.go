package dataplane

import (
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	dto "github.com/prometheus/client_model/go"

	"weft.dev/weft/internal/xds/contract"
)

// TestMetricsAndPeerMetadata runs client proxy (outbound) → server proxy
// (inbound) → app and checks both sides' istio_* labels.
func TestMetricsAndPeerMetadata(t *testing.T) {
	app := echoUpstream(t, "reviews-app", false)
	const svc = "reviews.default.svc.cluster.local"

	serverReg := newRegistry()
	server := newDataplane(t, contract.Identity{ID: "sidecar~127.0.0.2~reviews-v2.default~default.svc.cluster.local",
		WorkloadName: "reviews-v2", Namespace: "default", Labels: map[string]string{"app": "reviews", "version": "v2"}}, serverReg)
	inCluster := staticCluster(t, "inbound|9080||", app)
	inCluster.Metadata = edsCluster(t, "x", false, svc).Metadata
	mustApply(t, server, resourcesAny(inCluster,
		httpListener(t, "127.0.0.2_9080", core.TrafficDirection_INBOUND, "",
			routeConfig("inbound|9080||", vhost("inbound|http|9080", []string{"*"}, toCluster("default", prefixMatch("/"), "inbound|9080||"))))))
	inboundAddr := server.ListenerAddr("127.0.0.2_9080").String()

	clientReg := newRegistry()
	clientID := contract.Identity{ID: "sidecar~127.0.0.1~productpage-v1.default~default.svc.cluster.local",
		WorkloadName: "productpage-v1", Namespace: "default", Labels: map[string]string{"app": "productpage", "version": "v1"}}
	cl := newDataplane(t, clientID, clientReg)
	outCluster := "outbound|9080||" + svc
	mustApply(t, cl, resourcesAny(edsCluster(t, outCluster, false, svc),
		cla(outCluster, ep{Addr: inboundAddr, Workload: contract.WorkloadMetadata("reviews-v2", "default", "reviews", "v2", "Kubernetes")}),
		routeConfig(contract.RouteHTTPProxy, vhost(svc+":9080", []string{"reviews", "reviews:9080"}, toCluster("default", prefixMatch("/"), outCluster))),
		httpListener(t, "127.0.0.1_15001", core.TrafficDirection_OUTBOUND, contract.RouteHTTPProxy, nil)))

	c := client(t, false)
	got := do(t, c, "GET", "http://"+cl.ListenerAddr("127.0.0.1_15001").String()+"/reviews/1", "reviews", nil)
	if got.code != 200 || got.upstream != "reviews-app" {
		t.Fatalf("got %d from %q", got.code, got.upstream)
	}
	if got.header.Get("X-Seen-Peer") != "" {
		t.Errorf("app saw peer metadata %q; the inbound proxy must strip it", got.header.Get("X-Seen-Peer"))
	}
	do(t, c, "GET", "http://"+cl.ListenerAddr("127.0.0.1_15001").String()+"/", "nobody", nil) // NR

	source := map[string]string{
		"reporter": "source", "source_workload": "productpage-v1", "source_workload_namespace": "default",
		"source_app": "productpage", "source_version": "v1",
		// Canonical service and revision from app and version; the
		// client has no cluster id, the endpoint's metadata names one.
		"source_canonical_service": "productpage", "source_canonical_revision": "v1", "source_cluster": "unknown",
		"destination_canonical_service": "reviews", "destination_canonical_revision": "v2", "destination_cluster": "Kubernetes",
		"destination_service": svc, "destination_service_name": "reviews", "destination_service_namespace": "default",
		"destination_workload": "reviews-v2", "destination_workload_namespace": "default",
		"destination_app": "reviews", "destination_version": "v2",
		"request_protocol": "http", "response_code": "200", "grpc_response_status": "", "response_flags": "-",
		// Plaintext: Istio's source side does not know the policy.
		"connection_security_policy": "unknown", "source_principal": "unknown", "destination_principal": "unknown",
	}
	// The server side labels the destination with its own identity
	// (no cluster id) and the source with the peer metadata.
	destination := maps(source, map[string]string{"reporter": "destination", "connection_security_policy": "none", "destination_cluster": "unknown"})
	assertSeries(t, clientReg, source)
	assertSeries(t, serverReg, destination)
	assertSeries(t, clientReg, maps(source, map[string]string{"response_code": "404", "response_flags": "NR",
		"destination_service": "unknown", "destination_service_name": "unknown", "destination_service_namespace": "unknown",
		"destination_workload": "unknown", "destination_workload_namespace": "unknown", "destination_app": "unknown", "destination_version": "unknown",
		"destination_canonical_service": "unknown", "destination_canonical_revision": "unknown", "destination_cluster": "unknown"}))
	if n := histogramCount(t, clientReg, "istio_request_duration_milliseconds", source); n != 1 {
		t.Errorf("duration histogram count = %d, want 1", n)
	}
	// Sizes: one request and one response each side, headers included
	// (a GET has no body, but its headers are counted).
	for _, side := range []struct {
		reg interface {
			Gather() ([]*dto.MetricFamily, error)
		}
		want map[string]string
	}{{clientReg, source}, {serverReg, destination}} {
		for _, name := range []string{"istio_request_bytes", "istio_response_bytes"} {
			if n := histogramCount(t, side.reg, name, side.want); n != 1 {
				t.Errorf("%s{reporter=%q} count = %d, want 1", name, side.want["reporter"], n)
			}
			if s := histogramSum(t, side.reg, name, side.want); s <= 0 {
				t.Errorf("%s{reporter=%q} sum = %v, want > 0", name, side.want["reporter"], s)
			}
		}
	}
}

func maps(base, over map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		out[k] = v
	}
	return out
}

// assertSeries checks that istio_requests_total has exactly the label set want with value 1.
func assertSeries(t *testing.T, g interface {
	Gather() ([]*dto.MetricFamily, error)
}, want map[string]string) {
	t.Helper()
	mfs, _ := g.Gather()
	for _, mf := range mfs {
		if mf.GetName() != "istio_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if labelsEqual(m, want) && m.GetCounter().GetValue() == 1 {
				return
			}
		}
		for _, m := range mf.GetMetric() {
			t.Logf("have %v = %v", m.GetLabel(), m.GetCounter().GetValue())
		}
	}
	t.Errorf("no istio_requests_total{%v} == 1", want)
}

func histogramCount(t *testing.T, g interface {
	Gather() ([]*dto.MetricFamily, error)
}, name string, want map[string]string) uint64 {
	if h := histogram(g, name, want); h != nil {
		return h.GetSampleCount()
	}
	return 0
}

func histogramSum(t *testing.T, g interface {
	Gather() ([]*dto.MetricFamily, error)
}, name string, want map[string]string) float64 {
	if h := histogram(g, name, want); h != nil {
		return h.GetSampleSum()
	}
	return 0
}

// histogram returns the histogram name{want}, nil if there is none.
func histogram(g interface {
	Gather() ([]*dto.MetricFamily, error)
}, name string, want map[string]string) *dto.Histogram {
	mfs, _ := g.Gather()
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				if labelsEqual(m, want) {
					return m.GetHistogram()
				}
			}
		}
	}
	return nil
}

func labelsEqual(m *dto.Metric, want map[string]string) bool {
	if len(m.GetLabel()) != len(want) {
		return false
	}
	for _, lp := range m.GetLabel() {
		if v, ok := want[lp.GetName()]; !ok || v != lp.GetValue() {
			return false
		}
	}
	return true
}
