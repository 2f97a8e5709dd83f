package rbac

import (
	"net/http"
	"net/netip"
	"testing"
)

// These tests feed the engine RBAC filters as Istio's authorization builder
// (pilot/pkg/security/authz) writes them for real AuthorizationPolicies,
// derived by hand from the builder's rules (generator.go, matcher/*.go,
// model.go): the order of conditions, the wildcard forms, the SPIFFE
// regexes and the JWT metadata paths. Istio emits one RBAC filter per
// action, AUDIT then DENY then ALLOW; a request must pass every filter.

// chain evaluates filters in order as the HTTP filter chain would: the
// first denial stops the request.
func chain(r *Request, filters ...*Filter) (bool, string) {
	for _, f := range filters {
		if d := f.Evaluate(r); !d.Allowed {
			return false, d.Policy
		}
	}
	return true, ""
}

var (
	sleepPeer   = &Peer{URISANs: []string{"spiffe://cluster.local/ns/foo/sa/sleep"}}
	otherPeer   = &Peer{URISANs: []string{"spiffe://cluster.local/ns/bar/sa/curl"}}
	externalIP  = netip.MustParseAddr("203.0.113.7")
	internalIP  = netip.MustParseAddr("10.4.0.2")
	workloadIP  = netip.MustParseAddr("10.4.0.9")
	jwtMetadata = func(iss, sub string, claims map[string]any) DynamicMetadata {
		payload := map[string]any{"iss": iss, "sub": sub}
		for k, v := range claims {
			payload[k] = v
		}
		return DynamicMetadata{"envoy.filters.http.jwt_authn": {"payload": payload}}
	}
)

// TestIstioAllowPrincipalMethodPath:
//
//	kind: AuthorizationPolicy
//	metadata: {name: httpbin, namespace: foo}
//	spec:
//	  action: ALLOW
//	  rules:
//	  - from: [{source: {principals: ["cluster.local/ns/foo/sa/sleep"]}}]
//	    to: [{operation: {methods: ["GET", "HEAD"], paths: ["/info*", "/status/{*}"]}}]
func TestIstioAllowPrincipalMethodPath(t *testing.T) {
	allow := compileConfig(t, `
rules:
  policies:
    ns[foo]-policy[httpbin]-rule[0]:
      permissions:
      - andRules:
          rules:
          - orRules:
              rules:
              - header: {name: ":method", stringMatch: {exact: GET}}
              - header: {name: ":method", stringMatch: {exact: HEAD}}
          - orRules:
              rules:
              - urlPath: {path: {prefix: /info}}
              - uriTemplate:
                  name: uri-template
                  typedConfig:
                    '@type': type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig
                    pathTemplate: /status/*
      principals:
      - andIds:
          ids:
          - orIds:
              ids:
              - authenticated: {principalName: {exact: spiffe://cluster.local/ns/foo/sa/sleep}}
shadowRulesStatPrefix: istio_dry_run_allow_
`)
	cases := []struct {
		name string
		req  Request
		want bool
	}{
		{"sleep GET /info", Request{Method: "GET", Path: "/info", Peer: sleepPeer}, true},
		{"sleep GET /information?x", Request{Method: "GET", Path: "/information?x=1", Peer: sleepPeer}, true},
		{"sleep HEAD /status/200", Request{Method: "HEAD", Path: "/status/200", Peer: sleepPeer}, true},
		{"sleep GET /status/200/x: {*} is one segment", Request{Method: "GET", Path: "/status/200/x", Peer: sleepPeer}, false},
		{"sleep POST /info", Request{Method: "POST", Path: "/info", Peer: sleepPeer}, false},
		{"other principal", Request{Method: "GET", Path: "/info", Peer: otherPeer}, false},
		{"plaintext", Request{Method: "GET", Path: "/info"}, false},
	}
	for _, tc := range cases {
		if d := allow.Evaluate(&tc.req); d.Allowed != tc.want {
			t.Errorf("%s: Allowed = %v, want %v", tc.name, d.Allowed, tc.want)
		} else if d.Allowed && d.Policy != "ns[foo]-policy[httpbin]-rule[0]" {
			t.Errorf("%s: Policy = %q", tc.name, d.Policy)
		}
	}
}

