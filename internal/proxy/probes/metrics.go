package probes

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Merged metrics, as Istio's agent serves them on port 15020: the
// injector points a pod's prometheus.io/* annotations at the sidecar's
// MetricsPath on this server (the admin port listens on the pod's loopback
// only) and keeps the application's own scrape settings in MetricsEnv;
// one scrape of MetricsPath then returns the proxy's metrics followed by
// the application's, so a Prometheus that discovers pods by those
// annotations gets both without knowing about the mesh.

// MetricsPath is where the merged metrics are served.
const MetricsPath = "/stats/prometheus"

// MetricsEnv holds the application's scrape settings, the shape of
// Istio's ISTIO_PROMETHEUS_ANNOTATIONS: {"scrape":"true","path":"/metrics",
// "port":"9090"} (port required, path default /metrics).
const MetricsEnv = "WEFT_PROMETHEUS_ANNOTATIONS"

// AppMetrics is the application's scrape endpoint on the pod's loopback.
type AppMetrics struct {
	Port int
	Path string
}

// ParseAppMetrics decodes MetricsEnv's value; nil for an empty value or
// one whose scrape is "false".
func ParseAppMetrics(s string) (*AppMetrics, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var a struct{ Scrape, Path, Port string }
	if err := json.Unmarshal([]byte(s), &a); err != nil {
		return nil, fmt.Errorf("%s: not a JSON object of scrape settings: %w", MetricsEnv, err)
	}
	if a.Scrape == "false" {
		return nil, nil
	}
	port, err := strconv.Atoi(a.Port)
	if err != nil || port < 1 || port > 65535 {
		return nil, fmt.Errorf("%s: port %q is not a port", MetricsEnv, a.Port)
	}
	if a.Path == "" {
		a.Path = "/metrics"
	}
	if !strings.HasPrefix(a.Path, "/") {
		a.Path = "/" + a.Path
	}
	return &AppMetrics{Port: port, Path: a.Path}, nil
}

// metricsTimeout bounds each of the two scrapes behind one of MetricsPath.
const metricsTimeout = 5 * time.Second

// mergedMetrics answers MetricsPath: the proxy's metrics from proxyURL
// (its admin /stats/prometheus), then, when app is set, the
// application's, both in Prometheus' text format. The proxy's metrics are
// required (a failure answers 503) and are copied through as they come —
// a sidecar of a large mesh has megabytes of them, which are not held in
// memory here; the application's are best effort, as in Istio: an
// application that does not answer leaves its metrics out and is logged.
func mergedMetrics(c *http.Client, proxyURL string, app *AppMetrics, log *slog.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), metricsTimeout)
		defer cancel()
		resp, err := getMetrics(ctx, c, proxyURL)
		if err != nil {
			http.Error(w, "proxy metrics: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		defer resp.Body.Close()
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		lw := &lastByte{w: w}
		if _, err := io.Copy(lw, resp.Body); err != nil {
			log.Debug("proxy metrics cut short", "error", err)
			return
		}
		if app == nil {
			return
		}
		actx, acancel := context.WithTimeout(r.Context(), metricsTimeout)
		defer acancel()
		body, err := scrape(actx, c, "http://"+hostPort("", app.Port)+app.Path)
		if err != nil {
			log.Debug("application metrics left out", "error", err)
			return
		}
		if len(body) > 0 && lw.n > 0 && lw.last != '\n' {
			w.Write([]byte{'\n'})
		}
		w.Write(body)
	}
}

// lastByte is a writer that remembers how much it wrote and its last byte.
type lastByte struct {
	w    io.Writer
	n    int64
	last byte
}

func (l *lastByte) Write(p []byte) (int, error) {
	n, err := l.w.Write(p)
	if n > 0 {
		l.n += int64(n)
		l.last = p[n-1]
	}
	return n, err
}

// getMetrics GETs url asking for Prometheus' text format; an answer other than
// 200 is an error.
func getMetrics(ctx context.Context, c *http.Client, url string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4;q=1,*/*;q=0.1")
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		return nil, fmt.Errorf("%s answered %d", url, resp.StatusCode)
	}
	return resp, nil
}

// scrape reads an application's metrics (getMetrics) and returns them without
// an OpenMetrics "# EOF" line (the merged answer is text).
func scrape(ctx context.Context, c *http.Client, url string) ([]byte, error) {
	resp, err := getMetrics(ctx, c, url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxMetricsBytes))
	if err != nil {
		return nil, err
	}
	if i := bytes.LastIndex(body, []byte("# EOF")); i >= 0 && len(bytes.TrimSpace(body[i+len("# EOF"):])) == 0 {
		body = body[:i]
	}
	return body, nil
}

// maxMetricsBytes bounds what one scrape of the application reads.
const maxMetricsBytes = 16 << 20
