package config

import (
	"fmt"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	networking "istio.io/api/networking/v1alpha3"
)

// VirtualService http routes, rule by rule as Istio validates them
// (pilot's validateHTTPRoute and what it calls), with Weft's additions
// where weft-proxy or Envoy's schema would refuse what Istio lets through.
// Each rule names its Istio counterpart or says why Weft is stricter; the
// full list is in docs (see validation-docs).

// maxRegexLen is Istio's limit: Envoy refuses regexes whose RE2 program
// is too large, and the length bounds the program size.
const maxRegexLen = 1024

// validateHTTPRoute checks http[i]; delegateVS is true in a VirtualService
// without hosts (a delegate).
func validateHTTPRoute(is *issues, path string, r *networking.HTTPRoute, delegateVS bool) {
	validateHTTPRouteConflicts(is, path, r, delegateVS)
	for k, m := range r.GetMatch() {
		validateMatch(is, fmt.Sprintf("%s.match[%d]", path, k), m)
	}
	validateHeaderOps(is, path+".headers", r.GetHeaders())
	validateCORS(is, path+".corsPolicy", r.GetCorsPolicy())
	validateFault(is, path+".fault", r.GetFault())
	//nolint:staticcheck // the deprecated mirrorPercent is still accepted, as by Istio
	if mp := r.GetMirrorPercent(); mp != nil {
		if mp.GetValue() > 100 {
			is.errf(path+".mirrorPercent", "mirrorPercent %d is over 100", mp.GetValue())
		}
		is.warnf(path+".mirrorPercent", "mirrorPercent is deprecated; use mirrorPercentage")
	}
	if mp := r.GetMirrorPercentage(); mp != nil && (mp.GetValue() < 0 || mp.GetValue() > 100) {
		is.errf(path+".mirrorPercentage", "percentage %v out of range 0-100", mp.GetValue())
	}
	if r.GetMirror() != nil {
		validateDestination(is, path+".mirror", r.GetMirror())
	}
	for j, m := range r.GetMirrors() {
		mp := fmt.Sprintf("%s.mirrors[%d]", path, j)
		if m.GetDestination() == nil {
			is.errf(mp+".destination", "destination is required")
			continue
		}
		validateDestination(is, mp+".destination", m.GetDestination())
		if p := m.GetPercentage(); p != nil && (p.GetValue() < 0 || p.GetValue() > 100) {
			is.errf(mp+".percentage", "percentage %v out of range 0-100", p.GetValue())
		}
	}
	validateRedirect(is, path+".redirect", r.GetRedirect(), r.GetMatch())
	validateDirectResponse(is, path+".directResponse", r.GetDirectResponse())
	validateRetries(is, path+".retries", r.GetRetries())
	validateRewrite(is, path+".rewrite", r.GetRewrite())
	validateAuthorityRewrite(is, path, r)
	validateHTTPRouteDestinations(is, path+".route", r.GetRoute())
	validateDuration(is, path+".timeout", r.GetTimeout())
}

// validateHTTPRouteConflicts is Istio's validateHTTPRouteConflict: what an
// http route may combine, for a root route (one that delegates), a route of
// a delegate VirtualService, and an ordinary route.
func validateHTTPRouteConflicts(is *issues, path string, r *networking.HTTPRoute, delegateVS bool) {
	hasRoute := len(r.GetRoute()) > 0
	if !delegateVS && r.GetDelegate() != nil {
		if r.GetRedirect() != nil {
			is.errf(path+".redirect", "a rule with delegate must not set redirect; the delegate VirtualService decides")
		}
		if hasRoute {
			is.errf(path+".route", "a rule with delegate must not set route; the delegate VirtualService decides")
		}
		is.warnf(path+".delegate", "delegation is not supported by Weft yet: this rule is ignored, and its requests go to the next rule that matches")
		return
	}
	if delegateVS && r.GetDelegate() != nil {
		is.errf(path+".delegate", "a delegate VirtualService (one without hosts) cannot delegate again")
	}
	switch {
	case r.GetRedirect() != nil:
		if hasRoute {
			is.errf(path, "route and redirect are mutually exclusive")
		}
		if r.GetFault() != nil {
			is.errf(path, "fault and redirect are mutually exclusive")
		}
		if r.GetRewrite() != nil {
			is.errf(path, "rewrite and redirect are mutually exclusive")
		}
		if r.GetDirectResponse() != nil {
			is.errf(path, "directResponse and redirect are mutually exclusive")
		}
	case r.GetDirectResponse() != nil:
		if hasRoute {
			is.errf(path, "route and directResponse are mutually exclusive")
		}
		if r.GetFault() != nil {
			is.errf(path, "fault and directResponse are mutually exclusive")
		}
		if r.GetRewrite() != nil {
			is.errf(path, "rewrite and directResponse are mutually exclusive")
		}
	case !hasRoute:
		is.errf(path, "one of route, redirect or directResponse is required")
	}
	if r.GetMirror() != nil && len(r.GetMirrors()) > 0 {
		is.errf(path+".mirrors", "mirror and mirrors are mutually exclusive; list every mirror under mirrors")
	}
}

