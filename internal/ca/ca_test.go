package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	pb "istio.io/api/security/v1alpha1"

	"weft.dev/weft/internal/spiffe"
)

var quiet = slog.New(slog.DiscardHandler)

func newCA(t *testing.T, dir string) *CA {
	t.Helper()
	c, err := New(Options{Dir: dir, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func id(ns, sa string) spiffe.ID {
	return spiffe.ID{TrustDomain: "cluster.local", Namespace: ns, ServiceAccount: sa}
}

// csrFor makes a key and a CSR asking for the given URI SANs.
func csrFor(t *testing.T, uris ...string) (*ecdsa.PrivateKey, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.CertificateRequest{}
	for _, u := range uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return key, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

// serve runs the CA service over TLS on loopback, as the control plane's
// secure port does, and returns its address.
func serve(t *testing.T, c *CA) string {
	t.Helper()
	sc, err := c.ServingCert([]string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		GetCertificate: sc.GetCertificate, ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12,
	})))
	NewService(c, quiet).Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return lis.Addr().String()
}

// request sends one CreateCertificate with an optional token and client
// certificate, verifying the server against roots.
func request(t *testing.T, addr string, roots *x509.CertPool, token string, client *tls.Certificate, csr string) (*pb.IstioCertificateResponse, error) {
	t.Helper()
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if client != nil {
		cfg.Certificates = []tls.Certificate{*client}
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
	}
	return pb.NewIstioCertificateServiceClient(cc).CreateCertificate(ctx, &pb.IstioCertificateRequest{Csr: csr})
}

// leafOf parses a response's chain and checks its shape: leaf first, root last.
func leafOf(t *testing.T, c *CA, resp *pb.IstioCertificateResponse) ([]*x509.Certificate, *x509.Certificate) {
	t.Helper()
	var chain []*x509.Certificate
	for i, p := range resp.GetCertChain() {
		b, rest := pem.Decode([]byte(p))
		if b == nil || len(strings.TrimSpace(string(rest))) != 0 {
			t.Fatalf("cert_chain[%d] is not one PEM certificate: %q", i, p)
		}
		cert, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, cert)
	}
	if len(chain) < 2 || resp.CertChain[len(chain)-1] != string(c.RootPEM()) {
		t.Fatalf("cert_chain does not end with the root: %d elements", len(chain))
	}
	return chain, chain[0]
}

func tlsCert(chain []*x509.Certificate, key *ecdsa.PrivateKey) *tls.Certificate {
	c := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, x := range chain[:len(chain)-1] {
		c.Certificate = append(c.Certificate, x.Raw)
	}
	return c
}

func code(err error) codes.Code { return status.Code(err) }

func TestBootstrapThenRenew(t *testing.T) {
	c := newCA(t, "")
	addr := serve(t, c)
	want := id("default", "backend")
	tok, _, err := c.Tokens().Issue(want, 0)
	if err != nil {
		t.Fatal(err)
	}
	key, csr := csrFor(t, want.String())
	resp, err := request(t, addr, c.Roots(), tok, nil, csr)
	if err != nil {
		t.Fatalf("bootstrap with a valid token: %v", err)
	}
	chain, leaf := leafOf(t, c, resp)
	got, err := spiffe.Verify(chain[:len(chain)-1], c.Roots(), time.Now(), x509.ExtKeyUsageClientAuth)
	if err != nil || got != want {
		t.Fatalf("issued certificate: identity %v, %v; want %v", got, err, want)
	}
	if d := leaf.NotAfter.Sub(time.Now()); d > DefaultWorkloadCertTTL || d < DefaultWorkloadCertTTL-time.Minute {
		t.Errorf("lifetime left %v, want about %v", d, DefaultWorkloadCertTTL)
	}
	if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 || len(leaf.URIs) != 1 {
		t.Errorf("leaf has SANs beyond its SPIFFE ID: %v %v %v %v", leaf.DNSNames, leaf.IPAddresses, leaf.EmailAddresses, leaf.URIs)
	}

	// Renewal: a new key, authenticated by the current certificate.
	_, csr2 := csrFor(t, want.String())
	resp2, err := request(t, addr, c.Roots(), "", tlsCert(chain, key), csr2)
	if err != nil {
		t.Fatalf("renewal with the current certificate: %v", err)
	}
	if _, leaf2 := leafOf(t, c, resp2); leaf2.SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Error("renewal returned the same certificate")
	}

	// The certificate proves backend, not another identity.
	_, other := csrFor(t, id("default", "frontend").String())
	_, err = request(t, addr, c.Roots(), "", tlsCert(chain, key), other)
	if code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "spiffe://cluster.local/ns/default/sa/frontend") ||
		!strings.Contains(err.Error(), "spiffe://cluster.local/ns/default/sa/backend") {
		t.Errorf("renewal for another identity: %v; want PermissionDenied naming both", err)
	}
}

