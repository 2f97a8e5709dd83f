package registries

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"weft.dev/weft/internal/proxy/proxytest"
	"weft.dev/weft/internal/testenv"
)

// tcpRouteYAML is lines.shop (two TCP ports on VIP lines, served by
// backend's pods) with VirtualService tcp routes — port 9301 to v2, the
// rest 80/20 over v1/v2 — and secure.shop (a TLS port on VIP secure)
// with tls routes by SNI: a.secure.example to v1, b.secure.example to
// v2.
func tcpRouteYAML(lines, secure string) string {
	return fmt.Sprintf(`
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: lines, namespace: shop}
spec:
  hosts: [lines.shop.svc.cluster.local]
  addresses: ["%s"]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9300, name: tcp-lines, protocol: TCP}
  - {number: 9301, name: tcp-lines-canary, protocol: TCP}
  workloadSelector:
    labels: {app: backend}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: lines, namespace: shop}
spec:
  host: lines.shop.svc.cluster.local
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 5s, idleTimeout: 1m}
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: lines, namespace: shop}
spec:
  hosts: [lines.shop.svc.cluster.local]
  tcp:
  - match: [{port: 9301}]
    route:
    - destination: {host: lines.shop.svc.cluster.local, subset: v2, port: {number: 9301}}
  - route:
    - {destination: {host: lines.shop.svc.cluster.local, subset: v1, port: {number: 9300}}, weight: 80}
    - {destination: {host: lines.shop.svc.cluster.local, subset: v2, port: {number: 9300}}, weight: 20}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: secure, namespace: shop}
spec:
  hosts: [secure.shop.svc.cluster.local]
  addresses: ["%s"]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9443, name: tls, protocol: TLS}
  workloadSelector:
    labels: {app: backend}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: secure, namespace: shop}
spec:
  host: secure.shop.svc.cluster.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: secure, namespace: shop}
spec:
  hosts: [secure.shop.svc.cluster.local, a.secure.example, b.secure.example]
  tls:
  - match: [{port: 9443, sniHosts: [a.secure.example]}]
    route:
    - destination: {host: secure.shop.svc.cluster.local, subset: v1}
  - match: [{port: 9443, sniHosts: [b.secure.example]}]
    route:
    - destination: {host: secure.shop.svc.cluster.local, subset: v2}
`, lines, secure)
}

