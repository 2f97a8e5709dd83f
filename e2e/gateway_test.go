package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/echo"
	"weft.dev/weft/internal/localmesh"
	"weft.dev/weft/internal/proxy/proxytest"
)

// startGateway starts a gateway proxy on its own loopback address and
// stops it at cleanup.
func (m *Mesh) startGateway(name, ns string, labels map[string]string, credDir string) *localmesh.Gateway {
	m.t.Helper()
	g, err := localmesh.StartGateway(localmesh.GatewayOptions{
		Name: name, Namespace: ns, Labels: labels, IP: nextIP(),
		CredentialDir: credDir, CredentialPoll: 100 * time.Millisecond,
		ControlPlane: m.CP, Logger: m.log,
	})
	if err != nil {
		m.t.Fatal(err)
	}
	m.t.Cleanup(func() { _ = g.Stop() })
	return g
}

// apiGatewayYAML is the Gateway ingress (istio-system, selecting
// istio: ingressgateway) with one HTTP server for api.example.com on
// port, and the VirtualService routing it to web's port 8080.
func apiGatewayYAML(port int) string {
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: %d, name: http, protocol: HTTP}
    hosts: [api.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: istio-system}
spec:
  hosts: [api.example.com]
  gateways: [ingress]
  http:
  - route: [{destination: {host: web.default.svc.cluster.local, port: {number: 8080}}}]
`, port)
}

// gatewayClient sends every request to addr, whatever the URL says, as a
// client resolving the gateway's host names to it would; TLS as cfg says.
func gatewayClient(addr string, cfg *tls.Config) *http.Client {
	d := &net.Dialer{Timeout: 2 * time.Second}
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return d.DialContext(ctx, network, addr)
			},
			TLSClientConfig: cfg,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// gwGet sends GET url through c and returns the status, the Location
// and the echo reply (empty when the answer is not one).
func gwGet(c *http.Client, url string) (int, string, echo.Reply, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", echo.Reply{}, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var r echo.Reply
	_ = json.Unmarshal(b, &r)
	return resp.StatusCode, resp.Header.Get("Location"), r, nil
}

// Two teams each run their own gateway, on their own address, selected
// by their own labels: each serves only the hosts its Gateway and its
// team's VirtualServices name. A VirtualService from another namespace
// cannot put a host on a Gateway whose server admits only its own
// namespace.
func TestGatewayTeamsServeOnlyTheirHosts(t *testing.T) {
	m := NewMesh(t)
	m.Service("web-a", "HTTP", "v1")
	m.Service("web-b", "HTTP", "v1")
	ipA, ipB := nextIP(), nextIP()
	port, err := localmesh.FreePort(ipA)
	if err != nil {
		t.Fatal(err)
	}
	m.WriteConfig("gateways.yaml", fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress, namespace: team-a}
spec:
  selector: {istio: team-a-gateway}
  servers:
  - port: {number: %[1]d, name: http, protocol: HTTP}
    hosts: ["team-a/*.a.example.com"]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress, namespace: team-b}
spec:
  selector: {istio: team-b-gateway}
  servers:
  - port: {number: %[1]d, name: http, protocol: HTTP}
    hosts: ["*.b.example.com"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: team-a}
spec:
  hosts: [www.a.example.com]
  gateways: [ingress]
  http:
  - route: [{destination: {host: web-a.default.svc.cluster.local, port: {number: 8080}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: team-b}
spec:
  hosts: [www.b.example.com]
  gateways: [team-b/ingress]
  http:
  - route: [{destination: {host: web-b.default.svc.cluster.local}}]
---
# Team b trying to serve a host on team a's gateway: the server admits
# VirtualServices of namespace team-a only.
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: takeover, namespace: team-b}
spec:
  hosts: [api.a.example.com]
  gateways: [team-a/ingress]
  http:
  - route: [{destination: {host: web-b.default.svc.cluster.local}}]
`, port))
	gwA := m.gatewayAt("gw-a", "team-a", ipA, map[string]string{"istio": "team-a-gateway"})
	gwB := m.gatewayAt("gw-b", "team-b", ipB, map[string]string{"istio": "team-b-gateway"})
	ca := gatewayClient(net.JoinHostPort(ipA, fmt.Sprint(port)), nil)
	cb := gatewayClient(net.JoinHostPort(ipB, fmt.Sprint(port)), nil)
	Eventually(t, 20*time.Second, "both gateways routing", func() error {
		for _, g := range []struct {
			c    *http.Client
			host string
			gw   *localmesh.Gateway
		}{{ca, "www.a.example.com", gwA}, {cb, "www.b.example.com", gwB}} {
			if code, _, _, err := gwGet(g.c, "http://"+g.host+"/"); err != nil || code != 200 {
				return fmt.Errorf("%s via %s: %d %v", g.host, g.gw.Opts.Name, code, err)
			}
		}
		return nil
	})
	for _, tc := range []struct {
		c          *http.Client
		via, host  string
		code       int
		answeredBy string
	}{
		{ca, "gw-a", "www.a.example.com", 200, "web-a"},
		// A port the gateway does not listen on (a NodePort's, a load
		// balancer's) is ignored, as Istio's gateways do.
		{ca, "gw-a", "www.a.example.com:31380", 200, "web-a"},
		{ca, "gw-a", "www.b.example.com", 404, ""},
		{ca, "gw-a", "api.a.example.com", 404, ""}, // team b's VirtualService is not admitted
		{cb, "gw-b", "www.b.example.com", 200, "web-b"},
		{cb, "gw-b", "www.a.example.com", 404, ""},
	} {
		code, _, r, err := gwGet(tc.c, "http://"+tc.host+"/")
		if err != nil || code != tc.code || !strings.HasPrefix(r.Name, tc.answeredBy) {
			t.Errorf("%s via %s: %d from %q (%v), want %d from %s", tc.host, tc.via, code, r.Name, err, tc.code, tc.answeredBy)
		}
	}
}

