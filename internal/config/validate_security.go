package config

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	security "istio.io/api/security/v1beta1"
	typev1beta1 "istio.io/api/type/v1beta1"

	"weft.dev/weft/internal/jwks"
)

// PeerAuthentications, AuthorizationPolicies and RequestAuthentications,
// rule by rule as Istio's ValidatePeerAuthentication,
// ValidateAuthorizationPolicy and ValidateRequestAuthentication
// (pkg/config/validation/validation.go, with the helpers of
// pkg/config/security) and the CRD schemas check them, plus Weft's
// warnings about what is valid but never matches, and what Weft does not
// support yet (CUSTOM authorization, policies attached with targetRef).

// annotationDryRun is Istio's istio.io/dry-run: an AuthorizationPolicy
// that is evaluated and logged but not enforced.
const annotationDryRun = "istio.io/dry-run"

// validateSelector is Istio's validateWorkloadSelector and the CRD's
// rules: no empty key, no '*' in keys or values, values of at most 63
// characters, at most 4096 labels; a selector without labels is a warning
// (it selects every workload of the namespace).
func validateSelector(is *issues, path string, sel *typev1beta1.WorkloadSelector) {
	if sel == nil {
		return
	}
	labels := sel.GetMatchLabels()
	validateSelectorLabels(is, path+".matchLabels", labels)
	checkMaxItems(is, path+".matchLabels", "labels", len(labels), 4096)
	if len(labels) == 0 {
		is.warnf(path, "the selector has no matchLabels, so it selects every workload in the namespace")
	}
}

// validateTargetRefs is Istio's validateOneOfSelectorType and
// validatePolicyTargetReference(s) and the CRD's rules. Policies attached
// with targetRef apply to gateways and waypoints, never to sidecars: Weft
// applies those naming a Gateway API Gateway to its proxies, and warns
// that the others (waypoints: Service, ServiceEntry; GatewayClass) have
// no effect.
func validateTargetRefs(is *issues, kind string, gateways bool, sel *typev1beta1.WorkloadSelector, ref *typev1beta1.PolicyTargetReference, refs []*typev1beta1.PolicyTargetReference) {
	set := 0
	if sel != nil {
		set++
	}
	if ref != nil {
		set++
	}
	if len(refs) > 0 {
		set++
	}
	if set > 1 {
		is.errf("spec", "only one of selector, targetRef or targetRefs can be set")
	}
	checkMaxItems(is, "spec.targetRefs", "target references", len(refs), 16)
	if ref != nil {
		validateTargetRef(is, "spec.targetRef", ref)
		warnTargetWithoutEffect(is, "spec.targetRef", kind, gateways, ref)
	}
	for i, r := range refs {
		path := fmt.Sprintf("spec.targetRefs[%d]", i)
		validateTargetRef(is, path, r)
		warnTargetWithoutEffect(is, path, kind, gateways, r)
	}
}

// warnTargetWithoutEffect warns about a target Weft applies nothing to:
// anything but a Gateway API Gateway, and that too unless gateways (the
// kind is applied to the Gateway's proxies: AuthorizationPolicy,
// RequestAuthentication).
func warnTargetWithoutEffect(is *issues, path, kind string, gateways bool, r *typev1beta1.PolicyTargetReference) {
	if !gateways {
		is.warnf(path, "a %s attached with targetRef applies to gateways and waypoints only; Weft configures sidecars, so it has no effect (use selector)", kind)
		return
	}
	if IsGatewayTarget(r) {
		return
	}
	is.warnf(path, "a %s attached to a %s applies to waypoints (or a class of gateways) only; Weft configures sidecars and the proxies of Gateway API Gateways, so it has no effect here (use selector, or target a Gateway)", kind, r.GetKind())
}

var (
	targetGroupRE = regexp.MustCompile(`^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$`)
	targetKindRE  = regexp.MustCompile(`^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$`)
)

