package config

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
	"sigs.k8s.io/yaml"
)

// gwapiBase is a GatewayClass of Weft's and a Gateway with an HTTP and
// an HTTPS listener, the first admitting routes of every namespace.
const gwapiBase = `apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: weft}
spec: {controllerName: weft.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: other}
spec: {controllerName: example.com/other}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: public, namespace: edge}
spec:
  gatewayClassName: weft
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes: {namespaces: {from: All}}
  - name: https
    port: 443
    protocol: HTTPS
    hostname: "*.example.com"
    tls: {certificateRefs: [{name: example-cert}]}
`

// wantSpecs compares the generated resources of kind k (by name) with
// specs written as Istio YAML.
func wantSpecs[T proto.Message](t *testing.T, got []*Resource[T], want map[string]string, newSpec func() T) {
	t.Helper()
	var names []string
	for _, r := range got {
		if r.Annotations[AnnotationGeneratedFrom] == "" {
			continue
		}
		names = append(names, r.Namespace+"/"+r.Name)
		w, ok := want[r.Namespace+"/"+r.Name]
		if !ok {
			continue
		}
		js, err := yaml.YAMLToJSON([]byte(w))
		if err != nil {
			t.Fatal(err)
		}
		spec := newSpec()
		if err := protojson.Unmarshal(js, spec); err != nil {
			t.Fatalf("%s: %v", r.Name, err)
		}
		if !proto.Equal(spec, r.Spec) {
			g, _ := protojson.Marshal(r.Spec)
			t.Errorf("%s/%s:\ngot  %s\nwant %s", r.Namespace, r.Name, g, js)
		}
	}
	var wantNames []string
	for n := range want {
		wantNames = append(wantNames, n)
	}
	slices.Sort(names)
	slices.Sort(wantNames)
	checkStrings(t, "generated resources", names, wantNames)
}

