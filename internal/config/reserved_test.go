package config

import "testing"

// TestRemovedFieldIgnored: Istio's samples/websockets VirtualService
// still sets websocketUpgrade, a field istio.io/api has since removed
// (reserved). It loads, as Kubernetes loads it into Istio's CRD by
// pruning the field; WebSocket upgrades are on for every route anyway.
func TestRemovedFieldIgnored(t *testing.T) {
	const vs = `apiVersion: networking.istio.io/v1alpha3
kind: Gateway
metadata:
  name: tornado-gateway
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 80
      name: http
      protocol: HTTP
    hosts:
    - "*"
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: tornado
spec:
  hosts:
  - "*"
  gateways:
  - tornado-gateway
  http:
  - match:
    - uri:
        prefix: /
    route:
    - destination:
        host: tornado
      weight: 100
    websocketUpgrade: true
`
	snap := NewStore(testOptions()).Load(files("route.yaml", vs))
	for _, d := range snap.Diagnostics {
		t.Errorf("diagnostic %d:%d %s: %s", d.Line, d.Column, d.Path, d.Message)
	}
}
