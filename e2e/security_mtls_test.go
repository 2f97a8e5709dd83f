package e2e

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"weft.dev/weft/internal/controlplane"
	"weft.dev/weft/internal/echo"
	"weft.dev/weft/internal/localmesh"
)

// peerAuthYAML is a namespace-wide PeerAuthentication for default.
func peerAuthYAML(mode string) string {
	return fmt.Sprintf(`apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: default}
spec:
  mtls: {mode: %s}
`, mode)
}

// inboundAddr is where w's sidecar takes mesh traffic.
func inboundAddr(w *localmesh.Workload) string {
	return net.JoinHostPort(w.Opts.IPs[0], fmt.Sprint(w.Opts.WorkloadPort))
}

// plaintextGet sends one plaintext HTTP/1.1 request on a new connection
// to addr, as a workload without a sidecar would. answered is false when
// the connection was closed without a response.
func plaintextGet(addr string) (answered bool, code int, err error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return false, 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
	req.Host = "backend"
	if err := req.Write(c); err != nil {
		return false, 0, nil // closed before we could even write
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return false, 0, fmt.Errorf("neither answered nor closed within 5s")
		}
		return false, 0, nil
	}
	resp.Body.Close()
	return true, resp.StatusCode, nil
}

// xfcc is the x-forwarded-client-cert the app saw.
func xfcc(r echo.Reply) string { return r.Headers["x-forwarded-client-cert"] }

// waitPlaintextRefused waits until addr refuses plaintext (a STRICT
// policy has reached its sidecar).
func waitPlaintextRefused(t *testing.T, addr string) {
	t.Helper()
	Eventually(t, 10*time.Second, "STRICT at "+addr, func() error {
		answered, code, err := plaintextGet(addr)
		if err != nil {
			return err
		}
		if answered {
			return fmt.Errorf("plaintext answered %d", code)
		}
		return nil
	})
}