func TestGatewayAPITranslation(t *testing.T) {
	routes := `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: edge}
spec:
  parentRefs: [{name: public, sectionName: http}]
  hostnames: [shop.example.com]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api/}, headers: [{name: X-Canary, value: "yes"}]}]
    backendRefs:
    - {name: api, port: 8080, weight: 90}
    - {name: api-canary, port: 8080, weight: 10}
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: x-from, value: gateway}]
        add: [{name: x-trace, value: "1"}]
        remove: [x-internal]
    timeouts: {request: 5s}
  - matches: [{path: {type: Exact, value: /old}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, statusCode: 301}
  - matches: [{path: {value: /v1}, method: POST, queryParams: [{name: debug, value: "1"}]}]
    filters:
    - type: URLRewrite
      urlRewrite: {hostname: internal.example.com, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}
    - type: RequestMirror
      requestMirror: {backendRef: {name: shadow, port: 80}, percent: 25}
    backendRefs: [{name: api, port: 8080}]
  - backendRefs: [{name: web, port: 80, weight: 0}]
  - matches: [{path: {type: PathPrefix, value: /docs/}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /manual}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: catchall, namespace: team}
spec:
  parentRefs: [{name: public, namespace: edge}]
  rules:
  - backendRefs:
    - name: web
      port: 80
      filters:
      - type: ResponseHeaderModifier
        responseHeaderModifier: {set: [{name: x-team, value: team}]}
`
	snap := NewStore(testOptions()).Load(files("gw.yaml", gwapiBase, "routes.yaml", routes))
	// The route of namespace team attaches to the listener "http" only:
	// "https" admits routes of its own namespace. Attached to one
	// listener, a route is accepted: nothing to report.
	checkStrings(t, "diagnostics", diagStrings(snap), nil)
	if len(snap.HTTPRoutes) != 2 || len(snap.KubeGateways) != 1 || len(snap.GatewayClasses) != 2 {
		t.Fatalf("loaded %d routes, %d gateways, %d classes", len(snap.HTTPRoutes), len(snap.KubeGateways), len(snap.GatewayClasses))
	}
	wantSpecs(t, snap.Gateways, map[string]string{
		"edge/public-gwapi-http": `
selector: {gateway.networking.k8s.io/gateway-name: public}
servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*/*"]}]`,
		"edge/public-gwapi-https": `
selector: {gateway.networking.k8s.io/gateway-name: public}
servers:
- port: {number: 443, name: https, protocol: HTTPS}
  hosts: ["*/*.example.com"]
  tls: {mode: SIMPLE, credentialName: example-cert}`,
	}, func() *networking.Gateway { return &networking.Gateway{} })
	wantSpecs(t, snap.VirtualServices, map[string]string{
		// Rules sorted by precedence: exact path, then the longest prefix
		// (/api over /v1), then the route's catch-all; the other route's
		// rules, for any host, come after the rules for this host.
		"edge/public-gwapi-http.shop.example.com": `
hosts: [shop.example.com]
gateways: [edge/public-gwapi-http]
http:
- name: edge.shop.1.0
  match: [{uri: {exact: /old}}]
  redirect: {scheme: https, redirectCode: 301, derivePort: FROM_PROTOCOL_DEFAULT}
# A redirect's ReplacePrefixMatch: the exact part gets the whole new
# path, the prefix part replaces the matched prefix.
- name: edge.shop.4.0
  match: [{uri: {exact: /docs}}]
  redirect: {uri: /manual, redirectCode: 302, derivePort: FROM_REQUEST_PORT}
- name: edge.shop.4.0
  match: [{uri: {prefix: /docs/}}]
  redirect: {prefixRewrite: /manual/, redirectCode: 302, derivePort: FROM_REQUEST_PORT}
- name: edge.shop.0.0
  match: [{uri: {exact: /api}, headers: {x-canary: {exact: "yes"}}}]
  route:
  - {destination: {host: api.edge.svc.cluster.local, port: {number: 8080}}, weight: 90}
  - {destination: {host: api-canary.edge.svc.cluster.local, port: {number: 8080}}, weight: 10}
  headers: {request: {set: {x-from: gateway}, add: {x-trace: "1"}, remove: [x-internal]}}
  timeout: 5s
- name: edge.shop.0.0
  match: [{uri: {prefix: /api/}, headers: {x-canary: {exact: "yes"}}}]
  route:
  - {destination: {host: api.edge.svc.cluster.local, port: {number: 8080}}, weight: 90}
  - {destination: {host: api-canary.edge.svc.cluster.local, port: {number: 8080}}, weight: 10}
  headers: {request: {set: {x-from: gateway}, add: {x-trace: "1"}, remove: [x-internal]}}
  timeout: 5s
- name: edge.shop.2.0
  match: [{uri: {exact: /v1}, method: {exact: POST}, queryParams: {debug: {exact: "1"}}}]
  route: [{destination: {host: api.edge.svc.cluster.local, port: {number: 8080}}}]
  rewrite: {authority: internal.example.com, uri: /v2}
  mirrors: [{destination: {host: shadow.edge.svc.cluster.local, port: {number: 80}}, percentage: {value: 25}}]
- name: edge.shop.2.0
  match: [{uri: {prefix: /v1/}, method: {exact: POST}, queryParams: {debug: {exact: "1"}}}]
  route: [{destination: {host: api.edge.svc.cluster.local, port: {number: 8080}}}]
  rewrite: {authority: internal.example.com, uri: /v2/}
  mirrors: [{destination: {host: shadow.edge.svc.cluster.local, port: {number: 80}}, percentage: {value: 25}}]
- name: edge.shop.3.0
  directResponse: {status: 500}
# Then the rules of the route for every host (here after a catch-all of
# its own, so never used): a proxy picks one virtual host per request.
- name: team.catchall.0.0
  route:
  - destination: {host: web.team.svc.cluster.local, port: {number: 80}}
    headers: {response: {set: {x-team: team}}}`,
		"edge/public-gwapi-http.wildcard": `
hosts: ["*"]
gateways: [edge/public-gwapi-http]
http:
- name: team.catchall.0.0
  route:
  - destination: {host: web.team.svc.cluster.local, port: {number: 80}}
    headers: {response: {set: {x-team: team}}}`,
	}, func() *networking.VirtualService { return &networking.VirtualService{} })
}

