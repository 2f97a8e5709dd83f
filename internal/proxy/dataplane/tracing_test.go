package dataplane

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tracingtype "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	xdstype "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"

	"weft.dev/weft/internal/xds/contract"
)

// otlpSink is an OTLP/gRPC trace receiver on loopback that keeps the
// spans it receives (keep=false: counts and drops them).
type otlpSink struct {
	collectorpb.UnimplementedTraceServiceServer
	addr  string
	keep  bool
	mu    sync.Mutex
	spans []*tracepb.Span
	svc   []string // service.name of each kept span
	count int
}

func newOTLPSink(t testing.TB, keep bool) *otlpSink {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &otlpSink{addr: ln.Addr().String(), keep: keep}
	srv := grpc.NewServer()
	collectorpb.RegisterTraceServiceServer(srv, s)
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(ln) })
	t.Cleanup(func() { srv.Stop(); wg.Wait() })
	return s
}

func (s *otlpSink) Export(_ context.Context, req *collectorpb.ExportTraceServiceRequest) (*collectorpb.ExportTraceServiceResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		var svc string
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				svc = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			s.count += len(ss.GetSpans())
			if s.keep {
				for _, sp := range ss.GetSpans() {
					s.spans = append(s.spans, sp)
					s.svc = append(s.svc, svc)
				}
			}
		}
	}
	return &collectorpb.ExportTraceServiceResponse{}, nil
}

// tracedListener is httpListener with tracing to the cluster "otel" at pct.
func tracedListener(t testing.TB, l *listener.Listener, pct float64) *listener.Listener {
	t.Helper()
	f := l.GetFilterChains()[0].GetFilters()[0]
	var m hcm.HttpConnectionManager
	if err := f.GetTypedConfig().UnmarshalTo(&m); err != nil {
		t.Fatal(err)
	}
	m.Tracing = &hcm.HttpConnectionManager_Tracing{
		RandomSampling: &xdstype.Percent{Value: pct},
		CustomTags: []*tracingtype.CustomTag{{Tag: "istio.canonical_service",
			Type: &tracingtype.CustomTag_Literal_{Literal: &tracingtype.CustomTag_Literal{Value: "bench"}}}},
		Provider: &tracev3.Tracing_Http{Name: "envoy.tracers.opentelemetry", ConfigType: &tracev3.Tracing_Http_TypedConfig{
			TypedConfig: mustAny(t, &tracev3.OpenTelemetryConfig{ServiceName: "bench.default", GrpcService: &core.GrpcService{
				TargetSpecifier: &core.GrpcService_EnvoyGrpc_{EnvoyGrpc: &core.GrpcService_EnvoyGrpc{ClusterName: "otel"}}}}),
		}},
	}
	f.ConfigType = &listener.Filter_TypedConfig{TypedConfig: mustAny(t, &m)}
	return l
}

