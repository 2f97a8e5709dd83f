package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/echo"
	"weft.dev/weft/internal/localmesh"
	"weft.dev/weft/internal/proxy/proxytest"
)

// The Kubernetes Gateway API through a real gateway proxy: a Gateway of
// Weft's GatewayClass picks the proxy labelled with its name, and an
// HTTPRoute attached to it routes by path (by path elements: /api
// covers /api/x, not /apix), by header, and splits 90/10 by weight, with
// a RequestHeaderModifier the backend sees. A route of another namespace
// is refused by the listener's allowedRoutes (Same, the default), and
// the control plane says why.
func TestGatewayAPIHTTPRoute(t *testing.T) {
	m := NewMesh(t)
	m.Service("web", "HTTP", "v1")
	m.Service("stable", "HTTP", "v1")
	m.Service("canary", "HTTP", "v2")
	ip := nextIP()
	port, err := localmesh.FreePort(ip)
	if err != nil {
		t.Fatal(err)
	}
	m.WriteConfig("gateway-api.yaml", fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: weft}
spec: {controllerName: weft.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: public, namespace: default}
spec:
  gatewayClassName: weft
  listeners:
  - {name: http, port: %d, protocol: HTTP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: default}
spec:
  parentRefs: [{name: public, sectionName: http}]
  hostnames: [shop.example.com]
  rules:
  - matches:
    - path: {type: PathPrefix, value: /api}
      headers: [{name: x-canary, value: always}]
    backendRefs: [{name: canary, port: 8080}]
  - matches: [{path: {type: PathPrefix, value: /api}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set: [{name: x-gateway, value: weft}]
        remove: [x-secret]
    backendRefs:
    - {name: stable, port: 8080, weight: 90}
    - {name: canary, port: 8080, weight: 10}
  - matches: [{path: {type: Exact, value: /}}]
    backendRefs: [{name: web, port: 8080}]
---
# Another namespace's route: the listener admits routes of namespace
# default only.
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: intruder, namespace: other}
spec:
  parentRefs: [{name: public, namespace: default}]
  hostnames: [evil.example.com]
  rules: [{backendRefs: [{name: web, port: 8080}]}]
`, port))
	m.gatewayAt("gw-api", "default", ip, map[string]string{config.GatewayNameLabel: "public"})
	c := gatewayClient(net.JoinHostPort(ip, fmt.Sprint(port)), nil)
	Eventually(t, 20*time.Second, "the gateway routing shop.example.com", func() error {
		if code, _, r, err := gwGet(c, "http://shop.example.com/"); err != nil || code != 200 || !strings.HasPrefix(r.Name, "web-") {
			return fmt.Errorf("GET /: %d from %q (%v)", code, r.Name, err)
		}
		return nil
	})

	for _, tc := range []struct {
		host, path string
		code       int
		answeredBy string
	}{
		{"shop.example.com", "/", 200, "web-"},
		{"shop.example.com", "/apix", 404, ""},    // not below /api: no rule matches
		{"shop.example.com", "/other", 404, ""},   // "/" is an Exact match
		{"evil.example.com", "/api/x", 404, ""},   // the intruder is not attached
		{"other.example.com", "/api/x", 404, ""},  // not a hostname of the route
		{"shop.example.com", "/api", 200, ""},     // the prefix itself
		{"shop.example.com", "/api/x/y", 200, ""}, // and below it
	} {
		code, _, r, err := gwGet(c, "http://"+tc.host+tc.path)
		if err != nil || code != tc.code || !strings.HasPrefix(r.Name, tc.answeredBy) {
			t.Errorf("%s%s: %d from %q (%v), want %d from %s", tc.host, tc.path, code, r.Name, err, tc.code, tc.answeredBy)
		}
	}

	// The header match wins over the weighted rule, every time.
	for i := range 20 {
		req, _ := http.NewRequest("GET", "http://shop.example.com/api/items", nil)
		req.Header.Set("X-Canary", "always")
		r, code, err := gwDo(c, req)
		if err != nil || code != 200 || !strings.HasPrefix(r.Name, "canary-") {
			t.Fatalf("request %d with x-canary: %d from %q (%v), want canary", i, code, r.Name, err)
		}
	}

	// 90/10 over 500 requests. The canary count is Binomial(500, 0.1):
	// mean 50, sd sqrt(500*0.1*0.9) = 6.7; the bounds are 5 sd either
	// side (17..83), which a correct split leaves with probability under
	// 1e-6, while a split ignoring weights (250) or sending nothing to
	// the canary (0) falls far outside.
	const n = 500
	canary := 0
	for i := range n {
		req, _ := http.NewRequest("GET", "http://shop.example.com/api/items", nil)
		req.Header.Set("X-Secret", "do-not-forward")
		r, code, err := gwDo(c, req)
		if err != nil || code != 200 {
			t.Fatalf("request %d: %d (%v)", i, code, err)
		}
		switch {
		case strings.HasPrefix(r.Name, "canary-"):
			canary++
		case !strings.HasPrefix(r.Name, "stable-"):
			t.Fatalf("request %d answered by %q", i, r.Name)
		}
		// The RequestHeaderModifier, as the backend saw the request.
		if r.Headers["x-gateway"] != "weft" || r.Headers["x-secret"] != "" {
			t.Fatalf("request %d: backend saw x-gateway %q, x-secret %q; want weft and none", i, r.Headers["x-gateway"], r.Headers["x-secret"])
		}
	}
	t.Logf("canary answered %d of %d (want about %d)", canary, n, n/10)
	if canary < 17 || canary > 83 {
		t.Errorf("canary answered %d of %d requests, want 17..83 (10%% within 5 sd)", canary, n)
	}

	// The control plane says why the intruder is not served.
	st, err := m.Status()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, d := range st.Diagnostics {
		if d.Code == config.CodeRouteNotAttached && d.Resource == "HTTPRoute other/intruder" {
			found = strings.Contains(d.Message, `listener "http" admits routes of namespace default only`)
		}
	}
	if !found {
		t.Errorf("no diagnostic saying why HTTPRoute other/intruder is refused: %v", st.Diagnostics)
	}
}

// gwDo sends req through c and returns the echo reply and the status.
func gwDo(c *http.Client, req *http.Request) (echo.Reply, int, error) {
	var r echo.Reply
	resp, err := c.Do(req)
	if err != nil {
		return r, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return r, resp.StatusCode, err
	}
	_ = json.Unmarshal(b, &r) // not an echo reply: r stays empty
	return r, resp.StatusCode, nil
}

// An HTTPS listener of a Gateway API Gateway terminates TLS with the
// certificate its certificateRefs name (read as a credentialName, from
// the gateway's credential directory), verified by a real TLS client;
// the plain HTTP listener redirects to it with a RequestRedirect.
func TestGatewayAPIHTTPS(t *testing.T) {
	m := NewMesh(t)
	m.Service("web", "HTTP", "v1")
	ca := proxytest.NewMeshCA(t)
	creds := t.TempDir()
	writeCredential(t, creds, "shop-cert", ca.Issue(t, "", time.Hour, "shop.example.com"), nil)
	gw := m.startGateway("gw-api-tls", "default", map[string]string{config.GatewayNameLabel: "public"}, creds)
	ip := gw.Opts.IP
	ports, err := localmesh.FreePorts(ip, 2)
	if err != nil {
		t.Fatal(err)
	}
	httpPort, httpsPort := ports[0], ports[1]
	m.WriteConfig("gateway-api.yaml", fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: public, namespace: default}
spec:
  gatewayClassName: weft
  listeners:
  - {name: http, port: %d, protocol: HTTP}
  - name: https
    port: %d
    protocol: HTTPS
    hostname: "*.example.com"
    tls: {certificateRefs: [{name: shop-cert}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: to-https, namespace: default}
spec:
  parentRefs: [{name: public, sectionName: http}]
  hostnames: [shop.example.com]
  rules:
  - filters:
    - type: RequestRedirect
      requestRedirect: {scheme: https, port: %[2]d, statusCode: 301}
  - matches: [{path: {type: PathPrefix, value: /docs}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /manual}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop, namespace: default}
spec:
  parentRefs: [{name: public, sectionName: https}]
  hostnames: [shop.example.com]
  rules: [{backendRefs: [{name: web, port: 8080}]}]
`, httpPort, httpsPort))
	https := gatewayClient(net.JoinHostPort(ip, fmt.Sprint(httpsPort)), &tls.Config{RootCAs: ca.Pool})
	Eventually(t, 20*time.Second, "https routed", func() error {
		code, _, r, err := gwGet(https, fmt.Sprintf("https://shop.example.com:%d/cart", httpsPort))
		if err != nil || code != 200 || !strings.HasPrefix(r.Name, "web-") {
			return fmt.Errorf("%d from %q (%v)", code, r.Name, err)
		}
		return nil
	})
	resp, err := https.Get(fmt.Sprintf("https://shop.example.com:%d/", httpsPort))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if got := resp.TLS.PeerCertificates[0].DNSNames; len(got) != 1 || got[0] != "shop.example.com" {
		t.Errorf("certificate for %v, want shop.example.com", got)
	}
	plain := gatewayClient(net.JoinHostPort(ip, fmt.Sprint(httpPort)), nil)
	Eventually(t, 10*time.Second, "http redirected", func() error {
		code, loc, _, err := gwGet(plain, fmt.Sprintf("http://shop.example.com:%d/cart?x=1", httpPort))
		want := fmt.Sprintf("https://shop.example.com:%d/cart?x=1", httpsPort)
		if err != nil || code != 301 || loc != want {
			return fmt.Errorf("%d to %q (%v), want 301 to %s", code, loc, err, want)
		}
		return nil
	})
	// ReplacePrefixMatch replaces the matched path prefix, by path
	// element, and keeps the query; /docsx is not under /docs.
	for path, want := range map[string]string{
		"/docs":         "/manual",
		"/docs/":        "/manual/",
		"/docs/a/b?q=1": "/manual/a/b?q=1",
		"/docsx/a":      "https://shop.example.com:%d/docsx/a",
	} {
		if strings.Contains(want, "%d") {
			want = fmt.Sprintf(want, httpsPort)
		} else {
			want = fmt.Sprintf("http://shop.example.com:%d%s", httpPort, want)
		}
		code, loc, _, err := gwGet(plain, fmt.Sprintf("http://shop.example.com:%d%s", httpPort, path))
		if err != nil || loc != want || (code != 302 && code != 301) {
			t.Errorf("%s: %d to %q (%v), want a redirect to %s", path, code, loc, err, want)
		}
	}
}

