package inject

import (
	"encoding/json"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Prometheus' pod annotations, and Istio's switch for merging.
const (
	AnnotationPrometheusScrape = "prometheus.io/scrape"
	AnnotationPrometheusPort   = "prometheus.io/port"
	AnnotationPrometheusPath   = "prometheus.io/path"
	AnnotationMergeMetrics     = "prometheus.istio.io/merge-metrics"
)

// mergePrometheus points the pod's prometheus.io/* annotations at the
// sidecar's merged metrics (MetricsPath on AppProbesPort: the proxy's
// metrics, then the app's), as Istio's injector does, so a Prometheus
// that discovers pods by those annotations scrapes the mesh's metrics
// without knowing about the mesh: the admin port listens on the pod's
// loopback only. It returns the app's own annotations as JSON for
// MetricsEnv ("" when the pod had none) and whether it changed the pod.
// Left alone: a pod that says prometheus.io/scrape: "false", one that
// says prometheus.istio.io/merge-metrics: "false", and one whose port
// annotation already names the sidecar (injected before).
func mergePrometheus(t *corev1.PodTemplateSpec) (string, bool) {
	ann := t.Annotations
	if ann[AnnotationPrometheusScrape] == "false" {
		return "", false
	}
	if merge, err := strconv.ParseBool(strings.TrimSpace(ann[AnnotationMergeMetrics])); err == nil && !merge {
		return "", false
	}
	target := strconv.Itoa(AppProbesPort)
	if ann[AnnotationPrometheusPort] == target {
		return "", false
	}
	app := struct {
		Scrape string `json:"scrape,omitempty"`
		Path   string `json:"path,omitempty"`
		Port   string `json:"port,omitempty"`
	}{ann[AnnotationPrometheusScrape], ann[AnnotationPrometheusPath], ann[AnnotationPrometheusPort]}
	env := ""
	if app.Port != "" {
		// Without a port Prometheus would scrape every declared container
		// port; the sidecar merges one endpoint, so it needs the port.
		b, _ := json.Marshal(app)
		env = string(b)
	}
	if t.Annotations == nil {
		t.Annotations = map[string]string{}
	}
	t.Annotations[AnnotationPrometheusScrape] = "true"
	t.Annotations[AnnotationPrometheusPort] = target
	t.Annotations[AnnotationPrometheusPath] = MetricsPath
	return env, true
}
