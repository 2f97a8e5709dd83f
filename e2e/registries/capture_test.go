package registries

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"weft.dev/weft/internal/testenv"
)

// captureMesh is a control plane and three captured pods: a client and
// the two versions of backend.shop (a ServiceEntry with a virtual IP,
// routed 90/10 and by the header x-canary), each pod's rules installed by
// `weft-proxy capture` and its sidecar running as the proxy UID with
// --interception-mode REDIRECT. The client pod excludes port 9001 from
// capture.
type captureMesh struct {
	bin            string
	n              *testenv.Network
	client, v1, v2 *testenv.Netns
	vip            string
	cp             *controlPlane
	cfg            string // the control plane's --config directory (watched)
	// call sends GET http://VIP:8080/ from inside the client pod with an
	// HTTP client that has no proxy settings.
	call func(headers map[string]string) (echoReply, error)
}

// captureBackendYAML is backend.shop: a ServiceEntry with virtual IP vip
// selecting the WorkloadEntries backend-v1 (address v1) and backend-v2
// (v2), routed 90/10 and by the header x-canary.
func captureBackendYAML(vip, v1, v2 string) string {
	return fmt.Sprintf(`
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend, namespace: shop}
spec:
  hosts: [backend.shop.svc.cluster.local]
  addresses: ["%s"]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 8080, name: http, protocol: HTTP}
  workloadSelector:
    labels: {app: backend}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: backend-v1, namespace: shop}
spec:
  address: "%s"
  serviceAccount: backend
  labels: {app: backend, version: v1, security.istio.io/tlsMode: istio}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: backend-v2, namespace: shop}
spec:
  address: "%s"
  serviceAccount: backend
  labels: {app: backend, version: v2, security.istio.io/tlsMode: istio}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: backend, namespace: shop}
spec:
  host: backend.shop.svc.cluster.local
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: backend, namespace: shop}
spec:
  hosts: [backend.shop.svc.cluster.local]
  http:
  - match:
    - headers: {x-canary: {exact: "true"}}
    route:
    - destination: {host: backend.shop.svc.cluster.local, subset: v2}
  - route:
    - destination: {host: backend.shop.svc.cluster.local, subset: v1}
      weight: 90
    - destination: {host: backend.shop.svc.cluster.local, subset: v2}
      weight: 10
`, vip, v1, v2)
}

