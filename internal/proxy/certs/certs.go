// Package certs is the proxy's certificate manager: it holds the
// workload's identity. It generates the private key in process (ECDSA
// P-256; the key never leaves the process, except into --cert-dir when
// asked), asks the control plane's CA for a certificate for the proxy's
// SPIFFE ID (Istio's IstioCertificateService/CreateCertificate),
// authenticating with the bootstrap token the first time and with its
// current certificate afterwards, and renews at about half the lifetime.
//
// # Contract for TLS code (the xDS client, the data plane's mTLS)
//
//   - Run drives issuing and renewal from one goroutine of its own.
//   - Every other method may be called from any goroutine, never blocks
//     and takes no lock: the current certificate is an atomic pointer to
//     an immutable Bundle. GetCertificate and GetClientCertificate plug
//     into tls.Config, so every new handshake presents the newest
//     certificate and connections established earlier keep theirs.
//   - Rotation: Current().Changed() is closed when a newer Bundle replaces
//     that one; select on it, then call Current again. Before the first
//     certificate, Wait blocks until there is one.
//   - Secret serves the two SDS secret names Istio uses, "default" (the
//     workload certificate and key) and "ROOTCA" (the trust root), to
//     whatever resolves an SdsSecretConfig; there is no SDS stream.
//   - The trust root does not change while the proxy runs.
package certs

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	pb "istio.io/api/security/v1alpha1"

	"weft.dev/weft/internal/proxy/cpdial"
	"weft.dev/weft/internal/spiffe"
)

// SDS secret names, as Istio names them.
const (
	SecretDefault = "default" // the workload's certificate chain and key
	SecretRootCA  = "ROOTCA"  // the trust root
)

// Defaults for zero Options fields.
const (
	DefaultBackoffBase = 200 * time.Millisecond
	DefaultBackoffMax  = 10 * time.Second
	// renewFraction of a certificate's lifetime passes before it is
	// renewed (Istio's default), give or take renewJitter of it.
	renewFraction = 0.5
	renewJitter   = 0.05
	callTimeout   = 15 * time.Second
)

// Options configure a Manager. Identity, Address and RootPEM are required.
type Options struct {
	// Identity is the SPIFFE ID the proxy asks for: its trust domain,
	// namespace and service account.
	Identity spiffe.ID
	// Address is the control plane's secure port (host:port), or several
	// replicas' separated by commas; a host name stands for all its
	// addresses. Each request goes to the next one (see cpdial.Replicas).
	Address string
	// RootPEM is the mesh's trust root: the control plane and the issued
	// certificates must chain up to it.
	RootPEM []byte
	// Token returns the bootstrap token. It is called for each attempt
	// that needs one (the first certificate, or after the certificate
	// expired), so a token file corrected meanwhile is read again. Nil
	// means there is none.
	Token func() (string, error)
	// Dir, when set, keeps the key and certificate (key.pem,
	// cert-chain.pem, mode 0600 in a 0700 directory) so a restarted proxy
	// starts with its certificate and renews with it while it is valid.
	Dir string
	// BackoffBase and BackoffMax bound the jittered exponential delay
	// between failed attempts (defaults 200ms and 10s).
	BackoffBase, BackoffMax time.Duration
	Logger                  *slog.Logger
}

// Bundle is one issued certificate with its key. It is immutable.
type Bundle struct {
	// TLS is the chain (leaf, intermediates) and the private key, for tls.Config.
	TLS *tls.Certificate
	// Chain is the parsed leaf and intermediates.
	Chain []*x509.Certificate
	ID    spiffe.ID
	// RenewAt is when the manager will renew it.
	RenewAt time.Time
	changed chan struct{}
}

// Leaf is the workload certificate.
func (b *Bundle) Leaf() *x509.Certificate { return b.Chain[0] }

// Changed is closed when a newer Bundle replaces this one.
func (b *Bundle) Changed() <-chan struct{} { return b.changed }

// Manager holds the proxy's workload certificate. See the package
// documentation for its concurrency contract.
type Manager struct {
	opts      Options
	log       *slog.Logger
	roots     *x509.CertPool
	rootCerts []*x509.Certificate
	cur       atomic.Pointer[Bundle]
	ready     chan struct{}
	readyOnce sync.Once
	issued    atomic.Uint64
	running   atomic.Bool
	replicas  *cpdial.Replicas
}