// gatewayAt starts a gateway proxy on ip.
func (m *Mesh) gatewayAt(name, ns, ip string, labels map[string]string) *localmesh.Gateway {
	m.t.Helper()
	g, err := localmesh.StartGateway(localmesh.GatewayOptions{Name: name, Namespace: ns, Labels: labels, IP: ip, ControlPlane: m.CP, Logger: m.log})
	if err != nil {
		m.t.Fatal(err)
	}
	m.t.Cleanup(func() { _ = g.Stop() })
	return g
}

// credentials writes a credential directory entry as a Kubernetes TLS
// Secret mount: <dir>/<name>/tls.crt, tls.key and, with ca, ca.crt.
func writeCredential(t *testing.T, dir, name string, cert *tls.Certificate, ca []byte) {
	t.Helper()
	d := filepath.Join(dir, name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	key, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"tls.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}),
		"tls.key": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}),
	}
	if ca != nil {
		files["ca.crt"] = ca
	}
	for f, b := range files {
		// Written aside and renamed, as a Secret update swaps files.
		tmp := filepath.Join(d, "."+f)
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(d, f)); err != nil {
			t.Fatal(err)
		}
	}
}

// An HTTPS gateway: several hosts on one port, each with its own
// certificate picked by SNI (checked with a real TLS client verifying
// the chain and the name), plain HTTP redirected to https, mutual TLS
// for one host (no client certificate, no handshake), and a certificate
// rotated in the credential directory served to new connections while
// an established one keeps working.
func TestGatewayHTTPS(t *testing.T) {
	m := NewMesh(t)
	m.Service("web", "HTTP", "v1")
	ca := proxytest.NewMeshCA(t)
	clientCA := proxytest.NewMeshCA(t)
	creds := t.TempDir()
	writeCredential(t, creds, "a-cert", ca.Issue(t, "", time.Hour, "a.example.com"), nil)
	writeCredential(t, creds, "b-cert", ca.Issue(t, "", time.Hour, "b.example.com"), nil)
	writeCredential(t, creds, "m-cert", ca.Issue(t, "", time.Hour, "m.example.com"), clientCA.RootPEM)
	gw := m.startGateway("ingress", "istio-system", map[string]string{"istio": "ingressgateway"}, creds)
	ip := gw.Opts.IP
	ports, err := localmesh.FreePorts(ip, 3)
	if err != nil {
		t.Fatal(err)
	}
	httpPort, httpsPort, mtlsPort := ports[0], ports[1], ports[2]
	m.WriteConfig("gateway.yaml", fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: %d, name: http, protocol: HTTP}
    hosts: [a.example.com, b.example.com]
    tls: {httpsRedirect: true}
  - port: {number: %d, name: https-a, protocol: HTTPS}
    hosts: [a.example.com]
    tls: {mode: SIMPLE, credentialName: a-cert}
  - port: {number: %[2]d, name: https-b, protocol: HTTPS}
    hosts: [b.example.com]
    tls: {mode: SIMPLE, credentialName: b-cert, minProtocolVersion: TLSV1_3, ecdhCurves: [P-384], alpnProtocols: [http/1.1]}
  - port: {number: %d, name: https-m, protocol: HTTPS}
    hosts: [m.example.com]
    tls: {mode: MUTUAL, credentialName: m-cert}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: istio-system}
