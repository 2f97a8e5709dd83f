// Package rbac is the proxy's engine for Envoy's HTTP RBAC filter
// (envoy.filters.http.rbac, config envoy.extensions.filters.http.rbac.v3.RBAC):
// it compiles the filter's enforced rules and shadow rules into an
// immutable Filter and decides, for one request, what Envoy would decide.
//
// It covers the permissions and principals Istio's AuthorizationPolicy
// translation emits (and/or/not, any, header, url_path, uri_template,
// destination_ip/port/port_range, requested_server_name, metadata,
// authenticated, direct_remote_ip, remote_ip, source_ip) with Envoy's
// semantics; anything else in a config is a compile error naming the field,
// so the proxy NACKs instead of enforcing something else.
//
// The package knows nothing of the data plane: the caller fills a Request
// from the connection and the HTTP request and turns a denied Decision into
// Envoy's local reply (403, body "RBAC: access denied", response code
// details Decision.ResponseDetails(), response flag RBAC).
package rbac

import (
	"cmp"
	"crypto/tls"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"unicode"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
)

// FilterName is the HTTP filter's name in an HttpConnectionManager, and the
// dynamic metadata namespace the shadow engine's result is written under.
const FilterName = "envoy.filters.http.rbac"

// Metadata keys Envoy writes under FilterName for the shadow rules, each
// prefixed with the config's shadow_rules_stat_prefix.
const (
	ShadowEffectivePolicyIDKey = "shadow_effective_policy_id"
	ShadowEngineResultKey      = "shadow_engine_result"
)

// DeniedBody is the body of Envoy's 403 local reply for a denied request.
const DeniedBody = "RBAC: access denied"

// Request is what the RBAC filter reads: the request headers and what the
// proxy knows of the connection. The data plane fills it for each request;
// Evaluate only reads it.
type Request struct {
	// Method, Path, Authority and Scheme are the pseudo-headers :method,
	// :path (path and query as received), :authority (the Host header for
	// HTTP/1.1) and :scheme. An empty value is an absent header.
	Method    string
	Path      string
	Authority string
	Scheme    string
	// Header holds the other request headers, keyed as net/http does
	// (canonical MIME keys). A header sent several times is matched as its
	// values joined with ",", as Envoy does.
	Header http.Header

	// DestinationIP and DestinationPort are the local address the
	// connection arrived on (Envoy's downstream local address).
	DestinationIP   netip.Addr
	DestinationPort uint32
	// ServerName is the SNI the client asked for; "" without TLS or SNI.
	ServerName string
	// DirectRemoteIP is the TCP peer's address (direct_remote_ip, and the
	// deprecated source_ip). RemoteIP is the original client's address when
	// the proxy derives one (from X-Forwarded-For, say); when zero,
	// remote_ip matches DirectRemoteIP. IPv4-mapped IPv6 addresses are
	// matched as IPv4.
	DirectRemoteIP netip.Addr
	RemoteIP       netip.Addr

	// Peer is the connection's TLS peer; nil for plaintext. It is non-nil
	// for every TLS connection, also when the client sent no certificate,
	// as Envoy's connection.ssl(): a bare "authenticated: {}" principal
	// matches any TLS connection.
	Peer *Peer

	// Metadata is the request's dynamic metadata (filter name → fields),
	// read by metadata permissions and principals. Istio's requestPrincipals
	// and request.auth.claims rules read the JWT payload from
	// Metadata["envoy.filters.http.jwt_authn"]["payload"], which is where
	// package jwt puts it for Istio's configs.
	Metadata DynamicMetadata
}

// DynamicMetadata is Envoy's filter_metadata: for each filter name, a
// struct of fields. Values have the shapes encoding/json gives when
// decoding into any (map[string]any, []any, string, float64, bool, nil),
// which are those of google.protobuf.Value.
type DynamicMetadata map[string]map[string]any

// Peer is what the RBAC filter knows of the TLS peer: the SANs and subject
// of its leaf certificate (all empty when it sent none).
type Peer struct {
	URISANs []string // e.g. spiffe://cluster.local/ns/default/sa/sleep
	DNSSANs []string
	Subject string // RFC 2253 form, e.g. "CN=sleep,O=example"
}

// PeerFromTLS returns the Peer of a TLS connection, or nil for cs == nil
// (plaintext). Call it once per connection, not per request.
func PeerFromTLS(cs *tls.ConnectionState) *Peer {
	if cs == nil {
		return nil
	}
	p := &Peer{}
	if len(cs.PeerCertificates) == 0 {
		return p
	}
	leaf := cs.PeerCertificates[0]
	for _, u := range leaf.URIs {
		p.URISANs = append(p.URISANs, u.String())
	}
	p.DNSSANs = append(p.DNSSANs, leaf.DNSNames...)
	p.Subject = leaf.Subject.String()
	return p
}

