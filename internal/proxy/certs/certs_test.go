package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"weft.dev/weft/internal/testenv"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"weft.dev/weft/internal/ca"
	"weft.dev/weft/internal/spiffe"
)

var backend = spiffe.ID{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "backend"}

// startCA serves a CA with the given workload certificate lifetime on
// loopback, as the control plane's secure port does.
func startCA(t *testing.T, ttl time.Duration) (*ca.CA, string) {
	t.Helper()
	c, err := ca.New(ca.Options{WorkloadCertTTL: ttl, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	sc, err := c.ServingCert([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{GetCertificate: sc.GetCertificate, ClientAuth: tls.RequestClientCert})))
	ca.NewService(c, slog.New(slog.DiscardHandler)).Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return c, lis.Addr().String()
}

// run starts m.Run until the test ends.
func run(t *testing.T, m *Manager) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func wait(t *testing.T, m *Manager, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := m.Wait(ctx); err != nil {
		t.Fatalf("no certificate within %v: %v", timeout, err)
	}
}

func TestFirstCertificateAndSecrets(t *testing.T) {
	c, addr := startCA(t, time.Hour)
	var calls atomic.Int32
	m, err := New(Options{Identity: backend, Address: addr, RootPEM: c.RootPEM(), Logger: slog.New(slog.DiscardHandler),
		Token: func() (string, error) {
			calls.Add(1)
			tok, _, err := c.Tokens().Issue(backend, 0)
			return tok, err
		}})
	if err != nil {
		t.Fatal(err)
	}
	if m.Ready() {
		t.Fatal("ready before any certificate")
	}
	if _, err := m.Secret(SecretDefault); err == nil {
		t.Error("secret default before any certificate")
	}
	if cert, _ := m.GetClientCertificate(nil); len(cert.Certificate) != 0 {
		t.Error("a client certificate before any certificate")
	}
	run(t, m)
	wait(t, m, 10*time.Second)

	b := m.Current()
	if b.ID != backend || b.Leaf().URIs[0].String() != backend.String() {
		t.Errorf("certificate for %v", b.ID)
	}
	if d := time.Until(b.RenewAt); d < 25*time.Minute || d > 35*time.Minute {
		t.Errorf("renewal due in %v, want about half of an hour", d)
	}
	sec, err := m.Secret(SecretDefault)
	if err != nil || sec.Certificate != b.TLS {
		t.Errorf("secret default: %v", err)
	}
	root, err := m.Secret(SecretRootCA)
	if err != nil || !bytes.Equal(root.RootPEM, c.RootPEM()) || root.Roots == nil {
		t.Errorf("secret ROOTCA: %v", err)
	}
	if _, err := m.Secret("file-cert:/etc/certs"); err == nil || !strings.Contains(err.Error(), `serves only "default" and "ROOTCA"`) {
		t.Errorf("unknown secret: %v", err)
	}
	if got, _ := m.GetCertificate(nil); got != b.TLS {
		t.Error("GetCertificate is not the current certificate")
	}
	if id, err := m.VerifyPeer(b.Chain, x509.ExtKeyUsageServerAuth); err != nil || id != backend {
		t.Errorf("VerifyPeer of its own chain: %v %v", id, err)
	}
	if calls.Load() != 1 {
		t.Errorf("token read %d times", calls.Load())
	}
}

// TestRotation: with a 3s lifetime the certificate is renewed several
// times, with the current certificate (the token is read once), and each
// renewal closes the old bundle's Changed channel.
func TestRotation(t *testing.T) {
	c, addr := startCA(t, 3*time.Second)
	var calls atomic.Int32
	tok, _, _ := c.Tokens().Issue(backend, 0)
	m, err := New(Options{Identity: backend, Address: addr, RootPEM: c.RootPEM(), Logger: slog.New(slog.DiscardHandler),
		Token: func() (string, error) { calls.Add(1); return tok, nil }})
	if err != nil {
		t.Fatal(err)
	}
	run(t, m)
	wait(t, m, 10*time.Second)
	seen := map[string]bool{}
	for i := 0; i < 3; i++ {
		b := m.Current()
		seen[b.Leaf().SerialNumber.String()] = true
		select {
		case <-b.Changed():
		case <-time.After(15 * time.Second):
			t.Fatalf("rotation %d did not happen", i+1)
		}
		if n := m.Current(); n == b || n.Leaf().NotAfter.Before(b.Leaf().NotAfter) {
			t.Fatalf("rotation %d: no newer certificate", i+1)
		}
	}
	seen[m.Current().Leaf().SerialNumber.String()] = true
	if len(seen) != 4 || calls.Load() != 1 {
		t.Errorf("%d distinct certificates, token read %d times; want 4 and 1", len(seen), calls.Load())
	}
}

func TestWrongTokenThenFixed(t *testing.T) {
	c, addr := startCA(t, time.Hour)
	var logs testenv.SyncBuffer
	var good atomic.Bool
	m, err := New(Options{Identity: backend, Address: addr, RootPEM: c.RootPEM(), BackoffBase: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Token: func() (string, error) {
			sa := "frontend"
			if good.Load() {
				sa = "backend"
			}
			tok, _, err := c.Tokens().Issue(spiffe.ID{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: sa}, 0)
			return tok, err
		}})
	if err != nil {
		t.Fatal(err)
	}
	run(t, m)
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(logs.String(), "level=ERROR") < 2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	out := logs.String()
	if m.Ready() || !strings.Contains(out, "PermissionDenied") || !strings.Contains(out, "sa/frontend") || !strings.Contains(out, "sa/backend") {
		t.Fatalf("with frontend's token: ready %v, logs:\n%s", m.Ready(), out)
	}
	good.Store(true) // the operator fixes the token file
	wait(t, m, 10*time.Second)
}

func TestWrongRoot(t *testing.T) {
	_, addr := startCA(t, time.Hour)
	other, _ := startCA(t, time.Hour)
	var logs testenv.SyncBuffer
	m, _ := New(Options{Identity: backend, Address: addr, RootPEM: other.RootPEM(), BackoffBase: 10 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)), Token: func() (string, error) { return "x", nil }})
	run(t, m)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "level=ERROR") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if out := logs.String(); !strings.Contains(out, "is --root-cert the mesh's root?") {
		t.Errorf("against another root, logs:\n%s", out)
	}
}