spec:
  hosts: [a.example.com, b.example.com, m.example.com]
  gateways: [ingress]
  http:
  - route: [{destination: {host: web.default.svc.cluster.local, port: {number: 8080}}}]
`, httpPort, httpsPort, mtlsPort))

	tlsClient := func(cert *tls.Certificate) *http.Client {
		cfg := &tls.Config{RootCAs: ca.Pool}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		return gatewayClient(net.JoinHostPort(ip, fmt.Sprint(httpsPort)), cfg)
	}
	https := tlsClient(nil)
	Eventually(t, 20*time.Second, "https routed", func() error {
		code, _, _, err := gwGet(https, fmt.Sprintf("https://a.example.com:%d/", httpsPort))
		if err != nil || code != 200 {
			return fmt.Errorf("%d %v", code, err)
		}
		return nil
	})

	// SNI picks each host's certificate; the client verifies chain and name.
	for _, host := range []string{"a.example.com", "b.example.com"} {
		resp, err := https.Get(fmt.Sprintf("https://%s:%d/x", host, httpsPort))
		if err != nil {
			t.Fatalf("%s: %v", host, err)
		}
		resp.Body.Close()
		if got := resp.TLS.PeerCertificates[0].DNSNames; resp.StatusCode != 200 || len(got) != 1 || got[0] != host {
			t.Errorf("%s: status %d, certificate for %v", host, resp.StatusCode, got)
		}
		if host == "b.example.com" && resp.TLS.Version != tls.VersionTLS13 {
			t.Errorf("b.example.com: TLS version %x, want 1.3 (minProtocolVersion)", resp.TLS.Version)
		}
	}
	// ecdhCurves and alpnProtocols (Istio 1.32): b's server offers only
	// P-384 and only HTTP/1.1, a's the defaults.
	for _, tc := range []struct{ host, proto string }{{"a.example.com", "h2"}, {"b.example.com", "http/1.1"}} {
		conn, err := tls.Dial("tcp", net.JoinHostPort(ip, fmt.Sprint(httpsPort)), &tls.Config{RootCAs: ca.Pool, ServerName: tc.host,
			NextProtos: []string{"h2", "http/1.1"}, CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256, tls.CurveP384}})
		if err != nil {
			t.Fatalf("%s: %v", tc.host, err)
		}
		st := conn.ConnectionState()
		conn.Close()
		if st.NegotiatedProtocol != tc.proto {
			t.Errorf("%s: ALPN %q, want %q", tc.host, st.NegotiatedProtocol, tc.proto)
		}
		if tc.host == "b.example.com" && st.CurveID != tls.CurveP384 {
			t.Errorf("%s: key exchange %v, want P-384 (ecdhCurves)", tc.host, st.CurveID)
		}
	}
	// A name no server serves gets no certificate.
	if _, err := https.Get(fmt.Sprintf("https://c.example.com:%d/", httpsPort)); err == nil {
		t.Errorf("c.example.com: handshake succeeded on a gateway that does not serve it")
	}

	// httpsRedirect.
	plain := gatewayClient(net.JoinHostPort(ip, fmt.Sprint(httpPort)), nil)
	code, loc, _, err := gwGet(plain, "http://a.example.com/path?q=1")
	if err != nil || code != http.StatusMovedPermanently || loc != "https://a.example.com/path?q=1" {
		t.Errorf("http://a.example.com/path?q=1: %d Location %q (%v), want 301 to https://a.example.com/path?q=1", code, loc, err)
	}

	// Mutual TLS: a client certificate from the credential's CA is
	// required.
	mtls := func(cert *tls.Certificate) (int, error) {
		cfg := &tls.Config{RootCAs: ca.Pool}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		code, _, _, err := gwGet(gatewayClient(net.JoinHostPort(ip, fmt.Sprint(mtlsPort)), cfg), fmt.Sprintf("https://m.example.com:%d/", mtlsPort))
		return code, err
	}
	if code, err := mtls(nil); err == nil {
		t.Errorf("MUTUAL without a client certificate: %d, want a failed handshake", code)
	}
	if code, err := mtls(ca.Issue(t, "", time.Hour, "client.example.com")); err == nil {
		t.Errorf("MUTUAL with a certificate from another CA: %d, want a failed handshake", code)
	}
	if code, err := mtls(clientCA.Issue(t, "", time.Hour, "client.example.com")); err != nil || code != 200 {
		t.Errorf("MUTUAL with a valid client certificate: %d %v, want 200", code, err)
	}

	// Rotation: a new certificate for a.example.com is served to new
	// connections; the established keep-alive connection keeps working.
	old := https.Transport.(*http.Transport)
	first, err := https.Get(fmt.Sprintf("https://a.example.com:%d/", httpsPort))
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, first.Body)
	first.Body.Close()
	serial := first.TLS.PeerCertificates[0].SerialNumber
	writeCredential(t, creds, "a-cert", ca.Issue(t, "", time.Hour, "a.example.com"), nil)
	Eventually(t, 10*time.Second, "rotated certificate served", func() error {
		fresh := tlsClient(nil)
		defer fresh.CloseIdleConnections()
		resp, err := fresh.Get(fmt.Sprintf("https://a.example.com:%d/", httpsPort))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.TLS.PeerCertificates[0].SerialNumber.Cmp(serial) == 0 {
			return fmt.Errorf("still the old certificate")
		}
		return nil
	})
	again, err := https.Get(fmt.Sprintf("https://a.example.com:%d/", httpsPort))
	if err != nil {
		t.Fatalf("the established connection broke on rotation: %v", err)
	}
	again.Body.Close()
	if again.TLS.PeerCertificates[0].SerialNumber.Cmp(serial) != 0 || again.StatusCode != 200 {
		t.Errorf("after rotation the kept-alive connection: status %d, serial changed %v (want the old connection reused)", again.StatusCode, again.TLS.PeerCertificates[0].SerialNumber.Cmp(serial) != 0)
	}
	old.CloseIdleConnections()
}

// lineEcho serves TCP on ip: each line read is written back prefixed
// with name. It stops at cleanup.
func lineEcho(t *testing.T, ip, name string) int {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := io.WriteString(c, name+": "+line); err != nil {
						return
					}
				}
			}()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

// A TLS server in PASSTHROUGH mode forwards connections by SNI, along
// the bound VirtualService's tls routes, to a backend that terminates
// TLS itself (the client sees the backend's certificate); a TCP server
// forwards connections along tcp routes, split 80/20 by weight.
func TestGatewayTLSPassthroughAndTCP(t *testing.T) {
	m := NewMesh(t)
	ca := proxytest.NewMeshCA(t)
	// The backend terminating TLS for pt.example.com.
	backendIP := nextIP()
	backendCert := ca.Issue(t, "", time.Hour, "pt.example.com")
	bl, err := net.Listen("tcp", net.JoinHostPort(backendIP, "0"))
	if err != nil {
		t.Fatal(err)
	}
	backend := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "terminated by the backend") }),
		ReadHeaderTimeout: 5 * time.Second,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{*backendCert}},
	}
	go func() { _ = backend.ServeTLS(bl, "", "") }()
	t.Cleanup(func() { backend.Close() })
	backendPort := bl.Addr().(*net.TCPAddr).Port
	// Two line-echo backends of one TCP service, two subsets.
	echo1IP, echo2IP := nextIP(), nextIP()
	echo1Port, echo2Port := lineEcho(t, echo1IP, "v1"), lineEcho(t, echo2IP, "v2")
	const echoPort = 7000 // the service port; each endpoint names its own

	gw := m.startGateway("ingress", "istio-system", map[string]string{"istio": "ingressgateway"}, "")
	ports, err := localmesh.FreePorts(gw.Opts.IP, 2)
	if err != nil {
		t.Fatal(err)
	}
	tlsPort, tcpPort := ports[0], ports[1]
	m.WriteConfig("passthrough.yaml", fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: %d, name: tls, protocol: TLS}
    hosts: [pt.example.com]
    tls: {mode: PASSTHROUGH}
  - port: {number: %d, name: tcp, protocol: TCP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: secure, namespace: default}
spec:
  hosts: [secure.internal]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: %d, name: tls, protocol: TLS}]
  endpoints: [{address: %s}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: secure, namespace: istio-system}
spec:
  hosts: [pt.example.com]
  gateways: [ingress]
  tls:
  - match: [{sniHosts: [pt.example.com]}]
    route: [{destination: {host: secure.internal, port: {number: %[3]d}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: lines, namespace: default}
spec:
  hosts: [lines.internal]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: %[5]d, name: tcp, protocol: TCP}]
  endpoints:
  - {address: %[6]s, ports: {tcp: %[7]d}, labels: {version: v1}}
  - {address: %[8]s, ports: {tcp: %[9]d}, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: lines, namespace: default}
spec:
  host: lines.internal
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: lines, namespace: istio-system}
spec:
  hosts: ["*"]
  gateways: [ingress]
  tcp:
  - match: [{port: %[2]d}]
    route:
    - {destination: {host: lines.internal, subset: v1}, weight: 80}
    - {destination: {host: lines.internal, subset: v2}, weight: 20}
`, tlsPort, tcpPort, backendPort, backendIP, echoPort, echo1IP, echo1Port, echo2IP, echo2Port))

	// Passthrough: the client's TLS reaches the backend, which answers
	// with its own certificate.
	pt := gatewayClient(net.JoinHostPort(gw.Opts.IP, fmt.Sprint(tlsPort)), &tls.Config{RootCAs: ca.Pool})
	Eventually(t, 20*time.Second, "passthrough routed", func() error {
		defer pt.CloseIdleConnections()
		resp, err := pt.Get(fmt.Sprintf("https://pt.example.com:%d/", tlsPort))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if string(b) != "terminated by the backend" || !resp.TLS.PeerCertificates[0].Equal(backendCert.Leaf) {
			return fmt.Errorf("answer %q from %v", b, resp.TLS.PeerCertificates[0].Subject)
		}
		return nil
	})
	// Another name has no route: the connection is refused or reset.
	if _, err := pt.Get(fmt.Sprintf("https://other.example.com:%d/", tlsPort)); err == nil {
		t.Errorf("other.example.com passed through a gateway with no route for it")
	}

	// TCP: connections split 80/20 between the subsets.
	checkTCPSplit8020(t, net.JoinHostPort(gw.Opts.IP, fmt.Sprint(tcpPort)))
}

