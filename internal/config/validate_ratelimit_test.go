package config

import (
	"fmt"
	"strings"
	"testing"
)

// TestRateLimit: a full networking.weft.dev RateLimit loads cleanly;
// every mistake is rejected (or warned about) with file, line, column,
// document, resource and field path, in exactly these words.
func TestRateLimit(t *testing.T) {
	good := `
apiVersion: networking.weft.dev/v1alpha1
kind: RateLimit
metadata: {name: reviews, namespace: shop}
spec:
  selector:
    matchLabels: {app: reviews}
  ports: [9080]
  limit: {requestsPerUnit: 100, unit: SECOND, burst: 150}
  descriptors:
  - clientIP: true
    limit: {requestsPerUnit: 10, unit: SECOND}
  - header: x-user
    value: alice
    limit: {requestsPerUnit: 1000, unit: MINUTE}
  rules:
  - name: health
    match: [{uri: {exact: /healthz}}]
  - name: search
    match:
    - uri: {prefix: /search}
      method: {exact: GET}
    limit: {requestsPerUnit: 5, unit: SECOND}
  enforcedPercent: 50
`
	snap := NewStore(testOptions()).Load(map[string][]byte{"rl.yaml": []byte(good)})
	for _, d := range snap.Diagnostics {
		t.Errorf("unexpected %s", d.Error())
	}
	if len(snap.RateLimits) != 1 {
		t.Fatalf("RateLimits = %v", snap.RateLimits)
	}
	rl := snap.RateLimits[0].Spec
	if !rl.GetDescriptors()[0].GetClientIp() || rl.GetRules()[1].GetMatch()[0].GetUri().GetPrefix() != "/search" || rl.GetEnforcedPercent() != 50 {
		t.Errorf("decoded spec = %v", rl)
	}

	const head = "apiVersion: networking.weft.dev/v1alpha1\nkind: RateLimit\nmetadata: {name: r, namespace: ns}\nspec:\n"
	for _, c := range []struct {
		name, spec string
		want       string // the whole diagnostic
		warning    bool
	}{
		{"nothing to limit", "  ports: [80]\n",
			"rl.yaml:5:3: doc 1: RateLimit ns/r: spec: nothing to limit: set limit, descriptors, global.descriptors, or rules with a limit or descriptors", false},
		{"unit missing", "  limit: {requestsPerUnit: 100}\n",
			"rl.yaml:5:10: doc 1: RateLimit ns/r: spec.limit.unit: unit is required: SECOND, MINUTE or HOUR", false},
		{"zero requests", "  limit: {requestsPerUnit: 0, unit: SECOND}\n",
			"rl.yaml:5:28: doc 1: RateLimit ns/r: spec.limit.requestsPerUnit: requestsPerUnit is required and must be at least 1", false},
		{"bad unit", "  limit: {requestsPerUnit: 1, unit: DAY}\n",
			`rl.yaml:5:37: doc 1: RateLimit ns/r: spec.limit.unit: invalid value the string "DAY"; want one of UNIT_UNSPECIFIED, SECOND, MINUTE, HOUR`, false},
		{"unknown field", "  limit: {rps: 1}\n",
			`rl.yaml:5:11: doc 1: RateLimit ns/r: spec.limit.rps: unknown field "rps"`, false},
		{"descriptor without key", "  descriptors: [{limit: {requestsPerUnit: 1, unit: SECOND}}]\n",
			"rl.yaml:5:17: doc 1: RateLimit ns/r: spec.descriptors[0]: a descriptor needs a key: clientIP: true or header: <name>", false},
		{"descriptor with two keys", "  descriptors: [{clientIP: true, header: x-a, limit: {requestsPerUnit: 1, unit: SECOND}}]\n",
			"rl.yaml:5:17: doc 1: RateLimit ns/r: spec.descriptors[0]: clientIP and header are mutually exclusive: a descriptor is keyed by one of them", false},
		{"descriptor without limit", "  descriptors: [{clientIP: true}]\n",
			"rl.yaml:5:17: doc 1: RateLimit ns/r: spec.descriptors[0].limit: a descriptor needs its own limit", false},
		{"pseudo header", "  descriptors: [{header: ':path', limit: {requestsPerUnit: 1, unit: SECOND}}]\n",
			`rl.yaml:5:26: doc 1: RateLimit ns/r: spec.descriptors[0].header: pseudo-header ":path" cannot key a descriptor; use a rule's match for :path, :method or :authority`, false},
		{"client value not an IP", "  descriptors: [{clientIP: true, value: alice, limit: {requestsPerUnit: 1, unit: SECOND}}]\n",
			`rl.yaml:5:41: doc 1: RateLimit ns/r: spec.descriptors[0].value: value "alice" is not an IP address (a clientIP descriptor's value is the client's address)`, false},
		{"duplicate descriptors", "  descriptors:\n  - {header: X-User, limit: {requestsPerUnit: 1, unit: SECOND}}\n  - {header: x-user, limit: {requestsPerUnit: 2, unit: SECOND}}\n",
			"rl.yaml:7:5: doc 1: RateLimit ns/r: spec.descriptors[1]: the same key as spec.descriptors[0]: one bucket per key", false},
		{"rule name", "  rules: [{name: Search, limit: {requestsPerUnit: 1, unit: SECOND}}]\n",
			`rl.yaml:5:18: doc 1: RateLimit ns/r: spec.rules[0].name: rule name "Search" must be lowercase letters, digits and '-' (a DNS-1123 label): it names the rule's stats`, false},
		{"rule match sourceLabels", "  rules: [{match: [{sourceLabels: {app: a}}], limit: {requestsPerUnit: 1, unit: SECOND}}]\n",
			"rl.yaml:5:35: doc 1: RateLimit ns/r: spec.rules[0].match[0].sourceLabels: sourceLabels is not supported in a RateLimit rule (use spec.ports and spec.selector to choose where it applies)", false},
		{"rule match regex", "  rules: [{match: [{uri: {regex: '('}}], limit: {requestsPerUnit: 1, unit: SECOND}}]\n",
			"rl.yaml:5:34: doc 1: RateLimit ns/r: spec.rules[0].match[0].uri.regex: ", false},
		{"enforced range", "  limit: {requestsPerUnit: 1, unit: SECOND}\n  enforcedPercent: 150\n",
			"rl.yaml:6:20: doc 1: RateLimit ns/r: spec.enforcedPercent: enforcedPercent 150 is not between 0 and 100", false},
		{"shadow and percent", "  limit: {requestsPerUnit: 1, unit: SECOND}\n  shadow: true\n  enforcedPercent: 50\n",
			"rl.yaml:7:20: doc 1: RateLimit ns/r: spec.enforcedPercent: shadow refuses no request, so enforcedPercent has no meaning with it: set one of them", false},
		{"port twice", "  limit: {requestsPerUnit: 1, unit: SECOND}\n  ports: [80, 80]\n",
			"rl.yaml:6:15: doc 1: RateLimit ns/r: spec.ports[1]: port 80 is listed twice", false},
		{"huge burst", "  limit: {requestsPerUnit: 1, unit: HOUR, burst: 4000000000}\n",
			"rl.yaml:5:50: doc 1: RateLimit ns/r: spec.limit.burst: burst 4000000000 at 1 per hour takes over 30 years to fill from empty; lower burst", false},
		{"small burst warns", "  limit: {requestsPerUnit: 100, unit: SECOND, burst: 10}\n",
			"rl.yaml:5:54: doc 1: RateLimit ns/r: spec.limit.burst: burst 10 is below requestsPerUnit 100: at most 10 requests pass at once", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			snap := NewStore(testOptions()).Load(map[string][]byte{"rl.yaml": []byte(head + c.spec)})
			var all []string
			found := false
			for _, d := range snap.Diagnostics {
				all = append(all, d.Error())
				if (d.Severity == SeverityError) != c.warning && strings.HasPrefix(d.Error(), c.want) {
					found = true
				}
			}
			kept := len(snap.RateLimits) == 1
			if !found || kept != c.warning {
				t.Errorf("want %s\n  %s\n(kept: %v); got %d RateLimits, diagnostics:\n  %s", map[bool]string{true: "the warning", false: "the error"}[c.warning], c.want, c.warning, len(snap.RateLimits), strings.Join(all, "\n  "))
			}
		})
	}
}

