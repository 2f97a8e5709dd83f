package e2e

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"weft.dev/weft/internal/controlplane"
	"weft.dev/weft/internal/localmesh"
	"weft.dev/weft/internal/spiffe"
)

// certsPage is the part of a sidecar's GET /certs the tests read.
type certsPage struct {
	Certificates []struct {
		CACert    []certDetails `json:"ca_cert"`
		CertChain []certDetails `json:"cert_chain"`
	} `json:"certificates"`
}

type certDetails struct {
	Path            string              `json:"path"`
	SerialNumber    string              `json:"serial_number"`
	SubjectAltNames []map[string]string `json:"subject_alt_names"`
	ValidFrom       string              `json:"valid_from"`
	ExpirationTime  string              `json:"expiration_time"`
}

// adminCerts reads a sidecar's /certs.
func adminCerts(t *testing.T, w *localmesh.Workload) certsPage {
	t.Helper()
	resp, err := http.Get("http://" + w.Proxy.AdminAddr().String() + "/certs")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var p certsPage
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil || resp.StatusCode != 200 || len(p.Certificates) != 1 {
		t.Fatalf("/certs: %d %v %+v", resp.StatusCode, err, p)
	}
	return p
}

func identity(sa string) string {
	return spiffe.ID{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: sa}.String()
}

// TestSecurityIdentityCertificate: a sidecar with a valid token gets a
// certificate for its SPIFFE ID from the mesh CA, shows it on /certs, and
// serves traffic.
func TestSecurityIdentityCertificate(t *testing.T) {
	m := NewMesh(t)
	m.Service("backend", "HTTP", "v1")
	client := m.Client("client")
	Eventually(t, 10*time.Second, "client ready", func() error {
		if !client.Proxy.Ready() {
			return fmt.Errorf("not ready")
		}
		return nil
	})

	page := adminCerts(t, client)
	chain, roots := page.Certificates[0].CertChain, page.Certificates[0].CACert
	if len(chain) != 1 || chain[0].Path != "default" || len(chain[0].SubjectAltNames) != 1 || chain[0].SubjectAltNames[0]["uri"] != identity("client") {
		t.Fatalf("/certs cert_chain = %+v, want one certificate for %s", chain, identity("client"))
	}
	if len(roots) != 1 || roots[0].Path != "ROOTCA" {
		t.Errorf("/certs ca_cert = %+v, want the root as ROOTCA", roots)
	}
	exp, err := time.Parse(time.RFC3339, chain[0].ExpirationTime)
	if d := time.Until(exp); err != nil || d > 24*time.Hour || d < 23*time.Hour {
		t.Errorf("expiration_time %q: %v, want about 24h from now", chain[0].ExpirationTime, err)
	}

	// The certificate the proxy holds is the one /certs shows, and it
	// verifies against the root the control plane publishes.
	b := client.Proxy.Certs().Current()
	if got := b.Leaf().SerialNumber.Text(16); got != chain[0].SerialNumber {
		t.Errorf("serial %s on /certs, %s held", chain[0].SerialNumber, got)
	}
	roots2 := x509.NewCertPool()
	roots2.AppendCertsFromPEM(m.CP.RootCertPEM())
	if id, err := spiffe.Verify(b.Chain, roots2, time.Now(), x509.ExtKeyUsageClientAuth); err != nil || id.String() != identity("client") {
		t.Errorf("the held certificate against the control plane's root: %v %v", id, err)
	}
	c := newClient()
	if got := Tally(t, c, client, "backend", nil, 10, byVersion); got["v1"] != 10 {
		t.Errorf("through the sidecar: %v", got)
	}
}