func validateMatch(is *issues, path string, m *networking.HTTPMatchRequest) {
	if m == nil {
		return
	}
	for _, name := range sortedKeys(m.GetHeaders()) {
		hp := path + ".headers." + name
		if err := checkMatchHeaderName(name); err != nil {
			is.errf(hp, "%v", err)
		}
		if m.GetHeaders()[name] == nil {
			is.errf(hp, "header match must not be null; use {} to match when the header is present")
			continue
		}
		validateStringMatch(is, hp, m.GetHeaders()[name], false)
	}
	for _, name := range sortedKeys(m.GetWithoutHeaders()) {
		hp := path + ".withoutHeaders." + name
		if err := checkMatchHeaderName(name); err != nil {
			is.errf(hp, "%v", err)
		}
		// As in Istio, regex "*" is not RE2 here: it means "present".
		if sm := m.GetWithoutHeaders()[name]; sm.GetRegex() != "*" {
			validateStringMatch(is, hp, sm, false)
		}
	}
	validateStringMatch(is, path+".uri", m.GetUri(), true) // Envoy allows an empty path prefix
	validateStringMatch(is, path+".scheme", m.GetScheme(), false)
	validateStringMatch(is, path+".method", m.GetMethod(), false)
	validateStringMatch(is, path+".authority", m.GetAuthority(), false)
	for _, name := range sortedKeys(m.GetQueryParams()) {
		qp := path + ".queryParams." + name
		if name == "" {
			// Stricter than Istio: Envoy's schema requires a name.
			is.errf(qp, "query parameter name must not be empty")
		}
		validateStringMatch(is, qp, m.GetQueryParams()[name], false)
	}
	if p := m.GetPort(); p != 0 {
		if err := checkPort(int64(p)); err != nil {
			is.errf(path+".port", "%v", err)
		}
	}
	validateLabels(is, path+".sourceLabels", m.GetSourceLabels())
	validateGatewayNames(is, path+".gateways", m.GetGateways())
	if ns := m.GetSourceNamespace(); ns != "" && !isDNSLabel(ns) {
		is.errf(path+".sourceNamespace", "sourceNamespace %q is not a namespace name (a DNS-1123 label)", ns)
	}
}

// validateStringMatch is Istio's validateStringMatch (and, with
// emptyPrefixOK, validateStringMatchRegexp for uri): no empty prefix, and
// a regex RE2 accepts.
func validateStringMatch(is *issues, path string, sm *networking.StringMatch, emptyPrefixOK bool) {
	switch t := sm.GetMatchType().(type) {
	case *networking.StringMatch_Prefix:
		if t.Prefix == "" && !emptyPrefixOK {
			is.errf(path+".prefix", "prefix must not be empty; to match any value, match with {} (present) or leave the condition out")
		}
	case *networking.StringMatch_Regex:
		validateRegex(is, path+".regex", t.Regex)
	}
}

// validateRegex checks an RE2 expression as Istio does: not empty, at most
// 1024 characters, and valid.
func validateRegex(is *issues, path, re string) {
	switch {
	case re == "":
		is.errf(path, "regex must not be empty")
	case len(re) > maxRegexLen:
		is.errf(path, "regex is %d characters long; at most %d are allowed", len(re), maxRegexLen)
	default:
		if _, err := regexp.Compile(re); err != nil {
			is.errf(path, "invalid RE2 regex %q: %v", re, err)
		}
	}
}

