package probes

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// TestMergedMetrics: MetricsPath answers the proxy's metrics, then the
// application's (an OpenMetrics answer loses its "# EOF", the merged one
// is text); without the application, or when it fails, the proxy's
// alone; without the proxy's, 503.
func TestMergedMetrics(t *testing.T) {
	var adminDown atomic.Bool
	admin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != MetricsPath || adminDown.Load() {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		io.WriteString(w, "# TYPE istio_requests_total counter\nistio_requests_total{reporter=\"destination\"} 3")
	}))
	defer admin.Close()
	var appDown atomic.Bool
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/custom/metrics" || appDown.Load() {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		if !strings.Contains(r.Header.Get("Accept"), "text/plain") {
			t.Errorf("the app was asked for %q, want the text format", r.Header.Get("Accept"))
		}
		io.WriteString(w, "# TYPE orders_total counter\norders_total 7\n# EOF\n")
	}))
	defer app.Close()

	am, err := ParseAppMetrics(fmt.Sprintf(`{"scrape":"true","path":"custom/metrics","port":"%d"}`, port(t, app.Listener.Addr().String())))
	if err != nil {
		t.Fatal(err)
	}
	get := func(h http.Handler) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, MetricsPath, nil))
		return rec.Code, rec.Body.String()
	}
	want := "# TYPE istio_requests_total counter\nistio_requests_total{reporter=\"destination\"} 3\n# TYPE orders_total counter\norders_total 7\n"
	if code, body := get(Handler(nil, admin.URL, am, slog.Default())); code != 200 || body != want {
		t.Errorf("merged: %d %q, want %q", code, body, want)
	}
	appDown.Store(true)
	if code, body := get(Handler(nil, admin.URL, am, slog.Default())); code != 200 || strings.Contains(body, "orders_total") || !strings.Contains(body, "istio_requests_total") {
		t.Errorf("app failing: %d %q, want the proxy's metrics alone", code, body)
	}
	if code, body := get(Handler(nil, admin.URL, nil, slog.Default())); code != 200 || strings.Contains(body, "orders_total") {
		t.Errorf("no app: %d %q", code, body)
	}
	adminDown.Store(true)
	if code, _ := get(Handler(nil, admin.URL, am, slog.Default())); code != http.StatusServiceUnavailable {
		t.Errorf("proxy metrics failing: %d, want 503", code)
	}

	for _, c := range []struct{ env, want string }{
		{``, ""},
		{`{"scrape":"false","port":"9090"}`, ""},
		{`{"port":"9090"}`, "9090 /metrics"},
		{`{"port":"x"}`, `port "x" is not a port`},
		{`[`, "not a JSON object"},
	} {
		m, err := ParseAppMetrics(c.env)
		got := ""
		switch {
		case err != nil:
			got = err.Error()
		case m != nil:
			got = fmt.Sprintf("%d %s", m.Port, m.Path)
		}
		if !strings.Contains(got, c.want) || c.want == "" && got != "" {
			t.Errorf("ParseAppMetrics(%q) = %q, want %q", c.env, got, c.want)
		}
	}
}