// validateTargetRef is Istio's validatePolicyTargetReference and the CRD's
// patterns.
func validateTargetRef(is *issues, path string, r *typev1beta1.PolicyTargetReference) {
	if r == nil {
		return
	}
	if r.GetName() == "" {
		is.errf(path+".name", "targetRef name must be set")
	}
	checkMaxLen(is, path+".name", "name", r.GetName(), 253)
	if r.GetNamespace() != "" {
		is.errf(path+".namespace", "targetRef namespace must not be set: cross-namespace references are not supported")
	}
	if !targetGroupRE.MatchString(r.GetGroup()) || len(r.GetGroup()) > 253 {
		is.errf(path+".group", "group %q is not a DNS subdomain", r.GetGroup())
	}
	group := r.GetGroup()
	if group == "" {
		group = "core"
	}
	switch {
	case r.GetKind() == "" || !targetKindRE.MatchString(r.GetKind()) || len(r.GetKind()) > 63:
		is.errf(path+".kind", "kind %q is not a valid kind name", r.GetKind())
	case !(group == "core" && r.GetKind() == "Service") &&
		!(group == "networking.istio.io" && r.GetKind() == "ServiceEntry") &&
		!(group == "gateway.networking.k8s.io" && (r.GetKind() == "Gateway" || r.GetKind() == "GatewayClass")):
		is.errf(path+".kind", "targetRef must refer to a Service, ServiceEntry, Gateway or GatewayClass, not %s/%s", r.GetGroup(), r.GetKind())
	}
}

// validatePeerAuthentication is Istio's ValidatePeerAuthentication.
func validatePeerAuthentication(is *issues, pa *security.PeerAuthentication) {
	validateSelector(is, "spec.selector", pa.GetSelector())
	empty := len(pa.GetSelector().GetMatchLabels()) == 0
	if empty && len(pa.GetPortLevelMtls()) > 0 {
		is.errf("spec.portLevelMtls", "portLevelMtls needs a selector with matchLabels: a namespace-wide (or mesh-wide) PeerAuthentication cannot set modes per port")
	}
	for _, port := range sortedPorts(pa.GetPortLevelMtls()) {
		if err := checkPort(int64(port)); err != nil {
			is.errf(fmt.Sprintf("spec.portLevelMtls.%d", port), "%v", err)
		}
	}
}

