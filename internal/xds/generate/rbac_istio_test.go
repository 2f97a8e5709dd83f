package generate

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	rbachttp "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"weft.dev/weft/internal/mesh"
)

// TestRBACAsIstio checks that the RBAC filters generated for a set of
// AuthorizationPolicies are the ones Istio's authz builder generates for
// them, so an Envoy given either behaves the same. The expectations were
// derived by hand from Istio's builder tests
// (pilot/pkg/security/authz/builder/testdata/http/<case>-in.yaml and
// -out.yaml, builder_test.go TestGenerator_GenerateHTTP), for the sidecar
// HTTP chain and one trust domain (cluster.local, no aliases); each case
// names the Istio case it follows.
func TestRBACAsIstio(t *testing.T) {
	labels := map[string]string{"app": "httpbin", "version": "v1"}
	for _, tc := range rbacIstioCases {
		t.Run(tc.name, func(t *testing.T) {
			s := securityMesh(tc.policies, mesh.Options{})
			filters := rbacFilters(s, s.Authz.For("foo", labels))
			if len(filters) != len(tc.want) {
				t.Fatalf("%d RBAC filters, want %d", len(filters), len(tc.want))
			}
			for i, f := range filters {
				if f.GetName() != "envoy.filters.http.rbac" {
					t.Errorf("filter %d is %s", i, f.GetName())
				}
				var got rbachttp.RBAC
				if err := f.GetTypedConfig().UnmarshalTo(&got); err != nil {
					t.Fatal(err)
				}
				want := rbacFromYAML(t, tc.want[i])
				if !proto.Equal(&got, want) {
					t.Errorf("filter %d:\ngot:\n%s\nwant:\n%s", i, rbacYAML(t, &got), rbacYAML(t, want))
				}
			}
		})
	}
}

func rbacFromYAML(t *testing.T, y string) *rbachttp.RBAC {
	t.Helper()
	var tree any
	if err := yaml.Unmarshal([]byte(y), &tree); err != nil {
		t.Fatalf("expectation: %v", err)
	}
	js, err := json.Marshal(tree)
	if err != nil {
		t.Fatal(err)
	}
	var out rbachttp.RBAC
	if err := protojson.Unmarshal(js, &out); err != nil {
		t.Fatalf("expectation: %v", err)
	}
	return &out
}

func rbacYAML(t *testing.T, m proto.Message) string {
	t.Helper()
	js, err := protojson.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var tree any
	if err := json.Unmarshal(js, &tree); err != nil {
		t.Fatal(err)
	}
	y, err := yaml.Marshal(tree)
	if err != nil {
		t.Fatal(err)
	}
	return string(y)
}

// ap writes an AuthorizationPolicy of namespace foo for app=httpbin.
func ap(name, extraMeta, spec string) string {
	return fmt.Sprintf(`apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: %s
  namespace: foo
%s
spec:
  selector: {matchLabels: {app: httpbin, version: v1}}
%s
`, name, extraMeta, strings.TrimRight(spec, "\n"))
}

