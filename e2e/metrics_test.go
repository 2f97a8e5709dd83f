package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/net/http2"

	"weft.dev/weft/internal/localmesh"
)

// series sums the samples of a metric family whose labels include want.
func series(t *testing.T, w *localmesh.Workload, family string, want map[string]string) (sum float64, labelsSeen []map[string]string) {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(adminGet(t, w, "/stats/prometheus")))
	if err != nil {
		t.Fatalf("parsing %s metrics: %v", w.Opts.Name, err)
	}
	f := fams[family]
	if f == nil {
		return 0, nil
	}
	for _, m := range f.GetMetric() {
		ls := map[string]string{}
		for _, l := range m.GetLabel() {
			ls[l.GetName()] = l.GetValue()
		}
		labelsSeen = append(labelsSeen, ls)
		match := true
		for k, v := range want {
			if ls[k] != v {
				match = false
			}
		}
		if match {
			sum += value(m)
		}
	}
	return sum, labelsSeen
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return 0
}

// TestRequestMetricsPerVersion checks that both sides of each request are
// counted with the labels that tell stable from canary.
func TestRequestMetricsPerVersion(t *testing.T) {
	m := NewMesh(t)
	backends := m.Service("backend", "HTTP", "v1", "v2")
	m.WriteConfig("backend-routes.yaml", fmt.Sprintf(backendRoutes, 50, 50))
	c := newClient()
	front := m.Client("frontend")
	waitVersion(t, c, front, "backend", map[string]string{"x-canary": "true"}, "v2") // the VirtualService is in force

	src := map[string]string{"reporter": "source", "source_workload": "frontend",
		"destination_service": "backend.default.svc.cluster.local", "response_code": "200"}
	before := map[string]float64{}
	for _, v := range []string{"v1", "v2"} {
		before[v], _ = series(t, front, "istio_requests_total", with(src, "destination_version", v))
	}
	got := Tally(t, c, front, "backend", nil, 400, byVersion)
	// A 503 from the backend is counted with its code.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if code, _, err := Get(ctx, c, front, "backend", "/?status=503", nil); err != nil || code != 503 {
		t.Fatalf("status=503 through the mesh: code %d err %v", code, err)
	}

	for _, v := range []string{"v1", "v2"} {
		after, seen := series(t, front, "istio_requests_total", with(src, "destination_version", v))
		if after-before[v] != float64(got[v]) {
			t.Errorf("source-side istio_requests_total for %s grew by %v, want %d; series: %v", v, after-before[v], got[v], seen)
		}
		h, _ := series(t, front, "istio_request_duration_milliseconds", with(src, "destination_version", v))
		if h < float64(got[v]) {
			t.Errorf("source-side duration histogram for %s counts %v, want ≥ %d", v, h, got[v])
		}
	}
	// Istio's default retry policy retries a 503 twice; the upstream's
	// third 503 reaches the client flagged URX (retry limit exceeded).
	if n, seen := series(t, front, "istio_requests_total", with(with(src, "response_code", "503"), "response_flags", "URX")); n != 1 {
		t.Errorf("want one source-side 503 flagged URX, got %v; series %v", n, seen)
	}

	for _, b := range backends {
		v := b.Opts.Labels["version"]
		dst := map[string]string{"reporter": "destination", "source_workload": "frontend",
			"source_workload_namespace": "default", "destination_workload": b.Opts.Name,
			"destination_version": v, "destination_service": "backend.default.svc.cluster.local"}
		n, seen := series(t, b, "istio_requests_total", dst)
		if n < float64(got[v]) {
			t.Errorf("destination-side istio_requests_total on %s = %v, want ≥ %d; series: %v", b.Opts.Name, n, got[v], seen)
		}
	}
}

func with(m map[string]string, k, v string) map[string]string {
	out := map[string]string{k: v}
	for kk, vv := range m {
		if kk != k {
			out[kk] = vv
		}
	}
	return out
}

// TestProtocols reaches the backend through the sidecar with a plain
// Host header, as an HTTP_PROXY client, and over h2c.
func TestProtocols(t *testing.T) {
	m, c := canaryMesh(t, 100, 0)
	front := m.Client("frontend")
	waitVersion(t, c, front, "backend", nil, "v1")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	for _, host := range []string{"backend", "backend:8080", "backend.default", "backend.default.svc.cluster.local:8080"} {
		if code, r, err := Get(ctx, c, front, host, "/", nil); err != nil || code != 200 || r.Version != "v1" {
			t.Errorf("Host %q: code %d version %q err %v", host, code, r.Version, err)
		}
	}
	if code, _, err := Get(ctx, c, front, "nosuch", "/", nil); err != nil || code != 404 {
		t.Errorf("unknown host: want 404 (NR), got %d %v", code, err)
	}

	proxyURL, _ := url.Parse("http://" + front.Outbound)
	pc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(proxyURL)}}
	resp, err := pc.Get("http://backend/hello")
	if err != nil {
		t.Fatalf("HTTP_PROXY request: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("HTTP_PROXY request: status %d", resp.StatusCode)
	}

	h2 := &http.Client{Timeout: 5 * time.Second, Transport: &http2.Transport{AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		}}}
	code, r, err := Get(ctx, h2, front, "backend", "/h2", nil)
	if err != nil || code != 200 || r.Path != "/h2" {
		t.Fatalf("h2c through the sidecar: code %d reply %+v err %v", code, r, err)
	}
}