// newCaptureMesh starts it; serveArgs are more `weft serve` flags.
func newCaptureMesh(t testing.TB, serveArgs ...string) *captureMesh {
	t.Helper()
	bin := binaries(t)
	testenv.Privileged(t)
	for _, tool := range []string{"iptables-restore", "setpriv", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			if testenv.Required() {
				t.Fatalf("%s not found (WEFT_REQUIRE_TOOLS=1)", tool)
			}
			t.Skipf("%s not found", tool)
		}
	}
	// The sidecars run as UID 1337: the binaries and their files must be
	// readable by it.
	if err := os.Chmod(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	shared, err := os.MkdirTemp("", "weft-capture-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(shared) })
	if err := os.Chmod(shared, 0o755); err != nil {
		t.Fatal(err)
	}

	n := testenv.NewNetwork(t)
	client, v1, v2 := n.Netns(t, "client"), n.Netns(t, "v1"), n.Netns(t, "v2")
	vip := n.Prefix + ".250" // no interface has it: only the capture rules make it answer
	cfg := t.TempDir()
	writeFile(t, filepath.Join(cfg, "backend.yaml"), captureBackendYAML(vip, v1.IP, v2.IP))
	cp := serve(t, bin, n, append([]string{"--config", cfg}, serveArgs...)...)
	root := filepath.Join(shared, "root-cert.pem")
	copyFile(t, cp.Root, root)

	pod := func(ns *testenv.Netns, name, sa, labels, version string, capture ...string) {
		t.Helper()
		// The init container's job: the pod's iptables rules.
		if out, err := ns.Command(t.Context(), filepath.Join(bin, "weft-proxy"), append([]string{"capture"}, capture...)...).CombinedOutput(); err != nil {
			t.Fatalf("weft-proxy capture in %s: %v\n%s", name, err, out)
		}
		tok := filepath.Join(shared, name+".token")
		copyFile(t, cp.token(t, bin, "shop", sa), tok)
		args := []string{"--reuid=1337", "--regid=1337", "--clear-groups", filepath.Join(bin, "weft-proxy"),
			"--workload", name, "--namespace", "shop", "--service-account", sa, "--labels", labels,
			"--ip", ns.IP, "--interception-mode", "REDIRECT", "--admin-address", ns.IP + ":15000",
			"--xds-address", cp.XDS, "--root-cert", root, "--token-file", tok, "--log-level", "info"}
		if version != "" {
			startCmd(t, name+" echo", ns.Command(context.Background(), filepath.Join(bin, "weft"), "echo",
				"--name", name, "--version", version, "--address", "127.0.0.1:8080"))
			args = append(args, "--app-port", "8080=127.0.0.1:8080")
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
	pod(v1, "backend-v1", "backend", "app=backend,version=v1,security.istio.io/tlsMode=istio", "v1")
	pod(v2, "backend-v2", "backend", "app=backend,version=v2,security.istio.io/tlsMode=istio", "v2")
	pod(client, "client", "client", "app=client", "", "--exclude-outbound-ports", "9001")

	// An HTTP client with no proxy settings, dialling from inside the
	// client pod.
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		Proxy: nil, DialContext: client.DialContext, DisableKeepAlives: true,
	}}
	call := func(headers map[string]string) (echoReply, error) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+vip+":8080/", nil)
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		resp, err := hc.Do(req)
		if err != nil {
			return echoReply{}, err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return echoReply{}, fmt.Errorf("%d %s", resp.StatusCode, body)
		}
		return reply(string(body))
	}
	eventually(t, 20*time.Second, "the VIP answers through capture", func() error {
		_, err := call(nil)
		return err
	})
	return &captureMesh{bin: bin, n: n, client: client, v1: v1, v2: v2, vip: vip, cp: cp, cfg: cfg, call: call}
}

