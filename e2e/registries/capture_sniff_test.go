package registries

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCaptureSniffing: ports whose protocol is not declared (a
// ServiceEntry port without protocol, as a Kubernetes port named neither
// for a protocol nor with appProtocol) are sniffed by the captured
// sidecars, as Istio's protocol detection: HTTP/1.1 and h2c to the
// service's VIP are routed by its VirtualService, over mutual TLS, to
// the server's sidecar, which detects HTTP again by the ALPN its peer
// offers; other bytes on such a port are carried as TCP, also over
// mutual TLS, and so is HTTP/1.0, as in Istio ("http10 to auto"). A
// server-first protocol on an undeclared port outside the registry is
// not held waiting by the HTTP inspector (it runs on the sniffed and the
// HTTP ports only), and bytes that are not HTTP on a declared HTTP port
// pass through as well.
func TestCaptureSniffing(t *testing.T) {
	m := newCaptureMesh(t)
	bin := m.bin
	for _, p := range []struct {
		ns      string
		version string
	}{{"v1", "v1"}, {"v2", "v2"}} {
		ns := m.v1
		if p.ns == "v2" {
			ns = m.v2
		}
		// The admin app (HTTP/1.1 and h2c) on the undeclared port 9100,
		// a TCP echo on the undeclared port 9200.
		startCmd(t, "backend-"+p.version+" admin echo", ns.Command(context.Background(), filepath.Join(bin, "weft"), "echo",
			"--name", "backend-"+p.version+"-admin", "--version", p.version, "--address", "127.0.0.1:9100"))
		l, err := ns.Listen("tcp", "127.0.0.1:9200")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		go tcpEcho(l, p.version)
	}
	vip := m.n.Prefix + ".251"
	writeFile(t, filepath.Join(m.cfg, "admin.yaml"), fmt.Sprintf(`
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: admin, namespace: shop}
spec:
  hosts: [admin.shop.svc.cluster.local]
  addresses: [%s]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9100, name: admin}
  - {number: 9200, name: stream}
  workloadSelector:
    labels: {app: backend}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: admin, namespace: shop}
spec:
  host: admin.shop.svc.cluster.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: admin, namespace: shop}
spec:
  hosts: [admin.shop.svc.cluster.local]
  http:
  - match:
    - headers: {x-canary: {exact: "true"}}
    route:
    - destination: {host: admin.shop.svc.cluster.local, subset: v2}
  - route:
    - destination: {host: admin.shop.svc.cluster.local, subset: v1}
`, vip))

	h1 := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		Proxy: nil, DialContext: m.client.DialContext, DisableKeepAlives: true,
	}}
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true) // h2c with prior knowledge
	h2c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		Proxy: nil, DialContext: m.client.DialContext, Protocols: &protocols,
		TLSClientConfig: &tls.Config{}, DisableKeepAlives: true,
	}}
	get := func(c *http.Client, canary bool) (echoReply, string, error) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+vip+":9100/", nil)
		if canary {
			req.Header.Set("x-canary", "true")
		}
		resp, err := c.Do(req)
		if err != nil {
			return echoReply{}, "", err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return echoReply{}, resp.Proto, fmt.Errorf("%d %s", resp.StatusCode, body)
		}
		r, err := reply(string(body))
		return r, resp.Proto, err
	}
	eventually(t, 20*time.Second, "the sniffed port routes HTTP", func() error {
		r, _, err := get(h1, true)
		if err == nil && r.Version != "v2" {
			err = fmt.Errorf("x-canary went to %s", r.Version)
		}
		return err
	})
	// Routed, not balanced: every request goes where the VirtualService
	// says, in both HTTP versions.
	for i := range 20 {
		for _, c := range []struct {
			name   string
			client *http.Client
			proto  string
		}{{"HTTP/1.1", h1, "HTTP/1.1"}, {"h2c", h2c, "HTTP/2.0"}} {
			canary := i%2 == 1
			want := map[bool]string{false: "v1", true: "v2"}[canary]
			r, proto, err := get(c.client, canary)
			if err != nil || r.Version != want || proto != c.proto {
				t.Fatalf("%s to %s:9100 (x-canary %v): %+v %s %v; want %s over %s", c.name, vip, canary, r, proto, err, want, c.proto)
			}
		}
	}
	out, err := m.client.Command(t.Context(), "curl", "-sS", "--noproxy", "*", "-m", "5", "-H", "x-canary: true", "http://"+vip+":9100/").CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"backend-v2-admin"`) {
		t.Errorf("curl http://%s:9100/ in the client pod: %v\n%s", vip, err, out)
	}

	// Not HTTP: carried as TCP to either version.
	seen := map[string]bool{}
	for i := range 20 {
		want := fmt.Sprintf("\x00hello %d\n", i)
		got, err := lineFrom(m, vip+":9200", want)
		if err != nil || !strings.HasSuffix(got, want) {
			t.Fatalf("TCP to %s:9200: %q %v, want an echo of %q", vip, got, err, want)
		}
		seen[strings.TrimSuffix(got, want)] = true
	}
	t.Logf("TCP on the sniffed port reached %v", seen)

	// HTTP/1.0, in the bytes of Istio's "http10 to auto" test (bare
	// LFs): not HTTP to the sniffing, carried as bytes to the app, which
	// answers it itself.
	status, err := lineFrom(m, vip+":9100", "GET / HTTP/1.0\n\n")
	if err != nil || !strings.HasPrefix(status, "HTTP/1.0 200 OK") {
		t.Errorf("HTTP/1.0 to %s:9100: %q %v, want the app's HTTP/1.0 200 OK", vip, status, err)
	}

	// A server-first protocol outside the registry, on an undeclared
	// port: its greeting arrives although the client says nothing.
	greeter, err := net.Listen("tcp", m.n.Gateway+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer greeter.Close()
	go func() {
		for {
			c, err := greeter.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "220 greetings\r\n")
			c.Close()
		}
	}()
	greeting, err := lineFrom(m, greeter.Addr().String(), "")
	if err != nil || greeting != "220 greetings\r\n" {
		t.Errorf("server-first TCP to %s through the sidecar: %q %v", greeter.Addr(), greeting, err)
	}

	// Bytes that are not HTTP on a port the mesh declares HTTP (8080),
	// to an address outside the registry: as Istio's fall-through chain,
	// carried to where they were going, not answered 400 by a connection
	// manager.
	outside, err := net.Listen("tcp", m.n.Gateway+":8080")
	if err != nil {
		t.Fatal(err)
	}
	defer outside.Close()
	go tcpEcho(outside, "outside")
	echoed, err := lineFrom(m, outside.Addr().String(), "\x00not http\n")
	if err != nil || echoed != "outside:\x00not http\n" {
		t.Errorf("TCP to %s, a declared HTTP port, through the sidecar: %q %v, want it passed through", outside.Addr(), echoed, err)
	}

	// The server side saw HTTP requests and TCP connections on the
	// sniffed ports, all over mutual TLS from the client.
	var v1m, v2m string
	for _, p := range []struct {
		ip  string
		out *string
	}{{m.v1.IP, &v1m}, {m.v2.IP, &v2m}} {
		_, body, err := httpGet(&http.Client{Timeout: 5 * time.Second}, "http://"+p.ip+":15000/stats/prometheus", nil)
		if err != nil {
			t.Fatal(err)
		}
		*p.out = body
	}
	both := v1m + "\n" + v2m
	const fromClient = `source_principal="spiffe://cluster.local/ns/shop/sa/client"`
	var httpMTLS, tcpMTLS bool
	for _, l := range strings.Split(both, "\n") {
		ok := strings.Contains(l, `reporter="destination"`) && strings.Contains(l, `connection_security_policy="mutual_tls"`) &&
			strings.Contains(l, fromClient) && strings.Contains(l, `destination_service="admin.shop.svc.cluster.local"`)
		httpMTLS = httpMTLS || ok && strings.HasPrefix(l, "istio_requests_total{")
		tcpMTLS = tcpMTLS || ok && strings.HasPrefix(l, "istio_tcp_connections_opened_total{")
	}
	if !httpMTLS || !tcpMTLS {
		t.Errorf("the backends' sidecars should count HTTP requests (%v) and TCP connections (%v) to admin over mutual TLS from the client:\n%s\n%s",
			httpMTLS, tcpMTLS, grepLines(both, "istio_requests_total{"), grepLines(both, "istio_tcp_connections_opened_total{"))
	}
}

// lineFrom dials addr from the client pod (through its sidecar), sends
// send (nothing when empty) and returns the first line answered.
func lineFrom(m *captureMesh, addr, send string) (string, error) {
	var line string
	err := m.client.Do(func() error {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if send != "" {
			io.WriteString(c, send)
		}
		line, err = bufio.NewReader(c).ReadString('\n')
		return err
	})
	return line, err
}

// tcpEcho answers each line a connection sends with name and the line,
// until l is closed.
func tcpEcho(l net.Listener, name string) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			if err == nil {
				io.WriteString(c, name+":"+line)
			}
		}()
	}
}
