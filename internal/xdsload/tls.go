package xdsload

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"

	"weft.dev/weft/internal/ca"
	"weft.dev/weft/internal/spiffe"
	"weft.dev/weft/internal/xds/contract"
)

// WorkloadCerts issues the simulated proxies their workload certificates
// from a mesh CA kept in a directory that `weft serve --ca-dir` then uses
// as its own (ProcessOptions.CADir), so the proxies can connect to the
// control plane's secure port as weft-proxy does: TLS with the workload
// certificate as the client certificate, every stream's node checked
// against it. Issuing directly, not through bootstrap tokens and the CA's
// gRPC service, keeps 2,000 certificate requests out of what is measured.
type WorkloadCerts struct {
	ca *ca.CA
}

// NewWorkloadCerts creates a CA in dir (an empty directory: a new
// self-signed root is written there).
func NewWorkloadCerts(dir string) (*WorkloadCerts, error) {
	c, err := ca.New(ca.Options{Dir: dir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, fmt.Errorf("xdsload: mesh CA in %s: %w", dir, err)
	}
	return &WorkloadCerts{ca: c}, nil
}

// ClientTLS is a FleetOptions.ClientTLS: a new key and a workload
// certificate for the proxy's namespace and service account, and the
// mesh's root to verify the control plane with.
func (w *WorkloadCerts) ClientTLS(id contract.Identity) (*tls.Config, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	sid := spiffe.ID{TrustDomain: w.ca.TrustDomain(), Namespace: id.Namespace, ServiceAccount: id.ServiceAccount}
	_, leaf, err := w.ca.Sign(&x509.CertificateRequest{PublicKey: key.Public()}, sid, 0)
	if err != nil {
		return nil, fmt.Errorf("xdsload: certificate for %s: %w", sid, err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}},
		RootCAs:      w.ca.Roots(),
		MinVersion:   tls.VersionTLS12,
	}, nil
}
