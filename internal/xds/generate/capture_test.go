package generate

import (
	"slices"
	"testing"

	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/xds/contract"
)

// captureMesh is bookinfo with virtual IPs: reviews and ratings (HTTP)
// on cluster IPs, a TCP database of reviews' workload with one, an
// external TCP service written twice with one address (the first by
// hostname owns it), and a 90/10 split on reviews.
const captureMesh = bookinfo + `
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews-vip, namespace: bookinfo}
spec:
  hosts: [reviews-vip.bookinfo.svc.cluster.local]
  addresses: [10.96.0.10]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: redis, namespace: bookinfo}
spec:
  hosts: [redis.bookinfo.svc.cluster.local]
  addresses: [10.96.0.20, fd00:96::20]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 6379, name: tcp-redis, protocol: TCP}]
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db-a, namespace: egress}
spec:
  hosts: [a.db.example.com]
  addresses: [240.0.0.7]
  resolution: STATIC
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  endpoints: [{address: 192.0.2.7}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db-b, namespace: egress}
spec:
  hosts: [b.db.example.com]
  addresses: [240.0.0.7, 240.0.0.8]
  resolution: STATIC
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  endpoints: [{address: 192.0.2.8}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews.bookinfo.svc.cluster.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews.bookinfo.svc.cluster.local]
  http:
  - route:
    - {destination: {host: reviews.bookinfo.svc.cluster.local, subset: v1}, weight: 90}
    - {destination: {host: reviews.bookinfo.svc.cluster.local, subset: v2}, weight: 10}
`

// capturedProxy is id with its pod's traffic redirected to it.
func capturedProxy(id contract.Identity) contract.Identity {
	id.InterceptionMode = contract.InterceptionRedirect
	id.OutboundAddress = "" // what weft-proxy sends when captured; ignored anyway
	return id
}

func captureCases() []goldenCase {
	return []goldenCase{
		{
			// No PeerAuthentication (PERMISSIVE): the virtual outbound
			// listener routes HTTP ports by Host and TCP VIPs to their
			// service; the virtual inbound one serves reviews' HTTP ports
			// and its redis port, TLS or plaintext.
			name:  "capture_vip_permissive",
			mesh:  func() *mesh.Snapshot { return securityMesh(captureMesh, mesh.Options{}) },
			proxy: capturedProxy(reviewsProxy),
		},
		{
			// Unknown destinations refused: BlackHoleCluster as the
			// default chain, block_all (502) as the last virtual host.
			name: "capture_registry_only",
			mesh: func() *mesh.Snapshot {
				return securityMesh(captureMesh, mesh.Options{OutboundTrafficPolicy: mesh.RegistryOnly})
			},
			proxy: capturedProxy(reviewsProxy),
		},
		{
			// STRICT mesh-wide, port 9090 back to DISABLE: per port chains.
			// Ports no service declares pass through under mutual TLS
			// too, except 8443, which portLevelMtls sets back to DISABLE
			// (a passthrough chain of its own, plaintext).
			name: "capture_inbound_strict",
			mesh: func() *mesh.Snapshot {
				return securityMesh(captureMesh+`
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: reviews}}
  portLevelMtls:
    9090: {mode: DISABLE}
    8443: {mode: DISABLE}
`, mesh.Options{})
			},
			proxy: capturedProxy(reviewsProxy),
		},
		{
			// AuthorizationPolicies on a captured workload with an HTTP
			// port (9080) and a TCP one (redis, 6379): the HTTP chains
			// get RBAC HTTP filters, the TCP and passthrough chains
			// network RBAC filters before tcp_proxy, generated for TCP:
			// the ALLOW rule that names paths is dropped there (it can
			// never match a connection), the DENY rule's methods are
			// left out (it then refuses every connection from ops).
			name: "capture_inbound_authz",
			mesh: func() *mesh.Snapshot {
				return securityMesh(captureMesh+`
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: reviews}}
  rules:
  - from:
    - source: {principals: [cluster.local/ns/bookinfo/sa/productpage]}
    to:
    - operation: {paths: ["/reviews/*"]}
  - from:
    - source: {namespaces: [cache-clients]}
    to:
    - operation: {ports: ["6379"]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-writes-from-ops, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: reviews}}
  action: DENY
  rules:
  - from:
    - source: {namespaces: [ops]}
    to:
    - operation: {methods: [POST]}
`, mesh.Options{})
			},
			proxy: capturedProxy(reviewsProxy),
		},
		{
			// Ports without a declared protocol: reviews' admin port 9100
			// on a VIP and an external service without one (port 7000).
			// The HTTP inspector runs on those ports only; outbound, HTTP
			// to the VIP is routed and other bytes go to the service's
			// TCP cluster, HTTP to port 7000 is routed by Host; inbound,
			// HTTP chains (ALPN h2/http/1.1 over mutual TLS, the
			// inspector's verdict in plaintext) before TCP ones.
			name: "capture_sniffed",
			mesh: func() *mesh.Snapshot {
				return securityMesh(captureMesh+`
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews-admin, namespace: bookinfo}
spec:
  hosts: [reviews-admin.bookinfo.svc.cluster.local]
  addresses: [10.96.0.30]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9100, name: admin}]
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy, namespace: egress}
spec:
  hosts: [legacy.example.com]
  resolution: DNS
  ports: [{number: 7000, name: legacy}]
`, mesh.Options{})
			},
			proxy: capturedProxy(reviewsProxy),
		},
		{
			// reviews' own Sidecar: HTTP port 9080 of its namespace's
			// services only, every port of egress/*, and REGISTRY_ONLY:
			// ratings (legacy), greeter (apps) and redis' port are not
			// sent; unknown destinations are refused.
			name: "capture_sidecar_scoped",
			mesh: func() *mesh.Snapshot {
				return securityMesh(captureMesh+`
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: reviews, namespace: bookinfo}
spec:
  workloadSelector:
    labels: {app: reviews}
  egress:
  - port: {number: 9080, name: http, protocol: HTTP}
    hosts: ["./*"]
  - hosts: ["egress/*"]
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
`, mesh.Options{})
			},
			proxy: capturedProxy(reviewsProxy),
		},
		{
			// A dual-stack pod: IPv6 destinations of undeclared ports
			// pass through from ::6.
			name: "capture_dual_stack",
			mesh: func() *mesh.Snapshot { return securityMesh(captureMesh, mesh.Options{}) },
			proxy: func() contract.Identity {
				id := capturedProxy(reviewsProxy)
				id.IPs = []string{"127.0.0.2", "fd00:10::2"}
				return id
			}(),
		},
	}
}