// New checks the options and, with Dir set, loads a stored certificate
// that is still valid for the identity. It does not contact the CA; Run does.
func New(opts Options) (*Manager, error) {
	if err := opts.Identity.Validate(); err != nil {
		return nil, fmt.Errorf("certs: identity %s: %w", opts.Identity, err)
	}
	if opts.Address == "" {
		return nil, errors.New("certs: Address is required")
	}
	addrs, err := cpdial.Split(opts.Address)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.BackoffBase <= 0 {
		opts.BackoffBase = DefaultBackoffBase
	}
	if opts.BackoffMax < opts.BackoffBase {
		opts.BackoffMax = max(DefaultBackoffMax, opts.BackoffBase)
	}
	m := &Manager{opts: opts, ready: make(chan struct{}), roots: x509.NewCertPool(),
		log: opts.Logger.With("component", "certs", "identity", opts.Identity.String())}
	if m.replicas, err = cpdial.NewReplicas(addrs, m.log); err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	rest := opts.RootPEM
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certs: trust root: %w", err)
		}
		m.roots.AddCert(c)
		m.rootCerts = append(m.rootCerts, c)
	}
	if len(m.rootCerts) == 0 {
		return nil, errors.New("certs: the trust root holds no PEM certificate")
	}
	if opts.Dir != "" {
		if b, err := m.load(); err != nil {
			m.log.Warn("not using the stored certificate", "dir", opts.Dir, "error", err)
		} else if b != nil {
			m.install(b, "loaded from "+opts.Dir)
		}
	}
	return m, nil
}

// Current is the current certificate, or nil before the first.
func (m *Manager) Current() *Bundle { return m.cur.Load() }

// Ready reports whether the manager has a certificate.
func (m *Manager) Ready() bool { return m.cur.Load() != nil }

// Wait blocks until the manager has a certificate or ctx is done.
func (m *Manager) Wait(ctx context.Context) error {
	select {
	case <-m.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Issued counts the certificates installed so far (loaded, issued, renewed).
func (m *Manager) Issued() uint64 { return m.issued.Load() }

// Identity is the SPIFFE ID the manager asks for.
func (m *Manager) Identity() spiffe.ID { return m.opts.Identity }

// Roots is the trust root pool. The caller may not modify it.
func (m *Manager) Roots() *x509.CertPool { return m.roots }

// RootCertificates are the trust roots, parsed. The caller may not modify them.
func (m *Manager) RootCertificates() []*x509.Certificate { return m.rootCerts }

// GetCertificate is a tls.Config.GetCertificate for a server: the current
// workload certificate.
func (m *Manager) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if b := m.cur.Load(); b != nil {
		return b.TLS, nil
	}
	return nil, fmt.Errorf("certs: no certificate for %s yet", m.opts.Identity)
}

// GetClientCertificate is a tls.Config.GetClientCertificate: the current
// workload certificate while it is valid, else none.
func (m *Manager) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if b := m.cur.Load(); b != nil && time.Now().Before(b.Leaf().NotAfter) {
		return b.TLS, nil
	}
	return &tls.Certificate{}, nil
}

// VerifyPeer checks a peer's certificate chain (leaf first) against the
// trust root for usage and returns its SPIFFE ID: what a mesh TLS
// connection's VerifyConnection does instead of checking host names.
func (m *Manager) VerifyPeer(chain []*x509.Certificate, usage x509.ExtKeyUsage) (spiffe.ID, error) {
	return spiffe.Verify(chain, m.roots, time.Now(), usage)
}

// Secret is one SDS secret as the proxy serves it.
type Secret struct {
	Name string
	// Certificate is set for "default": the workload's chain and key.
	Certificate *tls.Certificate
	// Roots and RootPEM are set for "ROOTCA": the trust root.
	Roots   *x509.CertPool
	RootPEM []byte
}

