package secretdir

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"weft.dev/weft/internal/proxy/proxytest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func write(t *testing.T, dir, name string, files map[string][]byte) {
	t.Helper()
	d := filepath.Join(dir, name)
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	for f, b := range files {
		if err := os.WriteFile(filepath.Join(d, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

func pems(t *testing.T, c *tls.Certificate) (cert, key []byte) {
	t.Helper()
	k, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: k})
}

// Credentials are served by SDS name in both of Istio's layouts, a
// rotation replaces one, a broken update keeps the last good version, a
// removed one goes away.
func TestDir(t *testing.T) {
	ca := proxytest.NewMeshCA(t)
	dir := t.TempDir()
	c1, k1 := pems(t, ca.Issue(t, "", time.Hour, "a.example.com"))
	write(t, dir, "a", map[string][]byte{"tls.crt": c1, "tls.key": k1, "ca.crt": ca.RootPEM})
	c2, k2 := pems(t, ca.Issue(t, "", time.Hour, "b.example.com"))
	write(t, dir, "b", map[string][]byte{"cert": c2, "key": k2})
	write(t, dir, "b-cacert", map[string][]byte{"cacert": ca.RootPEM})
	write(t, dir, "broken", map[string][]byte{"tls.crt": c1})
	write(t, dir, "..data", map[string][]byte{"tls.crt": c1, "tls.key": k1})

	d, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"kubernetes://a", "a", "kubernetes://b"} {
		if d.CredentialCertificate(n) == nil {
			t.Errorf("%s: no certificate", n)
		}
	}
	for _, n := range []string{"kubernetes://a-cacert", "kubernetes://a", "kubernetes://b-cacert"} {
		if d.CredentialRoots(n) == nil {
			t.Errorf("%s: no CA", n)
		}
	}
	if d.CredentialCertificate("kubernetes://broken") != nil || d.CredentialCertificate("..data") != nil || d.CredentialCertificate("kubernetes://none") != nil {
		t.Errorf("a broken, hidden or missing credential is served")
	}

	// Rotation.
	old := d.CredentialCertificate("a").Leaf.SerialNumber
	c3, k3 := pems(t, ca.Issue(t, "", time.Hour, "a.example.com"))
	write(t, dir, "a", map[string][]byte{"tls.crt": c3, "tls.key": k3})
	if err := d.Reload(); err != nil {
		t.Fatal(err)
	}
	if d.CredentialCertificate("a").Leaf.SerialNumber.Cmp(old) == 0 {
		t.Errorf("the rotated certificate is not served")
	}
	// A half-written update (a key that does not match) keeps the last good.
	rotated := d.CredentialCertificate("a")
	write(t, dir, "a", map[string][]byte{"tls.key": k1})
	if err := d.Reload(); err != nil {
		t.Fatal(err)
	}
	if d.CredentialCertificate("a") != rotated {
		t.Errorf("a broken update replaced the certificate in force")
	}
	// Removal.
	if err := os.RemoveAll(filepath.Join(dir, "b")); err != nil {
		t.Fatal(err)
	}
	if err := d.Reload(); err != nil {
		t.Fatal(err)
	}
	if d.CredentialCertificate("b") != nil {
		t.Errorf("a removed credential is still served")
	}

	// Run polls until its context ends.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.Run(ctx, 10*time.Millisecond) }()
	write(t, dir, "c", map[string][]byte{"tls.crt": c2, "tls.key": k2})
	deadline := time.Now().Add(5 * time.Second)
	for d.CredentialCertificate("c") == nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if d.CredentialCertificate("c") == nil {
		t.Errorf("a new credential was not picked up by Run")
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := Open(filepath.Join(t.TempDir(), "missing"), nil); err == nil {
		t.Errorf("Open of a missing directory succeeded")
	}
	f := filepath.Join(t.TempDir(), "file")
	_ = os.WriteFile(f, nil, 0o600)
	if _, err := Open(f, nil); err == nil {
		t.Errorf("Open of a file succeeded")
	}
}

// The other files of a credential are generic secrets, by SDS name
// "kubernetes://<credential>/<file>", their trailing line break removed;
// a credential of generic secrets only is no error; a rotation is seen by
// the next read.
func TestGenericSecrets(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "login", map[string][]byte{"client-secret": []byte("s3cr3t\n"), "hmac-secret": []byte("k1")})
	d, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"kubernetes://login/client-secret": "s3cr3t",
		"login/hmac-secret":                "k1",
		"kubernetes://login/other":         "",
		"kubernetes://login":               "",
		"kubernetes://none/client-secret":  "",
	} {
		if got := string(d.GenericSecret(name)); got != want {
			t.Errorf("GenericSecret(%q) = %q, want %q", name, got, want)
		}
	}
	if c := d.CredentialCertificate("kubernetes://login"); c != nil {
		t.Errorf("a credential of generic secrets has a certificate")
	}
	write(t, dir, "login", map[string][]byte{"hmac-secret": []byte("k2")})
	if err := d.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := string(d.GenericSecret("kubernetes://login/hmac-secret")); got != "k2" {
		t.Errorf("after rotation: %q, want k2", got)
	}
}
