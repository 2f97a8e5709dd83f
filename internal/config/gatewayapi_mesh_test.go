package config

import (
	"testing"

	networking "istio.io/api/networking/v1alpha3"
)

// TestGatewayAPIMeshRoutes: routes attached to Services (the Gateway API
// for service mesh, GAMMA) become VirtualServices for the sidecars, as
// Istio makes them: one per Service, with the rules of every route
// attached to it in the Gateway API's precedence; a consumer route (of
// another namespace) only for its own namespace; a port on the parentRef
// limits the rules to that port; TCPRoutes and TLSRoutes give tcp and tls
// rules.
func TestGatewayAPIMeshRoutes(t *testing.T) {
	routes := `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews, port: 9080}]
  rules:
  - backendRefs:
    - {name: reviews-v1, port: 9080, weight: 90}
    - {name: reviews-v2, port: 9080, weight: 10}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews-jason, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews, port: 9080}]
  rules:
  - matches: [{headers: [{name: end-user, value: jason}]}]
    backendRefs: [{name: reviews-v3, port: 9080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: ratings-for-frontend, namespace: frontend}
spec:
  parentRefs: [{group: core, kind: Service, name: ratings, namespace: default}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /v2}}]
    backendRefs: [{name: ratings-v2, namespace: default, port: 9080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews-for-frontend, namespace: frontend}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews, namespace: default}]
  rules:
  - backendRefs: [{name: reviews, namespace: default, port: 9080}]
    timeouts: {request: 2s}
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: frontend-to-ratings, namespace: default}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: frontend}]
  to: [{group: "", kind: Service}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: db, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: db}]
  rules: [{backendRefs: [{name: db-primary, port: 5432}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: ldap, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: ldap, port: 636}]
  hostnames: [ldap.default.svc.cluster.local]
  rules: [{backendRefs: [{name: ldap-v2, port: 636}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: ldap-by-name, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: ldap}]
  hostnames: [ldap.example.com]
  rules: [{backendRefs: [{name: ldap-v3, port: 636}]}]
`
	snap := NewStore(testOptions()).Load(files("routes.yaml", routes))
	checkStrings(t, "diagnostics", diagStrings(snap), []string{
		"warning: routes.yaml: doc 8: TLSRoute default/ldap-by-name: spec.parentRefs[0]: none of the route's hostnames is a host of its parent (ldap.default.svc.cluster.local): on the sidecars a TLSRoute routes its parent's hosts by SNI; the route is not attached to it",
	})
	wantSpecs(t, snap.VirtualServices, map[string]string{
		// Both producer routes of reviews, the header match first.
		"default/mesh.reviews.default.svc.cluster.local": `
hosts: [reviews.default.svc.cluster.local]
gateways: [mesh]
http:
- name: default.reviews-jason.0.0
  match: [{headers: {end-user: {exact: jason}}, port: 9080}]
  route: [{destination: {host: reviews-v3.default.svc.cluster.local, port: {number: 9080}}}]
- name: default.reviews.0.0
  match: [{port: 9080}]
  route:
  - {destination: {host: reviews-v1.default.svc.cluster.local, port: {number: 9080}}, weight: 90}
  - {destination: {host: reviews-v2.default.svc.cluster.local, port: {number: 9080}}, weight: 10}`,
		// A consumer route: frontend's sidecars only.
		"frontend/mesh.ratings.default.svc.cluster.local": `
hosts: [ratings.default.svc.cluster.local]
gateways: [mesh]
exportTo: ["."]
http:
- name: frontend.ratings-for-frontend.0.0
  match: [{uri: {exact: /v2}}]
  route: [{destination: {host: ratings-v2.default.svc.cluster.local, port: {number: 9080}}}]
- name: frontend.ratings-for-frontend.0.0
  match: [{uri: {prefix: /v2/}}]
  route: [{destination: {host: ratings-v2.default.svc.cluster.local, port: {number: 9080}}}]`,
		// A consumer route to its own parent Service needs no
		// ReferenceGrant.
		"frontend/mesh.reviews.default.svc.cluster.local": `
hosts: [reviews.default.svc.cluster.local]
gateways: [mesh]
exportTo: ["."]
http:
- name: frontend.reviews-for-frontend.0.0
  route: [{destination: {host: reviews.default.svc.cluster.local, port: {number: 9080}}}]
  timeout: 2s`,
		// TCPRoutes and TLSRoutes: tcp and tls rules.
		"default/mesh.db.default.svc.cluster.local": `
hosts: [db.default.svc.cluster.local]
gateways: [mesh]
tcp: [{route: [{destination: {host: db-primary.default.svc.cluster.local, port: {number: 5432}}}]}]`,
		"default/mesh.ldap.default.svc.cluster.local": `
hosts: [ldap.default.svc.cluster.local]
gateways: [mesh]
tls:
- match: [{sniHosts: [ldap.default.svc.cluster.local], port: 636}]
  route: [{destination: {host: ldap-v2.default.svc.cluster.local, port: {number: 636}}}]`,
	}, func() *networking.VirtualService { return &networking.VirtualService{} })
}

