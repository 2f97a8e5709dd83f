// Package sdscreds holds the credentials a gateway is sent over ADS: SDS
// secrets by name ("kubernetes://<credentialName>", its "-cacert" and
// "/<key>" companions), as the control plane reads them from the
// Kubernetes Secrets of the gateway's namespace. Each secret is parsed
// when it arrives — a certificate with its key, a CA bundle or a generic
// value — and served to the next TLS handshake or login; connections
// already established keep theirs. A secret that does not parse is
// reported and its last good version stays in force.
package sdscreds

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
)

// Store is the secrets in force. Its lookups are safe for concurrent use
// and never block; UpdateSecrets is called by the xDS client's goroutine.
type Store struct {
	log *slog.Logger
	cur atomic.Pointer[snapshot]
	mu  sync.Mutex // serializes UpdateSecrets
}

type snapshot struct {
	certs   map[string]*tls.Certificate
	roots   map[string]*x509.CertPool
	generic map[string][]byte
}

// New returns an empty Store.
func New(log *slog.Logger) *Store {
	if log == nil {
		log = slog.Default()
	}
	s := &Store{log: log.With("component", "sdscreds")}
	s.cur.Store(&snapshot{})
	return s
}

// UpdateSecrets puts the secrets of put and drops those named in drop. A
// secret that cannot be used keeps its last good version, and the error
// names it.
func (s *Store) UpdateSecrets(put map[string]*tlsv3.Secret, drop []string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.cur.Load()
	next := &snapshot{certs: maps.Clone(prev.certs), roots: maps.Clone(prev.roots), generic: maps.Clone(prev.generic)}
	if next.certs == nil {
		next.certs, next.roots, next.generic = map[string]*tls.Certificate{}, map[string]*x509.CertPool{}, map[string][]byte{}
	}
	for _, n := range drop {
		if next.certs[n] != nil || next.roots[n] != nil || next.generic[n] != nil {
			s.log.Info("credential removed", "secret", n)
		}
		delete(next.certs, n)
		delete(next.roots, n)
		delete(next.generic, n)
	}
	var errs []error
	for _, n := range slices.Sorted(maps.Keys(put)) {
		if err := next.put(n, put[n]); err != nil {
			errs = append(errs, fmt.Errorf("secret %q: %w", n, err))
			s.log.Warn("credential not usable; its last good version (if any) stays in force", "secret", n, "err", err)
			continue
		}
		s.log.Debug("credential received", "secret", n)
	}
	s.cur.Store(next)
	return errors.Join(errs...)
}

// put parses sec into the snapshot under name, replacing what was there.
func (n *snapshot) put(name string, sec *tlsv3.Secret) error {
	switch {
	case sec.GetTlsCertificate() != nil:
		tc := sec.GetTlsCertificate()
		certPEM, keyPEM := tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes()
		if certPEM == nil {
			certPEM = []byte(tc.GetCertificateChain().GetInlineString())
		}
		if keyPEM == nil {
			keyPEM = []byte(tc.GetPrivateKey().GetInlineString())
		}
		c, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return fmt.Errorf("certificate and key: %w", err)
		}
		if c.Leaf == nil && len(c.Certificate) > 0 {
			c.Leaf, _ = x509.ParseCertificate(c.Certificate[0])
		}
		delete(n.roots, name)
		delete(n.generic, name)
		n.certs[name] = &c
	case sec.GetValidationContext() != nil:
		ds := sec.GetValidationContext().GetTrustedCa()
		pem := ds.GetInlineBytes()
		if pem == nil {
			pem = []byte(ds.GetInlineString())
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return errors.New("trusted_ca: no PEM certificate in it")
		}
		delete(n.certs, name)
		delete(n.generic, name)
		n.roots[name] = pool
	case sec.GetGenericSecret() != nil:
		ds := sec.GetGenericSecret().GetSecret()
		v := ds.GetInlineBytes()
		if v == nil {
			v = []byte(ds.GetInlineString())
		}
		delete(n.certs, name)
		delete(n.roots, name)
		n.generic[name] = v
	default:
		return errors.New("neither a certificate, a validation context nor a generic secret (inline)")
	}
	return nil
}

// CredentialCertificate is the certificate and key of SDS secret name, or
// nil.
func (s *Store) CredentialCertificate(name string) *tls.Certificate { return s.cur.Load().certs[name] }

// CredentialRoots is the CA bundle of SDS secret name, or nil.
func (s *Store) CredentialRoots(name string) *x509.CertPool { return s.cur.Load().roots[name] }

// GenericSecret is the value of generic SDS secret name, or nil. The
// caller must not modify it.
func (s *Store) GenericSecret(name string) []byte { return s.cur.Load().generic[name] }

// Names lists the secrets held, sorted.
func (s *Store) Names() []string {
	cur := s.cur.Load()
	out := slices.AppendSeq(slices.Collect(maps.Keys(cur.certs)), maps.Keys(cur.roots))
	out = slices.AppendSeq(out, maps.Keys(cur.generic))
	slices.Sort(out)
	return out
}
