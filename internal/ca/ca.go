// Package ca is the mesh's certificate authority, run by the control
// plane. It holds the trust root — self-signed and kept in a directory (or
// only in memory), or a plug-in CA in Istio's cacerts layout — signs
// certificate signing requests into short-lived SPIFFE workload
// certificates for identities a caller has proved, issues the control
// plane's own serving certificate, and issues and redeems the single-use
// bootstrap tokens a new proxy proves itself with. Service serves it as
// Istio's istio.v1.auth.IstioCertificateService.
//
// Everything here is the standard library's crypto/x509, crypto/ecdsa,
// crypto/hmac and crypto/hkdf; nothing is hand-rolled.
package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"slices"
	"sync"
	"time"

	"weft.dev/weft/internal/spiffe"
)

// Defaults and limits.
const (
	DefaultWorkloadCertTTL = 24 * time.Hour
	// MinWorkloadCertTTL is the shortest lifetime New accepts. `weft
	// serve --workload-cert-ttl` refuses anything under a minute; the
	// library goes lower so tests can watch several rotations quickly.
	MinWorkloadCertTTL = time.Second
	// rootLifetime is how long a self-signed root is valid.
	rootLifetime = 10 * 365 * 24 * time.Hour
	// backdate is how far a certificate's NotBefore lies in the past, so a
	// peer whose clock is a little behind accepts it at once.
	backdate = time.Minute
)

// Options configure a CA.
type Options struct {
	// Dir keeps the CA's key and certificates in Istio's cacerts layout
	// (ca-cert.pem, ca-key.pem, root-cert.pem, cert-chain.pem). If it holds
	// them, they are used: a plug-in CA when ca-cert.pem is an
	// intermediate, the persisted self-signed root when it is the root.
	// If it holds none, a self-signed root is created and written there
	// (directory 0700, files 0600). Empty keeps a new root in memory only:
	// a restart makes a new trust root.
	Dir string
	// TrustDomain of the identities signed; default cluster.local.
	TrustDomain string
	// WorkloadCertTTL is the lifetime of workload certificates (and the
	// longest a request may ask for); default 24h, at least
	// MinWorkloadCertTTL.
	WorkloadCertTTL time.Duration
	Logger          *slog.Logger
}

// CA signs workload certificates. Create it with New; all methods are safe
// for concurrent use.
type CA struct {
	td     string
	ttl    time.Duration
	log    *slog.Logger
	mode   string
	dir    string
	signer *x509.Certificate
	key    crypto.Signer
	// chain holds the certificates between the leaf and the root: the
	// signer and any intermediates above it; empty when the signer is the
	// root itself.
	chain   []*x509.Certificate
	root    *x509.Certificate
	rootPEM []byte
	roots   *x509.CertPool
	tokens  *Tokens
}

// New loads or creates the CA (see Options.Dir). Errors name the file and
// what is wrong with it.
func New(opts Options) (*CA, error) {
	if opts.TrustDomain == "" {
		opts.TrustDomain = spiffe.DefaultTrustDomain
	}
	if err := (spiffe.ID{TrustDomain: opts.TrustDomain, Namespace: "x", ServiceAccount: "x"}).Validate(); err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	if opts.WorkloadCertTTL == 0 {
		opts.WorkloadCertTTL = DefaultWorkloadCertTTL
	}
	if opts.WorkloadCertTTL < MinWorkloadCertTTL {
		return nil, fmt.Errorf("ca: workload certificate lifetime %v is shorter than %v", opts.WorkloadCertTTL, MinWorkloadCertTTL)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	c := &CA{td: opts.TrustDomain, ttl: opts.WorkloadCertTTL, log: opts.Logger.With("component", "ca"), dir: opts.Dir}
	var err error
	switch {
	case opts.Dir == "":
		err = c.selfSign()
		c.mode = "self-signed root in memory"
		c.log.Warn("the CA's root is kept in memory only: a restart makes a new trust root, and every proxy then needs the new root and a new bootstrap token; set --ca-dir to keep it")
	default:
		err = c.loadOrCreate(opts.Dir)
	}
	if err != nil {
		return nil, err
	}
	c.roots = x509.NewCertPool()
	c.roots.AddCert(c.root)
	c.rootPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.root.Raw})
	if c.tokens, err = newTokens(c.key, c.td, opts.Dir, c.log); err != nil {
		return nil, err
	}
	c.log.Info("CA ready", "mode", c.mode, "trust_domain", c.td, "root_expires", c.root.NotAfter.UTC().Format(time.RFC3339),
		"workload_cert_ttl", c.ttl.String())
	return c, nil
}