var rbacIstioCases = []struct {
	name     string
	policies string
	want     []string // one RBAC filter config each, in order
}{
	{
		name:     "allow-empty-rule", // an empty rule matches everything
		policies: ap("allow-all", "", "  rules: [{}]"),
		want: []string{`
rules:
  policies:
    ns[foo]-policy[allow-all]-rule[0]:
      permissions: [{andRules: {rules: [{any: true}]}}]
      principals: [{andIds: {ids: [{any: true}]}}]
shadowRulesStatPrefix: istio_dry_run_allow_`},
	},
	{
		name:     "allow-nil-rule", // no rules: a policy that never matches
		policies: ap("allow-none", "", ""),
		want: []string{`
rules:
  policies:
    ns[foo]-policy[allow-none]-rule[0]:
      permissions: [{notRule: {any: true}}]
      principals: [{notId: {any: true}}]
shadowRulesStatPrefix: istio_dry_run_allow_`},
	},
	{
		name:     "deny-empty-rule",
		policies: ap("deny-all", "", "  action: DENY\n  rules: [{}]"),
		want: []string{`
rules:
  action: DENY
  policies:
    ns[foo]-policy[deny-all]-rule[0]:
      permissions: [{andRules: {rules: [{any: true}]}}]
      principals: [{andIds: {ids: [{any: true}]}}]
shadowRulesStatPrefix: istio_dry_run_allow_`},
	},
	{
		name:     "audit-full-rule", // AUDIT is an RBAC filter of action LOG
		policies: ap("audit-all", "", "  action: AUDIT\n  rules: [{}]"),
		want: []string{`
rules:
  action: LOG
  policies:
    ns[foo]-policy[audit-all]-rule[0]:
      permissions: [{andRules: {rules: [{any: true}]}}]
      principals: [{andIds: {ids: [{any: true}]}}]
shadowRulesStatPrefix: istio_dry_run_allow_`},
	},
	{
		name: "allow-path",
		policies: ap("httpbin-1", "", `  rules:
  - to:
    - operation:
        paths: ["/exact", "/prefix/*", "*/suffix", "*", "/path/template/{*}", "/{**}/path/template"]
        notPaths: ["/not-exact", "/not-prefix/*", "*/not-suffix", "*"]`),
		want: []string{`
rules:
  policies:
    ns[foo]-policy[httpbin-1]-rule[0]:
      permissions:
      - andRules:
          rules:
          - orRules:
              rules:
              - urlPath: {path: {exact: /exact}}
              - urlPath: {path: {prefix: /prefix/}}
              - urlPath: {path: {suffix: /suffix}}
              - urlPath: {path: {safeRegex: {regex: .+}}}
              - uriTemplate:
                  name: uri-template
                  typedConfig:
                    '@type': type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig
                    pathTemplate: /path/template/*
              - uriTemplate:
                  name: uri-template
                  typedConfig:
                    '@type': type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig
                    pathTemplate: /**/path/template
          - notRule:
              orRules:
                rules:
                - urlPath: {path: {exact: /not-exact}}
                - urlPath: {path: {prefix: /not-prefix/}}
                - urlPath: {path: {suffix: /not-suffix}}
                - urlPath: {path: {safeRegex: {regex: .+}}}
      principals: [{andIds: {ids: [{any: true}]}}]
shadowRulesStatPrefix: istio_dry_run_allow_`},
	},
	{
		// single-policy, rule[0] with one from and one to entry: principals
		// first, then request principals, namespaces, remote and direct IPs,
		// then the when conditions in order; hosts, methods, paths, ports,
		// then when conditions for permissions.
		name: "single-policy",
		policies: ap("httpbin", "", `  rules:
  - from:
    - source:
        principals: ["principal-1", "principal-2"]
        requestPrincipals: ["request-principal"]
        namespaces: ["ns-1"]
        ipBlocks: ["10.0.0.1"]
        remoteIpBlocks: ["172.17.8.0/24"]
    to:
    - operation:
        methods: ["GET"]
        hosts: ["host-1"]
        ports: ["9001"]
        paths: ["/path-1"]
    when:
    - key: request.headers[X-header]
      values: ["header", "header-prefix-*", "*-suffix-header", "*"]
    - key: destination.ip
      values: ["10.10.10.10", "192.168.10.0/24"]
    - key: remote.ip
      values: ["10.99.10.8"]`),
		want: []string{`
rules:
  policies:
    ns[foo]-policy[httpbin]-rule[0]:
      permissions:
      - andRules:
          rules:
          - orRules: {rules: [{header: {name: ":authority", stringMatch: {exact: host-1, ignoreCase: true}}}]}
          - orRules: {rules: [{header: {name: ":method", stringMatch: {exact: GET}}}]}
          - orRules: {rules: [{urlPath: {path: {exact: /path-1}}}]}
          - orRules: {rules: [{destinationPort: 9001}]}
          - orRules:
              rules:
              - destinationIp: {addressPrefix: 10.10.10.10, prefixLen: 32}
              - destinationIp: {addressPrefix: 192.168.10.0, prefixLen: 24}
      principals:
      - andIds:
          ids:
          - orIds:
              ids:
              - authenticated: {principalName: {exact: "spiffe://principal-1"}}
              - authenticated: {principalName: {exact: "spiffe://principal-2"}}
          - andIds:
              ids:
              - metadata:
                  filter: envoy.filters.http.jwt_authn
                  path: [{key: payload}, {key: iss}]
                  value: {stringMatch: {exact: request-principal}}
              - metadata:
                  filter: envoy.filters.http.jwt_authn
                  path: [{key: payload}, {key: sub}]
                  value: {stringMatch: {exact: ""}}
          - orIds: {ids: [{authenticated: {principalName: {safeRegex: {regex: .*/ns/ns-1/.*}}}}]}
          - orIds: {ids: [{remoteIp: {addressPrefix: 172.17.8.0, prefixLen: 24}}]}
          - orIds: {ids: [{directRemoteIp: {addressPrefix: 10.0.0.1, prefixLen: 32}}]}
          - orIds:
              ids:
              - header: {name: X-header, stringMatch: {exact: header}}
              - header: {name: X-header, stringMatch: {prefix: header-prefix-}}
              - header: {name: X-header, stringMatch: {suffix: -suffix-header}}
              - header: {name: X-header, presentMatch: true}
          - orIds: {ids: [{remoteIp: {addressPrefix: 10.99.10.8, prefixLen: 32}}]}
shadowRulesStatPrefix: istio_dry_run_allow_`},
	},
	{
		// allow-full-rule, rule[0]: service accounts, the namespace
		// defaulting to the policy's.
		name: "service-accounts",
		policies: ap("httpbin-1", "", `  rules:
  - from:
    - source:
        serviceAccounts: ["my-ns/my-sa", "sa-only"]
        notServiceAccounts: ["my-ns/my-sa-not"]`),
		want: []string{`
rules:
  policies:
    ns[foo]-policy[httpbin-1]-rule[0]:
      permissions: [{andRules: {rules: [{any: true}]}}]
      principals:
      - andIds:
          ids:
          - orIds:
              ids:
              - authenticated: {principalName: {safeRegex: {regex: "spiffe://.+/ns/my-ns/(.+/|)sa/my-sa(/.+)?"}}}
              - authenticated: {principalName: {safeRegex: {regex: "spiffe://.+/ns/foo/(.+/|)sa/sa-only(/.+)?"}}}
          - notId:
              orIds:
                ids:
                - authenticated: {principalName: {safeRegex: {regex: "spiffe://.+/ns/my-ns/(.+/|)sa/my-sa-not(/.+)?"}}}
shadowRulesStatPrefix: istio_dry_run_allow_`},
	},
	{
		// allow-full-rule, rule[1]: the wildcard forms of principals,
		// request principals and namespaces.
		name: "wildcards",
		policies: ap("httpbin-1", "", `  rules:
  - from:
    - source:
        principals: ["principal", "principal-prefix-*", "*-suffix-principal", "*"]
        requestPrincipals: ["requestPrincipals-prefix-*", "*-suffix-requestPrincipals", "*"]
        notNamespaces: ["not-ns", "not-ns-prefix-*", "*-not-ns-suffix", "*"]
    when:
    - key: request.auth.principal
      values: ["https://example.com/*"]`),
		want: []string{`
rules:
  policies:
    ns[foo]-policy[httpbin-1]-rule[0]:
      permissions: [{andRules: {rules: [{any: true}]}}]
      principals:
      - andIds:
          ids:
          - orIds:
              ids:
              - authenticated: {principalName: {exact: "spiffe://principal"}}
              - authenticated: {principalName: {prefix: "spiffe://principal-prefix-"}}
              - authenticated: {principalName: {safeRegex: {regex: "spiffe://.*-suffix-principal"}}}
              - authenticated: {principalName: {safeRegex: {regex: .+}}}
          - orIds:
              ids:
              - andIds:
                  ids:
                  - metadata: {filter: envoy.filters.http.jwt_authn, path: [{key: payload}, {key: iss}], value: {stringMatch: {prefix: requestPrincipals-prefix-}}}
                  - metadata: {filter: envoy.filters.http.jwt_authn, path: [{key: payload}, {key: sub}], value: {stringMatch: {safeRegex: {regex: .+}}}}
              - andIds:
                  ids:
                  - metadata: {filter: envoy.filters.http.jwt_authn, path: [{key: payload}, {key: iss}], value: {stringMatch: {safeRegex: {regex: .+}}}}
                  - metadata: {filter: envoy.filters.http.jwt_authn, path: [{key: payload}, {key: sub}], value: {stringMatch: {suffix: -suffix-requestPrincipals}}}
              - andIds:
                  ids:
                  - metadata: {filter: envoy.filters.http.jwt_authn, path: [{key: payload}, {key: iss}], value: {stringMatch: {safeRegex: {regex: .+}}}}
                  - metadata: {filter: envoy.filters.http.jwt_authn, path: [{key: payload}, {key: sub}], value: {stringMatch: {safeRegex: {regex: .+}}}}
          - notId:
              orIds:
                ids:
                - authenticated: {principalName: {safeRegex: {regex: .*/ns/not-ns/.*}}}
                - authenticated: {principalName: {safeRegex: {regex: .*/ns/not-ns-prefix-.*/.*}}}
                - authenticated: {principalName: {safeRegex: {regex: .*/ns/.*-not-ns-suffix/.*}}}
                - authenticated: {principalName: {safeRegex: {regex: .*/ns/.*/.*}}}
          - andIds:
              ids:
              - metadata: {filter: envoy.filters.http.jwt_authn, path: [{key: payload}, {key: iss}], value: {stringMatch: {exact: "https://example.com"}}}
              - metadata: {filter: envoy.filters.http.jwt_authn, path: [{key: payload}, {key: sub}], value: {stringMatch: {safeRegex: {regex: .+}}}}
shadowRulesStatPrefix: istio_dry_run_allow_`},
	},
	{
		// allow-full-rule: claims (a nested one), audiences, with the list
		// or string form of a claim; SNI and metadata permissions.
		name: "claims-and-connection",
		policies: ap("httpbin-1", "", `  rules:
  - when:
    - key: request.auth.claims[nested1][nested2]
      values: ["nested", "*"]
    - key: request.auth.audiences
      notValues: ["not-audiences"]
    - key: connection.sni
      values: ["*.suffix.com"]
    - key: experimental.envoy.filters.a.b[c]
      values: ["exact", "[listed]"]`),
		want: []string{`
rules:
  policies:
    ns[foo]-policy[httpbin-1]-rule[0]:
      permissions:
      - andRules:
          rules:
          - orRules: {rules: [{requestedServerName: {suffix: .suffix.com}}]}
          - metadata:
              filter: envoy.filters.a.b
              path: [{key: c}]
              value:
                orMatch:
                  valueMatchers:
                  - stringMatch: {exact: exact}
                  - listMatch: {oneOf: {stringMatch: {exact: listed}}}
      principals:
      - andIds:
          ids:
          - metadata:
              filter: envoy.filters.http.jwt_authn
              path: [{key: payload}, {key: nested1}, {key: nested2}]
              value:
                orMatch:
                  valueMatchers:
                  - listMatch: {oneOf: {orMatch: {valueMatchers: [{stringMatch: {exact: nested}}, {stringMatch: {safeRegex: {regex: .+}}}]}}}
                  - orMatch: {valueMatchers: [{stringMatch: {exact: nested}}, {stringMatch: {safeRegex: {regex: .+}}}]}
          - notId:
              metadata:
                filter: envoy.filters.http.jwt_authn
                path: [{key: payload}, {key: aud}]
                value:
                  orMatch:
                    valueMatchers:
                    - listMatch: {oneOf: {stringMatch: {exact: not-audiences}}}
                    - stringMatch: {exact: not-audiences}
shadowRulesStatPrefix: istio_dry_run_allow_`},
	},
	{
		name: "trust-domains",
		policies: ap("httpbin", "", `  rules:
  - from:
    - source: {trustDomains: ["cluster.local", "another.local"]}
    - source: {notTrustDomains: ["bad*", "untrusted"]}`),
		want: []string{`
rules:
  policies:
    ns[foo]-policy[httpbin]-rule[0]:
      permissions: [{andRules: {rules: [{any: true}]}}]
      principals:
      - andIds:
          ids:
          - orIds:
              ids:
              - authenticated: {principalName: {prefix: "spiffe://cluster.local/"}}
              - authenticated: {principalName: {prefix: "spiffe://another.local/"}}
      - andIds:
          ids:
          - notId:
              orIds:
                ids:
                - authenticated: {principalName: {safeRegex: {regex: "spiffe://bad[^/]*/.*"}}}
                - authenticated: {principalName: {prefix: "spiffe://untrusted/"}}
shadowRulesStatPrefix: istio_dry_run_allow_`},
	},
	{
		// simple-policy-principal-with-wildcard with one trust domain: a
		// principal whose trust domain is "*" or a pattern not covering
		// cluster.local is kept as written.
		name: "principal-with-wildcard",
		policies: ap("httpbin", "", `  rules:
  - from:
    - source: {principals: ["*"]}
    - source: {principals: ["*/ns/foo/sa/p0", "*bar/ns/foo/sa/p1"]}`),
		want: []string{`
rules:
  policies:
    ns[foo]-policy[httpbin]-rule[0]:
      permissions: [{andRules: {rules: [{any: true}]}}]
      principals:
      - andIds: {ids: [{orIds: {ids: [{authenticated: {principalName: {safeRegex: {regex: .+}}}}]}}]}
      - andIds:
          ids:
          - orIds:
              ids:
              - authenticated: {principalName: {safeRegex: {regex: "spiffe://.*/ns/foo/sa/p0"}}}
              - authenticated: {principalName: {safeRegex: {regex: "spiffe://.*bar/ns/foo/sa/p1"}}}
shadowRulesStatPrefix: istio_dry_run_allow_`},
	},
	{
		// dry-run-mix: the dry-run ALLOW policy goes to shadow_rules.
		name: "dry-run-mix",
		policies: ap("httpbin-1", `  annotations: {istio.io/dry-run: "true"}`, `  rules:
  - to: [{operation: {paths: ["/allow"]}}]`) + "---\n" +
			ap("httpbin-2", `  annotations: {istio.io/dry-run: "false"}`, `  rules:
  - to: [{operation: {paths: ["/another"]}}]`),
		want: []string{`
rules:
  policies:
    ns[foo]-policy[httpbin-2]-rule[0]:
      permissions: [{andRules: {rules: [{orRules: {rules: [{urlPath: {path: {exact: /another}}}]}}]}}]
      principals: [{andIds: {ids: [{any: true}]}}]
shadowRules:
  policies:
    ns[foo]-policy[httpbin-1]-rule[0]:
      permissions: [{andRules: {rules: [{orRules: {rules: [{urlPath: {path: {exact: /allow}}}]}}]}}]
      principals: [{andIds: {ids: [{any: true}]}}]
shadowRulesStatPrefix: istio_dry_run_allow_`},
	},
	{
		// deny-and-allow: one filter per action, DENY first; a dry-run
		// DENY gets the deny stat prefix (dry-run-allow-and-deny).
		name: "deny-and-allow",
		policies: ap("allow-get", "", `  rules:
  - to: [{operation: {methods: ["GET"]}}]`) + "---\n" +
			ap("deny-debug", `  annotations: {istio.io/dry-run: "true"}`, `  action: DENY
  rules:
  - to: [{operation: {paths: ["/debug"]}}]`),
		want: []string{`
shadowRules:
  action: DENY
  policies:
    ns[foo]-policy[deny-debug]-rule[0]:
      permissions: [{andRules: {rules: [{orRules: {rules: [{urlPath: {path: {exact: /debug}}}]}}]}}]
      principals: [{andIds: {ids: [{any: true}]}}]
shadowRulesStatPrefix: istio_dry_run_deny_`, `
rules:
  policies:
    ns[foo]-policy[allow-get]-rule[0]:
      permissions: [{andRules: {rules: [{orRules: {rules: [{header: {name: ":method", stringMatch: {exact: GET}}}]}}]}}]
      principals: [{andIds: {ids: [{any: true}]}}]
shadowRulesStatPrefix: istio_dry_run_allow_`},
	},
}
