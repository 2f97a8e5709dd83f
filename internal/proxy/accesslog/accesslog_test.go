package accesslog

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func entry() *Entry {
	r, _ := http.NewRequest("GET", "http://reviews:9080/api/v1?x=1", nil)
	r.Header.Set("User-Agent", "curl/8")
	r.Header.Set("X-Request-Id", "abc")
	r.Header.Set("X-Forwarded-For", "10.0.0.9")
	return &Entry{
		Start:    time.Date(2024, 5, 1, 10, 0, 0, 123456789, time.UTC),
		Duration: 42 * time.Millisecond, Request: r, Code: 503, Flags: "UF,URX",
		ResponseHeader: http.Header{"Content-Type": {"text/plain"}},
		BytesReceived:  0, BytesSent: 91, UpstreamHost: "10.0.0.2:9080", UpstreamCluster: "outbound|9080||reviews.default.svc.cluster.local",
		RouteName: "default", UpstreamFailure: "dial tcp: connection refused",
		DownstreamRemote: netip.MustParseAddrPort("127.0.0.1:5555"), DownstreamLocal: netip.MustParseAddrPort("127.0.0.1:15001"),
	}
}

// TestFormats: Envoy's and Istio's default formats render as Envoy does;
// operators take alternatives and lengths; missing values are "-".
func TestFormats(t *testing.T) {
	for _, c := range []struct{ format, want string }{
		{"", `[2024-05-01T10:00:00.123Z] "GET /api/v1?x=1 HTTP/1.1" 503 UF,URX 0 91 42 - "10.0.0.9" "curl/8" "abc" "reviews:9080" "10.0.0.2:9080"` + "\n"},
		{IstioDefaultFormat, `[2024-05-01T10:00:00.123Z] "GET /api/v1?x=1 HTTP/1.1" 503 UF,URX upstream_reset_before_response_started{connection_failure} - "dial tcp: connection refused" 0 91 42 - "10.0.0.9" "curl/8" "abc" "reviews:9080" "10.0.0.2:9080" outbound|9080||reviews.default.svc.cluster.local - 127.0.0.1:15001 127.0.0.1:5555 - default` + "\n"},
		{"%REQ(X-MISSING?USER-AGENT)% %REQ(USER-AGENT):4% %RESP(CONTENT-TYPE)% %REQ_WITHOUT_QUERY(:PATH)% %REQ(:METHOD)%", "curl/8 curl text/plain /api/v1 GET"},
		{"%START_TIME(%Y/%m/%d %H:%M:%S.%3f %s)% %START_TIME(%E6S)%", "2024/05/01 10:00:00.123 1714557600 00.123456"},
		{"%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %REQUESTED_SERVER_NAME% %ROUTE_NAME%", "127.0.0.1 - default"},
	} {
		f, err := ParseText(c.format)
		if err != nil {
			t.Fatalf("%q: %v", c.format, err)
		}
		if got := string(f.Append(nil, entry())); got != c.want {
			t.Errorf("%q:\n got %q\nwant %q", c.format, got, c.want)
		}
	}
	for _, c := range []struct{ format, want string }{
		{"%FOO%", "unknown command operator %FOO%"},
		{"100% sure", "starts no command operator"},
		{"%REQ()%", "needs a header name"},
		{"%REQ(x-a)", "missing the closing %"},
		{"%DURATION(x)%", "takes no argument"},
		{"%START_TIME(%Q)%", "unsupported conversion %Q"},
		{"%REQ(a):0%", "invalid length"},
	} {
		if _, err := ParseText(c.format); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want %q", c.format, err, c.want)
		}
	}
}