// TestIstioDenyBeatsAllow: two policies on one workload; Istio emits the
// DENY filter before the ALLOW filter.
//
//   - metadata: {name: deny-admin, namespace: foo}
//     spec:
//     action: DENY
//     rules:
//   - from: [{source: {notNamespaces: ["foo"]}}]
//     to: [{operation: {paths: ["/admin/*"]}}]
//   - metadata: {name: allow-mesh, namespace: foo}
//     spec:
//     action: ALLOW
//     rules:
//   - from: [{source: {namespaces: ["foo", "bar"]}}]
func TestIstioDenyBeatsAllow(t *testing.T) {
	deny := compileConfig(t, `
rules:
  action: DENY
  policies:
    ns[foo]-policy[deny-admin]-rule[0]:
      permissions:
      - andRules:
          rules:
          - orRules:
              rules:
              - urlPath: {path: {prefix: /admin/}}
      principals:
      - andIds:
          ids:
          - notId:
              orIds:
                ids:
                - authenticated: {principalName: {safeRegex: {regex: .*/ns/foo/.*}}}
shadowRulesStatPrefix: istio_dry_run_allow_
`)
	allow := compileConfig(t, `
rules:
  policies:
    ns[foo]-policy[allow-mesh]-rule[0]:
      permissions:
      - andRules:
          rules:
          - any: true
      principals:
      - andIds:
          ids:
          - orIds:
              ids:
              - authenticated: {principalName: {safeRegex: {regex: .*/ns/foo/.*}}}
              - authenticated: {principalName: {safeRegex: {regex: .*/ns/bar/.*}}}
shadowRulesStatPrefix: istio_dry_run_allow_
`)
	cases := []struct {
		name       string
		req        Request
		want       bool
		wantPolicy string
	}{
		{"foo to /admin", Request{Path: "/admin/users", Peer: sleepPeer}, true, ""},
		{"bar to /admin is denied by DENY", Request{Path: "/admin/users", Peer: otherPeer}, false, "ns[foo]-policy[deny-admin]-rule[0]"},
		{"bar to /data", Request{Path: "/data", Peer: otherPeer}, true, ""},
		{"plaintext to /data is denied by ALLOW", Request{Path: "/data"}, false, ""},
		{"plaintext to /admin is denied by DENY", Request{Path: "/admin/x"}, false, "ns[foo]-policy[deny-admin]-rule[0]"},
	}
	for _, tc := range cases {
		got, policy := chain(&tc.req, deny, allow)
		if got != tc.want || policy != tc.wantPolicy {
			t.Errorf("%s: allowed=%v by %q, want %v by %q", tc.name, got, policy, tc.want, tc.wantPolicy)
		}
	}
}

// TestIstioRequestPrincipalsAndClaims: RequestAuthentication + JWT rules.
//
//	spec:
//	  action: ALLOW
//	  rules:
//	  - from: [{source: {requestPrincipals: ["https://issuer.example/*"]}}]
//	    when:
//	    - key: request.auth.claims[groups]
//	      values: ["admin"]
//	    - key: request.auth.claims[org][team]
//	      values: ["blue*"]
func TestIstioRequestPrincipalsAndClaims(t *testing.T) {
	allow := compileConfig(t, `
rules:
  policies:
    ns[foo]-policy[jwt]-rule[0]:
      permissions:
      - andRules:
          rules:
          - any: true
      principals:
      - andIds:
          ids:
          - andIds:
              ids:
              - metadata:
                  filter: envoy.filters.http.jwt_authn
                  path: [{key: payload}, {key: iss}]
                  value: {stringMatch: {exact: "https://issuer.example"}}
              - metadata:
                  filter: envoy.filters.http.jwt_authn
                  path: [{key: payload}, {key: sub}]
                  value: {stringMatch: {safeRegex: {regex: .+}}}
          - metadata:
              filter: envoy.filters.http.jwt_authn
              path: [{key: payload}, {key: groups}]
              value:
                orMatch:
                  valueMatchers:
                  - listMatch: {oneOf: {stringMatch: {exact: admin}}}
                  - stringMatch: {exact: admin}
          - metadata:
              filter: envoy.filters.http.jwt_authn
              path: [{key: payload}, {key: org}, {key: team}]
              value:
                orMatch:
                  valueMatchers:
                  - listMatch: {oneOf: {stringMatch: {prefix: blue}}}
                  - stringMatch: {prefix: blue}
shadowRulesStatPrefix: istio_dry_run_allow_
`)
	org := map[string]any{"team": "blue-1"}
	cases := []struct {
		name string
		md   DynamicMetadata
		want bool
	}{
		{"groups list holds admin", jwtMetadata("https://issuer.example", "alice", map[string]any{"groups": []any{"dev", "admin"}, "org": org}), true},
		{"groups is the string admin", jwtMetadata("https://issuer.example", "alice", map[string]any{"groups": "admin", "org": org}), true},
		{"not an admin", jwtMetadata("https://issuer.example", "alice", map[string]any{"groups": []any{"dev"}, "org": org}), false},
		{"other issuer", jwtMetadata("https://other.example", "alice", map[string]any{"groups": []any{"admin"}, "org": org}), false},
		{"empty subject", jwtMetadata("https://issuer.example", "", map[string]any{"groups": []any{"admin"}, "org": org}), false},
		{"wrong team", jwtMetadata("https://issuer.example", "alice", map[string]any{"groups": []any{"admin"}, "org": map[string]any{"team": "red"}}), false},
		{"no token", nil, false},
	}
	for _, tc := range cases {
		if d := allow.Evaluate(&Request{Path: "/", Metadata: tc.md}); d.Allowed != tc.want {
			t.Errorf("%s: Allowed = %v, want %v", tc.name, d.Allowed, tc.want)
		}
	}
}