func TestTokenForAnotherIdentityIsRefused(t *testing.T) {
	c := newCA(t, "")
	addr := serve(t, c)
	tok, _, err := c.Tokens().Issue(id("default", "frontend"), 0)
	if err != nil {
		t.Fatal(err)
	}
	_, csr := csrFor(t, id("default", "backend").String())
	_, err = request(t, addr, c.Roots(), tok, nil, csr)
	if code(err) != codes.PermissionDenied {
		t.Fatalf("CSR for backend with frontend's token: %v; want PermissionDenied", err)
	}
	for _, s := range []string{"spiffe://cluster.local/ns/default/sa/backend", "spiffe://cluster.local/ns/default/sa/frontend", "bootstrap token"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("message %q does not name %s", err, s)
		}
	}
	// A refusal does not spend the token: the right CSR still works.
	_, csr = csrFor(t, id("default", "frontend").String())
	if _, err := request(t, addr, c.Roots(), tok, nil, csr); err != nil {
		t.Errorf("the token after a refused request: %v", err)
	}
}

func TestTokenIsSingleUse(t *testing.T) {
	c := newCA(t, "")
	addr := serve(t, c)
	want := id("shop", "cart")
	tok, _, err := c.Tokens().Issue(want, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_, csr := csrFor(t, want.String())
	if _, err := request(t, addr, c.Roots(), tok, nil, csr); err != nil {
		t.Fatal(err)
	}
	_, err = request(t, addr, c.Roots(), tok, nil, csr)
	if code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "already used") {
		t.Errorf("second use of a token: %v; want Unauthenticated, already used", err)
	}
}

func TestExpiredAndForgedTokens(t *testing.T) {
	c := newCA(t, "")
	want := id("default", "backend")
	expired, _, err := c.Tokens().issueAt(want, time.Now().Add(-2*time.Hour), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other := newCA(t, "")
	foreign, _, _ := other.Tokens().Issue(want, 0)
	good, _, _ := c.Tokens().Issue(want, 0)
	parts := strings.Split(good, ".")
	claims, _ := b64.DecodeString(parts[1])
	altered := parts[0] + "." + b64.EncodeToString([]byte(strings.Replace(string(claims), "backend", "admin", 1))) + "." + parts[2]
	none := b64.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + "."

	addr := serve(t, c)
	_, csr := csrFor(t, want.String())
	for _, tc := range []struct{ name, tok, want string }{
		{"expired", expired, "expired at"},
		{"from another CA", foreign, "bad signature"},
		{"altered claims", altered, "bad signature"},
		{"alg none", none, "alg HS256"},
		{"garbage", "not-a-token", "not a JWT"},
	} {
		_, err := request(t, addr, c.Roots(), tc.tok, nil, csr)
		if code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s token: %v; want Unauthenticated, %q", tc.name, err, tc.want)
		}
	}
	if _, err := c.Tokens().Verify(expired, time.Now()); !errors.Is(err, ErrTokenExpired) {
		t.Errorf("Verify(expired) = %v, want ErrTokenExpired", err)
	}
}

func TestRenewalWithCertificateFromAnotherRoot(t *testing.T) {
	c, other := newCA(t, ""), newCA(t, "")
	want := id("default", "backend")
	// A certificate for the same identity, signed by another root.
	key, csrPEM := csrFor(t, want.String())
	csr, _, err := ParseCSR([]byte(csrPEM))
	if err != nil {
		t.Fatal(err)
	}
	chainPEM, _, err := other.Sign(csr, want, 0)
	if err != nil {
		t.Fatal(err)
	}
	var chain []*x509.Certificate
	for _, p := range chainPEM {
		b, _ := pem.Decode([]byte(p))
		x, _ := x509.ParseCertificate(b.Bytes)
		chain = append(chain, x)
	}
	addr := serve(t, c)
	_, err = request(t, addr, c.Roots(), "", tlsCert(chain, key), csrPEM)
	if code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "unknown authority") {
		t.Errorf("renewal with a certificate from another root: %v; want Unauthenticated, unknown authority", err)
	}
	// No credential at all.
	_, err = request(t, addr, c.Roots(), "", nil, csrPEM)
	if code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "no credential") {
		t.Errorf("no credential: %v", err)
	}
}

