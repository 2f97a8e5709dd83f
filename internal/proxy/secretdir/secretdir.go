// Package secretdir serves a gateway's TLS credentials by name from a
// directory laid out as Kubernetes mounts Secrets: one subdirectory per
// credential, named as the Gateway's credentialName, holding tls.crt and
// tls.key (a kubernetes.io/tls Secret) or cert and key (Istio's generic
// Secret keys), and optionally ca.crt or cacert, the CA that client
// certificates must chain to for MUTUAL servers. A CA may also stand in
// its own subdirectory "<name>-cacert" (Istio's split form).
//
// Any other file of a credential is a generic secret (an OIDCLogin's
// client-secret and hmac-secret), served under the SDS name
// "kubernetes://<credentialName>/<file>" (GenericSecret).
//
// The directory is read again every poll interval; a credential whose
// files changed is parsed again and served to the next handshake, while
// connections already established keep theirs. A credential that cannot
// be read or parsed is reported and its last good version stays in
// force, so a half-written rotation never takes a host down.
package secretdir

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"weft.dev/weft/internal/xds/contract"
)

// Prefix is Istio's SDS name prefix for a credentialName, and CASuffix
// ends the SDS name of a credential's CA (the wire contract's).
const (
	Prefix   = contract.SecretCredentialPrefix
	CASuffix = contract.SecretCASuffix
)

// DefaultPoll is how often the directory is read again.
const DefaultPoll = 2 * time.Second

// Dir is the credentials of one directory. Its methods are safe for
// concurrent use and never block on I/O.
type Dir struct {
	path string
	log  *slog.Logger
	cur  atomic.Pointer[snapshot]

	mu      sync.Mutex          // serializes Reload
	raw     map[string]rawFiles // the bytes last parsed, by credential
	reports map[string]string   // the last error reported, by credential
}

type snapshot struct {
	certs   map[string]*tls.Certificate
	roots   map[string]*x509.CertPool
	generic map[string]map[string][]byte // by credential, then file
}

// rawFiles is what a credential's files held when last parsed.
type rawFiles struct {
	cert, key, ca []byte
	generic       map[string][]byte // the other files
}

func (a rawFiles) equal(b rawFiles) bool {
	return bytes.Equal(a.cert, b.cert) && bytes.Equal(a.key, b.key) && bytes.Equal(a.ca, b.ca) &&
		maps.EqualFunc(a.generic, b.generic, bytes.Equal)
}

// tlsFiles are the files of a credential that are not generic secrets.
var tlsFiles = map[string]bool{"tls.crt": true, "tls.key": true, "cert": true, "key": true, "ca.crt": true, "cacert": true}

// maxGeneric is the largest generic secret file read.
const maxGeneric = 64 << 10

// Open reads the credentials in path. It fails when path is not a
// readable directory; credentials that cannot be used are logged and
// skipped.
func Open(path string, log *slog.Logger) (*Dir, error) {
	if log == nil {
		log = slog.Default()
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("credential directory: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("credential directory %s: not a directory", path)
	}
	d := &Dir{path: path, log: log.With("component", "secretdir", "dir", path), raw: map[string]rawFiles{}, reports: map[string]string{}}
	d.cur.Store(&snapshot{})
	if err := d.Reload(); err != nil {
		return nil, err
	}
	return d, nil
}

// Run reads the directory again every interval (DefaultPoll when 0)
// until ctx is done.
func (d *Dir) Run(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = DefaultPoll
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := d.Reload(); err != nil {
				d.log.Warn("reading the credential directory failed; the credentials in force are kept", "err", err)
			}
		}
	}
}

// Reload reads the directory once. It fails only when the directory
// itself cannot be read.
func (d *Dir) Reload() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	entries, err := os.ReadDir(d.path)
	if err != nil {
		return fmt.Errorf("credential directory: %w", err)
	}
	prev := d.cur.Load()
	next := &snapshot{certs: map[string]*tls.Certificate{}, roots: map[string]*x509.CertPool{}, generic: map[string]map[string][]byte{}}
	seen := map[string]bool{}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") {
			continue // Kubernetes' ..data and timestamped directories
		}
		dir := filepath.Join(d.path, name)
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			continue
		}
		seen[name] = true
		raw := rawFiles{
			cert: readFirst(dir, "tls.crt", "cert"),
			key:  readFirst(dir, "tls.key", "key"),
			ca:   readFirst(dir, "ca.crt", "cacert"),
		}
		raw.generic = readGeneric(dir)
		if raw.generic != nil {
			next.generic[name] = raw.generic
		}
		old, had := d.raw[name]
		if had && old.equal(raw) {
			// Unchanged: keep what is in force (possibly nothing, if it
			// never parsed).
			if c := prev.certs[name]; c != nil {
				next.certs[name] = c
			}
			if r := prev.roots[name]; r != nil {
				next.roots[name] = r
			}
			continue
		}
		cert, roots, err := parse(raw)
		if err != nil {
			// Keep the last good version, if any.
			if c := prev.certs[name]; c != nil {
				next.certs[name] = c
			}
			if r := prev.roots[name]; r != nil {
				next.roots[name] = r
			}
			if msg := err.Error(); d.reports[name] != msg {
				d.reports[name] = msg
				d.log.Warn("credential not usable; its last good version (if any) stays in force", "credential", name, "err", err)
			}
			continue
		}
		delete(d.reports, name)
		d.raw[name] = raw
		if cert != nil {
			next.certs[name] = cert
		}
		if roots != nil {
			next.roots[name] = roots
		}
		if had {
			d.log.Info("credential reloaded", "credential", name)
		}
	}
	for name := range d.raw {
		if !seen[name] {
			delete(d.raw, name)
			delete(d.reports, name)
			d.log.Info("credential removed", "credential", name)
		}
	}
	d.cur.Store(next)
	return nil
}