func TestGatewayAPIAttachment(t *testing.T) {
	routes := `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: a, namespace: edge}
spec:
  parentRefs:
  - {name: public, sectionName: https}
  - {name: missing}
  - {name: public, sectionName: nope}
  hostnames: [a.other.com]
  rules: [{backendRefs: [{name: a, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: b, namespace: edge}
spec:
  parentRefs: [{name: public, sectionName: https}]
  hostnames: ["*.shop.example.com", "api.example.com", "*.com"]
  rules:
  - backendRefs:
    - {name: b, namespace: backends, port: 80}
    - {name: c, namespace: granted, port: 80}
    - {name: d, namespace: granted, port: 80}
---
apiVersion: gateway.networking.k8s.io/v1
kind: ReferenceGrant
metadata: {name: from-edge, namespace: granted}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: edge}]
  to: [{group: "", kind: Service, name: c}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: theirs, namespace: edge}
spec:
  gatewayClassName: other
  listeners: [{name: http, port: 80, protocol: HTTP}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: c, namespace: edge}
spec:
  parentRefs: [{name: theirs}]
  rules: [{backendRefs: [{name: a, port: 80}]}]
`
	snap := NewStore(testOptions()).Load(files("gw.yaml", gwapiBase, "routes.yaml", routes))
	checkStrings(t, "diagnostics", diagStrings(snap), []string{
		`warning: routes.yaml: doc 1: HTTPRoute edge/a: spec.parentRefs[0]: not attached to Gateway edge/public: listener "https" has hostname *.example.com, which none of the route's hostnames matches`,
		`warning: routes.yaml: doc 1: HTTPRoute edge/a: spec.parentRefs[1]: Gateway edge/missing does not exist; the route is not attached to it`,
		`warning: routes.yaml: doc 1: HTTPRoute edge/a: spec.parentRefs[2]: not attached to Gateway edge/public: no listener has that sectionName and port`,
		`error: routes.yaml: doc 2: HTTPRoute edge/b: spec.rules[0].backendRefs[0]: Service backends/b is in another namespace and no ReferenceGrant there permits HTTPRoutes of namespace edge to refer to it; requests for this backend are answered 500`,
		`error: routes.yaml: doc 2: HTTPRoute edge/b: spec.rules[0].backendRefs[2]: Service granted/d is in another namespace and no ReferenceGrant there permits HTTPRoutes of namespace edge to refer to it; requests for this backend are answered 500`,
	})
	var hosts []string
	for _, vs := range snap.VirtualServices {
		if strings.HasPrefix(vs.Name, "public-gwapi-https.") {
			hosts = append(hosts, vs.Spec.GetHosts()...)
			if got := vs.Spec.GetHttp()[0].GetRoute(); len(got) != 1 || got[0].GetDestination().GetHost() != "c.granted.svc.cluster.local" {
				t.Errorf("%s routes to %v, want only the granted c.granted", vs.Name, got)
			}
		}
	}
	// A wildcard route hostname narrower than the listener's stays; one
	// wider ("*.com") takes the listener's.
	slices.Sort(hosts)
	checkStrings(t, "hosts on https", hosts, []string{"*.example.com", "*.shop.example.com", "api.example.com"})
	for _, gw := range snap.Gateways {
		if strings.HasPrefix(gw.Name, "theirs") {
			t.Errorf("Gateway %s of another controller's class was translated", gw.Name)
		}
	}
}

