package admin

import (
	"bufio"
	"compress/gzip"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"weft.dev/weft/internal/proxy/telemetry"
)

// EachGatherer is a prometheus.Gatherer that can also hand out its
// families one at a time, in name order, without holding them all
// (telemetry.Registry). emit's error stops the walk and is returned.
type EachGatherer interface {
	prometheus.Gatherer
	GatherEach(emit func(*dto.MetricFamily) error) error
}

// SourceGatherer is an EachGatherer that hands the families of its
// telemetry.FamilySources over unbuilt (telemetry.Registry), so that a
// scrape can leave out a family the name[] filter does not ask for
// without building it, and write a TextFamilySource's family straight
// as text.
type SourceGatherer interface {
	EachGatherer
	GatherEachSource(emit func(*dto.MetricFamily) error, source func(name string, src telemetry.FamilySource) error) error
}

// metricsHandler serves GET /stats/prometheus. With an EachGatherer it
// writes each family as it is gathered, so a scrape of a large sidecar
// holds one family at a time, not every series; with a SourceGatherer a
// family of a telemetry.TextFamilySource is not even built when the
// scrape is in the text format, as most are: its series are written as
// they are read. The response is what promhttp.HandlerFor writes for
// the same families: the negotiated format (text or protobuf), gzip when
// offered, the name[] filter.
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
		emit := func(f *dto.MetricFamily) error {
			if filter != nil && !filter[f.GetName()] {
				return nil
			}
			n++
			return enc.Encode(f)
		}
		var err error
		if sg, ok := eg.(SourceGatherer); ok {
			var text *bufio.Writer // the text format's writer for TextFamilySources, made at the first
			var dst io.Writer = out
			if gz != nil {
				dst = gz
			}
			err = sg.GatherEachSource(emit, func(name string, src telemetry.FamilySource) error {
				if filter != nil && !filter[name] {
					return nil // not built
				}
				if ts, ok := src.(telemetry.TextFamilySource); ok && format.FormatType() == expfmt.TypeTextPlain {
					if text == nil {
						text = bufio.NewWriterSize(dst, 32<<10)
					}
					if ts.WriteFamilyText(text, name) {
						n++
					}
					return text.Flush()
				}
				if f := src.Family(name); f != nil && len(f.GetMetric()) > 0 {
					return emit(f)
				}
				return nil
			})
		} else {
			err = eg.GatherEach(emit)
		}
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
