package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// conformanceBase is the part of the Gateway API conformance suite's
// base manifests these tests need: Weft's class, the same-namespace
// Gateway and the suite's Namespaces.
const conformanceBase = `apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: weft}
spec: {controllerName: weft.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: same-namespace, namespace: gateway-conformance-infra}
spec:
  gatewayClassName: weft
  listeners:
  - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: Same}}}
`

// TestGatewayAPIConformanceStatus checks what the Gateway API conformance
// suite's status-only HTTPRoute tests (v1.6.3; their manifests in
// testdata/gateway-api-conformance, unchanged) require of a route's
// status: the reason of its parent's Accepted condition (and no route
// attached to the Gateway), or of its ResolvedRefs condition.
// kubesource writes these reasons as the routes' status on Kubernetes.
func TestGatewayAPIConformanceStatus(t *testing.T) {
	known := []string{"infra-backend-v1", "infra-backend-v2", "infra-backend-v3", "web-backend"}
	opts := testOptions()
	opts.KnownHost = func(fqdn string) bool {
		name, _, _ := strings.Cut(fqdn, ".")
		return slices.Contains(known, name)
	}
	for _, tc := range []struct {
		file, route string // route: namespace/name
		gateway     string // its parent, whose listeners must count no route
		parent      gwv1.RouteConditionReason
		refs        gwv1.RouteConditionReason
	}{
		{"httproute-invalid-parentref-not-matching-listener-port", "gateway-conformance-infra/httproute-listener-not-matching-route-port", "gateway-conformance-infra/same-namespace", gwv1.RouteReasonNoMatchingParent, ""},
		{"httproute-invalid-parentref-not-matching-section-name", "gateway-conformance-infra/httproute-listener-not-matching-section-name", "gateway-conformance-infra/same-namespace", gwv1.RouteReasonNoMatchingParent, ""},
		{"httproute-invalid-parentref-section-name-not-matching-port", "gateway-conformance-infra/httproute-listener-section-name-not-matching-port", "gateway-conformance-infra/gateway-with-one-not-matching-port-and-section-name-route", gwv1.RouteReasonNoMatchingParent, ""},
		{"httproute-invalid-cross-namespace-parent-ref", "gateway-conformance-web-backend/invalid-cross-namespace-parent-ref", "gateway-conformance-infra/same-namespace", gwv1.RouteReasonNotAllowedByListeners, ""},
		{"httproute-disallowed-kind", "gateway-conformance-infra/disallowed-kind", "gateway-conformance-infra/tlsroutes-only", gwv1.RouteReasonNotAllowedByListeners, ""},
		{"httproute-invalid-backendref-unknown-kind", "gateway-conformance-infra/invalid-backend-ref-unknown-kind", "", "", gwv1.RouteReasonInvalidKind},
		{"httproute-invalid-nonexistent-backendref", "gateway-conformance-infra/invalid-nonexistent-backend-ref", "", "", gwv1.RouteReasonBackendNotFound},
		{"httproute-invalid-cross-namespace-backend-ref", "gateway-conformance-infra/invalid-cross-namespace-backend-ref", "", "", gwv1.RouteReasonRefNotPermitted},
		{"httproute-invalid-reference-grant", "gateway-conformance-infra/reference-grant", "", "", gwv1.RouteReasonRefNotPermitted},
	} {
		t.Run(tc.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", "gateway-api-conformance", tc.file+".yaml"))
			if err != nil {
				t.Fatal(err)
			}
			manifest := strings.ReplaceAll(string(b), "{GATEWAY_CLASS_NAME}", "weft")
			snap := NewStore(opts).Load(map[string][]byte{"base.yaml": []byte(conformanceBase), "test.yaml": []byte(manifest)})
			r := snap.GatewayAPI.Routes[string(KindHTTPRoute)+"/"+tc.route]
			if r == nil {
				t.Fatalf("no status for HTTPRoute %s (diagnostics %v)", tc.route, diagStrings(snap))
			}
			if tc.parent != "" {
				if len(r.Parents) != 1 || r.Parents[0].Reason != tc.parent {
					t.Errorf("parents %+v, want one refused with %s", r.Parents, tc.parent)
				}
				gw := snap.GatewayAPI.Gateways[tc.gateway]
				if gw == nil {
					t.Fatalf("no status for Gateway %s", tc.gateway)
				}
				for _, l := range gw.Listeners {
					if l.AttachedRoutes != 0 {
						t.Errorf("listener %s counts %d routes, want 0", l.Name, l.AttachedRoutes)
					}
				}
			}
			if r.RefsReason != tc.refs {
				t.Errorf("ResolvedRefs reason %q (%s), want %q", r.RefsReason, r.RefsMessage, tc.refs)
			}
		})
	}
}
