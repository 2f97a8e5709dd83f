package tracing

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func recorder() (*Exporter, *tracetest.SpanRecorder) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	return &Exporter{tp: tp, tracer: tp.Tracer("test")}, rec
}

func TestExtract(t *testing.T) {
	const tid = "4bf92f3577b34da6a3ce929d0e0e4736"
	const sid = "00f067aa0ba902b7"
	tests := []struct {
		name    string
		h       http.Header
		valid   bool
		decided sampling
		b3One   bool
	}{
		{"none", http.Header{}, false, samplingNone, false},
		{"w3c sampled", http.Header{"Traceparent": {"00-" + tid + "-" + sid + "-01"}}, true, samplingKeep, false},
		{"w3c not sampled", http.Header{"Traceparent": {"00-" + tid + "-" + sid + "-00"}}, true, samplingDrop, false},
		{"w3c bad version ff", http.Header{"Traceparent": {"ff-" + tid + "-" + sid + "-01"}}, false, samplingNone, false},
		{"w3c zero trace id", http.Header{"Traceparent": {"00-" + strings.Repeat("0", 32) + "-" + sid + "-01"}}, false, samplingNone, false},
		{"w3c future version longer", http.Header{"Traceparent": {"01-" + tid + "-" + sid + "-01-extra"}}, true, samplingKeep, false},
		{"w3c wins over b3", http.Header{"Traceparent": {"00-" + tid + "-" + sid + "-00"}, "X-B3-Sampled": {"1"}}, true, samplingDrop, false},
		{"b3 single", http.Header{"B3": {tid + "-" + sid + "-1"}}, true, samplingKeep, true},
		{"b3 single with parent", http.Header{"B3": {tid + "-" + sid + "-0-" + sid}}, true, samplingDrop, true},
		{"b3 single deferred", http.Header{"B3": {tid + "-" + sid}}, true, samplingNone, true},
		{"b3 single 64-bit", http.Header{"B3": {"a3ce929d0e0e4736-" + sid + "-d"}}, true, samplingKeep, true},
		{"b3 single deny only", http.Header{"B3": {"0"}}, false, samplingDrop, true},
		{"b3 multi", http.Header{"X-B3-Traceid": {tid}, "X-B3-Spanid": {sid}, "X-B3-Sampled": {"1"}}, true, samplingKeep, false},
		{"b3 multi debug", http.Header{"X-B3-Traceid": {tid}, "X-B3-Spanid": {sid}, "X-B3-Flags": {"1"}}, true, samplingKeep, false},
		{"b3 sampled only", http.Header{"X-B3-Sampled": {"0"}}, false, samplingDrop, false},
		{"garbage", http.Header{"Traceparent": {"nonsense"}, "B3": {"x-y"}}, false, samplingNone, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := extract(tt.h)
			if p.valid != tt.valid || p.decided != tt.decided || p.b3One != tt.b3One {
				t.Errorf("extract = valid %v decided %v b3One %v, want %v %v %v", p.valid, p.decided, p.b3One, tt.valid, tt.decided, tt.b3One)
			}
			if p.valid && !strings.HasSuffix(tid, p.tid.String()[16:]) {
				t.Errorf("trace id %s", p.tid)
			}
		})
	}
}