func TestBadCSRs(t *testing.T) {
	c := newCA(t, "")
	addr := serve(t, c)
	tok, _, _ := c.Tokens().Issue(id("default", "backend"), 0)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse(id("default", "backend").String())
	withDNS, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}, DNSNames: []string{"backend"}}, key)
	_, two := csrFor(t, id("default", "backend").String(), id("default", "frontend").String())
	_, notSpiffe := csrFor(t, "https://backend/")
	_, cp := csrFor(t, spiffe.ControlPlane("cluster.local").String())
	for _, tc := range []struct{ name, csr, want string }{
		{"not PEM", "hello", "no PEM"},
		{"DNS SAN", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: withDNS})), "DNS, IP or email SANs"},
		{"two URIs", two, "2 URI SANs"},
		{"not SPIFFE", notSpiffe, "scheme is not spiffe"},
	} {
		_, err := request(t, addr, c.Roots(), tok, nil, tc.csr)
		if code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want InvalidArgument, %q", tc.name, err, tc.want)
		}
	}
	if _, _, err := c.Tokens().Issue(spiffe.ControlPlane("cluster.local"), 0); err == nil {
		t.Error("a token for the control plane's identity was issued")
	}
	if _, err := request(t, addr, c.Roots(), tok, nil, cp); code(err) != codes.PermissionDenied {
		t.Errorf("CSR for the control plane's identity: %v; want PermissionDenied", err)
	}
}

func TestRequestedLifetime(t *testing.T) {
	c, err := New(Options{WorkloadCertTTL: time.Hour, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	_, csrPEM := csrFor(t, id("a", "b").String())
	csr, want, _ := ParseCSR([]byte(csrPEM))
	for _, tc := range []struct{ ask, want time.Duration }{{0, time.Hour}, {10 * time.Minute, 10 * time.Minute}, {48 * time.Hour, time.Hour}} {
		_, leaf, err := c.Sign(csr, want, tc.ask)
		if err != nil {
			t.Fatal(err)
		}
		if got := leaf.NotAfter.Sub(leaf.NotBefore) - backdate; got < tc.want-time.Minute || got > tc.want {
			t.Errorf("asked %v: lifetime %v, want %v", tc.ask, got, tc.want)
		}
	}
	if _, err := New(Options{WorkloadCertTTL: time.Millisecond, Logger: quiet}); err == nil {
		t.Error("a 1ms lifetime was accepted")
	}
}

func TestRestartKeepsRootAndRedeemedTokens(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	c1 := newCA(t, dir)
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("%s: %v, mode %v; want 0700", dir, err, fi.Mode().Perm())
	}
	for _, f := range []string{FileCACert, FileCAKey, FileRootCert, FileCertChain} {
		if fi, err := os.Stat(filepath.Join(dir, f)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, mode %v; want 0600", f, err, fi.Mode().Perm())
		}
	}
	want := id("default", "backend")
	used, _, _ := c1.Tokens().Issue(want, 0)
	unused, _, _ := c1.Tokens().Issue(want, 0)
	addr1 := serve(t, c1)
	_, csr := csrFor(t, want.String())
	if _, err := request(t, addr1, c1.Roots(), used, nil, csr); err != nil {
		t.Fatal(err)
	}

	c2 := newCA(t, dir) // the restart
	if string(c2.RootPEM()) != string(c1.RootPEM()) {
		t.Fatal("a restart made a new root")
	}
	if !strings.Contains(c2.Mode(), "self-signed root, persisted in") {
		t.Errorf("mode %q", c2.Mode())
	}
	addr2 := serve(t, c2)
	if _, err := request(t, addr2, c1.Roots(), unused, nil, csr); err != nil {
		t.Errorf("a token issued before the restart: %v", err)
	}
	if _, err := request(t, addr2, c1.Roots(), used, nil, csr); code(err) != codes.Unauthenticated {
		t.Errorf("a token redeemed before the restart: %v; want Unauthenticated", err)
	}
}

func TestPartialDirectoryIsRefused(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, FileRootCert), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := New(Options{Dir: dir, Logger: quiet})
	if err == nil || !strings.Contains(err.Error(), "has root-cert.pem but not ca-cert.pem, ca-key.pem") {
		t.Errorf("New on a directory with only root-cert.pem: %v", err)
	}
}

// pki makes a root and an intermediate, as an organisation's PKI would.
func pki(t *testing.T) (root, inter *x509.Certificate, rootKey, interKey *ecdsa.PrivateKey) {
	t.Helper()
	mk := func(cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * 365 * time.Hour),
			KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true}
		if parent == nil {
			parent, parentKey = tmpl, key
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c, key
	}
	root, rootKey = mk("Example Org Root", nil, nil)
	inter, interKey = mk("Example Org mesh intermediate", root, rootKey)
	return
}

