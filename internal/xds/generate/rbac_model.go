package generate

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacpb "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	uritemplate "github.com/envoyproxy/go-control-plane/envoy/extensions/path/match/uri_template/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
	security "istio.io/api/security/v1beta1"

	"weft.dev/weft/internal/xds/contract"
)

// One AuthorizationPolicy rule as Envoy RBAC, the way Istio's authz model
// builds it (pilot/pkg/security/authz/model: model.go, generator.go,
// permission.go, principal.go; matchers from authz/matcher). Every
// condition of a rule lands in the permission (what is asked: host,
// method, path, port, destination IP, SNI, metadata) or in the principal
// (who asks: peer identity, namespace, IPs, request principal, headers,
// JWT claims); the values of a field are OR'd, the fields AND'd, from[]
// and to[] entries OR'd.

// Attribute names of conditions, and the internal names of operation fields.
const (
	attrRequestHeader    = "request.headers"
	attrSrcIP            = "source.ip"
	attrRemoteIP         = "remote.ip"
	attrSrcNamespace     = "source.namespace"
	attrSrcServiceAcct   = "source.serviceAccount"
	attrSrcTrustDomain   = "source.trustDomain"
	attrSrcPrincipal     = "source.principal"
	attrRequestPrincipal = "request.auth.principal"
	attrRequestAudiences = "request.auth.audiences"
	attrRequestPresenter = "request.auth.presenter"
	attrRequestClaims    = "request.auth.claims"
	attrDestIP           = "destination.ip"
	attrDestPort         = "destination.port"
	attrConnSNI          = "connection.sni"
	attrEnvoyFilter      = "experimental.envoy.filters."

	methodHeader = ":method"
	hostHeader   = ":authority"
	pathField    = "path-matcher"
	spiffePrefix = "spiffe://"
)

var errUnsupported = errors.New("unsupported here")

// errHTTPOnly is a condition on an HTTP attribute in a rule generated for
// a TCP filter chain (Istio's "... is HTTP only").
var errHTTPOnly = errors.New("HTTP only")

// httpOnly reports whether key is an attribute only an HTTP request has:
// Istio's generators refuse it for TCP filter chains.
func httpOnly(key string) bool {
	switch key {
	case hostHeader, methodHeader, pathField, attrRequestPrincipal, attrRequestAudiences, attrRequestPresenter:
		return true
	}
	return strings.HasPrefix(key, attrRequestHeader) || strings.HasPrefix(key, attrRequestClaims)
}

// valueGenerator turns one value of a field into a permission or a
// principal (one of the two is errUnsupported).
type valueGenerator interface {
	permission(key, value string) (*rbacpb.Permission, error)
	principal(key, value string) (*rbacpb.Principal, error)
}

// listGenerator turns all the values of a field at once (JWT claims,
// request principals, metadata) into one permission or principal.
type listGenerator interface {
	permissions(key string, values []string) (*rbacpb.Permission, error)
	principals(key string, values []string) (*rbacpb.Principal, error)
}

// condition is one field of a rule: a key with values and notValues.
type condition struct {
	key               string
	values, notValues []string
	gen               valueGenerator
	list              listGenerator
}

// conditions are AND'd.
type conditions []*condition

// insertFront adds a condition before the others, unless it has no values.
func (cs conditions) insertFront(c *condition) conditions {
	if len(c.values) == 0 && len(c.notValues) == 0 {
		return cs
	}
	return append(conditions{c}, cs...)
}

// rbacModel is one rule: its permissions (one per to[] entry, or one) and
// principals (one per from[] entry, or one).
type rbacModel struct {
	permissions []conditions
	principals  []conditions
}

