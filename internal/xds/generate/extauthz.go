package generate

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacpb "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	rbachttp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	extauthznet "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/ext_authz/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbactcp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/durationpb"
	meshconfig "istio.io/api/mesh/v1alpha1"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/xds/contract"
)

// AuthorizationPolicy CUSTOM -> an RBAC filter in shadow mode and
// envoy.filters.http.ext_authz, as Istio's authz builder does
// (pilot/pkg/security/authz/builder: extauthz.go, builder.go buildHTTP):
//
//   - per extension provider the workload's CUSTOM policies name (sorted),
//     an RBAC filter whose shadow_rules (action DENY, stat prefix
//     istio_ext_authz_) are those policies' rules, named
//     "istio-ext-authz-<provider>-ns[<ns>]-policy[<name>]-rule[<i>]", and
//     the provider's ext_authz filter, enabled by filter_enabled_metadata
//     only for requests whose shadow_effective_policy_id starts with
//     "istio-ext-authz-<provider>-ns[": only the requests the rules match
//     are sent to the provider (Istio's prefix stops at the provider's
//     name, so a provider "a" would also be enabled by provider "ab"'s
//     rules);
//   - the pairs come first in the chain, before JWT authentication and the
//     other RBAC filters, as in Istio (CUSTOM, then DENY, then ALLOW);
//   - a provider Weft cannot use (not in meshConfig.extensionProviders,
//     not an ext_authz provider, its service unknown, a field Weft's proxy
//     cannot honour) gets an RBAC filter that denies what the rules match:
//     fail closed, as Istio's "-deny-due-to-bad-CUSTOM-action" rules;
//   - on TCP chains, a gRPC provider gets the same pair as network
//     filters (network RBAC in shadow mode, envoy.filters.network.ext_authz
//     checking the connection); an HTTP provider's policies are ignored
//     there, as Istio ignores them.

const (
	extAuthzShadowPrefix = "istio_ext_authz_" // Istio's RBACExtAuthzShadowRulesStatPrefix
	extAuthzMatchPrefix  = "istio-ext-authz"
	extAuthzFilterName   = "envoy.filters.http.ext_authz"
	// extAuthzNetworkFilterName is Envoy's network ext_authz filter.
	extAuthzNetworkFilterName = "envoy.filters.network.ext_authz"
	// extAuthzDefaultTimeout is Istio's timeoutOrDefault.
	extAuthzDefaultTimeout = 600 * time.Second
	badCustomSuffix        = "-deny-due-to-bad-CUSTOM-action"
)

// customByProvider groups CUSTOM policies by provider name, names sorted.
func customByProvider(policies []*config.AuthorizationPolicy) (map[string][]*config.AuthorizationPolicy, []string) {
	by := map[string][]*config.AuthorizationPolicy{}
	for _, ap := range policies {
		if dryRun(ap) {
			continue // a dry-run CUSTOM policy calls nobody
		}
		name := ap.Spec.GetProvider().GetName()
		by[name] = append(by[name], ap)
	}
	return by, slices.Sorted(maps.Keys(by))
}

// customRules are the RBAC policies of one provider's CUSTOM policies,
// generated for action (DENY: the shadow rules, or the fail-closed
// rules) on an HTTP or a TCP chain.
func customRules(policies []*config.AuthorizationPolicy, provider, trustDomain string, forTCP bool) *rbacpb.RBAC {
	out := &rbacpb.RBAC{Action: rbacpb.RBAC_DENY, Policies: map[string]*rbacpb.Policy{}}
	for _, ap := range policies {
		name := func(i int) string {
			return fmt.Sprintf("%s-%s-%s", extAuthzMatchPrefix, provider, policyName(ap.Namespace, ap.Name, i))
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
			if p, err := m.generate(rbacpb.RBAC_DENY, forTCP); err == nil {
				out.Policies[name(i)] = p
			}
		}
		if len(rules) == 0 {
			out.Policies[name(0)] = matchNever()
		}
	}
	return out
}

// failClosed is Istio's getBadCustomDenyRules: the rules, enforced as DENY.
func failClosed(rules *rbacpb.RBAC) *rbacpb.RBAC {
	out := &rbacpb.RBAC{Action: rbacpb.RBAC_DENY, Policies: map[string]*rbacpb.Policy{}}
	for k, p := range rules.GetPolicies() {
		out.Policies[k+badCustomSuffix] = p
	}
	return out
}

