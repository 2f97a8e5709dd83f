package generate

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry/static"
	"weft.dev/weft/internal/xds/contract"
)

// yamlMesh loads Istio YAML as weft serve --config does; errors panic
// (the golden cases are built outside a test's goroutine).
func yamlMesh(y string) func() *mesh.Snapshot {
	return func() *mesh.Snapshot {
		dir, err := os.MkdirTemp("", "gateway-golden")
		if err != nil {
			panic(err)
		}
		defer os.RemoveAll(dir)
		if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(y), 0o644); err != nil {
			panic(err)
		}
		files, err := config.ReadDir(dir)
		if err != nil {
			panic(err)
		}
		snap := config.NewStore(config.Options{Logger: slog.New(slog.DiscardHandler)}).LoadDir(files)
		for _, d := range snap.Diagnostics {
			if d.Severity == config.SeverityError {
				panic(fmt.Sprintf("golden config: %v", d))
			}
		}
		return mesh.New(snap, static.Build(snap, ""), "")
	}
}

// gatewayConfig exercises what a gateway proxy is sent: two Gateways
// selecting it (ports merged), a Service port mapping 80 to 8080, HTTP
// with httpsRedirect, HTTPS by SNI with credentials (SIMPLE, MUTUAL),
// ISTIO_MUTUAL, files, PASSTHROUGH by SNI, TCP; VirtualServices merged
// per host, match.gateways, exportTo and namespace-restricted hosts.
const gatewayConfig = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ingressgateway, namespace: istio-system}
spec:
  hosts: [istio-ingressgateway.istio-system.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http2, protocol: HTTP}, {number: 443, name: https, protocol: HTTPS}]
  workloadSelector: {labels: {istio: ingressgateway}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ingressgateway-1, namespace: istio-system}
spec:
  address: 10.1.0.1
  ports: {http2: 8080, https: 8443}
  labels: {istio: ingressgateway}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web, namespace: default}
spec:
  hosts: [web.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 8080, name: http, protocol: HTTP}, {number: 7000, name: tcp, protocol: TCP}, {number: 9443, name: tls, protocol: TLS}]
  endpoints:
  - {address: 10.2.0.1, labels: {version: v1}}
  - {address: 10.2.0.2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: default}
spec:
  host: web.default.svc.cluster.local
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: [a.example.com]
    tls: {httpsRedirect: true}
  - port: {number: 443, name: https-a, protocol: HTTPS}
    hosts: [a.example.com]
    tls: {mode: SIMPLE, credentialName: a-cert, minProtocolVersion: TLSV1_3, cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256, NOPE]}
  - port: {number: 443, name: https-m, protocol: HTTPS}
    hosts: [m.example.com]
    tls: {mode: MUTUAL, credentialName: kubernetes://m-cert, subjectAltNames: [client.example.com]}
  - port: {number: 443, name: https-f, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: SIMPLE, serverCertificate: /etc/certs/tls.crt, privateKey: /etc/certs/tls.key}
  - port: {number: 15443, name: tls-pt, protocol: TLS}
    hosts: [pt.example.com]
    tls: {mode: PASSTHROUGH}
  - port: {number: 15444, name: tls-mesh, protocol: TLS}
    hosts: ["*"]
    tls: {mode: ISTIO_MUTUAL}
  - port: {number: 31400, name: tcp, protocol: TCP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: team-b, namespace: team-b}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http-b, protocol: HTTP}
    hosts: ["team-b/*.b.example.com"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a, namespace: istio-system}
