// Package spiffe is the workload identity both ends of the mesh agree on:
// SPIFFE IDs of the form spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>
// (Istio's), how they are read from an X.509 certificate, and how a
// certificate chain is verified against the mesh's trust root. The control
// plane's CA, the control plane's ADS authorization and the proxy (its
// certificate manager, and the data plane's mTLS) all use it.
package spiffe

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// DefaultTrustDomain is Istio's default trust domain.
const DefaultTrustDomain = "cluster.local"

// ID is a workload identity. The zero value is not a valid ID.
type ID struct {
	TrustDomain    string
	Namespace      string
	ServiceAccount string
}

// ControlPlane is the identity in the control plane's own serving
// certificate: namespace weft-system, service account weft. The CA never
// signs it for anyone else.
func ControlPlane(trustDomain string) ID {
	return ID{TrustDomain: trustDomain, Namespace: "weft-system", ServiceAccount: "weft"}
}

// String is the SPIFFE URI, spiffe://<td>/ns/<ns>/sa/<sa>.
func (id ID) String() string {
	return "spiffe://" + id.TrustDomain + "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount
}

// URL is the SPIFFE URI as a URL, for a certificate's URI SAN.
func (id ID) URL() *url.URL {
	return &url.URL{Scheme: "spiffe", Host: id.TrustDomain, Path: "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount}
}

// Validate reports what is wrong with id, if anything: each part must be
// non-empty and free of '/' and other characters a SPIFFE ID cannot hold.
func (id ID) Validate() error {
	for _, p := range []struct{ what, v string }{
		{"trust domain", id.TrustDomain}, {"namespace", id.Namespace}, {"service account", id.ServiceAccount},
	} {
		if p.v == "" {
			return fmt.Errorf("%s is empty", p.what)
		}
		for _, r := range p.v {
			ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-._", r)
			if !ok {
				return fmt.Errorf("%s %q: character %q is not allowed (letters, digits, '-', '.', '_')", p.what, p.v, r)
			}
		}
	}
	return nil
}

// Parse reads a SPIFFE URI of Istio's form.
func Parse(s string) (ID, error) {
	u, err := url.Parse(s)
	if err != nil {
		return ID{}, fmt.Errorf("SPIFFE ID %q: %w", s, err)
	}
	return FromURL(u)
}

// FromURL reads a SPIFFE ID from a URI (a certificate's URI SAN).
func FromURL(u *url.URL) (ID, error) {
	if u.Scheme != "spiffe" {
		return ID{}, fmt.Errorf("SPIFFE ID %q: scheme is not spiffe", u.String())
	}
	if u.User != nil || u.Port() != "" || u.RawQuery != "" || u.Fragment != "" {
		return ID{}, fmt.Errorf("SPIFFE ID %q: must not have user info, port, query or fragment", u.String())
	}
	parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	if len(parts) != 4 || parts[0] != "ns" || parts[2] != "sa" {
		return ID{}, fmt.Errorf("SPIFFE ID %q: want spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>", u.String())
	}
	id := ID{TrustDomain: u.Host, Namespace: parts[1], ServiceAccount: parts[3]}
	if err := id.Validate(); err != nil {
		return ID{}, fmt.Errorf("SPIFFE ID %q: %w", u.String(), err)
	}
	return id, nil
}

// FromCertificate returns the SPIFFE ID of a workload certificate: its
// only URI SAN. A certificate with no URI SAN, several, or one that is
// not a SPIFFE ID of Istio's form has none.
func FromCertificate(c *x509.Certificate) (ID, error) {
	switch len(c.URIs) {
	case 0:
		return ID{}, errors.New("certificate has no URI SAN (no SPIFFE ID)")
	case 1:
		return FromURL(c.URIs[0])
	}
	var us []string
	for _, u := range c.URIs {
		us = append(us, u.String())
	}
	return ID{}, fmt.Errorf("certificate has %d URI SANs %q; want exactly one SPIFFE ID", len(us), us)
}

// Verify checks that chain (leaf first, then any intermediates the peer
// sent) leads to one of roots, is valid at now, and is good for usage
// (x509.ExtKeyUsageClientAuth for a client, ServerAuth for a server), and
// returns the leaf's SPIFFE ID. Host names are not checked: in the mesh a
// peer is known by its SPIFFE ID.
func Verify(chain []*x509.Certificate, roots *x509.CertPool, now time.Time, usage x509.ExtKeyUsage) (ID, error) {
	if len(chain) == 0 {
		return ID{}, errors.New("no certificate")
	}
	if roots == nil {
		return ID{}, errors.New("no trust root to verify against")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{usage},
	}); err != nil {
		return ID{}, err
	}
	return FromCertificate(chain[0])
}