// validateGatewayNames is Istio's validateGatewayNames: "mesh", a
// <namespace>/<name> reference, or a legacy FQDN (a warning).
func validateGatewayNames(is *issues, path string, names []string) {
	for i, g := range names {
		p := fmt.Sprintf("%s[%d]", path, i)
		ns, name, ok := strings.Cut(g, "/")
		if !ok {
			if strings.Contains(g, ".") {
				parts := strings.Split(g, ".")
				is.warnf(p, "gateway %q uses the legacy name.namespace form; prefer %s/%s", g, parts[1], parts[0])
			}
			if err := checkFQDN(g); err != nil {
				is.errf(p, "gateway %q: %v", g, err)
			}
			continue
		}
		if ns == "" || name == "" {
			is.errf(p, "gateway %q: want <namespace>/<name>, both non-empty", g)
			continue
		}
		if !isDNSLabel(ns) {
			is.errf(p, "gateway %q: namespace %q is not a DNS-1123 label", g, ns)
		}
		if !isDNSLabel(name) {
			is.errf(p, "gateway %q: name %q is not a DNS-1123 label", g, name)
		}
	}
}

// corsMethods are the methods Istio accepts in allowMethods.
var corsMethods = map[string]bool{
	"GET": true, "HEAD": true, "POST": true, "PUT": true, "PATCH": true,
	"DELETE": true, "CONNECT": true, "OPTIONS": true, "TRACE": true, "*": true,
}

// validateCORS is Istio's validateCORSPolicy.
func validateCORS(is *issues, path string, c *networking.CorsPolicy) {
	if c == nil {
		return
	}
	for i, o := range c.GetAllowOrigins() {
		p := fmt.Sprintf("%s.allowOrigins[%d]", path, i)
		if o.GetExact() == "" && o.GetPrefix() == "" && o.GetRegex() == "" {
			is.errf(p, "an allowOrigins entry needs a non-empty exact, prefix or regex")
			continue
		}
		if re, ok := o.GetMatchType().(*networking.StringMatch_Regex); ok {
			validateRegex(is, p+".regex", re.Regex)
		}
	}
	for i, m := range c.GetAllowMethods() {
		if !corsMethods[m] {
			is.errf(fmt.Sprintf("%s.allowMethods[%d]", path, i), "%q is not a supported method; want GET, HEAD, POST, PUT, PATCH, DELETE, CONNECT, OPTIONS, TRACE or *", m)
		}
	}
	for _, f := range []struct {
		name  string
		names []string
	}{{"allowHeaders", c.GetAllowHeaders()}, {"exposeHeaders", c.GetExposeHeaders()}} {
		for i, h := range f.names {
			if h != "*" && !isToken(h) {
				is.errf(fmt.Sprintf("%s.%s[%d]", path, f.name, i), "%q is not a valid header name (%s) or *", h, tokenChars)
			}
		}
	}
	if m := c.GetMaxAge(); m != nil {
		validateDuration(is, path+".maxAge", m)
		if m.GetNanos() != 0 {
			is.errf(path+".maxAge", "maxAge is sent in whole seconds; %v has a fraction", m.AsDuration())
		}
	}
}

// grpcStatusNames are the gRPC status names Istio accepts in a fault abort.
var grpcStatusNames = []string{
	"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
	"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
	"ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
}

// validatePercentage is Istio's validatePercentage for fault injection:
// 0, or 0.0001 (Envoy's resolution) to 100.
func validatePercentage(is *issues, path string, p *networking.Percent) {
	if p == nil {
		return
	}
	if v := p.GetValue(); v < 0 || v > 100 || (v > 0 && v < 0.0001) {
		is.errf(path, "percentage %v out of range: want 0, or 0.0001 to 100", v)
	}
}

// validateHTTPStatus is Istio's validateHTTPStatus, one code stricter: 600
// passes Istio but Envoy's schema and weft-proxy refuse it.
func validateHTTPStatus(is *issues, path string, code int64) {
	if code < 200 || code > 599 {
		is.errf(path, "HTTP status %d out of range 200-599", code)
	}
}

