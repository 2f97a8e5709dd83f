package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/controlplane"
	"weft.dev/weft/internal/echo"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/testenv"
)

// The tracing tests run a real Jaeger (hack/tools.sh builds it) and send
// real requests through real sidecars, whose spans reach Jaeger over OTLP.

// tracedMesh starts a mesh whose proxies trace pct percent of the
// requests into j, over OTLP/gRPC (or OTLP/HTTP with httpPath).
func tracedMesh(t *testing.T, j *testenv.JaegerEnv, pct float64, overHTTP bool) *Mesh {
	t.Helper()
	addr := j.OTLPGRPC
	path := ""
	if overHTTP {
		addr, path = j.OTLPHTTP, "/v1/traces"
	}
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	return NewMesh(t, func(o *controlplane.Options) {
		o.Tracing = &mesh.Tracing{
			Provider:        mesh.TracingProvider{Name: "jaeger", Service: host, Port: uint32(p), HTTPPath: path},
			SamplingPercent: pct,
		}
	})
}

// waitTrace polls Jaeger until the trace with id has want spans.
func waitTrace(t *testing.T, j *testenv.JaegerEnv, id string, want int) testenv.JaegerTrace {
	t.Helper()
	var tr testenv.JaegerTrace
	Eventually(t, 30*time.Second, fmt.Sprintf("trace %s with %d spans in Jaeger", id, want), func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var err error
		if tr, err = j.Trace(ctx, id); err != nil {
			return err
		}
		if len(tr.Spans) != want {
			return fmt.Errorf("%d spans", len(tr.Spans))
		}
		return nil
	})
	return tr
}

// traceIDOf reads the trace id from a traceparent header value.
func traceIDOf(t *testing.T, traceparent string) string {
	t.Helper()
	parts := strings.Split(traceparent, "-")
	if len(parts) != 4 || len(parts[1]) != 32 {
		t.Fatalf("traceparent %q is not W3C's", traceparent)
	}
	return parts[1]
}

// spanIDOf reads the parent-id field of a traceparent.
func spanIDOf(traceparent string) string {
	parts := strings.Split(traceparent, "-")
	if len(parts) != 4 {
		return ""
	}
	return parts[2]
}

