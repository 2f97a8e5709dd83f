package generate

import (
	"fmt"
	"strconv"

	rbacpb "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbachttp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/mesh"
)

// AuthorizationPolicy -> envoy.filters.http.rbac, as Istio's authz builder
// does for a sidecar's HTTP filter chain (pilot/pkg/security/authz/builder
// and authz/model): the model translation is in rbac_model.go.

// Istio's stat prefixes of dry-run (shadow) rules.
const (
	shadowAllowStatPrefix = "istio_dry_run_allow_"
	shadowDenyStatPrefix  = "istio_dry_run_deny_"
)

// matchNever is the policy Istio gives an AuthorizationPolicy without
// rules: it matches no request (so an ALLOW policy without rules allows
// nothing, and makes every other request of the workload denied).
func matchNever() *rbacpb.Policy {
	return &rbacpb.Policy{
		Permissions: []*rbacpb.Permission{{Rule: &rbacpb.Permission_NotRule{
			NotRule: &rbacpb.Permission{Rule: &rbacpb.Permission_Any{Any: true}},
		}}},
		Principals: []*rbacpb.Principal{{Identifier: &rbacpb.Principal_NotId{
			NotId: &rbacpb.Principal{Identifier: &rbacpb.Principal_Any{Any: true}},
		}}},
	}
}

// rbacFilters returns the RBAC filters for a workload's policies in
// Istio's order: AUDIT (action LOG: matching requests are logged and
// counted, never refused), DENY, then ALLOW. Each filter holds the
// enforced policies in rules and the dry-run ones (istio.io/dry-run:
// "true") in shadow_rules. Nil when no policy applies: every request is
// allowed.
func rbacFilters(s *mesh.Snapshot, p mesh.AuthzPolicies) []*hcm.HttpFilter {
	var out []*hcm.HttpFilter
	for _, g := range []struct {
		action   rbacpb.RBAC_Action
		policies []*config.AuthorizationPolicy
	}{
		{rbacpb.RBAC_LOG, p.Audit},
		{rbacpb.RBAC_DENY, p.Deny},
		{rbacpb.RBAC_ALLOW, p.Allow},
	} {
		if f := rbacFilter(g.policies, g.action, s.TrustDomain); f != nil {
			out = append(out, f)
		}
	}
	return out
}

// rbacFilter is Istio's Builder.build and buildHTTP for one action.
func rbacFilter(policies []*config.AuthorizationPolicy, action rbacpb.RBAC_Action, trustDomain string) *hcm.HttpFilter {
	if len(policies) == 0 {
		return nil
	}
	enforce := &rbacpb.RBAC{Action: action, Policies: map[string]*rbacpb.Policy{}}
	shadow := &rbacpb.RBAC{Action: action, Policies: map[string]*rbacpb.Policy{}}
	hasEnforce, hasShadow := false, false
	for _, ap := range policies {
		target := enforce
		if dryRun(ap) {
			target, hasShadow = shadow, true
		} else {
			hasEnforce = true
		}
		rules := ap.Spec.GetRules()
		for i, r := range rules {
			if r == nil {
				continue
			}
			m, err := newRBACModel(ap.Namespace, r)
			if err != nil {
				continue // validation refuses what gets here
			}
			m.migrateTrustDomain(trustDomain)
			if p, err := m.generate(action); err == nil {
				target.Policies[policyName(ap.Namespace, ap.Name, i)] = p
			}
		}
		if len(rules) == 0 {
			target.Policies[policyName(ap.Namespace, ap.Name, 0)] = matchNever()
		}
	}
	cfg := &rbachttp.RBAC{}
	if hasEnforce {
		cfg.Rules = enforce
	}
	if hasShadow {
		cfg.ShadowRules = shadow
	}
	// Istio's shadowRuleStatPrefix reads the action of shadow_rules even
	// when there are none, and ALLOW is the zero action: every filter
	// without DENY shadow rules gets the allow prefix. Kept, so stats and
	// config dumps read as Istio's.
	cfg.ShadowRulesStatPrefix = shadowAllowStatPrefix
	if hasShadow && action == rbacpb.RBAC_DENY {
		cfg.ShadowRulesStatPrefix = shadowDenyStatPrefix
	} else if hasShadow && action == rbacpb.RBAC_LOG {
		cfg.ShadowRulesStatPrefix = ""
	}
	return &hcm.HttpFilter{
		Name:       wellknown.HTTPRoleBasedAccessControl,
		ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(cfg)},
	}
}

// policyName is Istio's name of the RBAC policy of rule i of an
// AuthorizationPolicy.
func policyName(ns, name string, rule int) string {
	return fmt.Sprintf("ns[%s]-policy[%s]-rule[%d]", ns, name, rule)
}

// dryRun reports whether the policy carries istio.io/dry-run: "true".
func dryRun(ap *config.AuthorizationPolicy) bool {
	v, err := strconv.ParseBool(ap.Annotations["istio.io/dry-run"])
	return err == nil && v
}
