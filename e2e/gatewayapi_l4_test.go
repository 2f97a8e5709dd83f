package e2e

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/localmesh"
	"weft.dev/weft/internal/proxy/proxytest"
)

// TCPRoute and TLSRoute through a real gateway proxy: a TLS listener in
// Passthrough mode hands the client's TLS to the backend its TLSRoute
// names by SNI (the client sees the backend's certificate), and a TCP
// listener splits connections 80/20 over two Services by its TCPRoute's
// weights.
func TestGatewayAPITCPAndTLSRoutes(t *testing.T) {
	m := NewMesh(t)
	ca := proxytest.NewMeshCA(t)
	backendIP := nextIP()
	backendCert := ca.Issue(t, "", time.Hour, "secure.example.com")
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
	v1IP, v2IP := nextIP(), nextIP()
	v1Port, v2Port := lineEcho(t, v1IP, "v1"), lineEcho(t, v2IP, "v2")

	gwIP := nextIP()
	ports, err := localmesh.FreePorts(gwIP, 2)
	if err != nil {
		t.Fatal(err)
	}
	tlsPort, tcpPort := ports[0], ports[1]
	m.WriteConfig("gateway-api-l4.yaml", fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: default}
spec:
  gatewayClassName: weft
  listeners:
  - name: secure
    port: %d
    protocol: TLS
    tls: {mode: Passthrough}
  - {name: lines, port: %d, protocol: TCP}
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: secure, namespace: default}
spec:
  parentRefs: [{name: edge, sectionName: secure}]
  hostnames: [secure.example.com]
  rules: [{backendRefs: [{name: secure, port: %d}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TCPRoute
metadata: {name: lines, namespace: default}
spec:
  parentRefs: [{name: edge, sectionName: lines}]
  rules:
  - backendRefs:
    - {name: lines-v1, port: 7000, weight: 80}
    - {name: lines-v2, port: 7000, weight: 20}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: secure, namespace: default}
spec:
  hosts: [secure.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: %[3]d, name: tls, protocol: TLS}]
  endpoints: [{address: %[4]s}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: lines-v1, namespace: default}
spec:
  hosts: [lines-v1.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 7000, name: tcp, protocol: TCP}]
  endpoints: [{address: %[5]s, ports: {tcp: %[6]d}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: lines-v2, namespace: default}
spec:
  hosts: [lines-v2.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 7000, name: tcp, protocol: TCP}]
  endpoints: [{address: %[7]s, ports: {tcp: %[8]d}}]
`, tlsPort, tcpPort, backendPort, backendIP, v1IP, v1Port, v2IP, v2Port))
	m.gatewayAt("edge-gw", "default", gwIP, map[string]string{config.GatewayNameLabel: "edge"})

	pt := gatewayClient(net.JoinHostPort(gwIP, fmt.Sprint(tlsPort)), &tls.Config{RootCAs: ca.Pool})
	Eventually(t, 20*time.Second, "TLSRoute passes secure.example.com through", func() error {
		defer pt.CloseIdleConnections()
		resp, err := pt.Get(fmt.Sprintf("https://secure.example.com:%d/", tlsPort))
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
	if _, err := pt.Get(fmt.Sprintf("https://other.example.com:%d/", tlsPort)); err == nil {
		t.Errorf("other.example.com passed through a listener whose routes do not name it")
	}

	checkTCPSplit8020(t, net.JoinHostPort(gwIP, fmt.Sprint(tcpPort)))
}

// A TLS listener that terminates (mode Terminate, the default) ends the
// client's TLS with the certificate its certificateRefs name, verified by
// a real TLS client, and hands the decrypted stream to its TLSRoute's
// backend: a plain line-echo service answers each line.
func TestGatewayAPITLSTerminate(t *testing.T) {
	m := NewMesh(t)
	ca := proxytest.NewMeshCA(t)
	creds := t.TempDir()
	gatewayCert := ca.Issue(t, "", time.Hour, "lines.example.com")
	writeCredential(t, creds, "lines-cert", gatewayCert, nil)
	echoIP := nextIP()
	echoPort := lineEcho(t, echoIP, "plain")
	gw := m.startGateway("edge-terminate", "default", map[string]string{config.GatewayNameLabel: "edge"}, creds)
	port, err := localmesh.FreePort(gw.Opts.IP)
	if err != nil {
		t.Fatal(err)
	}
	m.WriteConfig("gateway-api-terminate.yaml", fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: default}
spec:
  gatewayClassName: weft
  listeners:
  - name: lines
    port: %d
    protocol: TLS
    hostname: lines.example.com
    tls: {mode: Terminate, certificateRefs: [{name: lines-cert}]}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: lines, namespace: default}
spec:
  parentRefs: [{name: edge}]
  hostnames: [lines.example.com]
  rules: [{backendRefs: [{name: lines, port: 7000}]}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: lines, namespace: default}
spec:
  hosts: [lines.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 7000, name: tcp, protocol: TCP}]
  endpoints: [{address: %s, ports: {tcp: %d}}]
`, port, echoIP, echoPort))
	addr := net.JoinHostPort(gw.Opts.IP, fmt.Sprint(port))
	Eventually(t, 20*time.Second, "a line through the terminating listener", func() error {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, &tls.Config{RootCAs: ca.Pool, ServerName: "lines.example.com"})
		if err != nil {
			return err
		}
		defer c.Close()
		if !c.ConnectionState().PeerCertificates[0].Equal(gatewayCert.Leaf) {
			return fmt.Errorf("certificate %v, want the listener's", c.ConnectionState().PeerCertificates[0].Subject)
		}
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.WriteString(c, "hello\n"); err != nil {
			return err
		}
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return err
		}
		if line != "plain: hello\n" {
			return fmt.Errorf("answer %q", line)
		}
		return nil
	})
}