// TestRateLimitAPIVersion: RateLimit is read in networking.weft.dev/v1alpha1 only.
func TestRateLimitAPIVersion(t *testing.T) {
	doc := "apiVersion: networking.istio.io/v1\nkind: RateLimit\nmetadata: {name: r}\nspec: {limit: {requestsPerUnit: 1, unit: SECOND}}\n"
	snap := NewStore(testOptions()).Load(map[string][]byte{"rl.yaml": []byte(doc)})
	want := `rl.yaml:1:13: doc 1: RateLimit default/r: apiVersion: unsupported apiVersion "networking.istio.io/v1" for RateLimit (want networking.weft.dev/v1alpha1)`
	if len(snap.Diagnostics) != 1 || snap.Diagnostics[0].Error() != want {
		t.Fatalf("diagnostics = %v, want %s", snap.Diagnostics, want)
	}
}

// TestRateLimitChangeIsANewSnapshot: editing only a RateLimit makes a new
// snapshot version (the control plane pushes on it).
func TestRateLimitChangeIsANewSnapshot(t *testing.T) {
	doc := "apiVersion: networking.weft.dev/v1alpha1\nkind: RateLimit\nmetadata: {name: r}\nspec: {limit: {requestsPerUnit: %d, unit: SECOND}}\n"
	s := NewStore(testOptions())
	first := s.Load(map[string][]byte{"rl.yaml": []byte(fmt.Sprintf(doc, 1))})
	second := s.Load(map[string][]byte{"rl.yaml": []byte(fmt.Sprintf(doc, 2))})
	if second.Version == first.Version || second.RateLimits[0].Spec.GetLimit().GetRequestsPerUnit() != 2 {
		t.Errorf("versions %d then %d, limit %v: the edit was not taken", first.Version, second.Version, second.RateLimits[0].Spec.GetLimit())
	}
}