func TestGatewayAPIValidation(t *testing.T) {
	tests := []struct {
		name, doc string
		want      []string
	}{
		{
			name: "gateway",
			doc: `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: bad}
spec:
  addresses: [{value: 10.0.0.9}]
  listeners:
  - {name: a, port: 70000, protocol: HTTP, tls: {certificateRefs: [{name: c}]}}
  - {name: a, port: 443, protocol: HTTPS, hostname: 10.0.0.1}
  - {name: b, port: 80, protocol: HTTP, hostname: "foo.*.com", allowedRoutes: {namespaces: {from: Selector}}}
  - {name: c, port: 80, protocol: HTTP, hostname: "foo.*.com"}
  - {name: d, port: 81, protocol: HTTP, listenerz: 1}
`,
			want: []string{
				`error: t.yaml: doc 1: Gateway.gateway.networking.k8s.io default/bad: spec.gatewayClassName: gatewayClassName is required`,
				`warning: t.yaml: doc 1: Gateway.gateway.networking.k8s.io default/bad: spec.addresses: addresses are not applied by Weft: its gateway proxies listen on their own addresses (--gateway-bind)`,
				`error: t.yaml: doc 1: Gateway.gateway.networking.k8s.io default/bad: spec.listeners[0].port: port 70000 is out of range [1, 65535]`,
				`error: t.yaml: doc 1: Gateway.gateway.networking.k8s.io default/bad: spec.listeners[0].tls: tls must not be set for protocol HTTP`,
				`error: t.yaml: doc 1: Gateway.gateway.networking.k8s.io default/bad: spec.listeners[1].name: listener name "a" is already used by listeners[0]; names must be unique`,
				`error: t.yaml: doc 1: Gateway.gateway.networking.k8s.io default/bad: spec.listeners[1].hostname: hostname "10.0.0.1" is an IP address; the Gateway API takes host names only`,
				`error: t.yaml: doc 1: Gateway.gateway.networking.k8s.io default/bad: spec.listeners[1].tls: tls is required for protocol HTTPS`,
				`error: t.yaml: doc 1: Gateway.gateway.networking.k8s.io default/bad: spec.listeners[2].hostname: invalid hostname "foo.*.com": want a lowercase DNS name, optionally starting with "*."`,
				`error: t.yaml: doc 1: Gateway.gateway.networking.k8s.io default/bad: spec.listeners[2].allowedRoutes.namespaces.selector: selector is required when from is Selector`,
				`error: t.yaml: doc 1: Gateway.gateway.networking.k8s.io default/bad: spec.listeners[3].hostname: invalid hostname "foo.*.com": want a lowercase DNS name, optionally starting with "*."`,
				`error: t.yaml: doc 1: Gateway.gateway.networking.k8s.io default/bad: spec.listeners[3]: listeners[2] already has port 80, protocol HTTP and hostname "foo.*.com": the combination must be unique`,
				`error: t.yaml: doc 1: Gateway.gateway.networking.k8s.io default/bad: spec.listeners[4].listenerz: unknown field "listenerz"`,
			},
		},
		{
			name: "httproute",
			doc: `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bad}
spec:
  parentRefs: [{sectionName: http}]
  hostnames: ["*.Example.com"]
  rules:
  - matches:
    - path: {type: Prefix, value: /a}
    - path: {type: Exact, value: a/b}
    - path: {type: PathPrefix, value: /a//b}
    - path: {type: RegularExpression, value: "(["}
      headers: [{name: "bad header", value: x}]
      method: FETCH
    filters:
    - type: RequestHeaderModifier
      responseHeaderModifier: {set: [{name: a, value: b}]}
    - type: URLRewrite
      urlRewrite: {path: {type: ReplacePrefixMatch, replaceFullPath: /x}}
    - type: RequestRedirect
      requestRedirect: {statusCode: 304, scheme: ftp}
    backendRefs:
    - {name: svc, weight: 2000000}
    timeouts: {request: 1s, backendRequest: 2s}
  - timeouts: {request: 1sec}
    filters: [{type: ExternalAuth, externalAuth: {protocol: HTTP, backendRef: {name: auth, port: 80}}}]
`,
			want: []string{
				`error: t.yaml: doc 1: HTTPRoute default/bad: spec.parentRefs[0].name: name is required`,
				`error: t.yaml: doc 1: HTTPRoute default/bad: spec.hostnames[0]: invalid hostname "*.Example.com": want a lowercase DNS name, optionally starting with "*."`,
				`error: t.yaml: doc 1: HTTPRoute default/bad: spec.rules[0].matches[0].path.type: invalid type "Prefix": want one of Exact, PathPrefix, RegularExpression`,
				`error: t.yaml: doc 1: HTTPRoute default/bad: spec.rules[0].matches[1].path.value: value "a/b" must be an absolute path (start with /)`,
				`error: t.yaml: doc 1: HTTPRoute default/bad: spec.rules[0].matches[2].path.value: value "/a//b" must not contain '//'`,
				"error: t.yaml: doc 1: HTTPRoute default/bad: spec.rules[0].matches[3].path.value: invalid regular expression \"([\": error parsing regexp: missing closing ]: `[`",
				`error: t.yaml: doc 1: HTTPRoute default/bad: spec.rules[0].matches[3].headers[0].name: invalid name "bad header": want an HTTP header or query parameter name (RFC 7230 token)`,
				`error: t.yaml: doc 1: HTTPRoute default/bad: spec.rules[0].matches[3].method: invalid method "FETCH": want one of GET, HEAD, POST, PUT, DELETE, CONNECT, OPTIONS, TRACE, PATCH`,
				`error: t.yaml: doc 1: HTTPRoute default/bad: spec.rules[0].filters[0].requestHeaderModifier: requestHeaderModifier is required for filter type RequestHeaderModifier`,
				`error: t.yaml: doc 1: HTTPRoute default/bad: spec.rules[0].filters[0].responseHeaderModifier: responseHeaderModifier must not be set for filter type RequestHeaderModifier`,
				`error: t.yaml: doc 1: HTTPRoute default/bad: spec.rules[0].filters[1].urlRewrite.path.replacePrefixMatch: replacePrefixMatch is required for type ReplacePrefixMatch`,
				`error: t.yaml: doc 1: HTTPRoute default/bad: spec.rules[0].filters[1].urlRewrite.path.replaceFullPath: replaceFullPath must not be set for type ReplacePrefixMatch`,
				`error: t.yaml: doc 1: HTTPRoute default/bad: spec.rules[0].filters[2].requestRedirect.scheme: invalid scheme "ftp": want http or https`,
				`error: t.yaml: doc 1: HTTPRoute default/bad: spec.rules[0].filters[2].requestRedirect.statusCode: invalid statusCode 304: want 301, 302, 303, 307 or 308`,
				`error: t.yaml: doc 1: HTTPRoute default/bad: spec.rules[0].filters: a RequestRedirect and a URLRewrite cannot be used together`,
				`error: t.yaml: doc 1: HTTPRoute default/bad: spec.rules[0].filters: a URLRewrite with replacePrefixMatch needs exactly one match, of type PathPrefix`,
				`error: t.yaml: doc 1: HTTPRoute default/bad: spec.rules[0].backendRefs[0].port: port is required for a Service`,
				`error: t.yaml: doc 1: HTTPRoute default/bad: spec.rules[0].backendRefs[0].weight: weight 2000000 is out of range [0, 1000000]`,
				`error: t.yaml: doc 1: HTTPRoute default/bad: spec.rules[0].timeouts.backendRequest: backendRequest (2s) must not be longer than request (1s)`,
				`error: t.yaml: doc 1: HTTPRoute default/bad: spec.rules[1].timeouts.request: invalid duration "1sec": want one to four numbers each with a unit of h, m, s or ms, such as 1m30s`,
				`warning: t.yaml: doc 1: HTTPRoute default/bad: spec.rules[1].filters[0].type: filter type ExternalAuth is not supported by Weft yet: requests this rule matches are answered 500, as the Gateway API requires`,
			},
		},
		{
			name: "grpcroute",
			doc: `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: bad}
spec:
  parentRefs: [{name: public}]
  rules:
  - matches:
    - method: {type: Exact}
    - method: {service: "weft/echo", method: "Echo.Call"}
    - method: {type: RegularExpression, method: "(["}
    filters:
    - type: URLRewrite
    backendRefs: [{name: greeter, port: 8080, weight: -1}]
`,
			want: []string{
				`error: t.yaml: doc 1: GRPCRoute default/bad: spec.rules[0].matches[0].method: one or both of service and method must be set`,
				`error: t.yaml: doc 1: GRPCRoute default/bad: spec.rules[0].matches[1].method.service: invalid service "weft/echo": want a gRPC service name such as weft.echo.v1.Echo`,
				`error: t.yaml: doc 1: GRPCRoute default/bad: spec.rules[0].matches[1].method.method: invalid method "Echo.Call": want a gRPC method name such as Echo`,
				"error: t.yaml: doc 1: GRPCRoute default/bad: spec.rules[0].matches[2].method.method: invalid regular expression \"([\": error parsing regexp: missing closing ]: `[`",
				`error: t.yaml: doc 1: GRPCRoute default/bad: spec.rules[0].filters[0].type: invalid filter type "URLRewrite": want one of RequestHeaderModifier, ResponseHeaderModifier, RequestMirror, ExtensionRef`,
				`error: t.yaml: doc 1: GRPCRoute default/bad: spec.rules[0].backendRefs[0].weight: weight -1 is out of range [0, 1000000]`,
			},
		},
		{
			name: "kinds and versions",
			doc: `apiVersion: gateway.networking.k8s.io/v1
kind: UDPRoute
metadata: {name: t}
spec: {}
---
apiVersion: networking.istio.io/v1
kind: HTTPRoute
metadata: {name: h}
spec: {}
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: GatewayClass
metadata: {name: c}
spec: {controllerName: "no-slash"}
---
apiVersion: gateway.networking.k8s.io/v1
kind: ReferenceGrant
metadata: {name: g}
spec: {from: [], to: [{group: "", name: x}]}
`,
			want: []string{
				`error: t.yaml: doc 1: kind: unsupported kind "UDPRoute" (Weft loads VirtualService, DestinationRule, Gateway, ServiceEntry, WorkloadEntry, WorkloadGroup, Sidecar, PeerAuthentication, AuthorizationPolicy, RequestAuthentication, Telemetry, RateLimit, OIDCLogin; and from the Gateway API: GatewayClass, Gateway, HTTPRoute, GRPCRoute, TCPRoute, TLSRoute, ReferenceGrant; and Kubernetes Namespaces (for their labels))`,
				`error: t.yaml: doc 2: kind: unsupported kind "HTTPRoute" (Weft loads VirtualService, DestinationRule, Gateway, ServiceEntry, WorkloadEntry, WorkloadGroup, Sidecar, PeerAuthentication, AuthorizationPolicy, RequestAuthentication, Telemetry, RateLimit, OIDCLogin; and from the Gateway API: GatewayClass, Gateway, HTTPRoute, GRPCRoute, TCPRoute, TLSRoute, ReferenceGrant; and Kubernetes Namespaces (for their labels))`,
				`error: t.yaml: doc 3: GatewayClass default/c: spec.controllerName: invalid controllerName "no-slash": want a domain-prefixed path such as weft.dev/gateway-controller`,
				`error: t.yaml: doc 4: ReferenceGrant default/g: spec.from: from needs at least one entry`,
				`error: t.yaml: doc 4: ReferenceGrant default/g: spec.to[0].kind: kind is required`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			snap := NewStore(testOptions()).Load(files("t.yaml", tt.doc))
			checkStrings(t, "diagnostics", sorted(diagStrings(snap)), sorted(tt.want))
		})
	}
}

