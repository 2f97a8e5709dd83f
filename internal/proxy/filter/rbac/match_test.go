package rbac

import (
	"fmt"
	"net/http"
	"net/netip"
	"testing"
)

// matchCase checks one permission or principal against one request.
type matchCase struct {
	name string
	rule string // a Permission or Principal, YAML flow style
	req  Request
	want bool
}

// permissionMatches compiles rule as the only permission of an ALLOW policy
// whose principal is any, so the request is allowed iff rule matches.
func permissionMatches(t *testing.T, rule string, req *Request) bool {
	t.Helper()
	f := compileConfig(t, fmt.Sprintf("rules: {action: ALLOW, policies: {p: {permissions: [%s], principals: [{any: true}]}}}", rule))
	return f.Evaluate(req).Allowed
}

// principalMatches is permissionMatches for a principal.
func principalMatches(t *testing.T, rule string, req *Request) bool {
	t.Helper()
	f := compileConfig(t, fmt.Sprintf("rules: {action: ALLOW, policies: {p: {permissions: [{any: true}], principals: [%s]}}}", rule))
	return f.Evaluate(req).Allowed
}

var (
	ip4     = netip.MustParseAddr("10.1.2.3")
	ip6     = netip.MustParseAddr("2001:db8::7")
	ip4in6  = netip.MustParseAddr("::ffff:10.1.2.3")
	other4  = netip.MustParseAddr("192.168.0.9")
	jwtMeta = DynamicMetadata{"envoy.filters.http.jwt_authn": {"payload": map[string]any{
		"iss":    "https://issuer.example",
		"sub":    "alice",
		"groups": []any{"dev", "admin"},
		"scope":  "read write",
		"admin":  true,
		"level":  float64(3),
		"nested": map[string]any{"team": "blue"},
		"none":   nil,
	}}}
)

