package config

import (
	"testing"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// TestGatewayAPIListenerConflicts: listeners share a port only as the
// Gateway API allows (HTTP with HTTP, HTTPS with TLS, distinct
// hostnames; TCP alone); a later listener that conflicts is not served,
// is reported, and its status says Conflicted with the reason.
func TestGatewayAPIListenerConflicts(t *testing.T) {
	gw := `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: default}
spec:
  gatewayClassName: weft
  listeners:
  - {name: a, port: 80, protocol: HTTP, hostname: a.example.com}
  - {name: b, port: 80, protocol: HTTP, hostname: b.example.com}
  - {name: lines, port: 80, protocol: TCP}
  - name: secure
    port: 443
    protocol: TLS
    hostname: secure.example.com
    tls: {mode: Passthrough}
  - name: web
    port: 443
    protocol: HTTPS
    hostname: web.example.com
    tls: {certificateRefs: [{name: web-cert}]}
  - name: web-passthrough
    port: 443
    protocol: TLS
    hostname: web.example.com
    tls: {mode: Passthrough}
  - {name: raw, port: 9000, protocol: TCP}
  - name: raw-tls
    port: 9000
    protocol: TLS
    tls: {mode: Passthrough}
`
	snap := NewStore(testOptions()).Load(files("gw.yaml", gw))
	checkStrings(t, "diagnostics", diagStrings(snap), []string{
		`warning: gw.yaml: doc 1: Gateway.gateway.networking.k8s.io default/edge: spec.listeners[2].port: port 80 is listener "a"'s (protocol HTTP), which cannot share it with protocol TCP; the listener is not served`,
		`warning: gw.yaml: doc 1: Gateway.gateway.networking.k8s.io default/edge: spec.listeners[5].port: listener "web" has port 443 and hostname web.example.com too; the listener is not served`,
		`warning: gw.yaml: doc 1: Gateway.gateway.networking.k8s.io default/edge: spec.listeners[7].port: port 9000 is listener "raw"'s (protocol TCP), which cannot share it with protocol TLS; the listener is not served`,
	})
	var served []string
	for _, g := range snap.Gateways {
		served = append(served, g.Name)
	}
	checkStrings(t, "served listeners", served, []string{
		"edge-gwapi-a", "edge-gwapi-b", "edge-gwapi-raw", "edge-gwapi-secure", "edge-gwapi-web",
	})
	res := snap.GatewayAPI.Gateways["default/edge"]
	if res == nil {
		t.Fatal("no status for the Gateway")
	}
	for i, want := range map[int]gwv1.ListenerConditionReason{2: gwv1.ListenerReasonProtocolConflict, 5: gwv1.ListenerReasonHostnameConflict, 7: gwv1.ListenerReasonProtocolConflict, 4: ""} {
		l := res.Listeners[i]
		if l.Reason != want || (want != "" && l.Condition != gwv1.ListenerConditionConflicted) {
			t.Errorf("listener %s: %s/%s, want Conflicted/%s", l.Name, l.Condition, l.Reason, want)
		}
	}
}
