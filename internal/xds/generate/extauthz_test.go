package generate

import (
	"strings"
	"testing"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/mesh"
)

// extAuthzMeshConfig is Istio's samples/extauthz providers (the HTTP one
// with the headers the sample's docs use) and a provider Weft cannot use.
const extAuthzMeshConfig = `
extensionProviders:
- name: sample-ext-authz-http
  envoyExtAuthzHttp:
    service: ext-authz.foo.svc.cluster.local
    port: 8000
    pathPrefix: /check
    includeRequestHeadersInCheck: ["x-ext-authz", "x-user-*"]
    includeAdditionalHeadersInCheck: {x-mesh: weft}
    headersToUpstreamOnAllow: ["x-ext-authz-check-result", "x-user-*"]
    headersToDownstreamOnDeny: ["x-ext-authz-check-result"]
    statusOnError: "503"
- name: sample-ext-authz-grpc
  envoyExtAuthzGrpc:
    service: foo/ext-authz.foo.svc.cluster.local
    port: 9000
    timeout: 2s
    failOpen: true
- name: with-body
  envoyExtAuthzHttp:
    service: ext-authz.foo.svc.cluster.local
    port: 8000
    includeRequestBodyInCheck: {maxRequestBytes: 1024}
`

// extAuthzService is the providers' service.
const extAuthzService = `
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext-authz, namespace: foo}
spec:
  hosts: [ext-authz.foo.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 8000, name: http, protocol: HTTP}
  - {number: 9000, name: grpc, protocol: GRPC}
  endpoints: [{address: 10.9.0.1}]
`

const extAuthzPolicies = extAuthzService + `
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-authz-http, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: reviews}}
  action: CUSTOM
  provider: {name: sample-ext-authz-http}
  rules:
  - to:
    - operation: {paths: ["/headers"]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-authz-grpc, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: reviews}}
  action: CUSTOM
  provider: {name: sample-ext-authz-grpc}
  rules:
  - to:
    - operation: {ports: ["9090"]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: needs-body, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: reviews}}
  action: CUSTOM
  provider: {name: with-body}
  rules:
  - to:
    - operation: {methods: [POST]}
`

func extAuthzMesh() *mesh.Snapshot {
	mc, _, err := config.ParseMeshConfig("mesh-config.yaml", []byte(extAuthzMeshConfig))
	if err != nil {
		panic(err)
	}
	return securityMesh(bookinfo+extAuthzPolicies, mesh.Options{MeshConfig: mc})
}

func extAuthzCases() []goldenCase {
	// CUSTOM policies of two providers and one Weft cannot use: per
	// usable provider, a shadow RBAC filter and its ext_authz filter
	// (enabled by the shadow policy id), first in the chain; the unusable
	// one's rules deny (fail closed).
	return []goldenCase{
		{name: "authz_custom", mesh: extAuthzMesh, proxy: reviewsProxy},
		// A captured sidecar's TCP port (redis, 6379) under a gRPC
		// provider's CUSTOM policy: the network RBAC filter in shadow
		// mode and the network ext_authz filter before tcp_proxy; the
		// HTTP provider's policy does nothing on TCP chains.
		{name: "capture_authz_custom", mesh: func() *mesh.Snapshot {
			mc, _, err := config.ParseMeshConfig("mesh-config.yaml", []byte(extAuthzMeshConfig))
			if err != nil {
				panic(err)
			}
			return securityMesh(captureMesh+extAuthzService+`
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: redis-authz, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: reviews}}
  action: CUSTOM
  provider: {name: sample-ext-authz-grpc}
  rules:
  - to:
    - operation: {ports: ["6379"]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: headers-authz, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: reviews}}
  action: CUSTOM
  provider: {name: sample-ext-authz-http}
  rules:
  - to:
    - operation: {paths: ["/headers"]}
`, mesh.Options{MeshConfig: mc})
		}, proxy: capturedProxy(reviewsProxy)},
	}
}

// Why a provider cannot be used is said in words a user can act on.
func TestExtAuthzProviderProblems(t *testing.T) {
	s := extAuthzMesh()
	for name, want := range map[string]string{
		"sample-ext-authz-http": "",
		"with-body":             "includeRequestBodyInCheck is not supported",
		"missing":               `no extension provider "missing"`,
		"envoy":                 "not an envoyExtAuthzHttp or envoyExtAuthzGrpc provider",
	} {
		_, why := s.ExtAuthzProvider(name)
		if want == "" && why != "" || !strings.Contains(why, want) {
			t.Errorf("%s: %q, want %q", name, why, want)
		}
	}
}
