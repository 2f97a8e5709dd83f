package e2e

import (
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"weft.dev/weft/internal/controlplane"
	"weft.dev/weft/internal/localmesh"
)

// clientFrom is an HTTP client whose connections come from the loopback
// address src.
func clientFrom(src string) *http.Client {
	d := &net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: d.DialContext, DisableKeepAlives: true}}
}

// TestGatewaySecurityPolicies: RequestAuthentication and
// AuthorizationPolicy select an ingress gateway by its labels, from the
// root namespace, as in Istio's "authorization on ingress gateway" and
// "JWT at the edge" tasks: /public/* is open, everything else needs a
// valid token of the issuer (401 for an invalid one, 403 for none), one
// client address is denied outright; a namespace-wide DENY policy of
// another namespace does not reach the gateway. A policy change applies
// to the gateway's next request.
func TestGatewaySecurityPolicies(t *testing.T) {
	is := newIssuer(t)
	m := NewMesh(t, func(o *controlplane.Options) { o.JWKSRefresh = 200 * time.Millisecond })
	m.Service("web", "HTTP", "v1")
	gw := m.startGateway("ingress", "istio-system", map[string]string{"istio": "ingressgateway"}, "")
	port, err := localmesh.FreePort(gw.Opts.IP)
	if err != nil {
		t.Fatal(err)
	}
	m.WriteConfig("gateway.yaml", apiGatewayYAML(port))
	addr := net.JoinHostPort(gw.Opts.IP, fmt.Sprint(port))
	c := newClient()
	eventuallyAll(t, "the gateway routing", c, addr, "api.example.com", []expect{
		{name: "open", path: "/private", code: 200},
	})

	m.WriteConfig("edge-security.yaml", fmt.Sprintf(`apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: edge-jwt, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  jwtRules:
  - issuer: %s
    jwksUri: %s/jwks
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: edge-allow, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  action: ALLOW
  rules:
  - to:
    - operation: {paths: ["/public/*"]}
  - from:
    - source: {requestPrincipals: ["*"]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: edge-blocklist, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  action: DENY
  rules:
  - from:
    - source: {remoteIpBlocks: ["127.0.0.2/32"]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all, namespace: team-a}
spec:
  action: DENY
  rules: [{}]
`, is.URL, is.URL))
	valid := bearer(is.token(t, nil))
	expired := bearer(is.token(t, map[string]any{"exp": time.Now().Add(-time.Hour).Unix()}))
	eventuallyAll(t, "the edge policies", c, addr, "api.example.com", []expect{
		{name: "public, no token", path: "/public/index.html", code: 200},
		{name: "private, no token", path: "/private", code: 403, body: denied},
		{name: "private, valid token", path: "/private", hdr: valid, code: 200},
		{name: "private, expired token", path: "/private", hdr: expired, code: 401, body: "Jwt is expired"},
	})
	eventuallyAll(t, "the blocked address", clientFrom("127.0.0.2"), addr, "api.example.com", []expect{
		{name: "public from the blocked address", path: "/public/index.html", code: 403, body: denied},
		{name: "private with a token from the blocked address", path: "/private", hdr: valid, code: 403, body: denied},
	})

	// Dropping the ALLOW policy opens the gateway again; the blocklist
	// still holds.
	m.WriteConfig("edge-security.yaml", `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: edge-blocklist, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  action: DENY
  rules:
  - from:
    - source: {remoteIpBlocks: ["127.0.0.2/32"]}
`)
	eventuallyAll(t, "the ALLOW policy gone", c, addr, "api.example.com", []expect{
		{name: "private, no token", path: "/private", code: 200},
	})
	eventuallyAll(t, "the blocklist kept", clientFrom("127.0.0.2"), addr, "api.example.com", []expect{
		{name: "blocked address", path: "/private", code: 403, body: denied},
	})
}

// TestGatewaySecurityTargetRef: an AuthorizationPolicy and a
// RequestAuthentication (keys from its jwksUri) attached with targetRef
// to a Gateway API Gateway apply to that Gateway's proxy (the one
// labelled gateway.networking.k8s.io/gateway-name with its name, in its
// namespace) and not to another gateway of the namespace.
func TestGatewaySecurityTargetRef(t *testing.T) {
	is := newIssuer(t)
	m := NewMesh(t, func(o *controlplane.Options) { o.JWKSRefresh = 200 * time.Millisecond })
	m.Service("web", "HTTP", "v1")
	edge := m.startGateway("edge", "istio-system", map[string]string{"istio": "ingressgateway", "gateway.networking.k8s.io/gateway-name": "edge"}, "")
	other := m.startGateway("other", "istio-system", map[string]string{"istio": "ingressgateway", "gateway.networking.k8s.io/gateway-name": "other"}, "")
	port, err := localmesh.FreePortOn(edge.Opts.IP, other.Opts.IP)
	if err != nil {
		t.Fatal(err)
	}
	m.WriteConfig("gateway.yaml", apiGatewayYAML(port)+fmt.Sprintf(`---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: edge-admin, namespace: istio-system}
spec:
  targetRef: {group: gateway.networking.k8s.io, kind: Gateway, name: edge}
  action: DENY
  rules:
  - to:
    - operation: {paths: ["/admin"]}
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: edge-jwt, namespace: istio-system}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: edge}]
  jwtRules:
  - issuer: %s
    jwksUri: %s/jwks
`, is.URL, is.URL))
	c := newClient()
	edgeAddr := net.JoinHostPort(edge.Opts.IP, fmt.Sprint(port))
	otherAddr := net.JoinHostPort(other.Opts.IP, fmt.Sprint(port))
	valid := bearer(is.token(t, nil))
	expired := bearer(is.token(t, map[string]any{"exp": time.Now().Add(-time.Hour).Unix()}))
	// The RequestAuthentication's keys are fetched from its jwksUri: a
	// valid token passes, an expired one is refused.
	eventuallyAll(t, "the targetRef policies on edge", c, edgeAddr, "api.example.com", []expect{
		{name: "edge /admin", path: "/admin", code: 403, body: denied},
		{name: "edge /", path: "/", code: 200},
		{name: "edge, valid token", path: "/", hdr: valid, code: 200},
		{name: "edge, expired token", path: "/", hdr: expired, code: 401, body: "Jwt is expired"},
	})
	eventuallyAll(t, "no policy on the other gateway", c, otherAddr, "api.example.com", []expect{
		{name: "other /admin", path: "/admin", code: 200},
		{name: "other, expired token", path: "/", hdr: expired, code: 200},
	})
}
