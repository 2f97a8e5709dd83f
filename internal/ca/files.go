package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// The cacerts layout, as Istio names the files.
const (
	FileCACert    = "ca-cert.pem"    // the signing certificate
	FileCAKey     = "ca-key.pem"     // its private key
	FileRootCert  = "root-cert.pem"  // the trust root proxies verify against
	FileCertChain = "cert-chain.pem" // the signing certificate up to the root
)

// loadOrCreate uses the cacerts files in dir, or creates a self-signed
// root there when it holds none of them.
func (c *CA) loadOrCreate(dir string) error {
	var present, missing []string
	for _, f := range []string{FileCACert, FileCAKey, FileRootCert, FileCertChain} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			present = append(present, f)
		} else if errors.Is(err, fs.ErrNotExist) {
			missing = append(missing, f)
		} else {
			return fmt.Errorf("ca: %w", err)
		}
	}
	if len(present) == 0 {
		return c.create(dir)
	}
	for _, f := range missing {
		if f != FileCertChain { // optional: ca-cert.pem alone when the root signed it
			return fmt.Errorf("ca: %s has %s but not %s: a CA directory holds all of ca-cert.pem, ca-key.pem and root-cert.pem (and cert-chain.pem), or none of them",
				dir, strings.Join(present, ", "), strings.Join(missing, ", "))
		}
	}
	return c.load(dir)
}

// create makes a self-signed root and writes it to dir in the cacerts
// layout, readable by the owner only.
func (c *CA) create(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("ca: creating %s: %w", dir, err)
	}
	if err := c.selfSign(); err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(c.key)
	if err != nil {
		return fmt.Errorf("ca: encoding the root key: %w", err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.root.Raw})
	// The key first and the root last: a directory left half-written by a
	// crash is refused on the next start, naming the missing files.
	for _, f := range []struct {
		name string
		data []byte
	}{
		{FileCAKey, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})},
		{FileCACert, certPEM},
		{FileCertChain, certPEM},
		{FileRootCert, certPEM},
	} {
		if err := writeFile(filepath.Join(dir, f.name), f.data); err != nil {
			return fmt.Errorf("ca: %w", err)
		}
	}
	c.mode = "self-signed root, persisted in " + dir
	c.log.Info("created a self-signed root", "dir", dir)
	return nil
}

// writeFile writes data to path with mode 0600, atomically.
func writeFile(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// load reads the cacerts files of dir and checks they fit together: the
// key is ca-cert.pem's, ca-cert.pem may sign certificates, and it chains
// up to root-cert.pem through cert-chain.pem.
func (c *CA) load(dir string) error {
	path := func(f string) string { return filepath.Join(dir, f) }
	signers, err := readCerts(path(FileCACert))
	if err != nil {
		return err
	}
	roots, err := readCerts(path(FileRootCert))
	if err != nil {
		return err
	}
	var chain []*x509.Certificate
	if _, err := os.Stat(path(FileCertChain)); err == nil {
		if chain, err = readCerts(path(FileCertChain)); err != nil {
			return err
		}
	}
	key, err := readKey(path(FileCAKey))
	if err != nil {
		return err
	}
	if fi, err := os.Stat(path(FileCAKey)); err == nil && fi.Mode().Perm()&0o077 != 0 {
		c.log.Warn("the CA key is readable by others; chmod 600 it", "file", path(FileCAKey), "mode", fi.Mode().Perm().String())
	}
	signer, root := signers[0], roots[0]
	if len(roots) > 1 {
		return fmt.Errorf("ca: %s holds %d certificates; want the one root (several roots are not supported yet)", path(FileRootCert), len(roots))
	}
	if !publicKeysEqual(key.Public(), signer.PublicKey) {
		return fmt.Errorf("ca: %s is not the key of %s", path(FileCAKey), path(FileCACert))
	}
	if !signer.IsCA || signer.KeyUsage != 0 && signer.KeyUsage&x509.KeyUsageCertSign == 0 {
		return fmt.Errorf("ca: %s (%s) is not a CA certificate that may sign certificates", path(FileCACert), signer.Subject)
	}
	if err := root.CheckSignatureFrom(root); err != nil {
		return fmt.Errorf("ca: %s (%s) is not a self-signed root: %w", path(FileRootCert), root.Subject, err)
	}
	// The certificates between the signer and the root: cert-chain.pem
	// without the signer and the root, which may or may not be listed.
	var between []*x509.Certificate
	inter := x509.NewCertPool()
	for _, ic := range chain {
		if ic.Equal(signer) || ic.Equal(root) {
			continue
		}
		between = append(between, ic)
		inter.AddCert(ic)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root)
	if _, err := signer.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("ca: %s (%s) does not chain up to %s (%s) through %s: %w",
			path(FileCACert), signer.Subject, path(FileRootCert), root.Subject, path(FileCertChain), err)
	}
	c.signer, c.key, c.root = signer, key, root
	c.chain = nil
	if !signer.Equal(root) {
		c.chain = append([]*x509.Certificate{signer}, between...)
		c.mode = "plug-in CA from " + dir
	} else {
		c.mode = "self-signed root, persisted in " + dir
	}
	return nil
}

// readCerts reads the PEM certificates of a file, at least one.
func readCerts(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	var out []*x509.Certificate
	for n := 1; ; n++ {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("ca: %s: PEM block %d: %w", path, n, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("ca: %s holds no PEM certificate", path)
	}
	return out, nil
}

// readKey reads a PEM private key: PKCS#8, SEC 1 (EC) or PKCS#1 (RSA).
func readKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, fmt.Errorf("ca: %s holds no PEM private key", path)
		}
		var k any
		switch b.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		default:
			continue // EC PARAMETERS and the like
		}
		if err != nil {
			return nil, fmt.Errorf("ca: %s: %s: %w", path, b.Type, err)
		}
		switch k := k.(type) {
		case *ecdsa.PrivateKey:
			return k, nil
		case *rsa.PrivateKey:
			return k, nil
		default:
			return nil, fmt.Errorf("ca: %s: key type %T is not supported; use ECDSA or RSA", path, k)
		}
	}
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ae, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ae.Equal(b)
}