// selfSign creates a new self-signed root that signs workload
// certificates itself.
func (c *CA) selfSign() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("ca: generating the root key: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{Organization: []string{c.td}, CommonName: "Weft mesh root CA"},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(rootLifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return fmt.Errorf("ca: creating the root certificate: %w", err)
	}
	root, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("ca: parsing the new root certificate: %w", err)
	}
	c.signer, c.key, c.root, c.chain = root, key, root, nil
	return nil
}

// TrustDomain is the trust domain of the identities the CA signs.
func (c *CA) TrustDomain() string { return c.td }

// WorkloadCertTTL is the lifetime of the workload certificates it signs.
func (c *CA) WorkloadCertTTL() time.Duration { return c.ttl }

// Mode says where the CA's key and root come from, for logs and status.
func (c *CA) Mode() string { return c.mode }

// RootPEM is the trust root, PEM-encoded: what proxies verify the control
// plane and each other against (root-cert.pem). The caller may not modify
// it.
func (c *CA) RootPEM() []byte { return c.rootPEM }

// Roots is a pool holding the trust root. The caller may not modify it.
func (c *CA) Roots() *x509.CertPool { return c.roots }

// Tokens issues and redeems bootstrap tokens.
func (c *CA) Tokens() *Tokens { return c.tokens }

// ErrBadCSR marks a signing request that cannot be signed as sent: not a
// CSR, a bad signature, a weak key, or SANs other than one SPIFFE ID.
var ErrBadCSR = errors.New("bad certificate signing request")

// ParseCSR reads a PEM CSR, checks its signature and key, and returns it
// with the one identity it asks for: its only SAN must be a SPIFFE URI.
// Errors wrap ErrBadCSR.
func ParseCSR(csrPEM []byte) (*x509.CertificateRequest, spiffe.ID, error) {
	block, _ := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, spiffe.ID{}, fmt.Errorf("%w: no PEM \"CERTIFICATE REQUEST\" block", ErrBadCSR)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, spiffe.ID{}, fmt.Errorf("%w: %w", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, spiffe.ID{}, fmt.Errorf("%w: signature: %w", ErrBadCSR, err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return nil, spiffe.ID{}, fmt.Errorf("%w: ECDSA curve %s; want P-256 or P-384", ErrBadCSR, k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return nil, spiffe.ID{}, fmt.Errorf("%w: RSA key of %d bits; want at least 2048", ErrBadCSR, k.N.BitLen())
		}
	default:
		return nil, spiffe.ID{}, fmt.Errorf("%w: key type %T; want ECDSA or RSA", ErrBadCSR, csr.PublicKey)
	}
	if n := len(csr.DNSNames) + len(csr.IPAddresses) + len(csr.EmailAddresses); n > 0 {
		return nil, spiffe.ID{}, fmt.Errorf("%w: it asks for DNS, IP or email SANs %v %v %v; a workload certificate holds only its SPIFFE ID",
			ErrBadCSR, csr.DNSNames, csr.IPAddresses, csr.EmailAddresses)
	}
	if len(csr.URIs) != 1 {
		return nil, spiffe.ID{}, fmt.Errorf("%w: it has %d URI SANs; want exactly one SPIFFE ID", ErrBadCSR, len(csr.URIs))
	}
	id, err := spiffe.FromURL(csr.URIs[0])
	if err != nil {
		return nil, spiffe.ID{}, fmt.Errorf("%w: %w", ErrBadCSR, err)
	}
	return csr, id, nil
}

// Sign issues a workload certificate for id with csr's public key. The
// caller has checked that id is what the requester proved. ttl is the
// requested lifetime: zero or more than WorkloadCertTTL means
// WorkloadCertTTL. It returns the chain, one PEM certificate per element:
// the leaf first and the root last (IstioCertificateResponse.cert_chain),
// and the leaf.
func (c *CA) Sign(csr *x509.CertificateRequest, id spiffe.ID, ttl time.Duration) ([]string, *x509.Certificate, error) {
	if id.TrustDomain != c.td {
		return nil, nil, fmt.Errorf("identity %s is not in trust domain %q", id, c.td)
	}
	if ttl <= 0 || ttl > c.ttl {
		ttl = c.ttl
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(ttl),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{id.URL()},
	}
	leaf, err := c.issue(tmpl, csr.PublicKey)
	if err != nil {
		return nil, nil, err
	}
	return c.chainPEM(leaf), leaf, nil
}

// issue signs tmpl, clamping its lifetime to the signer's.
func (c *CA) issue(tmpl *x509.Certificate, pub crypto.PublicKey) (*x509.Certificate, error) {
	if tmpl.NotAfter.After(c.signer.NotAfter) {
		c.log.Warn("certificate lifetime cut to the CA certificate's expiry", "requested", tmpl.NotAfter, "ca_expires", c.signer.NotAfter)
		tmpl.NotAfter = c.signer.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.signer, pub, c.key)
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	return x509.ParseCertificate(der)
}

// chainPEM is leaf, the intermediates, then the root, one PEM each.
func (c *CA) chainPEM(leaf *x509.Certificate) []string {
	out := []string{string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw}))}
	for _, ic := range c.chain {
		out = append(out, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ic.Raw})))
	}
	return append(out, string(c.rootPEM))
}