// TestIstioHostsAndConditions:
//
//	spec:
//	  action: ALLOW
//	  rules:
//	  - from: [{source: {ipBlocks: ["10.4.0.0/16"], notRemoteIpBlocks: ["203.0.113.0/24"], serviceAccounts: ["sleep"]}}]
//	    to: [{operation: {hosts: ["httpbin.foo", "httpbin.foo:*", "*.example.com"], ports: ["8000"], notPaths: ["/healthz"]}}]
//	    when:
//	    - key: request.headers[User-Agent]
//	      values: ["curl/*"]
//	    - key: destination.ip
//	      values: ["10.4.0.9"]
//	    - key: connection.sni
//	      notValues: ["*.internal"]
func TestIstioHostsAndConditions(t *testing.T) {
	allow := compileConfig(t, `
rules:
  policies:
    ns[foo]-policy[hosts]-rule[0]:
      permissions:
      - andRules:
          rules:
          - orRules:
              rules:
              - header: {name: ":authority", stringMatch: {exact: httpbin.foo, ignoreCase: true}}
              - header: {name: ":authority", stringMatch: {prefix: "httpbin.foo:", ignoreCase: true}}
              - header: {name: ":authority", stringMatch: {suffix: .example.com, ignoreCase: true}}
          - notRule:
              orRules:
                rules:
                - urlPath: {path: {exact: /healthz}}
          - orRules:
              rules:
              - destinationPort: 8000
          - orRules:
              rules:
              - destinationIp: {addressPrefix: 10.4.0.9, prefixLen: 32}
          - notRule:
              orRules:
                rules:
                - requestedServerName: {suffix: .internal}
      principals:
      - andIds:
          ids:
          - orIds:
              ids:
              - authenticated: {principalName: {safeRegex: {regex: "spiffe://.+/ns/foo/(.+/|)sa/sleep(/.+)?"}}}
          - notId:
              orIds:
                ids:
                - remoteIp: {addressPrefix: 203.0.113.0, prefixLen: 24}
          - orIds:
              ids:
              - directRemoteIp: {addressPrefix: 10.4.0.0, prefixLen: 16}
          - orIds:
              ids:
              - header: {name: User-Agent, stringMatch: {prefix: curl/}}
shadowRulesStatPrefix: istio_dry_run_allow_
`)
	base := func() Request {
		return Request{
			Method: "GET", Path: "/get", Authority: "httpbin.foo", Scheme: "http",
			Header:          http.Header{"User-Agent": {"curl/8.5.0"}},
			DestinationIP:   workloadIP,
			DestinationPort: 8000,
			DirectRemoteIP:  internalIP,
			Peer:            sleepPeer,
		}
	}
	cases := []struct {
		name   string
		change func(*Request)
		want   bool
	}{
		{"as written", func(*Request) {}, true},
		{"Host with port", func(r *Request) { r.Authority = "httpbin.foo:8000" }, true},
		{"Host in capitals", func(r *Request) { r.Authority = "HTTPBIN.FOO" }, true},
		{"wildcard host", func(r *Request) { r.Authority = "api.Example.com" }, true},
		{"other host", func(r *Request) { r.Authority = "evil.foo" }, false},
		{"health check path", func(r *Request) { r.Path = "/healthz?full=1" }, false},
		{"other port", func(r *Request) { r.DestinationPort = 9000 }, false},
		{"other destination", func(r *Request) { r.DestinationIP = internalIP }, false},
		{"internal SNI", func(r *Request) { r.ServerName = "httpbin.internal" }, false},
		{"other SNI", func(r *Request) { r.ServerName = "httpbin.foo.svc" }, true},
		{"forwarded for an external client", func(r *Request) { r.RemoteIP = externalIP }, false},
		{"peer outside the block", func(r *Request) { r.DirectRemoteIP = externalIP }, false},
		{"other service account", func(r *Request) { r.Peer = otherPeer }, false},
		{"browser", func(r *Request) { r.Header.Set("User-Agent", "Mozilla/5.0") }, false},
	}
	for _, tc := range cases {
		r := base()
		tc.change(&r)
		if d := allow.Evaluate(&r); d.Allowed != tc.want {
			t.Errorf("%s: Allowed = %v, want %v", tc.name, d.Allowed, tc.want)
		}
	}
}

