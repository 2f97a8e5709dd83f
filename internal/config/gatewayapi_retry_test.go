package config

import (
	"testing"

	networking "istio.io/api/networking/v1alpha3"
)

// TestGatewayAPIRetry: a rule's retry becomes Istio's retries as Istio
// translates it (its http.yaml test input): attempts (2 when left out, 0
// off), the connection failures Istio retries and the listed codes,
// backoff, and a backendRequest timeout as each try's; bad values are
// refused as the CRD refuses them.
func TestGatewayAPIRetry(t *testing.T) {
	route := `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: retry, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules:
  - matches: [{path: {type: Exact, value: /explicit}}]
    backendRefs: [{name: web, port: 80}]
    retry: {attempts: 3, backoff: 3ms, codes: [503, 429]}
    timeouts: {request: 10s, backendRequest: 2s}
  - matches: [{path: {type: Exact, value: /empty}}]
    backendRefs: [{name: web, port: 80}]
    retry: {}
  - matches: [{path: {type: Exact, value: /off}}]
    backendRefs: [{name: web, port: 80}]
    retry: {attempts: 0}
`
	snap := NewStore(testOptions()).Load(files("route.yaml", route))
	checkStrings(t, "diagnostics", diagStrings(snap), nil)
	wantSpecs(t, snap.VirtualServices, map[string]string{
		"default/mesh.web.default.svc.cluster.local": `
hosts: [web.default.svc.cluster.local]
gateways: [mesh]
http:
- name: default.retry.0.0
  match: [{uri: {exact: /explicit}}]
  route: [{destination: {host: web.default.svc.cluster.local, port: {number: 80}}}]
  timeout: 10s
  retries: {attempts: 3, backoff: 0.003s, perTryTimeout: 2s, retryOn: "connect-failure,refused-stream,unavailable,cancelled,503,429"}
- name: default.retry.1.0
  match: [{uri: {exact: /empty}}]
  route: [{destination: {host: web.default.svc.cluster.local, port: {number: 80}}}]
  retries: {attempts: 2, retryOn: "connect-failure,refused-stream,unavailable,cancelled"}
- name: default.retry.2.0
  match: [{uri: {exact: /off}}]
  route: [{destination: {host: web.default.svc.cluster.local, port: {number: 80}}}]
  retries: {}`,
	}, func() *networking.VirtualService { return &networking.VirtualService{} })

	bad := `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bad, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules:
  - backendRefs: [{name: web, port: 80}]
    retry: {attempts: -1, codes: [200], backoff: 1h1x}
`
	snap = NewStore(testOptions()).Load(files("bad.yaml", bad))
	checkStrings(t, "diagnostics", diagStrings(snap), []string{
		`error: bad.yaml: doc 1: HTTPRoute default/bad: spec.rules[0].retry.attempts: attempts must not be negative, got -1`,
		`error: bad.yaml: doc 1: HTTPRoute default/bad: spec.rules[0].retry.codes[0]: status code 200 is out of range [400, 599]`,
		`error: bad.yaml: doc 1: HTTPRoute default/bad: spec.rules[0].retry.backoff: invalid duration "1h1x": want one to four numbers each with a unit of h, m, s or ms, such as 1m30s`,
	})
}
