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
// required (a failure answers 503); the application's are best effort, as
// in Istio: an application that does not answer leaves its metrics out
// and is logged.
func mergedMetrics(c *http.Client, proxyURL string, app *AppMetrics, log *slog.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), metricsTimeout)
		defer cancel()
		proxy, err := scrape(ctx, c, proxyURL)
		if err != nil {
			http.Error(w, "proxy metrics: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		var appBody []byte
		if app != nil {
			actx, acancel := context.WithTimeout(r.Context(), metricsTimeout)
			appBody, err = scrape(actx, c, "http://"+hostPort("", app.Port)+app.Path)
			acancel()
			if err != nil {
				log.Debug("application metrics left out", "error", err)
				appBody = nil
			}
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		w.Write(proxy)
		if len(appBody) > 0 {
			if len(proxy) > 0 && proxy[len(proxy)-1] != '\n' {
				w.Write([]byte{'\n'})
			}
			w.Write(appBody)
		}
	}
}

// scrape GETs url asking for Prometheus' text format and returns the
// body without an OpenMetrics "# EOF" line (the merged answer is text).
func scrape(ctx context.Context, c *http.Client, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4;q=1,*/*;q=0.1")
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil, fmt.Errorf("%s answered %d", url, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxMetricsBytes))
	if err != nil {
		return nil, err
	}
	if i := bytes.LastIndex(body, []byte("# EOF")); i >= 0 && len(bytes.TrimSpace(body[i+len("# EOF"):])) == 0 {
		body = body[:i]
	}
	return body, nil
}

// maxMetricsBytes bounds what one scrape reads (a 1,000-service sidecar's
// metrics are a few MB).
const maxMetricsBytes = 64 << 20