// TestSecurityMTLSStrict: with STRICT mutual TLS in the namespace, every
// plaintext connection to the backend's sidecar is refused, the same
// requests through the client's sidecar succeed over mutual TLS, and the
// backend app sees the client's identity in x-forwarded-client-cert.
func TestSecurityMTLSStrict(t *testing.T) {
	m := NewMesh(t)
	backend := m.Service("backend", "HTTP", "v1")[0]
	client := m.Client("client")
	m.WriteConfig("peer-authn.yaml", peerAuthYAML("STRICT"))
	addr := inboundAddr(backend)
	waitPlaintextRefused(t, addr)

	const n = 50
	for i := range n {
		answered, code, err := plaintextGet(addr)
		if err != nil || answered {
			t.Fatalf("plaintext connection %d of %d: answered=%v code=%d err=%v; want it refused", i+1, n, answered, code, err)
		}
	}
	refused, _ := series(t, backend, "envoy_listener_ssl_connection_error", nil)
	if refused < n {
		t.Errorf("the sidecar counted %v refused connections, want at least %d", refused, n)
	}

	c := newClient()
	waitVersion(t, c, client, "backend", nil, "v1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	want := `By=` + identity("backend") + `;Hash=`
	srvLabels := map[string]string{"reporter": "destination",
		"connection_security_policy": "mutual_tls", "source_principal": identity("client"), "destination_principal": identity("backend")}
	cliLabels := map[string]string{"reporter": "source", "source_principal": identity("client"), "destination_principal": identity("backend")}
	srvBefore, _ := series(t, backend, "istio_requests_total", srvLabels)
	cliBefore, _ := series(t, client, "istio_requests_total", cliLabels)
	for i := range n {
		code, r, err := Get(ctx, c, client, "backend", "/", nil)
		if err != nil || code != 200 {
			t.Fatalf("request %d through the client's sidecar: %d %v", i+1, code, err)
		}
		if got := xfcc(r); !strings.HasPrefix(got, want) || !strings.HasSuffix(got, `;Subject="";URI=`+identity("client")) {
			t.Fatalf("the app saw x-forwarded-client-cert %q; want By=<backend>;Hash=…;Subject=\"\";URI=<client>", got)
		}
	}
	if got, seen := series(t, backend, "istio_requests_total", srvLabels); got-srvBefore != n {
		t.Errorf("backend istio_requests_total over mutual TLS went up by %v, want %d; series %v", got-srvBefore, n, seen)
	}
	if got, seen := series(t, client, "istio_requests_total", cliLabels); got-cliBefore != n {
		t.Errorf("client istio_requests_total with principals went up by %v, want %d; series %v", got-cliBefore, n, seen)
	}
}

// TestSecurityMTLSPermissive: with no policy (PERMISSIVE), one port of
// the backend's sidecar serves a plaintext client and, through the
// client's sidecar, a mutual TLS one.
func TestSecurityMTLSPermissive(t *testing.T) {
	m := NewMesh(t)
	backend := m.Service("backend", "HTTP", "v1")[0]
	client := m.Client("client")
	addr := inboundAddr(backend)
	c := newClient()
	waitVersion(t, c, client, "backend", nil, "v1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	before := map[string]float64{}
	for _, policy := range []string{"mutual_tls", "none"} {
		before[policy], _ = series(t, backend, "istio_requests_total", map[string]string{"reporter": "destination", "connection_security_policy": policy})
	}
	for i := range 10 {
		answered, code, err := plaintextGet(addr)
		if err != nil || !answered || code != 200 {
			t.Fatalf("plaintext request %d: answered=%v code=%d err=%v", i+1, answered, code, err)
		}
		code, r, err := Get(ctx, c, client, "backend", "/", nil)
		if err != nil || code != 200 || !strings.Contains(xfcc(r), "URI="+identity("client")) {
			t.Fatalf("mutual TLS request %d: %d %v, x-forwarded-client-cert %q", i+1, code, err, xfcc(r))
		}
	}
	for policy, want := range map[string]float64{"mutual_tls": 10, "none": 10} {
		if got, _ := series(t, backend, "istio_requests_total", map[string]string{"reporter": "destination", "connection_security_policy": policy}); got-before[policy] != want {
			t.Errorf("backend requests with connection_security_policy=%s went up by %v, want %v", policy, got-before[policy], want)
		}
	}
}

// TestSecurityMTLSMigration: PERMISSIVE to STRICT on the namespace while
// traffic runs through the client's sidecar: no request fails, and
// plaintext is refused afterwards.
func TestSecurityMTLSMigration(t *testing.T) {
	m := NewMesh(t)
	backends := m.Service("backend", "HTTP", "v1", "v2")
	client := m.Client("client")
	m.WriteConfig("peer-authn.yaml", peerAuthYAML("PERMISSIVE"))
	c := newClient()
	Eventually(t, 10*time.Second, "routing to backend", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if code, _, err := Get(ctx, c, client, "backend", "/", nil); err != nil || code != 200 {
			return fmt.Errorf("%d %v", code, err)
		}
		return nil
	})
	Tally(t, c, client, "backend", nil, 10, byVersion)

	tr := StartTraffic(c, client, "backend", 8)
	tr.WaitSent(t, 200)
	m.WriteConfig("peer-authn.yaml", peerAuthYAML("STRICT"))
	for _, b := range backends {
		waitPlaintextRefused(t, inboundAddr(b))
	}
	tr.WaitSent(t, 200)
	tr.Stop(t, "while the namespace moved from PERMISSIVE to STRICT")
}

// TestSecurityMTLSRotation: workload certificates that live 6 seconds
// rotate several times under steady traffic. No request fails: kept-alive
// connections carry on, and every new connection presents the current
// certificate (the backend sees its hash). (The lifetime leaves a loaded
// machine time to renew at half of it: an expired certificate needs a
// new token.)
func TestSecurityMTLSRotation(t *testing.T) {
	const lifetime = 6 * time.Second
	m := NewMesh(t, func(o *controlplane.Options) { o.WorkloadCertTTL = lifetime })
	steady := m.Service("backend", "HTTP", "v1")[0]
	fresh := m.Service("fresh", "HTTP", "v1")[0]
	// Every request to fresh on a new upstream connection: each one a
	// handshake with the client's current certificate (or a resumption
	// of a session made with it).
	m.WriteConfig("fresh-dr.yaml", `apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: fresh, namespace: default}
spec:
  host: fresh
  trafficPolicy:
    connectionPool:
      http: {maxRequestsPerConnection: 1}
`)
	client := m.Client("client")
	m.WriteConfig("peer-authn.yaml", peerAuthYAML("STRICT"))
	waitPlaintextRefused(t, inboundAddr(steady))
	waitPlaintextRefused(t, inboundAddr(fresh))
	c := newClient()
	waitVersion(t, c, client, "backend", nil, "v1")
	waitVersion(t, c, client, "fresh", nil, "v1")

	steadyTr := StartTraffic(c, client, "backend", 2)
	freshTr := StartTraffic(c, client, "fresh", 1)
	hashOf := func(b *tls.Certificate) string {
		sum := sha256.Sum256(b.Certificate[0])
		return hex.EncodeToString(sum[:])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	serials := map[string]bool{}
	for i := range 3 {
		cur := client.Proxy.Certs().Current()
		select {
		case <-cur.Changed():
		case <-time.After(5 * lifetime):
			t.Fatalf("rotation %d did not happen within %v", i+1, 5*lifetime)
		}
		next := client.Proxy.Certs().Current()
		serials[next.Leaf().SerialNumber.Text(16)] = true
		// The next new connection presents the new certificate.
		Eventually(t, lifetime/2, fmt.Sprintf("rotation %d seen by the backend", i+1), func() error {
			code, r, err := Get(ctx, c, client, "fresh", "/", nil)
			if err != nil || code != 200 {
				return fmt.Errorf("%d %v", code, err)
			}
			if got, want := xfcc(r), "Hash="+hashOf(next.TLS)+";"; !strings.Contains(got, want) {
				if client.Proxy.Certs().Current() != next {
					return nil // rotated again meanwhile; the next round checks
				}
				return fmt.Errorf("the backend saw %q, want the certificate with serial %s (%s)", got, next.Leaf().SerialNumber.Text(16), want)
			}
			return nil
		})
	}
	steadyTr.Stop(t, "through 3 certificate rotations on kept-alive connections")
	freshTr.Stop(t, "through 3 certificate rotations, a new connection per request")
	if len(serials) != 3 {
		t.Errorf("serials %v: want 3 distinct certificates", serials)
	}
}

// TestSecurityMTLSOtherRoot: a workload whose certificate comes from
// another mesh's root is refused at the handshake by a STRICT sidecar,
// while the same client presenting this mesh's certificate is served.
func TestSecurityMTLSOtherRoot(t *testing.T) {
	m := NewMesh(t)
	backend := m.Service("backend", "HTTP", "v1")[0]
	client := m.Client("client")
	m.WriteConfig("peer-authn.yaml", peerAuthYAML("STRICT"))
	addr := inboundAddr(backend)
	waitPlaintextRefused(t, addr)

	other := NewMesh(t) // a second control plane: a second CA and root
	intruder := other.Client("client")
	Eventually(t, 10*time.Second, "the other mesh's client has its certificate", func() error {
		if intruder.Proxy.Certs().Current() == nil {
			return fmt.Errorf("no certificate yet")
		}
		return nil
	})
	get := func(cert *tls.Certificate) (int, error) {
		tr := &http.Transport{TLSClientConfig: &tls.Config{Certificates: []tls.Certificate{*cert},
			InsecureSkipVerify: true}} //nolint:gosec // the test checks the server side
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("https://" + addr + "/")
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}
	before, _ := series(t, backend, "envoy_listener_ssl_connection_error", nil)
	// Same SPIFFE ID, another root.
	if code, err := get(intruder.Proxy.Certs().Current().TLS); err == nil {
		t.Fatalf("a certificate of another root was served: %d", code)
	}
	Eventually(t, 5*time.Second, "the refusal counted", func() error {
		if after, _ := series(t, backend, "envoy_listener_ssl_connection_error", nil); after != before+1 {
			return fmt.Errorf("ssl_connection_error %v, want %v", after, before+1)
		}
		return nil
	})
	if code, err := get(client.Proxy.Certs().Current().TLS); err != nil || code != 200 {
		t.Errorf("this mesh's certificate: %d %v", code, err)
	}
}
