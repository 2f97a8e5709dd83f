package config

import (
	"strings"
	"testing"

	networking "istio.io/api/networking/v1alpha3"
)

// TCPRoutes and TLSRoutes become tcp and tls routes of VirtualServices
// bound to the Istio Gateways of TCP and TLS listeners (a TLS listener
// that terminates: a SIMPLE server and tcp routes, as Istio serves it); a
// route of the wrong kind for a listener does not attach to it.
func TestGatewayAPITCPAndTLSRoutes(t *testing.T) {
	docs := `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: shop}
spec:
  gatewayClassName: weft
  listeners:
  - {name: lines, port: 9300, protocol: TCP}
  - name: secure
    port: 9443
    protocol: TLS
    tls: {mode: Passthrough}
  - name: terminate
    port: 9444
    protocol: TLS
    hostname: t.example.com
    tls: {certificateRefs: [{name: t-cert}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: lines, namespace: shop}
spec:
  parentRefs: [{name: edge, sectionName: lines}]
  rules:
  - backendRefs:
    - {name: lines-v1, port: 7000, weight: 80}
    - {name: lines-v2, port: 7000, weight: 20}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: secure, namespace: shop}
spec:
  parentRefs: [{name: edge}]
  hostnames: [a.secure.example]
  rules: [{backendRefs: [{name: secure, port: 8443}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: terminated, namespace: shop}
spec:
  parentRefs: [{name: edge, sectionName: terminate}]
  hostnames: [t.example.com]
  rules: [{backendRefs: [{name: plain, port: 7001}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{name: edge, sectionName: lines}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
`
	snap := NewStore(testOptions()).Load(files("gw.yaml", docs))
	checkStrings(t, "diagnostics", diagStrings(snap), []string{
		`warning: gw.yaml: doc 5: HTTPRoute shop/web: spec.parentRefs[0]: not attached to Gateway shop/edge: listener "lines" (protocol TCP) does not take HTTPRoutes`,
	})
	wantSpecs(t, snap.Gateways, map[string]string{
		"shop/edge-gwapi-lines":     `{selector: {gateway.networking.k8s.io/gateway-name: edge}, servers: [{port: {number: 9300, name: lines, protocol: TCP}, hosts: ["*/*"]}]}`,
		"shop/edge-gwapi-secure":    `{selector: {gateway.networking.k8s.io/gateway-name: edge}, servers: [{port: {number: 9443, name: secure, protocol: TLS}, hosts: ["*/*"], tls: {mode: PASSTHROUGH}}]}`,
		"shop/edge-gwapi-terminate": `{selector: {gateway.networking.k8s.io/gateway-name: edge}, servers: [{port: {number: 9444, name: terminate, protocol: TLS}, hosts: ["*/t.example.com"], tls: {mode: SIMPLE, credentialName: t-cert}}]}`,
	}, func() *networking.Gateway { return &networking.Gateway{} })
	wantSpecs(t, snap.VirtualServices, map[string]string{
		"shop/edge-gwapi-lines.wildcard": `{hosts: ["*"], gateways: [shop/edge-gwapi-lines], tcp: [{match: [{port: 9300}], route: [
		  {destination: {host: lines-v1.shop.svc.cluster.local, port: {number: 7000}}, weight: 80},
		  {destination: {host: lines-v2.shop.svc.cluster.local, port: {number: 7000}}, weight: 20}]}]}`,
		"shop/edge-gwapi-secure.a.secure.example": `{hosts: [a.secure.example], gateways: [shop/edge-gwapi-secure], tls: [{match: [{sniHosts: [a.secure.example], port: 9443}], route: [
		  {destination: {host: secure.shop.svc.cluster.local, port: {number: 8443}}}]}]}`,
		"shop/edge-gwapi-terminate.t.example.com": `{hosts: [t.example.com], gateways: [shop/edge-gwapi-terminate], tcp: [{match: [{port: 9444}], route: [
		  {destination: {host: plain.shop.svc.cluster.local, port: {number: 7001}}}]}]}`,
	}, func() *networking.VirtualService { return &networking.VirtualService{} })
	l := snap.GatewayAPI.Gateways["shop/edge"].Listeners
	if l[0].AttachedRoutes != 1 || l[1].AttachedRoutes != 1 || l[2].AttachedRoutes != 1 || l[2].Reason != "" || len(l[0].Kinds) != 1 || l[0].Kinds[0].Kind != "TCPRoute" {
		t.Errorf("listeners = %+v", l)
	}
}

// The experimental channel's versions of the route kinds that reached v1
// late load as v1 does: Istio's samples/tcp-echo/gateway-api writes
// TCPRoute as v1alpha2. A version a kind never had is rejected, naming
// the versions Weft reads.
func TestGatewayAPIExperimentalVersions(t *testing.T) {
	docs := `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: tcp-echo-gateway, namespace: default}
spec:
  gatewayClassName: istio
  listeners:
  - {name: tcp-31400, protocol: TCP, port: 31400}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: tcp-echo, namespace: default}
spec:
  parentRefs: [{name: tcp-echo-gateway, sectionName: tcp-31400}]
  rules: [{backendRefs: [{name: tcp-echo-v1, port: 9000}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha3
kind: TLSRoute
metadata: {name: tls, namespace: default}
spec:
  parentRefs: [{name: tcp-echo-gateway}]
  hostnames: [a.example]
  rules: [{backendRefs: [{name: secure, port: 8443}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: GRPCRoute
metadata: {name: grpc, namespace: default}
spec:
  parentRefs: [{name: tcp-echo-gateway}]
  rules: [{backendRefs: [{name: greeter, port: 8080}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: ReferenceGrant
metadata: {name: grant, namespace: other}
spec:
  from: [{group: gateway.networking.k8s.io, kind: TCPRoute, namespace: default}]
  to: [{group: "", kind: Service}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: HTTPRoute
metadata: {name: web, namespace: default}
spec:
  parentRefs: [{name: tcp-echo-gateway}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
`
	snap := NewStore(testOptions()).Load(files("gw.yaml", docs))
	var errs []string
	for _, d := range diagStrings(snap) {
		if strings.HasPrefix(d, "error:") {
			errs = append(errs, d)
		}
	}
	checkStrings(t, "errors", errs, []string{
		`error: gw.yaml: doc 6: HTTPRoute default/web: apiVersion: unsupported apiVersion "gateway.networking.k8s.io/v1alpha2" for HTTPRoute (want gateway.networking.k8s.io/v1 or v1beta1)`,
	})
	if len(snap.TCPRoutes) != 1 || len(snap.TLSRoutes) != 1 || len(snap.GRPCRoutes) != 1 || len(snap.ReferenceGrants) != 1 {
		t.Fatalf("loaded %d TCPRoutes, %d TLSRoutes, %d GRPCRoutes, %d ReferenceGrants, want one each",
			len(snap.TCPRoutes), len(snap.TLSRoutes), len(snap.GRPCRoutes), len(snap.ReferenceGrants))
	}
	wantSpecs(t, snap.VirtualServices, map[string]string{
		"default/tcp-echo-gateway-gwapi-tcp-31400.wildcard": `
hosts: ["*"]
gateways: [default/tcp-echo-gateway-gwapi-tcp-31400]
tcp:
- match: [{port: 31400}]
  route: [{destination: {host: tcp-echo-v1.default.svc.cluster.local, port: {number: 9000}}}]`,
	}, func() *networking.VirtualService { return &networking.VirtualService{} })
}