// checkTCPSplit8020 opens 400 connections to addr, each sending a line
// to a line-echo server that answers "<version>:…", and checks that about
// 80% reach v1 and the rest v2.
func checkTCPSplit8020(t *testing.T, addr string) {
	t.Helper()
	ask := func() (string, error) {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			return "", err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "hello\n"); err != nil {
			return "", err
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return "", err
		}
		v, _, _ := strings.Cut(line, ":")
		return v, nil
	}
	Eventually(t, 20*time.Second, "tcp routed", func() error {
		_, err := ask()
		return err
	})
	// 400 connections at p = 0.8: mean 320, standard deviation 8; the
	// bounds are 5 deviations wide, so a correct split fails about once
	// in two million runs.
	const n = 400
	counts := map[string]int{}
	for range n {
		v, err := ask()
		if err != nil {
			t.Fatalf("tcp connection to %s: %v", addr, err)
		}
		counts[v]++
	}
	if counts["v1"]+counts["v2"] != n || counts["v1"] < 280 || counts["v1"] > 360 {
		t.Errorf("tcp split over %d connections: %v, want about 320 v1 / 80 v2", n, counts)
	}
}

// Istio's egress gateway task: sidecars send an external host's traffic
// to the egress gateway (match.gateways: [mesh]), which sends it out
// (match.gateways: [egress]). The external server answers, and the
// gateway's own metrics count the request to the external service.
func TestGatewayEgress(t *testing.T) {
	t.Run("plaintext", func(t *testing.T) { testGatewayEgress(t, false) })
	// As Istio's egress task with mutual TLS: the sidecar reaches the
	// gateway over ISTIO_MUTUAL (its DestinationRule names the SNI the
	// gateway's server serves), the gateway checks the sidecar's mesh
	// certificate with its own.
	t.Run("ISTIO_MUTUAL", func(t *testing.T) { testGatewayEgress(t, true) })
}

