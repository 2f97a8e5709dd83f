package tracing

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
)

// rawCodec hands the server handler the request bytes as they came: the
// receiver below reads OTLP exports without decoding them, so that a
// benchmark's CPU time is the proxy's side of exporting.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = data
	return nil
}
func (rawCodec) Name() string { return "proto" }

// countingReceiver is an OTLP/gRPC trace receiver on loopback that counts
// the export requests and bytes it gets and answers each with an empty
// ExportTraceServiceResponse.
type countingReceiver struct {
	addr           string
	exports, bytes atomic.Int64
}

func newCountingReceiver(tb testing.TB) *countingReceiver {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	r := &countingReceiver{addr: ln.Addr().String()}
	srv := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}))
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: "opentelemetry.proto.collector.trace.v1.TraceService",
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: "Export", Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
			var in []byte
			if err := dec(&in); err != nil {
				return nil, err
			}
			r.exports.Add(1)
			r.bytes.Add(int64(len(in)))
			out := []byte{} // an empty response message
			return &out, nil
		}}},
	}, struct{}{})
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(ln) })
	tb.Cleanup(func() { srv.Stop(); wg.Wait() })
	return r
}

// BenchmarkSampledSpan is what one sampled request costs the proxy's
// tracing: Start (a server span, child of the caller's), End with Envoy's
// tags, and the span's share of the batch processor and the OTLP/gRPC
// export to a real receiver on loopback (which does not decode). The
// processor drops what its queue (2,048) cannot hold, so the loop flushes
// it every 1,000 spans: every span is exported (otlp-B/op is the
// encoded size per span). cpu-ns/op is the process's CPU time.
func BenchmarkSampledSpan(b *testing.B) {
	rcv := newCountingReceiver(b)
	exps := NewExporters(slog.New(slog.DiscardHandler))
	exp, err := exps.Get(ExporterKey{Protocol: OTLPGRPC, Address: rcv.addr, ServiceName: "bench.default"})
	if err != nil {
		b.Fatal(err)
	}
	c := New(Options{Exporter: exp, Inbound: true, SamplingPercent: 1, NodeID: "sidecar~127.0.0.1~bench.default~default.svc.cluster.local",
		CustomTags: []CustomTag{{Tag: "istio.canonical_service", Literal: new("bench")}}})
	h := http.Header{"User-Agent": {"bench"}, "X-Request-Id": {"7d0c4f3e-2b7a-4c1e-9f3a-5b6d7e8f9a0b"}}
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	f := Finish{Operation: "bench.default.svc.cluster.local:8080/*", Method: "GET", URL: "http://bench/api/items?size=1024",
		Protocol: "HTTP/1.1", PeerAddr: "127.0.0.1", Code: 200, Cluster: "inbound|8080||", Upstream: "127.0.0.1:18080"}
	var spans int64
	cpu := func() int64 {
		var ru syscall.Rusage
		_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
		return ru.Utime.Nano() + ru.Stime.Nano()
	}
	b.ReportAllocs()
	cpu0 := cpu()
	for b.Loop() {
		h["Traceparent"] = []string{tp}
		sp := c.Start(h, time.Now(), nil)
		sp.End(f, time.Now())
		if spans++; spans%1000 == 0 {
			_ = exp.tp.ForceFlush(context.Background())
		}
	}
	_ = exp.tp.ForceFlush(context.Background())
	b.ReportMetric(float64(cpu()-cpu0)/float64(b.N), "cpu-ns/op")
	b.StopTimer()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := exps.Shutdown(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(rcv.bytes.Load())/float64(b.N), "otlp-B/op")
}