// serial is a random 128-bit serial number, as RFC 5280 recommends.
func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err)) // crypto/rand does not fail on supported platforms
	}
	return n.Add(n, big.NewInt(1))
}

// ServingCert is the control plane's own TLS certificate for its secure
// port: SAN spiffe://<td>/ns/weft-system/sa/weft plus the DNS names and IP
// addresses it is reached by, signed by the mesh CA. It renews itself
// when a handshake finds it past half its lifetime.
type ServingCert struct {
	ca    *CA
	hosts []string
	mu    sync.Mutex
	cur   *tls.Certificate
	renew time.Time
}

// ServingCert returns the serving certificate for hosts (host names or
// IP addresses; an unspecified address such as 0.0.0.0 stands for
// localhost, the loopback addresses and the host name). It signs the first
// one at once, so a CA that cannot sign fails here.
func (c *CA) ServingCert(hosts []string) (*ServingCert, error) {
	s := &ServingCert{ca: c, hosts: servingHosts(hosts)}
	if _, err := s.GetCertificate(nil); err != nil {
		return nil, err
	}
	return s, nil
}

func servingHosts(hosts []string) []string {
	var out []string
	for _, h := range hosts {
		if ip := net.ParseIP(h); h == "" || ip != nil && ip.IsUnspecified() {
			out = append(out, "localhost", "127.0.0.1", "::1")
			if hn, err := os.Hostname(); err == nil && hn != "" {
				out = append(out, hn)
			}
			continue
		}
		out = append(out, h)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// GetCertificate is a tls.Config.GetCertificate: the current serving
// certificate, renewed first when it is past half its lifetime. Safe for
// concurrent use.
func (s *ServingCert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if s.cur != nil && now.Before(s.renew) {
		return s.cur, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca: serving key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(s.ca.ttl),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{spiffe.ControlPlane(s.ca.td).URL()},
	}
	for _, h := range s.hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	leaf, err := s.ca.issue(tmpl, key.Public())
	if err != nil {
		return nil, fmt.Errorf("ca: serving certificate: %w", err)
	}
	cert := &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
	for _, ic := range s.ca.chain {
		cert.Certificate = append(cert.Certificate, ic.Raw)
	}
	s.cur = cert
	s.renew = now.Add(leaf.NotAfter.Sub(now) / 2)
	s.ca.log.Info("control plane serving certificate issued", "san", spiffe.ControlPlane(s.ca.td).String(), "hosts", s.hosts,
		"serial", leaf.SerialNumber.Text(16), "expires", leaf.NotAfter.UTC().Format(time.RFC3339))
	return cert, nil
}
