package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/controlplane"
	"weft.dev/weft/internal/echo"
	"weft.dev/weft/internal/localmesh"
)

// extAuthzServer is an external authorization service on loopback that
// decides as Istio's samples/extauthz server does: a request carrying
// "x-ext-authz: allow" is allowed (and told so in
// x-ext-authz-check-result), any other is denied with 403; "x-ext-authz:
// crash" makes the HTTP service fail with 500. It serves Envoy's HTTP
// check protocol and the gRPC envoy.service.auth.v3.Authorization, and
// remembers the HTTP checks' paths and the gRPC checks' principals.
type extAuthzServer struct {
	IP                 string
	HTTPPort, GRPCPort int
	mu                 sync.Mutex
	httpChecks         []string // "<method> <path> <x-mesh header>"
	grpcPrincipals     []string // the source principal of each gRPC check
}

func startExtAuthz(t *testing.T) *extAuthzServer {
	t.Helper()
	s := &extAuthzServer{IP: nextIP()}
	hl, err := net.Listen("tcp", net.JoinHostPort(s.IP, "0"))
	if err != nil {
		t.Fatal(err)
	}
	gl, err := net.Listen("tcp", net.JoinHostPort(s.IP, "0"))
	if err != nil {
		t.Fatal(err)
	}
	s.HTTPPort, s.GRPCPort = hl.Addr().(*net.TCPAddr).Port, gl.Addr().(*net.TCPAddr).Port
	hs := &http.Server{Handler: http.HandlerFunc(s.serveHTTP), ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(hl)
	gs := grpc.NewServer()
	authv3.RegisterAuthorizationServer(gs, grpcAuthz{s})
	go gs.Serve(gl)
	t.Cleanup(func() { hs.Close(); gs.Stop() })
	return s
}

func (s *extAuthzServer) serveHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.httpChecks = append(s.httpChecks, r.Method+" "+r.URL.RequestURI()+" "+r.Header.Get("X-Mesh"))
	s.mu.Unlock()
	switch r.Header.Get("X-Ext-Authz") {
	case "allow":
		w.Header().Set("X-Ext-Authz-Check-Result", "allowed")
		w.Header().Set("X-User-Name", "alice")
		w.Header().Set("X-Not-Forwarded", "1")
		w.WriteHeader(http.StatusOK)
	case "crash":
		http.Error(w, "the authorization backend is down", http.StatusInternalServerError)
	default:
		w.Header().Set("X-Ext-Authz-Check-Result", "denied")
		w.Header().Set("X-Not-Forwarded", "1")
		w.WriteHeader(http.StatusForbidden)
		io.WriteString(w, "denied by ext_authz for not found header `x-ext-authz: allow` in the request")
	}
}

type grpcAuthz struct{ s *extAuthzServer }

func (g grpcAuthz) Check(_ context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	attrs := req.GetAttributes()
	g.s.mu.Lock()
	g.s.grpcPrincipals = append(g.s.grpcPrincipals, attrs.GetSource().GetPrincipal())
	g.s.mu.Unlock()
	if attrs.GetRequest().GetHttp().GetHeaders()["x-ext-authz"] == "allow" {
		return &authv3.CheckResponse{
			Status: &status.Status{Code: int32(codes.OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
				Headers:         []*core.HeaderValueOption{{Header: &core.HeaderValue{Key: "x-ext-authz-check-result", Value: "allowed"}}},
				HeadersToRemove: []string{"x-ext-authz"},
			}},
		}, nil
	}
	return &authv3.CheckResponse{
		Status: &status.Status{Code: int32(codes.PermissionDenied)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode_Unauthorized},
			Headers: []*core.HeaderValueOption{{Header: &core.HeaderValue{Key: "x-ext-authz-check-result", Value: "denied"}}},
			Body:    "denied by the gRPC service",
		}},
	}, nil
}