func TestPermissionMatchers(t *testing.T) {
	get := Request{Method: "GET", Path: "/info/a?x=1#frag", Authority: "Example.com:8080", Scheme: "http"}
	hdr := func(kv ...string) Request {
		r := Request{Method: "GET", Path: "/", Authority: "a", Header: http.Header{}}
		for i := 0; i < len(kv); i += 2 {
			r.Header.Add(kv[i], kv[i+1])
		}
		return r
	}
	cases := []matchCase{
		{"any", `{any: true}`, get, true},

		// Header matchers on pseudo-headers.
		{"method exact", `{header: {name: ":method", stringMatch: {exact: GET}}}`, get, true},
		{"method exact is case sensitive", `{header: {name: ":method", stringMatch: {exact: get}}}`, get, false},
		{":path sees the query", `{header: {name: ":path", stringMatch: {exact: "/info/a"}}}`, get, false},
		{":path full", `{header: {name: ":path", stringMatch: {exact: "/info/a?x=1#frag"}}}`, get, true},
		{"authority exact ignore case keeps the port", `{header: {name: ":authority", stringMatch: {exact: "example.com", ignoreCase: true}}}`, get, false},
		{"authority exact with port", `{header: {name: ":authority", stringMatch: {exact: "example.com:8080", ignoreCase: true}}}`, get, true},
		{"authority prefix (Istio's host:*)", `{header: {name: ":authority", stringMatch: {prefix: "EXAMPLE.COM:", ignoreCase: true}}}`, get, true},
		{"host is :authority", `{header: {name: Host, stringMatch: {suffix: ".com:8080"}}}`, get, true},
		{"scheme", `{header: {name: ":scheme", stringMatch: {exact: http}}}`, get, true},
		{"absent pseudo-header", `{header: {name: ":scheme", presentMatch: true}}`, Request{Method: "GET"}, false},

		// Ordinary headers.
		{"header names are case-insensitive", `{header: {name: X-User, stringMatch: {exact: bob}}}`, hdr("x-user", "bob"), true},
		{"several values joined with commas", `{header: {name: x-a, stringMatch: {exact: "1,2"}}}`, hdr("X-A", "1", "X-A", "2"), true},
		{"joined value is not one of them", `{header: {name: x-a, stringMatch: {exact: "1"}}}`, hdr("X-A", "1", "X-A", "2"), false},
		{"contains ignore case", `{header: {name: user-agent, stringMatch: {contains: MOZILLA, ignoreCase: true}}}`, hdr("User-Agent", "x Mozilla/5.0"), true},
		{"suffix", `{header: {name: x-a, stringMatch: {suffix: "-prod"}}}`, hdr("X-A", "eu-prod"), true},
		{"safe_regex is a full match", `{header: {name: x-a, stringMatch: {safeRegex: {regex: "v[0-9]"}}}}`, hdr("X-A", "v12"), false},
		{"safe_regex", `{header: {name: x-a, stringMatch: {safeRegex: {regex: "v[0-9]+"}}}}`, hdr("X-A", "v12"), true},
		{"present", `{header: {name: x-a, presentMatch: true}}`, hdr("X-A", ""), true},
		{"present on absent", `{header: {name: x-a, presentMatch: true}}`, hdr(), false},
		{"present false on absent", `{header: {name: x-a, presentMatch: false}}`, hdr(), true},
		{"present false on present", `{header: {name: x-a, presentMatch: false}}`, hdr("X-A", "1"), false},
		{"inverted present on absent", `{header: {name: x-a, presentMatch: true, invertMatch: true}}`, hdr(), true},
		{"inverted string match on absent header does not match", `{header: {name: x-a, stringMatch: {exact: "1"}, invertMatch: true}}`, hdr(), false},
		{"inverted string match", `{header: {name: x-a, stringMatch: {exact: "1"}, invertMatch: true}}`, hdr("X-A", "2"), true},
		{"missing treated as empty", `{header: {name: x-a, stringMatch: {exact: ""}, treatMissingHeaderAsEmpty: true}}`, hdr(), true},
		{"missing not treated as empty", `{header: {name: x-a, stringMatch: {exact: ""}}}`, hdr(), false},
		{"no specifier means present", `{header: {name: x-a}}`, hdr("X-A", "v"), true},
		{"deprecated exact_match", `{header: {name: x-a, exactMatch: "1"}}`, hdr("X-A", "1"), true},
		{"deprecated exact_match empty matches any value", `{header: {name: x-a, exactMatch: ""}}`, hdr("X-A", "zz"), true},
		{"deprecated prefix_match", `{header: {name: x-a, prefixMatch: "ab"}}`, hdr("X-A", "abc"), true},
		{"deprecated suffix_match", `{header: {name: x-a, suffixMatch: "bc"}}`, hdr("X-A", "abc"), true},
		{"deprecated contains_match", `{header: {name: x-a, containsMatch: "b"}}`, hdr("X-A", "abc"), true},
		{"deprecated safe_regex_match", `{header: {name: x-a, safeRegexMatch: {regex: "(?i)ABC"}}}`, hdr("X-A", "abc"), true},
		{"range in", `{header: {name: x-n, rangeMatch: {start: 10, end: 20}}}`, hdr("X-N", "19"), true},
		{"range end is open", `{header: {name: x-n, rangeMatch: {start: 10, end: 20}}}`, hdr("X-N", "20"), false},
		{"range not a number", `{header: {name: x-n, rangeMatch: {start: 10, end: 20}}}`, hdr("X-N", "1x"), false},

		// url_path: the path without query and fragment.
		{"url_path exact ignores the query", `{urlPath: {path: {exact: "/info/a"}}}`, get, true},
		{"url_path prefix", `{urlPath: {path: {prefix: "/info/"}}}`, get, true},
		{"url_path ignore case", `{urlPath: {path: {exact: "/INFO/A", ignoreCase: true}}}`, get, true},
		{"url_path regex .+", `{urlPath: {path: {safeRegex: {regex: ".+"}}}}`, get, true},
		{"url_path without a path", `{urlPath: {path: {safeRegex: {regex: ".*"}}}}`, Request{Method: "CONNECT"}, false},
		{"url_path fragment only", `{urlPath: {path: {exact: "/x"}}}`, Request{Path: "/x#y"}, true},

		// uri_template, as Istio emits for {*} and {**}.
		{"uri template *", uriTemplate("/info/*"), get, true},
		{"uri template * is one segment", uriTemplate("/*"), get, false},
		{"uri template **", uriTemplate("/**"), get, true},
		{"uri template ** in the middle", uriTemplate("/**/a"), get, true},
		{"uri template ** matches zero segments", uriTemplate("/info/a/**"), Request{Path: "/info/a/"}, true},
		{"uri template variable", uriTemplate("/{dir}/{file=*}"), get, true},
		{"uri template variable with pattern", uriTemplate("/{rest=info/**}"), get, true},
		{"uri template literal mismatch", uriTemplate("/data/*"), get, false},

		// Connection.
		{"destination_port", `{destinationPort: 8080}`, Request{DestinationPort: 8080}, true},
		{"destination_port other", `{destinationPort: 8080}`, Request{DestinationPort: 9080}, false},
		{"destination_port_range", `{destinationPortRange: {start: 8000, end: 9000}}`, Request{DestinationPort: 8999}, true},
		{"destination_port_range end open", `{destinationPortRange: {start: 8000, end: 9000}}`, Request{DestinationPort: 9000}, false},
		{"destination_ip /32", `{destinationIp: {addressPrefix: 10.1.2.3, prefixLen: 32}}`, Request{DestinationIP: ip4}, true},
		{"destination_ip /16", `{destinationIp: {addressPrefix: 10.1.0.0, prefixLen: 16}}`, Request{DestinationIP: ip4}, true},
		{"destination_ip unmasked prefix", `{destinationIp: {addressPrefix: 10.1.9.9, prefixLen: 16}}`, Request{DestinationIP: ip4}, true},
		{"destination_ip mapped v4", `{destinationIp: {addressPrefix: 10.1.2.3, prefixLen: 32}}`, Request{DestinationIP: ip4in6}, true},
		{"destination_ip other", `{destinationIp: {addressPrefix: 10.1.2.3, prefixLen: 32}}`, Request{DestinationIP: other4}, false},
		{"destination_ip v6", `{destinationIp: {addressPrefix: "2001:db8::", prefixLen: 64}}`, Request{DestinationIP: ip6}, true},
		{"destination_ip family mismatch", `{destinationIp: {addressPrefix: "0.0.0.0", prefixLen: 0}}`, Request{DestinationIP: ip6}, false},
		{"destination_ip unset prefix_len is /0", `{destinationIp: {addressPrefix: 1.1.1.1}}`, Request{DestinationIP: other4}, true},
		{"destination_ip unknown address", `{destinationIp: {addressPrefix: 0.0.0.0, prefixLen: 0}}`, Request{}, false},
		{"requested_server_name", `{requestedServerName: {suffix: ".example.com"}}`, Request{ServerName: "api.example.com"}, true},
		{"requested_server_name .+ without SNI", `{requestedServerName: {safeRegex: {regex: ".+"}}}`, Request{}, false},
		{"requested_server_name exact empty without SNI", `{requestedServerName: {exact: ""}}`, Request{}, true},

		// Metadata (the JWT payload as Istio's rules read it).
		{"metadata string", jwtClaim("iss", `{stringMatch: {exact: "https://issuer.example"}}`), Request{Metadata: jwtMeta}, true},
		{"metadata string mismatch", jwtClaim("sub", `{stringMatch: {exact: bob}}`), Request{Metadata: jwtMeta}, false},
		{"metadata list one_of", jwtClaim("groups", `{listMatch: {oneOf: {stringMatch: {exact: admin}}}}`), Request{Metadata: jwtMeta}, true},
		{"metadata list one_of on a string", jwtClaim("sub", `{listMatch: {oneOf: {stringMatch: {exact: alice}}}}`), Request{Metadata: jwtMeta}, false},
		{"metadata or (Istio claims)", jwtClaim("sub", `{orMatch: {valueMatchers: [{listMatch: {oneOf: {stringMatch: {exact: alice}}}}, {stringMatch: {exact: alice}}]}}`), Request{Metadata: jwtMeta}, true},
		{"metadata bool", jwtClaim("admin", `{boolMatch: true}`), Request{Metadata: jwtMeta}, true},
		{"metadata double exact", jwtClaim("level", `{doubleMatch: {exact: 3}}`), Request{Metadata: jwtMeta}, true},
		{"metadata double range", jwtClaim("level", `{doubleMatch: {range: {start: 1, end: 3}}}`), Request{Metadata: jwtMeta}, false},
		{"metadata null", jwtClaim("none", `{nullMatch: {}}`), Request{Metadata: jwtMeta}, true},
		{"metadata null on a missing key", jwtClaim("absent", `{nullMatch: {}}`), Request{Metadata: jwtMeta}, false},
		{"metadata present", jwtClaim("none", `{presentMatch: true}`), Request{Metadata: jwtMeta}, true},
		{"metadata present on a missing key", jwtClaim("absent", `{presentMatch: true}`), Request{Metadata: jwtMeta}, false},
		{"metadata nested path", `{metadata: {filter: envoy.filters.http.jwt_authn, path: [{key: payload}, {key: nested}, {key: team}], value: {stringMatch: {exact: blue}}}}`, Request{Metadata: jwtMeta}, true},
		{"metadata path through a non-struct", `{metadata: {filter: envoy.filters.http.jwt_authn, path: [{key: payload}, {key: sub}, {key: x}], value: {presentMatch: true}}}`, Request{Metadata: jwtMeta}, false},
		{"metadata without metadata", jwtClaim("iss", `{presentMatch: true}`), Request{}, false},
		{"metadata invert", `{metadata: {filter: envoy.filters.http.jwt_authn, path: [{key: payload}, {key: sub}], value: {stringMatch: {exact: bob}}, invert: true}}`, Request{Metadata: jwtMeta}, true},
		{"sourced_metadata dynamic", `{sourcedMetadata: {metadataMatcher: {filter: envoy.filters.http.jwt_authn, path: [{key: payload}, {key: sub}], value: {stringMatch: {exact: alice}}}}}`, Request{Metadata: jwtMeta}, true},

		// Combinators.
		{"and", `{andRules: {rules: [{destinationPort: 80}, {header: {name: ":method", stringMatch: {exact: GET}}}]}}`, Request{Method: "GET", DestinationPort: 80}, true},
		{"and one fails", `{andRules: {rules: [{destinationPort: 80}, {header: {name: ":method", stringMatch: {exact: GET}}}]}}`, Request{Method: "PUT", DestinationPort: 80}, false},
		{"or", `{orRules: {rules: [{destinationPort: 80}, {destinationPort: 90}]}}`, Request{DestinationPort: 90}, true},
		{"or none", `{orRules: {rules: [{destinationPort: 80}, {destinationPort: 90}]}}`, Request{DestinationPort: 91}, false},
		{"not", `{notRule: {destinationPort: 80}}`, Request{DestinationPort: 91}, true},
		{"not any (Istio's match-never)", `{notRule: {any: true}}`, get, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := tc.req
			if got := permissionMatches(t, tc.rule, &req); got != tc.want {
				t.Errorf("permission %s on %+v: matched=%v, want %v", tc.rule, tc.req, got, tc.want)
			}
		})
	}
}

