package config

import (
	"slices"
	"strings"
	"testing"
)

const reviewsDR = `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
`

// TestDiagnostics checks that each bad document yields exactly the
// expected diagnostics, rendered in full.
func TestDiagnostics(t *testing.T) {
	tests := []struct {
		name string
		doc  string // loaded as t.yaml, after reviewsDR in dr.yaml
		want []string
	}{
		{
			// Without hosts, a VirtualService is a delegate (as in Istio):
			// only http routes, no gateways.
			name: "virtualservice without hosts is a delegate",
			doc: `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  http:
  - route:
    - destination: {host: reviews}
`,
		},
		{
			name: "delegate virtualservice with tcp routes",
			doc: `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  gateways: [mesh]
  tcp:
  - route:
    - destination: {host: reviews}
`,
			want: []string{
				`error: t.yaml: doc 1: VirtualService default/reviews: spec.gateways: a VirtualService without hosts is a delegate, and a delegate must not set gateways (the VirtualService that delegates to it decides where it applies)`,
				`error: t.yaml: doc 1: VirtualService default/reviews: spec.tcp: a VirtualService without hosts is a delegate, and only http routes can be delegated`,
			},
		},
		{
			name: "negative weight",
			doc: `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 110
    - destination: {host: reviews, subset: v2}
      weight: -10
`,
			want: []string{`error: t.yaml: doc 1: VirtualService default/reviews: spec.http[0].route[1].weight: weight -10 must not be negative`},
		},
		{
			name: "all weights zero",
			doc: `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
  - route:
    - destination: {host: reviews, subset: v1}
    - destination: {host: reviews, subset: v2}
      weight: 0
`,
			want: []string{
				`warning: t.yaml: doc 1: VirtualService default/reviews: spec.http[1]: this rule is never used: spec.http[0] before it has no match conditions and takes every request; only the last rule may have none`,
				`error: t.yaml: doc 1: VirtualService default/reviews: spec.http[1].route: the total weight of 2 destinations is 0; give at least one a positive weight`,
			},
		},
		{
			name: "bad regexes",
			doc: `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match:
    - uri: {regex: "/a("}
    - headers:
        x-user: {regex: "[a-"}
        x-ok: {regex: "^ok$"}
      queryParams:
        q: {regex: "*"}
      withoutHeaders:
        x-no: {regex: "(?P<>a)"}
      authority: {regex: "a{2,1}"}
    route:
    - destination: {host: reviews}
`,
			want: []string{
				"error: t.yaml: doc 1: VirtualService default/reviews: spec.http[0].match[0].uri.regex: invalid RE2 regex \"/a(\": error parsing regexp: missing closing ): `/a(`",
				"error: t.yaml: doc 1: VirtualService default/reviews: spec.http[0].match[1].authority.regex: invalid RE2 regex \"a{2,1}\": error parsing regexp: invalid repeat count: `{2,1}`",
				"error: t.yaml: doc 1: VirtualService default/reviews: spec.http[0].match[1].headers.x-user.regex: invalid RE2 regex \"[a-\": error parsing regexp: missing closing ]: `[a-`",
				"error: t.yaml: doc 1: VirtualService default/reviews: spec.http[0].match[1].queryParams.q.regex: invalid RE2 regex \"*\": error parsing regexp: missing argument to repetition operator: `*`",
				"error: t.yaml: doc 1: VirtualService default/reviews: spec.http[0].match[1].withoutHeaders.x-no.regex: invalid RE2 regex \"(?P<>a)\": error parsing regexp: invalid named capture: `(?P<>`",
			},
		},
		{
			name: "undefined subset",
			doc: `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
  - route:
    - destination: {host: reviews, subset: v1}
    - destination: {host: reviews, subset: v9}
      weight: 1
  - mirror: {host: reviews, subset: v8}
    route:
    - destination: {host: ratings, subset: v1}
`,
			want: []string{
				`warning: t.yaml: doc 1: VirtualService default/reviews: spec.http[1]: this rule is never used: spec.http[0] before it has no match conditions and takes every request; only the last rule may have none`,
				`error: t.yaml: doc 1: VirtualService default/reviews: spec.http[1].route[1].destination.subset: subset "v9" is not defined by any DestinationRule for reviews.default.svc.cluster.local`,
				`warning: t.yaml: doc 1: VirtualService default/reviews: spec.http[2]: this rule is never used: spec.http[0] before it has no match conditions and takes every request; only the last rule may have none`,
				`error: t.yaml: doc 1: VirtualService default/reviews: spec.http[2].mirror.subset: subset "v8" is not defined by any DestinationRule for reviews.default.svc.cluster.local`,
				`error: t.yaml: doc 1: VirtualService default/reviews: spec.http[2].route[0].destination.subset: subset "v1" is not defined by any DestinationRule for ratings.default.svc.cluster.local`,
			},
		},
		{
			name: "unknown host is a warning",
			doc: `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: unknown}
    mirror: {host: api.example.com}
`,
			want: []string{
				`warning: t.yaml: doc 1: VirtualService default/reviews: spec.http[0].mirror.host: host api.example.com is not known to any registry (no ServiceEntry or service defines it)`,
				`warning: t.yaml: doc 1: VirtualService default/reviews: spec.http[0].route[0].destination.host: host unknown.default.svc.cluster.local is not known to any registry (no ServiceEntry or service defines it)`,
			},
		},
		{
			name: "host known from a serviceentry",
			doc: `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ext}
spec:
  hosts: [api.example.com]
  http:
  - route:
    - destination: {host: api.example.com}
    - destination: {host: x.wild.example.com}
      weight: 1
---
apiVersion: networking.istio.io/v1beta1
kind: ServiceEntry
metadata: {name: ext}
spec:
  hosts: [api.example.com, "*.wild.example.com"]
  ports: [{number: 443, name: https, protocol: HTTPS}]
  resolution: NONE
`,
		},
		{
			name: "destinationrule problems",
			doc: `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings}
spec:
  subsets:
  - name: v1
  - labels: {version: v2}
  - name: v1
`,
			want: []string{
				`error: t.yaml: doc 1: DestinationRule default/ratings: spec.host: host is required`,
				`error: t.yaml: doc 1: DestinationRule default/ratings: spec.subsets[1].name: subset name is required`,
				`error: t.yaml: doc 1: DestinationRule default/ratings: spec.subsets[2].name: duplicate subset name "v1" (also spec.subsets[0])`,
			},
		},
		{
			name: "missing name",
			doc: `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {namespace: prod}
spec: {hosts: [a]}
`,
			want: []string{`error: t.yaml: doc 1: metadata.name: name is required`},
		},
		{
			name: "serviceentry problems",
			doc: `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se, namespace: ext}
spec:
  resolution: STATIC
  ports:
  - {number: 0, name: a}
  - {number: 70000, name: b}
  - {number: 80, name: http}
  - {number: 80, name: http}
  - {number: 81, protocol: FOO}
`,
			want: []string{
				`error: t.yaml: doc 1: ServiceEntry ext/se: spec.hosts: at least one host is required`,
				`error: t.yaml: doc 1: ServiceEntry ext/se: spec.ports[0].number: port number 0 out of range 1-65535`,
				`error: t.yaml: doc 1: ServiceEntry ext/se: spec.ports[1].number: port number 70000 out of range 1-65535`,
				`error: t.yaml: doc 1: ServiceEntry ext/se: spec.ports[3].name: duplicate port name "http" (also spec.ports[2])`,
				`error: t.yaml: doc 1: ServiceEntry ext/se: spec.ports[3].number: duplicate port number 80 (also spec.ports[2])`,
				`error: t.yaml: doc 1: ServiceEntry ext/se: spec.ports[4].name: port name is required`,
				`error: t.yaml: doc 1: ServiceEntry ext/se: spec.ports[4].protocol: unsupported protocol "FOO"; want HTTP, HTTP2, GRPC, GRPC-Web, HTTPS, TLS, TCP, Mongo, Redis, MySQL or UDP`,
			},
		},
		{
			name: "serviceentry static endpoint must be an IP",
			doc: `apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: [db.example.com]
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints:
  - address: db.internal
  - address: 10.0.0.1
    ports: {tcp: 0}
`,
			want: []string{
				`error: t.yaml: doc 1: ServiceEntry default/se: spec.endpoints[0].address: address "db.internal" must be an IP address with resolution STATIC`,
				`error: t.yaml: doc 1: ServiceEntry default/se: spec.endpoints[1].ports.tcp: port 0 out of range 1-65535`,
			},
		},
		{
			name: "workloadentry problems",
			doc: `apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: vm1}
spec:
  ports: {http: 70000}
  labels: {app: reviews}
`,
			want: []string{
				`error: t.yaml: doc 1: WorkloadEntry default/vm1: spec.address: address is required`,
				`error: t.yaml: doc 1: WorkloadEntry default/vm1: spec.ports.http: port 70000 out of range 1-65535`,
			},
		},
		{
			// Istio reaches such endpoints through their network's gateway;
			// Weft has none, and an empty address makes the proxy NACK.
			name: "network without address",
			doc: `apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: remote}
spec: {network: west, labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: local}
spec: {network: east, address: 10.0.0.9}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: se}
spec:
  hosts: [db.example.com]
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  resolution: STATIC
  endpoints:
  - address: 10.0.0.1
    network: east
  - network: west
`,
			want: []string{
				`error: t.yaml: doc 1: WorkloadEntry default/remote: spec.address: address is required (multi-network endpoints without an address are not supported yet)`,
				`error: t.yaml: doc 3: ServiceEntry default/se: spec.endpoints[1].address: address is required (multi-network endpoints without an address are not supported yet)`,
			},
		},
		{
			name: "unknown field in a list",
			doc: `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
      weigth: 100
`,
			want: []string{`error: t.yaml: doc 1: VirtualService default/reviews: spec.http[0].route[0].weigth: unknown field "weigth"; did you mean "weight"?`},
		},
		{
			name: "unknown field in a map value",
			doc: `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match:
    - headers:
        x-user: {exakt: bob}
    route:
    - destination: {host: reviews}
`,
			want: []string{`error: t.yaml: doc 1: VirtualService default/reviews: spec.http[0].match[0].headers.x-user.exakt: unknown field "exakt"; did you mean "exact"?`},
		},
		{
			name: "unknown top-level spec field",
			doc: `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ratings}
spec:
  host: ratings
  subsetz: []
`,
			want: []string{`error: t.yaml: doc 1: DestinationRule default/ratings: spec.subsetz: unknown field "subsetz"; did you mean "subsets"?`},
		},
		{
			name: "well-known types, proto names and maps are accepted",
			doc: `apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - name: canary
    match:
    - headers:
        end-user: {exact: jason}
      query_params:
        debug: {}
      sourceLabels: {app: productpage}
    timeout: 1.5s
    retries: {attempts: 3, perTryTimeout: 500ms, retry_remote_localities: true}
    mirror_percentage: {value: 10}
    mirror: {host: reviews, subset: v2}
    corsPolicy:
      allowCredentials: false
    route:
    - destination: {host: reviews, subset: v1, port: {number: 9080}}
      headers:
        request:
          set: {x-canary: "1"}
`,
		},
		{
			name: "unsupported kind and apiVersion",
			doc: `apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: ef}
---
apiVersion: networking.istio.io/v2
kind: VirtualService
metadata: {name: reviews}
spec: {hosts: [reviews]}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cm}
`,
			want: []string{
				`error: t.yaml: doc 1: kind: unsupported kind "EnvoyFilter": Weft does not patch the proxies' config; rate limits, the commonest use, are Weft's RateLimit kind (docs/rate-limiting.md) (Weft loads VirtualService, DestinationRule, Gateway, ServiceEntry, WorkloadEntry, WorkloadGroup, Sidecar, PeerAuthentication, AuthorizationPolicy, RequestAuthentication, Telemetry, RateLimit, OIDCLogin; and from the Gateway API: GatewayClass, Gateway, HTTPRoute, GRPCRoute, TCPRoute, TLSRoute, ReferenceGrant; and Kubernetes Namespaces (for their labels))`,
				`error: t.yaml: doc 2: VirtualService default/reviews: apiVersion: unsupported apiVersion "networking.istio.io/v2" for VirtualService (want networking.istio.io/v1, v1beta1 or v1alpha3)`,
				`error: t.yaml: doc 2: VirtualService default/reviews: spec: at least one of http, tcp or tls routes is required`,
				`warning: t.yaml: doc 3: kind: a Kubernetes ConfigMap (v1) is not mesh configuration: Weft does not read it; skipped`,
			},
		},
		{
			// Istio's samples hold an application's manifests and its
			// mesh config in one file: the Kubernetes objects are
			// skipped with a warning, the rest is read.
			name: "application manifests beside mesh config",
			doc: `apiVersion: v1
kind: Service
metadata: {name: httpbin}
spec: {ports: [{port: 8000}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: httpbin}
spec: {replicas: 1}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: r}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: httpbin}
spec: {host: httpbin}
`,
			want: []string{
				`warning: t.yaml: doc 1: kind: a Kubernetes Service is not read from files: Weft reads Services and their endpoints from the Kubernetes API server (weft serve --kubeconfig), and from ServiceEntries and WorkloadEntries in files; skipped`,
				`warning: t.yaml: doc 2: kind: a Kubernetes Deployment (apps/v1) is not mesh configuration: Weft does not read it; skipped`,
				`warning: t.yaml: doc 3: kind: a Kubernetes Role (rbac.authorization.k8s.io/v1) is not mesh configuration: Weft does not read it; skipped`,
			},
		},
		{
			// kubectl get -o yaml: a List whose items are read as
			// documents, each judged on its own.
			name: "kubectl List",
			doc: `apiVersion: v1
kind: List
metadata: {resourceVersion: ""}
items:
- apiVersion: networking.istio.io/v1
  kind: DestinationRule
  metadata: {name: a}
  spec: {host: a}
- apiVersion: networking.istio.io/v1
  kind: DestinationRule
  metadata: {name: b}
  spec: {host: b, trafficPolicy: {loadBalancer: {simple: FASTEST}}}
`,
			want: []string{
				`error: t.yaml: doc 1: DestinationRule default/b: spec.trafficPolicy.loadBalancer.simple: invalid value the string "FASTEST"; want one of UNSPECIFIED, LEAST_CONN, RANDOM, PASSTHROUGH, ROUND_ROBIN, LEAST_REQUEST`,
			},
		},
		{
			name: "document that is not a mapping",
			doc:  "- a\n- b\n",
			want: []string{`error: t.yaml: doc 1: a resource must be a mapping with apiVersion, kind, metadata and spec, got a list`},
		},
		{
			name: "bad names",
			doc: `apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: Bad_Name}
spec: {address: 10.0.0.1}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ok, namespace: a.b}
spec: {address: 10.0.0.1}
`,
			want: []string{
				`error: t.yaml: doc 1: WorkloadEntry default/Bad_Name: metadata.name: invalid name "Bad_Name": must be a lowercase DNS-1123 subdomain`,
				`error: t.yaml: doc 2: WorkloadEntry a.b/ok: metadata.namespace: invalid namespace "a.b": must be a lowercase DNS-1123 label`,
			},
		},
		{
			name: "route without destination host",
			doc: `apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {subset: v1}
  - match: [{uri: {prefix: /}}]
`,
			want: []string{
				`error: t.yaml: doc 1: VirtualService default/reviews: spec.http[0].route[0].destination.host: destination host is required`,
				`error: t.yaml: doc 1: VirtualService default/reviews: spec.http[1]: one of route, redirect or directResponse is required`,
				`warning: t.yaml: doc 1: VirtualService default/reviews: spec.http[1]: this rule is never used: spec.http[0] before it has no match conditions and takes every request; only the last rule may have none`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewStore(testOptions())
			snap := s.Load(files("dr.yaml", reviewsDR, "t.yaml", tt.doc))
			// Diagnostics come in file position order; compare them as sets.
			checkStrings(t, "diagnostics", sorted(diagStrings(snap)), sorted(tt.want))
			// A document with errors contributes no resource.
			for _, d := range snap.Diagnostics {
				if d.Severity != SeverityError || d.Resource == "" {
					continue
				}
				if k := keyOf(d.Resource); k != "DestinationRule/default/reviews" && slices.Contains(keys(snap), k) {
					t.Errorf("rejected %s is in the snapshot", d.Resource)
				}
			}
		})
	}
}

