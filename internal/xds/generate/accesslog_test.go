package generate

import (
	"testing"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/mesh"
)

// accessLogMeshConfig defines a JSON provider beside Istio's built-in
// "envoy" one.
const accessLogMeshConfig = `
extensionProviders:
- name: json
  envoyFileAccessLog:
    path: /dev/null
    logFormat:
      labels:
        method: "%REQ(:METHOD)%"
        code: "%RESPONSE_CODE%"
        upstream: "%UPSTREAM_HOST%"
`

// accessLogTelemetry: the envoy provider mesh-wide; reviews (server side)
// logs only failures or slow requests in JSON as well.
const accessLogTelemetry = `
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  accessLogging:
  - providers: [{name: envoy}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: reviews, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: reviews}}
  accessLogging:
  - providers: [{name: envoy}, {name: json}]
    match: {mode: SERVER}
    filter:
      expression: "response.code >= 500 || response.duration > duration(\"1s\") || 'x-debug' in request.headers"
`

func accessLogMesh(captured bool) *mesh.Snapshot {
	mc, _, err := config.ParseMeshConfig("mesh-config.yaml", []byte(accessLogMeshConfig))
	if err != nil {
		panic(err)
	}
	docs := bookinfo
	if captured {
		docs = captureMesh
	}
	return securityMesh(docs+accessLogTelemetry, mesh.Options{MeshConfig: mc})
}

func accessLogCases() []goldenCase {
	return []goldenCase{
		{
			// Outbound: the envoy provider (Istio's text format, stdout);
			// inbound: envoy and json, with the filter as Envoy's
			// status_code, duration and header filters.
			name:  "access_logs",
			mesh:  func() *mesh.Snapshot { return accessLogMesh(false) },
			proxy: reviewsProxy,
		},
		{
			// The same on a captured proxy's virtual listeners.
			name:  "access_logs_captured",
			mesh:  func() *mesh.Snapshot { return accessLogMesh(true) },
			proxy: capturedProxy(reviewsProxy),
		},
	}
}

// TestAccessLogsShareOutbound: proxies whose Telemetry differs do not
// share a virtual outbound listener.
func TestAccessLogsShareOutbound(t *testing.T) {
	s := accessLogMesh(true)
	a := capturedProxy(reviewsProxy)
	b := a
	b.Labels = map[string]string{"app": "other"}
	la, _ := sharedVirtualOutbound(s, a)
	lb, _ := sharedVirtualOutbound(s, b)
	if la == lb {
		t.Fatal("proxies with different Telemetry share a listener")
	}
}