// An Istio Gateway and a Gateway API Gateway of one name are two
// resources: the kind is read within its API group.
func TestGatewayAPINameClash(t *testing.T) {
	docs := gwapiBase + `---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public, namespace: edge}
spec:
  selector: {istio: ingress}
  servers: [{port: {number: 8080, name: http, protocol: HTTP}, hosts: ["*"]}]
`
	snap := NewStore(testOptions()).Load(files("gw.yaml", docs))
	checkStrings(t, "diagnostics", diagStrings(snap), nil)
	var names []string
	for _, gw := range snap.Gateways {
		names = append(names, gw.Key())
	}
	checkStrings(t, "gateways", names, []string{"Gateway/edge/public", "Gateway/edge/public-gwapi-http", "Gateway/edge/public-gwapi-https"})
	if len(snap.KubeGateways) != 1 || snap.KubeGateways[0].Key() != "Gateway.gateway.networking.k8s.io/edge/public" {
		t.Errorf("Gateway API gateways: %v", snap.KubeGateways)
	}
}

// A bad edit of an HTTPRoute keeps its last good version in force, and
// so the routes made from it.
func TestGatewayAPILastGoodVersion(t *testing.T) {
	route := `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: edge}
spec:
  parentRefs: [{name: public}]
  rules: [{backendRefs: [{name: %s, port: 80}]}]
`
	s := NewStore(testOptions())
	s.Load(files("gw.yaml", gwapiBase, "r.yaml", strings.Replace(route, "%s", "web", 1)))
	snap := s.Load(files("gw.yaml", gwapiBase, "r.yaml", strings.Replace(route, "%s", "web, weight: -1", 1)))
	if !slices.ContainsFunc(snap.Diagnostics, func(d Diagnostic) bool { return d.Path == "spec.rules[0].backendRefs[0].weight" }) {
		t.Errorf("no diagnostic for the bad weight: %v", diagStrings(snap))
	}
	found := false
	for _, vs := range snap.VirtualServices {
		if vs.Name == "public-gwapi-http.wildcard" {
			found = vs.Spec.GetHttp()[0].GetRoute()[0].GetDestination().GetHost() == "web.edge.svc.cluster.local"
		}
	}
	if !found {
		t.Error("the last good HTTPRoute is not served")
	}
}

