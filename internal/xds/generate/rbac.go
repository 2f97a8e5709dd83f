package generate

import (
	"fmt"
	"strconv"

	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacpb "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbachttp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbactcp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
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
	for _, g := range byAction(p) {
		if r := buildRBAC(g.policies, g.action, s.TrustDomain, false); r != nil {
			out = append(out, &hcm.HttpFilter{
				Name: wellknown.HTTPRoleBasedAccessControl,
				ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(&rbachttp.RBAC{
					Rules: r.rules, ShadowRules: r.shadow, ShadowRulesStatPrefix: r.shadowPrefix,
				})},
			})
		}
	}
	return out
}

// tcpRBACFilters are the network RBAC filters of a workload's TCP filter
// chain, as Istio's BuildTCP: CUSTOM (extauthz.go), then the same three
// actions, each rule generated
// for TCP (a condition on an HTTP attribute fails an ALLOW rule and is
// left out of a DENY or AUDIT one), stat prefix "tcp.". They go before
// the chain's tcp_proxy. Nil when no policy applies.
func tcpRBACFilters(s *mesh.Snapshot, w workload) []*listener.Filter {
	p := s.Authz.For(w.namespace, w.labels)
	out := tcpCustomFilters(s, p.Custom)
	for _, g := range byAction(p) {
		if r := buildRBAC(g.policies, g.action, s.TrustDomain, true); r != nil {
			out = append(out, &listener.Filter{
				Name: wellknown.RoleBasedAccessControl,
				ConfigType: &listener.Filter_TypedConfig{TypedConfig: mustAny(&rbactcp.RBAC{
					Rules: r.rules, ShadowRules: r.shadow, ShadowRulesStatPrefix: r.shadowPrefix, StatPrefix: tcpRBACStatPrefix,
				})},
			})
		}
	}
	return out
}

// tcpRBACStatPrefix is Istio's stat prefix of network RBAC filters.
const tcpRBACStatPrefix = "tcp."

type actionPolicies struct {
	action   rbacpb.RBAC_Action
	policies []*config.AuthorizationPolicy
}

// byAction lists p's policies in Istio's evaluation order.
func byAction(p mesh.AuthzPolicies) []actionPolicies {
	return []actionPolicies{
		{rbacpb.RBAC_LOG, p.Audit},
		{rbacpb.RBAC_DENY, p.Deny},
		{rbacpb.RBAC_ALLOW, p.Allow},
	}
}

// builtRBAC is one action's rules: the enforced ones, the dry-run ones,
// and the stat prefix of the latter.
type builtRBAC struct {
	rules, shadow *rbacpb.RBAC
	shadowPrefix  string
}

// buildRBAC is Istio's Builder.build for one action, for an HTTP or (forTCP)
// a TCP filter chain; nil when there are no policies.
func buildRBAC(policies []*config.AuthorizationPolicy, action rbacpb.RBAC_Action, trustDomain string, forTCP bool) *builtRBAC {
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
			if p, err := m.generate(action, forTCP); err == nil {
				target.Policies[policyName(ap.Namespace, ap.Name, i)] = p
			}
		}
		if len(rules) == 0 {
			target.Policies[policyName(ap.Namespace, ap.Name, 0)] = matchNever()
		}
	}
	out := &builtRBAC{}
	if hasEnforce {
		out.rules = enforce
	}
	if hasShadow {
		out.shadow = shadow
	}
	// Istio's shadowRuleStatPrefix reads the action of shadow_rules even
	// when there are none, and ALLOW is the zero action: every filter
	// without DENY shadow rules gets the allow prefix. Kept, so stats and
	// config dumps read as Istio's.
	out.shadowPrefix = shadowAllowStatPrefix
	if hasShadow && action == rbacpb.RBAC_DENY {
		out.shadowPrefix = shadowDenyStatPrefix
	} else if hasShadow && action == rbacpb.RBAC_LOG {
		out.shadowPrefix = ""
	}
	return out
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
