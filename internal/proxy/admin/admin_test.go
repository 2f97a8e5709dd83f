package admin

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type fakeSource struct {
	ready atomic.Bool
	dump  []byte
	err   error
}

func (f *fakeSource) Ready() bool                 { return f.ready.Load() }
func (f *fakeSource) ConfigDump() ([]byte, error) { return f.dump, f.err }

func do(t *testing.T, h http.Handler, method, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	b, _ := io.ReadAll(rec.Result().Body)
	return rec.Code, string(b)
}

func TestHandler(t *testing.T) {
	src := &fakeSource{dump: []byte(`{"configs":[]}`)}
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "weft_test_total", Help: "test"})
	reg.MustRegister(c)
	c.Add(3)
	drained := 0
	h := Handler(src, reg, WithDrain(func() { drained++ }), WithLogger(slog.New(slog.DiscardHandler)))

	tests := []struct {
		name, method, path string
		before             func()
		code               int
		body               string
	}{
		{"not ready before first config", "GET", "/ready", nil, 503, "PRE_INITIALIZING"},
		{"healthz always", "GET", "/healthz", nil, 200, "OK"},
		{"ready after config", "GET", "/ready", func() { src.ready.Store(true) }, 200, "LIVE"},
		{"config dump", "GET", "/config_dump", nil, 200, `{"configs":[]}`},
		{"metrics", "GET", "/stats/prometheus", nil, 200, "weft_test_total 3"},
		{"pprof index", "GET", "/debug/pprof/", nil, 200, "goroutine"},
		{"pprof goroutines", "GET", "/debug/pprof/goroutine?debug=1", nil, 200, "goroutine profile"},
		{"drain is POST only", "GET", "/drain", nil, 405, ""},
		{"drain", "POST", "/drain", nil, 200, "OK"},
		{"not ready once draining", "GET", "/ready", nil, 503, "DRAINING"},
		{"drain twice", "POST", "/drain", nil, 200, "OK"},
		{"dump error", "GET", "/config_dump", func() { src.err = errors.New("boom") }, 500, "boom"},
		{"unknown", "GET", "/nope", nil, 404, ""},
	}
	for _, tt := range tests {
		if tt.before != nil {
			tt.before()
		}
		code, body := do(t, h, tt.method, tt.path)
		if code != tt.code || !strings.Contains(body, tt.body) {
			t.Errorf("%s: %s %s = %d %q, want %d containing %q", tt.name, tt.method, tt.path, code, body, tt.code, tt.body)
		}
	}
	if drained != 1 {
		t.Errorf("drain hook ran %d times, want 1", drained)
	}
}

func TestNoDrainWithoutOption(t *testing.T) {
	h := Handler(&fakeSource{}, prometheus.NewRegistry(),
		WithHandler("GET /extra", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("x")) })))
	if code, _ := do(t, h, "POST", "/drain"); code == 200 {
		t.Errorf("POST /drain = %d without WithDrain", code)
	}
	if code, body := do(t, h, "GET", "/extra"); code != 200 || body != "x" {
		t.Errorf("GET /extra = %d %q", code, body)
	}
}

func TestCerts(t *testing.T) {
	h := Handler(&fakeSource{}, prometheus.NewRegistry())
	if code, body := do(t, h, "GET", "/certs"); code != 200 || strings.Join(strings.Fields(body), "") != `{"certificates":[]}` {
		t.Errorf("/certs without certificates: %d %s", code, body)
	}
	u, _ := url.Parse("spiffe://cluster.local/ns/default/sa/backend")
	leaf := &x509.Certificate{SerialNumber: big.NewInt(0xabc), URIs: []*url.URL{u},
		NotBefore: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), NotAfter: time.Now().Add(49 * time.Hour)}
	root := &x509.Certificate{SerialNumber: big.NewInt(1), NotAfter: time.Now().Add(-time.Hour)}
	h = Handler(&fakeSource{}, prometheus.NewRegistry(), WithCerts(func() []CertificateSet {
		return []CertificateSet{{CAName: "ROOTCA", ChainName: "default", CA: []*x509.Certificate{root}, Chain: []*x509.Certificate{leaf}}}
	}))
	code, body := do(t, h, "GET", "/certs")
	var raw map[string][]map[string][]map[string]any
	if err := json.Unmarshal([]byte(body), &raw); code != 200 || err != nil {
		t.Fatalf("/certs: %d %v\n%s", code, err, body)
	}
	chain := raw["certificates"][0]["cert_chain"][0]
	ca := raw["certificates"][0]["ca_cert"][0]
	if chain["path"] != "default" || chain["serial_number"] != "abc" || chain["days_until_expiration"] != "2" ||
		chain["valid_from"] != "2030-01-01T00:00:00Z" || fmt.Sprint(chain["subject_alt_names"]) != "[map[uri:spiffe://cluster.local/ns/default/sa/backend]]" {
		t.Errorf("cert_chain[0] = %v", chain)
	}
	if ca["path"] != "ROOTCA" || ca["days_until_expiration"] != "0" {
		t.Errorf("ca_cert[0] = %v", ca)
	}
}

// TestHeapProfiler: POST /heapprofiler?enable=y|n turns the runtime's
// allocation sampling on and off, as Envoy's endpoint of that name.
func TestHeapProfiler(t *testing.T) {
	old := runtime.MemProfileRate
	t.Cleanup(func() { runtime.MemProfileRate = old })
	h := Handler(&fakeSource{}, prometheus.NewRegistry())
	runtime.MemProfileRate = 0
	if code, body := do(t, h, "POST", "/heapprofiler?enable=y"); code != 200 || !strings.Contains(body, "heap profiler on") || runtime.MemProfileRate != HeapProfileRate {
		t.Errorf("enable=y: %d %q, rate %d", code, body, runtime.MemProfileRate)
	}
	if code, body := do(t, h, "POST", "/heapprofiler?enable=n"); code != 200 || !strings.Contains(body, "heap profiler off") || runtime.MemProfileRate != 0 {
		t.Errorf("enable=n: %d %q, rate %d", code, body, runtime.MemProfileRate)
	}
	if code, _ := do(t, h, "POST", "/heapprofiler?enable=maybe"); code != 400 || runtime.MemProfileRate != 0 {
		t.Errorf("enable=maybe: %d, rate %d", code, runtime.MemProfileRate)
	}
	if code, _ := do(t, h, "GET", "/heapprofiler?enable=y"); code != 405 || runtime.MemProfileRate != 0 {
		t.Errorf("GET: %d, rate %d", code, runtime.MemProfileRate)
	}
}

// streamSource writes its dump as a DumpWriter.
type streamSource struct{ fakeSource }

func (s *streamSource) WriteConfigDump(w io.Writer) error {
	_, err := io.WriteString(w, `{"streamed":true}`)
	return err
}

// TestConfigDumpStreamed: a Source that can write its dump is asked to
// write it to the response, not to render it whole first.
func TestConfigDumpStreamed(t *testing.T) {
	src := &streamSource{fakeSource{dump: []byte(`{"whole":true}`)}}
	h := Handler(src, prometheus.NewRegistry(), WithLogger(slog.New(slog.DiscardHandler)))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/config_dump", nil))
	if rec.Code != 200 || rec.Body.String() != `{"streamed":true}` || rec.Header().Get("Content-Type") != "application/json" {
		t.Errorf("GET /config_dump: %d %q (%s), want 200 and the streamed dump as JSON", rec.Code, rec.Body.String(), rec.Header().Get("Content-Type"))
	}
}