// TestSecurityExtAuthz: AuthorizationPolicy CUSTOM with Istio's two
// sample providers, an HTTP and a gRPC external authorization service
// (real servers on loopback, reached as a mesh service through the
// client... the server's sidecar's cluster). Only the requests a
// policy's rules match are checked; the HTTP check gets the path prefix,
// the allowed headers and the fixed extra header, its verdict's headers
// go upstream (on allow) or to the client (on deny) as the provider
// says; the gRPC check sees the caller's identity and its OK response
// sets and removes request headers; a failing HTTP service answers
// statusOnError; a provider that does not exist fails closed.
func TestSecurityExtAuthz(t *testing.T) {
	az := startExtAuthz(t)
	mc, _, err := config.ParseMeshConfig("mesh-config.yaml", []byte(`
extensionProviders:
- name: sample-ext-authz-http
  envoyExtAuthzHttp:
    service: ext-authz.default.svc.cluster.local
    port: 8000
    pathPrefix: /check
    includeRequestHeadersInCheck: ["x-ext-authz"]
    includeAdditionalHeadersInCheck: {x-mesh: weft}
    headersToUpstreamOnAllow: ["x-ext-authz-check-result", "x-user-*"]
    headersToDownstreamOnDeny: ["x-ext-authz-check-result"]
    statusOnError: "503"
- name: sample-ext-authz-grpc
  envoyExtAuthzGrpc:
    service: ext-authz.default.svc.cluster.local
    port: 9000
    timeout: 5s
`))
	if err != nil {
		t.Fatal(err)
	}
	m := NewMesh(t, func(o *controlplane.Options) { o.MeshConfig = mc })
	m.Service("orders", "HTTP", "v1")
	frontend := m.Client("frontend")
	m.WriteConfig("ext-authz.yaml", fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext-authz, namespace: default}
spec:
  hosts: [ext-authz.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 8000, name: http, protocol: HTTP}
  - {number: 9000, name: grpc, protocol: GRPC}
  endpoints:
  - address: %s
    ports: {http: %d, grpc: %d}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-authz-http, namespace: default}
spec:
  selector: {matchLabels: {app: orders}}
  action: CUSTOM
  provider: {name: sample-ext-authz-http}
  rules:
  - to:
    - operation: {paths: ["/http/*"]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-authz-grpc, namespace: default}
spec:
  selector: {matchLabels: {app: orders}}
  action: CUSTOM
  provider: {name: sample-ext-authz-grpc}
  rules:
  - to:
    - operation: {paths: ["/grpc/*"]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-authz-missing, namespace: default}
spec:
  selector: {matchLabels: {app: orders}}
  action: CUSTOM
  provider: {name: not-configured}
  rules:
  - to:
    - operation: {paths: ["/missing/*"]}
`, az.IP, az.HTTPPort, az.GRPCPort))
	c := newClient()
	allow := map[string]string{"x-ext-authz": "allow"}
	httpDenied := "denied by ext_authz for not found header `x-ext-authz: allow` in the request"
	eventuallyAll(t, "the CUSTOM policies", c, frontend.Outbound, "orders", []expect{
		{name: "unchecked path", path: "/open", code: 200},
		{name: "HTTP provider allows", path: "/http/a", hdr: allow, code: 200},
		{name: "HTTP provider denies", path: "/http/a", code: 403, body: httpDenied},
		{name: "HTTP provider fails", path: "/http/a", hdr: map[string]string{"x-ext-authz": "crash"}, code: 503, body: ""},
		{name: "gRPC provider allows", path: "/grpc/a", hdr: allow, code: 200},
		{name: "gRPC provider denies", path: "/grpc/a", code: 401, body: "denied by the gRPC service"},
		{name: "unknown provider fails closed", path: "/missing/a", hdr: allow, code: 403, body: "RBAC: access denied"},
	})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// On allow, the HTTP provider's headers that headersToUpstreamOnAllow
	// names reach the application, the others do not.
	code, _, r, err := call(ctx, c, frontend.Outbound, "GET", "orders", "/http/b?q=1", allow)
	if err != nil || code != 200 {
		t.Fatalf("/http/b allowed: %d %v", code, err)
	}
	if r.Headers["x-ext-authz-check-result"] != "allowed" || r.Headers["x-user-name"] != "alice" || r.Headers["x-not-forwarded"] != "" {
		t.Errorf("headers upstream after the HTTP check: %v, want x-ext-authz-check-result and x-user-name only", r.Headers)
	}
	// On deny, only headersToDownstreamOnDeny reach the client.
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+frontend.Outbound+"/http/c", nil)
	req.Host = "orders"
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 || resp.Header.Get("X-Ext-Authz-Check-Result") != "denied" || resp.Header.Get("X-Not-Forwarded") != "" {
		t.Errorf("denied: %d %v, want 403 with x-ext-authz-check-result only", resp.StatusCode, resp.Header)
	}
	// The gRPC provider's OK response set one header and removed another.
	code, _, r, err = call(ctx, c, frontend.Outbound, "GET", "orders", "/grpc/b", allow)
	if err != nil || code != 200 {
		t.Fatalf("/grpc/b allowed: %d %v", code, err)
	}
	if r.Headers["x-ext-authz-check-result"] != "allowed" || r.Headers["x-ext-authz"] != "" {
		t.Errorf("headers upstream after the gRPC check: %v, want x-ext-authz-check-result set and x-ext-authz removed", r.Headers)
	}

	if want := `no extension provider \"not-configured\"`; !strings.Contains(m.Logs(), want) {
		t.Errorf("the control plane's log does not say why default/ext-authz-missing fails closed (%s)", want)
	}

	az.mu.Lock()
	defer az.mu.Unlock()
	if !slices.Contains(az.httpChecks, "GET /check/http/b?q=1 weft") {
		t.Errorf("HTTP checks %q, want one for GET /check/http/b?q=1 with x-mesh: weft", az.httpChecks)
	}
	for _, chk := range az.httpChecks {
		if strings.Contains(chk, "/open") || strings.Contains(chk, "/grpc/") || strings.Contains(chk, "/missing/") {
			t.Errorf("HTTP provider checked %q, which its policy does not cover", chk)
		}
	}
	if len(az.grpcPrincipals) == 0 || az.grpcPrincipals[len(az.grpcPrincipals)-1] != "spiffe://cluster.local/ns/default/sa/frontend" {
		t.Errorf("gRPC checks' source principals %q, want the frontend's identity", az.grpcPrincipals)
	}
}

