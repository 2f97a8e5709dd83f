package config

import (
	"testing"

	security "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"
)

// securityExamples are the security resources users bring from Istio
// (shaped after the examples of istio.io's security tasks); every one must
// load with no diagnostic at all.
const securityExamples = `
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec:
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata: {name: default, namespace: legacy}
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
    9090: {mode: DISABLE}
    9091: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all, namespace: quarantine}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing-but-get, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: reviews, version: v2}}
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/bookinfo/sa/productpage", "*/ns/ops/sa/admin"]
        notNamespaces: ["untrusted-*"]
    - source:
        requestPrincipals: ["https://auth.example.com/*"]
        remoteIpBlocks: ["203.0.113.0/24"]
    to:
    - operation:
        methods: ["GET", "HEAD"]
        paths: ["/reviews/*", "*.json", "/api/{*}/info", "/static/{**}"]
        ports: ["9080"]
        hosts: ["reviews", "*.example.com"]
    when:
    - key: request.auth.claims[groups]
      values: ["readers"]
    - key: request.headers[x-env]
      notValues: ["test"]
    - key: source.ip
      values: ["10.0.0.0/8"]
    - key: destination.port
      values: ["9080"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-admin
  namespace: bookinfo
  annotations: {istio.io/dry-run: "true"}
spec:
  action: DENY
  rules:
  - to:
    - operation: {paths: ["/admin*"], ports: ["9080"]}
    from:
    - source: {serviceAccounts: ["ops/admin", "debugger"]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: audit-writes, namespace: bookinfo}
spec:
  action: AUDIT
  rules:
  - to:
    - operation: {methods: ["POST", "PUT", "DELETE"]}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: bookinfo}
spec:
  selector: {matchLabels: {app: productpage}}
  jwtRules:
  - issuer: https://auth.example.com
    jwksUri: https://auth.example.com/.well-known/jwks.json
    audiences: [bookinfo]
    fromHeaders: [{name: x-jwt, prefix: "Bearer "}]
    fromParams: [access_token]
    forwardOriginalToken: true
    outputPayloadToHeader: x-jwt-payload
    outputClaimToHeaders: [{header: x-user, claim: sub}]
    timeout: 3s
  - issuer: testing@secure.istio.io
    jwks: '{"keys":[{"kty":"EC","crv":"P-256","x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4","y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}]}'
  - issuer: http://127.0.0.1:8443
    jwks_uri: http://127.0.0.1:8443/keys
`

func TestSecurityExamplesLoadCleanly(t *testing.T) {
	snap := NewStore(testOptions()).Load(map[string][]byte{"security.yaml": []byte(securityExamples)})
	for _, d := range snap.Diagnostics {
		t.Errorf("unexpected %s: %s", d.Severity, d.Error())
	}
	if n, m, k := len(snap.PeerAuthentications), len(snap.AuthorizationPolicies), len(snap.RequestAuthentications); n != 3 || m != 4 || k != 1 {
		t.Errorf("loaded %d PeerAuthentications, %d AuthorizationPolicies, %d RequestAuthentications; want 3, 4, 1", n, m, k)
	}
}

func pa(ns, name string, seq uint64, labels map[string]string, mode security.PeerAuthentication_MutualTLS_Mode, ports map[uint32]security.PeerAuthentication_MutualTLS_Mode) *PeerAuthentication {
	spec := &security.PeerAuthentication{}
	if labels != nil {
		spec.Selector = &typev1beta1.WorkloadSelector{MatchLabels: labels}
	}
	if mode != security.PeerAuthentication_MutualTLS_UNSET {
		spec.Mtls = &security.PeerAuthentication_MutualTLS{Mode: mode}
	}
	if ports != nil {
		spec.PortLevelMtls = map[uint32]*security.PeerAuthentication_MutualTLS{}
		for p, m := range ports {
			spec.PortLevelMtls[p] = &security.PeerAuthentication_MutualTLS{Mode: m}
		}
	}
	return &PeerAuthentication{Meta: Meta{Kind: KindPeerAuthentication, Namespace: ns, Name: name, Seq: seq}, Spec: spec}
}