// Action is what an engine does with a request that matches one of its
// policies (envoy.config.rbac.v3.RBAC.Action).
type Action uint8

const (
	Allow Action = iota // allowed only if a policy matches
	Deny                // denied if a policy matches
	Log                 // always allowed; a match asks access loggers to log it
)

func (a Action) String() string {
	switch a {
	case Allow:
		return "ALLOW"
	case Deny:
		return "DENY"
	case Log:
		return "LOG"
	}
	return fmt.Sprintf("Action(%d)", a)
}

// AccessLogHint is the value Envoy puts in dynamic metadata
// envoy.common/access_log_hint when the enforced rules' action is LOG.
type AccessLogHint uint8

const (
	LogUnset AccessLogHint = iota // enforced action is not LOG: nothing set
	LogYes                        // a LOG policy matched: log this request
	LogNo                         // no LOG policy matched
)

// Decision is the outcome of Evaluate for one request.
type Decision struct {
	// Allowed is false when the enforced rules deny the request; the proxy
	// then answers 403 DeniedBody. Without enforced rules it is true.
	Allowed bool
	// Enforced says the filter has enforced rules (else it allowed by
	// default, as Envoy's "no engine, allowed by default").
	Enforced bool
	// Policy is the name of the enforced policy that matched, "" if none.
	// Policies are tried in name order; the first match counts.
	Policy string
	// LogHint is set when the enforced action is LOG (Istio's AUDIT).
	LogHint AccessLogHint
	// Shadow is the shadow rules' verdict (Istio's dry-run policies); it
	// never changes Allowed.
	Shadow ShadowResult
}

// ShadowResult is the shadow engine's verdict.
type ShadowResult struct {
	Evaluated bool   // the filter has shadow rules
	Allowed   bool   // what the shadow rules would have decided
	Policy    string // the shadow policy that matched, "" if none
}

// ResponseDetails is Envoy's response code details for a denial:
// rbac_access_denied_matched_policy[<policy or none>].
func (d Decision) ResponseDetails() string {
	p := d.Policy
	if p == "" {
		p = "none"
	}
	return "rbac_access_denied_matched_policy[" + strings.Map(underscoreSpace, p) + "]"
}

func underscoreSpace(r rune) rune {
	if unicode.IsSpace(r) {
		return '_'
	}
	return r
}

// Filter is a compiled RBAC filter config. It is immutable: Evaluate may be
// called from any number of goroutines at once, with no locking. A config
// change compiles a new Filter.
type Filter struct {
	enforced     *engine // nil: nothing enforced
	shadow       *engine // nil: no shadow rules
	rulesPrefix  string
	shadowPrefix string
}

type engine struct {
	action   Action
	policies []policy // sorted by name, as Envoy's std::map
}

type policy struct {
	name        string
	permissions []matcher // any of them
	principals  []matcher // any of them
}

// Compile compiles an HTTP RBAC filter config. Errors name the offending
// field (for example rules.policies["p"].permissions[0].matcher) so the
// proxy's NACK says what it cannot enforce.
func Compile(cfg *rbachttpv3.RBAC) (*Filter, error) {
	if cfg == nil {
		return nil, fmt.Errorf("missing RBAC config")
	}
	if cfg.GetMatcher() != nil {
		return nil, fmt.Errorf("matcher: the matcher-API form of RBAC is not supported; use rules")
	}
	if cfg.GetShadowMatcher() != nil {
		return nil, fmt.Errorf("shadow_matcher: the matcher-API form of RBAC is not supported; use shadow_rules")
	}
	f := &Filter{rulesPrefix: cfg.GetRulesStatPrefix(), shadowPrefix: cfg.GetShadowRulesStatPrefix()}
	var err error
	if cfg.GetRules() != nil {
		if f.enforced, err = compileEngine("rules", cfg.GetRules()); err != nil {
			return nil, err
		}
	}
	if cfg.GetShadowRules() != nil {
		if f.shadow, err = compileEngine("shadow_rules", cfg.GetShadowRules()); err != nil {
			return nil, err
		}
	}
	// Envoy's schema rules (non-empty sets, valid header names, ...).
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return f, nil
}

// CompilePerRoute compiles a per-route override
// (typed_per_filter_config["envoy.filters.http.rbac"]). An override without
// rbac disables the filter on that route, as in Envoy: the Filter it
// returns allows everything.
func CompilePerRoute(cfg *rbachttpv3.RBACPerRoute) (*Filter, error) {
	if cfg.GetRbac() == nil {
		return &Filter{}, nil
	}
	f, err := Compile(cfg.GetRbac())
	if err != nil {
		return nil, fmt.Errorf("rbac.%w", err)
	}
	return f, nil
}