// TestListItemsAndSkippedObjects: the items of a kubectl List are
// resources, and a file that also holds an application's Kubernetes
// objects loads its mesh config.
func TestListItemsAndSkippedObjects(t *testing.T) {
	snap := NewStore(testOptions()).Load(files("list.yaml", `apiVersion: v1
kind: List
items:
- apiVersion: networking.istio.io/v1
  kind: DestinationRule
  metadata: {name: a, namespace: shop}
  spec: {host: a}
- apiVersion: v1
  kind: Secret
  metadata: {name: a, namespace: shop}
  type: kubernetes.io/tls
  data: {tls.crt: "", tls.key: ""}
`, "app.yaml", `apiVersion: apps/v1
kind: Deployment
metadata: {name: b}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: b}
spec: {host: b}
`))
	if hasErrors(snap.Diagnostics) {
		t.Fatalf("diagnostics: %v", diagStrings(snap))
	}
	got := keys(snap)
	for _, want := range []string{"DestinationRule/shop/a", "DestinationRule/default/b"} {
		if !slices.Contains(got, want) {
			t.Errorf("%s not loaded; resources: %v", want, got)
		}
	}
	if len(snap.Diagnostics) != 2 || snap.Diagnostics[0].Code != CodeKubernetesObject || snap.Diagnostics[0].Line == 0 {
		t.Errorf("want two WF0106 warnings with lines, got %v", diagStrings(snap))
	}
}

