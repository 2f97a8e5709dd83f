package config

import (
	"fmt"
	"net"
	"strconv"

	weftnet "weft.dev/weft/api/networking/v1alpha1"
)

// validateGlobalRateLimit checks spec.global: a service "host:port", a
// domain, well formed descriptors, and a timeout.
func validateGlobalRateLimit(is *issues, path string, g *weftnet.Global) {
	if s := g.GetService(); s == "" {
		is.errf(path+".service", "service is required: the rate limit service as host:port, e.g. ratelimit.infra.svc.cluster.local:8081")
	} else if host, port, err := net.SplitHostPort(s); err != nil {
		is.errf(path+".service", "service %q is not host:port (e.g. ratelimit.infra.svc.cluster.local:8081)", s)
	} else if err := checkFQDN(host); err != nil {
		is.errf(path+".service", "service %q: host: %v", s, err)
	} else if n, err := strconv.ParseInt(port, 10, 64); err != nil {
		is.errf(path+".service", "service %q: port %q is not a number", s, port)
	} else if err := checkPort(n); err != nil {
		is.errf(path+".service", "service %q: %v", s, err)
	}
	if g.GetDomain() == "" {
		is.errf(path+".domain", "domain is required: the rate limit service's configuration for it decides the limits")
	}
	validateDuration(is, path+".timeout", g.GetTimeout())
	validateGlobalDescriptors(is, path+".descriptors", g.GetDescriptors())
}

// validateGlobalDescriptors checks descriptors: at least one action
// each, exactly one kind of action set in each, with what it needs.
func validateGlobalDescriptors(is *issues, path string, ds []*weftnet.GlobalDescriptor) {
	for i, d := range ds {
		p := fmt.Sprintf("%s[%d]", path, i)
		if len(d.GetActions()) == 0 {
			is.errf(p+".actions", "a descriptor needs at least one action (requestHeader, clientIP, genericKey or headerValueMatch)")
		}
		for j, a := range d.GetActions() {
			validateGlobalAction(is, fmt.Sprintf("%s.actions[%d]", p, j), a)
		}
	}
}

func validateGlobalAction(is *issues, p string, a *weftnet.GlobalAction) {
	n := 0
	for _, set := range []bool{a.RequestHeader != nil, a.GetClientIp(), a.GenericKey != nil, a.HeaderValueMatch != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		is.errf(p, "set exactly one of requestHeader, clientIP, genericKey and headerValueMatch (%d are set)", n)
		return
	}
	checkKey := func(fp, k string) {
		if k != "" && !isToken(k) {
			is.errf(fp, "key %q must be a token (%s)", k, tokenChars)
		}
	}
	switch {
	case a.RequestHeader != nil:
		h := a.GetRequestHeader().GetHeader()
		switch {
		case h == "":
			is.errf(p+".requestHeader.header", "header is required")
		case isPseudoHeader(h):
			is.errf(p+".requestHeader.header", "pseudo-header %q cannot key a descriptor; use a rule's match for :path, :method or :authority", h)
		case !isToken(h):
			is.errf(p+".requestHeader.header", "header name %q is not a valid HTTP header name (%s)", h, tokenChars)
		}
		checkKey(p+".requestHeader.key", a.GetRequestHeader().GetKey())
	case a.GenericKey != nil:
		if a.GetGenericKey().GetValue() == "" {
			is.errf(p+".genericKey.value", "value is required")
		} else if err := checkHeaderValue(a.GetGenericKey().GetValue()); err != nil {
			is.errf(p+".genericKey.value", "%v", err)
		}
		checkKey(p+".genericKey.key", a.GetGenericKey().GetKey())
	case a.HeaderValueMatch != nil:
		m := a.GetHeaderValueMatch()
		if m.GetValue() == "" {
			is.errf(p+".headerValueMatch.value", "value is required")
		} else if err := checkHeaderValue(m.GetValue()); err != nil {
			is.errf(p+".headerValueMatch.value", "%v", err)
		}
		checkKey(p+".headerValueMatch.key", m.GetKey())
		if len(m.GetHeaders()) == 0 {
			is.errf(p+".headerValueMatch.headers", "headers is required: the conditions the request's headers must meet")
		}
		for _, name := range sortedKeys(m.GetHeaders()) {
			hp := p + ".headerValueMatch.headers." + name
			if err := checkMatchHeaderName(name); err != nil {
				is.errf(hp, "%v", err)
			}
			if m.GetHeaders()[name] == nil {
				is.errf(hp, "header match must not be null; use {} to match when the header is present")
				continue
			}
			validateStringMatch(is, hp, m.GetHeaders()[name], false)
		}
	}
}

// globalRules: some rule sets global descriptors.
func globalRules(rs []*weftnet.Rule) bool {
	for _, r := range rs {
		if len(r.GetGlobalDescriptors()) > 0 {
			return true
		}
	}
	return false
}
