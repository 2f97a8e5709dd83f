package config

import (
	"fmt"
	"strings"

	networking "istio.io/api/networking/v1alpha3"

	weftnet "weft.dev/weft/api/networking/v1alpha1"
)

// validateRateLimit checks a networking.weft.dev RateLimit: every bucket
// well formed, descriptors keyed by exactly one thing, rule matches as a
// VirtualService's less what has no meaning at a server-side sidecar, and
// something to limit.
func validateRateLimit(is *issues, rl *weftnet.RateLimit) {
	validateSelector(is, "spec.selector", rl.GetSelector())
	seenPort := map[uint32]bool{}
	for i, p := range rl.GetPorts() {
		path := fmt.Sprintf("spec.ports[%d]", i)
		if err := checkPort(int64(p)); err != nil {
			is.errf(path, "%v", err)
		} else if seenPort[p] {
			is.errf(path, "port %d is listed twice", p)
		}
		seenPort[p] = true
	}
	if rl.Limit != nil {
		validateLimit(is, "spec.limit", rl.GetLimit())
	}
	validateDescriptors(is, "spec.descriptors", rl.GetDescriptors())
	if rl.Global != nil {
		validateGlobalRateLimit(is, "spec.global", rl.GetGlobal())
	}
	if rl.Limit == nil && len(rl.GetDescriptors()) == 0 && !rulesLimit(rl.GetRules()) &&
		len(rl.GetGlobal().GetDescriptors()) == 0 && !globalRules(rl.GetRules()) {
		is.errf("spec", "nothing to limit: set limit, descriptors, global.descriptors, or rules with a limit or descriptors")
	}
	seenName := map[string]int{}
	for i, r := range rl.GetRules() {
		path := fmt.Sprintf("spec.rules[%d]", i)
		if n := r.GetName(); n != "" {
			if !isDNSLabel(n) || n != strings.ToLower(n) {
				is.errf(path+".name", "rule name %q must be lowercase letters, digits and '-' (a DNS-1123 label): it names the rule's stats", n)
			} else if j, dup := seenName[n]; dup {
				is.errf(path+".name", "rule name %q is also the name of spec.rules[%d]", n, j)
			}
			seenName[n] = i
		}
		for k, m := range r.GetMatch() {
			validateRateLimitMatch(is, fmt.Sprintf("%s.match[%d]", path, k), m)
		}
		if r.Limit != nil {
			validateLimit(is, path+".limit", r.GetLimit())
		}
		validateDescriptors(is, path+".descriptors", r.GetDescriptors())
		if len(r.GetGlobalDescriptors()) > 0 && rl.Global == nil {
			is.errf(path+".globalDescriptors", "globalDescriptors need spec.global (the rate limit service to send them to)")
		}
		validateGlobalDescriptors(is, path+".globalDescriptors", r.GetGlobalDescriptors())
	}
	if rl.EnforcedPercent != nil {
		if p := rl.GetEnforcedPercent(); p < 0 || p > 100 {
			is.errf("spec.enforcedPercent", "enforcedPercent %v is not between 0 and 100", p)
		}
		if rl.GetShadow() {
			is.errf("spec.enforcedPercent", "shadow refuses no request, so enforcedPercent has no meaning with it: set one of them")
		}
	}
}

func rulesLimit(rs []*weftnet.Rule) bool {
	for _, r := range rs {
		if r.Limit != nil || len(r.GetDescriptors()) > 0 {
			return true
		}
	}
	return false
}

// validateLimit checks one token bucket.
func validateLimit(is *issues, path string, l *weftnet.Limit) {
	if l.GetRequestsPerUnit() == 0 {
		is.errf(path+".requestsPerUnit", "requestsPerUnit is required and must be at least 1")
	}
	if l.GetUnit() == weftnet.Limit_UNIT_UNSPECIFIED {
		is.errf(path+".unit", "unit is required: SECOND, MINUTE or HOUR")
	}
	unit := map[weftnet.Limit_Unit]float64{weftnet.Limit_SECOND: 1, weftnet.Limit_MINUTE: 60, weftnet.Limit_HOUR: 3600}[l.GetUnit()]
	if b, r := l.GetBurst(), l.GetRequestsPerUnit(); r > 0 && float64(b)/float64(r)*unit > 1e9 {
		// weft-proxy refuses buckets that take over 100 years to fill.
		is.errf(path+".burst", "burst %d at %d per %s takes over 30 years to fill from empty; lower burst", b, r, strings.ToLower(l.GetUnit().String()))
	}
	if b := l.GetBurst(); b != 0 && b < l.GetRequestsPerUnit() && l.GetUnit() == weftnet.Limit_SECOND {
		// Not wrong, but the bucket then never holds a second's worth.
		is.warnf(path+".burst", "burst %d is below requestsPerUnit %d: at most %d requests pass at once", b, l.GetRequestsPerUnit(), b)
	}
}

// validateDescriptors checks descriptors: exactly one key each, a valid
// header name, a limit, no two alike.
func validateDescriptors(is *issues, path string, ds []*weftnet.Descriptor) {
	seen := map[string]int{}
	for i, d := range ds {
		p := fmt.Sprintf("%s[%d]", path, i)
		switch h := d.GetHeader(); {
		case d.GetClientIp() && h != "":
			is.errf(p, "clientIP and header are mutually exclusive: a descriptor is keyed by one of them")
		case !d.GetClientIp() && h == "":
			is.errf(p, "a descriptor needs a key: clientIP: true or header: <name>")
		case h != "" && isPseudoHeader(h):
			is.errf(p+".header", "pseudo-header %q cannot key a descriptor; use a rule's match for :path, :method or :authority", h)
		case h != "" && !isToken(h):
			is.errf(p+".header", "header name %q is not a valid HTTP header name (%s)", h, tokenChars)
		}
		if d.GetClientIp() && d.GetValue() != "" && !isIP(d.GetValue()) {
			is.errf(p+".value", "value %q is not an IP address (a clientIP descriptor's value is the client's address)", d.GetValue())
		}
		if err := checkHeaderValue(d.GetValue()); err != nil {
			is.errf(p+".value", "%v", err)
		}
		if d.Limit == nil {
			is.errf(p+".limit", "a descriptor needs its own limit")
		} else {
			validateLimit(is, p+".limit", d.GetLimit())
		}
		key := fmt.Sprintf("%t|%s|%s", d.GetClientIp(), strings.ToLower(d.GetHeader()), d.GetValue())
		if j, dup := seen[key]; dup {
			is.errf(p, "the same key as %s[%d]: one bucket per key", path, j)
		}
		seen[key] = i
	}
}

// validateRateLimitMatch is validateMatch for a rule, refusing the
// fields that choose clients or gateways rather than requests: a rule
// applies where its RateLimit does.
func validateRateLimitMatch(is *issues, path string, m *networking.HTTPMatchRequest) {
	validateMatch(is, path, m)
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"port", m.GetPort() != 0},
		{"sourceLabels", len(m.GetSourceLabels()) > 0},
		{"sourceNamespace", m.GetSourceNamespace() != ""},
		{"gateways", len(m.GetGateways()) > 0},
		{"statPrefix", m.GetStatPrefix() != ""},
	} {
		if f.set {
			is.errf(path+"."+f.name, "%s is not supported in a RateLimit rule (use spec.ports and spec.selector to choose where it applies)", f.name)
		}
	}
}