// newRBACModel is Istio's authz model.New: when conditions first, then
// each from[] and to[] entry's fields inserted before them. A condition
// on an unknown attribute (validation refuses them) makes the rule
// invalid, and Istio then skips it.
func newRBACModel(policyNS string, r *security.Rule) (*rbacModel, error) {
	var basePerm, basePrin conditions
	for _, w := range r.GetWhen() {
		c := &condition{key: w.GetKey(), values: w.GetValues(), notValues: w.GetNotValues()}
		k := c.key
		switch {
		case k == attrDestIP:
			c.gen = destIPGen{}
			basePerm = append(basePerm, c)
		case k == attrDestPort:
			c.gen = destPortGen{}
			basePerm = append(basePerm, c)
		case k == attrConnSNI:
			c.gen = sniGen{}
			basePerm = append(basePerm, c)
		case strings.HasPrefix(k, attrEnvoyFilter):
			c.list = envoyFilterGen{}
			basePerm = append(basePerm, c)
		case k == attrSrcIP:
			c.gen = srcIPGen{}
			basePrin = append(basePrin, c)
		case k == attrRemoteIP:
			c.gen = remoteIPGen{}
			basePrin = append(basePrin, c)
		case k == attrSrcNamespace:
			c.gen = srcNamespaceGen{}
			basePrin = append(basePrin, c)
		case k == attrSrcTrustDomain:
			c.gen = trustDomainGen{}
			basePrin = append(basePrin, c)
		case k == attrSrcServiceAcct:
			c.gen = serviceAccountGen{policyNS}
			basePrin = append(basePrin, c)
		case k == attrSrcPrincipal:
			c.gen = srcPrincipalGen{}
			basePrin = append(basePrin, c)
		case k == attrRequestPrincipal:
			c.list = requestPrincipalGen{}
			basePrin = append(basePrin, c)
		case k == attrRequestAudiences:
			c.list = claimListGen{[]string{"aud"}}
			basePrin = append(basePrin, c)
		case k == attrRequestPresenter:
			c.list = claimListGen{[]string{"azp"}}
			basePrin = append(basePrin, c)
		case strings.HasPrefix(k, attrRequestHeader):
			c.gen = headerGen{}
			basePrin = append(basePrin, c)
		case strings.HasPrefix(k, attrRequestClaims):
			c.list = claimGen{}
			basePrin = append(basePrin, c)
		default:
			return nil, fmt.Errorf("unknown attribute %s", k)
		}
	}
	m := &rbacModel{}
	for _, f := range r.GetFrom() {
		s := f.GetSource()
		merged := append(conditions(nil), basePrin...)
		merged = merged.insertFront(&condition{key: attrSrcIP, values: s.GetIpBlocks(), notValues: s.GetNotIpBlocks(), gen: srcIPGen{}})
		merged = merged.insertFront(&condition{key: attrRemoteIP, values: s.GetRemoteIpBlocks(), notValues: s.GetNotRemoteIpBlocks(), gen: remoteIPGen{}})
		merged = merged.insertFront(&condition{key: attrSrcNamespace, values: s.GetNamespaces(), notValues: s.GetNotNamespaces(), gen: srcNamespaceGen{}})
		merged = merged.insertFront(&condition{key: attrSrcTrustDomain, values: s.GetTrustDomains(), notValues: s.GetNotTrustDomains(), gen: trustDomainGen{}})
		merged = merged.insertFront(&condition{key: attrSrcServiceAcct, values: s.GetServiceAccounts(), notValues: s.GetNotServiceAccounts(), gen: serviceAccountGen{policyNS}})
		merged = merged.insertFront(&condition{key: attrRequestPrincipal, values: s.GetRequestPrincipals(), notValues: s.GetNotRequestPrincipals(), list: requestPrincipalGen{}})
		merged = merged.insertFront(&condition{key: attrSrcPrincipal, values: s.GetPrincipals(), notValues: s.GetNotPrincipals(), gen: srcPrincipalGen{}})
		m.principals = append(m.principals, merged)
	}
	if len(r.GetFrom()) == 0 {
		m.principals = append(m.principals, basePrin)
	}
	for _, t := range r.GetTo() {
		o := t.GetOperation()
		merged := append(conditions(nil), basePerm...)
		merged = merged.insertFront(&condition{key: attrDestPort, values: o.GetPorts(), notValues: o.GetNotPorts(), gen: destPortGen{}})
		merged = merged.insertFront(&condition{key: pathField, values: o.GetPaths(), notValues: o.GetNotPaths(), gen: pathGen{}})
		merged = merged.insertFront(&condition{key: methodHeader, values: o.GetMethods(), notValues: o.GetNotMethods(), gen: methodGen{}})
		merged = merged.insertFront(&condition{key: hostHeader, values: o.GetHosts(), notValues: o.GetNotHosts(), gen: hostGen{}})
		m.permissions = append(m.permissions, merged)
	}
	if len(r.GetTo()) == 0 {
		m.permissions = append(m.permissions, basePerm)
	}
	return m, nil
}

