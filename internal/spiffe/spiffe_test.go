package spiffe

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	good := ID{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "backend"}
	if got, err := Parse(good.String()); err != nil || got != good {
		t.Errorf("Parse(%s) = %v, %v", good, got, err)
	}
	if good.URL().String() != good.String() {
		t.Errorf("URL %s != String %s", good.URL(), good)
	}
	for _, tc := range []struct{ in, want string }{
		{"https://cluster.local/ns/a/sa/b", "scheme is not spiffe"},
		{"spiffe://cluster.local/ns/a", "want spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"},
		{"spiffe://cluster.local/ns/a/sa/b/c", "want spiffe://"},
		{"spiffe://cluster.local/ns//sa/b", "namespace is empty"},
		{"spiffe://cluster.local:80/ns/a/sa/b", "port"},
		{"spiffe://cluster.local/ns/a/sa/b?x=1", "query"},
		{"spiffe:///ns/a/sa/b", "trust domain is empty"},
	} {
		if _, err := Parse(tc.in); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want an error with %q", tc.in, err, tc.want)
		}
	}
	if err := (ID{TrustDomain: "td", Namespace: "a b", ServiceAccount: "x"}).Validate(); err == nil {
		t.Error("a space in a namespace was accepted")
	}
}

func TestVerify(t *testing.T) {
	rootKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rootTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
	rootDER, _ := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	root, _ := x509.ParseCertificate(rootDER)
	roots := x509.NewCertPool()
	roots.AddCert(root)
	leaf := func(uris ...string) *x509.Certificate {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Minute),
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		for _, u := range uris {
			pu, _ := url.Parse(u)
			tmpl.URIs = append(tmpl.URIs, pu)
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, root, key.Public(), rootKey)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c
	}
	want := ID{TrustDomain: "td", Namespace: "ns", ServiceAccount: "sa"}
	if got, err := Verify([]*x509.Certificate{leaf(want.String())}, roots, time.Now(), x509.ExtKeyUsageClientAuth); err != nil || got != want {
		t.Errorf("Verify = %v, %v", got, err)
	}
	if _, err := Verify([]*x509.Certificate{leaf(want.String())}, roots, time.Now(), x509.ExtKeyUsageServerAuth); err == nil {
		t.Error("a client-only certificate verified for server use")
	}
	if _, err := Verify([]*x509.Certificate{leaf(want.String())}, roots, time.Now().Add(time.Hour), x509.ExtKeyUsageClientAuth); err == nil {
		t.Error("an expired certificate verified")
	}
	if _, err := Verify([]*x509.Certificate{leaf(want.String(), "spiffe://td/ns/x/sa/y")}, roots, time.Now(), x509.ExtKeyUsageClientAuth); err == nil ||
		!strings.Contains(err.Error(), "2 URI SANs") {
		t.Errorf("two URI SANs: %v", err)
	}
	if _, err := Verify([]*x509.Certificate{leaf()}, roots, time.Now(), x509.ExtKeyUsageClientAuth); err == nil {
		t.Error("a certificate without SPIFFE ID verified")
	}
	if _, err := Verify([]*x509.Certificate{leaf(want.String())}, x509.NewCertPool(), time.Now(), x509.ExtKeyUsageClientAuth); err == nil {
		t.Error("a certificate verified against an empty pool")
	}
}