// The classes "weft" and "istio" exist without being written, as istiod
// creates "istio" itself (Istio's samples name it and define no class).
func TestGatewayAPIBuiltinClasses(t *testing.T) {
	gw := `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: %s}
spec:
  gatewayClassName: %s
  listeners: [{name: http, port: 80, protocol: HTTP}]
`
	docs := strings.Join([]string{
		fmt.Sprintf(gw, "a", "istio"), fmt.Sprintf(gw, "b", "weft"), fmt.Sprintf(gw, "c", "nope"),
	}, "---\n")
	snap := NewStore(testOptions()).Load(files("gw.yaml", docs))
	checkStrings(t, "diagnostics", diagStrings(snap), []string{
		`warning: gw.yaml: doc 3: Gateway.gateway.networking.k8s.io default/c: spec.gatewayClassName: GatewayClass "nope" does not exist; the Gateway is not served`,
	})
	var names []string
	for _, g := range snap.Gateways {
		names = append(names, g.Name)
	}
	checkStrings(t, "gateways", names, []string{"a-gwapi-http", "b-gwapi-http"})
}

// A GRPCRoute is the HTTPRoute it means: method matches become path
// matches of /<service>/<method>.
func TestGatewayAPIGRPCRoute(t *testing.T) {
	route := `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: greeter, namespace: edge}
spec:
  parentRefs: [{name: public, sectionName: http}]
  hostnames: [grpc.example.com]
  rules:
  - matches:
    - method: {service: weft.echo.v1.Echo, method: Echo}
      headers: [{name: x-version, value: v2}]
    - method: {method: Stream}
    backendRefs: [{name: greeter-v2, port: 8080}]
  - matches: [{method: {service: weft.echo.v1.Echo}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-via, value: gateway}]}
    backendRefs: [{name: greeter-v1, port: 8080}]
  - matches: [{method: {type: RegularExpression, service: "weft\\..*"}}]
    backendRefs: [{name: other, namespace: elsewhere, port: 8080}]
`
	snap := NewStore(testOptions()).Load(files("gw.yaml", gwapiBase, "grpc.yaml", route))
	checkStrings(t, "diagnostics", diagStrings(snap), []string{
		`error: grpc.yaml: doc 1: GRPCRoute edge/greeter: spec.rules[2].backendRefs[0]: Service elsewhere/other is in another namespace and no ReferenceGrant there permits GRPCRoutes of namespace edge to refer to it; requests for this backend are answered 500`,
	})
	wantSpecs(t, snap.VirtualServices, map[string]string{
		"edge/public-gwapi-http.grpc.example.com": `
hosts: [grpc.example.com]
gateways: [edge/public-gwapi-http]
http:
- name: edge.greeter.0.0
  match: [{uri: {exact: /weft.echo.v1.Echo/Echo}, headers: {x-version: {exact: v2}}}]
  route: [{destination: {host: greeter-v2.edge.svc.cluster.local, port: {number: 8080}}}]
- name: edge.greeter.1.0
  match: [{uri: {exact: /weft.echo.v1.Echo}}]
  route: [{destination: {host: greeter-v1.edge.svc.cluster.local, port: {number: 8080}}}]
  headers: {request: {set: {x-via: gateway}}}
- name: edge.greeter.1.0
  match: [{uri: {prefix: /weft.echo.v1.Echo/}}]
  route: [{destination: {host: greeter-v1.edge.svc.cluster.local, port: {number: 8080}}}]
  headers: {request: {set: {x-via: gateway}}}
# Regular expressions last, the longest first.
- name: edge.greeter.2.0
  match: [{uri: {regex: "/weft\\..*/[^/]+"}}]
  directResponse: {status: 500}
- name: edge.greeter.0.1
  match: [{uri: {regex: "/[^/]+/Stream"}}]
  route: [{destination: {host: greeter-v2.edge.svc.cluster.local, port: {number: 8080}}}]`,
	}, func() *networking.VirtualService { return &networking.VirtualService{} })
}