// migrateTrustDomain is Istio's MigrateTrustDomain with one trust domain
// and no aliases: a principal written with the trust domain cluster.local
// (Istio's stand-in for "this mesh") is matched against trustDomain.
func (m *rbacModel) migrateTrustDomain(trustDomain string) {
	for _, p := range m.principals {
		for i, c := range p {
			if c.key != attrSrcPrincipal {
				continue
			}
			cp := *c
			cp.values = replaceTrustDomain(c.values, trustDomain)
			cp.notValues = replaceTrustDomain(c.notValues, trustDomain)
			p[i] = &cp
		}
	}
}

// replaceTrustDomain is Istio's Bundle.ReplaceTrustDomainAliases for a
// bundle of one trust domain.
func replaceTrustDomain(principals []string, td string) []string {
	if len(principals) == 0 {
		return principals
	}
	out := make([]string, 0, len(principals))
	for _, p := range principals {
		parts := strings.Split(p, "/")
		if len(parts) != 5 || parts[0] == "*" {
			out = append(out, p) // not a SPIFFE form, or any trust domain
			continue
		}
		from := parts[0]
		if !trustDomainMatch(from, td) && from != "cluster.local" {
			out = append(out, p)
			continue
		}
		if strings.HasPrefix(from, "*") && strings.HasSuffix(td, from[1:]) {
			out = append(out, p) // a suffix pattern that covers td: as written
			continue
		}
		out = append(out, td+"/"+strings.Join(parts[1:], "/"))
	}
	return out
}

// trustDomainMatch is Istio's trustdomain stringMatch of one value against
// one trust domain: equal, "*", or a prefix or suffix pattern either way.
func trustDomainMatch(a, td string) bool {
	prefix := func(s, pattern string) bool {
		return strings.HasSuffix(pattern, "*") && strings.HasPrefix(s, strings.TrimSuffix(pattern, "*"))
	}
	suffix := func(s, pattern string) bool {
		return strings.HasPrefix(pattern, "*") && strings.HasSuffix(s, strings.TrimPrefix(pattern, "*"))
	}
	return a == td || td == "*" || prefix(a, td) || prefix(td, a) || suffix(a, td) || suffix(td, a)
}

// generate is Istio's Model.Generate with authenticated (certificate)
// principals, for an HTTP filter chain or, forTCP, a TCP one. A value
// that cannot be expressed drops the whole rule from an ALLOW policy (it
// then allows less) and only that value from a DENY or AUDIT one (it then
// matches more), as Istio decides; on a TCP chain every condition on an
// HTTP attribute (hosts, methods, paths, request principals, headers,
// claims) is such a value.
func (m *rbacModel) generate(action rbacpb.RBAC_Action, forTCP bool) (*rbacpb.Policy, error) {
	out := &rbacpb.Policy{}
	for _, cs := range m.permissions {
		var and []*rbacpb.Permission
		for _, c := range cs {
			ps, err := c.permission(action, forTCP)
			if err != nil {
				return nil, err
			}
			and = append(and, ps...)
		}
		if len(and) == 0 {
			and = []*rbacpb.Permission{permAny()}
		}
		out.Permissions = append(out.Permissions, permAnd(and))
	}
	for _, cs := range m.principals {
		var and []*rbacpb.Principal
		for _, c := range cs {
			ps, err := c.principal(action, forTCP)
			if err != nil {
				return nil, err
			}
			and = append(and, ps...)
		}
		if len(and) == 0 {
			and = []*rbacpb.Principal{prinAny()}
		}
		out.Principals = append(out.Principals, prinAnd(and))
	}
	return out, nil
}

// check is Istio's rule.checkError: errors count for ALLOW only.
func check(action rbacpb.RBAC_Action, err error) error {
	if action == rbacpb.RBAC_ALLOW {
		return err
	}
	return nil
}

// tcpSkip reports, for a condition on an HTTP attribute in a rule for a
// TCP chain, that it is left out (DENY, AUDIT: the rule matches more) or
// fails the rule (ALLOW: err).
func (c *condition) tcpSkip(action rbacpb.RBAC_Action, forTCP bool) (skip bool, err error) {
	if !forTCP || !httpOnly(c.key) || len(c.values)+len(c.notValues) == 0 {
		return false, nil
	}
	return true, check(action, fmt.Errorf("%s: %w", c.key, errHTTPOnly))
}

func (c *condition) permission(action rbacpb.RBAC_Action, forTCP bool) ([]*rbacpb.Permission, error) {
	if skip, err := c.tcpSkip(action, forTCP); skip {
		return nil, err
	}
	if c.list != nil {
		return build(c, action, c.list.permissions, nil, permOr, permNot)
	}
	return build(c, action, nil, c.gen.permission, permOr, permNot)
}