// TestSecurityIdentityWrongServiceAccount: a sidecar whose token is for
// another service account gets no certificate, is not ready, and both
// sides say why, naming both identities.
func TestSecurityIdentityWrongServiceAccount(t *testing.T) {
	m := NewMesh(t)
	tok, err := m.CP.IssueToken("default", "payments", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	w := m.Workload(localmesh.WorkloadOptions{Name: "shop", Token: tok, Labels: map[string]string{"app": "shop"}})
	cpLine := "certificate request refused: it asks for another identity than the one proved"
	Eventually(t, 10*time.Second, "both sides log the refusal, and the proxy retries", func() error {
		logs := m.Logs()
		for _, want := range []string{
			// The control plane, at warn: what was asked, what was proved.
			`level=WARN msg="` + cpLine + `"`, "asked=" + identity("shop"), "proved=" + identity("payments"),
			// The proxy, at error: the CA's refusal with both identities, then again.
			"level=ERROR", "code = PermissionDenied", "the bootstrap token proves identity " + identity("payments") + ", not " + identity("shop"), "attempt=2",
		} {
			if !strings.Contains(logs, want) {
				return fmt.Errorf("logs lack %q", want)
			}
		}
		return nil
	})
	if w.Proxy.Ready() || w.Proxy.Certs().Current() != nil {
		t.Error("the sidecar is ready or holds a certificate")
	}
	resp, err := http.Get("http://" + w.Proxy.AdminAddr().String() + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/ready = %d, want 503", resp.StatusCode)
	}
	if chain := adminCerts(t, w).Certificates[0].CertChain; len(chain) != 0 {
		t.Errorf("/certs shows a certificate: %+v", chain)
	}
	if st, err := m.Status(); err != nil || st.ConnectedProxies != 0 {
		t.Errorf("connected proxies %d (%v): a sidecar without certificate has no ADS stream", st.ConnectedProxies, err)
	}
}

// TestSecurityIdentityReusedToken: a token gets one certificate; a second
// sidecar presenting it is refused.
func TestSecurityIdentityReusedToken(t *testing.T) {
	m := NewMesh(t)
	tok, err := m.CP.IssueToken("default", "worker", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	first := m.Workload(localmesh.WorkloadOptions{Name: "worker-1", ServiceAccount: "worker", Token: tok})
	Eventually(t, 10*time.Second, "the first sidecar ready", func() error {
		if !first.Proxy.Ready() {
			return fmt.Errorf("not ready")
		}
		return nil
	})
	second := m.Workload(localmesh.WorkloadOptions{Name: "worker-2", ServiceAccount: "worker", Token: tok})
	Eventually(t, 10*time.Second, "the reuse refused", func() error {
		logs := m.Logs()
		for _, want := range []string{"certificate request refused: not authenticated", "bootstrap token was already used", "level=ERROR", "code = Unauthenticated", "is single-use"} {
			if !strings.Contains(logs, want) {
				return fmt.Errorf("logs lack %q", want)
			}
		}
		return nil
	})
	if second.Proxy.Ready() || second.Proxy.Certs().Current() != nil {
		t.Error("the second sidecar got a certificate with a used token")
	}
	if !first.Proxy.Ready() {
		t.Error("the first sidecar is no longer ready")
	}
}

// TestSecurityIdentityRotation: with a 4-second lifetime, sidecars renew
// their certificates several times while traffic flows; they stay
// connected to the control plane (no reconnect) and ready throughout.
func TestSecurityIdentityRotation(t *testing.T) {
	const lifetime = 4 * time.Second
	m := NewMesh(t, func(o *controlplane.Options) { o.WorkloadCertTTL = lifetime })
	backends := m.Service("backend", "HTTP", "v1")
	client := m.Client("client")
	Eventually(t, 10*time.Second, "client ready", func() error {
		if !client.Proxy.Ready() {
			return fmt.Errorf("not ready")
		}
		return nil
	})
	c := newClient()
	Tally(t, c, client, "backend", nil, 5, byVersion) // routed before the clock starts

	// Readiness, sampled while the certificates turn over.
	var samples, notReady atomic.Int64
	ctx, stop := context.WithCancel(context.Background())
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for ctx.Err() == nil {
			samples.Add(1)
			if !client.Proxy.Ready() || !backends[0].Proxy.Ready() {
				notReady.Add(1)
			}
			select {
			case <-ctx.Done():
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	tr := StartTraffic(c, client, "backend", 4)
	serials := map[string]bool{}
	for _, w := range []*localmesh.Workload{client, backends[0]} {
		b := w.Proxy.Certs().Current()
		serials[b.Leaf().SerialNumber.String()] = true
		for i := 0; i < 3; i++ {
			select {
			case <-b.Changed():
			case <-time.After(5 * lifetime):
				t.Fatalf("%s: rotation %d did not happen within %v", w.Opts.Name, i+1, 5*lifetime)
			}
			nb := w.Proxy.Certs().Current()
			if !nb.Leaf().NotAfter.After(b.Leaf().NotAfter) || nb.ID != b.ID {
				t.Fatalf("%s: rotation %d installed %s until %v after %s until %v", w.Opts.Name, i+1, nb.ID, nb.Leaf().NotAfter, b.ID, b.Leaf().NotAfter)
			}
			b = nb
			serials[b.Leaf().SerialNumber.String()] = true
		}
		// /certs shows the newest.
		if got := adminCerts(t, w).Certificates[0].CertChain[0].SerialNumber; got != w.Proxy.Certs().Current().Leaf().SerialNumber.Text(16) {
			t.Errorf("%s: /certs serial %s is not the current one", w.Opts.Name, got)
		}
	}
	tr.Stop(t, "while certificates rotated")
	stop()
	<-sampled
	if len(serials) != 8 {
		t.Errorf("%d distinct certificates, want 8 (two sidecars, the first and three renewals each)", len(serials))
	}
	if n := notReady.Load(); n != 0 {
		t.Errorf("a sidecar was not ready in %d of %d samples", n, samples.Load())
	}
	for _, w := range []*localmesh.Workload{client, backends[0]} {
		if s := w.Proxy.XDSStats(); s.Reconnects != 0 {
			t.Errorf("%s reconnected to the control plane %d times during rotation", w.Opts.Name, s.Reconnects)
		}
	}
	if strings.Contains(m.Logs(), "level=ERROR") {
		t.Errorf("errors logged during rotation:\n%s", m.Logs())
	}
}
