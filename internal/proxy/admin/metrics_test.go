package admin

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"weft.dev/weft/internal/proxy/cluster"
	"weft.dev/weft/internal/proxy/telemetry"
)

// TestStreamedScrapeMatchesPromhttp checks that /stats/prometheus on a
// telemetry.Registry, written family by family, is byte for byte what
// promhttp writes for the same families gathered at once, in each format
// and encoding a scraper may ask for.
func TestStreamedScrapeMatchesPromhttp(t *testing.T) {
	reg := telemetry.NewRegistry()
	reg.MustRegister(collectors.NewBuildInfoCollector())
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "envoy_cluster_upstream_rq_zzz", Help: "between the streamed families"}, []string{"x"})
	c.WithLabelValues("b").Add(2)
	c.WithLabelValues("a").Inc()
	reg.MustRegister(c, prometheus.NewCounter(prometheus.CounterOpts{Name: "aaa_first_total", Help: "before them"}))
	v, err := cluster.NewStatVecs(reg)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		s := v.For("outbound|80||svc-" + strconv.Itoa(49-i))
		if i%7 == 0 {
			s.RqTotal.Inc()
			s.RqTime.Observe(float64(i) + 0.25)
			s.Response(200 + 100*(i%4))
		}
	}
	// A name whose label value needs escaping in the text format.
	odd := v.For("outbound|80||odd\\\"name\n.svc")
	odd.RqTime.Observe(1e9)
	odd.Response(503)
	odd.RqActive.Set(2.5)
	odd.CxActive.Set(-1)
	streamed := Handler(&fakeSource{}, reg)
	gathered := Handler(&fakeSource{}, prometheus.GathererFunc(reg.Gather)) // promhttp
	for _, c := range []struct{ name, accept, encoding, query string }{
		{"text", "", "", ""},
		{"text, gzip", "text/plain;version=0.0.4;q=0.5,*/*;q=0.1", "gzip", ""},
		{"prometheus' accept header", "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2", "gzip", ""},
		{"protobuf", "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3", "", ""},
		{"gzip refused", "", "gzip;q=0, identity", ""},
		{"filter", "", "", "?name[]=envoy_cluster_upstream_rq_total&name[]=aaa_first_total"},
	} {
		t.Run(c.name, func(t *testing.T) {
			scrape := func(h http.Handler) (*httptest.ResponseRecorder, []byte) {
				req := httptest.NewRequest("GET", "/stats/prometheus"+c.query, nil)
				if c.accept != "" {
					req.Header.Set("Accept", c.accept)
				}
				if c.encoding != "" {
					req.Header.Set("Accept-Encoding", c.encoding)
				}
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				body := rec.Body.Bytes()
				if rec.Header().Get("Content-Encoding") == "gzip" {
					zr, err := gzip.NewReader(bytes.NewReader(body))
					if err != nil {
						t.Fatal(err)
					}
					if body, err = io.ReadAll(zr); err != nil {
						t.Fatal(err)
					}
				}
				return rec, body
			}
			wantRec, want := scrape(gathered)
			gotRec, got := scrape(streamed)
			if wantRec.Code != 200 || gotRec.Code != 200 {
				t.Fatalf("status %d (streamed), %d (promhttp)", gotRec.Code, wantRec.Code)
			}
			for _, h := range []string{"Content-Type", "Content-Encoding"} {
				if g, w := gotRec.Header().Get(h), wantRec.Header().Get(h); g != w {
					t.Errorf("%s: %q, promhttp %q", h, g, w)
				}
			}
			if !bytes.Equal(got, want) {
				t.Errorf("streamed scrape (%d bytes) differs from promhttp's (%d bytes):\n%s\n---\n%s", len(got), len(want), got, want)
			}
			if len(want) < 100 {
				t.Errorf("scrape of %d bytes: %q", len(want), want)
			}
		})
	}
}

func TestOffersGzip(t *testing.T) {
	for h, want := range map[string]bool{
		"": false, "gzip": true, "br, GZIP": true, "gzip;q=0": false, "gzip; q=0.5": true, "identity": false, "x-gzip": false,
	} {
		if got := offersGzip(h); got != want {
			t.Errorf("offersGzip(%q) = %v, want %v", h, got, want)
		}
	}
}

// BenchmarkScrapeClusters scrapes the envoy_cluster_* families of 3,000
// clusters (a sidecar of a 1,000-service mesh), a tenth of them used: in
// the text format their series are written as read (TextFamilySource);
// in the protobuf format each family is built first, as every scrape
// was before.
func BenchmarkScrapeClusters(b *testing.B) {
	reg := telemetry.NewRegistry()
	v, err := cluster.NewStatVecs(reg)
	if err != nil {
		b.Fatal(err)
	}
	for i := range 3000 {
		s := v.For("outbound|8080||svc-" + strconv.Itoa(i) + ".ns-" + strconv.Itoa(i%10) + ".svc.cluster.local")
		if i%10 == 0 {
			s.RqTotal.Inc()
			s.RqTime.Observe(3)
			s.Response(200)
		}
	}
	h := Handler(&fakeSource{}, reg)
	for _, c := range []struct{ name, accept string }{
		{"text", ""},
		{"protobuf", "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited"},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				req := httptest.NewRequest("GET", "/stats/prometheus", nil)
				if c.accept != "" {
					req.Header.Set("Accept", c.accept)
				}
				w := &discardResponse{h: http.Header{}}
				h.ServeHTTP(w, req)
			}
		})
	}
}

// discardResponse is a ResponseWriter that keeps nothing of the body.
type discardResponse struct{ h http.Header }

func (d *discardResponse) Header() http.Header         { return d.h }
func (d *discardResponse) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardResponse) WriteHeader(int)             {}