func (c *condition) principal(action rbacpb.RBAC_Action, forTCP bool) ([]*rbacpb.Principal, error) {
	if skip, err := c.tcpSkip(action, forTCP); skip {
		return nil, err
	}
	if c.list != nil {
		return build(c, action, c.list.principals, nil, prinOr, prinNot)
	}
	return build(c, action, nil, c.gen.principal, prinOr, prinNot)
}

// build turns a condition into permissions or principals, as Istio's
// model does for both: with a list generator, one matcher for the values
// and one negated for the notValues; else one matcher per value, ORed, and
// the notValues' OR negated. Errors count for ALLOW only (check).
func build[T any](c *condition, action rbacpb.RBAC_Action,
	list func(key string, values []string) (T, error), one func(key, value string) (T, error),
	or func([]T) T, not func(T) T) ([]T, error) {
	var out []T
	isNil := func(v T) bool { return any(v) == nil || reflectNil(v) }
	if list != nil {
		for _, vs := range []struct {
			values []string
			negate bool
		}{{c.values, false}, {c.notValues, true}} {
			if len(vs.values) == 0 {
				continue
			}
			p, err := list(c.key, vs.values)
			if err := check(action, err); err != nil {
				return nil, err
			}
			if isNil(p) {
				continue
			}
			if vs.negate {
				p = not(p)
			}
			out = append(out, p)
		}
		return out, nil
	}
	for _, vs := range []struct {
		values []string
		negate bool
	}{{c.values, false}, {c.notValues, true}} {
		var alts []T
		for _, v := range vs.values {
			p, err := one(c.key, v)
			if err := check(action, err); err != nil {
				return nil, err
			}
			if !isNil(p) {
				alts = append(alts, p)
			}
		}
		if len(alts) == 0 {
			continue
		}
		p := or(alts)
		if vs.negate {
			p = not(p)
		}
		out = append(out, p)
	}
	return out, nil
}

// reflectNil reports whether v (a pointer) is nil.
func reflectNil[T any](v T) bool {
	switch p := any(v).(type) {
	case *rbacpb.Permission:
		return p == nil
	case *rbacpb.Principal:
		return p == nil
	}
	return false
}

// Permission generators.

type destIPGen struct{}

func (destIPGen) permission(_, v string) (*rbacpb.Permission, error) {
	cidr, err := cidrRange(v)
	if err != nil {
		return nil, err
	}
	return &rbacpb.Permission{Rule: &rbacpb.Permission_DestinationIp{DestinationIp: cidr}}, nil
}
func (destIPGen) principal(string, string) (*rbacpb.Principal, error) { return nil, errUnsupported }

type destPortGen struct{}

func (destPortGen) permission(_, v string) (*rbacpb.Permission, error) {
	p, err := strconv.ParseUint(v, 10, 32)
	if err != nil || p > 65535 {
		return nil, fmt.Errorf("invalid port %q", v)
	}
	return &rbacpb.Permission{Rule: &rbacpb.Permission_DestinationPort{DestinationPort: uint32(p)}}, nil
}
func (destPortGen) principal(string, string) (*rbacpb.Principal, error) { return nil, errUnsupported }

type sniGen struct{}

func (sniGen) permission(_, v string) (*rbacpb.Permission, error) {
	return &rbacpb.Permission{Rule: &rbacpb.Permission_RequestedServerName{RequestedServerName: authzString(v, "")}}, nil
}
func (sniGen) principal(string, string) (*rbacpb.Principal, error) { return nil, errUnsupported }

type hostGen struct{}

func (hostGen) permission(_, v string) (*rbacpb.Permission, error) {
	return &rbacpb.Permission{Rule: &rbacpb.Permission_Header{Header: authzHeader(hostHeader, v, true)}}, nil
}
func (hostGen) principal(string, string) (*rbacpb.Principal, error) { return nil, errUnsupported }

type methodGen struct{}

func (methodGen) permission(_, v string) (*rbacpb.Permission, error) {
	return &rbacpb.Permission{Rule: &rbacpb.Permission_Header{Header: authzHeader(methodHeader, v, false)}}, nil
}
func (methodGen) principal(string, string) (*rbacpb.Principal, error) { return nil, errUnsupported }

type pathGen struct{}