// Secret looks an SDS secret up by name: "default" (an error until the
// first certificate) or "ROOTCA". Other names are an error naming them.
func (m *Manager) Secret(name string) (Secret, error) {
	switch name {
	case SecretDefault:
		b := m.cur.Load()
		if b == nil {
			return Secret{}, fmt.Errorf("certs: secret %q: no certificate for %s yet", name, m.opts.Identity)
		}
		return Secret{Name: name, Certificate: b.TLS}, nil
	case SecretRootCA:
		return Secret{Name: name, Roots: m.roots, RootPEM: m.opts.RootPEM}, nil
	}
	return Secret{}, fmt.Errorf("certs: secret %q: the proxy serves only %q and %q", name, SecretDefault, SecretRootCA)
}

// ControlPlaneTLS is the TLS configuration to reach the control plane:
// its certificate must chain up to the trust root and carry the control
// plane's SPIFFE ID in the proxy's trust domain (host names are not
// checked, so any address of the control plane works), and the proxy
// presents its current certificate when it has a valid one.
func (m *Manager) ControlPlaneTLS() *tls.Config {
	return ControlPlaneTLS(m.roots, m.opts.Identity.TrustDomain, m.GetClientCertificate)
}

// ControlPlaneTLS builds the TLS configuration that verifies the control
// plane of trustDomain against roots; client supplies the client
// certificate (nil: none).
func ControlPlaneTLS(roots *x509.CertPool, trustDomain string, client func(*tls.CertificateRequestInfo) (*tls.Certificate, error)) *tls.Config {
	want := spiffe.ControlPlane(trustDomain)
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Verified below by SPIFFE ID instead of host name.
		InsecureSkipVerify: true, //nolint:gosec // VerifyConnection verifies the chain.
		VerifyConnection: func(cs tls.ConnectionState) error {
			got, err := spiffe.Verify(cs.PeerCertificates, roots, time.Now(), x509.ExtKeyUsageServerAuth)
			if err != nil {
				return fmt.Errorf("control plane certificate: %w (is --root-cert the mesh's root?)", err)
			}
			if got != want {
				return fmt.Errorf("control plane certificate is for %s, want %s", got, want)
			}
			return nil
		},
		GetClientCertificate: client,
	}
}

// Run obtains the first certificate (unless one was loaded) and renews
// each at about half its lifetime, until ctx is done; then it returns
// nil. Failed attempts are logged at error with the CA's reason and
// retried with backoff. Run may be called once.
func (m *Manager) Run(ctx context.Context) error {
	if !m.running.CompareAndSwap(false, true) {
		return errors.New("certs: Run called more than once")
	}
	attempt := 0
	for {
		var wait time.Duration
		if b := m.cur.Load(); b != nil {
			wait = time.Until(b.RenewAt)
		}
		if attempt > 0 {
			wait = m.backoff(attempt - 1)
		}
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		b, how, err := m.request(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			attempt++
			m.logFailure(err, attempt)
			continue
		}
		attempt = 0
		m.install(b, how)
	}
}

func (m *Manager) logFailure(err error, attempt int) {
	args := []any{"error", err, "attempt", attempt}
	if st, ok := status.FromError(err); ok {
		args = append(args, "code", st.Code().String())
	}
	if b := m.cur.Load(); b != nil {
		args = append(args, "current_expires", b.Leaf().NotAfter.UTC().Format(time.RFC3339))
	}
	m.log.Error("the CA refused or could not be reached; retrying with backoff", args...)
}

func (m *Manager) backoff(n int) time.Duration {
	d := m.opts.BackoffBase
	for i := 0; i < n && d < m.opts.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, m.opts.BackoffMax)
	return d/2 + mrand.N(d/2+1)
}

