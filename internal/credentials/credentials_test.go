package credentials

import (
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	"weft.dev/weft/internal/proxy/proxytest"
)

func TestFromData(t *testing.T) {
	for _, tc := range []struct {
		name string
		data map[string][]byte
		want string // cert|key|ca|files, or "nil"
	}{
		{"kubernetes.io/tls", map[string][]byte{"tls.crt": []byte("C"), "tls.key": []byte("K")}, "C|K||"},
		{"Istio's generic keys", map[string][]byte{"cert": []byte("C"), "key": []byte("K"), "cacert": []byte("A")}, "C|K|A|"},
		{"tls.crt preferred", map[string][]byte{"tls.crt": []byte("C1"), "cert": []byte("C2"), "tls.key": []byte("K")}, "C1|K||"},
		{"a CA alone", map[string][]byte{"ca.crt": []byte("A")}, "||A|"},
		{"a certificate without its key (Check refuses it)", map[string][]byte{"tls.crt": []byte("C")}, "C|||"},
		{"other keys, line break trimmed", map[string][]byte{"client-secret": []byte("s\n")}, "|||client-secret=s"},
		{"too large a value is left out", map[string][]byte{"big": make([]byte, MaxValue+1)}, "nil"},
		{"nothing", map[string][]byte{}, "nil"},
	} {
		c := FromData("ns", "n", tc.data)
		got := "nil"
		if c != nil {
			var files []string
			for k, v := range c.Files {
				files = append(files, k+"="+string(v))
			}
			got = string(c.Cert) + "|" + string(c.Key) + "|" + string(c.CA) + "|" + strings.Join(files, ",")
		}
		if got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestSetHash(t *testing.T) {
	a := FromData("shop", "edge", map[string][]byte{"tls.crt": []byte("C"), "tls.key": []byte("K")})
	b := FromData("shop", "login", map[string][]byte{"client-secret": []byte("s")})
	s1, s2 := NewSet([]*Credential{a, b}), NewSet([]*Credential{b, a})
	if s1.Hash() == "" || s1.Hash() != s2.Hash() {
		t.Errorf("hash depends on order or is empty: %q %q", s1.Hash(), s2.Hash())
	}
	a2 := FromData("shop", "edge", map[string][]byte{"tls.crt": []byte("C2"), "tls.key": []byte("K")})
	if NewSet([]*Credential{a2, b}).Hash() == s1.Hash() {
		t.Error("a rotated certificate keeps the hash")
	}
	if NewSet(nil).Hash() != "" || (*Set)(nil).Len() != 0 {
		t.Error("an empty set has a hash or a length")
	}
	if got := s1.InNamespace("shop"); len(got) != 2 || got[0].Name != "edge" || got[1].Name != "login" {
		t.Errorf("InNamespace: %v", got)
	}
}

// TestSetCertificate: a Set says whether a Secret holds a certificate
// and key it can serve, and why not.
func TestSetCertificate(t *testing.T) {
	s := NewSet([]*Credential{
		FromData("shop", "edge", map[string][]byte{"tls.crt": []byte("C"), "tls.key": []byte("K")}),
		FromData("shop", "ca-only", map[string][]byte{"ca.crt": []byte("CA")}),
	})
	if err := s.Certificate("shop", "edge"); err != nil {
		t.Errorf("edge: %v", err)
	}
	if err := s.Certificate("shop", "ca-only"); err == nil || !strings.Contains(err.Error(), "no certificate and key") {
		t.Errorf("ca-only: %v", err)
	}
	if err := s.Certificate("billing", "edge"); err == nil || !strings.Contains(err.Error(), "billing/edge does not exist") {
		t.Errorf("another namespace's: %v", err)
	}
	if s.Get("shop", "nope") != nil || s.Get("shop", "edge") == nil || (*Set)(nil).Get("shop", "edge") != nil {
		t.Error("Get")
	}
}

func TestCheck(t *testing.T) {
	ca := proxytest.NewMeshCA(t)
	pemOf := func() (cert, key []byte) {
		c := ca.Issue(t, "", time.Hour, "a.example.com")
		k, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: k})
	}
	cert, key := pemOf()
	_, otherKey := pemOf()
	for _, tc := range []struct {
		name   string
		data   map[string][]byte
		err    string // "" for none
		usable string // what Usable keeps: cert|ca, or "nil"
	}{
		{"a good pair and CA", map[string][]byte{"tls.crt": cert, "tls.key": key, "ca.crt": ca.RootPEM}, "", "cert|ca"},
		{"a key of another certificate", map[string][]byte{"tls.crt": cert, "tls.key": otherKey, "ca.crt": ca.RootPEM}, "certificate and key", "|ca"},
		{"half a rotation", map[string][]byte{"tls.crt": cert}, "without its key", "nil"},
		{"a CA that is not PEM", map[string][]byte{"tls.crt": cert, "tls.key": key, "ca.crt": []byte("nope")}, "no PEM certificate", "cert|"},
	} {
		c := FromData("ns", "n", tc.data)
		err := c.Check()
		if (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%s: Check: %v, want %q", tc.name, err, tc.err)
		}
		got := "nil"
		if u := c.Usable(); u != nil {
			got = map[bool]string{true: "cert"}[u.Cert != nil] + "|" + map[bool]string{true: "ca"}[u.CA != nil]
		}
		if got != tc.usable {
			t.Errorf("%s: Usable keeps %q, want %q", tc.name, got, tc.usable)
		}
	}
}