// customFilters are the HTTP filters of a workload's CUSTOM policies.
func customFilters(s *mesh.Snapshot, policies []*config.AuthorizationPolicy) []*hcm.HttpFilter {
	by, providers := customByProvider(policies)
	var out []*hcm.HttpFilter
	for _, provider := range providers {
		rules := customRules(by[provider], provider, s.TrustDomain, false)
		cfg, _ := extAuthzConfig(s, provider)
		if cfg == nil {
			out = append(out, &hcm.HttpFilter{
				Name:       wellknown.HTTPRoleBasedAccessControl,
				ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(&rbachttp.RBAC{Rules: failClosed(rules)})},
			})
			continue
		}
		cfg.FilterEnabledMetadata = extAuthzEnabledBy(provider)
		out = append(out,
			&hcm.HttpFilter{
				Name: wellknown.HTTPRoleBasedAccessControl,
				ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(&rbachttp.RBAC{
					ShadowRules: rules, ShadowRulesStatPrefix: extAuthzShadowPrefix,
				})},
			},
			&hcm.HttpFilter{Name: extAuthzFilterName, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(cfg)}},
		)
	}
	return out
}

// tcpCustomFilters are the network filters of a workload's CUSTOM
// policies on a TCP chain, as Istio's buildTCP: per gRPC provider, a
// network RBAC filter in shadow mode and the network ext_authz filter it
// enables; an unusable provider's rules deny what they match; an HTTP
// provider's do nothing there.
func tcpCustomFilters(s *mesh.Snapshot, policies []*config.AuthorizationPolicy) []*listener.Filter {
	by, providers := customByProvider(policies)
	var out []*listener.Filter
	for _, provider := range providers {
		cfg, p := extAuthzConfig(s, provider)
		if cfg != nil && p.GetEnvoyExtAuthzHttp() != nil {
			continue
		}
		rules := customRules(by[provider], provider, s.TrustDomain, true)
		if cfg == nil {
			out = append(out, &listener.Filter{
				Name: wellknown.RoleBasedAccessControl,
				ConfigType: &listener.Filter_TypedConfig{TypedConfig: mustAny(&rbactcp.RBAC{
					Rules: failClosed(rules), StatPrefix: tcpRBACStatPrefix,
				})},
			})
			continue
		}
		enabled := extAuthzEnabledBy(provider)
		enabled.Filter = wellknown.RoleBasedAccessControl
		out = append(out,
			&listener.Filter{
				Name: wellknown.RoleBasedAccessControl,
				ConfigType: &listener.Filter_TypedConfig{TypedConfig: mustAny(&rbactcp.RBAC{
					ShadowRules: rules, ShadowRulesStatPrefix: extAuthzShadowPrefix, StatPrefix: tcpRBACStatPrefix,
				})},
			},
			&listener.Filter{
				Name: extAuthzNetworkFilterName,
				ConfigType: &listener.Filter_TypedConfig{TypedConfig: mustAny(&extauthznet.ExtAuthz{
					StatPrefix:            tcpRBACStatPrefix,
					GrpcService:           cfg.GetGrpcService(),
					FailureModeAllow:      cfg.GetFailureModeAllow(),
					TransportApiVersion:   core.ApiVersion_V3,
					FilterEnabledMetadata: enabled,
				})},
			},
		)
	}
	return out
}

// extAuthzEnabledBy is Istio's generateFilterMatcherForProvider: the
// ext_authz filter runs for requests whose RBAC shadow policy id names
// the provider.
func extAuthzEnabledBy(provider string) *matcher.MetadataMatcher {
	return &matcher.MetadataMatcher{
		Filter: wellknown.HTTPRoleBasedAccessControl,
		Path:   []*matcher.MetadataMatcher_PathSegment{{Segment: &matcher.MetadataMatcher_PathSegment_Key{Key: extAuthzShadowPrefix + "shadow_effective_policy_id"}}},
		Value: &matcher.ValueMatcher{MatchPattern: &matcher.ValueMatcher_StringMatch{StringMatch: &matcher.StringMatcher{
			MatchPattern: &matcher.StringMatcher_Prefix{Prefix: extAuthzMatchPrefix + "-" + provider + "-ns["},
		}}},
	}
}

