package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// metricsOverrideTelemetry: the mesh-wide Telemetry leaves
// request_protocol out of every metric; the frontend's client side drops
// istio_request_bytes and counts requests by the caller's x-user header
// and the upstream's version (through the upstream peer).
const metricsOverrideTelemetry = `apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  metrics:
  - overrides:
    - tagOverrides:
        request_protocol: {operation: REMOVE}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: frontend, namespace: default}
spec:
  selector: {matchLabels: {app: frontend}}
  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - match: {metric: REQUEST_SIZE, mode: CLIENT}
      disabled: true
    - match: {metric: REQUEST_COUNT, mode: CLIENT}
      tagOverrides:
        user: {value: "has(request.headers['x-user']) ? request.headers['x-user'] : 'anonymous'"}
        upstream: {value: "'backend-' + upstream_peer.version"}
`

// TestObservabilityMetricsOverrides: the Telemetry API's metrics
// overrides, applied live to running sidecars — a label removed, a
// metric dropped on one side, labels added from a request header and the
// upstream peer — and withdrawn again, with requests flowing throughout.
func TestObservabilityMetricsOverrides(t *testing.T) {
	m := NewMesh(t)
	m.Service("backend", "HTTP", "v1")
	front := m.Client("frontend")
	c := newClient()
	waitVersion(t, c, front, "backend", nil, "v1")

	send := func(user string) {
		t.Helper()
		hdr := map[string]string{}
		if user != "" {
			hdr["x-user"] = user
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if code, _, err := Get(ctx, c, front, "backend", "/", hdr); err != nil || code != 200 {
			t.Fatalf("request as %q: code %d err %v", user, code, err)
		}
	}
	src := map[string]string{"reporter": "source", "destination_service": "backend.default.svc.cluster.local"}

	m.WriteConfig("telemetry.yaml", metricsOverrideTelemetry)
	Eventually(t, 20*time.Second, "the frontend's requests counted by user", func() error {
		send("alice")
		if n, seen := series(t, front, "istio_requests_total", with(with(src, "user", "alice"), "upstream", "backend-v1")); n == 0 {
			return fmt.Errorf("no series with user=alice, upstream=backend-v1 yet: %v", seen)
		}
		return nil
	})
	send("")
	if n, seen := series(t, front, "istio_requests_total", with(src, "user", "anonymous")); n != 1 {
		t.Errorf("requests without x-user: %v, want 1; series %v", n, seen)
	}
	_, seen := series(t, front, "istio_requests_total", src)
	for _, l := range seen {
		if _, ok := l["user"]; !ok {
			continue
		}
		if _, ok := l["request_protocol"]; ok {
			t.Errorf("request_protocol not removed: %v", l)
		}
	}
	// istio_request_bytes: no new source-side series while dropped.
	before, _ := series(t, front, "istio_request_bytes", src)
	send("bob")
	if after, _ := series(t, front, "istio_request_bytes", src); after != before {
		t.Errorf("istio_request_bytes grew from %v to %v though dropped on the client side", before, after)
	}
	// The duration histogram lost request_protocol too.
	if n, _ := series(t, front, "istio_request_duration_milliseconds", src); n == 0 {
		t.Error("istio_request_duration_milliseconds: no series")
	}

	// Withdrawn: the standard labels again.
	if err := os.Remove(filepath.Join(m.Dir, "telemetry.yaml")); err != nil {
		t.Fatal(err)
	}
	Eventually(t, 20*time.Second, "standard metrics again", func() error {
		send("carol") // counted with user=carol until the change is in force
		if n, _ := series(t, front, "istio_request_bytes", src); n <= before {
			return fmt.Errorf("istio_request_bytes not counted yet")
		}
		return nil
	})
	send("dave")
	if n, seen := series(t, front, "istio_requests_total", with(src, "user", "dave")); n != 0 {
		t.Errorf("user=dave counted after the override was withdrawn: %v", seen)
	}
	if n, _ := series(t, front, "istio_requests_total", with(src, "request_protocol", "http")); n == 0 {
		t.Error("no standard series with request_protocol after the override was withdrawn")
	}
}