// permission matches the path (Istio's rules: exact, "prefix*", "*suffix",
// "*" for any) on url_path, which ignores the query; a path with the
// templates {*} (one segment) or {**} (any) is an Envoy URI template.
func (pathGen) permission(_, v string) (*rbacpb.Permission, error) {
	if strings.Contains(v, "{*}") || strings.Contains(v, "{**}") {
		tmpl := strings.NewReplacer("{*}", "*", "{**}", "**").Replace(v)
		return &rbacpb.Permission{Rule: &rbacpb.Permission_UriTemplate{UriTemplate: &core.TypedExtensionConfig{
			Name:        "uri-template",
			TypedConfig: mustAny(&uritemplate.UriTemplateMatchConfig{PathTemplate: tmpl}),
		}}}, nil
	}
	return &rbacpb.Permission{Rule: &rbacpb.Permission_UrlPath{UrlPath: &matcher.PathMatcher{
		Rule: &matcher.PathMatcher_Path{Path: authzString(v, "")},
	}}}, nil
}
func (pathGen) principal(string, string) (*rbacpb.Principal, error) { return nil, errUnsupported }

// envoyFilterGen matches another filter's dynamic metadata:
// experimental.envoy.filters.<filter>[<key>]; a value "[v]" matches v in a
// list.
type envoyFilterGen struct{}

func (envoyFilterGen) permissions(key string, values []string) (*rbacpb.Permission, error) {
	parts := strings.SplitN(strings.TrimSuffix(strings.TrimPrefix(key, "experimental."), "]"), "[", 2)
	if len(parts) != 2 {
		return nil, fmt.Errorf("invalid key %q", key)
	}
	var ms []*matcher.ValueMatcher
	for _, v := range values {
		if strings.HasPrefix(v, "[") && strings.HasSuffix(v, "]") {
			ms = append(ms, &matcher.ValueMatcher{MatchPattern: &matcher.ValueMatcher_ListMatch{ListMatch: &matcher.ListMatcher{
				MatchPattern: &matcher.ListMatcher_OneOf{OneOf: stringValue(authzString(strings.Trim(v, "[]"), ""))},
			}}})
			continue
		}
		ms = append(ms, stringValue(authzString(v, "")))
	}
	return &rbacpb.Permission{Rule: &rbacpb.Permission_Metadata{Metadata: &matcher.MetadataMatcher{
		Filter: parts[0],
		Path:   metadataPath(parts[1]),
		Value:  orValues(ms),
	}}}, nil
}
func (envoyFilterGen) principals(string, []string) (*rbacpb.Principal, error) {
	return nil, errUnsupported
}

// Principal generators.

type srcIPGen struct{}

func (srcIPGen) permission(string, string) (*rbacpb.Permission, error) { return nil, errUnsupported }
func (srcIPGen) principal(_, v string) (*rbacpb.Principal, error) {
	cidr, err := cidrRange(v)
	if err != nil {
		return nil, err
	}
	return &rbacpb.Principal{Identifier: &rbacpb.Principal_DirectRemoteIp{DirectRemoteIp: cidr}}, nil
}

type remoteIPGen struct{}

func (remoteIPGen) permission(string, string) (*rbacpb.Permission, error) { return nil, errUnsupported }
func (remoteIPGen) principal(_, v string) (*rbacpb.Principal, error) {
	cidr, err := cidrRange(v)
	if err != nil {
		return nil, err
	}
	return &rbacpb.Principal{Identifier: &rbacpb.Principal_RemoteIp{RemoteIp: cidr}}, nil
}

type srcNamespaceGen struct{}

func (srcNamespaceGen) permission(string, string) (*rbacpb.Permission, error) {
	return nil, errUnsupported
}

// principal matches the namespace part of the peer's SPIFFE ID; '*' in
// the value matches anything.
func (srcNamespaceGen) principal(_, v string) (*rbacpb.Principal, error) {
	parts := strings.Split(v, "*")
	for i, p := range parts {
		parts[i] = regexp.QuoteMeta(p)
	}
	return authenticated(regexMatcher(fmt.Sprintf(".*/ns/%s/.*", strings.Join(parts, ".*")))), nil
}

type serviceAccountGen struct{ policyNS string }

func (serviceAccountGen) permission(string, string) (*rbacpb.Permission, error) {
	return nil, errUnsupported
}

// principal matches spiffe://<any trust domain>/ns/<ns>/sa/<sa>, the
// namespace defaulting to the policy's own.
func (g serviceAccountGen) principal(_, v string) (*rbacpb.Principal, error) {
	ns, sa, ok := strings.Cut(v, "/")
	if !ok {
		ns, sa = g.policyNS, v
	}
	return authenticated(regexMatcher(fmt.Sprintf("spiffe://.+/ns/%s/(.+/|)sa/%s(/.+)?", regexp.QuoteMeta(ns), regexp.QuoteMeta(sa)))), nil
}