func writePEM(t *testing.T, path, typ string, ders ...[]byte) {
	t.Helper()
	var out []byte
	for _, d := range ders {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: d})...)
	}
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestPluginCA(t *testing.T) {
	root, inter, _, interKey := pki(t)
	dir := t.TempDir()
	keyDER, _ := x509.MarshalECPrivateKey(interKey)
	writePEM(t, filepath.Join(dir, FileCACert), "CERTIFICATE", inter.Raw)
	writePEM(t, filepath.Join(dir, FileCAKey), "EC PRIVATE KEY", keyDER)
	writePEM(t, filepath.Join(dir, FileRootCert), "CERTIFICATE", root.Raw)
	writePEM(t, filepath.Join(dir, FileCertChain), "CERTIFICATE", inter.Raw, root.Raw)

	c := newCA(t, dir)
	if !strings.HasPrefix(c.Mode(), "plug-in CA from") {
		t.Errorf("mode %q", c.Mode())
	}
	rootFile, _ := os.ReadFile(filepath.Join(dir, FileRootCert))
	if string(c.RootPEM()) != string(rootFile) {
		t.Error("the published root is not root-cert.pem")
	}
	addr := serve(t, c)
	want := id("default", "backend")
	tok, _, _ := c.Tokens().Issue(want, 0)
	key, csr := csrFor(t, want.String())
	// The client trusts root-cert.pem only: the serving certificate's
	// chain must carry the intermediate.
	rootPool := x509.NewCertPool()
	rootPool.AppendCertsFromPEM(rootFile)
	resp, err := request(t, addr, rootPool, tok, nil, csr)
	if err != nil {
		t.Fatal(err)
	}
	chain, leaf := leafOf(t, c, resp)
	if len(chain) != 3 || !chain[1].Equal(inter) {
		t.Fatalf("chain of %d, want leaf, intermediate, root", len(chain))
	}
	if err := leaf.CheckSignatureFrom(inter); err != nil {
		t.Errorf("leaf not signed by ca-cert.pem: %v", err)
	}
	if got, err := spiffe.Verify(chain[:2], rootPool, time.Now(), x509.ExtKeyUsageServerAuth); err != nil || got != want {
		t.Errorf("leaf + intermediate against root-cert.pem: %v %v", got, err)
	}
	// Renewal through the intermediate.
	_, csr2 := csrFor(t, want.String())
	if _, err := request(t, addr, rootPool, "", tlsCert(chain, key), csr2); err != nil {
		t.Errorf("renewal under a plug-in CA: %v", err)
	}
}

func TestPluginCAMismatches(t *testing.T) {
	root, inter, rootKey, interKey := pki(t)
	otherRoot, _, _, _ := pki(t)
	interDER, _ := x509.MarshalECPrivateKey(interKey)
	rootDER, _ := x509.MarshalECPrivateKey(rootKey)
	for _, tc := range []struct {
		name            string
		caCert, rootCrt *x509.Certificate
		key             []byte
		want            string
	}{
		{"key of another certificate", inter, root, rootDER, "is not the key of"},
		{"root that did not sign it", inter, otherRoot, interDER, "does not chain up to"},
	} {
		dir := t.TempDir()
		writePEM(t, filepath.Join(dir, FileCACert), "CERTIFICATE", tc.caCert.Raw)
		writePEM(t, filepath.Join(dir, FileCAKey), "EC PRIVATE KEY", tc.key)
		writePEM(t, filepath.Join(dir, FileRootCert), "CERTIFICATE", tc.rootCrt.Raw)
		if _, err := New(Options{Dir: dir, Logger: quiet}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want %q", tc.name, err, tc.want)
		}
	}
}

func TestServingCertificate(t *testing.T) {
	c := newCA(t, "")
	sc, err := c.ServingCert([]string{"0.0.0.0", "cp.example"})
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := sc.GetCertificate(nil)
	got, err := spiffe.Verify([]*x509.Certificate{cert.Leaf}, c.Roots(), time.Now(), x509.ExtKeyUsageServerAuth)
	if err != nil || got != spiffe.ControlPlane("cluster.local") {
		t.Errorf("serving certificate identity %v %v", got, err)
	}
	if err := cert.Leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Error(err)
	}
	if err := cert.Leaf.VerifyHostname("cp.example"); err != nil {
		t.Error(err)
	}
}