// TestForeignTLSServerNames: the mutual TLS chain of a PERMISSIVE TCP
// port takes the SNIs sidecars send to its services — "*.<host>" for
// Istio's outbound_ names, and the sni of an ISTIO_MUTUAL
// DestinationRule (top level and a subset's) — and every other TLS goes
// to the relayed chain.
func TestForeignTLSServerNames(t *testing.T) {
	s := securityMesh(captureMesh+`
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: redis, namespace: bookinfo}
spec:
  host: redis.bookinfo.svc.cluster.local
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL, sni: Redis.Internal}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      tls: {mode: ISTIO_MUTUAL, sni: redis-v1.internal}
`, mesh.Options{})
	l, _ := virtualInboundListener(s, capturedProxy(reviewsProxy))
	var mtls, relayed []string
	for _, fc := range l.GetFilterChains() {
		if fc.GetFilterChainMatch().GetDestinationPort().GetValue() != 6379 || fc.GetFilterChainMatch().GetTransportProtocol() != "tls" {
			continue
		}
		if fc.GetTransportSocket() != nil {
			mtls = fc.GetFilterChainMatch().GetServerNames()
		} else {
			relayed = append(relayed, fc.GetName())
			if len(fc.GetFilterChainMatch().GetServerNames()) > 0 {
				t.Errorf("the relayed chain matches server names %q", fc.GetFilterChainMatch().GetServerNames())
			}
		}
	}
	if want := []string{"*.redis.bookinfo.svc.cluster.local", "redis-v1.internal", "redis.internal"}; !slices.Equal(mtls, want) {
		t.Errorf("mutual TLS chain server names %q, want %q", mtls, want)
	}
	if !slices.Equal(relayed, []string{"inbound_0.0.0.0_6379_tls_relayed"}) {
		t.Errorf("relayed chains %q", relayed)
	}
}