// TestJSONFormat: typed numbers, null for missing values, escaping.
func TestJSONFormat(t *testing.T) {
	f, err := ParseJSONMap(IstioDefaultJSON)
	if err != nil {
		t.Fatal(err)
	}
	e := entry()
	e.Request.Header.Set("User-Agent", "quote\" back\\ nl\n \x01 é")
	line := f.Append(nil, e)
	if !bytes.HasSuffix(line, []byte("}\n")) {
		t.Fatalf("line %q", line)
	}
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		t.Fatalf("%v: %s", err, line)
	}
	for k, v := range map[string]any{"response_code": float64(503), "bytes_sent": float64(91), "duration": float64(42),
		"method": "GET", "path": "/api/v1?x=1", "upstream_service_time": nil, "user_agent": "quote\" back\\ nl\n \x01 é",
		"response_flags": "UF,URX", "start_time": "2024-05-01T10:00:00.123Z"} {
		if m[k] != v {
			t.Errorf("%s = %#v, want %#v", k, m[k], v)
		}
	}
}

// TestFilters: Envoy's filter semantics.
func TestFilters(t *testing.T) {
	e := entry()
	f := &Filter{kind: fOr, children: []*Filter{{kind: fStatus, cmp: 1 /* GE */, value: 500}, {kind: fDuration, cmp: 1, value: 1000}}}
	if !f.Match(e) {
		t.Error("503 not matched by >= 500")
	}
	e.Code = 200
	if f.Match(e) {
		t.Error("200 in 42ms matched")
	}
	if !(&Filter{kind: fFlags, flags: []string{"URX"}}).Match(e) || (&Filter{kind: fFlags, flags: []string{"UH"}}).Match(e) {
		t.Error("response flag filter")
	}
	var none *Filter
	if !none.Match(e) {
		t.Error("nil filter must match")
	}
}

// slowWriter blocks every write until released.
type slowWriter struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	release chan struct{}
}

func (w *slowWriter) Write(p []byte) (int, error) {
	<-w.release
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *slowWriter) Close() error { return nil }

// TestSinkDropsWhenFull: a sink that cannot keep up never blocks Log; the
// lines beyond its queue are dropped and counted; the rest are written in
// order.
func TestSinkDropsWhenFull(t *testing.T) {
	w := &slowWriter{release: make(chan struct{})}
	reg := prometheus.NewRegistry()
	sinks, err := NewSinks(SinksOptions{Registerer: reg, QueueLines: 4, Open: func(string) (io.WriteCloser, error) { return w, nil }})
	if err != nil {
		t.Fatal(err)
	}
	k, err := sinks.Open("/slow")
	if err != nil {
		t.Fatal(err)
	}
	f, _ := ParseText("%RESPONSE_CODE%\n")
	lg := NewLogger(nil, f, k)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 100 {
			e := entry()
			e.Code = 100 + i
			lg.Log(e)
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Log blocked on a slow sink")
	}
	close(w.release)
	sinks.Close()
	dropped, written := counter(t, reg, MetricDropped), counter(t, reg, MetricWritten)
	lines := strings.Fields(w.buf.String())
	// How many lines the writer takes before its first write blocks
	// depends on scheduling (a busy machine let 12 through); most must be
	// dropped, and every line is either written or counted as dropped.
	if dropped < 50 || int(written) != len(lines) || int(dropped)+len(lines) != 100 {
		t.Errorf("dropped %v, written %v, lines %d", dropped, written, len(lines))
	}
	for i := 1; i < len(lines); i++ {
		if lines[i] <= lines[i-1] {
			t.Errorf("out of order: %v", lines)
		}
	}
}

// BenchmarkLog: rendering and queueing one line, Envoy's default format.
func BenchmarkLog(b *testing.B) {
	sinks, _ := NewSinks(SinksOptions{Open: func(string) (io.WriteCloser, error) { return nopCloser{io.Discard}, nil }})
	defer sinks.Close()
	k, _ := sinks.Open("x")
	f, _ := ParseText("")
	lg := NewLogger(nil, f, k)
	e := entry()
	b.ReportAllocs()
	for b.Loop() {
		lg.Log(e)
	}
}