// A request for a host some route names is also routed by the routes of
// the wildcards covering it, after that route's own rules: the Gateway
// API ranks hostnames, a proxy picks one virtual host.
func TestGatewayAPIWiderHostsFallBack(t *testing.T) {
	routes := `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: a, namespace: edge}
spec:
  parentRefs: [{name: public, sectionName: https}]
  hostnames: [a.example.com]
  rules: [{matches: [{path: {type: Exact, value: /a}}], backendRefs: [{name: a, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: b, namespace: edge}
spec:
  parentRefs: [{name: public, sectionName: https}]
  rules: [{matches: [{path: {type: Exact, value: /b}}], backendRefs: [{name: b, port: 80}]}]
`
	snap := NewStore(testOptions()).Load(files("gw.yaml", gwapiBase, "routes.yaml", routes))
	checkStrings(t, "diagnostics", diagStrings(snap), nil)
	wantSpecs(t, snap.VirtualServices, map[string]string{
		"edge/public-gwapi-https.a.example.com": `
hosts: [a.example.com]
gateways: [edge/public-gwapi-https]
http:
- {name: edge.a.0.0, match: [{uri: {exact: /a}}], route: [{destination: {host: a.edge.svc.cluster.local, port: {number: 80}}}]}
- {name: edge.b.0.0, match: [{uri: {exact: /b}}], route: [{destination: {host: b.edge.svc.cluster.local, port: {number: 80}}}]}`,
		"edge/public-gwapi-https.wildcard.example.com": `
hosts: ["*.example.com"]
gateways: [edge/public-gwapi-https]
http:
- {name: edge.b.0.0, match: [{uri: {exact: /b}}], route: [{destination: {host: b.edge.svc.cluster.local, port: {number: 80}}}]}`,
	}, func() *networking.VirtualService { return &networking.VirtualService{} })
}

// A rule with a filter Weft lacks answers 500 and nothing else, even
// beside a redirect, as the Gateway API requires.
func TestGatewayAPIUnsupportedFilterAnswers500(t *testing.T) {
	route := `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: edge}
spec:
  parentRefs: [{name: public, sectionName: http}]
  hostnames: [r.example.com]
  rules:
  - filters:
    - {type: RequestRedirect, requestRedirect: {scheme: https}}
    - {type: ExtensionRef, extensionRef: {group: example.com, kind: Thing, name: x}}
`
	snap := NewStore(testOptions()).Load(files("gw.yaml", gwapiBase, "r.yaml", route))
	checkStrings(t, "diagnostics", diagStrings(snap), []string{
		`warning: r.yaml: doc 1: HTTPRoute edge/r: spec.rules[0].filters[1].type: filter type ExtensionRef is not supported by Weft yet: requests this rule matches are answered 500, as the Gateway API requires`,
	})
	wantSpecs(t, snap.VirtualServices, map[string]string{
		"edge/public-gwapi-http.r.example.com": `
hosts: [r.example.com]
gateways: [edge/public-gwapi-http]
http: [{name: edge.r.0.0, directResponse: {status: 500}}]`,
	}, func() *networking.VirtualService { return &networking.VirtualService{} })
}