type trustDomainGen struct{}

func (trustDomainGen) permission(string, string) (*rbacpb.Permission, error) {
	return nil, errUnsupported
}
func (trustDomainGen) principal(_, v string) (*rbacpb.Principal, error) {
	switch {
	case v == "*":
		return authenticated(prefixMatcher(spiffePrefix, false)), nil
	case !strings.Contains(v, "*"):
		return authenticated(prefixMatcher(spiffePrefix+v+"/", false)), nil
	}
	a, b, _ := strings.Cut(v, "*")
	return authenticated(regexMatcher(fmt.Sprintf("spiffe://%s[^/]*%s/.*", regexp.QuoteMeta(a), regexp.QuoteMeta(b)))), nil
}

type srcPrincipalGen struct{}

func (srcPrincipalGen) permission(string, string) (*rbacpb.Permission, error) {
	return nil, errUnsupported
}
func (srcPrincipalGen) principal(_, v string) (*rbacpb.Principal, error) {
	return authenticated(authzString(v, spiffePrefix)), nil
}

type headerGen struct{}

func (headerGen) permission(string, string) (*rbacpb.Permission, error) { return nil, errUnsupported }
func (headerGen) principal(key, v string) (*rbacpb.Principal, error) {
	name, err := inBrackets(strings.TrimPrefix(key, attrRequestHeader))
	if err != nil {
		return nil, err
	}
	return &rbacpb.Principal{Identifier: &rbacpb.Principal_Header{Header: authzHeader(name, v, false)}}, nil
}

// requestPrincipalGen matches "<iss>/<sub>" (the last '/' splits them, an
// issuer may be a URL) against the verified token's iss and sub claims.
type requestPrincipalGen struct{}

var matchAnyString = regexMatcher(".+")

func (requestPrincipalGen) permissions(string, []string) (*rbacpb.Permission, error) {
	return nil, errUnsupported
}
func (requestPrincipalGen) principals(_ string, values []string) (*rbacpb.Principal, error) {
	var or []*rbacpb.Principal
	for _, v := range values {
		iss, sub := v, ""
		idx := strings.LastIndex(v, "/")
		found := idx >= 0
		if found {
			iss, sub = v[:idx], v[idx+1:]
		}
		var mIss, mSub *matcher.StringMatcher
		switch {
		case v == "*":
			mIss, mSub = matchAnyString, matchAnyString
		case strings.HasPrefix(v, "*"):
			if found {
				if iss == "*" {
					mIss = matchAnyString
				} else {
					mIss = suffixMatcher(strings.TrimPrefix(iss, "*"), false)
				}
				mSub = exactMatcher(sub, false)
			} else {
				mIss, mSub = matchAnyString, suffixMatcher(strings.TrimPrefix(v, "*"), false)
			}
		case strings.HasSuffix(v, "*"):
			if found {
				mIss = exactMatcher(iss, false)
				if sub == "*" {
					mSub = matchAnyString
				} else {
					mSub = prefixMatcher(strings.TrimSuffix(sub, "*"), false)
				}
			} else {
				mIss, mSub = prefixMatcher(strings.TrimSuffix(v, "*"), false), matchAnyString
			}
		default:
			mIss, mSub = exactMatcher(iss, false), exactMatcher(sub, false)
		}
		or = append(or, prinAnd([]*rbacpb.Principal{
			jwtClaimPrincipal("iss", mIss),
			jwtClaimPrincipal("sub", mSub),
		}))
	}
	switch len(or) {
	case 0:
		return nil, nil
	case 1:
		return or[0], nil
	}
	return prinOr(or), nil
}

// claimListGen matches a fixed claim (aud, azp) that may be a string or a
// list of strings.
type claimListGen struct{ claims []string }

func (claimListGen) permissions(string, []string) (*rbacpb.Permission, error) {
	return nil, errUnsupported
}
func (g claimListGen) principals(_ string, values []string) (*rbacpb.Principal, error) {
	return jwtClaimsPrincipal(g.claims, values), nil
}

// claimGen matches request.auth.claims[a][b]...: a (nested) claim.
type claimGen struct{}

