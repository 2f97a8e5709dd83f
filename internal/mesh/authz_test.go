package mesh

import (
	"testing"

	security "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"

	"weft.dev/weft/internal/config"
)

// A policy attached with targetRef to a Gateway API Gateway applies to
// that Gateway's proxies (its namespace, its gateway-name label) and to
// nothing else; one attached to a Service (a waypoint's) applies to no
// proxy Weft configures.
func TestAuthzTargetRefGateway(t *testing.T) {
	gwRef := &typev1beta1.PolicyTargetReference{Group: "gateway.networking.k8s.io", Kind: "Gateway", Name: "edge"}
	svcRef := &typev1beta1.PolicyTargetReference{Kind: "Service", Name: "edge"}
	aps := []*config.AuthorizationPolicy{
		{Meta: config.Meta{Namespace: "web", Name: "gw"}, Spec: &security.AuthorizationPolicy{TargetRef: gwRef, Action: security.AuthorizationPolicy_DENY}},
		{Meta: config.Meta{Namespace: "web", Name: "svc", Seq: 1}, Spec: &security.AuthorizationPolicy{TargetRefs: []*typev1beta1.PolicyTargetReference{svcRef}, Action: security.AuthorizationPolicy_DENY}},
	}
	ras := []*config.RequestAuthentication{
		{Meta: config.Meta{Namespace: "web", Name: "gw"}, Spec: &security.RequestAuthentication{TargetRefs: []*typev1beta1.PolicyTargetReference{gwRef}}},
	}
	authz, authn := newAuthzIndex(aps, "istio-system"), newRequestAuthnIndex(ras, "istio-system")
	for _, tc := range []struct {
		name   string
		ns     string
		labels map[string]string
		want   int
	}{
		{"the Gateway's proxy", "web", map[string]string{config.GatewayNameLabel: "edge"}, 1},
		{"another Gateway's proxy", "web", map[string]string{config.GatewayNameLabel: "other"}, 0},
		{"a proxy of the same name in another namespace", "shop", map[string]string{config.GatewayNameLabel: "edge"}, 0},
		{"a sidecar", "web", map[string]string{"app": "edge"}, 0},
	} {
		if got := len(authz.For(tc.ns, tc.labels).Deny); got != tc.want {
			t.Errorf("%s: %d DENY policies, want %d", tc.name, got, tc.want)
		}
		if got := len(authn.For(tc.ns, tc.labels)); got != tc.want {
			t.Errorf("%s: %d RequestAuthentications, want %d", tc.name, got, tc.want)
		}
	}
}