func testGatewayEgress(t *testing.T, mtls bool) {
	m := NewMesh(t)
	client := m.Client("client")
	extIP := nextIP()
	ext, err := echo.New(echo.Options{Name: "partner-api", Address: extIP + ":0", Logger: m.log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = ext.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	extPort := ext.Addr().(*net.TCPAddr).Port

	gw := m.startGateway("egress", "istio-system", map[string]string{"istio": "egressgateway"}, "")
	gwPort, err := localmesh.FreePort(gw.Opts.IP)
	if err != nil {
		t.Fatal(err)
	}
	server, gwRoute, extra := "{number: 80, name: http, protocol: HTTP}", "80", ""
	labels := "istio: egressgateway"
	if mtls {
		server = "{number: 443, name: https, protocol: HTTPS}\n    tls: {mode: ISTIO_MUTUAL}"
		gwRoute = "443"
		labels += ", security.istio.io/tlsMode: istio"
		extra = `---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: egressgateway, namespace: istio-system}
spec:
  host: istio-egressgateway.istio-system.svc.cluster.local
  trafficPolicy:
    portLevelSettings:
    - port: {number: 443}
      tls: {mode: ISTIO_MUTUAL, sni: api.partner.example}
---
`
	}
	m.WriteConfig("egress.yaml", extra+fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: partner-api, namespace: default}
spec:
  hosts: [api.partner.example]
  location: MESH_EXTERNAL
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: %s, ports: {http: %d}}]
---
# The egress gateway's own service: port 80, served on the pod's %[4]d.
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: egressgateway, namespace: istio-system}
spec:
  hosts: [istio-egressgateway.istio-system.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: %[5]s, name: http, protocol: HTTP}]
  endpoints: [{address: %[3]s, ports: {http: %[4]d}, labels: {%[6]s}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: egress, namespace: istio-system}
spec:
  selector: {istio: egressgateway}
  servers:
  - port: %[7]s
    hosts: [api.partner.example]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: partner-through-egress, namespace: istio-system}
