package generate

import (
	"fmt"
	"log/slog"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/jwks"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry/static"
	"weft.dev/weft/internal/xds/contract"
)

// The security cases are written as the YAML a user would write: the
// services and workloads (ServiceEntry, WorkloadEntry, the registry they
// make) and the policies, loaded through the config store exactly as the
// control plane loads them.

// securityMesh loads docs (which must load without errors) and builds the
// mesh with opts.
func securityMesh(docs string, opts mesh.Options) *mesh.Snapshot {
	snap := config.NewStore(config.Options{Logger: slog.New(slog.DiscardHandler), RootNamespace: opts.RootNamespace}).
		Load(map[string][]byte{"mesh.yaml": []byte(docs)})
	for _, d := range snap.Diagnostics {
		if d.Severity == config.SeverityError {
			panic(fmt.Sprintf("security fixture: %s", d.Error()))
		}
	}
	return mesh.Build(snap, static.Build(snap, ""), opts)
}

// bookinfo is the registry of the security cases: reviews (two HTTP
// ports) with a sidecar'd v1 on 127.0.0.2 and a v2 without sidecar;
// ratings in namespace legacy with a sidecar; greeter (gRPC) with one.
const bookinfo = `
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: bookinfo}
spec:
  hosts: [reviews.bookinfo.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9080, name: http, protocol: HTTP}
  - {number: 9090, name: http-metrics, protocol: HTTP}
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1, namespace: bookinfo}
spec:
  address: 127.0.0.2
  serviceAccount: reviews
  labels: {app: reviews, version: v1, security.istio.io/tlsMode: istio}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v2, namespace: bookinfo}
spec:
  address: 10.0.0.3
  labels: {app: reviews, version: v2}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: legacy}
spec:
  hosts: [ratings.legacy.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9080, name: http, protocol: HTTP}]
  workloadSelector: {labels: {app: ratings}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ratings-v1, namespace: legacy}
spec:
  address: 10.1.0.1
  serviceAccount: ratings
  labels: {app: ratings, security.istio.io/tlsMode: istio}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: greeter, namespace: apps}
spec:
  hosts: [greeter.apps.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 50051, name: grpc, protocol: GRPC}]
  workloadSelector: {labels: {app: greeter}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: greeter, namespace: apps}
spec:
  address: 10.2.0.1
  serviceAccount: greeter
  labels: {app: greeter, security.istio.io/tlsMode: istio}
`

// reviewsProxy is the sidecar of reviews-v1, with a workload certificate.
var reviewsProxy = contract.Identity{
	ID:              contract.DefaultNodeID("127.0.0.2", "reviews-v1", "bookinfo"),
	Namespace:       "bookinfo",
	WorkloadName:    "reviews-v1",
	Labels:          map[string]string{"app": "reviews", "version": "v1", "security.istio.io/tlsMode": "istio"},
	IPs:             []string{"127.0.0.2"},
	ServiceAccount:  "reviews",
	OutboundAddress: "127.0.0.2:15001",
	MTLS:            true,
}

func withoutCertificate(id contract.Identity) contract.Identity {
	id.MTLS = false
	return id
}