// validateFault is Istio's validateHTTPFaultInjection.
func validateFault(is *issues, path string, f *networking.HTTPFaultInjection) {
	if f == nil {
		return
	}
	if f.GetAbort() == nil && f.GetDelay() == nil {
		is.errf(path, "fault needs an abort, a delay, or both")
	}
	if a := f.GetAbort(); a != nil {
		validatePercentage(is, path+".abort.percentage", a.GetPercentage())
		switch t := a.GetErrorType().(type) {
		case *networking.HTTPFaultInjection_Abort_HttpStatus:
			validateHTTPStatus(is, path+".abort.httpStatus", int64(t.HttpStatus))
		case *networking.HTTPFaultInjection_Abort_GrpcStatus:
			known := false
			for _, n := range grpcStatusNames {
				known = known || n == t.GrpcStatus
			}
			if !known {
				is.errf(path+".abort.grpcStatus", "unknown gRPC status %q; want one of %s", t.GrpcStatus, strings.Join(grpcStatusNames, ", "))
			}
		case *networking.HTTPFaultInjection_Abort_Http2Error:
			is.errf(path+".abort.http2Error", "http2Error aborts are not supported (by Istio either); use httpStatus or grpcStatus")
		default:
			is.warnf(path+".abort", "abort has no httpStatus or grpcStatus, so nothing is aborted")
		}
	}
	if d := f.GetDelay(); d != nil {
		validatePercentage(is, path+".delay.percentage", d.GetPercentage())
		//nolint:staticcheck // the deprecated percent is still honoured
		if p := d.GetPercent(); p < 0 || p > 100 {
			// Stricter than Istio, which does not check it: Envoy reads it
			// as a share of 100.
			is.errf(path+".delay.percent", "percent %d out of range 0-100", p)
		}
		switch t := d.GetHttpDelayType().(type) {
		case *networking.HTTPFaultInjection_Delay_FixedDelay:
			validateDuration(is, path+".delay.fixedDelay", t.FixedDelay)
		case *networking.HTTPFaultInjection_Delay_ExponentialDelay:
			validateDuration(is, path+".delay.exponentialDelay", t.ExponentialDelay)
			is.errf(path+".delay.exponentialDelay", "exponentialDelay is not supported (by Istio either); use fixedDelay")
		default:
			is.warnf(path+".delay", "delay has no fixedDelay, so nothing is delayed")
		}
	}
}

// retryConditions are the retryOn conditions Istio accepts: Envoy's
// x-envoy-retry-on and x-envoy-retry-grpc-on names. proxySupported says
// whether weft-proxy acts on it.
var retryConditions = []struct {
	name           string
	proxySupported bool
}{
	{"5xx", true}, {"gateway-error", true}, {"reset", true}, {"reset-before-request", true},
	{"connect-failure", true}, {"retriable-4xx", true}, {"refused-stream", true},
	{"retriable-status-codes", true}, {"retriable-headers", false}, {"envoy-ratelimited", true},
	{"http3-post-connect-failure", false},
	{"cancelled", true}, {"deadline-exceeded", true}, {"internal", true},
	{"resource-exhausted", true}, {"unavailable", true},
}

func retryConditionNames() string {
	names := make([]string, len(retryConditions))
	for i, c := range retryConditions {
		names[i] = c.name
	}
	return strings.Join(names, ", ")
}

// validateRetries is Istio's ValidateHTTPRetry, and a warning for the
// conditions weft-proxy accepts but never acts on.
func validateRetries(is *issues, path string, r *networking.HTTPRetry) {
	if r == nil {
		return
	}
	if r.GetAttempts() < 0 {
		is.errf(path+".attempts", "attempts %d must not be negative", r.GetAttempts())
	}
	if r.GetAttempts() == 0 && (r.GetPerTryTimeout() != nil || r.GetRetryOn() != "" || r.GetRetryRemoteLocalities() != nil) {
		is.errf(path, "attempts: 0 disables retries, so perTryTimeout, retryOn and retryRemoteLocalities would do nothing; remove them or set attempts")
	}
	validateDuration(is, path+".perTryTimeout", r.GetPerTryTimeout())
	if on := r.GetRetryOn(); on != "" {
		for _, cond := range strings.Split(on, ",") {
			if n, err := strconv.Atoi(cond); err == nil && statusText(n) {
				continue
			}
			known, supported := false, false
			for _, c := range retryConditions {
				if c.name == cond {
					known, supported = true, c.proxySupported
				}
			}
			switch {
			case !known && strings.TrimSpace(cond) != cond:
				is.errf(path+".retryOn", "unknown condition %q: remove the spaces around commas; want a comma list of %s, or HTTP status codes such as 503", cond, retryConditionNames())
			case !known:
				is.errf(path+".retryOn", "unknown condition %q; want a comma list of %s, or HTTP status codes such as 503", cond, retryConditionNames())
			case !supported:
				is.warnf(path+".retryOn", "weft-proxy does not implement the retry condition %q; it never triggers a retry", cond)
			}
		}
	}
	validateDuration(is, path+".backoff", r.GetBackoff())
}