spec:
  hosts: [api.partner.example]
  gateways: [egress, mesh]
  http:
  - match: [{gateways: [mesh], port: 80}]
    route: [{destination: {host: istio-egressgateway.istio-system.svc.cluster.local, port: {number: %[5]s}}}]
  - match: [{gateways: [egress], port: %[5]s}]
    route: [{destination: {host: api.partner.example, port: {number: 80}}}]
`, extIP, extPort, gw.Opts.IP, gwPort, gwRoute, labels, server))
	c := newClient()
	Eventually(t, 20*time.Second, "the partner API through the egress gateway", func() error {
		code, r, err := Get(context.Background(), c, client, "api.partner.example", "/", nil)
		if err != nil || code != 200 || r.Name != "partner-api" {
			return fmt.Errorf("%d from %q: %v", code, r.Name, err)
		}
		return nil
	})
	// The request crossed the gateway: it counted it, toward the
	// external service.
	resp, err := http.Get("http://" + gw.Proxy.AdminAddr().String() + "/stats/prometheus")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	found := false
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "istio_requests_total{") && strings.Contains(line, `destination_service="api.partner.example"`) && strings.Contains(line, `response_code="200"`) {
			found = true
		}
	}
	if !found {
		t.Errorf("the egress gateway counted no request to api.partner.example:\n%s", grepLines(string(b), "istio_requests_total"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// Editing a Gateway and its VirtualServices under load drops nothing:
// hosts and servers added to the listener in use, a route's weights
// changed, a new port opened, while keep-alive and new connections keep
// getting answers.
func TestGatewayConfigChangeDropsNothing(t *testing.T) {
	m := NewMesh(t)
	m.Service("web", "HTTP", "v1", "v2")
	gw := m.startGateway("ingress", "istio-system", map[string]string{"istio": "ingressgateway"}, "")
	ports, err := localmesh.FreePorts(gw.Opts.IP, 2)
	if err != nil {
		t.Fatal(err)
	}
	port, port2 := ports[0], ports[1]
	dr := `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: default}
spec:
  host: web.default.svc.cluster.local
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
`
	gateway := func(hosts string, extraPort int) string {
		extra := ""
		if extraPort != 0 {
			extra = fmt.Sprintf("  - port: {number: %d, name: http-extra, protocol: HTTP}\n    hosts: [\"*\"]\n", extraPort)
		}
		return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: %d, name: http, protocol: HTTP}
    hosts: [%s]
%s`, port, hosts, extra)
	}
	vs := func(hosts string, v1, v2 int) string {
		return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: istio-system}
spec:
  hosts: [%s]
  gateways: [ingress]
  http:
  - route:
    - {destination: {host: web.default.svc.cluster.local, subset: v1, port: {number: 8080}}, weight: %d}
    - {destination: {host: web.default.svc.cluster.local, subset: v2, port: {number: 8080}}, weight: %d}
