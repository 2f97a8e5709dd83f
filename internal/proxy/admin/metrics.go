package admin

import (
	"compress/gzip"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// EachGatherer is a prometheus.Gatherer that can also hand out its
// families one at a time, in name order, without holding them all
// (telemetry.Registry). emit's error stops the walk and is returned.
type EachGatherer interface {
	prometheus.Gatherer
	GatherEach(emit func(*dto.MetricFamily) error) error
}

// metricsHandler serves GET /stats/prometheus. With an EachGatherer it
// writes each family as it is gathered, so a scrape of a large sidecar
// holds one family at a time, not every series; the response is what
// promhttp.HandlerFor writes for the same families: the negotiated
// format (text or protobuf), gzip when offered, the name[] filter.
func metricsHandler(g prometheus.Gatherer, log *slog.Logger) http.Handler {
	eg, ok := g.(EachGatherer)
	if !ok {
		return promhttp.HandlerFor(g, promhttp.HandlerOpts{
			ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelError),
			ErrorHandling: promhttp.ContinueOnError,
		})
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		format := expfmt.NegotiateAccept(r.Header, expfmt.DefaultAcceptedFormats()...)
		w.Header().Add("Vary", "Accept")
		w.Header().Add("Vary", "Accept-Encoding")
		w.Header().Set("Content-Type", string(format))
		var filter map[string]bool
		if names := r.URL.Query()["name[]"]; len(names) > 0 {
			filter = map[string]bool{}
			for _, n := range names {
				filter[n] = true
			}
		}
		out := &firstWrite{w: w}
		var enc expfmt.Encoder
		var gz *gzip.Writer
		if offersGzip(r.Header.Get("Accept-Encoding")) {
			w.Header().Set("Content-Encoding", "gzip")
			gz = gzip.NewWriter(out)
			enc = expfmt.NewEncoder(gz, format)
		} else {
			enc = expfmt.NewEncoder(out, format)
		}
		n := 0
		err := eg.GatherEach(func(f *dto.MetricFamily) error {
			if filter != nil && !filter[f.GetName()] {
				return nil
			}
			n++
			return enc.Encode(f)
		})
		if err != nil {
			log.Error("error gathering metrics", "families", n, "error", err)
			if !out.wrote && n == 0 {
				// Nothing to show: the error instead, as promhttp does.
				w.Header().Del("Content-Encoding")
				http.Error(w, "An error has occurred while serving metrics:\n\n"+err.Error(), http.StatusInternalServerError)
				return
			}
		}
		if gz != nil {
			_ = gz.Close()
		}
	})
}

// firstWrite records whether the response was started.
type firstWrite struct {
	w     http.ResponseWriter
	wrote bool
}

func (f *firstWrite) Write(p []byte) (int, error) {
	f.wrote = true
	return f.w.Write(p)
}

// offersGzip reports whether an Accept-Encoding header accepts gzip (a
// q of 0 refuses it).
func offersGzip(h string) bool {
	for _, part := range strings.Split(h, ",") {
		coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if !strings.EqualFold(strings.TrimSpace(coding), "gzip") {
			continue
		}
		for _, p := range strings.Split(params, ";") {
			if k, v, ok := strings.Cut(strings.TrimSpace(p), "="); ok && strings.TrimSpace(k) == "q" {
				if q, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil && q == 0 {
					return false
				}
			}
		}
		return true
	}
	return false
}
