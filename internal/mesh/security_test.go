package mesh

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"
	security "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/jwks"
)

func sel(kv ...string) *typev1beta1.WorkloadSelector {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return &typev1beta1.WorkloadSelector{MatchLabels: m}
}

func names[T proto.Message](rs []*config.Resource[T]) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Name)
	}
	return out
}

func TestSecurityIndexes(t *testing.T) {
	ap := func(ns, name string, seq uint64, action security.AuthorizationPolicy_Action, s *typev1beta1.WorkloadSelector) *config.AuthorizationPolicy {
		m := meta(config.KindAuthorizationPolicy, ns, name)
		m.Seq = seq
		return &config.AuthorizationPolicy{Meta: m, Spec: &security.AuthorizationPolicy{Action: action, Selector: s}}
	}
	ra := func(ns, name string, seq uint64, s *typev1beta1.WorkloadSelector) *config.RequestAuthentication {
		m := meta(config.KindRequestAuthentication, ns, name)
		m.Seq = seq
		return &config.RequestAuthentication{Meta: m, Spec: &security.RequestAuthentication{Selector: s}}
	}
	pa := func(ns, name string, mode security.PeerAuthentication_MutualTLS_Mode, s *typev1beta1.WorkloadSelector) *config.PeerAuthentication {
		return &config.PeerAuthentication{Meta: meta(config.KindPeerAuthentication, ns, name),
			Spec: &security.PeerAuthentication{Selector: s, Mtls: &security.PeerAuthentication_MutualTLS{Mode: mode}}}
	}
	gatewayOnly := ap("bookinfo", "gw", 1, security.AuthorizationPolicy_DENY, nil)
	gatewayOnly.Spec.TargetRef = &typev1beta1.PolicyTargetReference{Kind: "Gateway", Name: "ingress"}
	cfg := &config.Snapshot{
		AuthorizationPolicies: []*config.AuthorizationPolicy{
			ap("bookinfo", "allow-newer", 9, security.AuthorizationPolicy_ALLOW, sel("app", "reviews")),
			ap("bookinfo", "allow-older", 2, security.AuthorizationPolicy_ALLOW, nil),
			ap("bookinfo", "ratings-only", 3, security.AuthorizationPolicy_DENY, sel("app", "ratings")),
			ap("mesh", "mesh-deny", 5, security.AuthorizationPolicy_DENY, sel("app", "reviews")),
			ap("mesh", "mesh-audit", 6, security.AuthorizationPolicy_AUDIT, nil),
			ap("other", "elsewhere", 1, security.AuthorizationPolicy_DENY, nil),
			gatewayOnly,
		},
		RequestAuthentications: []*config.RequestAuthentication{
			ra("mesh", "mesh-jwt", 1, nil),
			ra("bookinfo", "reviews-jwt", 4, sel("app", "reviews")),
			ra("bookinfo", "ns-jwt", 3, nil),
			ra("bookinfo", "ratings-jwt", 2, sel("app", "ratings")),
		},
		PeerAuthentications: []*config.PeerAuthentication{
			pa("mesh", "default", security.PeerAuthentication_MutualTLS_STRICT, nil),
			pa("legacy", "default", security.PeerAuthentication_MutualTLS_DISABLE, nil),
			pa("legacy", "modern", security.PeerAuthentication_MutualTLS_STRICT, sel("app", "modern")),
		},
	}
	s := Build(cfg, nil, Options{RootNamespace: "mesh"})
	reviews := map[string]string{"app": "reviews", "version": "v1"}

	got := s.Authz.For("bookinfo", reviews)
	if a, d, u := names(got.Allow), names(got.Deny), names(got.Audit); !slices.Equal(a, []string{"allow-older", "allow-newer"}) ||
		!slices.Equal(d, []string{"mesh-deny"}) || !slices.Equal(u, []string{"mesh-audit"}) {
		t.Errorf("authz for reviews: allow %v, deny %v, audit %v", a, d, u)
	}
	if got := names(s.RequestAuthn.For("bookinfo", reviews)); !slices.Equal(got, []string{"ns-jwt", "reviews-jwt", "mesh-jwt"}) {
		t.Errorf("request authn for reviews: %v", got)
	}
	if m := s.PeerAuthn.Mode("bookinfo", reviews, 9080); m != config.MTLSStrict {
		t.Errorf("bookinfo inherits the mesh: %s", m)
	}
	if m := s.PeerAuthn.Mode("legacy", map[string]string{"app": "modern"}, 80); m != config.MTLSStrict {
		t.Errorf("legacy/modern: %s", m)
	}
	if m := s.PeerAuthn.NamespaceMode("legacy"); m != config.MTLSDisable {
		t.Errorf("legacy namespace: %s", m)
	}
	if got := New(nil, nil, "").PeerAuthn.Mode("x", nil, 1); got != config.MTLSPermissive {
		t.Errorf("no policy: %s", got)
	}
}

func TestKeys(t *testing.T) {
	src := jwks.SourceOf("https://issuer", "https://issuer/keys")
	s := Build(nil, nil, Options{JWKS: map[jwks.Source]string{src: `{"keys":[]}`}})
	if k, ok := s.Keys.Keys(&security.JWTRule{Issuer: "https://issuer", JwksUri: "https://issuer/keys"}); !ok || k != `{"keys":[]}` {
		t.Errorf("fetched keys: %q %v", k, ok)
	}
	if k, ok := s.Keys.Keys(&security.JWTRule{Issuer: "https://other", JwksUri: "https://other/keys"}); ok || k != jwks.FailClosed {
		t.Errorf("never fetched: %q %v", k, ok)
	}
	if k, ok := s.Keys.Keys(&security.JWTRule{Issuer: "x", Jwks: "inline"}); !ok || k != "inline" {
		t.Errorf("inline: %q %v", k, ok)
	}
	if a, b := New(nil, nil, "").Version, s.Version; a == b {
		t.Errorf("fetched keys do not change the version: %s", a)
	}
}