`, hosts, v1, v2)
	}
	m.WriteConfig("dr.yaml", dr)
	m.WriteConfig("gateway.yaml", gateway("a.example.com", 0))
	m.WriteConfig("vs.yaml", vs("a.example.com", 100, 0))
	addr := net.JoinHostPort(gw.Opts.IP, fmt.Sprint(port))
	keepAlive := gatewayClient(addr, nil)
	Eventually(t, 20*time.Second, "gateway routing", func() error {
		code, _, _, err := gwGet(keepAlive, "http://a.example.com/")
		if err != nil || code != 200 {
			return fmt.Errorf("%d %v", code, err)
		}
		return nil
	})

	tr := startGatewayTraffic(t, addr, "http://a.example.com/")
	steps := []struct {
		what string
		file string
		body string
	}{
		{"a host added to the server", "gateway.yaml", gateway("a.example.com, b.example.com", 0)},
		{"the VirtualService takes the new host and shifts weight", "vs.yaml", vs("a.example.com, b.example.com", 50, 50)},
		{"a port added", "gateway.yaml", gateway("a.example.com, b.example.com", port2)},
		{"all traffic to v2", "vs.yaml", vs("a.example.com, b.example.com", 0, 100)},
		{"the port removed again", "gateway.yaml", gateway("a.example.com, b.example.com", 0)},
	}
	for _, s := range steps {
		m.WriteConfig(s.file, s.body)
		tr.waitSent(200)
	}
	// The last state is in force: everything goes to v2, b is served.
	Eventually(t, 10*time.Second, "the last edit in force", func() error {
		for _, host := range []string{"a.example.com", "b.example.com"} {
			code, _, r, err := gwGet(keepAlive, "http://"+host+"/")
			if err != nil || code != 200 || r.Version != "v2" {
				return fmt.Errorf("%s: %d %s %v", host, code, r.Version, err)
			}
		}
		return nil
	})
	tr.stop(fmt.Sprintf("while the Gateway and VirtualService changed %d times", len(steps)))
}

// gatewayTraffic sends GET url to a gateway at addr from four clients,
// two keep-alive and two with a new connection per request, until
// stopped (at most 30 s, 20,000 requests each), and counts every answer
// but a 200 as a failure.
type gatewayTraffic struct {
	t            *testing.T
	sent, failed atomic.Int64
	firstErr     atomic.Value
	wg           sync.WaitGroup
	cancel       context.CancelFunc
}

func startGatewayTraffic(t *testing.T, addr, url string) *gatewayTraffic {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	tr := &gatewayTraffic{t: t, cancel: cancel}
	keepAlive := gatewayClient(addr, nil)
	for i := range 4 {
		c := keepAlive
		if i%2 == 1 {
			c = gatewayClient(addr, nil)
			c.Transport.(*http.Transport).DisableKeepAlives = true
		}
		tr.wg.Add(1)
		go func() {
			defer tr.wg.Done()
			for j := 0; j < 20000 && ctx.Err() == nil; j++ {
				code, _, _, err := gwGet(c, url)
				tr.sent.Add(1)
				if err != nil || code != 200 {
					tr.failed.Add(1)
					tr.firstErr.CompareAndSwap(nil, fmt.Sprintf("code %d err %v", code, err))
				}
			}
		}()
	}
	t.Cleanup(func() { cancel(); tr.wg.Wait() })
	tr.waitSent(100)
	return tr
}

// waitSent waits for n more requests to have been answered.
func (tr *gatewayTraffic) waitSent(n int64) {
	tr.t.Helper()
	target := tr.sent.Load() + n
	Eventually(tr.t, 10*time.Second, "traffic flowing", func() error {
		if s := tr.sent.Load(); s < target {
			return fmt.Errorf("%d of %d sent", s, target)
		}
		return nil
	})
}

// stop ends the traffic and fails the test if a request failed.
func (tr *gatewayTraffic) stop(while string) {
	tr.t.Helper()
	tr.cancel()
	tr.wg.Wait()
	if f := tr.failed.Load(); f != 0 {
		tr.t.Fatalf("%d of %d requests failed %s; first: %v", f, tr.sent.Load(), while, tr.firstErr.Load())
	}
	tr.t.Logf("%d requests %s, none failed", tr.sent.Load(), while)
}

// TestGatewayGuardHoldsEdgeTypo: a typo in the destination of a
// VirtualService bound to a Gateway would send the edge's traffic to a
// host no registry knows; the traffic-impact guard judges it as the
// gateway uses it, holds it with a WF0401 that names the gateway, and
// the gateway goes on serving the version in force without one failed
// request. Fixing the typo applies.
func TestGatewayGuardHoldsEdgeTypo(t *testing.T) {
	m := NewMesh(t)
	m.Service("web", "HTTP", "v1", "v2")
	gw := m.startGateway("edge", "ingress", map[string]string{"istio": "edge"}, "")
	port, err := localmesh.FreePort(gw.Opts.IP)
	if err != nil {
		t.Fatal(err)
	}
	m.WriteConfig("gateway.yaml", fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: edge, namespace: ingress}
spec:
  selector: {istio: edge}
  servers:
  - port: {number: %d, name: http, protocol: HTTP}
    hosts: [shop.example.com]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: default}
spec:
  host: web.default.svc.cluster.local
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
`, port))
	vs := func(destination string) string {
		return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: ingress}
