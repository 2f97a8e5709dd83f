package e2e

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/echo"
	"weft.dev/weft/internal/localmesh"
	"weft.dev/weft/internal/proxy/proxytest"
)

// conformanceDir holds HTTPRoute tests of the Gateway API conformance
// suite (sigs.k8s.io/gateway-api/conformance v1.6.3): their manifests as
// published, and cases.json, the expected responses of their Go files
// extracted by hack/gwconformance. See its README.md.
const conformanceDir = "testdata/gateway-api-conformance"

// The suite's namespaces.
const (
	confInfraNS = "gateway-conformance-infra"
	confAppNS   = "gateway-conformance-app-backend"
	confWebNS   = "gateway-conformance-web-backend"
)

// conformanceTest is one entry of cases.json.
type conformanceTest struct {
	Name      string            `json:"name"`
	Manifests []string          `json:"manifests"`
	Cases     []conformanceCase `json:"cases"`
}

// conformanceCase is the suite's http.ExpectedResponse, as much of it as
// these tests use.
type conformanceCase struct {
	Request         confRequest `json:"Request"`
	ExpectedRequest *struct {
		Request       confRequest `json:"Request"`
		AbsentHeaders []string    `json:"AbsentHeaders"`
	} `json:"ExpectedRequest"`
	RedirectRequest *struct {
		Scheme, Host, Port, Path string
	} `json:"RedirectRequest"`
	BackendSetResponseHeaders map[string]string `json:"BackendSetResponseHeaders"`
	Response                  struct {
		StatusCode        int                 `json:"StatusCode"`
		StatusCodes       []int               `json:"StatusCodes"`
		Headers           map[string]string   `json:"Headers"`
		ValidHeaderValues map[string][]string `json:"ValidHeaderValues"`
		AbsentHeaders     []string            `json:"AbsentHeaders"`
		IgnoreWhitespace  bool                `json:"IgnoreWhitespace"`
		Code              codes.Code          `json:"Code"` // gRPC
	} `json:"Response"`
	Backend   string `json:"Backend"`
	Namespace string `json:"Namespace"`
	// DeleteFirst, "<kind> <namespace>/<name>", is a resource the suite's
	// test deletes before this case (not in the suite's data: added to
	// cases.json by hand where the Go test does it).
	DeleteFirst string `json:"DeleteFirst"`
	// Gateway is the Gateway (of the infrastructure namespace) the suite
	// sends the request to; "" is same-namespace. Set by hand for the
	// tests that use several (the suite's Go code picks the address).
	Gateway string `json:"Gateway"`
	// Client is the namespace of the client a GAMMA case's request comes
	// from; "" is the mesh namespace. Set by hand (MeshConsumerRoute).
	Client string `json:"Client"`
	// TLS: the request goes over TLS to port 443, with SNI (default the
	// request's host), verifying the suite's certificate. Transcribed by
	// hand for the HTTPS listener tests (their Go code builds the cases).
	TLS bool   `json:"TLS"`
	SNI string `json:"SNI"`
	// Port is the port a plain request goes to when it is not 80 (a
	// Gateway of the test's listening elsewhere); set by hand.
	Port string `json:"Port"`

	// WebSocket: the case opens a WebSocket to /ws through the gateway
	// and has a text message echoed (HTTPRouteBackendProtocolWebSocket,
	// transcribed by hand).
	WebSocket bool `json:"WebSocket"`

	// A GRPCRoute test's case (the suite's grpc.ExpectedResponse): the
	// GrpcEcho method called (the one of the three requests set), with
	// RequestMetadata, and the gRPC Response.Code expected.
	EchoRequest, EchoTwoRequest, EchoThreeRequest *struct{}
	RequestMetadata                               *struct {
		Authority string
		Metadata  map[string]string
	}
}

type confRequest struct {
	Host, Method, Path string
	// Protocol "HTTP/2" asks for HTTP/2 (over TLS, by ALPN), "H2C" for
	// HTTP/2 in plaintext with prior knowledge.
	Protocol         string
	Headers          map[string]string
	UnfollowRedirect bool
}