// keyOf turns a Diagnostic.Resource ("Kind ns/name") into a Meta.Key().
func keyOf(resource string) string {
	kind, rest, _ := strings.Cut(resource, " ")
	return kind + "/" + rest
}

func sorted(ss []string) []string {
	out := slices.Clone(ss)
	slices.Sort(out)
	return out
}

// TestLineBreaks: a file whose lines end in a lone CR (classic Mac OS)
// is read as YAML reads it — every document, with diagnostics on the line
// an editor shows — and a document separator YAML sees but the splitter
// cannot (after a U+2028 line separator) rejects the file rather than
// dropping what follows it.
func TestLineBreaks(t *testing.T) {
	se := func(name string) string {
		return "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: " + name + ", namespace: default}\n" +
			"spec:\n  hosts: [" + name + ".example.com]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: DNS\n"
	}
	cr := func(s string) string { return strings.ReplaceAll(s, "\n", "\r") }

	s := NewStore(testOptions())
	snap := s.Load(files("se.yaml", cr(se("a")+"---\n"+se("b")+"---\n"+"kind: ServiceEntry\n")))
	if got := keys(snap); !slices.Contains(got, "ServiceEntry/default/a") || !slices.Contains(got, "ServiceEntry/default/b") {
		t.Errorf("documents separated by lone CRs: loaded %v, want both ServiceEntries", got)
	}
	var lines []int
	for _, d := range snap.Diagnostics {
		if d.Severity == SeverityError {
			lines = append(lines, d.Line)
		}
	}
	if !slices.Equal(lines, []int{17}) {
		t.Errorf("diagnostics of the third document on lines %v, want [17] (its first line): %v", lines, diagStrings(snap))
	}

	good := s.Load(files("se.yaml", se("a")))
	bad := s.Load(files("se.yaml", strings.Replace(se("a")+"---\n"+se("b"), "\n---\n", "\u2028---\u2028", 1)))
	want := []string{`error: se.yaml: doc 1: invalid YAML: the document holds a second YAML document, after a "---" that is not on a line of its own (a line break other than LF, CRLF or CR?); the file is ignored and its last good resources stay in force`}
	checkStrings(t, "diagnostics", diagStrings(bad), want)
	if !slices.Equal(keys(bad), keys(good)) {
		t.Errorf("after the rejected file: %v in force, want the last good %v", keys(bad), keys(good))
	}
}