// extAuthzConfig is Istio's buildExtAuthzHTTP / buildExtAuthzGRPC for a
// provider (filter_enabled_metadata left to the caller); nil when Weft
// cannot use it.
func extAuthzConfig(s *mesh.Snapshot, name string) (*extauthzv3.ExtAuthz, *meshconfig.MeshConfig_ExtensionProvider) {
	p, why := s.ExtAuthzProvider(name)
	if why != "" {
		return nil, p
	}
	host := mesh.ExtAuthzHost(p)
	out := &extauthzv3.ExtAuthz{TransportApiVersion: core.ApiVersion_V3}
	if h := p.GetEnvoyExtAuthzHttp(); h != nil {
		cluster := contract.ClusterName(contract.Outbound, h.GetPort(), "", host)
		svc := &extauthzv3.HttpService{
			PathPrefix: h.GetPathPrefix(),
			ServerUri: &core.HttpUri{
				Uri:              "http://" + host,
				HttpUpstreamType: &core.HttpUri_Cluster{Cluster: cluster},
				Timeout:          timeoutOr(h.GetTimeout().AsDuration(), h.GetTimeout() != nil),
			},
		}
		if add := h.GetIncludeAdditionalHeadersInCheck(); len(add) > 0 {
			svc.AuthorizationRequest = &extauthzv3.AuthorizationRequest{}
			for _, k := range slices.Sorted(maps.Keys(add)) {
				svc.AuthorizationRequest.HeadersToAdd = append(svc.AuthorizationRequest.HeadersToAdd, &core.HeaderValue{Key: k, Value: add[k]})
			}
		}
		if len(h.GetHeadersToUpstreamOnAllow())+len(h.GetHeadersToDownstreamOnDeny())+len(h.GetHeadersToDownstreamOnAllow()) > 0 {
			svc.AuthorizationResponse = &extauthzv3.AuthorizationResponse{
				AllowedUpstreamHeaders:        extAuthzHeaders(h.GetHeadersToUpstreamOnAllow()),
				AllowedClientHeaders:          extAuthzHeaders(h.GetHeadersToDownstreamOnDeny()),
				AllowedClientHeadersOnSuccess: extAuthzHeaders(h.GetHeadersToDownstreamOnAllow()),
			}
		}
		out.Services = &extauthzv3.ExtAuthz_HttpService{HttpService: svc}
		out.FailureModeAllow = h.GetFailOpen()
		out.StatusOnError = httpStatus(h.GetStatusOnError())
		allowed := h.GetIncludeRequestHeadersInCheck()
		if len(allowed) == 0 {
			allowed = h.GetIncludeHeadersInCheck() //nolint:staticcheck // deprecated, read when the new field is unset, as Istio
		}
		out.AllowedHeaders = extAuthzHeaders(allowed)
		return out, p
	}
	g := p.GetEnvoyExtAuthzGrpc()
	out.Services = &extauthzv3.ExtAuthz_GrpcService{GrpcService: &core.GrpcService{
		TargetSpecifier: &core.GrpcService_EnvoyGrpc_{EnvoyGrpc: &core.GrpcService_EnvoyGrpc{
			ClusterName: contract.ClusterName(contract.Outbound, g.GetPort(), "", host),
			Authority:   host,
		}},
		Timeout: timeoutOr(g.GetTimeout().AsDuration(), g.GetTimeout() != nil),
	}}
	out.FailureModeAllow = g.GetFailOpen()
	out.StatusOnError = httpStatus(g.GetStatusOnError())
	return out, p
}

func timeoutOr(d time.Duration, set bool) *durationpb.Duration {
	if !set {
		d = extAuthzDefaultTimeout
	}
	return durationpb.New(d)
}

// httpStatus is a provider's statusOnError (validated), nil when unset.
func httpStatus(s string) *typev3.HttpStatus {
	code, err := strconv.Atoi(s)
	if err != nil {
		return nil
	}
	return &typev3.HttpStatus{Code: typev3.StatusCode(code)}
}

// extAuthzHeaders is Istio's generateHeaders: "x*" a prefix, "*x" a
// suffix, else exact, all ignoring case; nil for none.
func extAuthzHeaders(headers []string) *matcher.ListStringMatcher {
	if len(headers) == 0 {
		return nil
	}
	out := &matcher.ListStringMatcher{}
	for _, h := range headers {
		m := &matcher.StringMatcher{IgnoreCase: true}
		if after, ok := strings.CutPrefix(h, "*"); ok {
			m.MatchPattern = &matcher.StringMatcher_Suffix{Suffix: after}
		} else if before, ok := strings.CutSuffix(h, "*"); ok {
			m.MatchPattern = &matcher.StringMatcher_Prefix{Prefix: before}
		} else {
			m.MatchPattern = &matcher.StringMatcher_Exact{Exact: h}
		}
		out.Patterns = append(out.Patterns, m)
	}
	return out
}
