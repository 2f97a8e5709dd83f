package generate

import (
	"testing"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/xds/contract"
)

// statsTelemetry: mesh-wide, request_protocol is removed from every
// metric; in bookinfo the client side drops istio_request_bytes; reviews'
// server side counts requests by the caller's x-user header.
const statsTelemetry = `
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: istio-system}
spec:
  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - tagOverrides:
        request_protocol: {operation: REMOVE}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: bookinfo, namespace: bookinfo}
spec:
  metrics:
  - overrides:
    - match: {metric: REQUEST_SIZE, mode: CLIENT}
      disabled: true
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: reviews, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: reviews}}
  metrics:
  - overrides:
    - match: {metric: REQUEST_COUNT, mode: SERVER}
      tagOverrides:
        user: {value: "has(request.headers['x-user']) ? request.headers['x-user'] : 'anonymous'"}
`

func statsMesh(captured bool) *mesh.Snapshot {
	docs := bookinfo
	if captured {
		docs = captureMesh
	}
	return securityMesh(docs+statsTelemetry, mesh.Options{})
}

func statsCases() []goldenCase {
	return []goldenCase{
		{
			// Outbound: request_protocol removed from every metric,
			// request_bytes dropped; inbound: request_protocol removed,
			// requests_total gains user.
			name:  "metrics_overrides",
			mesh:  func() *mesh.Snapshot { return statsMesh(false) },
			proxy: reviewsProxy,
		},
		{
			// The same on a captured proxy's virtual listeners, TCP
			// chains included (a network filter before tcp_proxy).
			name:  "metrics_overrides_captured",
			mesh:  func() *mesh.Snapshot { return statsMesh(true) },
			proxy: capturedProxy(reviewsProxy),
		},
	}
}

// TestStatsFilterPlacement: the stats filter sits right before the
// router of every connection manager and right before every tcp_proxy,
// and its config reads back as written.
func TestStatsFilterPlacement(t *testing.T) {
	r := ForProxy(statsMesh(true), capturedProxy(reviewsProxy))
	var httpSeen, tcpSeen int
	for _, res := range r.Listeners {
		l := res.(*listener.Listener)
		chains := append(l.GetFilterChains(), l.GetDefaultFilterChain())
		for _, fc := range chains {
			fs := fc.GetFilters()
			for i, f := range fs {
				switch f.GetName() {
				case "envoy.filters.network.tcp_proxy":
					if i == 0 || fs[i-1].GetName() != contract.StatsFilterName {
						t.Errorf("listener %s: tcp_proxy without the stats filter before it", l.GetName())
					}
					tcpSeen++
				case "envoy.filters.network.http_connection_manager":
					var m hcm.HttpConnectionManager
					if err := f.GetTypedConfig().UnmarshalTo(&m); err != nil {
						t.Fatal(err)
					}
					hf := m.GetHttpFilters()
					if len(hf) < 2 || hf[len(hf)-2].GetName() != contract.StatsFilterName {
						t.Errorf("listener %s: no stats filter before the router", l.GetName())
						continue
					}
					cfg, err := contract.ParseStatsConfig(hf[len(hf)-2].GetTypedConfig())
					if err != nil {
						t.Fatal(err)
					}
					// request_protocol removed from each of the 10 standard
					// metrics (ALL_METRICS expands, as Istio's); the client
					// side drops request_bytes, the server side adds user
					// to requests_total.
					inbound := l.GetTrafficDirection() == 1 // INBOUND
					if len(cfg.Metrics) != 10 {
						t.Fatalf("listener %s: %d metric overrides, want 10: %+v", l.GetName(), len(cfg.Metrics), cfg.Metrics)
					}
					bytes, count := cfg.Metrics[0], cfg.Metrics[3]
					if bytes.Name != contract.StatRequestBytes || bytes.Drop == inbound || count.Name != contract.StatRequestsTotal || (count.Dimensions["user"] != "") != inbound {
						t.Errorf("listener %s (inbound %v): overrides %+v", l.GetName(), inbound, cfg.Metrics)
					}
					httpSeen++
				}
			}
		}
	}
	if httpSeen == 0 || tcpSeen == 0 {
		t.Fatalf("saw %d connection managers and %d TCP proxies, want some of each", httpSeen, tcpSeen)
	}
}