func (claimGen) permissions(string, []string) (*rbacpb.Permission, error) {
	return nil, errUnsupported
}
func (claimGen) principals(key string, values []string) (*rbacpb.Principal, error) {
	claims, err := nestedBrackets(strings.TrimPrefix(key, attrRequestClaims))
	if err != nil {
		return nil, err
	}
	return jwtClaimsPrincipal(claims, values), nil
}

// jwtClaimPrincipal matches one top-level claim of the verified token's
// payload as a string.
func jwtClaimPrincipal(claim string, m *matcher.StringMatcher) *rbacpb.Principal {
	return &rbacpb.Principal{Identifier: &rbacpb.Principal_Metadata{Metadata: &matcher.MetadataMatcher{
		Filter: contract.FilterJWTAuthn,
		Path:   metadataPath(contract.MetaJWTPayload, claim),
		Value:  stringValue(m),
	}}}
}

// jwtClaimsPrincipal matches a (nested) claim that is one of values, or a
// list with one of values (Istio's MetadataListValueMatcher with the
// extended JWT form).
func jwtClaimsPrincipal(claims, values []string) *rbacpb.Principal {
	var vs []*matcher.ValueMatcher
	for _, v := range values {
		vs = append(vs, stringValue(authzString(v, "")))
	}
	value := orValues(vs)
	return &rbacpb.Principal{Identifier: &rbacpb.Principal_Metadata{Metadata: &matcher.MetadataMatcher{
		Filter: contract.FilterJWTAuthn,
		Path:   metadataPath(append([]string{contract.MetaJWTPayload}, claims...)...),
		Value: &matcher.ValueMatcher{MatchPattern: &matcher.ValueMatcher_OrMatch{OrMatch: &matcher.OrMatcher{
			ValueMatchers: []*matcher.ValueMatcher{
				{MatchPattern: &matcher.ValueMatcher_ListMatch{ListMatch: &matcher.ListMatcher{
					MatchPattern: &matcher.ListMatcher_OneOf{OneOf: value},
				}}},
				value,
			},
		}}},
	}}}
}

// inBrackets returns name from "[name]".
func inBrackets(s string) (string, error) {
	if !strings.HasPrefix(s, "[") || !strings.HasSuffix(s, "]") {
		return "", fmt.Errorf("want [<name>], got %s", s)
	}
	return strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"), nil
}

// nestedBrackets is Istio's extractNameInNestedBrackets: "[a][b]" is
// [a b]; anything else falls back to one name in brackets ("[a.b]").
func nestedBrackets(s string) ([]string, error) {
	var out []string
	for begin := 0; begin < len(s); {
		end := -1
		if s[begin] == '[' {
			for i := begin + 1; i < len(s); i++ {
				if s[i] == '[' {
					break
				}
				if s[i] == ']' {
					end = i
					break
				}
			}
		}
		if end == -1 {
			name, err := inBrackets(s)
			if err != nil {
				return nil, err
			}
			return []string{name}, nil
		}
		out = append(out, s[begin+1:end])
		begin = end + 1
	}
	return out, nil
}

// cidrRange is Istio's AddrStrToCidrRange: an address is a /32 (/128); a
// CIDR keeps its address as written.
func cidrRange(v string) (*core.CidrRange, error) {
	var p netip.Prefix
	if strings.Contains(v, "/") {
		var err error
		if p, err = netip.ParsePrefix(v); err != nil {
			return nil, err
		}
	} else {
		a, err := netip.ParseAddr(v)
		if err != nil {
			return nil, err
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	return &core.CidrRange{AddressPrefix: p.Addr().String(), PrefixLen: wrapperspb.UInt32(uint32(p.Bits()))}, nil
}

// Matchers, as Istio's authz/matcher package writes them.

func exactMatcher(s string, ignoreCase bool) *matcher.StringMatcher {
	return &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: s}, IgnoreCase: ignoreCase}
}

func prefixMatcher(s string, ignoreCase bool) *matcher.StringMatcher {
	return &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Prefix{Prefix: s}, IgnoreCase: ignoreCase}
}

func suffixMatcher(s string, ignoreCase bool) *matcher.StringMatcher {
	return &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Suffix{Suffix: s}, IgnoreCase: ignoreCase}
}

func regexMatcher(re string) *matcher.StringMatcher {
	return &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_SafeRegex{SafeRegex: &matcher.RegexMatcher{Regex: re}}}
}

