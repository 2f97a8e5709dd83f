package sdscreds

import (
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"slices"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"weft.dev/weft/internal/proxy/proxytest"
)

func inline(b []byte) *core.DataSource {
	return &core.DataSource{Specifier: &core.DataSource_InlineBytes{InlineBytes: b}}
}

// TestStore: certificates, CA bundles and generic secrets are parsed as
// they arrive and served by name; a bad one keeps its last good version
// and is reported; a dropped one is gone.
func TestStore(t *testing.T) {
	ca := proxytest.NewMeshCA(t)
	pair := func() (certPEM, keyPEM []byte, serial string) {
		c := ca.Issue(t, "", time.Hour, "shop.example.com")
		key, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}),
			pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}), c.Leaf.SerialNumber.String()
	}
	certSecret := func(name string, c, k []byte) *tlsv3.Secret {
		return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{CertificateChain: inline(c), PrivateKey: inline(k)}}}
	}
	s := New(slog.New(slog.DiscardHandler))
	c1, k1, serial1 := pair()
	err := s.UpdateSecrets(map[string]*tlsv3.Secret{
		"kubernetes://edge":        certSecret("kubernetes://edge", c1, k1),
		"kubernetes://edge-cacert": {Name: "kubernetes://edge-cacert", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{TrustedCa: inline(ca.RootPEM)}}},
		"kubernetes://login/id":    {Name: "kubernetes://login/id", Type: &tlsv3.Secret_GenericSecret{GenericSecret: &tlsv3.GenericSecret{Secret: inline([]byte("s3cret"))}}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if c := s.CredentialCertificate("kubernetes://edge"); c == nil || c.Leaf.SerialNumber.String() != serial1 {
		t.Fatalf("certificate: %v", c)
	}
	if s.CredentialRoots("kubernetes://edge-cacert") == nil || string(s.GenericSecret("kubernetes://login/id")) != "s3cret" {
		t.Error("CA bundle or generic secret missing")
	}
	if got := s.Names(); !slices.Equal(got, []string{"kubernetes://edge", "kubernetes://edge-cacert", "kubernetes://login/id"}) {
		t.Errorf("Names: %v", got)
	}

	// A certificate whose key does not match: reported, the last good
	// one stays.
	c2, _, _ := pair()
	if err := s.UpdateSecrets(map[string]*tlsv3.Secret{"kubernetes://edge": certSecret("kubernetes://edge", c2, k1)}, nil); err == nil {
		t.Error("a mismatched key was taken")
	}
	if c := s.CredentialCertificate("kubernetes://edge"); c == nil || c.Leaf.SerialNumber.String() != serial1 {
		t.Errorf("after a bad rotation: %v, want the last good certificate", c)
	}
	c3, k3, serial3 := pair()
	if err := s.UpdateSecrets(map[string]*tlsv3.Secret{"kubernetes://edge": certSecret("kubernetes://edge", c3, k3)}, []string{"kubernetes://login/id"}); err != nil {
		t.Fatal(err)
	}
	if c := s.CredentialCertificate("kubernetes://edge"); c == nil || c.Leaf.SerialNumber.String() != serial3 {
		t.Errorf("after a good rotation: %v", c)
	}
	if s.GenericSecret("kubernetes://login/id") != nil {
		t.Error("a dropped secret is still served")
	}
}
