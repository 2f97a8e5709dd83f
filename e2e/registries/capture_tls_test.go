package registries

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"weft.dev/weft/internal/proxy/proxytest"
)

// TestCapturePermissiveForeignTLS: on a PERMISSIVE TCP port, TLS that is
// not a sidecar's mutual TLS is the application's own — an admission
// webhook the Kubernetes API server calls, an HTTPS port a client outside
// the mesh uses — and reaches the application as it came, as in Istio.
// backend-v1 serves TLS with a certificate of its own (another root than
// the mesh's) on the declared TCP port 9443:
//
//   - a client outside the mesh (the host) completes the handshake with
//     the application's certificate, not the sidecar's, and is answered;
//   - a client in the mesh (the client pod) speaks TLS to the application
//     through its sidecar, which wraps it in mutual TLS to backend-v1's
//     sidecar: that one terminates the mutual TLS (the sidecar's SNI) and
//     relays the inner TLS, and counts the connection as mutual TLS.
func TestCapturePermissiveForeignTLS(t *testing.T) {
	m := newCaptureMesh(t)
	appCA := proxytest.NewMeshCA(t)
	cert := appCA.Issue(t, "", time.Hour, "webhook.shop.svc")
	l, err := m.v1.Listen("tcp", "127.0.0.1:9443")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go tcpEcho(tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{*cert}}), "v1")

	vip := m.n.Prefix + ".252"
	writeFile(t, filepath.Join(m.cfg, "webhook.yaml"), fmt.Sprintf(`
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: webhook, namespace: shop}
spec:
  hosts: [webhook.shop.svc.cluster.local]
  addresses: ["%s"]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9443, name: tcp-webhook, protocol: TCP}]
  workloadSelector:
    labels: {app: backend, version: v1}
`, vip))

	// call speaks TLS to the application over conn, as a webhook client
	// does (SNI webhook.shop.svc), and wants its certificate and answer.
	call := func(conn net.Conn, i int) error {
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		c := tls.Client(conn, &tls.Config{ServerName: "webhook.shop.svc", InsecureSkipVerify: true})
		if err := c.Handshake(); err != nil {
			return fmt.Errorf("handshake: %w", err)
		}
		if got := c.ConnectionState().PeerCertificates[0].DNSNames; !slices.Equal(got, []string{"webhook.shop.svc"}) {
			return fmt.Errorf("the server's certificate names %q: the sidecar's, not the application's", got)
		}
		fmt.Fprintf(c, "line %d\n", i)
		got, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || got != fmt.Sprintf("v1:line %d\n", i) {
			return fmt.Errorf("answer %q %v", got, err)
		}
		return nil
	}
	outside := func(i int) error {
		conn, err := net.DialTimeout("tcp", m.v1.IP+":9443", 5*time.Second)
		if err != nil {
			return err
		}
		return call(conn, i)
	}
	inside := func(i int) error {
		return m.client.Do(func() error {
			conn, err := net.DialTimeout("tcp", vip+":9443", 5*time.Second)
			if err != nil {
				return err
			}
			return call(conn, i)
		})
	}
	eventually(t, 20*time.Second, "TLS from outside the mesh reaches the application", func() error { return outside(0) })
	eventually(t, 20*time.Second, "TLS from the client pod reaches the application", func() error { return inside(0) })
	for i := range 10 {
		if err := outside(i + 1); err != nil {
			t.Errorf("from outside the mesh, connection %d: %v", i+1, err)
		}
		if err := inside(i + 1); err != nil {
			t.Errorf("from the client pod, connection %d: %v", i+1, err)
		}
	}
	if n := scrapeSum(t, m.v1.IP, "istio_tcp_connections_opened_total", map[string]string{
		"reporter": "destination", "destination_service": "webhook.shop.svc.cluster.local",
		"connection_security_policy": "mutual_tls", "source_principal": "spiffe://cluster.local/ns/shop/sa/client",
	}); n < 11 {
		t.Errorf("backend-v1's sidecar counted %v mutual TLS connections from the client, want at least 11", n)
	}
}
