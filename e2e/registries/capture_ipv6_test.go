package registries

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"weft.dev/weft/internal/testenv"
)

// TestCaptureIPv6 is TestCaptureVIPRouting over IPv6, on a dual-stack test
// network: backend.shop has an IPv6 virtual IP and its two versions
// register their pods' IPv6 addresses. Unmodified clients in the client
// pod — a Go HTTP client with no proxy settings and curl — call
// http://[VIP]:8080/; the ip6tables rules of `weft-proxy capture` send
// the connection to the pod's sidecar, which routes it by the
// VirtualService (90/10, header match) over mutual TLS to the server
// pods, whose ip6tables rules send it to their sidecars' inbound capture
// port and on to the app. Plain TCP to an IPv6 address outside the
// registry passes through both sidecars (ALLOW_ANY) to the app, which
// sees the port the client dialled, and a port excluded from capture
// bypasses the client's sidecar.
//
// It skips when the kernel has no IPv6 or no IPv6 NAT (a property of the
// machine); with WEFT_REQUIRE_TOOLS=1 a missing ip6tables binary fails it.
func TestCaptureIPv6(t *testing.T) {
	bin := binaries(t)
	testenv.Privileged(t)
	// A kernel without IPv6 skips, even where tools are required.
	n := testenv.NewNetwork(t)
	n.RequireIPv6(t)
	for _, tool := range []string{"iptables-restore", "ip6tables", "ip6tables-restore", "ip6tables-save", "setpriv", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			if testenv.Required() {
				t.Fatalf("%s not found (WEFT_REQUIRE_TOOLS=1)", tool)
			}
			t.Skipf("%s not found", tool)
		}
	}
	client, v1, v2 := n.Netns(t, "client"), n.Netns(t, "v1"), n.Netns(t, "v2")
	n.RequireIPv6(t)
	// The kernel's IPv6 NAT (REDIRECT needs it): without it there is
	// nothing to test.
	if out, err := client.Command(t.Context(), "ip6tables", "-t", "nat", "-S").CombinedOutput(); err != nil {
		t.Skipf("the kernel has no IPv6 NAT table (ip6tables -t nat -S: %v: %s)", err, strings.TrimSpace(string(out)))
	}

	if err := os.Chmod(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	shared, err := os.MkdirTemp("", "weft-capture6-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(shared) })
	if err := os.Chmod(shared, 0o755); err != nil {
		t.Fatal(err)
	}

	vip := n.Prefix6 + "250" // no interface has it: only the capture rules make it answer
	cfg := t.TempDir()
	writeFile(t, filepath.Join(cfg, "backend.yaml"), captureBackendYAML(vip, v1.IP6, v2.IP6))
	cp := serve(t, bin, n, "--config", cfg)
	root := filepath.Join(shared, "root-cert.pem")
	copyFile(t, cp.Root, root)

	// v1's app listens on IPv4 loopback, v2's on IPv6 loopback: the
	// inbound side reaches either.
	capturePod6(t, bin, cp, shared, root, v1, "backend-v1", "backend", "app=backend,version=v1,security.istio.io/tlsMode=istio", "v1", "127.0.0.1:8080")
	capturePod6(t, bin, cp, shared, root, v2, "backend-v2", "backend", "app=backend,version=v2,security.istio.io/tlsMode=istio", "v2", "[::1]:8080")
	capturePod6(t, bin, cp, shared, root, client, "client", "client", "app=client", "", "", "--exclude-outbound-ports", "9001")

	// The pods' IPv6 rules are in place (REDIRECT to the capture ports).
	out, err := client.Command(t.Context(), "ip6tables-save", "-t", "nat").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--to-ports 15001") || !strings.Contains(string(out), "--to-ports 15006") {
		t.Fatalf("ip6tables rules in the client pod: %v\n%s", err, out)
	}

	url := "http://" + net.JoinHostPort(vip, "8080") + "/"
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		Proxy: nil, DialContext: client.DialContext, DisableKeepAlives: true,
	}}
	call := func(headers map[string]string) (echoReply, error) {
		code, body, err := httpGet(hc, url, headers)
		if err != nil {
			return echoReply{}, err
		}
		if code != 200 {
			return echoReply{}, fmt.Errorf("%d %s", code, body)
		}
		return reply(body)
	}
	eventually(t, 20*time.Second, "the IPv6 VIP answers through capture", func() error {
		_, err := call(nil)
		return err
	})

	checkSplitAndHeader(t, "IPv6 VIP", call)

	// curl, unmodified, from the pod (-g: the brackets are the address).
	out, err = client.Command(t.Context(), "curl", "-sS", "-g", "--noproxy", "*", "-m", "5", url).CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"backend-v`) {
		t.Errorf("curl -g %s in the client pod: %v\n%s", url, err, out)
	}

	// Plain TCP to addresses outside the registry: passed through the
	// client's sidecar (9000) or around it (9001, excluded), and through
	// v1's inbound passthrough — from ::6, or 127.0.0.6 for IPv4, the
	// addresses its rules do not capture again — to the app, which sees
	// the address and port the client dialled. IPv4 (9002) still works in
	// the dual-stack pod.
	for _, tc := range []struct{ host, port, from string }{
		{v1.IP6, "9000", "[::6]:"},
		{v1.IP6, "9001", "[::6]:"},
		{v1.IP, "9002", "127.0.0.6:"},
	} {
		addr := net.JoinHostPort(tc.host, tc.port)
		l, err := v1.Listen("tcp", addr)
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
					b := make([]byte, 64)
					n, _ := c.Read(b)
					fmt.Fprintf(c, "%s local=%s remote=%s", b[:n], c.LocalAddr(), c.RemoteAddr())
				}()
			}
		}()
		got, err := echoTCP(client, addr)
		if want := "ping local=" + addr + " remote=" + tc.from; err != nil || !strings.HasPrefix(got, want) {
			t.Errorf("TCP to %s from the client pod: %q %v, want it to start %q", addr, got, err, want)
		}
	}
	_, cm, err := httpGet(&http.Client{Timeout: 5 * time.Second}, "http://"+client.IP+":15000/stats/prometheus", nil)
	if err != nil {
		t.Fatal(err)
	}
	// Two connections (9000, 9002) went through the sidecar; 9001
	// bypassed it.
	if opened := grepLines(cm, "istio_tcp_connections_opened_total{"); !strings.Contains(opened, "PassthroughCluster") ||
		!strings.HasSuffix(strings.TrimSpace(opened), " 2") || strings.Count(opened, "\n") != 0 {
		t.Errorf("the client's sidecar should count exactly two passthrough TCP connections (ports 9000 and 9002; 9001 is excluded):\n%s", opened)
	}

	// Mutual TLS between the sidecars: both servers counted the requests
	// as mutual TLS from the client's identity.
	for _, ns := range []*testenv.Netns{v1, v2} {
		_, metrics, err := httpGet(&http.Client{Timeout: 5 * time.Second}, "http://"+ns.IP+":15000/stats/prometheus", nil)
		if err != nil {
			t.Fatal(err)
		}
		var mtls bool
		for _, l := range strings.Split(metrics, "\n") {
			if strings.HasPrefix(l, "istio_requests_total{") && strings.Contains(l, `reporter="destination"`) &&
				strings.Contains(l, `connection_security_policy="mutual_tls"`) && strings.Contains(l, `source_principal="spiffe://cluster.local/ns/shop/sa/client"`) {
				mtls = true
			}
		}
		if !mtls {
			t.Errorf("%s's sidecar did not count mutual TLS requests from the client:\n%s", ns.Name, grepLines(metrics, "istio_requests_total"))
		}
	}
}