spec:
  hosts: [a.example.com, m.example.com, f.example.com]
  gateways: [ingress]
  http:
  - match: [{uri: {prefix: /v2}}]
    route: [{destination: {host: web.default.svc.cluster.local, subset: v2, port: {number: 8080}}}]
  - route: [{destination: {host: web.default.svc.cluster.local, subset: v1, port: {number: 8080}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: a-extra, namespace: istio-system}
spec:
  hosts: [a.example.com]
  gateways: [istio-system/ingress, mesh]
  http:
  - match: [{gateways: [mesh]}]
    route: [{destination: {host: web.default.svc.cluster.local, port: {number: 8080}}}]
  - match: [{gateways: [ingress], headers: {x-extra: {exact: "1"}}}]
    route: [{destination: {host: web.default.svc.cluster.local, subset: v2, port: {number: 8080}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: b, namespace: team-b}
spec:
  hosts: [www.b.example.com]
  gateways: [team-b]
  http:
  - route: [{destination: {host: web.default.svc.cluster.local, port: {number: 8080}}}]
---
# Not admitted: team-b's server takes VirtualServices of team-b only.
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: intruder, namespace: default}
spec:
  hosts: [evil.b.example.com]
  gateways: [team-b/team-b]
  http:
  - route: [{destination: {host: web.default.svc.cluster.local, port: {number: 8080}}}]
---
# Not visible to the gateway's namespace.
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: private, namespace: team-b}
spec:
  hosts: [private.b.example.com]
  gateways: [team-b]
  exportTo: [other]
  http:
  - route: [{destination: {host: web.default.svc.cluster.local, port: {number: 8080}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pt, namespace: istio-system}
spec:
  hosts: [pt.example.com]
  gateways: [ingress]
  tls:
  - match: [{sniHosts: [pt.example.com]}]
    route: [{destination: {host: web.default.svc.cluster.local, port: {number: 9443}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: tcp, namespace: istio-system}
spec:
  hosts: ["*"]
  gateways: [ingress]
  tcp:
  - match: [{port: 31400}]
    route:
    - {destination: {host: web.default.svc.cluster.local, subset: v1, port: {number: 7000}}, weight: 80}
    - {destination: {host: web.default.svc.cluster.local, subset: v2, port: {number: 7000}}, weight: 20}
  - match: [{port: 15444}]
    route: [{destination: {host: web.default.svc.cluster.local, port: {number: 7000}}}]
`

const gatewaySecurityConfig = `
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ingress-allowlist, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  action: ALLOW
  rules:
  - from:
    - source: {remoteIpBlocks: ["203.0.113.0/24"]}
  - to:
    - operation: {paths: ["/public/*"]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: not-for-gateways, namespace: team-a}
spec:
  action: DENY
  rules:
  - {}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: ingress-jwt, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  jwtRules:
  - issuer: https://issuer.example.com
    jwks: '{"keys":[{"kty":"EC","crv":"P-256","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}]}'
`

var ingressGateway = contract.Identity{
	ID: contract.RouterNodeID("10.1.0.1", "ingressgateway-1", "istio-system"), Namespace: "istio-system",
	WorkloadName: "ingressgateway-1", Labels: map[string]string{"istio": "ingressgateway"}, IPs: []string{"10.1.0.1"},
	ServiceAccount: "ingressgateway", MTLS: true,
}

func gatewayCases() []goldenCase {
	return []goldenCase{
		{name: "gateway", mesh: yamlMesh(gatewayConfig), proxy: ingressGateway},
		// Policies that select the gateway (by label, from the root
		// namespace; another namespace's do not): the JWT and RBAC
		// filters last before the router of every HTTP chain, network
		// RBAC before every tcp_proxy (the TLS passthrough and TCP
		// servers); the ALLOW rule on paths is dropped on those.
		{name: "gateway_security", mesh: yamlMesh(gatewayConfig + gatewaySecurityConfig), proxy: ingressGateway},
	}
}

// The gateway's resources, checked beyond the golden file: what a
// reviewer would look for first.
func TestGatewayResources(t *testing.T) {
	r := ForProxy(yamlMesh(gatewayConfig)(), ingressGateway)
	var names []string
	for _, l := range r.Listeners {
		names = append(names, l.(interface{ GetName() string }).GetName())
	}
	// Port 80 and 443 are served on the Service's target ports.
	if got, want := strings.Join(names, " "), "0.0.0.0_15443 0.0.0.0_15444 0.0.0.0_31400 0.0.0.0_8080 0.0.0.0_8443"; got != want {
		t.Errorf("listeners %q, want %q", got, want)
	}
	var rcs []string
	for _, rc := range r.Routes {
		rcs = append(rcs, rc.(interface{ GetName() string }).GetName())
	}
	if got, want := strings.Join(rcs, " "), "http.80 https.443.https-a.ingress.istio-system https.443.https-f.ingress.istio-system https.443.https-m.ingress.istio-system"; got != want {
		t.Errorf("route configurations %q, want %q", got, want)
	}
	dump := string(render(t, r.Routes))
	for _, bad := range []string{"evil.b.example.com", "private.b.example.com"} {
		if strings.Contains(dump, bad) {
			t.Errorf("routes serve %s", bad)
		}
	}
	if !strings.Contains(dump, "www.b.example.com") {
		t.Errorf("routes lack team b's host")
	}
	// A sidecar is not sent the gateway's listeners.
	sc := ForProxy(yamlMesh(gatewayConfig)(), contract.Identity{ID: contract.DefaultNodeID("10.3.0.1", "c", "default"), Namespace: "default",
		IPs: []string{"10.3.0.1"}, OutboundAddress: "10.3.0.1:15001"})
	for _, l := range sc.Listeners {
		if n := l.(interface{ GetName() string }).GetName(); strings.HasPrefix(n, "0.0.0.0_") {
			t.Errorf("a sidecar got gateway listener %s", n)
		}
	}
}