// TestGatewayAPIConformanceHTTPRoute runs HTTPRoute tests of the Gateway
// API conformance suite against a real gateway proxy: the suite's base
// infrastructure (its Gateways and Namespaces, on port 80, the
// infra-backend-v1..v3, app-backend-v1/v2 and web-backend Services, each
// an echo workload behind its sidecar), each test's manifests as
// published, and each expected response checked as the suite's
// CompareRoundTrip does (status, backend, path, host and headers the
// backend saw, response headers, redirect target). The gateway listens on
// port 80, as the suite's does: it needs root.
func TestGatewayAPIConformanceHTTPRoute(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the conformance Gateway listens on port 80: run as root")
	}
	b, err := os.ReadFile(filepath.Join(conformanceDir, "cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	var tests []conformanceTest
	if err := json.Unmarshal(b, &tests); err != nil {
		t.Fatal(err)
	}

	m := NewMesh(t)
	// The suite's tls-validity-checks-certificate, which its HTTPS
	// listeners name, issued by a CA of the test's.
	ca := proxytest.NewMeshCA(t)
	creds := t.TempDir()
	writeCredential(t, creds, "tls-validity-checks-certificate", ca.Issue(t, "", time.Hour, "*", "*.org", "*.wildcard.org"), nil)
	for _, s := range []struct{ ns, name, protocol string }{
		{confInfraNS, "infra-backend-v1", "HTTP"}, {confInfraNS, "infra-backend-v2", "HTTP"}, {confInfraNS, "infra-backend-v3", "HTTP"},
		{confAppNS, "app-backend-v1", "HTTP"}, {confAppNS, "app-backend-v2", "HTTP"}, {confWebNS, "web-backend", "HTTP"},
		// The suite's Services with appProtocol kubernetes.io/h2c.
		{confInfraNS, "grpc-infra-backend-v1", "GRPC"}, {confInfraNS, "grpc-infra-backend-v2", "GRPC"}, {confInfraNS, "grpc-infra-backend-v3", "GRPC"},
	} {
		m.conformanceService(s.ns, s.name, s.protocol)
	}
	m.WriteConfig("conformance-base.yaml", `apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: weft}
spec: {controllerName: weft.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: same-namespace, namespace: `+confInfraNS+`}
spec:
  gatewayClassName: weft
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes:
      namespaces: {from: Same}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: all-namespaces, namespace: `+confInfraNS+`}
spec:
  gatewayClassName: weft
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes:
      namespaces: {from: All}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: backend-namespaces, namespace: `+confInfraNS+`}
spec:
  gatewayClassName: weft
  listeners:
  - name: http
    port: 80
    protocol: HTTP
    allowedRoutes:
      namespaces:
        from: Selector
        selector: {matchLabels: {gateway-conformance: backend}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: same-namespace-with-https-listener, namespace: `+confInfraNS+`}
spec:
  gatewayClassName: weft
  listeners:
  - name: https
    port: 443
    protocol: HTTPS
    allowedRoutes: {namespaces: {from: Same}}
    tls: {certificateRefs: [{group: "", kind: Secret, name: tls-validity-checks-certificate, namespace: `+confInfraNS+`}]}
  - name: https-with-hostname
    port: 443
    hostname: second-example.org
    protocol: HTTPS
    allowedRoutes: {namespaces: {from: Same}}
    tls: {certificateRefs: [{group: "", kind: Secret, name: tls-validity-checks-certificate, namespace: `+confInfraNS+`}]}
  - name: https-with-wildcard-hostname
    port: 443
    hostname: "*.wildcard.org"
    protocol: HTTPS
    allowedRoutes: {namespaces: {from: Same}}
    tls: {certificateRefs: [{group: "", kind: Secret, name: tls-validity-checks-certificate, namespace: `+confInfraNS+`}]}
  - name: https-with-hostname-matching-wildcard
    port: 443
    hostname: fourth-example.wildcard.org
    protocol: HTTPS
    allowedRoutes: {namespaces: {from: Same}}
    tls: {certificateRefs: [{group: "", kind: Secret, name: tls-validity-checks-certificate, namespace: `+confInfraNS+`}]}
---
apiVersion: v1
kind: Namespace
metadata: {name: `+confInfraNS+`, labels: {gateway-conformance: infra}}
---
apiVersion: v1
kind: Namespace
metadata: {name: `+confAppNS+`, labels: {gateway-conformance: backend}}
---
apiVersion: v1
kind: Namespace
metadata: {name: `+confWebNS+`, labels: {gateway-conformance: backend}}
`)
	// Each Gateway the tests send to has a gateway proxy on an address
	// of its own, started when a test first needs it.
	gateways := map[string]string{} // name -> IP
	gatewayIP := func(name string) string {
		if ip, ok := gateways[name]; ok {
			return ip
		}
		ip := nextIP()
		g, err := localmesh.StartGateway(localmesh.GatewayOptions{Name: name, Namespace: confInfraNS, IP: ip,
			Labels:        map[string]string{config.GatewayNameLabel: name},
			CredentialDir: creds, CredentialPoll: 100 * time.Millisecond, ControlPlane: m.CP, Logger: m.log})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = g.Stop() })
		gateways[name] = ip
		return ip
	}
	gatewayIP("same-namespace")
	c := &http.Client{
		Timeout:       5 * time.Second,
		Transport:     &http.Transport{DialContext: (&net.Dialer{Timeout: 2 * time.Second}).DialContext},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}

	for _, ct := range tests {
		t.Run(ct.Name, func(t *testing.T) {
			var docs []string
			for _, f := range ct.Manifests {
				b, err := os.ReadFile(filepath.Join(conformanceDir, f))
				if err != nil {
					t.Fatal(err)
				}
				docs = append(docs, strings.ReplaceAll(string(b), "{GATEWAY_CLASS_NAME}", "weft"))
			}
			manifest := strings.Join(docs, "\n---\n")
			m.WriteConfig("conformance-test.yaml", manifest)
			t.Cleanup(func() { m.WriteConfig("conformance-test.yaml", "") })
			for i, tc := range ct.Cases {
				if tc.DeleteFirst != "" {
					manifest = withoutResource(t, manifest, tc.DeleteFirst)
					m.WriteConfig("conformance-test.yaml", manifest)
				}
				// As the suite: eventually consistent, the first case
				// waits for the test's routes to be in force.
				wait := 3 * time.Second
				if i == 0 {
					wait = 15 * time.Second
				}
				ip := gatewayIP(cmp.Or(tc.Gateway, "same-namespace"))
				cc := c
				if tc.TLS {
					cc = tlsClient(ip, cmp.Or(tc.SNI, tc.Request.Host), ca.Pool, tc.Request.Protocol == "HTTP/2")
				}
				check := func() error { return tc.check(cc, ip) }
				switch {
				case tc.grpcMethod() != "":
					check = func() error { return tc.checkGRPC(ip) }
				case tc.WebSocket:
					check = func() error { return tc.checkWebSocket(ip) }
				case tc.Request.Protocol == "H2C":
					check = func() error { return tc.check(h2cClient(ip), ip) }
				}
				Eventually(t, wait, fmt.Sprintf("case %d: %s %s%s%s", i, tc.Request.Method, tc.Request.Host, tc.Request.Path, tc.grpcMethod()), consistently(check))
			}
		})
	}
}