// TestGatewayAPIMeshRouteConflict: a VirtualService as written for the
// same host and sidecars conflicts with the routes attached to the
// Service as two VirtualServices do, and the route says which is used.
func TestGatewayAPIMeshRouteConflict(t *testing.T) {
	vs := `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}]}]
`
	route := `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews}]
  rules: [{backendRefs: [{name: reviews, port: 9080}]}]
`
	// Files are first seen in path order: a.yaml before b.yaml.
	snap := NewStore(testOptions()).Load(files("a.yaml", vs, "b.yaml", route))
	checkStrings(t, "diagnostics, VirtualService first", diagStrings(snap), []string{
		"warning: b.yaml: doc 1: HTTPRoute default/reviews: spec.parentRefs[0]: VirtualService default/reviews (a.yaml:1) also routes reviews.default.svc.cluster.local for these sidecars and was there first: this route is not used for it (on sidecars one VirtualService routes a host)",
	})
	snap = NewStore(testOptions()).Load(files("a.yaml", route, "b.yaml", vs))
	checkStrings(t, "diagnostics, route first", diagStrings(snap), []string{
		"warning: a.yaml: doc 1: HTTPRoute default/reviews: spec.parentRefs[0]: VirtualService default/reviews (b.yaml:1) also routes reviews.default.svc.cluster.local for these sidecars; this route was there first, so that VirtualService is not used for it (on sidecars one VirtualService routes a host)",
	})
}

// TestGatewayAPIServiceEntryRoutes: Istio's extension of the Gateway API
// for the mesh, as in its own test input (serviceentry.yaml): routes
// attached to a ServiceEntry route each of its hosts, and backends of
// kind Hostname and ServiceEntry (group networking.istio.io) name any
// host and a ServiceEntry's first host.
func TestGatewayAPIServiceEntryRoutes(t *testing.T) {
	cfg := `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: egress, namespace: default}
spec:
  hosts: [google.com, "*.egress.com"]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  - {number: 443, name: tls, protocol: TLS}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: egress, namespace: default}
spec:
  parentRefs: [{group: networking.istio.io, kind: ServiceEntry, name: egress}]
  rules:
  - backendRefs: [{group: networking.istio.io, kind: Hostname, name: google.com, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: egress, namespace: default}
spec:
  parentRefs: [{group: networking.istio.io, kind: ServiceEntry, name: egress}]
  hostnames: [google.com]
  rules: [{backendRefs: [{group: networking.istio.io, kind: ServiceEntry, name: egress, port: 443}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: nowhere, namespace: default}
spec:
  parentRefs: [{group: networking.istio.io, kind: ServiceEntry, name: missing}]
  rules: [{backendRefs: [{name: web, port: 80}]}]
`
	snap := NewStore(testOptions()).Load(files("egress.yaml", cfg))
	checkStrings(t, "diagnostics", diagStrings(snap), []string{
		"warning: egress.yaml: doc 4: HTTPRoute default/nowhere: spec.parentRefs[0]: ServiceEntry default/missing does not exist or has no hosts; the route is not attached to it",
	})
	wantSpecs(t, snap.VirtualServices, map[string]string{
		"default/mesh.google.com": `
hosts: [google.com]
gateways: [mesh]
http: [{name: default.egress.0.0, route: [{destination: {host: google.com, port: {number: 80}}}]}]
tls:
- match: [{sniHosts: [google.com]}]
  route: [{destination: {host: google.com, port: {number: 443}}}]`,
		"default/mesh.wildcard.egress.com": `
hosts: ["*.egress.com"]
gateways: [mesh]
http: [{name: default.egress.0.0, route: [{destination: {host: google.com, port: {number: 80}}}]}]`,
	}, func() *networking.VirtualService { return &networking.VirtualService{} })
}

// A Hostname backend must name a host: the VirtualService it becomes
// would otherwise be refused.
func TestGatewayAPIHostnameBackendIsAHost(t *testing.T) {
	route := `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bad, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules: [{backendRefs: [{group: networking.istio.io, kind: Hostname, name: "not a host", port: 80}]}]
`
	snap := NewStore(testOptions()).Load(files("route.yaml", route))
	if len(snap.Diagnostics) != 1 || snap.Diagnostics[0].Severity != SeverityError || snap.Diagnostics[0].Path != "spec.rules[0].backendRefs[0].name" {
		t.Errorf("diagnostics = %v", diagStrings(snap))
	}
}