// TestCaptureVIPRouting: unmodified clients in a "pod" — a Go HTTP client
// with no proxy settings and curl — call a service by its virtual IP;
// `weft-proxy capture` rules send the connection to the pod's sidecar
// (running as the proxy UID, so its own connections are not captured),
// which routes it by the VirtualService (90/10, header match) over mutual
// TLS to the server pods, whose rules send it to their sidecars' inbound
// capture port and on to the app on its original port. Plain TCP to a
// destination outside the registry passes through both sidecars
// (ALLOW_ANY), and a port excluded from capture bypasses the proxy; HTTP
// to a Host the mesh does not know passes through too. The client's
// sidecar counts the passthrough traffic under
// destination_service_name="PassthroughCluster", as Istio's do.
func TestCaptureVIPRouting(t *testing.T) {
	m := newCaptureMesh(t)
	client, v1, vip, call := m.client, m.v1, m.vip, m.call
	checkSplitAndHeader(t, "VIP", call)

	// curl, unmodified, from the pod.
	out, err := client.Command(t.Context(), "curl", "-sS", "--noproxy", "*", "-m", "5", "http://"+vip+":8080/").CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"backend-v`) {
		t.Errorf("curl http://%s:8080/ in the client pod: %v\n%s", vip, err, out)
	}

	// A port in the Host other than the one dialled (a NodePort's, a
	// client's mistake) does not choose the route, as in Istio's sidecars
	// (ignore_port_in_host_matching): still the mesh's backend, not the
	// passthrough to the virtual IP, which nothing answers.
	if code, err := podGet(client, "http://"+vip+":8080/", "backend:12345"); err != nil || code != 200 {
		t.Errorf("HTTP to the VIP with Host backend:12345: %d %v, want 200 (the service's route)", code, err)
	}

	// Plain TCP outside the registry: passed through; port 9001 excluded.
	tcpPassthrough(t, client, v1)
	// HTTP on the mesh's HTTP port to a Host the mesh does not know: the
	// allow_any route passes it through to where the client was going
	// (backend-v1's pod address, whose sidecar hands it to its app).
	if code, err := podGet(client, "http://"+v1.IP+":8080/", "example.com:8080"); err != nil || code != 200 {
		t.Errorf("HTTP to an unknown Host from the client pod: %d %v, want 200 (passthrough)", code, err)
	}
	// What an Istio user monitors (docs/kubernetes.md, "Monitoring
	// passthrough and blocked traffic"): the client's sidecar counts the
	// TCP connection (9000; 9001 bypassed it) and the HTTP request under
	// destination_service_name="PassthroughCluster", and Envoy's
	// upstream_cx_total of the cluster counts both connections.
	passthrough := map[string]string{"reporter": "source", "source_workload": "client", "destination_service_name": "PassthroughCluster"}
	assertSidecarMetrics(t, client, []metricWant{
		{"istio_tcp_connections_opened_total", with(passthrough, "destination_service", "unknown", "request_protocol", "tcp", "response_flags", "-"), 1},
		{"istio_tcp_connections_closed_total", with(passthrough, "destination_service", "unknown", "request_protocol", "tcp", "response_flags", "-"), 1},
		{"istio_tcp_connections_opened_total", nil, 1}, // port 9001 went around the sidecar
		{"istio_requests_total", with(passthrough, "destination_service", "example.com:8080", "response_code", "200"), 1},
		{"envoy_cluster_upstream_cx_total", map[string]string{"envoy_cluster_name": "PassthroughCluster"}, 2},
	})

	// Mutual TLS between the sidecars: the server side counted the
	// requests as mutual TLS from the client's identity.
	_, metrics, err := httpGet(&http.Client{Timeout: 5 * time.Second}, "http://"+v1.IP+":15000/stats/prometheus", nil)
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
		t.Errorf("backend-v1's sidecar did not count mutual TLS requests from the client:\n%s", grepLines(metrics, "istio_requests_total"))
	}

	// STRICT mutual TLS covers the ports no service declares too, as
	// Istio's passthrough chains do: plaintext to backend-v1's 9000 is
	// refused, from the client pod (whose sidecar passes it through as
	// it came) and from outside the mesh, while the mesh's own traffic
	// keeps working; the workload's portLevelMtls sets 9000 back to
	// DISABLE, and only 9000.
	const strict = `
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec:
  mtls: {mode: STRICT}
`
	writeFile(t, filepath.Join(m.cfg, "strict.yaml"), strict)
	refused := func(ns *testenv.Netns, port string) func() error {
		return func() error {
			if got, err := echoTCP(ns, v1.IP+":"+port); err == nil {
				return fmt.Errorf("%s:%s answered %q in plaintext", v1.IP, port, got)
			}
			return nil
		}
	}
	eventually(t, 20*time.Second, "STRICT refuses plaintext on an undeclared port", refused(client, "9000"))
	for _, check := range []func() error{refused(client, "9000"), refused(nil, "9000"), refused(nil, "9001")} {
		if err := check(); err != nil {
			t.Error(err)
		}
	}
	if _, err := call(nil); err != nil {
		t.Errorf("the VIP under STRICT: %v", err)
	}
	writeFile(t, filepath.Join(m.cfg, "strict.yaml"), strict+`---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: backend-9000, namespace: shop}
spec:
  selector: {matchLabels: {app: backend}}
  portLevelMtls:
    9000: {mode: DISABLE}
`)
	eventually(t, 20*time.Second, "portLevelMtls DISABLE on the undeclared 9000", func() error {
		got, err := echoTCP(client, v1.IP+":9000")
		if err != nil || got != "echo:ping" {
			return fmt.Errorf("%q %v", got, err)
		}
		return nil
	})
	if got, err := echoTCP(nil, v1.IP+":9000"); err != nil || got != "echo:ping" {
		t.Errorf("9000 from outside the mesh with portLevelMtls DISABLE: %q %v", got, err)
	}
	if err := refused(nil, "9001")(); err != nil {
		t.Errorf("9001 (still STRICT): %v", err)
	}
}