// consistentPasses is how many times in a row a case must pass, as the
// suite's "eventually consistent" checks: a case that load balancing or a
// config still in flight lets pass by chance does not count.
const consistentPasses = 5

// consistently returns a check that passes once check passed
// consistentPasses times in a row.
func consistently(check func() error) func() error {
	return func() error {
		for i := range consistentPasses {
			if err := check(); err != nil {
				if i > 0 {
					return fmt.Errorf("passed %d times, then: %w", i, err)
				}
				return err
			}
		}
		return nil
	}
}

// withoutResource returns the YAML documents of manifest but the one
// that is res, "<kind> <namespace>/<name>".
func withoutResource(t *testing.T, manifest, res string) string {
	t.Helper()
	var kept []string
	found := false
	for _, doc := range strings.Split(manifest, "\n---") {
		var meta struct {
			Kind     string `yaml:"kind"`
			Metadata struct{ Name, Namespace string }
		}
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatalf("manifest: %v", err)
		}
		if meta.Kind+" "+meta.Metadata.Namespace+"/"+meta.Metadata.Name == res {
			found = true
			continue
		}
		kept = append(kept, doc)
	}
	if !found {
		t.Fatalf("%s is not in the test's manifests", res)
	}
	return strings.Join(kept, "\n---")
}