spec:
  hosts: [shop.example.com]
  gateways: [edge]
  http:
  - route: [{destination: {%s, port: {number: 8080}}}]
`, destination)
	}
	m.WriteConfig("shop.yaml", vs("host: web.default.svc.cluster.local, subset: v1"))
	addr := net.JoinHostPort(gw.Opts.IP, fmt.Sprint(port))
	probe := gatewayClient(addr, nil)
	version := func(want string) {
		t.Helper()
		Eventually(t, 20*time.Second, "the gateway routing to "+want, func() error {
			code, _, r, err := gwGet(probe, "http://shop.example.com/")
			if err != nil || code != 200 || r.Version != want {
				return fmt.Errorf("%d %q %v", code, r.Version, err)
			}
			return nil
		})
	}
	version("v1")
	tr := startGatewayTraffic(t, addr, "http://shop.example.com/")

	m.WriteConfig("shop.yaml", vs("host: wbe.default.svc.cluster.local"))
	sm := &safetyMesh{Mesh: m}
	d := sm.waitDiagnostic(t, config.CodeTrafficHeld, "shop.yaml", "spec.http[0].route[0].destination")
	if !strings.Contains(d.Message, "at gateway ingress/edge") {
		t.Errorf("held, but the message does not name the gateway: %s", d.Error())
	}
	tr.waitSent(300) // the held change has been judged; the edge keeps serving
	if _, _, r, _ := gwGet(probe, "http://shop.example.com/"); r.Version != "v1" {
		t.Errorf("the version in force changed while held: answered by %q", r.Version)
	}

	m.WriteConfig("shop.yaml", vs("host: web.default.svc.cluster.local, subset: v2"))
	version("v2")
	tr.stop("while a typo was held at the gateway and then fixed")
}

// A RateLimit selecting the gateway limits what the edge admits: 100
// requests per second (burst 100) holds under ~300 offered per second for
// 3 s, with the bounds and reasoning of TestRateLimitHolds100RPS; the
// refused get 429 with the x-ratelimit headers.
func TestGatewayRateLimit(t *testing.T) {
	m := NewMesh(t)
	m.Service("web", "HTTP", "v1")
	gw := m.startGateway("ingress", "istio-system", map[string]string{"istio": "ingressgateway"}, "")
	port, err := localmesh.FreePort(gw.Opts.IP)
	if err != nil {
		t.Fatal(err)
	}
	m.WriteConfig("gateway.yaml", apiGatewayYAML(port)+`---
apiVersion: networking.weft.dev/v1alpha1
kind: RateLimit
metadata: {name: edge, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  limit: {requestsPerUnit: 100, unit: SECOND}
`)
	addr := net.JoinHostPort(gw.Opts.IP, fmt.Sprint(port))
	c := newClient()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	Eventually(t, 20*time.Second, "the gateway limiting", func() error {
		_, h, err := getHeaders(ctx, c, addr, "api.example.com", "/")
		if err != nil || h.Get("X-Ratelimit-Limit") == "" {
			return fmt.Errorf("no x-ratelimit-limit yet (%v)", err)
		}
		return nil
	})

	run := holdsRate(t, ctx, 100, func() (int, http.Header, error) { return getHeaders(ctx, c, addr, "api.example.com", "/") })
	limitedHeaders := run.limitedHeaders
	if limitedHeaders.Get("X-Ratelimit-Limit") != "100" || limitedHeaders.Get("X-Ratelimit-Remaining") != "0" {
		t.Errorf("429 headers %v, want x-ratelimit-limit 100 and remaining 0", limitedHeaders)
	}
}