// echoTCP sends "ping" to addr, from the namespace ns (nil: the host),
// and returns what the server answered until it closed the connection.
func echoTCP(ns *testenv.Netns, addr string) (string, error) {
	var got string
	dial := func() error {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "ping")
		b, err := io.ReadAll(c)
		got = string(b)
		if err == nil && got == "" {
			err = errors.New("closed without an answer")
		}
		return err
	}
	if ns == nil {
		return got, dial()
	}
	return got, ns.Do(dial)
}

// checkSplitAndHeader sends 300 calls and wants backend's 90/10 split
// within tolerance, then 20 with x-canary: true and wants v2 for each.
func checkSplitAndHeader(t *testing.T, what string, call func(headers map[string]string) (echoReply, error)) {
	t.Helper()
	got := map[string]int{}
	for range 300 {
		r, err := call(nil)
		if err != nil {
			t.Fatal(err)
		}
		got[r.Version]++
	}
	t.Logf("90/10 by %s: %v", what, got)
	// 270 expected for v1; six standard deviations (31) either way.
	if got["v1"] < 239 || got["v1"] > 299 || got["v1"]+got["v2"] != 300 {
		t.Errorf("split %v, want about 270 v1 / 30 v2", got)
	}
	for range 20 {
		if r, err := call(map[string]string{"x-canary": "true"}); err != nil || r.Version != "v2" {
			t.Fatalf("header match: %+v %v, want v2", r, err)
		}
	}
}

// tcpPassthrough dials server:9000 and server:9001 (plain TCP echo
// servers outside the registry) from the client pod and wants the echo.
func tcpPassthrough(t *testing.T, client, server *testenv.Netns) {
	t.Helper()
	for _, port := range []string{"9000", "9001"} {
		l, err := server.Listen("tcp", server.IP+":"+port)
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
					io.WriteString(c, "echo:"+string(b[:n]))
				}()
			}
		}()
	}
	for _, port := range []string{"9000", "9001"} {
		var got string
		err := client.Do(func() error {
			c, err := net.DialTimeout("tcp", server.IP+":"+port, 5*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, "ping "+port)
			b, err := io.ReadAll(c)
			got = string(b)
			return err
		})
		if err != nil || got != "echo:ping "+port {
			t.Errorf("TCP to %s:%s from the client pod: %q %v", server.IP, port, got, err)
		}
	}
}

func copyFile(t testing.TB, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o644); err != nil {
		t.Fatal(err)
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

// TestCaptureRegistryOnly: with --outbound-traffic-policy REGISTRY_ONLY a
// captured pod still reaches mesh services by VIP, while TCP to a
// destination outside the registry is closed by the sidecar
// (BlackHoleCluster) before it reaches the server, and HTTP to a Host
// the mesh does not know gets a 502; the sidecar counts both under
// destination_service_name="BlackHoleCluster", as Istio's do.
func TestCaptureRegistryOnly(t *testing.T) {
	m := newCaptureMesh(t, "--outbound-traffic-policy", "REGISTRY_ONLY")
	if r, err := m.call(nil); err != nil || !strings.HasPrefix(r.Name, "backend-v") {
		t.Fatalf("a mesh service by VIP under REGISTRY_ONLY: %+v %v", r, err)
	}
	l, err := m.v1.Listen("tcp", m.v1.IP+":9000")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "should not be reached")
			c.Close()
		}
	}()
	var got string
	err = m.client.Do(func() error {
		c, err := net.DialTimeout("tcp", m.v1.IP+":9000", 5*time.Second)
		if err != nil {
			return nil // refused: fine
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		b, _ := io.ReadAll(c)
		got = string(b)
		return nil
	})
	if err != nil || got != "" {
		t.Errorf("TCP outside the registry under REGISTRY_ONLY got %q (%v), want the connection closed", got, err)
	}
	// HTTP on the mesh's HTTP port to a Host the mesh does not know: the
	// block_all route answers 502 itself.
	if code, err := podGet(m.client, "http://"+m.v1.IP+":8080/", "example.com:8080"); err != nil || code != 502 {
		t.Errorf("HTTP to an unknown Host under REGISTRY_ONLY: %d %v, want 502 from the sidecar", code, err)
	}
	// Both refusals are counted, as Istio counts them: the connection
	// opened and closed with UH and the request as a 502, under
	// destination_service_name="BlackHoleCluster", and Envoy's
	// upstream_cx_none_healthy of the cluster.
	blocked := map[string]string{"reporter": "source", "source_workload": "client", "destination_service_name": "BlackHoleCluster"}
	assertSidecarMetrics(t, m.client, []metricWant{
		{"istio_tcp_connections_opened_total", with(blocked, "destination_service", "unknown", "request_protocol", "tcp", "response_flags", "UH"), 1},
		{"istio_tcp_connections_closed_total", with(blocked, "destination_service", "unknown", "request_protocol", "tcp", "response_flags", "UH"), 1},
		{"istio_requests_total", with(blocked, "destination_service", "example.com:8080", "response_code", "502", "response_flags", "-"), 1},
		{"envoy_cluster_upstream_cx_none_healthy", map[string]string{"envoy_cluster_name": "BlackHoleCluster"}, 1},
	})
}