// conformanceService registers Service name in namespace ns on port 8080
// of protocol, with one echo workload, <name>-0, behind its sidecar.
// infra-backend-v1 also has the suite's ports 8081 (appProtocol
// kubernetes.io/h2c) and 8082 (kubernetes.io/ws).
func (m *Mesh) conformanceService(ns, name, protocol string) {
	ports, wePorts := fmt.Sprintf("[{number: 8080, name: http, protocol: %s}]", protocol), "{http: %[4]d}"
	if name == "infra-backend-v1" {
		ports = "[{number: 8080, name: http, protocol: HTTP}, {number: 8081, name: h2c, protocol: HTTP2}, {number: 8082, name: ws, protocol: HTTP}]"
		wePorts = "{http: %[4]d, h2c: %[4]d, ws: %[4]d}"
	}
	m.t.Helper()
	wport, err := localmesh.FreePort("127.0.0.1")
	if err != nil {
		m.t.Fatal(err)
	}
	wip := nextIP()
	m.WriteConfig(ns+"-"+name+".yaml", fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: %[2]s, namespace: %[1]s}
spec:
  hosts: [%[2]s.%[1]s.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: %[5]s
  workloadSelector: {labels: {app: %[2]s}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: %[2]s-0, namespace: %[1]s}
spec:
  address: %[3]s
  ports: `+wePorts+`
  labels: {app: %[2]s, security.istio.io/tlsMode: istio}
  serviceAccount: %[2]s
`, ns, name, wip, wport, ports))
	w := m.Workload(localmesh.WorkloadOptions{Name: name + "-0", Namespace: ns, IPs: []string{wip}, WorkloadPort: uint32(wport),
		Labels: map[string]string{"app": name}})
	Eventually(m.t, 10*time.Second, name+" serving", func() error {
		if !w.Serving() {
			return fmt.Errorf("sidecar not serving its inbound port yet")
		}
		return nil
	})
}

// statusCodes are the HTTP statuses tc accepts, as the suite reads them:
// StatusCodes, with the deprecated StatusCode; 200 when neither is set.
func (tc conformanceCase) statusCodes() []int {
	want := slices.Clone(tc.Response.StatusCodes)
	if tc.Response.StatusCode != 0 && !slices.Contains(want, tc.Response.StatusCode) {
		want = append(want, tc.Response.StatusCode)
	}
	if len(want) == 0 {
		want = []int{200}
	}
	return want
}

// grpcMethod is the GrpcEcho method a gRPC case calls; "" for an HTTP case.
func (tc conformanceCase) grpcMethod() string {
	switch {
	case tc.EchoRequest != nil:
		return "Echo"
	case tc.EchoTwoRequest != nil:
		return "EchoTwo"
	case tc.EchoThreeRequest != nil:
		return "EchoThree"
	}
	return ""
}

// checkGRPC makes tc's GrpcEcho call to the gateway at ip, port 80, in
// h2c, and compares its status code and the backend that answered, as
// the suite's grpc.CompareRequest does.
func (tc conformanceCase) checkGRPC(ip string) error {
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if md := tc.RequestMetadata; md != nil {
		if md.Authority != "" {
			opts = append(opts, grpc.WithAuthority(md.Authority))
		}
		for k, v := range md.Metadata {
			ctx = metadata.AppendToOutgoingContext(ctx, k, v)
		}
	}
	cc, err := grpc.NewClient(net.JoinHostPort(ip, "80"), opts...)
	if err != nil {
		return err
	}
	defer cc.Close()
	out := &emptypb.Empty{}
	err = cc.Invoke(ctx, "/"+echo.ConformanceServiceName+"/"+tc.grpcMethod(), &emptypb.Empty{}, out)
	if got := status.Code(err); got != tc.Response.Code {
		return fmt.Errorf("gRPC code %s (%v), want %s", got, err, tc.Response.Code)
	}
	if err == nil && !strings.HasPrefix(echo.ConformancePod(out), tc.Backend) {
		return fmt.Errorf("answered by %q, want %s", echo.ConformancePod(out), tc.Backend)
	}
	return nil
}

// h2cClient speaks HTTP/2 with prior knowledge to ip:80.
func h2cClient(ip string) *http.Client {
	protocols := new(http.Protocols)
	protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		Protocols: protocols,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, network, net.JoinHostPort(ip, "80"))
		},
	}}
}

// checkWebSocket opens a WebSocket to ws://ip/ws and has a text message
// echoed, as the suite's HTTPRouteBackendProtocolWebSocket does.
func (tc conformanceCase) checkWebSocket(ip string) error {
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	c, resp, err := d.Dial("ws://"+ip+echo.WebSocketPath, nil)
	if err != nil {
		if resp != nil {
			return fmt.Errorf("%w: %s", err, resp.Status)
		}
		return err
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	const msg = "Websocket Support!"
	if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		return err
	}
	_, got, err := c.ReadMessage()
	if err != nil {
		return err
	}
	if string(got) != msg {
		return fmt.Errorf("echoed %q, want %q", got, msg)
	}
	return nil
}

// tlsClient is a client for one TLS case: connections to ip:443 with SNI
// sni, verifying the gateway's certificate with roots, HTTP/2 when h2 (a
// fresh client per case, so no connection is reused across SNIs).
func tlsClient(ip, sni string, roots *x509.CertPool, h2 bool) *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, network, net.JoinHostPort(ip, "443"))
		},
		TLSClientConfig:   &tls.Config{ServerName: sni, RootCAs: roots},
		ForceAttemptHTTP2: h2,
	}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// checkResponseHeaders compares the response headers as CompareRoundTrip
// does: Headers exactly, ValidHeaderValues one of, AbsentHeaders absent;
// with IgnoreWhitespace, spaces do not count.
func (tc conformanceCase) checkResponseHeaders(h http.Header) error {
	norm := func(v string) string {
		if tc.Response.IgnoreWhitespace {
			return strings.ReplaceAll(v, " ", "")
		}
		return v
	}
	for k, v := range tc.Response.Headers {
		if got := strings.Join(h.Values(k), ","); norm(got) != norm(v) {
			return fmt.Errorf("response header %s: %q, want %q", k, got, v)
		}
	}
	for k, vs := range tc.Response.ValidHeaderValues {
		vals, ok := h[http.CanonicalHeaderKey(k)]
		got := strings.Join(vals, ",")
		if !ok || !slices.ContainsFunc(vs, func(v string) bool { return norm(v) == norm(got) }) {
			return fmt.Errorf("response header %s: %q (present %v), want one of %q", k, got, ok, vs)
		}
	}
	for _, k := range tc.Response.AbsentHeaders {
		if v := h.Values(k); len(v) > 0 {
			return fmt.Errorf("response header %s: %q, want it absent", k, v)
		}
	}
	return nil
}

// check makes tc's request to the gateway at ip and compares the answer
// as the suite's CompareRoundTrip does. The request goes to the port its
// Host names (the suite's tests of listener ports do so), else 80.
func (tc conformanceCase) check(c *http.Client, ip string) error {
	method := tc.Request.Method
	if method == "" {
		method = "GET"
	}
	path, query, _ := strings.Cut(tc.Request.Path, "?")
	addr, scheme := ip, "http"
	if _, port, err := net.SplitHostPort(tc.Request.Host); err == nil && (port == "8080" || port == "8090") {
		addr = net.JoinHostPort(ip, port)
	}
	if tc.Port != "" {
		addr = net.JoinHostPort(ip, tc.Port)
	}
	if tc.TLS {
		scheme = "https"
	}
	u := url.URL{Scheme: scheme, Host: addr, Path: path, RawQuery: query}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		return err
	}
	if tc.Request.Host != "" {
		req.Host = tc.Request.Host
	}
	for k, v := range tc.Request.Headers {
		req.Header.Set(k, v)
	}
	for k, v := range tc.BackendSetResponseHeaders {
		req.Header.Add("x-echo-header", k+":"+v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)

	if want := tc.statusCodes(); !slices.Contains(want, resp.StatusCode) {
		return fmt.Errorf("status %d, want one of %v (%.200s)", resp.StatusCode, want, body)
	}
	switch {
	case resp.StatusCode == 200 || resp.StatusCode == 204:
		if err := tc.checkResponseHeaders(resp.Header); err != nil {
			return err
		}
		exp, absent := tc.Request, []string(nil)
		if tc.ExpectedRequest != nil {
			exp, absent = tc.ExpectedRequest.Request, tc.ExpectedRequest.AbsentHeaders
		}
		var r echo.Reply
		if err := json.Unmarshal(body, &r); err != nil {
			if exp.Path == "" && exp.Host == "" {
				return nil // a CORS preflight the gateway answered itself
			}
			return fmt.Errorf("not the echo's answer: %.200s", body)
		}
		if exp.Method == "" {
			exp.Method = "GET"
		}
		if exp.Host != "" && exp.Host != r.Host {
			return fmt.Errorf("the backend saw host %q, want %q", r.Host, exp.Host)
		}
		if exp.Path != r.URI {
			return fmt.Errorf("the backend saw path %q, want %q", r.URI, exp.Path)
		}
		if exp.Method != r.Method {
			return fmt.Errorf("the backend saw method %q, want %q", r.Method, exp.Method)
		}
		for k, v := range exp.Headers {
			got, ok := r.Headers[strings.ToLower(k)]
			if !ok || got != v && strings.ReplaceAll(got, ", ", ",") != v { // the echo joins repeated values with ", "
				return fmt.Errorf("the backend saw %s: %q (present %v), want %q", k, got, ok, v)
			}
		}
		for _, k := range absent {
			if v, ok := r.Headers[strings.ToLower(k)]; ok {
				return fmt.Errorf("the backend saw %s: %q, want it absent", k, v)
			}
		}
		if !strings.HasPrefix(r.Name, tc.Backend) {
			return fmt.Errorf("answered by %q, want %s", r.Name, tc.Backend)
		}
	case resp.StatusCode >= 300 && resp.StatusCode < 400 && tc.RedirectRequest != nil:
		loc, err := url.Parse(resp.Header.Get("Location"))
		if err != nil {
			return fmt.Errorf("location %q: %v", resp.Header.Get("Location"), err)
		}
		want := *tc.RedirectRequest
		if want.Host == "" {
			want.Host = loc.Hostname()
		}
		if want.Scheme == "" {
			want.Scheme = "http"
		}
		if want.Path == "" {
			want.Path = path
		}
		gotPort := loc.Port()
		switch {
		case want.Port != "" && want.Port != gotPort:
			return fmt.Errorf("redirect to %s: port %q, want %q", loc, gotPort, want.Port)
		case want.Port == "" && loc.Scheme == "http" && gotPort != "" && gotPort != "80":
			return fmt.Errorf("redirect to %s: port %q, want 80 or none", loc, gotPort)
		case want.Port == "" && loc.Scheme == "https" && gotPort != "" && gotPort != "443":
			return fmt.Errorf("redirect to %s: port %q, want 443 or none", loc, gotPort)
		}
		if loc.Hostname() != want.Host || loc.Scheme != want.Scheme || loc.Path != want.Path {
			return fmt.Errorf("redirect to %s, want %s://%s%s", loc, want.Scheme, want.Host, want.Path)
		}
	}
	return nil
}

// confMeshNS is the namespace of the suite's GAMMA (mesh) tests.
const confMeshNS = "gateway-conformance-mesh"

// TestGatewayAPIConformanceMesh runs the GAMMA tests of the Gateway API
// conformance suite (tests/mesh: routes attached to Services, served by
// the sidecars) with the suite's mesh infrastructure: Services echo-v1,
// echo-v2 and echo (both) on ports 80 and 8080, an echo workload per
// version, and a client in the same namespace whose sidecar makes each
// request; each answer is compared as the suite's MeshPod compareRequest
// does (status, the headers the backend saw or did not, response
// headers, the backend).
func TestGatewayAPIConformanceMesh(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(conformanceDir, "mesh-cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	var tests []conformanceTest
	if err := json.Unmarshal(b, &tests); err != nil {
		t.Fatal(err)
	}
	m := NewMesh(t)
	var docs []string
	type backend struct {
		name, ip string
		port     uint32
		version  string
	}
	var backends []backend
	for _, v := range []string{"v1", "v2"} {
		p, err := localmesh.FreePort("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		be := backend{name: "echo-" + v + "-0", ip: nextIP(), port: uint32(p), version: v}
		backends = append(backends, be)
		docs = append(docs, fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: %[1]s, namespace: %[5]s}
spec:
  address: %[2]s
  ports: {http: %[3]d, http-alt: %[3]d}
  labels: {app: echo, version: %[4]s, security.istio.io/tlsMode: istio}
  serviceAccount: echo
`, be.name, be.ip, be.port, be.version, confMeshNS))
	}
	for svc, sel := range map[string]string{"echo": "{app: echo}", "echo-v1": "{app: echo, version: v1}", "echo-v2": "{app: echo, version: v2}"} {
		docs = append(docs, fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: %[1]s, namespace: %[3]s}
spec:
  hosts: [%[1]s.%[3]s.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 80, name: http, protocol: HTTP}
  - {number: 8080, name: http-alt, protocol: HTTP}
  workloadSelector: {labels: %[2]s}
`, svc, sel, confMeshNS))
	}
	m.WriteConfig("conformance-mesh-base.yaml", strings.Join(docs, "---\n"))
	for _, be := range backends {
		w := m.Workload(localmesh.WorkloadOptions{Name: be.name, Namespace: confMeshNS, IPs: []string{be.ip}, WorkloadPort: be.port,
			Labels: map[string]string{"app": "echo", "version": be.version}, ServiceAccount: "echo"})
		Eventually(t, 10*time.Second, be.name+" serving", func() error {
			if !w.Serving() {
				return fmt.Errorf("sidecar not serving its inbound port yet")
			}
			return nil
		})
	}
	clients := map[string]*localmesh.Workload{confMeshNS: m.ClientIn("client", confMeshNS)}
	clientIn := func(ns string) *localmesh.Workload {
		if clients[ns] == nil {
			clients[ns] = m.ClientIn("client", ns)
		}
		return clients[ns]
	}
	c := newClient()
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

	for _, ct := range tests {
		t.Run(ct.Name, func(t *testing.T) {
			var docs []string
			for _, f := range ct.Manifests {
				b, err := os.ReadFile(filepath.Join(conformanceDir, f))
				if err != nil {
					t.Fatal(err)
				}
				docs = append(docs, string(b))
			}
			m.WriteConfig("conformance-test.yaml", strings.Join(docs, "\n---\n"))
			t.Cleanup(func() { m.WriteConfig("conformance-test.yaml", "") })
			for i, tc := range ct.Cases {
				wait := 3 * time.Second
				if i == 0 {
					wait = 15 * time.Second
				}
				client := clientIn(cmp.Or(tc.Client, confMeshNS))
				Eventually(t, wait, fmt.Sprintf("case %d: %s %s%s", i, tc.Request.Method, tc.Request.Host, tc.Request.Path), consistently(func() error {
					return tc.checkMesh(c, client.Outbound)
				}))
			}
		})
	}
}

// checkMesh makes tc's request through the client's sidecar (outbound
// listener outbound) and compares the answer as the suite's MeshPod
// compareRequest does.
func (tc conformanceCase) checkMesh(c *http.Client, outbound string) error {
	method, host, path := cmp.Or(tc.Request.Method, "GET"), cmp.Or(tc.Request.Host, "echo"), cmp.Or(tc.Request.Path, "/")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+outbound+path, nil)
	if err != nil {
		return err
	}
	req.Host = host
	for k, v := range tc.Request.Headers {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if want := tc.statusCodes(); !slices.Contains(want, resp.StatusCode) {
		return fmt.Errorf("status %d, want one of %v (%.200s)", resp.StatusCode, want, body)
	}
	var r echo.Reply
	_ = json.Unmarshal(body, &r)
	if tc.ExpectedRequest != nil {
		for k, v := range tc.ExpectedRequest.Request.Headers {
			got, ok := r.Headers[strings.ToLower(k)]
			if !ok || got != v && strings.ReplaceAll(got, ", ", ",") != v {
				return fmt.Errorf("the backend saw %s: %q (present %v), want %q", k, got, ok, v)
			}
		}
		for _, k := range tc.ExpectedRequest.AbsentHeaders {
			if v, ok := r.Headers[strings.ToLower(k)]; ok {
				return fmt.Errorf("the backend saw %s: %q, want it absent", k, v)
			}
		}
	}
	for _, k := range tc.Response.AbsentHeaders {
		if v := resp.Header.Values(k); len(v) > 0 {
			return fmt.Errorf("response header %s: %q, want it absent", k, v)
		}
	}
	for k, v := range tc.Response.Headers {
		if got := resp.Header.Get(k); got != v {
			return fmt.Errorf("response header %s: %q, want %q", k, got, v)
		}
	}
	if !strings.HasPrefix(r.Name, tc.Backend) {
		return fmt.Errorf("answered by %q, want %s", r.Name, tc.Backend)
	}
	return nil
}