// capturePod6 makes ns a captured dual-stack pod: `weft-proxy capture`
// with captureArgs (its init container), then, if version is set, `weft
// echo` on app, and the sidecar as UID 1337 in REDIRECT mode knowing both
// the pod's addresses. It waits until the sidecar is ready.
func capturePod6(t *testing.T, bin string, cp *controlPlane, shared, root string, ns *testenv.Netns, name, sa, labels, version, app string, captureArgs ...string) {
	t.Helper()
	if out, err := ns.Command(t.Context(), filepath.Join(bin, "weft-proxy"), append([]string{"capture"}, captureArgs...)...).CombinedOutput(); err != nil {
		t.Fatalf("weft-proxy capture in %s: %v\n%s", name, err, out)
	}
	tok := filepath.Join(shared, name+".token")
	copyFile(t, cp.token(t, bin, "shop", sa), tok)
	args := []string{"--reuid=1337", "--regid=1337", "--clear-groups", filepath.Join(bin, "weft-proxy"),
		"--workload", name, "--namespace", "shop", "--service-account", sa, "--labels", labels,
		"--ip", ns.IP + "," + ns.IP6, "--interception-mode", "REDIRECT", "--admin-address", ns.IP + ":15000",
		"--xds-address", cp.XDS, "--root-cert", root, "--token-file", tok, "--log-level", "info"}
	if version != "" {
		startCmd(t, name+" echo", ns.Command(context.Background(), filepath.Join(bin, "weft"), "echo",
			"--name", name, "--version", version, "--address", app))
		args = append(args, "--app-port", "8080="+app)
	}
	startCmd(t, name+" weft-proxy", ns.Command(context.Background(), "setpriv", args...))
	hc := &http.Client{Timeout: 2 * time.Second}
	eventually(t, 30*time.Second, name+" sidecar ready", func() error {
		code, body, err := httpGet(hc, "http://"+ns.IP+":15000/ready", nil)
		if err != nil || code != 200 {
			return fmt.Errorf("/ready: %d %q %v", code, body, err)
		}
		return nil
	})
}