func securityCases() []goldenCase {
	return []goldenCase{
		{
			// No policy: PERMISSIVE inbound (TLS detected, both chains),
			// automatic mutual TLS to the endpoints labelled tlsMode=istio.
			name:  "mtls_default_permissive_auto",
			mesh:  func() *mesh.Snapshot { return securityMesh(bookinfo, mesh.Options{}) },
			proxy: reviewsProxy,
		},
		{
			// A mesh-wide STRICT, a port back to DISABLE, a namespace
			// DISABLE that turns automatic mutual TLS off toward it.
			name: "mtls_strict_port_level_disable",
			mesh: func() *mesh.Snapshot {
				return securityMesh(bookinfo+`
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
  mtls: {mode: UNSET}
  portLevelMtls:
    9090: {mode: DISABLE}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: legacy}
spec:
  mtls: {mode: DISABLE}
`, mesh.Options{})
			},
			proxy: reviewsProxy,
		},
		{
			// A proxy without a certificate: STRICT still requires TLS
			// (nothing connects), PERMISSIVE is plaintext only, no
			// automatic mutual TLS; a custom root namespace.
			name: "mtls_without_certificate",
			mesh: func() *mesh.Snapshot {
				return securityMesh(bookinfo+`
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: mesh-root}
spec:
  mtls: {mode: PERMISSIVE}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: reviews}}
  mtls: {mode: STRICT}
  portLevelMtls:
    9090: {mode: PERMISSIVE}
`, mesh.Options{RootNamespace: "mesh-root"})
			},
			proxy: withoutCertificate(reviewsProxy),
		},
		{
			// DestinationRule tls modes: ISTIO_MUTUAL (an SNI and SANs of
			// its own for a subset), SIMPLE with a CA file, MUTUAL with
			// client certificates, DISABLE on one port, SIMPLE without SNI
			// (auto SNI), insecureSkipVerify; HTTP/2 ALPN for gRPC.
			name: "destination_rule_tls",
			mesh: func() *mesh.Snapshot {
				return securityMesh(bookinfo+`
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: bookinfo}
spec:
  host: reviews.bookinfo.svc.cluster.local
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
    portLevelSettings:
    - port: {number: 9090}
      tls: {mode: DISABLE}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      tls:
        mode: ISTIO_MUTUAL
        sni: reviews-v1.internal
        subjectAltNames: [spiffe://cluster.local/ns/bookinfo/sa/reviews-v1]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings, namespace: legacy}
spec:
  host: ratings.legacy.svc.cluster.local
  trafficPolicy:
    tls:
      mode: MUTUAL
      clientCertificate: /etc/certs/client.pem
      privateKey: /etc/certs/client-key.pem
      caCertificates: /etc/certs/ca.pem
      caCrl: /etc/certs/ca.crl
      sni: ratings.example.com
      subjectAltNames: [ratings.example.com]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: greeter, namespace: apps}
spec:
  host: greeter.apps.svc.cluster.local
  trafficPolicy:
    tls: {mode: SIMPLE}
  subsets:
  - name: insecure
    labels: {app: greeter}
    trafficPolicy:
      tls: {mode: SIMPLE, insecureSkipVerify: true}
`, mesh.Options{TrustDomain: "example.org"})
			},
			proxy: reviewsProxy,
		},
		{
			// AuthorizationPolicies of every action for reviews: from the
			// root namespace and its own; paths with wildcards and
			// templates; a dry-run DENY; an ALLOW without rules (deny
			// all) elsewhere does not apply.
			name: "authz_policies",
			mesh: func() *mesh.Snapshot {
				return securityMesh(bookinfo+`
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit-writes, namespace: istio-system}
spec:
  action: AUDIT
  rules:
  - to:
    - operation: {methods: [POST, PUT, DELETE]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: reviews}}
  action: DENY
  rules:
  - to:
    - operation: {paths: ["/admin*", "/debug/{**}"]}
    from:
    - source: {notNamespaces: [ops]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: try-deny-v1
  namespace: bookinfo
  annotations: {istio.io/dry-run: "true"}
spec:
  action: DENY
  rules:
  - to:
    - operation: {paths: ["/v1/*"]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-readers, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: reviews}}
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/bookinfo/sa/productpage, "*/ns/ops/sa/admin"]
    - source:
        namespaces: [monitoring, "team-*"]
        ipBlocks: [10.0.0.0/8]
    to:
    - operation:
        methods: [GET, HEAD]
        paths: [/reviews/*, "*.json", "/api/{*}/info", /health]
        hosts: [reviews, "*.example.com"]
    - operation: {ports: ["9090"]}
    when:
    - key: request.headers[x-env]
      notValues: [test]
    - key: source.ip
      values: [10.0.0.0/8]
    - key: destination.port
      values: ["9080", "9090"]
    - key: connection.sni
      values: ["*.bookinfo.svc.cluster.local"]
  - from:
    - source: {serviceAccounts: [ops/admin, prober], trustDomains: [cluster.local]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: nothing-for-ratings, namespace: legacy}
spec: {}
`, mesh.Options{TrustDomain: "mesh.example.org"})
			},
			proxy: reviewsProxy,
		},
		{
			// RequestAuthentications: inline keys, fetched keys, keys never
			// fetched (fail closed); an ALLOW on request principals and
			// claims.
			name: "jwt_request_authentication",
			mesh: func() *mesh.Snapshot {
				return securityMesh(bookinfo+`
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: mesh-jwt, namespace: istio-system}
spec:
  jwtRules:
  - issuer: https://never-fetched.example.com
    jwksUri: https://never-fetched.example.com/keys
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: reviews-jwt, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: reviews}}
  jwtRules:
  - issuer: https://auth.example.com
    jwksUri: https://auth.example.com/.well-known/jwks.json
    audiences: [reviews, bookinfo]
    fromHeaders: [{name: x-jwt, prefix: "Bearer "}]
    fromParams: [access_token]
    forwardOriginalToken: true
    outputPayloadToHeader: x-jwt-payload
    outputClaimToHeaders: [{header: x-user, claim: sub}]
    spaceDelimitedClaims: [roles]
  - issuer: testing@secure.istio.io
    jwks: '{"keys":[{"kty":"EC","crv":"P-256","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}]}'
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-jwt, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: reviews}}
  rules:
  - from:
    - source: {requestPrincipals: ["https://auth.example.com/*", "testing@secure.istio.io/alice"]}
    when:
    - key: request.auth.claims[groups]
      values: [readers]
    - key: request.auth.claims[realm][role]
      values: [admin]
    - key: request.auth.audiences
      values: [reviews]
    - key: request.auth.presenter
      values: ["app-*"]
    - key: request.auth.principal
      notValues: ["*/mallory"]
`, mesh.Options{JWKS: map[jwks.Source]string{
					jwks.SourceOf("", "https://auth.example.com/.well-known/jwks.json"): `{"keys":[{"kty":"RSA","kid":"k1","e":"AQAB","n":"xY0XIJWEYp4NI437"}]}`,
				}})
			},
			proxy: reviewsProxy,
		},
	}
}