// authzString is Istio's StringMatcherWithPrefix: "*" is any non-empty
// string (regex .+, ignoring prefix), "*x" a suffix, "x*" a prefix, else
// exact; prefix is put before the value (a suffix then needs a regex).
func authzString(v, prefix string) *matcher.StringMatcher {
	switch {
	case v == "*":
		return regexMatcher(".+")
	case strings.HasPrefix(v, "*"):
		if prefix == "" {
			return suffixMatcher(strings.TrimPrefix(v, "*"), false)
		}
		return regexMatcher(prefix + ".*" + regexp.QuoteMeta(strings.TrimPrefix(v, "*")))
	case strings.HasSuffix(v, "*"):
		return prefixMatcher(prefix+strings.TrimSuffix(v, "*"), false)
	}
	return exactMatcher(prefix+v, false)
}

// authzHeader is Istio's HeaderMatcher (HostMatcher with ignoreCase):
// "*" is presence, "*x" a suffix, "x*" a prefix, else exact.
func authzHeader(name, v string, ignoreCase bool) *route.HeaderMatcher {
	h := &route.HeaderMatcher{Name: name}
	var sm *matcher.StringMatcher
	switch {
	case v == "*":
		h.HeaderMatchSpecifier = &route.HeaderMatcher_PresentMatch{PresentMatch: true}
		return h
	case strings.HasPrefix(v, "*"):
		sm = suffixMatcher(v[1:], ignoreCase)
	case strings.HasSuffix(v, "*"):
		sm = prefixMatcher(v[:len(v)-1], ignoreCase)
	default:
		sm = exactMatcher(v, ignoreCase)
	}
	h.HeaderMatchSpecifier = &route.HeaderMatcher_StringMatch{StringMatch: sm}
	return h
}

func stringValue(m *matcher.StringMatcher) *matcher.ValueMatcher {
	return &matcher.ValueMatcher{MatchPattern: &matcher.ValueMatcher_StringMatch{StringMatch: m}}
}

// orValues is Istio's OrMatcher: one matcher as is, several OR'd.
func orValues(ms []*matcher.ValueMatcher) *matcher.ValueMatcher {
	if len(ms) == 1 {
		return ms[0]
	}
	return &matcher.ValueMatcher{MatchPattern: &matcher.ValueMatcher_OrMatch{OrMatch: &matcher.OrMatcher{ValueMatchers: ms}}}
}

func metadataPath(keys ...string) []*matcher.MetadataMatcher_PathSegment {
	out := make([]*matcher.MetadataMatcher_PathSegment, 0, len(keys))
	for _, k := range keys {
		out = append(out, &matcher.MetadataMatcher_PathSegment{Segment: &matcher.MetadataMatcher_PathSegment_Key{Key: k}})
	}
	return out
}

func authenticated(m *matcher.StringMatcher) *rbacpb.Principal {
	return &rbacpb.Principal{Identifier: &rbacpb.Principal_Authenticated_{
		Authenticated: &rbacpb.Principal_Authenticated{PrincipalName: m},
	}}
}

func permAny() *rbacpb.Permission { return &rbacpb.Permission{Rule: &rbacpb.Permission_Any{Any: true}} }
func permAnd(ps []*rbacpb.Permission) *rbacpb.Permission {
	return &rbacpb.Permission{Rule: &rbacpb.Permission_AndRules{AndRules: &rbacpb.Permission_Set{Rules: ps}}}
}
func permOr(ps []*rbacpb.Permission) *rbacpb.Permission {
	return &rbacpb.Permission{Rule: &rbacpb.Permission_OrRules{OrRules: &rbacpb.Permission_Set{Rules: ps}}}
}
func permNot(p *rbacpb.Permission) *rbacpb.Permission {
	return &rbacpb.Permission{Rule: &rbacpb.Permission_NotRule{NotRule: p}}
}

func prinAny() *rbacpb.Principal {
	return &rbacpb.Principal{Identifier: &rbacpb.Principal_Any{Any: true}}
}
func prinAnd(ps []*rbacpb.Principal) *rbacpb.Principal {
	return &rbacpb.Principal{Identifier: &rbacpb.Principal_AndIds{AndIds: &rbacpb.Principal_Set{Ids: ps}}}
}
func prinOr(ps []*rbacpb.Principal) *rbacpb.Principal {
	return &rbacpb.Principal{Identifier: &rbacpb.Principal_OrIds{OrIds: &rbacpb.Principal_Set{Ids: ps}}}
}
func prinNot(p *rbacpb.Principal) *rbacpb.Principal {
	return &rbacpb.Principal{Identifier: &rbacpb.Principal_NotId{NotId: p}}
}