// podGet sends GET url with Host host from inside pod, with no proxy
// settings, and returns the status code.
func podGet(pod *testenv.Netns, url, host string) (int, error) {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		Proxy: nil, DialContext: pod.DialContext, DisableKeepAlives: true,
	}}
	code, _, err := httpGet(hc, url, map[string]string{"Host": host})
	return code, err
}

// metricWant is the value one metric family should sum to over the
// series whose labels include labels (nil: every series).
type metricWant struct {
	family string
	labels map[string]string
	value  float64
}

// with returns base with more labels (name, value pairs).
func with(base map[string]string, kv ...string) map[string]string {
	out := map[string]string{}
	for k, v := range base {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

// assertSidecarMetrics scrapes the sidecar of pod (its admin
// /stats/prometheus, as Prometheus does) until every want holds, for up
// to 10 s: a relayed connection is counted closed just after the client
// sees it end.
func assertSidecarMetrics(t *testing.T, pod *testenv.Netns, wants []metricWant) {
	t.Helper()
	hc := &http.Client{Timeout: 5 * time.Second}
	var text string
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, body, err := httpGet(hc, "http://"+pod.IP+":15000/stats/prometheus", nil)
		if err != nil || code != 200 {
			t.Fatalf("scraping %s's sidecar: %d %v", pod.IP, code, err)
		}
		text = body
		parser := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
		if err != nil {
			t.Fatalf("parsing %s's sidecar metrics: %v", pod.IP, err)
		}
		var wrong []string
		for _, w := range wants {
			if got := familySum(fams[w.family], w.labels); got != w.value {
				wrong = append(wrong, fmt.Sprintf("%s%v = %v, want %v", w.family, w.labels, got, w.value))
			}
		}
		if len(wrong) == 0 {
			return
		}
		if time.Now().After(deadline) {
			var seen []string
			for _, w := range wants {
				seen = append(seen, grepLines(text, w.family+"{"))
			}
			t.Errorf("%s's sidecar metrics:\n%s\nhave:\n%s", pod.IP, strings.Join(wrong, "\n"), strings.Join(seen, "\n"))
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// familySum adds up the samples of f whose labels include want.
func familySum(f *dto.MetricFamily, want map[string]string) float64 {
	var sum float64
series:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue series
			}
		}
		sum += m.GetCounter().GetValue() + m.GetUntyped().GetValue()
	}
	return sum
}

// sidecarCPU is the CPU time, in seconds, the sidecars with these admin
// addresses have used (their process_cpu_seconds_total).
func sidecarCPU(b *testing.B, admins ...string) float64 {
	b.Helper()
	var total float64
	for _, a := range admins {
		_, body, err := httpGet(&http.Client{Timeout: 5 * time.Second}, "http://"+a+"/stats/prometheus", nil)
		if err != nil {
			b.Fatal(err)
		}
		var v float64
		found := false
		for _, l := range strings.Split(body, "\n") {
			if rest, ok := strings.CutPrefix(l, "process_cpu_seconds_total "); ok {
				_, err = fmt.Sscanf(rest, "%g", &v)
				found = err == nil
			}
		}
		if !found {
			b.Fatalf("%s: no process_cpu_seconds_total in its metrics", a)
		}
		total += v
	}
	return total
}

// BenchmarkCapturePath: one request from an unmodified client in a
// captured pod to a service VIP (iptables REDIRECT, original-destination
// lookup, the virtual listener) against the same request sent explicitly
// to a sidecar's outbound listener by Host (no capture), both through
// two sidecars over mutual TLS to the same echo app:
//
//	go test -run '^$' -bench CapturePath -benchtime 2000x ./e2e/registries
//
// Each path with keep-alive and with a new connection per request;
// reported side by side in one run: wall time per request (ns/op) and
// the CPU time the client's sidecar and the servers' sidecars spent per
// request.
func BenchmarkCapturePath(b *testing.B) {
	m := newCaptureMesh(b)
	// An explicit client pod: no rules, its sidecar's outbound listener
	// on the pod address.
	explicit := m.n.Netns(b, "explicit")
	tok := filepath.Join(b.TempDir(), "token")
	copyFile(b, m.cp.token(b, m.bin, "shop", "client"), tok)
	w := startWorkload(b, m.bin, m.cp, explicit, workloadSpec{Name: "explicit", Namespace: "shop", ServiceAccount: "client",
		Labels: "app=explicit", TokenFile: tok})
	// Each path with keep-alive (the request path alone) and with a new
	// connection per request (REDIRECT and the original-destination
	// lookup happen once per connection).
	clients := func(dial func(ctx context.Context, network, addr string) (net.Conn, error)) map[bool]*http.Client {
		out := map[bool]*http.Client{}
		for _, keepAlive := range []bool{true, false} {
			out[keepAlive] = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
				Proxy: nil, DialContext: dial, DisableKeepAlives: !keepAlive,
			}}
		}
		return out
	}
	var d net.Dialer
	explicitClients, capturedClients := clients(d.DialContext), clients(m.client.DialContext)
	explicitCall := func(keepAlive bool) error {
		code, body, err := httpGet(explicitClients[keepAlive], "http://"+w.Out+"/", map[string]string{"Host": "backend.shop.svc.cluster.local:8080"})
		if err == nil && code != 200 {
			err = fmt.Errorf("%d %s", code, body)
		}
		return err
	}
	eventually(b, 20*time.Second, "explicit path", func() error { return explicitCall(true) })
	captured := func(keepAlive bool) error {
		code, body, err := httpGet(capturedClients[keepAlive], "http://"+m.vip+":8080/", nil)
		if err == nil && code != 200 {
			err = fmt.Errorf("%d %s", code, body)
		}
		return err
	}
	servers := []string{m.v1.IP + ":15000", m.v2.IP + ":15000"}

	for _, path := range []struct {
		name    string
		do      func(keepAlive bool) error
		sidecar string // the client's sidecar's admin address
	}{
		{"capture", captured, m.client.IP + ":15000"},
		{"explicit", explicitCall, w.Admin},
	} {
		for _, keepAlive := range []bool{true, false} {
			name := path.name + "/keepalive"
			if !keepAlive {
				name = path.name + "/new-connection"
			}
			b.Run(name, func(b *testing.B) {
				clientCPU, serverCPU := sidecarCPU(b, path.sidecar), sidecarCPU(b, servers...)
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if err := path.do(keepAlive); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				// CPU time the sidecars spent, per request (process CPU, 10 ms
				// resolution: use -benchtime 1000x or more).
				b.ReportMetric((sidecarCPU(b, path.sidecar)-clientCPU)*1e6/float64(b.N), "client-sidecar-cpu-µs/op")
				b.ReportMetric((sidecarCPU(b, servers...)-serverCPU)*1e6/float64(b.N), "server-sidecar-cpu-µs/op")
			})
		}
	}
}