// statusText reports whether n is an HTTP status code, as Istio's
// net/http.StatusText test.
func statusText(n int) bool { return http.StatusText(n) != "" }

// checkOneLine reports a value Envoy's schema refuses in paths and host
// names (HTTP_HEADER_VALUE): a NUL, CR or LF.
func checkOneLine(is *issues, path, what, s string) {
	if strings.ContainsAny(s, "\x00\r\n") {
		is.errf(path, "%s %q contains a line break or NUL; it must be one line", what, s)
	}
}

// validateRedirect is Istio's validateHTTPRedirect, with the redirect
// codes narrowed to those Envoy can send.
func validateRedirect(is *issues, path string, rd *networking.HTTPRedirect, matches []*networking.HTTPMatchRequest) {
	if rd == nil {
		return
	}
	if rd.GetUri() != "" && rd.GetPrefixRewrite() != "" {
		is.errf(path, "uri and prefixRewrite are mutually exclusive")
	}
	if rd.GetPrefixRewrite() != "" {
		for k, m := range matches {
			if _, prefix := m.GetUri().GetMatchType().(*networking.StringMatch_Prefix); m.GetUri() != nil && !prefix {
				is.errf(path+".prefixRewrite", "prefixRewrite needs every uri match to be a prefix match; match[%d].uri is not", k)
			}
		}
	}
	if rd.GetUri() == "" && rd.GetPrefixRewrite() == "" && rd.GetAuthority() == "" && rd.GetRedirectPort() == nil && rd.GetScheme() == "" {
		is.errf(path, "a redirect must change at least one of uri, prefixRewrite, authority, scheme or port")
	}
	switch c := rd.GetRedirectCode(); c {
	case 0, 301, 302, 303, 307, 308:
	default:
		// Istio accepts any 3xx; Envoy can send only these five, and
		// anything else would silently become 301.
		is.errf(path+".redirectCode", "redirect code %d is not one of 301, 302, 303, 307, 308", c)
	}
	if s := rd.GetScheme(); s != "" && s != "http" && s != "https" {
		is.errf(path+".scheme", "scheme %q: want http or https", s)
	}
	if p := rd.GetPort(); p > 0 {
		if err := checkPort(int64(p)); err != nil {
			is.errf(path+".port", "%v", err)
		}
	}
	checkOneLine(is, path+".uri", "uri", rd.GetUri())
	checkOneLine(is, path+".prefixRewrite", "prefixRewrite", rd.GetPrefixRewrite())
	checkOneLine(is, path+".authority", "authority", rd.GetAuthority())
}

// Istio's limits on direct response bodies, which are held in every
// proxy's route table.
const (
	directBodyWarn = 100 << 10
	directBodyMax  = 1 << 20
)

// validateDirectResponse is Istio's validateHTTPDirectResponse.
func validateDirectResponse(is *issues, path string, d *networking.HTTPDirectResponse) {
	if d == nil {
		return
	}
	size := len(d.GetBody().GetString_()) + len(d.GetBody().GetBytes())
	switch {
	case size > directBodyMax:
		is.errf(path+".body", "body is %d bytes; at most 1 MiB is allowed (it is sent to every proxy)", size)
	case size > directBodyWarn:
		is.warnf(path+".body", "body is %d bytes; bodies over 100 KiB weigh on every proxy's configuration", size)
	}
	validateHTTPStatus(is, path+".status", int64(d.GetStatus()))
}

// validateRewrite is Istio's validateHTTPRewrite, plus what Envoy checks of
// a regex rewrite's substitution and of path and host values.
func validateRewrite(is *issues, path string, rw *networking.HTTPRewrite) {
	if rw == nil {
		return
	}
	rr := rw.GetUriRegexRewrite()
	if rw.GetUri() != "" && rr != nil {
		is.errf(path, "uri and uriRegexRewrite are mutually exclusive")
	}
	if rw.GetUri() == "" && rr == nil && rw.GetAuthority() == "" {
		is.errf(path, "a rewrite needs uri, uriRegexRewrite or authority")
	}
	checkOneLine(is, path+".uri", "uri", rw.GetUri())
	checkOneLine(is, path+".authority", "authority", rw.GetAuthority())
	if rr == nil {
		return
	}
	rp := path + ".uriRegexRewrite"
	if rr.GetMatch() == "" || rr.GetRewrite() == "" {
		is.errf(rp, "uriRegexRewrite needs both match and rewrite")
	}
	if rr.GetMatch() == "" {
		return
	}
	validateRegex(is, rp+".match", rr.GetMatch())
	re, err := regexp.Compile(rr.GetMatch())
	if err != nil {
		return
	}
	if err := checkRE2Substitution(rr.GetRewrite(), re.NumSubexp()); err != nil {
		is.errf(rp+".rewrite", "%v", err)
	}
	checkOneLine(is, rp+".rewrite", "rewrite", rr.GetRewrite())
}

