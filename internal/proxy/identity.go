package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"weft.dev/weft/internal/proxy/admin"
	"weft.dev/weft/internal/proxy/certs"
	"weft.dev/weft/internal/proxy/filter/oauth2"
	"weft.dev/weft/internal/proxy/sdscreds"
	"weft.dev/weft/internal/proxy/secretdir"
	"weft.dev/weft/internal/proxy/tlssocket"
	"weft.dev/weft/internal/spiffe"
)

// newCerts builds the certificate manager for the proxy's SPIFFE ID:
// its trust domain, namespace and service account.
func newCerts(opts Options) (*certs.Manager, error) {
	if len(opts.RootCertPEM) == 0 {
		return nil, errors.New("the mesh's trust root (RootCertPEM, weft-proxy --root-cert) is required to reach the control plane's secure port")
	}
	td := opts.TrustDomain
	if td == "" {
		td = spiffe.DefaultTrustDomain
	}
	co := opts.Certs
	co.Identity = spiffe.ID{TrustDomain: td, Namespace: opts.Identity.Namespace, ServiceAccount: opts.Identity.ServiceAccount}
	co.Address, co.RootPEM, co.Token, co.Dir, co.Logger = opts.XDSAddress, opts.RootCertPEM, opts.Token, opts.CertDir, opts.Logger
	return certs.New(co)
}

// secrets serves the data plane's SDS secrets from the certificate
// manager: "default", the current workload certificate while it is
// valid, and "ROOTCA", the trust root.
type secrets struct{ m *certs.Manager }

var _ tlssocket.Secrets = secrets{}

func (s secrets) Certificate() *tls.Certificate {
	if b := s.m.Current(); b != nil && time.Now().Before(b.Leaf().NotAfter) {
		return b.TLS
	}
	return nil
}

func (s secrets) Roots() *x509.CertPool { return s.m.Roots() }

// withCredentials serves a gateway's named credentials beside the
// workload secrets: from its credential directory (secretdir) first, an
// operator's explicit mount, then those the control plane sent over ADS
// (sdscreds, the Kubernetes Secrets of its namespace). Either may be nil.
type withCredentials struct {
	tlssocket.Secrets
	dir *secretdir.Dir
	sds *sdscreds.Store
}

var (
	_ tlssocket.Credentials = withCredentials{}
	_ oauth2.Secrets        = withCredentials{}
)

func (w withCredentials) CredentialCertificate(name string) *tls.Certificate {
	if w.dir != nil {
		if c := w.dir.CredentialCertificate(name); c != nil {
			return c
		}
	}
	if w.sds != nil {
		return w.sds.CredentialCertificate(name)
	}
	return nil
}

func (w withCredentials) CredentialRoots(name string) *x509.CertPool {
	if w.dir != nil {
		if r := w.dir.CredentialRoots(name); r != nil {
			return r
		}
	}
	if w.sds != nil {
		return w.sds.CredentialRoots(name)
	}
	return nil
}

func (w withCredentials) GenericSecret(name string) []byte {
	if w.dir != nil {
		if v := w.dir.GenericSecret(name); v != nil {
			return v
		}
	}
	if w.sds != nil {
		return w.sds.GenericSecret(name)
	}
	return nil
}

// noSecrets is a proxy without a workload certificate (plaintext xDS).
type noSecrets struct{}

func (noSecrets) Certificate() *tls.Certificate { return nil }
func (noSecrets) Roots() *x509.CertPool         { return nil }

func orNoSecrets(s tlssocket.Secrets) tlssocket.Secrets {
	if s == nil {
		return noSecrets{}
	}
	return s
}

// certificates is what the admin endpoint's /certs lists: the trust root
// (ROOTCA) and the workload certificate chain (default).
func (p *Proxy) certificates() []admin.CertificateSet {
	if p.certs == nil {
		return nil
	}
	s := admin.CertificateSet{CAName: certs.SecretRootCA, ChainName: certs.SecretDefault, CA: p.certs.RootCertificates()}
	if b := p.certs.Current(); b != nil {
		s.Chain = b.Chain
	}
	return []admin.CertificateSet{s}
}

var (
	descCertExpiry = prometheus.NewDesc("weft_proxy_certificate_expiration_timestamp_seconds",
		"When the workload certificate expires (Unix time); absent before the first certificate or without one (plaintext).", nil, nil)
	descCertsIssued = prometheus.NewDesc("weft_proxy_certificates_total",
		"Workload certificates installed: the first, loaded or issued, and each renewal.", nil, nil)
)

// certCollector exports the certificate manager's state at scrape time.
type certCollector struct{ m *certs.Manager }

func (c certCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descCertExpiry
	ch <- descCertsIssued
}

func (c certCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(descCertsIssued, prometheus.CounterValue, float64(c.m.Issued()))
	if b := c.m.Current(); b != nil {
		ch <- prometheus.MustNewConstMetric(descCertExpiry, prometheus.GaugeValue, float64(b.Leaf().NotAfter.UnixNano())/float64(time.Second))
	}
}