// TestTracingExportsSpans: an inbound listener with
// HttpConnectionManager.tracing exports a server span per request to the
// OTLP collector its cluster names, child of the caller's span, tagged as
// Envoy tags it; the upstream sees the new context.
func TestTracingExportsSpans(t *testing.T) {
	sink := newOTLPSink(t, true)
	var got http.Header
	up := newUpstream(t, func(w http.ResponseWriter, r *http.Request) { got = r.Header.Clone(); io.WriteString(w, "ok") })
	d := newDataplane(t, contract.Identity{ID: "sidecar~127.0.0.1~bench.default~default.svc.cluster.local", WorkloadName: "bench", Namespace: "default"}, nil)
	mustApply(t, d, resourcesAny(staticCluster(t, "inbound|8080||", up), staticCluster(t, "otel", sink.addr),
		tracedListener(t, httpListener(t, "in", core.TrafficDirection_INBOUND, "",
			routeConfig("inbound|8080||", vhost("inbound|http|8080", []string{"*"}, toCluster("default", prefixMatch("/"), "inbound|8080||")))), 0)))
	req, _ := http.NewRequest("GET", "http://"+d.ListenerAddr("in").String()+"/x?y=1", nil)
	req.Host = "bench"
	req.Header.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(got.Get("traceparent"), "00-4bf92f3577b34da6a3ce929d0e0e4736-") || got.Get("x-request-id") == "" {
		t.Fatalf("upstream got traceparent %q x-request-id %q", got.Get("traceparent"), got.Get("x-request-id"))
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		sink.mu.Lock()
		n := len(sink.spans)
		sink.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no span exported within 10s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	sp := sink.spans[0]
	if sp.GetKind() != tracepb.Span_SPAN_KIND_SERVER || sink.svc[0] != "bench.default" || sp.GetName() != "ingress" {
		t.Errorf("span kind %v service %q name %q", sp.GetKind(), sink.svc[0], sp.GetName())
	}
	if string(sp.GetParentSpanId()) != "\x00\xf0\x67\xaa\x0b\xa9\x02\xb7" {
		t.Errorf("parent %x", sp.GetParentSpanId())
	}
	attrs := map[string]string{}
	for _, a := range sp.GetAttributes() {
		attrs[a.GetKey()] = a.GetValue().GetStringValue()
	}
	for k, v := range map[string]string{"istio.canonical_service": "bench", "http.status_code": "200", "upstream_cluster": "inbound|8080||",
		"http.url": "http://bench/x?y=1", "node_id": "sidecar~127.0.0.1~bench.default~default.svc.cluster.local", "component": "proxy",
		"guid:x-request-id": got.Get("x-request-id")} {
		if attrs[k] != v {
			t.Errorf("%s = %q, want %q", k, attrs[k], v)
		}
	}
}

// TestTracingUnknownCollectorNACKed: tracing whose cluster is missing is
// refused with a message naming the field; the proxy keeps its config.
func TestTracingUnknownCollectorNACKed(t *testing.T) {
	d := newDataplane(t, contract.Identity{WorkloadName: "bench", Namespace: "default"}, nil)
	err := d.Apply(resourcesAny(staticCluster(t, "inbound|8080||", "127.0.0.1:1"),
		tracedListener(t, httpListener(t, "in", core.TrafficDirection_INBOUND, "",
			routeConfig("inbound|8080||", vhost("inbound|http|8080", []string{"*"}, toCluster("default", prefixMatch("/"), "inbound|8080||")))), 1)))
	if err == nil || !strings.Contains(err.Error(), `tracing.provider.typed_config.grpc_service.envoy_grpc: cluster "otel" not found`) {
		t.Fatalf("Apply = %v", err)
	}
}

// BenchmarkForwardHTTP1Tracing is BenchmarkForwardHTTP1's serial case
// with the listener traced: off, 1% and 100% of requests sampled, spans
// exported over OTLP/gRPC to a loopback sink that drops them.
func BenchmarkForwardHTTP1Tracing(b *testing.B) {
	body := strings.Repeat("x", 1024)
	up := newUpstream(b, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, body)
	})
	sink := newOTLPSink(b, false)
	for _, tc := range []struct {
		name string
		pct  float64
	}{{"off", -1}, {"1pct", 1}, {"100pct", 100}} {
		b.Run(tc.name, func(b *testing.B) {
			d := newDataplane(b, contract.Identity{WorkloadName: "bench", Namespace: "default"}, nil)
			l := httpListener(b, "in", core.TrafficDirection_INBOUND, "",
				routeConfig("inbound|8080||", vhost("inbound|http|8080", []string{"*"}, toCluster("default", prefixMatch("/"), "inbound|8080||"))))
			if tc.pct >= 0 {
				l = tracedListener(b, l, tc.pct)
			}
			mustApply(b, d, resourcesAny(staticCluster(b, "inbound|8080||", up), staticCluster(b, "otel", sink.addr), l))
			url := "http://" + d.ListenerAddr("in").String() + "/?size=1024"
			tr := &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true}
			defer tr.CloseIdleConnections()
			c := &http.Client{Transport: tr}
			req, _ := http.NewRequest("GET", url, nil)
			req.Host = "bench"
			get := func() {
				resp, err := c.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				n, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || n != 1024 {
					b.Fatalf("got %d, %d bytes", resp.StatusCode, n)
				}
			}
			get()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				get()
			}
		})
	}
}

// newUpstream serves h on a loopback port until t ends; it returns the
// address.
func newUpstream(t testing.TB, h http.HandlerFunc) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(ln) })
	t.Cleanup(func() { srv.Close(); wg.Wait() })
	return ln.Addr().String()
}