// TestIstioEmptyPolicies: an ALLOW policy with no rules matches nothing
// (Istio writes an explicit never-matching policy), one with an empty rule
// matches everything.
//
//   - {metadata: {name: allow-none}, spec: {action: ALLOW}}
//   - {metadata: {name: allow-all}, spec: {action: ALLOW, rules: [{}]}}
func TestIstioEmptyPolicies(t *testing.T) {
	none := compileConfig(t, `
rules:
  policies:
    ns[foo]-policy[allow-none]-rule[0]:
      permissions: [{notRule: {any: true}}]
      principals: [{notId: {any: true}}]
shadowRulesStatPrefix: istio_dry_run_allow_
`)
	all := compileConfig(t, `
rules:
  policies:
    ns[foo]-policy[allow-all]-rule[0]:
      permissions: [{andRules: {rules: [{any: true}]}}]
      principals: [{andIds: {ids: [{any: true}]}}]
shadowRulesStatPrefix: istio_dry_run_allow_
`)
	r := &Request{Method: "GET", Path: "/", Peer: sleepPeer}
	if none.Evaluate(r).Allowed {
		t.Error("allow-none allowed a request")
	}
	if !all.Evaluate(r).Allowed {
		t.Error("allow-all denied a request")
	}
}

// TestIstioAuditAndDryRun: AUDIT becomes a LOG filter; the
// istio.io/dry-run annotation moves a policy into shadow_rules.
//
//   - {metadata: {name: audit-post}, spec: {action: AUDIT, rules: [{to: [{operation: {methods: ["POST"]}}]}]}}
//   - {metadata: {name: dry-deny, annotations: {istio.io/dry-run: "true"}}, spec: {action: DENY, rules: [{to: [{operation: {ports: ["9090"]}}]}]}}
func TestIstioAuditAndDryRun(t *testing.T) {
	audit := compileConfig(t, `
rules:
  action: LOG
  policies:
    ns[foo]-policy[audit-post]-rule[0]:
      permissions:
      - andRules:
          rules:
          - orRules:
              rules:
              - header: {name: ":method", stringMatch: {exact: POST}}
      principals:
      - andIds: {ids: [{any: true}]}
shadowRulesStatPrefix: istio_dry_run_allow_
`)
	dry := compileConfig(t, `
shadowRules:
  action: DENY
  policies:
    ns[foo]-policy[dry-deny]-rule[0]:
      permissions:
      - andRules:
          rules:
          - orRules:
              rules:
              - destinationPort: 9090
      principals:
      - andIds: {ids: [{any: true}]}
shadowRulesStatPrefix: istio_dry_run_deny_
`)
	post := &Request{Method: "POST", Path: "/", DestinationPort: 9090}
	if d := audit.Evaluate(post); !d.Allowed || d.LogHint != LogYes || d.Policy != "ns[foo]-policy[audit-post]-rule[0]" {
		t.Errorf("audit POST: %+v", d)
	}
	if d := audit.Evaluate(&Request{Method: "GET", Path: "/"}); !d.Allowed || d.LogHint != LogNo {
		t.Errorf("audit GET: %+v", d)
	}
	d := dry.Evaluate(post)
	if !d.Allowed || d.Enforced || !d.Shadow.Evaluated || d.Shadow.Allowed || d.Shadow.Policy != "ns[foo]-policy[dry-deny]-rule[0]" {
		t.Errorf("dry-run DENY on 9090: %+v", d)
	}
	if md := dry.ShadowMetadata(d); md["istio_dry_run_deny_shadow_engine_result"] != "denied" ||
		md["istio_dry_run_deny_shadow_effective_policy_id"] != "ns[foo]-policy[dry-deny]-rule[0]" {
		t.Errorf("dry-run metadata %v", md)
	}
}