// TestGatewayAPINamespaceSelector: a listener's allowedRoutes.namespaces
// selector admits the routes of the namespaces whose labels it matches:
// a Namespace's own labels, and kubernetes.io/metadata.name, which every
// namespace has.
func TestGatewayAPINamespaceSelector(t *testing.T) {
	docs := `apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: weft}
spec: {controllerName: weft.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: shared, namespace: infra}
spec:
  gatewayClassName: weft
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: Selector
        selector:
          matchLabels: {shared-gateway-access: "true"}
  - name: by-name
    port: 8080
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: Selector
        selector:
          matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: [team-c]}]
---
apiVersion: v1
kind: Namespace
metadata:
  name: team-a
  labels: {shared-gateway-access: "true"}
---
apiVersion: v1
kind: Namespace
metadata: {name: team-b, labels: {shared-gateway-access: "false"}}
`
	route := func(ns, section string) string {
		return fmt.Sprintf(`---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r-%[2]s, namespace: %[1]s}
spec:
  parentRefs: [{name: shared, namespace: infra, sectionName: %[2]s}]
  hostnames: [%[1]s.example.com]
  rules: [{backendRefs: [{name: web, port: 80}]}]
`, ns, section)
	}
	snap := NewStore(testOptions()).Load(files("gw.yaml", docs+route("team-a", "http")+route("team-b", "http")+route("team-c", "by-name")+route("team-a", "by-name")))
	var hosts []string
	for _, vs := range snap.VirtualServices {
		hosts = append(hosts, vs.Spec.GetHosts()...)
	}
	slices.Sort(hosts)
	checkStrings(t, "hosts served", hosts, []string{"team-a.example.com", "team-c.example.com"})
	checkStrings(t, "diagnostics", diagStrings(snap), []string{
		`warning: gw.yaml: doc 6: HTTPRoute team-b/r-http: spec.parentRefs[0]: not attached to Gateway infra/shared: listener "http" admits routes of namespaces labelled shared-gateway-access=true only (allowedRoutes.namespaces.selector), and namespace team-b is not`,
		`warning: gw.yaml: doc 8: HTTPRoute team-a/r-by-name: spec.parentRefs[0]: not attached to Gateway infra/shared: listener "by-name" admits routes of namespaces labelled kubernetes.io/metadata.name in (team-c) only (allowedRoutes.namespaces.selector), and namespace team-a is not`,
	})
}

// TestNamespaceDocument: a Namespace is read for its labels; a name that
// is not a DNS-1123 label is refused where it is written.
func TestNamespaceDocument(t *testing.T) {
	snap := NewStore(testOptions()).Load(files("ns.yaml", `apiVersion: v1
kind: Namespace
metadata: {name: team-a, labels: {shared: "true"}}
---
apiVersion: v1
kind: Namespace
metadata: {name: team.b}
`))
	if len(snap.Namespaces) != 1 || snap.Namespaces[0].Spec.Labels["shared"] != "true" {
		t.Errorf("namespaces in force: %v", snap.Namespaces)
	}
	checkStrings(t, "diagnostics", diagStrings(snap), []string{
		`error: ns.yaml: doc 2: Namespace default/team.b: metadata.name: invalid Namespace name "team.b": must be a lowercase DNS-1123 label`,
	})
}

// A certificate of another namespace is served when a ReferenceGrant
// there permits the Gateway's namespace, named as Istio names it; without
// one, the listener is refused with RefNotPermitted. A user's Istio
// Gateway cannot name such a credential.
func TestGatewayAPICertificateOfAnotherNamespace(t *testing.T) {
	gw := `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: public, namespace: shop}
spec:
  gatewayClassName: weft
  listeners:
  - {name: https, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: shop-cert, namespace: certs}]}}
`
	grant := `apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: shop-gateways, namespace: certs}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: shop}]
  to: [{group: "", kind: Secret, name: shop-cert}]
`
	snap := NewStore(testOptions()).Load(files("gw.yaml", gw))
	if !slices.ContainsFunc(snap.Diagnostics, func(d Diagnostic) bool {
		return d.Code == CodeRefNotPermitted && strings.Contains(d.Message, "no ReferenceGrant there permits Gateways of namespace shop")
	}) || len(snap.Gateways) != 0 {
		t.Errorf("without a grant: gateways %d, diagnostics %v", len(snap.Gateways), diagStrings(snap))
	}
	snap = NewStore(testOptions()).Load(files("gw.yaml", gw, "grant.yaml", grant))
	if len(snap.Gateways) != 1 {
		t.Fatalf("with a grant: gateways %d, diagnostics %v", len(snap.Gateways), diagStrings(snap))
	}
	if got := snap.Gateways[0].Spec.GetServers()[0].GetTls().GetCredentialName(); got != "kubernetes-gateway://certs/shop-cert" {
		t.Errorf("credentialName %q", got)
	}
	istio := `apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: forged, namespace: shop}
spec:
  selector: {app: gw}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: ["*"]
    tls: {mode: SIMPLE, credentialName: "kubernetes-gateway://certs/shop-cert"}
`
	snap = NewStore(testOptions()).Load(files("istio.yaml", istio))
	if len(snap.Gateways) != 0 {
		t.Errorf("an Istio Gateway naming kubernetes-gateway:// was accepted: %v", diagStrings(snap))
	}
}