// TestObservabilityTracingJaeger: a request from a client through
// frontend (whose app calls backend, forwarding the trace headers) to
// backend shows up in Jaeger as ONE trace of four proxy spans — client
// sidecar outbound (client span), frontend inbound (server), frontend
// outbound (client), backend inbound (server) — each the child of the
// one before, named and tagged as Istio's sidecars name and tag them.
func TestObservabilityTracingJaeger(t *testing.T) {
	j := testenv.Jaeger(t)
	m := tracedMesh(t, j, 100, false)
	m.Service("backend", "HTTP", "v1")
	m.Service("frontend", "HTTP", "v1")
	client := m.Client("client")
	c := newClient()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var reply echo.Reply
	Eventually(t, 15*time.Second, "client -> frontend -> backend answers", func() error {
		code, r, err := Get(ctx, c, client, "frontend", "/checkout?cart=7", map[string]string{"x-echo-call": "backend", "x-request-id": "req-e2e-trace-1"})
		if err != nil || code != 200 || r.Upstream == nil {
			return fmt.Errorf("code %d err %v upstream %v", code, err, r.Upstream)
		}
		reply = r
		return nil
	})
	// The apps saw the trace context the proxies wrote, and the request id
	// the client chose, at both hops.
	front, back := reply.Headers, reply.Upstream.Headers
	if front["x-request-id"] != "req-e2e-trace-1" || back["x-request-id"] != "req-e2e-trace-1" {
		t.Errorf("x-request-id not kept through the hops: frontend %q backend %q", front["x-request-id"], back["x-request-id"])
	}
	tid := traceIDOf(t, front["traceparent"])
	if got := traceIDOf(t, back["traceparent"]); got != tid {
		t.Fatalf("backend's trace %s, frontend's %s: not one trace", got, tid)
	}
	if front["x-b3-traceid"] != tid || back["x-b3-traceid"] != tid || back["x-b3-sampled"] != "1" {
		t.Errorf("B3 headers: frontend %q backend %q sampled %q", front["x-b3-traceid"], back["x-b3-traceid"], back["x-b3-sampled"])
	}

	tr := waitTrace(t, j, tid, 4)
	byParent := map[string]testenv.JaegerSpan{}
	var root testenv.JaegerSpan
	for _, s := range tr.Spans {
		if s.Parent() == "" {
			root = s
			continue
		}
		if _, dup := byParent[s.Parent()]; dup {
			t.Fatalf("two spans with parent %s: not a chain", s.Parent())
		}
		byParent[s.Parent()] = s
	}
	if root.SpanID == "" {
		t.Fatalf("no root span in %+v", tr.Spans)
	}
	chain := []testenv.JaegerSpan{root}
	for len(chain) < 4 {
		next, ok := byParent[chain[len(chain)-1].SpanID]
		if !ok {
			t.Fatalf("span %s (%s) has no child; the spans: %+v", chain[len(chain)-1].SpanID, chain[len(chain)-1].OperationName, tr.Spans)
		}
		chain = append(chain, next)
	}
	const (
		frontendOp = "frontend.default.svc.cluster.local:8080/*"
		backendOp  = "backend.default.svc.cluster.local:8080/*"
	)
	want := []struct {
		service, op, kind, cluster, canonical string
	}{
		{"client.default", frontendOp, "client", "outbound|8080||frontend.default.svc.cluster.local", "client"},
		{"frontend.default", frontendOp, "server", "inbound|", "frontend"},
		{"frontend.default", backendOp, "client", "outbound|8080||backend.default.svc.cluster.local", "frontend"},
		{"backend.default", backendOp, "server", "inbound|", "backend"},
	}
	for i, s := range chain {
		w := want[i]
		name := fmt.Sprintf("span %d (%s)", i, s.OperationName)
		if svc := tr.Processes[s.ProcessID].ServiceName; svc != w.service {
			t.Errorf("%s: service %q, want %q", name, svc, w.service)
		}
		if s.OperationName != w.op {
			t.Errorf("%s: operation %q, want %q", name, s.OperationName, w.op)
		}
		tags := map[string]string{
			"span.kind": w.kind, "component": "proxy", "http.method": "GET", "http.status_code": "200",
			"response_flags": "-", "istio.canonical_service": w.canonical, "istio.namespace": "default",
			"guid:x-request-id": "req-e2e-trace-1", "http.protocol": "HTTP/1.1",
		}
		for k, v := range tags {
			if got, _ := s.Tag(k); got != v {
				t.Errorf("%s: tag %s = %q, want %q", name, k, got, v)
			}
		}
		if got, _ := s.Tag("upstream_cluster"); !strings.HasPrefix(got, w.cluster) {
			t.Errorf("%s: upstream_cluster %q, want %s…", name, got, w.cluster)
		}
		if got, _ := s.Tag("node_id"); !strings.HasPrefix(got, "sidecar~") {
			t.Errorf("%s: node_id %q", name, got)
		}
		if got, _ := s.Tag("http.url"); !strings.Contains(got, "/") {
			t.Errorf("%s: http.url %q", name, got)
		}
		if _, isErr := s.Tag("error"); isErr {
			t.Errorf("%s: a 200 marked as an error", name)
		}
	}
	if u, _ := chain[0].Tag("http.url"); u != "http://frontend/checkout?cart=7" {
		t.Errorf("client span http.url = %q", u)
	}
	// The frontend app received the context of the frontend's server span.
	if spanIDOf(front["traceparent"]) != chain[1].SpanID || spanIDOf(back["traceparent"]) != chain[3].SpanID {
		t.Errorf("apps got span ids %s and %s, the server spans are %s and %s",
			spanIDOf(front["traceparent"]), spanIDOf(back["traceparent"]), chain[1].SpanID, chain[3].SpanID)
	}

	// A 5xx is an error on both sides. (500: a 503 would be retried by
	// the client sidecar, one server span per attempt.)
	code, _, err := Get(ctx, c, client, "backend", "/fail", map[string]string{"x-echo-status": "500", "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
	if err != nil || code != 500 {
		t.Fatalf("500 request: code %d err %v", code, err)
	}
	tr = waitTrace(t, j, "0af7651916cd43dd8448eb211c80319c", 2)
	for _, s := range tr.Spans {
		if v, _ := s.Tag("error"); v != "true" {
			t.Errorf("span %s of a 500: error tag %q", s.OperationName, v)
		}
		if v, _ := s.Tag("http.status_code"); v != "500" {
			t.Errorf("span %s: http.status_code %q", s.OperationName, v)
		}
		if v, _ := s.Tag("otel.status_code"); v != "ERROR" {
			t.Errorf("span %s: otel.status_code %q, want ERROR", s.OperationName, v)
		}
		if s.Parent() == "" {
			t.Errorf("span %s: the caller's traceparent was not its parent", s.OperationName)
		}
	}
}

// TestObservabilityTracingPropagation: the trace context a client sends
// in any of the formats Envoy reads (W3C traceparent, B3 single, B3
// multi) continues through the sidecars over HTTP/1.1, h2c and gRPC; a
// caller's "not sampled" is honoured (no span, headers untouched); an
// x-request-id is generated when absent and kept when present. Spans go
// over OTLP/HTTP here.
func TestObservabilityTracingPropagation(t *testing.T) {
	j := testenv.Jaeger(t)
	m := tracedMesh(t, j, 0, true) // 0%: only the callers' decisions count
	m.Service("backend", "HTTP", "v1")
	m.Service("greeter", "GRPC", "v1")
	client := m.Client("client")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	h1 := newClient()
	h2 := &http.Client{Timeout: 5 * time.Second, Transport: &http2.Transport{AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}}}
	Eventually(t, 15*time.Second, "backend answers", func() error {
		code, _, err := Get(ctx, h1, client, "backend", "/", nil)
		if err != nil || code != 200 {
			return fmt.Errorf("code %d err %v", code, err)
		}
		return nil
	})

	const parent = "b7ad6b7169203331"
	n := 0
	newTID := func() string { n++; return fmt.Sprintf("4bf92f3577b34da6a3ce929d0e0e%04x", n) }
	formats := []struct {
		name string
		hdr  func(tid string) map[string]string
	}{
		{"w3c", func(tid string) map[string]string {
			return map[string]string{"traceparent": "00-" + tid + "-" + parent + "-01", "tracestate": "vendor=opaque"}
		}},
		{"b3-single", func(tid string) map[string]string { return map[string]string{"b3": tid + "-" + parent + "-1"} }},
		{"b3-multi", func(tid string) map[string]string {
			return map[string]string{"x-b3-traceid": tid, "x-b3-spanid": parent, "x-b3-sampled": "1"}
		}},
	}
	for _, proto := range []struct {
		name string
		c    *http.Client
		want string
	}{{"http1", h1, "HTTP/1.1"}, {"h2c", h2, "HTTP/2"}} {
		for _, f := range formats {
			t.Run(proto.name+"/"+f.name, func(t *testing.T) {
				tid := newTID()
				code, r, err := Get(ctx, proto.c, client, "backend", "/p", f.hdr(tid))
				if err != nil || code != 200 {
					t.Fatalf("code %d err %v", code, err)
				}
				got := r.Headers
				if traceIDOf(t, got["traceparent"]) != tid || got["x-b3-traceid"] != tid || got["x-b3-sampled"] != "1" {
					t.Errorf("backend got traceparent %q x-b3-traceid %q x-b3-sampled %q, want trace %s sampled",
						got["traceparent"], got["x-b3-traceid"], got["x-b3-sampled"], tid)
				}
				if f.name == "w3c" && got["tracestate"] != "vendor=opaque" {
					t.Errorf("tracestate %q not passed through", got["tracestate"])
				}
				if f.name == "b3-single" && !strings.HasPrefix(got["b3"], tid+"-") {
					t.Errorf("b3 %q: the single header is not rewritten", got["b3"])
				}
				if got["x-request-id"] == "" {
					t.Errorf("no x-request-id generated")
				}
				tr := waitTrace(t, j, tid, 2)
				for _, s := range tr.Spans {
					kind, _ := s.Tag("span.kind")
					switch kind {
					case "client":
						// http.protocol is the downstream's: the client's
						// (between the sidecars it is the cluster's).
						if p, _ := s.Tag("http.protocol"); p != proto.want {
							t.Errorf("client span: http.protocol %q, want %q", p, proto.want)
						}
						if s.Parent() != parent {
							t.Errorf("client span's parent %q, want the caller's %s", s.Parent(), parent)
						}
						if got["x-b3-parentspanid"] == "" {
							t.Errorf("no x-b3-parentspanid")
						}
					case "server":
						if spanIDOf(got["traceparent"]) != s.SpanID {
							t.Errorf("the app got span %s, the server span is %s", spanIDOf(got["traceparent"]), s.SpanID)
						}
					}
				}
			})
		}
	}

	t.Run("grpc", func(t *testing.T) {
		cc := GRPCClient(t, client, "greeter")
		WaitGRPCAnswerers(t, cc, 1)
		tid := newTID()
		md := metadata.Pairs("traceparent", "00-"+tid+"-"+parent+"-01", "x-request-id", "grpc-req-1")
		r, err := echo.Call(metadata.NewOutgoingContext(ctx, md), cc, &structpb.Struct{})
		if err != nil {
			t.Fatal(err)
		}
		got := r.GetFields()["metadata"].GetStructValue().GetFields()
		if tp := got["traceparent"].GetStringValue(); traceIDOf(t, tp) != tid || spanIDOf(tp) == parent {
			t.Errorf("greeter got traceparent %q", tp)
		}
		if got["x-request-id"].GetStringValue() != "grpc-req-1" {
			t.Errorf("x-request-id %q not kept", got["x-request-id"].GetStringValue())
		}
		tr := waitTrace(t, j, tid, 2)
		for _, s := range tr.Spans {
			if v, _ := s.Tag("http.method"); v != "POST" {
				t.Errorf("gRPC span %s: http.method %q", s.OperationName, v)
			}
			if v, _ := s.Tag("grpc.status_code"); v != "0" {
				t.Errorf("gRPC span %s: grpc.status_code %q", s.OperationName, v)
			}
		}
	})

	t.Run("not-sampled", func(t *testing.T) {
		tid := newTID()
		in := "00-" + tid + "-" + parent + "-00"
		code, r, err := Get(ctx, h1, client, "backend", "/", map[string]string{"traceparent": in})
		if err != nil || code != 200 {
			t.Fatalf("code %d err %v", code, err)
		}
		if r.Headers["traceparent"] != in {
			t.Errorf("an unsampled context was changed: %q", r.Headers["traceparent"])
		}
		// A sampled request sent after it is in Jaeger; the unsampled one
		// never is (the exporter sends in order).
		marker := newTID()
		if _, _, err := Get(ctx, h1, client, "backend", "/", map[string]string{"traceparent": "00-" + marker + "-" + parent + "-01"}); err != nil {
			t.Fatal(err)
		}
		waitTrace(t, j, marker, 2)
		if tr, err := j.Trace(ctx, tid); err == nil && len(tr.Spans) > 0 {
			t.Errorf("an unsampled request was traced: %d spans", len(tr.Spans))
		}
	})
}

// TestObservabilityTracingSampling: random_sampling 0%, 100% and 10% of
// requests that arrive without a decision are traced; the decision of
// the first sidecar holds at the next (whole traces, never half), and an
// unsampled request still carries the decision (traceparent …-00).
func TestObservabilityTracingSampling(t *testing.T) {
	j := testenv.Jaeger(t)
	for _, tc := range []struct {
		pct float64
		n   int
	}{
		{0, 200},
		{100, 60},
		// Binomial(600, 0.1): mean 60, sd 7.3; the bounds below are 5 sd
		// either side (a false failure about once in 1.7 million runs).
		{10, 600},
	} {
		t.Run(fmt.Sprintf("%v%%", tc.pct), func(t *testing.T) {
			m := tracedMesh(t, j, tc.pct, false)
			app := fmt.Sprintf("s%v-backend", tc.pct)
			from := fmt.Sprintf("s%v-client", tc.pct)
			m.Service(app, "HTTP", "v1")
			client := m.Client(from)
			c := newClient()
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			Eventually(t, 15*time.Second, "backend answers", func() error {
				code, _, err := Get(ctx, c, client, app, "/", map[string]string{"traceparent": "00-11111111111111111111111111111111-2222222222222222-00"})
				if err != nil || code != 200 {
					return fmt.Errorf("code %d err %v", code, err)
				}
				return nil
			})
			for i := range tc.n {
				code, r, err := Get(ctx, c, client, app, "/", nil)
				if err != nil || code != 200 {
					t.Fatalf("request %d: code %d err %v", i, code, err)
				}
				tp := r.Headers["traceparent"]
				if !strings.HasSuffix(tp, "-01") && !strings.HasSuffix(tp, "-00") {
					t.Fatalf("request %d: traceparent %q carries no decision", i, tp)
				}
			}
			// The marker, sampled by its caller, is exported after every
			// span before it.
			marker := fmt.Sprintf("%032x", int(tc.pct)+1000)
			if _, _, err := Get(ctx, c, client, app, "/", map[string]string{"traceparent": "00-" + marker + "-2222222222222222-01"}); err != nil {
				t.Fatal(err)
			}
			waitTrace(t, j, marker, 2)
			traces, err := j.Traces(ctx, from+".default", 5000)
			if err != nil {
				t.Fatal(err)
			}
			sampled := 0
			for _, tr := range traces {
				if tr.TraceID == marker || strings.TrimLeft(tr.TraceID, "0") == strings.TrimLeft(marker, "0") {
					continue
				}
				sampled++
				if len(tr.Spans) != 2 {
					t.Errorf("trace %s has %d spans, want 2 (client and server): the decision did not hold", tr.TraceID, len(tr.Spans))
				}
			}
			lo, hi := tc.n, tc.n
			switch tc.pct {
			case 0:
				lo, hi = 0, 0
			case 10:
				mean := float64(tc.n) * 0.1
				sd := math.Sqrt(float64(tc.n) * 0.1 * 0.9)
				lo, hi = int(math.Floor(mean-5*sd)), int(math.Ceil(mean+5*sd))
			}
			if sampled < lo || sampled > hi {
				t.Errorf("%v%% sampling traced %d of %d requests, want %d..%d", tc.pct, sampled, tc.n, lo, hi)
			}
			t.Logf("%v%%: %d of %d requests traced", tc.pct, sampled, tc.n)
		})
	}
}

// TestObservabilityTracingTelemetry: tracing configured the Istio way — an
// opentelemetry provider in the mesh config, Telemetry resources naming
// it — and changed live: no Telemetry, no tracing; a mesh-wide Telemetry
// at 100% traces every request; the same Telemetry at 0% stops new
// traces; a workload Telemetry turning span reporting off on the backend's
// server side leaves only the client's span. Nothing restarts.
func TestObservabilityTracingTelemetry(t *testing.T) {
	j := testenv.Jaeger(t)
	host, port, _ := net.SplitHostPort(j.OTLPGRPC)
	mc, _, err := config.ParseMeshConfig("mesh.yaml", []byte(fmt.Sprintf(`
extensionProviders:
- name: jaeger
  opentelemetry: {service: %q, port: %s}
`, host, port)))
	if err != nil {
		t.Fatal(err)
	}
	m := NewMesh(t, func(o *controlplane.Options) { o.MeshConfig = mc })
	m.Service("backend", "HTTP", "v1")
	client := m.Client("client")
	c := newClient()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	// traceparent the backend received for a request without context.
	got := func() (string, error) {
		code, r, err := Get(ctx, c, client, "backend", "/", nil)
		if err != nil || code != 200 {
			return "", fmt.Errorf("code %d err %v", code, err)
		}
		return r.Headers["traceparent"], nil
	}
	Eventually(t, 15*time.Second, "backend answers, untraced", func() error {
		tp, err := got()
		if err != nil {
			return err
		}
		if tp != "" {
			return fmt.Errorf("traced without a Telemetry: %q", tp)
		}
		return nil
	})

	telemetry := func(pct int) string {
		return fmt.Sprintf(`apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  tracing:
  - providers: [{name: jaeger}]
    randomSamplingPercentage: %d
    customTags:
      team: {literal: {value: platform}}
`, pct)
	}
	// spans waits (up to 3 s: three flushes) for the trace of tp to have
	// want spans and returns how many it has.
	spans := func(tp string, want int) int {
		n := 0
		for range 30 {
			if tr, err := j.Trace(ctx, traceIDOf(t, tp)); err == nil {
				if n = len(tr.Spans); n >= want {
					return n
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		return n
	}
	m.WriteConfig("telemetry.yaml", telemetry(100))
	var tp string
	// Each proxy gets the change on its own: until both have it a trace
	// may miss a span. Each try sends a new request.
	Eventually(t, 30*time.Second, "a mesh-wide Telemetry at 100% traces both sides", func() error {
		var err error
		if tp, err = got(); err != nil {
			return err
		}
		if !strings.HasSuffix(tp, "-01") {
			return fmt.Errorf("traceparent %q", tp)
		}
		if n := spans(tp, 2); n != 2 {
			return fmt.Errorf("%d spans", n)
		}
		return nil
	})
	tr := waitTrace(t, j, traceIDOf(t, tp), 2)
	for _, s := range tr.Spans {
		if v, _ := s.Tag("team"); v != "platform" {
			t.Errorf("span %s: custom tag team = %q", s.OperationName, v)
		}
	}

	m.WriteConfig("telemetry.yaml", telemetry(0))
	Eventually(t, 15*time.Second, "the Telemetry at 0% stops tracing", func() error {
		var err error
		if tp, err = got(); err != nil {
			return err
		}
		if !strings.HasSuffix(tp, "-00") {
			return fmt.Errorf("traceparent %q", tp)
		}
		return nil
	})

	m.WriteConfig("telemetry.yaml", telemetry(100)+`---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: backend-quiet, namespace: default}
spec:
  selector: {matchLabels: {app: backend}}
  tracing:
  - match: {mode: SERVER}
    disableSpanReporting: true
`)
	Eventually(t, 30*time.Second, "the backend's server side stops reporting", func() error {
		tp, err := got()
		if err != nil {
			return err
		}
		if !strings.HasSuffix(tp, "-01") {
			return fmt.Errorf("traceparent %q: the client side does not trace", tp)
		}
		// The client's span arrives; the backend's must not, within the
		// same three flushes that brought both before.
		if n := spans(tp, 2); n != 1 {
			return fmt.Errorf("%d spans: the backend still reports", n)
		}
		tr, err := j.Trace(ctx, traceIDOf(t, tp))
		if err != nil {
			return err
		}
		if k, _ := tr.Spans[0].Tag("span.kind"); k != "client" {
			return fmt.Errorf("the span is a %s span", k)
		}
		return nil
	})
}