// TestComposePeerAuthentication follows Istio's ComposePeerAuthentication
// (pilot/pkg/security/authn/policy_applier.go) and its tests: narrowest
// scope wins, the oldest within a scope, UNSET inherits, a port inherits
// the workload's mode, root-namespace selectors are ignored.
func TestComposePeerAuthentication(t *testing.T) {
	const (
		unset      = security.PeerAuthentication_MutualTLS_UNSET
		disable    = security.PeerAuthentication_MutualTLS_DISABLE
		permissive = security.PeerAuthentication_MutualTLS_PERMISSIVE
		strict     = security.PeerAuthentication_MutualTLS_STRICT
	)
	reviews := map[string]string{"app": "reviews", "version": "v1"}
	tests := []struct {
		name     string
		pas      []*PeerAuthentication
		want     MTLSMode
		port9090 MTLSMode
	}{
		{"no policy is PERMISSIVE", nil, MTLSPermissive, MTLSPermissive},
		{"mesh STRICT", []*PeerAuthentication{pa("istio-system", "default", 1, nil, strict, nil)}, MTLSStrict, MTLSStrict},
		{"mesh UNSET is PERMISSIVE", []*PeerAuthentication{pa("istio-system", "default", 1, nil, unset, nil)}, MTLSPermissive, MTLSPermissive},
		{"namespace overrides mesh", []*PeerAuthentication{
			pa("istio-system", "default", 1, nil, strict, nil),
			pa("bookinfo", "default", 2, nil, disable, nil),
		}, MTLSDisable, MTLSDisable},
		{"namespace UNSET inherits mesh", []*PeerAuthentication{
			pa("istio-system", "default", 1, nil, strict, nil),
			pa("bookinfo", "default", 2, nil, unset, nil),
		}, MTLSStrict, MTLSStrict},
		{"oldest namespace policy wins", []*PeerAuthentication{
			pa("bookinfo", "newer", 5, nil, strict, nil),
			pa("bookinfo", "older", 3, nil, disable, nil),
		}, MTLSDisable, MTLSDisable},
		{"workload overrides namespace, port overrides workload", []*PeerAuthentication{
			pa("bookinfo", "default", 1, nil, strict, nil),
			pa("bookinfo", "reviews", 2, map[string]string{"app": "reviews"}, permissive, map[uint32]security.PeerAuthentication_MutualTLS_Mode{9090: disable}),
		}, MTLSPermissive, MTLSDisable},
		{"workload UNSET inherits, port UNSET inherits the workload", []*PeerAuthentication{
			pa("bookinfo", "default", 1, nil, strict, nil),
			pa("bookinfo", "reviews", 2, map[string]string{"app": "reviews"}, unset, map[uint32]security.PeerAuthentication_MutualTLS_Mode{9090: unset}),
		}, MTLSStrict, MTLSStrict},
		{"selector not matching", []*PeerAuthentication{
			pa("bookinfo", "ratings", 1, map[string]string{"app": "ratings"}, disable, nil),
		}, MTLSPermissive, MTLSPermissive},
		{"root namespace selector ignored", []*PeerAuthentication{
			pa("istio-system", "reviews", 1, map[string]string{"app": "reviews"}, strict, nil),
		}, MTLSPermissive, MTLSPermissive},
		{"other namespace ignored", []*PeerAuthentication{
			pa("other", "default", 1, nil, strict, nil),
		}, MTLSPermissive, MTLSPermissive},
		{"oldest workload policy wins", []*PeerAuthentication{
			pa("bookinfo", "by-version", 9, map[string]string{"version": "v1"}, strict, nil),
			pa("bookinfo", "by-app", 4, map[string]string{"app": "reviews"}, disable, nil),
		}, MTLSDisable, MTLSDisable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := SelectPeerAuthentications("", "bookinfo", reviews, tc.pas).Compose()
			if m.Mode != tc.want || m.ModeFor(9090) != tc.port9090 {
				t.Errorf("mode %s, port 9090 %s; want %s, %s", m.Mode, m.ModeFor(9090), tc.want, tc.port9090)
			}
		})
	}
}
