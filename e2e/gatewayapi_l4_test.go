package e2e

import (
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