// TestGatewayExtAuthzLoginRedirect: the oauth2-proxy pattern at an
// ingress gateway — a CUSTOM policy selecting the gateway sends every
// request's cookies to an HTTP authorization service, which answers a
// browser without a session 302 to its login page (with a cookie), and
// a request with the session 200 with the user's name. The client gets
// the redirect and the cookie (headersToDownstreamOnDeny); the
// application gets the user (headersToUpstreamOnAllow) and never a
// request without a session.
func TestGatewayExtAuthzLoginRedirect(t *testing.T) {
	ip := nextIP()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	authz := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, err := r.Cookie("session"); err == nil && c.Value == "alice" {
			w.Header().Set("X-Auth-Request-User", "alice")
			return
		}
		w.Header().Set("Set-Cookie", "csrf=1; Path=/")
		w.Header().Set("X-Internal", "not for the client")
		http.Redirect(w, r, "https://login.example.com/start?rd="+r.Host+r.URL.RequestURI(), http.StatusFound)
	})}
	go authz.Serve(l)
	t.Cleanup(func() { authz.Close() })

	mc, _, err := config.ParseMeshConfig("mesh-config.yaml", []byte(`
extensionProviders:
- name: login-check
  envoyExtAuthzHttp:
    service: login-check.default.svc.cluster.local
    port: 4180
    includeRequestHeadersInCheck: ["cookie"]
    headersToUpstreamOnAllow: ["x-auth-request-*"]
    headersToDownstreamOnDeny: ["set-cookie"]
`))
	if err != nil {
		t.Fatal(err)
	}
	m := NewMesh(t, func(o *controlplane.Options) { o.MeshConfig = mc })
	m.Service("web", "HTTP", "v1")
	gw := m.startGateway("ingress", "istio-system", map[string]string{"istio": "ingressgateway"}, "")
	port, err := localmesh.FreePort(gw.Opts.IP)
	if err != nil {
		t.Fatal(err)
	}
	m.WriteConfig("gateway.yaml", apiGatewayYAML(port)+fmt.Sprintf(`---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: login-check, namespace: default}
spec:
  hosts: [login-check.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 4180, name: http, protocol: HTTP}]
  endpoints: [{address: %s, ports: {http: %d}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: login, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  action: CUSTOM
  provider: {name: login-check}
  rules: [{}]
`, ip, l.Addr().(*net.TCPAddr).Port))
	c := gatewayClient(net.JoinHostPort(gw.Opts.IP, fmt.Sprint(port)), nil)
	Eventually(t, 20*time.Second, "the gateway sending browsers to log in", func() error {
		resp, err := c.Get("http://api.example.com/orders?page=2")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusFound {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		if loc := resp.Header.Get("Location"); loc != "https://login.example.com/start?rd=api.example.com/orders?page=2" {
			return fmt.Errorf("Location %q", loc)
		}
		if resp.Header.Get("Set-Cookie") != "csrf=1; Path=/" || resp.Header.Get("X-Internal") != "" {
			return fmt.Errorf("headers %v: want the cookie and not x-internal", resp.Header)
		}
		return nil
	})
	req, _ := http.NewRequest("GET", "http://api.example.com/orders", nil)
	req.AddCookie(&http.Cookie{Name: "session", Value: "alice"})
	code, _, r, err := gwGetReq(c, req)
	if err != nil || code != 200 || r.Headers["x-auth-request-user"] != "alice" {
		t.Fatalf("with a session: %d %v, upstream headers %v; want 200 with x-auth-request-user: alice", code, err, r.Headers)
	}
}

// gwGetReq sends req through c and returns the status, the body and the
// echo reply.
func gwGetReq(c *http.Client, req *http.Request) (int, string, echo.Reply, error) {
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", echo.Reply{}, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var r echo.Reply
	_ = json.Unmarshal(b, &r)
	return resp.StatusCode, string(b), r, nil
}
