package config

import (
	"strings"
	"testing"
)

// TestRateLimitGlobal: a RateLimit with a global section loads cleanly;
// each mistake in it is an error naming the field, in exactly these
// words, and the RateLimit is rejected.
func TestRateLimitGlobal(t *testing.T) {
	good := `
apiVersion: networking.weft.dev/v1alpha1
kind: RateLimit
metadata: {name: api, namespace: shop}
spec:
  selector:
    matchLabels: {app: api}
  global:
    service: ratelimit.infra.svc.cluster.local:8081
    domain: shop
    timeout: 50ms
    failureModeDeny: true
    rateLimitHeaders: true
    descriptors:
    - actions:
      - requestHeader: {header: x-user, key: user}
    - actions:
      - genericKey: {key: path, value: search}
      - clientIP: true
    - actions:
      - headerValueMatch:
          value: anonymous
          expectMatch: false
          headers: {authorization: {}}
  rules:
  - name: health
    match: [{uri: {exact: /healthz}}]
  - name: search
    match: [{uri: {prefix: /search}}]
    globalDescriptors:
    - actions: [{genericKey: {value: search}}]
`
	snap := NewStore(testOptions()).Load(map[string][]byte{"rl.yaml": []byte(good)})
	for _, d := range snap.Diagnostics {
		t.Errorf("unexpected %s", d.Error())
	}
	if len(snap.RateLimits) != 1 {
		t.Fatalf("RateLimits = %v", snap.RateLimits)
	}
	g := snap.RateLimits[0].Spec.GetGlobal()
	if g.GetDomain() != "shop" || g.GetTimeout().AsDuration().Milliseconds() != 50 || !g.GetDescriptors()[1].GetActions()[1].GetClientIp() ||
		g.GetDescriptors()[2].GetActions()[0].GetHeaderValueMatch().GetExpectMatch() {
		t.Errorf("decoded global = %v", g)
	}

	const head = "apiVersion: networking.weft.dev/v1alpha1\nkind: RateLimit\nmetadata: {name: r, namespace: ns}\nspec:\n"
	const svc = "  global:\n    service: rls.infra.svc.cluster.local:8081\n    domain: d\n"
	for _, c := range []struct{ name, spec, want string }{
		{"no service", "  global: {domain: d, descriptors: [{actions: [{clientIP: true}]}]}\n",
			"rl.yaml:5:11: doc 1: RateLimit ns/r: spec.global.service: service is required: the rate limit service as host:port, e.g. ratelimit.infra.svc.cluster.local:8081"},
		{"service without port", "  global: {service: rls.infra, domain: d, descriptors: [{actions: [{clientIP: true}]}]}\n",
			`rl.yaml:5:21: doc 1: RateLimit ns/r: spec.global.service: service "rls.infra" is not host:port (e.g. ratelimit.infra.svc.cluster.local:8081)`},
		{"service port range", "  global: {service: 'rls:70000', domain: d, descriptors: [{actions: [{clientIP: true}]}]}\n",
			`rl.yaml:5:21: doc 1: RateLimit ns/r: spec.global.service: service "rls:70000": port 70000 out of range 1-65535`},
		{"no domain", "  global: {service: 'rls:8081', descriptors: [{actions: [{clientIP: true}]}]}\n",
			"rl.yaml:5:11: doc 1: RateLimit ns/r: spec.global.domain: domain is required: the rate limit service's configuration for it decides the limits"},
		{"nothing to send", svc,
			"rl.yaml:5:3: doc 1: RateLimit ns/r: spec: nothing to limit: set limit, descriptors, global.descriptors, or rules with a limit or descriptors"},
		{"empty descriptor", svc + "    descriptors: [{}]\n",
			"rl.yaml:8:19: doc 1: RateLimit ns/r: spec.global.descriptors[0].actions: a descriptor needs at least one action (requestHeader, clientIP, genericKey or headerValueMatch)"},
		{"two actions in one", svc + "    descriptors: [{actions: [{clientIP: true, genericKey: {value: v}}]}]\n",
			"rl.yaml:8:30: doc 1: RateLimit ns/r: spec.global.descriptors[0].actions[0]: set exactly one of requestHeader, clientIP, genericKey and headerValueMatch (2 are set)"},
		{"header name", svc + "    descriptors: [{actions: [{requestHeader: {header: 'x user'}}]}]\n",
			`rl.yaml:8:55: doc 1: RateLimit ns/r: spec.global.descriptors[0].actions[0].requestHeader.header: header name "x user" is not a valid HTTP header name`},
		{"generic without value", svc + "    descriptors: [{actions: [{genericKey: {key: k}}]}]\n",
			"rl.yaml:8:43: doc 1: RateLimit ns/r: spec.global.descriptors[0].actions[0].genericKey.value: value is required"},
		{"match without headers", svc + "    descriptors: [{actions: [{headerValueMatch: {value: v}}]}]\n",
			"rl.yaml:8:49: doc 1: RateLimit ns/r: spec.global.descriptors[0].actions[0].headerValueMatch.headers: headers is required: the conditions the request's headers must meet"},
		{"bad timeout", svc + "    timeout: 0.5ms\n    descriptors: [{actions: [{clientIP: true}]}]\n",
			"rl.yaml:8:14: doc 1: RateLimit ns/r: spec.global.timeout: duration 500µs must be at least 1ms"},
		{"rule without global", "  rules: [{globalDescriptors: [{actions: [{clientIP: true}]}]}]\n",
			"rl.yaml:5:31: doc 1: RateLimit ns/r: spec.rules[0].globalDescriptors: globalDescriptors need spec.global (the rate limit service to send them to)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			snap := NewStore(testOptions()).Load(map[string][]byte{"rl.yaml": []byte(head + c.spec)})
			var all []string
			found := false
			for _, d := range snap.Diagnostics {
				all = append(all, d.Error())
				found = found || d.Severity == SeverityError && strings.HasPrefix(d.Error(), c.want)
			}
			if !found || len(snap.RateLimits) != 0 {
				t.Errorf("want the error\n  %s\ngot %d RateLimits, diagnostics:\n  %s", c.want, len(snap.RateLimits), strings.Join(all, "\n  "))
			}
		})
	}
}
