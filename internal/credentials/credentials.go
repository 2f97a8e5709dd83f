// Package credentials is the control plane's model of the TLS
// credentials gateways name by credentialName: certificates, keys, CA
// bundles and the other keys of a Secret (an OIDCLogin's client secret),
// by namespace and name, as a Kubernetes Secret holds them. A Set is an
// immutable view; a Source (the Kubernetes API, kubesecrets) keeps one
// current. The xDS generator turns a gateway's namespace's credentials
// into SDS secrets (internal/xds/generate, secrets.go).
package credentials

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Credential is one Secret's usable content.
type Credential struct {
	Namespace, Name string
	// Cert and Key are the certificate chain and its private key (PEM):
	// tls.crt and tls.key of a kubernetes.io/tls Secret, or cert and key
	// (Istio's generic Secret keys). Both or neither.
	Cert, Key []byte
	// CA is the bundle client certificates must chain to (PEM): ca.crt or
	// cacert.
	CA []byte
	// Files are the Secret's other keys (an OIDCLogin's client-secret),
	// their trailing line break removed.
	Files map[string][]byte
}

// Keys a Secret's certificate, key and CA may be stored under, in order
// of preference.
var (
	CertKeys = []string{"tls.crt", "cert"}
	KeyKeys  = []string{"tls.key", "key"}
	CAKeys   = []string{"ca.crt", "cacert"}
)

// MaxValue is the largest value of a Secret's key that is kept.
const MaxValue = 64 << 10

// FromData is the credential a Secret's data holds, or nil when it holds
// none of the keys a credential is made of. It does not parse anything:
// Check says whether the certificate, key and CA are usable.
func FromData(namespace, name string, data map[string][]byte) *Credential {
	c := &Credential{Namespace: namespace, Name: name}
	first := func(keys []string) []byte {
		for _, k := range keys {
			if v, ok := data[k]; ok && len(v) > 0 && len(v) <= MaxValue {
				return v
			}
		}
		return nil
	}
	c.Cert, c.Key, c.CA = first(CertKeys), first(KeyKeys), first(CAKeys)
	for k, v := range data {
		if isTLSKey(k) || len(v) > MaxValue {
			continue
		}
		if c.Files == nil {
			c.Files = map[string][]byte{}
		}
		c.Files[k] = []byte(strings.TrimRight(string(v), "\r\n"))
	}
	if c.Cert == nil && c.Key == nil && c.CA == nil && c.Files == nil {
		return nil
	}
	return c
}

// Check reports what of c cannot be used: a certificate without its key
// (or the reverse), a pair that does not parse or match, a CA bundle
// without a PEM certificate. A Secret caught half-way through a rotation
// looks like this.
func (c *Credential) Check() error {
	var errs []error
	switch {
	case c.Cert != nil && c.Key == nil:
		errs = append(errs, errors.New("a certificate (tls.crt or cert) without its key (tls.key or key)"))
	case c.Key != nil && c.Cert == nil:
		errs = append(errs, errors.New("a key (tls.key or key) without its certificate (tls.crt or cert)"))
	case c.Cert != nil:
		if _, err := tls.X509KeyPair(c.Cert, c.Key); err != nil {
			errs = append(errs, fmt.Errorf("certificate and key: %w", err))
		}
	}
	if c.CA != nil && !x509.NewCertPool().AppendCertsFromPEM(c.CA) {
		errs = append(errs, errors.New("ca.crt (or cacert): no PEM certificate in it"))
	}
	return errors.Join(errs...)
}

// Usable is c without what Check refuses: the pair when the pair is
// bad, the CA when the CA is; nil when nothing is left.
func (c *Credential) Usable() *Credential {
	u := *c
	if u.Cert == nil || u.Key == nil {
		u.Cert, u.Key = nil, nil
	} else if _, err := tls.X509KeyPair(u.Cert, u.Key); err != nil {
		u.Cert, u.Key = nil, nil
	}
	if u.CA != nil && !x509.NewCertPool().AppendCertsFromPEM(u.CA) {
		u.CA = nil
	}
	if u.Cert == nil && u.CA == nil && u.Files == nil {
		return nil
	}
	return &u
}

