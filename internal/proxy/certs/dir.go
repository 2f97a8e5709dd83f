package certs

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Files of Options.Dir.
const (
	fileKey   = "key.pem"
	fileChain = "cert-chain.pem"
)

// load reads a stored key and certificate; nil when there are none.
func (m *Manager) load() (*Bundle, error) {
	keyPEM, err := os.ReadFile(filepath.Join(m.opts.Dir, fileKey))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	chainPEM, err := os.ReadFile(filepath.Join(m.opts.Dir, fileChain))
	if err != nil {
		return nil, err
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, fmt.Errorf("%s holds no PEM key", fileKey)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", fileKey, err)
	}
	key, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%s: not an ECDSA key", fileKey)
	}
	var chain []*x509.Certificate
	for rest := chainPEM; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", fileChain, err)
		}
		chain = append(chain, c)
	}
	if len(chain) == 0 {
		return nil, fmt.Errorf("%s holds no certificate", fileChain)
	}
	// When it was received is unknown: its lifetime counts from NotBefore,
	// so one past the renewal time is renewed at once.
	return m.newBundle(chain, key, chain[0].NotBefore)
}

// store writes b's key and chain, readable by the owner only.
func (m *Manager) store(b *Bundle) error {
	if err := os.MkdirAll(m.opts.Dir, 0o700); err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(b.TLS.PrivateKey)
	if err != nil {
		return err
	}
	var chain []byte
	for _, c := range b.Chain {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	// The chain first: a crash between the two leaves a key that does not
	// match, which load refuses, rather than a stale pair.
	if err := writeFile(filepath.Join(m.opts.Dir, fileChain), chain); err != nil {
		return err
	}
	return writeFile(filepath.Join(m.opts.Dir, fileKey), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

func writeFile(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(0o600)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