// readGeneric reads the files of dir that are not TLS files: generic
// secrets, their trailing line break removed. Nil when there are none.
func readGeneric(dir string) map[string][]byte {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out map[string][]byte
	for _, e := range entries {
		n := e.Name()
		if strings.HasPrefix(n, ".") || tlsFiles[n] {
			continue
		}
		fi, err := os.Stat(filepath.Join(dir, n)) // follows Kubernetes' symlinks
		if err != nil || !fi.Mode().IsRegular() || fi.Size() > maxGeneric {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil {
			continue
		}
		if out == nil {
			out = map[string][]byte{}
		}
		out[n] = bytes.TrimRight(b, "\r\n")
	}
	return out
}

// readFirst returns the content of the first of names in dir that
// exists, or nil.
func readFirst(dir string, names ...string) []byte {
	for _, n := range names {
		if b, err := os.ReadFile(filepath.Join(dir, n)); err == nil {
			return b
		}
	}
	return nil
}

// parse reads a credential: a certificate with its key (both or
// neither) and a CA bundle (optional).
func parse(raw rawFiles) (*tls.Certificate, *x509.CertPool, error) {
	var cert *tls.Certificate
	switch {
	case raw.cert != nil && raw.key != nil:
		c, err := tls.X509KeyPair(raw.cert, raw.key)
		if err != nil {
			return nil, nil, fmt.Errorf("tls.crt/tls.key: %w", err)
		}
		if c.Leaf == nil && len(c.Certificate) > 0 {
			c.Leaf, _ = x509.ParseCertificate(c.Certificate[0])
		}
		cert = &c
	case raw.cert != nil:
		return nil, nil, errors.New("tls.crt without tls.key")
	case raw.key != nil:
		return nil, nil, errors.New("tls.key without tls.crt")
	}
	var roots *x509.CertPool
	if raw.ca != nil {
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(raw.ca) {
			return nil, nil, errors.New("ca.crt: no PEM certificate in it")
		}
	}
	if cert == nil && roots == nil && raw.generic == nil {
		return nil, nil, errors.New("no tls.crt/tls.key (or cert/key), no ca.crt (or cacert) and no other file")
	}
	return cert, roots, nil
}

// CredentialCertificate is the certificate and key of SDS secret name
// ("kubernetes://<credentialName>" or the bare name), or nil.
func (d *Dir) CredentialCertificate(name string) *tls.Certificate {
	return d.cur.Load().certs[strings.TrimPrefix(name, Prefix)]
}

// CredentialRoots is the CA bundle of SDS secret name: the ca.crt of
// credential "<credentialName>" for "kubernetes://<credentialName>-cacert",
// else that of a credential so named; nil when there is none.
func (d *Dir) CredentialRoots(name string) *x509.CertPool {
	n := strings.TrimPrefix(name, Prefix)
	cur := d.cur.Load()
	if r := cur.roots[n]; r != nil {
		return r
	}
	if base, ok := strings.CutSuffix(n, CASuffix); ok {
		return cur.roots[base]
	}
	return nil
}

// GenericSecret is the generic secret of SDS name
// "kubernetes://<credentialName>/<file>": the file's content without its
// trailing line break, or nil. The caller must not modify it.
func (d *Dir) GenericSecret(name string) []byte {
	cred, file, ok := strings.Cut(strings.TrimPrefix(name, Prefix), "/")
	if !ok {
		return nil
	}
	return d.cur.Load().generic[cred][file]
}

// Names lists the credentials in force with a certificate, for the
// admin endpoint and logs.
func (d *Dir) Names() []string {
	cur := d.cur.Load()
	out := make([]string, 0, len(cur.certs))
	for n := range cur.certs {
		out = append(out, n)
	}
	return out
}
