package dataplane

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"
)

// gatewaySecrets is a gateway's secrets with no certificate yet: enough
// for its listeners' credentials (kubernetes://<name>) to compile.
type gatewaySecrets struct{}

func (gatewaySecrets) Certificate() *tls.Certificate                 { return nil }
func (gatewaySecrets) Roots() *x509.CertPool                         { return nil }
func (gatewaySecrets) CredentialCertificate(string) *tls.Certificate { return nil }
func (gatewaySecrets) CredentialRoots(string) *x509.CertPool         { return nil }

// TestGoldensTranslate: every configuration the xDS generator's golden
// cases show — the captured proxies' virtual listeners, tcp_proxy chains
// and passthrough clusters, and the gateways' credential chains included —
// is accepted by the data plane.
func TestGoldensTranslate(t *testing.T) {
	// As a gateway with a credential directory: gateway goldens name
	// credentials.
	d, err := New(Options{Secrets: gatewaySecrets{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = d.Close(ctx)
	})
	for i, r := range goldenResources(t) {
		t.Logf("golden %d: %v", i, sortedKeys(r.Listeners))
		rt, err := d.translate(r, nil)
		if err != nil {
			t.Errorf("golden %d (listeners %v): %v", i, sortedKeys(r.Listeners), err)
			continue
		}
		for _, c := range rt.clusters {
			c.CloseIdle()
		}
	}
}