// request asks the CA for a certificate with a new key, authenticated by
// the current certificate while it is valid, else by the bootstrap token.
func (m *Manager) request(ctx context.Context) (*Bundle, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", fmt.Errorf("generating a key: %w", err)
	}
	csrDER, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{m.opts.Identity.URL()}}, key)
	if err != nil {
		return nil, "", fmt.Errorf("creating the CSR: %w", err)
	}
	how := "renewed with the current certificate"
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if b := m.cur.Load(); b == nil || !time.Now().Before(b.Leaf().NotAfter) {
		how = "issued for the bootstrap token"
		if m.opts.Token == nil {
			return nil, "", errors.New("no valid certificate and no bootstrap token (--token-file or --token)")
		}
		tok, err := m.opts.Token()
		if err != nil {
			return nil, "", fmt.Errorf("bootstrap token: %w", err)
		}
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	}
	// A connection per request: the client certificate is chosen at the
	// handshake, and renewals are rare.
	addr := m.replicas.Next(ctx)
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithContextDialer(cpdial.Dial),
		grpc.WithTransportCredentials(credentials.NewTLS(m.ControlPlaneTLS())))
	if err != nil {
		return nil, "", fmt.Errorf("CA at %s: %w", addr, err)
	}
	defer cc.Close()
	resp, err := pb.NewIstioCertificateServiceClient(cc).CreateCertificate(ctx, &pb.IstioCertificateRequest{
		Csr: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csrDER})),
	})
	if err != nil {
		return nil, "", fmt.Errorf("CA at %s: %w", addr, err)
	}
	b, err := m.bundle(resp.GetCertChain(), key)
	if err != nil {
		return nil, "", fmt.Errorf("CA at %s answered with an unusable certificate: %w", addr, err)
	}
	return b, how, nil
}

// bundle checks the CA's answer (leaf first, root last) and makes it a
// Bundle: the leaf is for our key and identity and chains up to our root.
func (m *Manager) bundle(chainPEM []string, key *ecdsa.PrivateKey) (*Bundle, error) {
	var chain []*x509.Certificate
	for i, p := range chainPEM {
		rest := []byte(p)
		for {
			var blk *pem.Block
			blk, rest = pem.Decode(rest)
			if blk == nil {
				break
			}
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				return nil, fmt.Errorf("cert_chain[%d]: %w", i, err)
			}
			chain = append(chain, c)
		}
	}
	if len(chain) == 0 {
		return nil, errors.New("empty cert_chain")
	}
	// Keep the leaf and intermediates; the root is what we already trust.
	for len(chain) > 1 && isRoot(chain[len(chain)-1]) {
		chain = chain[:len(chain)-1]
	}
	return m.newBundle(chain, key, time.Now())
}

func isRoot(c *x509.Certificate) bool {
	return c.IsCA && c.CheckSignatureFrom(c) == nil
}

// newBundle checks chain against the key, the root and the identity, now.
// Its lifetime counts from received (or its NotBefore, if later): the
// renewal is due after renewFraction of it.
func (m *Manager) newBundle(chain []*x509.Certificate, key *ecdsa.PrivateKey, received time.Time) (*Bundle, error) {
	if !key.PublicKey.Equal(chain[0].PublicKey) {
		return nil, errors.New("the certificate is not for this proxy's key")
	}
	id, err := spiffe.Verify(chain, m.roots, time.Now(), x509.ExtKeyUsageClientAuth)
	if err != nil {
		return nil, fmt.Errorf("the certificate does not verify against the trust root: %w", err)
	}
	if id != m.opts.Identity {
		return nil, fmt.Errorf("the certificate is for %s, not %s", id, m.opts.Identity)
	}
	tc := &tls.Certificate{PrivateKey: key, Leaf: chain[0]}
	for _, c := range chain {
		tc.Certificate = append(tc.Certificate, c.Raw)
	}
	start := received
	if chain[0].NotBefore.After(start) {
		start = chain[0].NotBefore
	}
	life := chain[0].NotAfter.Sub(start)
	frac := renewFraction + renewJitter*(2*mrand.Float64()-1)
	return &Bundle{TLS: tc, Chain: chain, ID: id, RenewAt: start.Add(time.Duration(float64(life) * frac)), changed: make(chan struct{})}, nil
}

// install makes b current and tells whoever waits on the old one.
func (m *Manager) install(b *Bundle, how string) {
	old := m.cur.Swap(b)
	if old != nil {
		close(old.changed)
	}
	m.issued.Add(1)
	m.readyOnce.Do(func() { close(m.ready) })
	leaf := b.Leaf()
	m.log.Info("workload certificate "+how, "serial", leaf.SerialNumber.Text(16),
		"expires", leaf.NotAfter.UTC().Format(time.RFC3339), "renew_at", b.RenewAt.UTC().Format(time.RFC3339))
	if m.opts.Dir != "" && how != "loaded from "+m.opts.Dir {
		if err := m.store(b); err != nil {
			m.log.Warn("could not keep the certificate", "dir", m.opts.Dir, "error", err)
		}
	}
}
