package registries

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"weft.dev/weft/internal/testenv"
)

// cacheYAML is cache.shop: two TCP ports on VIP vip, served by backend's
// pods.
func cacheYAML(vip string) string {
	return fmt.Sprintf(`
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: cache, namespace: shop}
spec:
  hosts: [cache.shop.svc.cluster.local]
  addresses: ["%s"]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 9300, name: tcp-cache, protocol: TCP}
  - {number: 9301, name: tcp-cache-admin, protocol: TCP}
  workloadSelector:
    labels: {app: backend}
`, vip)
}

// TestCaptureTCPAuthorization: AuthorizationPolicy on a workload's TCP
// ports, through real captured sidecars with mutual TLS between them. An
// unmodified client in the client pod opens connections to cache.shop's
// two TCP ports by virtual IP:
//
//   - with no policy, both ports answer;
//   - an ALLOW policy for the client's identity on port 9300 only: 9300
//     answers, 9301 is closed without an answer (the backend's sidecar
//     never connects to the application), and the backend sidecars count
//     the refusals;
//   - a DENY policy for the client's namespace added: 9300 is closed too.
func TestCaptureTCPAuthorization(t *testing.T) {
	meshConfig := filepath.Join(t.TempDir(), "mesh-config.yaml")
	writeFile(t, meshConfig, `
extensionProviders:
- name: cache-authz
  envoyExtAuthzGrpc:
    service: authz.shop.svc.cluster.local
    port: 9000
    timeout: 5s
`)
	m := newCaptureMesh(t, "--mesh-config", meshConfig)
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
	}
	vip := m.n.Prefix + ".251"
	writeFile(t, filepath.Join(m.cfg, "cache.yaml"), cacheYAML(vip))

	// dial sends one line to vip:port from the client pod and returns the
	// answer; a connection the backend refuses ends without one.
	dial := func(port string, i int) error {
		return m.client.Do(func() error {
			c, err := net.DialTimeout("tcp", vip+":"+port, 5*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			fmt.Fprintf(c, "line %d\n", i)
			got, err := bufio.NewReader(c).ReadString('\n')
			if err != nil {
				return fmt.Errorf("no answer: %w", err)
			}
			if _, line, ok := strings.Cut(got, ":"); !ok || line != fmt.Sprintf("line %d\n", i) {
				return fmt.Errorf("answer %q", got)
			}
			return nil
		})
	}
	// expect waits until every port answers as want says (true: an
	// answer), then checks it over 20 more connections per port.
	expect := func(what string, want map[string]bool) {
		t.Helper()
		check := func(i int) error {
			for port, ok := range want {
				err := dial(port, i)
				switch {
				case ok && err != nil:
					return fmt.Errorf("port %s: %v, want an answer", port, err)
				case !ok && err == nil:
					return fmt.Errorf("port %s answered, want the connection refused", port)
				}
			}
			return nil
		}
		eventually(t, 20*time.Second, what, func() error { return check(0) })
		for i := range 20 {
			if err := check(i + 1); err != nil {
				t.Fatalf("%s, connection %d: %v", what, i+1, err)
			}
		}
	}
	expect("no policy: both ports answer", map[string]bool{"9300": true, "9301": true})

	writeFile(t, filepath.Join(m.cfg, "authz.yaml"), `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: cache-clients, namespace: shop}
spec:
  selector: {matchLabels: {app: backend}}
  action: ALLOW
  rules:
  - from:
    - source: {principals: [cluster.local/ns/shop/sa/client]}
    to:
    - operation: {ports: ["9300"]}
`)
	expect("ALLOW the client on 9300", map[string]bool{"9300": true, "9301": false})
	refused := 0.0
	for _, pod := range []string{m.v1.IP, m.v2.IP} {
		refused += scrapeSum(t, pod, "weft_proxy_rbac_denied_total", map[string]string{"action": "ALLOW", "policy": "none"})
	}
	if refused < 21 {
		t.Errorf("backend sidecars counted %v refused connections, want at least 21", refused)
	}

	writeFile(t, filepath.Join(m.cfg, "deny.yaml"), `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-shop, namespace: shop}
spec:
  selector: {matchLabels: {app: backend}}
  action: DENY
  rules:
  - from:
    - source: {namespaces: [shop]}
`)
	expect("DENY the client's namespace", map[string]bool{"9300": false, "9301": false})

	// CUSTOM with a gRPC provider on port 9301: each connection there is
	// decided by a real Authorization service on the host (the backend
	// sidecars reach it plaintext, through their cluster for it), which
	// sees the client's identity; 9300 is never checked.
	az := startConnAuthz(t, m.n.Gateway)
	writeFile(t, filepath.Join(m.cfg, "deny.yaml"), "")
	writeFile(t, filepath.Join(m.cfg, "authz.yaml"), fmt.Sprintf(`
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: authz, namespace: shop}
spec:
  hosts: [authz.shop.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{number: 9000, name: grpc, protocol: GRPC}]
  endpoints: [{address: "%s", ports: {grpc: %d}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: cache-admin-authz, namespace: shop}
spec:
  selector: {matchLabels: {app: backend}}
  action: CUSTOM
  provider: {name: cache-authz}
  rules:
  - to:
    - operation: {ports: ["9301"]}
`, m.n.Gateway, az.port))
	expect("CUSTOM denying 9301", map[string]bool{"9300": true, "9301": false})
	az.allow.Store(true)
	expect("CUSTOM allowing 9301", map[string]bool{"9300": true, "9301": true})
	if got := az.principals(); len(got) == 0 || got[len(got)-1] != "spiffe://cluster.local/ns/shop/sa/client" || az.port9300.Load() {
		t.Errorf("the authorization service saw principals %q (checked 9300: %v), want the client's identity, 9301 only", got, az.port9300.Load())
	}
}