func TestInjectRoundTrip(t *testing.T) {
	tid, _ := parseTraceID("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := parseSpanID("00f067aa0ba902b7")
	pid, _ := parseSpanID("1111111111111111")
	for _, sampled := range []bool{true, false} {
		h := http.Header{"B3": {"old"}, "X-B3-Flags": {"1"}}
		inject(h, tid, sid, pid, sampled, true)
		want := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0"
		if got := h.Get("traceparent"); got != want+map[bool]string{true: "1", false: "0"}[sampled] {
			t.Errorf("traceparent = %q", got)
		}
		if h.Get("x-b3-traceid") != tid.String() || h.Get("x-b3-spanid") != sid.String() || h.Get("x-b3-parentspanid") != pid.String() {
			t.Errorf("b3 multi = %v", h)
		}
		if h.Get("x-b3-flags") != "" {
			t.Errorf("x-b3-flags kept: %v", h)
		}
		state := map[bool]string{true: "1", false: "0"}[sampled]
		if got := h.Get("b3"); got != tid.String()+"-"+sid.String()+"-"+state+"-"+pid.String() {
			t.Errorf("b3 = %q", got)
		}
		// Each format read back gives the same context.
		for _, hdr := range []string{"Traceparent", "B3", "X-B3-Traceid"} {
			hh := http.Header{}
			for k, v := range h {
				if k == hdr || (hdr == "X-B3-Traceid" && strings.HasPrefix(k, "X-B3-")) {
					hh[k] = v
				}
			}
			p := extract(hh)
			if !p.valid || p.tid != tid || p.sid != sid || (p.decided == samplingKeep) != sampled {
				t.Errorf("%s read back: %+v", hdr, p)
			}
		}
	}
	// Without a parent, no x-b3-parentspanid and no b3 single unless asked.
	h := http.Header{"X-B3-Parentspanid": {"stale"}}
	inject(h, tid, sid, trace.SpanID{}, true, false)
	if _, ok := h["X-B3-Parentspanid"]; ok {
		t.Errorf("stale parent kept: %v", h)
	}
	if _, ok := h["B3"]; ok {
		t.Errorf("b3 single added: %v", h)
	}
}

func TestStartSampling(t *testing.T) {
	exp, rec := recorder()
	off := New(Options{Exporter: exp, SamplingPercent: 0})
	on := New(Options{Exporter: exp, SamplingPercent: 100, Inbound: true})
	reqID := func() string { return "generated-id" }

	// Not sampled, no context: a decision is sent on, no span.
	h := http.Header{}
	if sp := off.Start(h, time.Now(), reqID); sp != nil {
		t.Fatal("0% sampled a request")
	}
	p := extract(h)
	if !p.valid || p.decided != samplingDrop || h.Get("x-b3-sampled") != "0" || len(h) != 2 {
		t.Errorf("unsampled request carries %v", h)
	}
	// An app forwarding only B3 keeps the decision too.
	if p := extract(http.Header{"X-B3-Sampled": h["X-B3-Sampled"]}); p.decided != samplingDrop {
		t.Errorf("x-b3-sampled alone: %+v", p)
	}
	// B3 ids without a decision: ids kept, the decision added.
	h = http.Header{"X-B3-Traceid": {"4bf92f3577b34da6a3ce929d0e0e4736"}, "X-B3-Spanid": {"00f067aa0ba902b7"}}
	off.Start(h, time.Now(), reqID)
	if p := extract(h); p.tid.String() != "4bf92f3577b34da6a3ce929d0e0e4736" || p.decided != samplingDrop || h.Get("x-b3-traceid") != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("deferred B3 not sampled: %v", h)
	}
	if h.Get("x-request-id") != "" {
		t.Errorf("x-request-id added to an unsampled request")
	}
	// Not sampled with the caller's decision: headers untouched.
	in := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
	h = http.Header{"Traceparent": {in}}
	if sp := on.Start(h, time.Now(), reqID); sp != nil || h.Get("traceparent") != in || len(h) != 1 {
		t.Errorf("caller's 'not sampled' not honoured: %v", h)
	}
	// x-envoy-force-trace and x-client-trace-id sample a request no
	// caller decided on, at 0% too; the caller's "not sampled" still wins.
	for _, hdr := range []string{"X-Envoy-Force-Trace", "X-Client-Trace-Id"} {
		h = http.Header{hdr: {"1"}}
		sp := off.Start(h, time.Now(), reqID)
		if sp == nil || extract(h).decided != samplingKeep {
			t.Errorf("%s did not force a trace: %v", hdr, h)
		} // not ended: the spans below are counted
		h = http.Header{hdr: {"1"}, "Traceparent": {in}}
		if sp := off.Start(h, time.Now(), reqID); sp != nil {
			t.Errorf("%s overrode the caller's decision", hdr)
		}
	}
	// The caller's "sampled" wins over 0%.
	h = http.Header{"Traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}, "X-Request-Id": {"rid"}}
	sp := off.Start(h, time.Now(), reqID)
	if sp == nil {
		t.Fatal("caller's 'sampled' not honoured")
	}
	p = extract(h)
	if p.tid.String() != "4bf92f3577b34da6a3ce929d0e0e4736" || p.sid.String() == "00f067aa0ba902b7" || p.decided != samplingKeep {
		t.Errorf("outgoing context %v", h)
	}
	if h.Get("x-b3-parentspanid") != "00f067aa0ba902b7" || h.Get("x-request-id") != "rid" {
		t.Errorf("headers %v", h)
	}
	sp.End(Finish{Operation: "op", Code: 200}, time.Now())
	spans := rec.Ended()
	if len(spans) != 1 {
		t.Fatalf("%d spans", len(spans))
	}
	s := spans[0]
	if s.Parent().SpanID().String() != "00f067aa0ba902b7" || !s.Parent().IsRemote() || s.SpanContext().SpanID() != p.sid || s.SpanKind() != trace.SpanKindClient {
		t.Errorf("span parent %v kind %v", s.Parent(), s.SpanKind())
	}
	// 100%: a new root, x-request-id generated.
	h = http.Header{}
	if sp := on.Start(h, time.Now(), reqID); sp == nil {
		t.Fatal("100% did not sample")
	} else {
		sp.End(Finish{Operation: "op", Code: 503}, time.Now())
	}
	if h.Get("x-request-id") != "generated-id" {
		t.Errorf("x-request-id = %q", h.Get("x-request-id"))
	}
	s = rec.Ended()[1]
	if s.Parent().IsValid() || s.SpanKind() != trace.SpanKindServer || s.Status().Code != codes.Error {
		t.Errorf("root span: parent %v kind %v status %v", s.Parent(), s.SpanKind(), s.Status())
	}
}

func TestSpanAttributes(t *testing.T) {
	exp, rec := recorder()
	lit := "frontend"
	t.Setenv("WEFT_TEST_TAG_ENV", "from-env")
	c := New(Options{Exporter: exp, SamplingPercent: 100, NodeID: "sidecar~127.0.0.1~fe.default~default.svc.cluster.local", Zone: "z1",
		MaxPathTagLength: 20, // "http://backend:8080/"
		CustomTags: []CustomTag{
			{Tag: "istio.canonical_service", Literal: &lit},
			{Tag: "env", Environment: "WEFT_TEST_TAG_ENV"},
			{Tag: "missing-env", Environment: "WEFT_TEST_TAG_UNSET", Default: "dflt"},
			{Tag: "hdr", RequestHeader: "x-custom"},
			{Tag: "hdr-default", RequestHeader: "x-absent", Default: "none"},
		}})
	h := http.Header{"X-Custom": {"v"}, "User-Agent": {"ua"}}
	sp := c.Start(h, time.Now(), func() string { return "rid" })
	sp.End(Finish{Operation: "backend.default.svc.cluster.local:8080/*", Method: "GET", URL: "http://backend:8080/a/very/long/path/indeed",
		Protocol: "HTTP/1.1", PeerAddr: "127.0.0.1", Code: 200, Flags: "", Cluster: "outbound|8080||backend.default.svc.cluster.local", Upstream: "127.0.0.9:8080"}, time.Now())
	s := rec.Ended()[0]
	if s.Name() != "backend.default.svc.cluster.local:8080/*" {
		t.Errorf("name %q", s.Name())
	}
	got := map[string]string{}
	for _, kv := range s.Attributes() {
		got[string(kv.Key)] = kv.Value.Emit()
	}
	want := map[string]string{
		"component": "proxy", "node_id": "sidecar~127.0.0.1~fe.default~default.svc.cluster.local", "zone": "z1",
		"istio.canonical_service": "frontend", "env": "from-env", "missing-env": "dflt", "hdr": "v", "hdr-default": "none",
		"guid:x-request-id": "rid", "http.url": "http://backend:8080/", "http.method": "GET", "http.protocol": "HTTP/1.1",
		"downstream_cluster": "-", "user_agent": "ua", "peer.address": "127.0.0.1", "http.status_code": "200", "response_flags": "-",
		"upstream_cluster": "outbound|8080||backend.default.svc.cluster.local", "upstream_cluster.name": "outbound|8080||backend.default.svc.cluster.local",
		"upstream_address": "127.0.0.9:8080",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if _, ok := got["error"]; ok || s.Status().Code == codes.Error {
		t.Errorf("200 marked as error")
	}
	_ = attribute.Key("")

	// End reuses its attribute list: a second span's values must not
	// show through the first's; codes outside 100-599 are still written.
	for _, code := range []int{503, 999} {
		sp := c.Start(http.Header{}, time.Now(), nil)
		sp.End(Finish{Operation: "other", Method: "POST", URL: "http://x/", Code: code, Cluster: "c2"}, time.Now())
	}
	for i, want := range map[int][2]string{0: {"200", "GET"}, 1: {"503", "POST"}, 2: {"999", "POST"}} {
		attrs := map[string]string{}
		for _, kv := range rec.Ended()[i].Attributes() {
			attrs[string(kv.Key)] = kv.Value.Emit()
		}
		if attrs["http.status_code"] != want[0] || attrs["http.method"] != want[1] {
			t.Errorf("span %d: status %q method %q, want %q", i, attrs["http.status_code"], attrs["http.method"], want)
		}
	}
}

func TestRandomSamplingRate(t *testing.T) {
	exp, _ := recorder()
	c := New(Options{Exporter: exp, SamplingPercent: 10})
	n, kept := 20000, 0
	for range n {
		h := http.Header{}
		if sp := c.Start(h, time.Now(), nil); sp != nil {
			kept++
		}
	}
	// Binomial(20000, 0.1): sd = 42.4; 6 sd either side.
	if kept < 2000-255 || kept > 2000+255 {
		t.Errorf("10%% sampling kept %d of %d", kept, n)
	}
}

// BenchmarkStartUnsampled: Start for a request that is not sampled (0%),
// one that came without a trace context (the decision is written: two
// headers) and one that came with "not sampled" (nothing is written).
// The header map is reused; only what Start adds is measured.
func BenchmarkStartUnsampled(b *testing.B) {
	exp, _ := recorder()
	c := New(Options{Exporter: exp, SamplingPercent: 0})
	for _, tc := range []struct {
		name string
		in   string // traceparent the request came with
	}{{"no-context", ""}, {"decided", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"}} {
		b.Run(tc.name, func(b *testing.B) {
			h := http.Header{"User-Agent": {"bench"}, "Accept": {"*/*"}, "X-Request-Id": {"7d0c4f3e-2b7a-4c1e-9f3a-5b6d7e8f9a0b"}}
			if tc.in != "" {
				h["Traceparent"] = []string{tc.in}
			}
			b.ReportAllocs()
			for b.Loop() {
				if tc.in == "" {
					delete(h, "Traceparent")
					delete(h, "X-B3-Sampled")
				}
				if c.Start(h, time.Time{}, nil) != nil {
					b.Fatal("sampled")
				}
			}
		})
	}
}