func sortedPorts[V any](m map[uint32]V) []uint32 {
	out := make([]uint32, 0, len(m))
	for p := range m {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// validateAuthorizationPolicy is Istio's ValidateAuthorizationPolicy.
func validateAuthorizationPolicy(is *issues, ap *security.AuthorizationPolicy) {
	validateTargetRefs(is, "AuthorizationPolicy", true, ap.GetSelector(), ap.GetTargetRef(), ap.GetTargetRefs())
	validateSelector(is, "spec.selector", ap.GetSelector())
	switch {
	case ap.GetAction() == security.AuthorizationPolicy_CUSTOM:
		validateCustomPolicy(is, ap)
	case ap.GetProvider() != nil:
		is.errf("spec.provider", "provider is for action CUSTOM only, and this policy's action is %s", ap.GetAction())
	}
	if ap.GetAction() == security.AuthorizationPolicy_DENY && len(ap.GetRules()) == 0 {
		is.errf("spec.rules", "a DENY policy without rules never matches, so it denies nothing; add an empty rule {} to deny every request")
	}
	checkMaxItems(is, "spec.rules", "rules", len(ap.GetRules()), 512)
	for i, r := range ap.GetRules() {
		validateAuthzRule(is, fmt.Sprintf("spec.rules[%d]", i), r)
		if r != nil && ap.GetAction() == security.AuthorizationPolicy_DENY {
			warnDenyHTTPOnly(is, fmt.Sprintf("spec.rules[%d]", i), r)
		}
	}
}

// validateCustomPolicy is Istio's check of a CUSTOM policy: rules (an
// empty rule {} for every request), a provider name, and none of the
// conditions on the peer's identity or the request's JWT, which the
// shadow rules that decide when to call the provider run too early to
// see. Whether the provider exists is the mesh config's, checked when the
// proxies' configuration is built (an unknown one fails closed).
func validateCustomPolicy(is *issues, ap *security.AuthorizationPolicy) {
	if ap.GetRules() == nil {
		is.errf("spec.rules", "a CUSTOM policy without rules is never triggered; add an empty rule {} to check every request")
	} else if ap.GetProvider().GetName() == "" {
		is.errf("spec.provider.name", "a CUSTOM policy names the extension provider (meshConfig.extensionProviders) that decides its requests")
	}
	for i, r := range ap.GetRules() {
		for j, f := range r.GetFrom() {
			src := f.GetSource()
			for _, fl := range []struct {
				name string
				set  bool
			}{
				{"namespaces", len(src.GetNamespaces()) > 0}, {"notNamespaces", len(src.GetNotNamespaces()) > 0},
				{"serviceAccounts", len(src.GetServiceAccounts()) > 0}, {"notServiceAccounts", len(src.GetNotServiceAccounts()) > 0},
				{"trustDomains", len(src.GetTrustDomains()) > 0}, {"notTrustDomains", len(src.GetNotTrustDomains()) > 0},
				{"principals", len(src.GetPrincipals()) > 0}, {"notPrincipals", len(src.GetNotPrincipals()) > 0},
				{"requestPrincipals", len(src.GetRequestPrincipals()) > 0}, {"notRequestPrincipals", len(src.GetNotRequestPrincipals()) > 0},
			} {
				if fl.set {
					is.errf(fmt.Sprintf("spec.rules[%d].from[%d].source.%s", i, j, fl.name), "%s is not supported with action CUSTOM (as in Istio)", fl.name)
				}
			}
		}
		for j, w := range r.GetWhen() {
			switch k := w.GetKey(); {
			case k == attrKeySourceNamespace, k == attrKeySourceServiceAccount, k == attrKeySourceTrustDomain, k == attrKeySourcePrincipal,
				strings.HasPrefix(k, "request.auth."):
				is.errf(fmt.Sprintf("spec.rules[%d].when[%d].key", i, j), "%s is not supported with action CUSTOM (as in Istio)", k)
			}
		}
	}
}

const (
	attrKeySourceNamespace      = "source.namespace"
	attrKeySourceServiceAccount = "source.serviceAccount"
	attrKeySourceTrustDomain    = "source.trustDomain"
	attrKeySourcePrincipal      = "source.principal"
)

func validateAuthzRule(is *issues, path string, r *security.Rule) {
	if r == nil {
		is.errf(path, "a rule must not be null")
		return
	}
	checkMaxItems(is, path+".from", "sources", len(r.GetFrom()), 512)
	for j, f := range r.GetFrom() {
		fp := fmt.Sprintf("%s.from[%d]", path, j)
		if f.GetSource() == nil {
			is.errf(fp+".source", "from needs a source")
			continue
		}
		validateSource(is, fp+".source", f.GetSource())
	}
	for j, t := range r.GetTo() {
		tp := fmt.Sprintf("%s.to[%d]", path, j)
		if t.GetOperation() == nil {
			is.errf(tp+".operation", "to needs an operation")
			continue
		}
		validateOperation(is, tp+".operation", t.GetOperation())
	}
	for j, c := range r.GetWhen() {
		validateCondition(is, fmt.Sprintf("%s.when[%d]", path, j), c)
	}
}

// warnDenyHTTPOnly is Istio's warning for a DENY rule whose from or to
// carries only HTTP attributes: on a TCP port (a captured sidecar's), the
// rule is generated without them and so refuses every connection.
func warnDenyHTTPOnly(is *issues, path string, r *security.Rule) {
	tcpFrom, tcpTo := false, false
	for _, f := range r.GetFrom() {
		s := f.GetSource()
		if s.GetPrincipals() != nil || s.GetNotPrincipals() != nil || s.GetIpBlocks() != nil || s.GetNotIpBlocks() != nil ||
			s.GetNamespaces() != nil || s.GetNotNamespaces() != nil || s.GetRemoteIpBlocks() != nil || s.GetNotRemoteIpBlocks() != nil ||
			s.GetServiceAccounts() != nil || s.GetNotServiceAccounts() != nil {
			tcpFrom = true
		}
	}
	for _, t := range r.GetTo() {
		if t.GetOperation().GetPorts() != nil || t.GetOperation().GetNotPorts() != nil {
			tcpTo = true
		}
	}
	from, to := len(r.GetFrom()) > 0, len(r.GetTo()) > 0
	if (from && !to && !tcpFrom) || (to && !tcpTo) {
		is.warnf(path, "this DENY rule uses only HTTP attributes, so it denies every connection to the TCP ports of the workloads it selects (HTTP attributes cannot match a TCP connection); name the ports it is for (to.operation.ports)")
	}
}

// field is one list of a source or operation, by JSON name.
type field struct {
	name   string
	values []string
}

func validateSource(is *issues, path string, s *security.Source) {
	fields := []field{
		{"principals", s.GetPrincipals()}, {"notPrincipals", s.GetNotPrincipals()},
		{"requestPrincipals", s.GetRequestPrincipals()}, {"notRequestPrincipals", s.GetNotRequestPrincipals()},
		{"namespaces", s.GetNamespaces()}, {"notNamespaces", s.GetNotNamespaces()},
		{"ipBlocks", s.GetIpBlocks()}, {"notIpBlocks", s.GetNotIpBlocks()},
		{"remoteIpBlocks", s.GetRemoteIpBlocks()}, {"notRemoteIpBlocks", s.GetNotRemoteIpBlocks()},
		{"serviceAccounts", s.GetServiceAccounts()}, {"notServiceAccounts", s.GetNotServiceAccounts()},
		{"trustDomains", s.GetTrustDomains()}, {"notTrustDomains", s.GetNotTrustDomains()},
	}
	total := 0
	for _, f := range fields {
		total += len(f.values)
	}
	if total == 0 {
		is.errf(path, "source is empty; set at least one of principals, requestPrincipals, namespaces, ipBlocks, remoteIpBlocks, serviceAccounts, trustDomains (or their not* forms)")
		return
	}
	if len(s.GetPrincipals())+len(s.GetNotPrincipals())+len(s.GetNamespaces())+len(s.GetNotNamespaces()) > 0 &&
		len(s.GetServiceAccounts())+len(s.GetNotServiceAccounts()) > 0 {
		is.errf(path, "serviceAccounts cannot be combined with principals or namespaces")
	}
	for _, f := range fields {
		fp := path + "." + f.name
		for k, v := range f.values {
			vp := fmt.Sprintf("%s[%d]", fp, k)
			if v == "" {
				is.errf(vp, "empty value not allowed in %s", f.name)
				continue
			}
			switch f.name {
			case "ipBlocks", "notIpBlocks", "remoteIpBlocks", "notRemoteIpBlocks":
				if err := checkAuthzIP(v); err != nil {
					is.errf(vp, "%v", err)
				}
			case "serviceAccounts", "notServiceAccounts":
				if err := checkServiceAccount(v); err != nil {
					is.errf(vp, "%v", err)
				}
			case "trustDomains", "notTrustDomains":
				if err := checkTrustDomain(v); err != nil {
					is.errf(vp, "%v", err)
				}
			case "principals", "notPrincipals":
				if msg := principalWarning(v); msg != "" {
					is.warnf(vp, "%s", msg)
				}
			}
		}
		if strings.HasSuffix(f.name, "erviceAccounts") {
			checkMaxItems(is, fp, "service accounts", len(f.values), 16)
		}
	}
}

// checkAuthzIP is Istio's ValidateIPs for one value: an address or CIDR.
func checkAuthzIP(v string) error {
	if strings.Contains(v, "/") {
		if err := checkIPSubnet(v); err != nil {
			return fmt.Errorf("bad CIDR range %q (want e.g. 10.0.0.0/16)", v)
		}
		return nil
	}
	if !isIP(v) {
		return fmt.Errorf("bad IP address %q", v)
	}
	return nil
}

// checkServiceAccount is Istio's CheckServiceAccount for one value.
func checkServiceAccount(v string) error {
	if strings.Contains(v, "*") {
		return fmt.Errorf("wildcards are not allowed in service accounts (%q)", v)
	}
	if len(v) > 320 {
		return fmt.Errorf("service account %q is longer than 320 characters", v)
	}
	ns, sa, scoped := strings.Cut(v, "/")
	switch {
	case strings.Count(v, "/") > 1, scoped && (ns == "" || sa == ""):
		return fmt.Errorf("service account %q: want <serviceAccount> or <namespace>/<serviceAccount>", v)
	}
	return nil
}

// checkWildcard is Istio's CheckWildcardValues for one non-empty value:
// at most one '*', at the start or the end.
func checkWildcard(v string) error {
	switch n := strings.Count(v, "*"); {
	case n > 1:
		return fmt.Errorf("at most one '*' is allowed (%q)", v)
	case n == 1 && v != "*" && !strings.HasPrefix(v, "*") && !strings.HasSuffix(v, "*"):
		return fmt.Errorf("'*' is allowed only at the start or the end (%q)", v)
	}
	return nil
}

// checkTrustDomain is Istio's CheckTrustDomainValues for one value.
func checkTrustDomain(v string) error {
	if err := checkWildcard(v); err != nil {
		return err
	}
	if strings.Contains(v, "/") {
		return fmt.Errorf("a trust domain must not contain '/' (%q)", v)
	}
	return nil
}

// principalWarning says why a principal, valid for Istio, probably never
// matches: Istio adds "spiffe://" itself, and compares the rest with the
// peer's identity <trust-domain>/ns/<namespace>/sa/<service-account>.
func principalWarning(v string) string {
	if strings.HasPrefix(v, "spiffe://") {
		return fmt.Sprintf("principal %q starts with spiffe://, which Istio adds itself: it matches spiffe://spiffe://..., that is never; write %q", v, strings.TrimPrefix(v, "spiffe://"))
	}
	if strings.Contains(v, "*") {
		if err := checkWildcard(v); err != nil {
			return fmt.Sprintf("principal %q: '*' matches only as the whole value, a prefix or a suffix; elsewhere it is a literal '*' and the principal never matches", v)
		}
		return ""
	}
	parts := strings.Split(v, "/")
	if len(parts) != 5 || parts[0] == "" || parts[1] != "ns" || parts[2] == "" || parts[3] != "sa" || parts[4] == "" {
		return fmt.Sprintf("principal %q is not a workload identity <trust-domain>/ns/<namespace>/sa/<service-account> (e.g. cluster.local/ns/default/sa/sleep), so no peer certificate matches it exactly", v)
	}
	return ""
}

func validateOperation(is *issues, path string, o *security.Operation) {
	fields := []field{
		{"hosts", o.GetHosts()}, {"notHosts", o.GetNotHosts()},
		{"ports", o.GetPorts()}, {"notPorts", o.GetNotPorts()},
		{"methods", o.GetMethods()}, {"notMethods", o.GetNotMethods()},
		{"paths", o.GetPaths()}, {"notPaths", o.GetNotPaths()},
	}
	total := 0
	for _, f := range fields {
		total += len(f.values)
	}
	if total == 0 {
		is.errf(path, "operation is empty; set at least one of hosts, ports, methods, paths (or their not* forms)")
		return
	}
	for _, f := range fields {
		for k, v := range f.values {
			vp := fmt.Sprintf("%s.%s[%d]", path, f.name, k)
			if v == "" {
				is.errf(vp, "empty value not allowed in %s", f.name)
				continue
			}
			switch f.name {
			case "ports", "notPorts":
				if err := checkAuthzPort(v); err != nil {
					is.errf(vp, "%v", err)
				}
			case "paths", "notPaths":
				if err := checkPathTemplate(v); err != nil {
					is.errf(vp, "%v", err)
				} else if !containsPathTemplate(v) && strings.Contains(strings.Trim(v, "*"), "*") {
					is.warnf(vp, "path %q: '*' matches only at the start or the end of a path (/api/*, *.png); in the middle it is a literal '*', so this path almost surely never matches (use the templates {*} for one segment or {**} for several: /api/{*}/info)", v)
				}
			case "methods", "notMethods":
				if v != "*" && strings.ToUpper(v) != v {
					is.warnf(vp, "method %q is compared with the request's method exactly, and methods are upper case: it never matches (write %q)", v, strings.ToUpper(v))
				}
			}
		}
	}
}

// checkAuthzPort is Istio's ValidatePorts for one value.
func checkAuthzPort(v string) error {
	p, err := strconv.ParseUint(v, 10, 32)
	if err != nil || p > 65535 {
		return fmt.Errorf("bad port %q: want a number 0-65535", v)
	}
	return nil
}

const (
	matchOneTemplate = "{*}"
	matchAnyTemplate = "{**}"
)

var pathLiteralRE = regexp.MustCompile(`^[a-zA-Z0-9-._~%!$&'()+,;:@=]+$`)

func containsPathTemplate(v string) bool {
	return strings.Contains(v, matchOneTemplate) || strings.Contains(v, matchAnyTemplate)
}

// checkPathTemplate is Istio's CheckValidPathTemplate for one path: {*}
// and {**} are whole segments, {**} is the last operator, no other braces,
// and with a template every segment is an RFC 3986 literal.
func checkPathTemplate(p string) error {
	tmpl := containsPathTemplate(p)
	anySeen := false
	for _, seg := range strings.Split(strings.Trim(p, "/"), "/") {
		switch {
		case seg == matchOneTemplate && !anySeen:
			continue
		case seg == matchAnyTemplate && !anySeen:
			anySeen = true
			continue
		case (seg == matchOneTemplate || seg == matchAnyTemplate) && anySeen:
			return fmt.Errorf("path %q: {**} must be the last operator of the template", p)
		case strings.ContainsAny(seg, "{}"):
			return fmt.Errorf("path %q: '{' and '}' are allowed only as the whole-segment templates {*} and {**}", p)
		case tmpl && !pathLiteralRE.MatchString(seg):
			return fmt.Errorf("path %q: segment %q is not a valid path literal", p, seg)
		}
	}
	return nil
}

// validateCondition is Istio's checks of a when condition: a key, values
// or notValues, and ValidateAttribute on each.
func validateCondition(is *issues, path string, c *security.Condition) {
	if c == nil {
		is.errf(path, "a condition must not be null")
		return
	}
	key := c.GetKey()
	if key == "" {
		is.errf(path+".key", "key is required")
		return
	}
	if len(c.GetValues()) == 0 && len(c.GetNotValues()) == 0 {
		is.errf(path, "at least one of values or notValues must be set for key %s", key)
		return
	}
	if err := checkAttributeKey(key); err != nil {
		is.errf(path+".key", "%v", err)
		return
	}
	for _, f := range []field{{"values", c.GetValues()}, {"notValues", c.GetNotValues()}} {
		for k, v := range f.values {
			vp := fmt.Sprintf("%s.%s[%d]", path, f.name, k)
			if err := checkAttributeValue(key, v); err != nil {
				is.errf(vp, "%v", err)
			} else if key == "source.principal" {
				if msg := principalWarning(v); msg != "" {
					is.warnf(vp, "%s", msg)
				}
			}
		}
	}
}

// attributeKeys are the when keys Istio knows, for suggestions.
var attributeKeys = []string{
	"request.headers[]", "source.ip", "remote.ip", "source.namespace", "source.serviceAccount",
	"source.principal", "source.trustDomain", "request.auth.principal", "request.auth.audiences",
	"request.auth.presenter", "request.auth.claims[]", "destination.ip", "destination.port",
	"connection.sni", "experimental.envoy.filters.*[]",
}

// checkAttributeKey is the key half of Istio's ValidateAttribute.
func checkAttributeKey(key string) error {
	switch {
	case strings.HasPrefix(key, "request.headers"), strings.HasPrefix(key, "request.auth.claims"),
		strings.HasPrefix(key, "experimental.envoy.filters."):
		open := strings.Index(key, "[")
		if strings.HasSuffix(key, "]") && open > 0 && open < len(key)-2 {
			return nil
		}
		name := key
		if open > 0 {
			name = key[:open]
		}
		return fmt.Errorf("bad key %q: want the form %s[<name>]", key, name)
	case key == "source.ip", key == "remote.ip", key == "source.namespace", key == "source.serviceAccount",
		key == "source.principal", key == "source.trustDomain", key == "request.auth.principal",
		key == "request.auth.audiences", key == "request.auth.presenter", key == "destination.ip",
		key == "destination.port", key == "connection.sni":
		return nil
	case key == "destination.namespace":
		return fmt.Errorf("attribute %s is replaced by the policy's metadata.namespace", key)
	case strings.HasPrefix(key, "destination.labels"):
		return fmt.Errorf("attribute %s is replaced by the workload selector", key)
	case key == "destination.name", key == "destination.user":
		return fmt.Errorf("attribute %s is deprecated (v1alpha1 only)", key)
	}
	return fmt.Errorf("unknown attribute %q%s; known: %s", key, suggestAttribute(key), strings.Join(attributeKeys, ", "))
}

// suggestAttribute returns "; did you mean X?" for a likely misspelling of
// a known when key, keeping what is in brackets.
func suggestAttribute(key string) string {
	base, rest := key, ""
	if i := strings.Index(key, "["); i >= 0 {
		base, rest = key[:i], key[i:]
	}
	names := make([]string, 0, len(attributeKeys))
	for _, k := range attributeKeys {
		names = append(names, strings.TrimSuffix(k, "[]"))
	}
	best := suggestOf(base, names)
	if best == "" {
		return ""
	}
	name := strings.TrimSuffix(strings.TrimPrefix(best, `; did you mean "`), `"?`)
	if slices.Contains(attributeKeys, name+"[]") && rest == "" {
		rest = "[<name>]"
	}
	return fmt.Sprintf("; did you mean %q?", name+rest)
}

// checkAttributeValue is the value half of Istio's ValidateAttribute.
func checkAttributeValue(key, v string) error {
	if v == "" {
		return fmt.Errorf("empty value not allowed for key %s", key)
	}
	switch key {
	case "source.ip", "remote.ip", "destination.ip":
		return checkAuthzIP(v)
	case "source.serviceAccount":
		return checkServiceAccount(v)
	case "source.trustDomain":
		return checkWildcard(v)
	case "destination.port":
		return checkAuthzPort(v)
	}
	return nil
}

// validateRequestAuthentication is Istio's ValidateRequestAuthentication.
func validateRequestAuthentication(is *issues, ra *security.RequestAuthentication) {
	validateTargetRefs(is, "RequestAuthentication", true, ra.GetSelector(), ra.GetTargetRef(), ra.GetTargetRefs())
	validateSelector(is, "spec.selector", ra.GetSelector())
	checkMaxItems(is, "spec.jwtRules", "JWT rules", len(ra.GetJwtRules()), 4096)
	for i, r := range ra.GetJwtRules() {
		validateJWTRule(is, fmt.Sprintf("spec.jwtRules[%d]", i), r)
	}
}

// headerNameRE is the CRD's pattern for outputClaimToHeaders[].header.
var headerNameRE = regexp.MustCompile(`^[-_A-Za-z0-9]+$`)

// validateJWTRule is Istio's validateJwtRule and warnPrivateJwksKeys, the
// CRD's rules, and Weft's rule on where keys may be fetched from
// (jwks.CheckURL).
func validateJWTRule(is *issues, path string, r *security.JWTRule) {
	if r == nil {
		is.errf(path, "a JWT rule must not be null")
		return
	}
	for i, a := range r.GetAudiences() {
		if a == "" {
			is.errf(fmt.Sprintf("%s.audiences[%d]", path, i), "an audience must not be empty")
		}
	}
	if r.GetIssuer() == "" && r.GetJwksUri() == "" {
		is.errf(path+".issuer", "issuer is required (or jwksUri): a JWT rule names the issuer whose tokens it verifies")
	}
	if r.GetJwksUri() != "" && r.GetJwks() != "" {
		is.errf(path+".jwks", "jwks and jwksUri are mutually exclusive: give the keys inline or where to fetch them, not both")
	}
	if u := r.GetJwksUri(); u != "" {
		checkMaxLen(is, path+".jwksUri", "jwksUri", u, 2048)
		if err := jwks.CheckURL(u); err != nil {
			is.errf(path+".jwksUri", "%v", err)
		}
		if r.GetIssuer() == "" {
			is.warnf(path+".issuer", "without an issuer, a token of any issuer signed by the keys at %s is accepted", u)
		}
	}
	if r.GetJwksUri() == "" && r.GetJwks() == "" && r.GetIssuer() != "" {
		// Istio then discovers the keys at <issuer>/.well-known/openid-configuration.
		if err := jwks.CheckURL(r.GetIssuer()); err != nil {
			is.warnf(path+".issuer", "no jwks or jwksUri, so the keys are looked up by OpenID discovery at the issuer, and issuer %q is not a URL Weft fetches from (%v): every token of this issuer is rejected; set jwksUri or jwks", r.GetIssuer(), err)
		}
	}
	if k := r.GetJwks(); k != "" {
		keys, err := jwks.Parse([]byte(k))
		if err != nil {
			is.errf(path+".jwks", "invalid jwks: %v", err)
		}
		for i, key := range keys {
			if key.Private {
				is.warnf(path+".jwks", "key %d carries private key material; verification needs public keys only, and the private part is sent to every proxy", i)
			}
		}
	}
	for i, h := range r.GetFromHeaders() {
		hp := fmt.Sprintf("%s.fromHeaders[%d]", path, i)
		switch {
		case h == nil || h.GetName() == "":
			is.errf(hp+".name", "a header name is required")
		case !isToken(h.GetName()):
			is.errf(hp+".name", "header name %q is not a valid HTTP header name (%s)", h.GetName(), tokenChars)
		}
	}
	for i, p := range r.GetFromParams() {
		if p == "" {
			is.errf(fmt.Sprintf("%s.fromParams[%d]", path, i), "a query parameter name must not be empty")
		}
	}
	for i, c := range r.GetFromCookies() {
		if c == "" {
			is.errf(fmt.Sprintf("%s.fromCookies[%d]", path, i), "a cookie name must not be empty")
		}
	}
	for i, ch := range r.GetOutputClaimToHeaders() {
		cp := fmt.Sprintf("%s.outputClaimToHeaders[%d]", path, i)
		switch {
		case ch == nil:
			is.errf(cp, "must not be null")
		case ch.GetClaim() == "":
			is.errf(cp+".claim", "claim is required")
		case ch.GetHeader() == "":
			is.errf(cp+".header", "header is required")
		case !headerNameRE.MatchString(ch.GetHeader()):
			is.errf(cp+".header", "header %q: letters, digits, '-' and '_' only", ch.GetHeader())
		}
	}
	if h := r.GetOutputPayloadToHeader(); h != "" && !isToken(h) {
		is.errf(path+".outputPayloadToHeader", "header name %q is not a valid HTTP header name (%s)", h, tokenChars)
	}
	validateDuration(is, path+".timeout", r.GetTimeout())
	checkMaxItems(is, path+".spaceDelimitedClaims", "claims", len(r.GetSpaceDelimitedClaims()), 64)
	for i, c := range r.GetSpaceDelimitedClaims() {
		if c == "" {
			is.errf(fmt.Sprintf("%s.spaceDelimitedClaims[%d]", path, i), "a claim name must not be empty")
		}
	}
}

// validateInDocument checks what needs more than a spec: its annotations
// (Istio's istio.io/dry-run is a boolean, on ALLOW and DENY policies
// only) and what the document wrote that the decoded spec cannot show: an
// empty list or map written out (from: [], to: [], portLevelMtls: {}),
// which Istio rejects rather than read as "not set" (an ALLOW rule with
// from: [] would otherwise admit every source).
func validateInDocument(spec any, annotations map[string]string, pos Positions) issues {
	var is issues
	written := func(path string) bool { _, ok := pos.get(path); return ok }
	switch s := spec.(type) {
	case *security.PeerAuthentication:
		if written("spec.portLevelMtls") && len(s.GetPortLevelMtls()) == 0 {
			is.errf("spec.portLevelMtls", "portLevelMtls, when set, needs at least one port")
		}
	case *security.AuthorizationPolicy:
		for i, r := range s.GetRules() {
			for _, f := range []struct {
				name string
				n    int
			}{{"from", len(r.GetFrom())}, {"to", len(r.GetTo())}} {
				p := fmt.Sprintf("spec.rules[%d].%s", i, f.name)
				if f.n == 0 && written(p) {
					is.errf(p, "%s must not be empty: leave it out to match any %s", f.name, map[string]string{"from": "source", "to": "operation"}[f.name])
				}
			}
		}
		if v, ok := annotations[annotationDryRun]; ok {
			p := "metadata.annotations." + annotationDryRun
			switch s.GetAction() {
			case security.AuthorizationPolicy_ALLOW, security.AuthorizationPolicy_DENY:
				if _, err := strconv.ParseBool(v); err != nil {
					is.errf(p, "invalid value %q: want true or false", v)
				}
			default:
				is.errf(p, "istio.io/dry-run supports actions ALLOW and DENY only, and this policy's action is %s", s.GetAction())
			}
		}
	}
	return is
}