func compileEngine(path string, r *rbacv3.RBAC) (*engine, error) {
	e := &engine{}
	switch r.GetAction() {
	case rbacv3.RBAC_ALLOW:
		e.action = Allow
	case rbacv3.RBAC_DENY:
		e.action = Deny
	case rbacv3.RBAC_LOG:
		e.action = Log
	default:
		return nil, fmt.Errorf("%s.action: unknown action %v", path, r.GetAction())
	}
	if r.GetAuditLoggingOptions() != nil {
		return nil, fmt.Errorf("%s.audit_logging_options: RBAC audit loggers are not supported", path)
	}
	for name, p := range r.GetPolicies() {
		pp := fmt.Sprintf("%s.policies[%q]", path, name)
		if p.GetCondition() != nil || p.GetCheckedCondition() != nil || p.GetCelConfig() != nil {
			return nil, fmt.Errorf("%s: CEL conditions (condition, checked_condition, cel_config) are not supported", pp)
		}
		perms, err := compilePermissions(pp+".permissions", p.GetPermissions())
		if err != nil {
			return nil, err
		}
		prins, err := compilePrincipals(pp+".principals", p.GetPrincipals())
		if err != nil {
			return nil, err
		}
		e.policies = append(e.policies, policy{name: name, permissions: perms, principals: prins})
	}
	slices.SortFunc(e.policies, func(a, b policy) int { return cmp.Compare(a.name, b.name) })
	return e, nil
}

// firstMatch returns the name of the first policy, in name order, whose
// permissions and principals both match.
func (e *engine) firstMatch(r *Request) (string, bool) {
	for i := range e.policies {
		p := &e.policies[i]
		if orMatcher(p.permissions).matches(r) && orMatcher(p.principals).matches(r) {
			return p.name, true
		}
	}
	return "", false
}

// Evaluate decides a request as Envoy's RBAC filter does: the shadow rules
// are evaluated for the record, then the enforced rules decide. ALLOW
// allows only a request some policy matches (so ALLOW with no policies
// denies everything), DENY denies only a request some policy matches, LOG
// allows everything. It does not allocate unless a matched header was sent
// several times.
func (f *Filter) Evaluate(r *Request) Decision {
	var d Decision
	if f.shadow != nil {
		name, matched := f.shadow.firstMatch(r)
		d.Shadow = ShadowResult{Evaluated: true, Allowed: f.shadow.action.allows(matched), Policy: name}
	}
	if f.enforced == nil {
		d.Allowed = true
		return d
	}
	d.Enforced = true
	var matched bool
	d.Policy, matched = f.enforced.firstMatch(r)
	d.Allowed = f.enforced.action.allows(matched)
	if f.enforced.action == Log {
		d.LogHint = LogNo
		if matched {
			d.LogHint = LogYes
		}
	}
	return d
}

func (a Action) allows(matched bool) bool {
	switch a {
	case Allow:
		return matched
	case Deny:
		return !matched
	}
	return true
}

// ShadowMetadata returns the fields Envoy writes in dynamic metadata under
// FilterName after evaluating the shadow rules:
// <shadow_rules_stat_prefix>shadow_engine_result ("allowed"/"denied") and,
// when a policy matched, <prefix>shadow_effective_policy_id. It returns nil
// when the filter has no shadow rules.
func (f *Filter) ShadowMetadata(d Decision) map[string]any {
	if !d.Shadow.Evaluated {
		return nil
	}
	result := "denied"
	if d.Shadow.Allowed {
		result = "allowed"
	}
	md := map[string]any{f.shadowPrefix + ShadowEngineResultKey: result}
	if d.Shadow.Policy != "" {
		md[f.shadowPrefix+ShadowEffectivePolicyIDKey] = d.Shadow.Policy
	}
	return md
}

// Enforces reports whether the filter has enforced rules, and with which
// action.
func (f *Filter) Enforces() (Action, bool) {
	if f.enforced == nil {
		return 0, false
	}
	return f.enforced.action, true
}

// HasShadow reports whether the filter has shadow rules.
func (f *Filter) HasShadow() bool { return f.shadow != nil }

// RulesStatPrefix and ShadowRulesStatPrefix are the config's
// rules_stat_prefix and shadow_rules_stat_prefix (Istio sets the latter to
// istio_dry_run_allow_ or istio_dry_run_deny_), for the caller's counters.
func (f *Filter) RulesStatPrefix() string { return f.rulesPrefix }

// ShadowRulesStatPrefix: see RulesStatPrefix.
func (f *Filter) ShadowRulesStatPrefix() string { return f.shadowPrefix }

// PolicyNames returns the enforced and the shadow policy names, each in
// evaluation order, for logs and config dumps.
func (f *Filter) PolicyNames() (enforced, shadow []string) {
	names := func(e *engine) []string {
		if e == nil {
			return nil
		}
		out := make([]string, len(e.policies))
		for i, p := range e.policies {
			out[i] = p.name
		}
		return out
	}
	return names(f.enforced), names(f.shadow)
}
