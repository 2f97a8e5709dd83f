package rbac

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
)

// TestEngineSemantics checks the filter-level decisions against Envoy's
// RBAC filter: action semantics, the no-engine default, policy order, the
// LOG hint and the shadow engine.
func TestEngineSemantics(t *testing.T) {
	get := &Request{Method: "GET", Path: "/a", DestinationPort: 80}
	post := &Request{Method: "POST", Path: "/a", DestinationPort: 80}
	cases := []struct {
		name string
		cfg  string
		req  *Request
		want Decision
	}{
		{
			name: "no rules: allowed by default",
			cfg:  `{}`,
			req:  get,
			want: Decision{Allowed: true},
		},
		{
			name: "ALLOW without policies denies everything",
			cfg:  `{rules: {action: ALLOW}}`,
			req:  get,
			want: Decision{Allowed: false, Enforced: true},
		},
		{
			name: "ALLOW matched",
			cfg:  `{rules: {policies: {get: {permissions: [{header: {name: ":method", stringMatch: {exact: GET}}}], principals: [{any: true}]}}}}`,
			req:  get,
			want: Decision{Allowed: true, Enforced: true, Policy: "get"},
		},
		{
			name: "ALLOW unmatched",
			cfg:  `{rules: {policies: {get: {permissions: [{header: {name: ":method", stringMatch: {exact: GET}}}], principals: [{any: true}]}}}}`,
			req:  post,
			want: Decision{Allowed: false, Enforced: true},
		},
		{
			name: "ALLOW needs permission and principal",
			cfg:  `{rules: {policies: {get: {permissions: [{any: true}], principals: [{authenticated: {}}]}}}}`,
			req:  get,
			want: Decision{Allowed: false, Enforced: true},
		},
		{
			name: "DENY without policies allows everything",
			cfg:  `{rules: {action: DENY}}`,
			req:  get,
			want: Decision{Allowed: true, Enforced: true},
		},
		{
			name: "DENY matched",
			cfg:  `{rules: {action: DENY, policies: {no-post: {permissions: [{header: {name: ":method", stringMatch: {exact: POST}}}], principals: [{any: true}]}}}}`,
			req:  post,
			want: Decision{Allowed: false, Enforced: true, Policy: "no-post"},
		},
		{
			name: "DENY unmatched",
			cfg:  `{rules: {action: DENY, policies: {no-post: {permissions: [{header: {name: ":method", stringMatch: {exact: POST}}}], principals: [{any: true}]}}}}`,
			req:  get,
			want: Decision{Allowed: true, Enforced: true},
		},
		{
			name: "LOG matched is allowed and logged",
			cfg:  `{rules: {action: LOG, policies: {audit: {permissions: [{any: true}], principals: [{any: true}]}}}}`,
			req:  get,
			want: Decision{Allowed: true, Enforced: true, Policy: "audit", LogHint: LogYes},
		},
		{
			name: "LOG unmatched",
			cfg:  `{rules: {action: LOG, policies: {audit: {permissions: [{destinationPort: 1}], principals: [{any: true}]}}}}`,
			req:  get,
			want: Decision{Allowed: true, Enforced: true, LogHint: LogNo},
		},
		{
			name: "first policy in name order wins",
			cfg: `{rules: {policies: {
				b: {permissions: [{any: true}], principals: [{any: true}]},
				a: {permissions: [{any: true}], principals: [{any: true}]},
				c: {permissions: [{any: true}], principals: [{any: true}]}}}}`,
			req:  get,
			want: Decision{Allowed: true, Enforced: true, Policy: "a"},
		},
		{
			name: "shadow rules never decide",
			cfg:  `{shadowRules: {action: ALLOW}, shadowRulesStatPrefix: istio_dry_run_allow_}`,
			req:  get,
			want: Decision{Allowed: true, Shadow: ShadowResult{Evaluated: true, Allowed: false}},
		},
		{
			name: "shadow DENY matched beside enforced ALLOW",
			cfg: `{rules: {policies: {all: {permissions: [{any: true}], principals: [{any: true}]}}},
			       shadowRules: {action: DENY, policies: {dry: {permissions: [{destinationPort: 80}], principals: [{any: true}]}}}}`,
			req:  get,
			want: Decision{Allowed: true, Enforced: true, Policy: "all", Shadow: ShadowResult{Evaluated: true, Allowed: false, Policy: "dry"}},
		},
		{
			name: "shadow LOG is allowed",
			cfg:  `{shadowRules: {action: LOG, policies: {dry: {permissions: [{any: true}], principals: [{any: true}]}}}}`,
			req:  get,
			want: Decision{Allowed: true, Shadow: ShadowResult{Evaluated: true, Allowed: true, Policy: "dry"}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := compileConfig(t, tc.cfg)
			if got := f.Evaluate(tc.req); got != tc.want {
				t.Errorf("Evaluate = %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestShadowMetadataAndDetails(t *testing.T) {
	f := compileConfig(t, `{shadowRulesStatPrefix: istio_dry_run_allow_, shadowRules: {policies: {"ns[foo]-policy[p]-rule[0]": {permissions: [{destinationPort: 80}], principals: [{any: true}]}}}}`)
	d := f.Evaluate(&Request{DestinationPort: 80})
	want := map[string]any{
		"istio_dry_run_allow_shadow_engine_result":       "allowed",
		"istio_dry_run_allow_shadow_effective_policy_id": "ns[foo]-policy[p]-rule[0]",
	}
	if got := f.ShadowMetadata(d); !reflect.DeepEqual(got, want) {
		t.Errorf("ShadowMetadata = %v, want %v", got, want)
	}
	d = f.Evaluate(&Request{DestinationPort: 81})
	want = map[string]any{"istio_dry_run_allow_shadow_engine_result": "denied"}
	if got := f.ShadowMetadata(d); !reflect.DeepEqual(got, want) {
		t.Errorf("ShadowMetadata = %v, want %v", got, want)
	}
	if got := f.ShadowMetadata(Decision{}); got != nil {
		t.Errorf("ShadowMetadata without a shadow verdict = %v, want nil", got)
	}
	if f.ShadowRulesStatPrefix() != "istio_dry_run_allow_" || !f.HasShadow() {
		t.Errorf("prefix %q, HasShadow %v", f.ShadowRulesStatPrefix(), f.HasShadow())
	}

	if got := (Decision{}).ResponseDetails(); got != "rbac_access_denied_matched_policy[none]" {
		t.Errorf("ResponseDetails = %q", got)
	}
	if got := (Decision{Policy: "my policy"}).ResponseDetails(); got != "rbac_access_denied_matched_policy[my_policy]" {
		t.Errorf("ResponseDetails = %q", got)
	}
}

func TestPerRoute(t *testing.T) {
	f, err := CompilePerRoute(&rbachttpv3.RBACPerRoute{})
	if err != nil {
		t.Fatal(err)
	}
	if d := f.Evaluate(&Request{}); !d.Allowed || d.Enforced {
		t.Errorf("per-route override without rbac: %+v, want allowed and not enforced", d)
	}
	f, err = CompilePerRoute(&rbachttpv3.RBACPerRoute{Rbac: parseConfig(t, `{rules: {action: ALLOW}}`)})
	if err != nil {
		t.Fatal(err)
	}
	if d := f.Evaluate(&Request{}); d.Allowed {
		t.Errorf("per-route ALLOW without policies allowed %+v", d)
	}
}

// TestCompileErrors checks that what the engine does not implement, or
// Envoy would reject, is a compile error naming the field.
func TestCompileErrors(t *testing.T) {
	cases := []struct {
		name, cfg, want string
	}{
		{"matcher extension",
			`{rules: {policies: {p: {permissions: [{andRules: {rules: [{any: true}, {matcher: {name: x, typedConfig: {"@type": type.googleapis.com/google.protobuf.Empty}}}]}}], principals: [{any: true}]}}}}`,
			`rules.policies["p"].permissions[0].and_rules.rules[1].matcher: RBAC matcher extensions are not supported`},
		{"filter_state principal",
			`{rules: {policies: {p: {permissions: [{any: true}], principals: [{filterState: {key: io.istio.peer_principal, stringMatch: {exact: x}}}]}}}}`,
			`rules.policies["p"].principals[0].filter_state: filter state principals are not supported`},
		{"CEL condition",
			`{rules: {policies: {p: {permissions: [{any: true}], principals: [{any: true}], condition: {constExpr: {boolValue: true}}}}}}`,
			`rules.policies["p"]: CEL conditions`},
		{"matcher API",
			`{matcher: {}}`,
			`matcher: the matcher-API form of RBAC is not supported`},
		{"bad regex",
			`{shadowRules: {policies: {p: {permissions: [{urlPath: {path: {safeRegex: {regex: "a("}}}}], principals: [{any: true}]}}}}`,
			`shadow_rules.policies["p"].permissions[0].url_path.path.safe_regex: error parsing regexp`},
		{"ignore_case with regex",
			`{rules: {policies: {p: {permissions: [{header: {name: x, stringMatch: {safeRegex: {regex: a}, ignoreCase: true}}}], principals: [{any: true}]}}}}`,
			`rules.policies["p"].permissions[0].header.string_match: ignore_case has no effect for safe_regex`},
		{"route metadata",
			`{rules: {policies: {p: {permissions: [{sourcedMetadata: {metadataMatcher: {filter: f, path: [{key: k}], value: {presentMatch: true}}, metadataSource: ROUTE}}], principals: [{any: true}]}}}}`,
			`rules.policies["p"].permissions[0].sourced_metadata.metadata_source: ROUTE is not supported`},
		{"bad uri template",
			`{rules: {policies: {p: {permissions: [` + uriTemplate("/a/**/*") + `], principals: [{any: true}]}}}}`,
			`rules.policies["p"].permissions[0].uri_template.typed_config.path_template: invalid pattern "/a/**/*": glob after text glob`},
		{"bad port range",
			`{rules: {policies: {p: {permissions: [{destinationPortRange: {start: 90, end: 80}}], principals: [{any: true}]}}}}`,
			`rules.policies["p"].permissions[0].destination_port_range: [90, 80) is not a valid port range`},
		{"bad prefix length",
			`{rules: {policies: {p: {permissions: [{any: true}], principals: [{remoteIp: {addressPrefix: 10.0.0.0, prefixLen: 33}}]}}}}`,
			`rules.policies["p"].principals[0].remote_ip: prefix_len 33 is longer than the 32 bits`},
		{"bad address",
			`{rules: {policies: {p: {permissions: [{any: true}], principals: [{directRemoteIp: {addressPrefix: nope, prefixLen: 8}}]}}}}`,
			`rules.policies["p"].principals[0].direct_remote_ip: address_prefix "nope"`},
		{"empty and_rules (Envoy's schema)",
			`{rules: {policies: {p: {permissions: [{andRules: {rules: []}}], principals: [{any: true}]}}}}`,
			`Rules`},
		{"policy without principals (Envoy's schema)",
			`{rules: {policies: {p: {permissions: [{any: true}]}}}}`,
			`Principals`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile(parseConfig(t, tc.cfg))
			if err == nil {
				t.Fatalf("Compile(%s): no error", tc.cfg)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Compile error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestPeerFromTLS(t *testing.T) {
	if PeerFromTLS(nil) != nil {
		t.Error("PeerFromTLS(nil) != nil")
	}
	if p := PeerFromTLS(&tls.ConnectionState{}); p == nil || len(p.URISANs) != 0 || p.Subject != "" {
		t.Errorf("PeerFromTLS without a client certificate = %+v, want an empty Peer", p)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	spiffe, _ := url.Parse("spiffe://cluster.local/ns/foo/sa/sleep")
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "sleep", Organization: []string{"example"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		URIs:         []*url.URL{spiffe},
		DNSNames:     []string{"sleep.foo.svc"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	p := PeerFromTLS(&tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}})
	want := &Peer{URISANs: []string{"spiffe://cluster.local/ns/foo/sa/sleep"}, DNSSANs: []string{"sleep.foo.svc"}, Subject: "CN=sleep,O=example"}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("PeerFromTLS = %+v, want %+v", p, want)
	}
}

// TestConcurrentEvaluate runs one Filter from many goroutines; with -race
// it checks that evaluation does not write shared state.
func TestConcurrentEvaluate(t *testing.T) {
	f := compileConfig(t, benchConfig)
	reqs := benchRequests()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				r := reqs[(g+i)%len(reqs)]
				want := r.want
				if d := f.Evaluate(r.req); d.Allowed != want {
					t.Errorf("%s: Allowed = %v, want %v", r.name, d.Allowed, want)
					return
				}
			}
		}()
	}
	wg.Wait()
}