// A GRPCRoute through a gateway proxy: real gRPC calls over plaintext
// HTTP/2, routed by method (Echo with a header, and Stream) to one
// backend, the rest to another; calls keep their status codes.
func TestGatewayAPIGRPCRoute(t *testing.T) {
	m := NewMesh(t)
	m.Service("greeter-v1", "GRPC", "v1")
	m.Service("greeter-v2", "GRPC", "v2")
	ip := nextIP()
	port, err := localmesh.FreePort(ip)
	if err != nil {
		t.Fatal(err)
	}
	m.WriteConfig("gateway-api.yaml", fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: grpc, namespace: default}
spec:
  gatewayClassName: istio
  listeners:
  - {name: grpc, port: %d, protocol: HTTP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: greeter, namespace: default}
spec:
  parentRefs: [{name: grpc}]
  hostnames: [greeter.example.com]
  rules:
  - matches:
    - method: {service: %[2]s, method: Echo}
      headers: [{name: x-version, value: v2}]
    - method: {method: Stream}
    backendRefs: [{name: greeter-v2, port: 8080}]
  - backendRefs: [{name: greeter-v1, port: 8080}]
`, port, echo.ServiceName))
	m.gatewayAt("gw-grpc", "default", ip, map[string]string{config.GatewayNameLabel: "grpc"})
	cc, err := grpc.NewClient("passthrough:///"+net.JoinHostPort(ip, fmt.Sprint(port)),
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("greeter.example.com"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	answeredBy := func(ctx context.Context) (string, error) {
		r, err := echo.Call(ctx, cc, &structpb.Struct{})
		return r.GetFields()["name"].GetStringValue(), err
	}
	Eventually(t, 20*time.Second, "gRPC through the gateway", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		name, err := answeredBy(ctx)
		if err != nil || !strings.HasPrefix(name, "greeter-v1-") {
			return fmt.Errorf("answered by %q (%v)", name, err)
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range 10 {
		if name, err := answeredBy(ctx); err != nil || !strings.HasPrefix(name, "greeter-v1-") {
			t.Fatalf("call %d: answered by %q (%v), want greeter-v1", i, name, err)
		}
		v2 := metadata.AppendToOutgoingContext(ctx, "x-version", "v2")
		if name, err := answeredBy(v2); err != nil || !strings.HasPrefix(name, "greeter-v2-") {
			t.Fatalf("call %d with x-version v2: answered by %q (%v), want greeter-v2", i, name, err)
		}
	}
	sreq, _ := structpb.NewStruct(map[string]any{"count": float64(3)})
	replies, err := echo.Stream(ctx, cc, sreq)
	if err != nil || len(replies) != 3 || !strings.HasPrefix(replies[0].GetFields()["name"].GetStringValue(), "greeter-v2-") {
		t.Fatalf("Stream: %d replies %v (%v), want 3 from greeter-v2", len(replies), replies, err)
	}
	req, _ := structpb.NewStruct(map[string]any{"status": float64(codes.NotFound)})
	if _, err := echo.Call(ctx, cc, req); status.Code(err) != codes.NotFound {
		t.Fatalf("requested NOT_FOUND through the gateway, got %v", err)
	}
}