// TestTCPRoute: VirtualService tcp and tls routes through real captured
// sidecars (the capture mesh: a client pod and backend's v1 and v2 pods,
// each with its iptables rules and sidecar, mutual TLS between the
// sidecars). Unmodified clients in the client pod dial the services'
// virtual IPs:
//
//   - a line-echo service on port 9300, split 80/20 over v1 and v2 per
//     connection: 500 connections land within a binomial tolerance;
//   - port 9301 of the same service, matched by port: every connection
//     to v2;
//   - a TLS service, routed by the ClientHello's SNI: a.secure.example
//     to v1, b.secure.example to v2 (a real TLS client verifies the
//     backend's certificate for the name), any other name refused;
//
// and the client's sidecar counts the connections in istio_tcp_* under
// the version each one reached.
func TestTCPRoute(t *testing.T) {
	m := newCaptureMesh(t)
	ca := proxytest.NewMeshCA(t)
	cert := ca.Issue(t, "", time.Hour, "a.secure.example", "b.secure.example", "c.secure.example")
	for _, p := range []struct {
		ns      *testenv.Netns
		version string
	}{{m.v1, "v1"}, {m.v2, "v2"}} {
		for _, port := range []string{"9300", "9301"} {
			l, err := p.ns.Listen("tcp", "127.0.0.1:"+port)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
			go tcpEcho(l, p.version)
		}
		l, err := p.ns.Listen("tcp", "127.0.0.1:9443")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		go tlsNameEcho(tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{*cert}}), p.version)
	}
	lines, secure := m.n.Prefix+".252", m.n.Prefix+".253"
	writeFile(t, filepath.Join(m.cfg, "tcproute.yaml"), tcpRouteYAML(lines, secure))

	reached := map[string]int{} // successful connections to lines, by version
	dialLine := func(port string, i int) (string, error) {
		var got string
		err := m.client.Do(func() error {
			c, err := net.DialTimeout("tcp", lines+":"+port, 5*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			fmt.Fprintf(c, "line %d\n", i)
			got, err = bufio.NewReader(c).ReadString('\n')
			return err
		})
		version, line, ok := strings.Cut(got, ":")
		switch {
		case err != nil:
			return "", err
		case !ok || line != fmt.Sprintf("line %d\n", i):
			return "", fmt.Errorf("answer %q, want <version>:line %d", got, i)
		}
		reached[version]++
		return version, nil
	}
	eventually(t, 20*time.Second, "port 9301 routed to v2", func() error {
		v, err := dialLine("9301", 0)
		if err == nil && v != "v2" {
			err = fmt.Errorf("reached %s", v)
		}
		return err
	})

	// The weighted split, per connection. Each of n connections goes to
	// v1 with probability 0.8, independently, so the v1 count is
	// binomial: mean 0.8n = 400, standard deviation sqrt(n·0.8·0.2) ≈
	// 8.9. Five standard deviations (45) either way fails a correct
	// proxy with probability below 1e-6, and still catches a split that
	// is off by 10 points (a 70/30 split averages 350).
	const n = 500
	split := map[string]int{}
	for i := range n {
		v, err := dialLine("9300", i)
		if err != nil {
			t.Fatalf("connection %d to %s:9300: %v", i, lines, err)
		}
		split[v]++
	}
	t.Logf("80/20 over %d connections: %v", n, split)
	if split["v1"] < 355 || split["v1"] > 445 || split["v1"]+split["v2"] != n {
		t.Errorf("split %v, want about 400 v1 / 100 v2 (355..445 v1)", split)
	}

	// Matched by port: every connection to v2.
	for i := range 20 {
		if v, err := dialLine("9301", i); err != nil || v != "v2" {
			t.Fatalf("connection %d to %s:9301: %s %v, want v2", i, lines, v, err)
		}
	}

	// tls routes by SNI, through a real TLS client that verifies the
	// backend's certificate for the name it asked for.
	hello := func(name string) (string, error) {
		var got string
		err := m.client.Do(func() error {
			d := &net.Dialer{Timeout: 5 * time.Second}
			c, err := tls.DialWithDialer(d, "tcp", secure+":9443", &tls.Config{ServerName: name, RootCAs: ca.Pool})
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			got, err = bufio.NewReader(c).ReadString('\n')
			return err
		})
		return strings.TrimSuffix(got, "\n"), err
	}
	eventually(t, 20*time.Second, "tls route by SNI", func() error {
		got, err := hello("a.secure.example")
		if err == nil && got != "v1 a.secure.example" {
			err = fmt.Errorf("answer %q", got)
		}
		return err
	})
	for i := range 20 {
		name, want := "a.secure.example", "v1"
		if i%2 == 1 {
			name, want = "b.secure.example", "v2"
		}
		if got, err := hello(name); err != nil || got != want+" "+name {
			t.Fatalf("TLS to %s:9443 as %s: %q %v, want %q", secure, name, got, err, want+" "+name)
		}
	}
	// No route names c.secure.example: Istio's VIP listener has no chain
	// for it, so the connection is closed before the handshake completes.
	if got, err := hello("c.secure.example"); err == nil {
		t.Errorf("TLS as c.secure.example (no route): %q, want the connection refused", got)
	}

	// The client's sidecar counted every connection under the version it
	// reached (reporter=source, as Istio's client-side stats).
	svc := map[string]string{"reporter": "source", "source_workload": "client", "destination_service": "lines.shop.svc.cluster.local", "request_protocol": "tcp"}
	tlsSvc := map[string]string{"reporter": "source", "source_workload": "client", "destination_service": "secure.shop.svc.cluster.local"}
	assertSidecarMetrics(t, m.client, []metricWant{
		{"istio_tcp_connections_opened_total", with(svc, "destination_version", "v1"), float64(reached["v1"])},
		{"istio_tcp_connections_opened_total", with(svc, "destination_version", "v2"), float64(reached["v2"])},
		{"istio_tcp_connections_closed_total", with(svc, "destination_version", "v1"), float64(reached["v1"])},
		{"istio_tcp_connections_closed_total", with(svc, "destination_version", "v2"), float64(reached["v2"])},
		{"istio_tcp_connections_opened_total", with(tlsSvc, "destination_version", "v2", "destination_workload", "backend-v2"), 10},
	})
}

// tlsNameEcho completes each TLS handshake and answers with name and the
// server name the client asked for, until l is closed.
func tlsNameEcho(l net.Listener, name string) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			tc := c.(*tls.Conn)
			tc.SetDeadline(time.Now().Add(10 * time.Second))
			if tc.Handshake() == nil {
				fmt.Fprintf(tc, "%s %s\n", name, tc.ConnectionState().ServerName)
			}
		}()
	}
}