// connAuthz is a gRPC Authorization service deciding connections: it
// allows when allow is set, and records the source principals it saw.
type connAuthz struct {
	port     int
	allow    atomic.Bool
	port9300 atomic.Bool // a check of a connection to port 9300 arrived
	mu       sync.Mutex
	seen     []string
}

func (a *connAuthz) principals() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.seen)
}

func (a *connAuthz) Check(_ context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	attrs := req.GetAttributes()
	a.mu.Lock()
	a.seen = append(a.seen, attrs.GetSource().GetPrincipal())
	a.mu.Unlock()
	if attrs.GetDestination().GetAddress().GetSocketAddress().GetPortValue() == 9300 {
		a.port9300.Store(true)
	}
	code := codes.PermissionDenied
	if a.allow.Load() {
		code = codes.OK
	}
	return &authv3.CheckResponse{Status: &status.Status{Code: int32(code)}}, nil
}

// startConnAuthz serves connAuthz on ip (the host's address on the test
// network) until the test ends.
func startConnAuthz(t *testing.T, ip string) *connAuthz {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	a := &connAuthz{port: l.Addr().(*net.TCPAddr).Port}
	s := grpc.NewServer()
	authv3.RegisterAuthorizationServer(s, a)
	go s.Serve(l)
	t.Cleanup(s.Stop)
	return a
}

// scrapeSum is the sum of family's samples with these labels on the
// sidecar whose admin address is ip:15000.
func scrapeSum(t *testing.T, ip, family string, labels map[string]string) float64 {
	t.Helper()
	code, body, err := httpGet(&http.Client{Timeout: 5 * time.Second}, "http://"+ip+":15000/stats/prometheus", nil)
	if err != nil || code != 200 {
		t.Fatalf("scraping %s's sidecar: %d %v", ip, code, err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parsing %s's sidecar metrics: %v", ip, err)
	}
	return familySum(fams[family], labels)
}