func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// BenchmarkFormat: rendering one line (no queue) in Envoy's default text
// format, Istio's text format and Istio's JSON format, for a request
// whose path has a query.
func BenchmarkFormat(b *testing.B) {
	istioJSON, err := ParseJSONMap(IstioDefaultJSON)
	if err != nil {
		b.Fatal(err)
	}
	envoyText, _ := ParseText("")
	istioText, _ := ParseText(IstioDefaultFormat)
	for _, c := range []struct {
		name string
		f    *Format
	}{{"envoy-text", envoyText}, {"istio-text", istioText}, {"istio-json", istioJSON}} {
		b.Run(c.name, func(b *testing.B) {
			e := entry()
			buf := make([]byte, 0, 1024)
			b.ReportAllocs()
			for b.Loop() {
				buf = c.f.Append(buf[:0], e)
			}
		})
	}
}

// TestJSONEscaping: every string field is valid JSON that decodes to the
// value, an invalid UTF-8 byte becoming U+FFFD, whether the value is one
// operator, operators mixed with text, short or longer than the escape
// buffer.
func TestJSONEscaping(t *testing.T) {
	f, err := ParseJSONMap(map[string]string{"ua": "%REQ(USER-AGENT)%", "mixed": "<%REQ(USER-AGENT)%>"})
	if err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("abc\"def\\", 100)
	for _, v := range []string{"plain", "", "quote\" back\\ nl\n cr\r tab\t \x01 \x1f é ü 日本", "bad \xff\xfe utf8 \xc3", long, strings.Repeat("é", 400) + "\n"} {
		e := entry()
		e.Request.Header["User-Agent"] = []string{v}
		line := f.Append(nil, e)
		if !json.Valid(line) {
			t.Fatalf("%q: invalid JSON %q", v, line)
		}
		var got map[string]any
		if err := json.Unmarshal(line, &got); err != nil {
			t.Fatal(err)
		}
		var want strings.Builder
		for _, r := range v { // an invalid byte ranges as U+FFFD, one per byte
			want.WriteRune(r)
		}
		if v == "" {
			if got["ua"] != nil || got["mixed"] != "<->" { // missing: null alone, "-" in text
				t.Errorf("empty: %q", line)
			}
			continue
		}
		if got["ua"] != want.String() || got["mixed"] != "<"+want.String()+">" {
			t.Errorf("%q: got %q", v, line)
		}
	}
}

// TestStartTime: %START_TIME%'s fast path writes what time's layout does.
func TestStartTime(t *testing.T) {
	for _, tm := range []time.Time{
		time.Date(2024, 5, 1, 10, 0, 0, 123456789, time.UTC),
		time.Date(1999, 12, 31, 23, 59, 59, 999999999, time.UTC),
		time.Date(2026, 1, 2, 3, 4, 5, 6000000, time.FixedZone("x", -7*3600)),
		time.Date(9, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(12345, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Unix(0, 0),
	} {
		want := tm.UTC().Format(defaultTimeLayout)
		if got := string(appendStartTime(nil, tm)); got != want {
			t.Errorf("%v: %q, want %q", tm, got, want)
		}
	}
}

// TestPathAlternative: %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% (Istio's
// path) is the original path when the header is set, else :path with
// its query; %REQ_WITHOUT_QUERY% drops the query either way.
func TestPathAlternative(t *testing.T) {
	f, err := ParseText("%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %REQ_WITHOUT_QUERY(X-ENVOY-ORIGINAL-PATH?:PATH)%")
	if err != nil {
		t.Fatal(err)
	}
	e := entry()
	if got := string(f.Append(nil, e)); got != "/api/v1?x=1 /api/v1" {
		t.Errorf("without the header: %q", got)
	}
	e.Request.Header.Set("X-Envoy-Original-Path", "/orig?y=2")
	if got := string(f.Append(nil, e)); got != "/orig?y=2 /orig" {
		t.Errorf("with the header: %q", got)
	}
	e = entry()
	buf := make([]byte, 0, 256)
	if n := testing.AllocsPerRun(100, func() { buf = f.Append(buf[:0], e) }); n != 0 {
		t.Errorf("%v allocations per line", n)
	}
}