// checkRE2Substitution is RE2's CheckRewriteString, which Envoy applies:
// \0-\9 refer to existing groups, \\ is a backslash, nothing else follows
// a backslash.
func checkRE2Substitution(s string, groups int) error {
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			continue
		}
		if i+1 == len(s) {
			return fmt.Errorf("rewrite %q ends with a lone backslash", s)
		}
		i++
		switch c := s[i]; {
		case c == '\\':
		case c >= '0' && c <= '9':
			if int(c-'0') > groups {
				return fmt.Errorf("rewrite %q refers to group \\%c, but match has %d capture groups", s, c, groups)
			}
		default:
			return fmt.Errorf("rewrite %q has \\%c; after a backslash only a group number 0-9 or another backslash is allowed", s, c)
		}
	}
	return nil
}

// validateHTTPRouteDestinations is Istio's validateHTTPRouteDestinations:
// destinations, their headers and weights.
func validateHTTPRouteDestinations(is *issues, path string, route []*networking.HTTPRouteDestination) {
	weights := make([]int32, 0, len(route))
	for j, d := range route {
		dp := fmt.Sprintf("%s[%d]", path, j)
		if d.GetDestination() == nil {
			is.errf(dp+".destination", "destination is required")
		} else {
			validateDestination(is, dp+".destination", d.GetDestination())
		}
		validateHeaderOps(is, dp+".headers", d.GetHeaders())
		if d.GetWeight() < 0 {
			is.errf(dp+".weight", "weight %d must not be negative", d.GetWeight())
		}
		weights = append(weights, d.GetWeight())
	}
	validateTotalWeight(is, path, weights)
}

// validateRouteDestinations is Istio's validateRouteDestinations (tcp and
// tls routes).
func validateRouteDestinations(is *issues, path string, route []*networking.RouteDestination) {
	weights := make([]int32, 0, len(route))
	for j, d := range route {
		dp := fmt.Sprintf("%s[%d]", path, j)
		if d.GetDestination() == nil {
			is.errf(dp+".destination", "destination is required")
		} else {
			validateDestination(is, dp+".destination", d.GetDestination())
		}
		if d.GetWeight() < 0 {
			is.errf(dp+".weight", "weight %d must not be negative", d.GetWeight())
		}
		weights = append(weights, d.GetWeight())
	}
	validateTotalWeight(is, path, weights)
}

// validateTotalWeight applies Istio's rule: weights are relative; a single
// destination may leave its weight unset, several may not all be zero.
// Weft adds Envoy's: the total must fit in 32 bits.
func validateTotalWeight(is *issues, path string, weights []int32) {
	var total int64
	for _, w := range weights {
		total += int64(max(w, 0))
	}
	switch {
	case len(weights) > 1 && total == 0:
		is.errf(path, "the total weight of %d destinations is 0; give at least one a positive weight", len(weights))
	case total > math.MaxUint32:
		is.errf(path, "the weights add up to %d; the total must not exceed %d (use smaller numbers: weights are relative)", total, uint64(math.MaxUint32))
	}
}

// validateDestination is Istio's validateDestination.
func validateDestination(is *issues, path string, d *networking.Destination) {
	switch h := d.GetHost(); {
	case h == "":
		is.errf(path+".host", "destination host is required")
	case h == "*":
		is.errf(path+".host", "destination host cannot be \"*\"; name one service")
	default:
		if err := checkWildcardDomain(h); err != nil {
			is.errf(path+".host", "%v", err)
		}
	}
	if s := d.GetSubset(); s != "" && !isDNSLabel(s) {
		is.errf(path+".subset", "subset name %q is not a DNS-1123 label (letters, digits and '-', at most 63)", s)
	}
	if d.GetPort() != nil {
		if err := checkPort(int64(d.GetPort().GetNumber())); err != nil {
			is.errf(path+".port.number", "%v", err)
		}
	}
}