func isTLSKey(k string) bool {
	return slices.Contains(CertKeys, k) || slices.Contains(KeyKeys, k) || slices.Contains(CAKeys, k)
}

// Set is the credentials in force, by namespace and name. Immutable: a
// change makes a new Set.
type Set struct {
	byNS map[string][]*Credential // sorted by name
	hash string
}

// NewSet makes a Set of creds (later ones of the same namespace and name
// win).
func NewSet(creds []*Credential) *Set {
	byKey := map[[2]string]*Credential{}
	for _, c := range creds {
		if c != nil {
			byKey[[2]string{c.Namespace, c.Name}] = c
		}
	}
	s := &Set{byNS: map[string][]*Credential{}}
	for _, c := range byKey {
		s.byNS[c.Namespace] = append(s.byNS[c.Namespace], c)
	}
	h := sha256.New()
	for _, ns := range slices.Sorted(maps.Keys(s.byNS)) {
		list := s.byNS[ns]
		slices.SortFunc(list, func(a, b *Credential) int { return strings.Compare(a.Name, b.Name) })
		for _, c := range list {
			write := func(b []byte) {
				var n [8]byte
				binary.LittleEndian.PutUint64(n[:], uint64(len(b)))
				h.Write(n[:])
				h.Write(b)
			}
			write([]byte(c.Namespace))
			write([]byte(c.Name))
			write(c.Cert)
			write(c.Key)
			write(c.CA)
			for _, k := range slices.Sorted(maps.Keys(c.Files)) {
				write([]byte(k))
				write(c.Files[k])
			}
		}
	}
	if len(s.byNS) > 0 {
		s.hash = hex.EncodeToString(h.Sum(nil)[:8])
	}
	return s
}

// Hash identifies the Set's content; "" for an empty or nil Set.
func (s *Set) Hash() string {
	if s == nil {
		return ""
	}
	return s.hash
}

// InNamespace lists the credentials of namespace ns, sorted by name. The
// caller must not modify them.
func (s *Set) InNamespace(ns string) []*Credential {
	if s == nil {
		return nil
	}
	return s.byNS[ns]
}

// Get is the credential of namespace ns and name, or nil.
func (s *Set) Get(ns, name string) *Credential {
	if s == nil {
		return nil
	}
	l := s.byNS[ns]
	i, ok := slices.BinarySearchFunc(l, name, func(c *Credential, name string) int { return strings.Compare(c.Name, name) })
	if !ok {
		return nil
	}
	return l[i]
}

// Certificate reports whether namespace ns has a credential name with a
// certificate and key Weft can serve: nil, or why not, for a user.
func (s *Set) Certificate(ns, name string) error {
	c := s.Get(ns, name)
	switch {
	case c == nil:
		return fmt.Errorf("Secret %s/%s does not exist, or holds no certificate, key or CA Weft can use", ns, name)
	case c.Cert == nil:
		return fmt.Errorf("Secret %s/%s holds no certificate and key (tls.crt and tls.key) that go together", ns, name)
	}
	return nil
}

// Len is how many credentials the Set holds.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	n := 0
	for _, l := range s.byNS {
		n += len(l)
	}
	return n
}

// Source keeps a current Set (the Kubernetes API's Secrets).
type Source interface {
	// Name names the source in logs and /status.
	Name() string
	// Run watches until ctx is done, then returns nil once every
	// goroutine it started has ended; an error only when it cannot start.
	Run(ctx context.Context) error
	// Current is the latest Set; never nil.
	Current() *Set
	// Changed has a value after each new Set (capacity 1, coalescing).
	Changed() <-chan struct{}
	// Synced is true once every Secret was listed once.
	Synced() bool
}