func uriTemplate(tmpl string) string {
	return fmt.Sprintf(`{uriTemplate: {name: uri-template, typedConfig: {"@type": type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig, pathTemplate: %q}}}`, tmpl)
}

func jwtClaim(claim, value string) string {
	return fmt.Sprintf(`{metadata: {filter: envoy.filters.http.jwt_authn, path: [{key: payload}, {key: %s}], value: %s}}`, claim, value)
}

func TestPrincipalMatchers(t *testing.T) {
	sleep := &Peer{
		URISANs: []string{"spiffe://cluster.local/ns/foo/sa/sleep"},
		DNSSANs: []string{"sleep.foo.svc"},
		Subject: "CN=sleep,O=example",
	}
	noCert := &Peer{}
	cases := []matchCase{
		{"any", `{any: true}`, Request{}, true},
		{"authenticated without TLS", `{authenticated: {}}`, Request{}, false},
		{"authenticated any TLS, even without a certificate", `{authenticated: {}}`, Request{Peer: noCert}, true},
		{"principal URI SAN exact", `{authenticated: {principalName: {exact: "spiffe://cluster.local/ns/foo/sa/sleep"}}}`, Request{Peer: sleep}, true},
		{"principal other SA", `{authenticated: {principalName: {exact: "spiffe://cluster.local/ns/foo/sa/other"}}}`, Request{Peer: sleep}, false},
		{"principal DNS SAN", `{authenticated: {principalName: {exact: "sleep.foo.svc"}}}`, Request{Peer: sleep}, true},
		{"principal subject", `{authenticated: {principalName: {exact: "CN=sleep,O=example"}}}`, Request{Peer: sleep}, true},
		{"principal .+ needs a certificate", `{authenticated: {principalName: {safeRegex: {regex: ".+"}}}}`, Request{Peer: noCert}, false},
		{"principal plaintext", `{authenticated: {principalName: {safeRegex: {regex: ".*"}}}}`, Request{}, false},
		{"namespace regex (Istio)", `{authenticated: {principalName: {safeRegex: {regex: ".*/ns/foo/.*"}}}}`, Request{Peer: sleep}, true},
		{"service account regex (Istio)", `{authenticated: {principalName: {safeRegex: {regex: "spiffe://.+/ns/foo/(.+/|)sa/sleep(/.+)?"}}}}`, Request{Peer: sleep}, true},

		{"direct_remote_ip", `{directRemoteIp: {addressPrefix: 10.1.0.0, prefixLen: 16}}`, Request{DirectRemoteIP: ip4}, true},
		{"direct_remote_ip ignores remote", `{directRemoteIp: {addressPrefix: 10.1.0.0, prefixLen: 16}}`, Request{DirectRemoteIP: other4, RemoteIP: ip4}, false},
		{"remote_ip", `{remoteIp: {addressPrefix: 10.1.0.0, prefixLen: 16}}`, Request{DirectRemoteIP: other4, RemoteIP: ip4}, true},
		{"remote_ip defaults to the peer", `{remoteIp: {addressPrefix: 10.1.0.0, prefixLen: 16}}`, Request{DirectRemoteIP: ip4}, true},
		{"source_ip is the peer", `{sourceIp: {addressPrefix: 10.1.2.3, prefixLen: 32}}`, Request{DirectRemoteIP: ip4}, true},

		{"header", `{header: {name: x-user, stringMatch: {prefix: al}}}`, Request{Header: http.Header{"X-User": {"alice"}}}, true},
		{"url_path", `{urlPath: {path: {exact: /x}}}`, Request{Path: "/x?y"}, true},
		{"metadata", jwtClaim("sub", `{stringMatch: {exact: alice}}`), Request{Metadata: jwtMeta}, true},

		{"and_ids", `{andIds: {ids: [{authenticated: {}}, {directRemoteIp: {addressPrefix: 10.0.0.0, prefixLen: 8}}]}}`, Request{Peer: sleep, DirectRemoteIP: ip4}, true},
		{"and_ids one fails", `{andIds: {ids: [{authenticated: {}}, {directRemoteIp: {addressPrefix: 10.0.0.0, prefixLen: 8}}]}}`, Request{DirectRemoteIP: ip4}, false},
		{"or_ids", `{orIds: {ids: [{authenticated: {}}, {directRemoteIp: {addressPrefix: 10.0.0.0, prefixLen: 8}}]}}`, Request{DirectRemoteIP: ip4}, true},
		{"not_id", `{notId: {authenticated: {}}}`, Request{}, true},
		{"not_id matched", `{notId: {authenticated: {}}}`, Request{Peer: noCert}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := tc.req
			if got := principalMatches(t, tc.rule, &req); got != tc.want {
				t.Errorf("principal %s on %+v: matched=%v, want %v", tc.rule, tc.req, got, tc.want)
			}
		})
	}
}

func TestURITemplateErrors(t *testing.T) {
	for _, tmpl := range []string{
		"no-slash",
		"/a/**/*",                  // glob after text glob
		"/a//b",                    // double slash
		"/{x}/{x}",                 // repeated variable
		"/{1x}",                    // bad variable name
		"/{x=}",                    // empty variable match
		"/{x",                      // unmatched bracket
		"/a b",                     // not printable
		"/a[b]",                    // not a pchar
		"/**/{v}",                  // implicit glob after text glob
		"/{x=**}/{y=*}",            // glob after text glob inside variables
		"/{a}/{b}/{c}/{d}/{e}/{f}", // too many variables
	} {
		if _, err := compileURITemplate(tmpl); err == nil {
			t.Errorf("compileURITemplate(%q): no error", tmpl)
		}
	}
}
