package config

import (
	"testing"

	networking "istio.io/api/networking/v1alpha3"
)

// TestGatewayAPICORS: a CORS filter becomes the rule's corsPolicy as
// Istio translates it (its http.yaml test input): origins with "*" as
// regular expressions, others exact; maxAge in seconds; preflights it
// does not allow passed on.
func TestGatewayAPICORS(t *testing.T) {
	route := `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: cors, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules:
  - matches: [{path: {type: Exact, value: /some}}]
    backendRefs: [{name: web, port: 80}]
    filters:
    - type: CORS
      cors:
        allowCredentials: true
        allowOrigins: ["https://*.xpto.com", "https://example.com"]
        allowMethods: [GET, HEAD, POST]
        allowHeaders: [Accept, Content-Type]
        exposeHeaders: [x-header-3]
        maxAge: 50
  - backendRefs: [{name: web, port: 80}]
    filters:
    - type: CORS
      cors: {allowOrigins: ["*"], allowMethods: [GET]}
`
	snap := NewStore(testOptions()).Load(files("route.yaml", route))
	checkStrings(t, "diagnostics", diagStrings(snap), nil)
	wantSpecs(t, snap.VirtualServices, map[string]string{
		"default/mesh.web.default.svc.cluster.local": `
hosts: [web.default.svc.cluster.local]
gateways: [mesh]
http:
- name: default.cors.0.0
  match: [{uri: {exact: /some}}]
  route: [{destination: {host: web.default.svc.cluster.local, port: {number: 80}}}]
  corsPolicy:
    allowOrigins: [{regex: '^https://.*\.xpto\.com$'}, {exact: "https://example.com"}]
    allowMethods: [GET, HEAD, POST]
    allowHeaders: [Accept, Content-Type]
    exposeHeaders: [x-header-3]
    maxAge: 50s
    allowCredentials: true
    unmatchedPreflights: IGNORE
- name: default.cors.1.0
  route: [{destination: {host: web.default.svc.cluster.local, port: {number: 80}}}]
  corsPolicy:
    allowOrigins: [{regex: '^[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s?#]+$'}]
    allowMethods: [GET]
    unmatchedPreflights: IGNORE`,
	}, func() *networking.VirtualService { return &networking.VirtualService{} })
}
