package generate

import (
	"fmt"
	"slices"
	"strings"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtauthn "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/emptypb"
	security "istio.io/api/security/v1beta1"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/xds/contract"
)

// inboundSecurityFilters are the HTTP filters an inbound listener runs
// before the router, in Istio's order: external authorization for CUSTOM
// AuthorizationPolicies (extauthz.go), JWT authentication
// (RequestAuthentication), then RBAC for AUDIT, DENY and ALLOW
// AuthorizationPolicies (rbac.go).
func inboundSecurityFilters(s *mesh.Snapshot, w workload) []*hcm.HttpFilter {
	p := s.Authz.For(w.namespace, w.labels)
	out := customFilters(s, p.Custom)
	if f := jwtFilter(s, s.RequestAuthn.For(w.namespace, w.labels)); f != nil {
		out = append(out, f)
	}
	return append(out, rbacFilters(s, p)...)
}

// jwtFilter is Istio's convertToEnvoyJwtConfig for a sidecar
// (pilot/pkg/security/authn/policy_applier.go): one provider per JWT rule
// of the workload's RequestAuthentications ("origins-<i>", rules sorted by
// issuer), keys inlined (local_jwks), the payload left in the filter's
// metadata under "payload" for the RBAC filter. A request with an invalid
// token is refused (401); one without a token passes, unless an
// AuthorizationPolicy requires a request principal or the rule's presence
// is REQUIRED (then its token must be there and valid, 401 otherwise,
// even when another rule's token is). Nil when no rule applies.
func jwtFilter(s *mesh.Snapshot, ras []*config.RequestAuthentication) *hcm.HttpFilter {
	var rules []*security.JWTRule
	for _, ra := range ras {
		rules = append(rules, ra.Spec.GetJwtRules()...)
	}
	if len(rules) == 0 {
		return nil
	}
	slices.SortStableFunc(rules, func(a, b *security.JWTRule) int { return strings.Compare(a.GetIssuer(), b.GetIssuer()) })
	providers := map[string]*jwtauthn.JwtProvider{}
	var each, any, required []*jwtauthn.JwtRequirement
	for i, r := range rules {
		keys, _ := s.Keys.Keys(r)
		p := &jwtauthn.JwtProvider{
			Issuer:               r.GetIssuer(),
			Audiences:            r.GetAudiences(),
			Forward:              r.GetForwardOriginalToken(),
			ForwardPayloadHeader: r.GetOutputPayloadToHeader(),
			PayloadInMetadata:    contract.MetaJWTPayload,
			NormalizePayloadInMetadata: &jwtauthn.JwtProvider_NormalizePayload{
				SpaceDelimitedClaims: spaceDelimitedClaims(r.GetSpaceDelimitedClaims()),
			},
			FromParams:  r.GetFromParams(),
			FromCookies: r.GetFromCookies(),
			JwksSourceSpecifier: &jwtauthn.JwtProvider_LocalJwks{LocalJwks: &core.DataSource{
				Specifier: &core.DataSource_InlineString{InlineString: keys},
			}},
		}
		for _, ch := range r.GetOutputClaimToHeaders() {
			p.ClaimToHeaders = append(p.ClaimToHeaders, &jwtauthn.JwtClaimToHeader{HeaderName: ch.GetHeader(), ClaimName: ch.GetClaim()})
		}
		for _, h := range r.GetFromHeaders() {
			p.FromHeaders = append(p.FromHeaders, &jwtauthn.JwtHeader{Name: h.GetName(), ValuePrefix: h.GetPrefix()})
		}
		name := fmt.Sprintf("origins-%d", i)
		providers[name] = p
		if r.GetPresence() == security.JWTRule_REQUIRED {
			required = append(required, providerRequirement(name))
			continue
		}
		each = append(each, requiresAny(providerRequirement(name), &jwtauthn.JwtRequirement{
			RequiresType: &jwtauthn.JwtRequirement_AllowMissing{AllowMissing: &emptypb.Empty{}},
		}))
		any = append(any, providerRequirement(name))
	}
	// One provider: {provider OR allow_missing}. Several: a token, if any,
	// must be valid for every provider whose location it is in (the AND
	// of each {provider OR allow_missing}), or valid for any one provider
	// (the outer OR helps providers that share a location).
	var req *jwtauthn.JwtRequirement
	switch {
	case len(each) == 1:
		req = each[0]
	case len(each) > 1:
		req = requiresAny(append(any, requiresAll(each...))...)
	}
	// Rules with presence: REQUIRED (Istio 1.32): each one's token must be
	// there and valid, whatever the other rules say — the AND of those
	// providers and of the optional rules' requirement.
	if len(required) > 0 {
		if req != nil {
			required = append(required, req)
		}
		req = required[0]
		if len(required) > 1 {
			req = requiresAll(required...)
		}
	}
	cfg := &jwtauthn.JwtAuthentication{
		Rules: []*jwtauthn.RequirementRule{{
			Match:           &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
			RequirementType: &jwtauthn.RequirementRule_Requires{Requires: req},
		}},
		Providers:           providers,
		BypassCorsPreflight: true,
	}
	return &hcm.HttpFilter{Name: contract.FilterJWTAuthn, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(cfg)}}
}

func providerRequirement(name string) *jwtauthn.JwtRequirement {
	return &jwtauthn.JwtRequirement{RequiresType: &jwtauthn.JwtRequirement_ProviderName{ProviderName: name}}
}

func requiresAll(reqs ...*jwtauthn.JwtRequirement) *jwtauthn.JwtRequirement {
	return &jwtauthn.JwtRequirement{RequiresType: &jwtauthn.JwtRequirement_RequiresAll{
		RequiresAll: &jwtauthn.JwtRequirementAndList{Requirements: reqs},
	}}
}

func requiresAny(reqs ...*jwtauthn.JwtRequirement) *jwtauthn.JwtRequirement {
	return &jwtauthn.JwtRequirement{RequiresType: &jwtauthn.JwtRequirement_RequiresAny{
		RequiresAny: &jwtauthn.JwtRequirementOrList{Requirements: reqs},
	}}
}

// spaceDelimitedClaims is Istio's buildSpaceDelimitedClaims: "permission"
// and "scope" always, plus the rule's, sorted and without duplicates.
func spaceDelimitedClaims(extra []string) []string {
	out := []string{"permission", "scope"}
	if extra == nil {
		return out
	}
	out = append(out, extra...)
	slices.Sort(out)
	return slices.Compact(out)
}