func TestCertDirSurvivesRestart(t *testing.T) {
	c, addr := startCA(t, time.Hour)
	dir := t.TempDir() + "/certs"
	tok, _, _ := c.Tokens().Issue(backend, 0)
	opts := Options{Identity: backend, Address: addr, RootPEM: c.RootPEM(), Dir: dir, Logger: slog.New(slog.DiscardHandler)}
	first := opts
	first.Token = func() (string, error) { return tok, nil }
	m1, _ := New(first)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m1.Run(ctx) }()
	wait(t, m1, 10*time.Second)
	cancel()
	<-done

	m2, err := New(opts) // no token: it has the stored certificate
	if err != nil {
		t.Fatal(err)
	}
	if !m2.Ready() || m2.Current().Leaf().SerialNumber.Cmp(m1.Current().Leaf().SerialNumber) != 0 {
		t.Fatal("the restarted manager does not start with the stored certificate")
	}
	for _, f := range []string{fileKey, fileChain} {
		if fi, err := statMode(dir + "/" + f); err != nil || fi != 0o600 {
			t.Errorf("%s: mode %v %v", f, fi, err)
		}
	}
	// A store for another identity is not used.
	other := opts
	other.Identity.ServiceAccount = "frontend"
	if m3, _ := New(other); m3.Ready() {
		t.Error("a stored certificate for backend was used for frontend")
	}
}

func TestNewChecks(t *testing.T) {
	for _, tc := range []struct {
		o    Options
		want string
	}{
		{Options{Address: "a:1", RootPEM: []byte("x")}, "trust domain is empty"},
		{Options{Identity: backend, RootPEM: []byte("x")}, "Address is required"},
		{Options{Identity: backend, Address: "a:1", RootPEM: []byte("not pem")}, "holds no PEM certificate"},
	} {
		if _, err := New(tc.o); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want %q", tc.o, err, tc.want)
		}
	}
}

func statMode(path string) (uint32, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return uint32(fi.Mode().Perm()), nil
}
