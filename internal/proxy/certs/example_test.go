package certs_test

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"

	"weft.dev/weft/internal/proxy/certs"
)

// A mesh TLS server, as the data plane's inbound listener would build it
// for a STRICT port: the current workload certificate at every handshake,
// and the client's SPIFFE ID verified against the trust root instead of a
// host name.
func ExampleManager_serverTLS() {
	var m *certs.Manager // from proxy.Proxy.Certs()
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: m.GetCertificate,
		ClientAuth:     tls.RequireAnyClientCert, // verified below, by SPIFFE ID
		NextProtos:     []string{"h2", "http/1.1"},
		VerifyConnection: func(cs tls.ConnectionState) error {
			id, err := m.VerifyPeer(cs.PeerCertificates, x509.ExtKeyUsageClientAuth)
			if err != nil {
				return fmt.Errorf("client certificate: %w", err)
			}
			_ = id // source.principal
			return nil
		},
	}
	_ = cfg
}

// Waiting for rotations: each Bundle's Changed channel closes when a newer
// one replaces it.
func ExampleBundle_Changed() {
	var m *certs.Manager
	for b := m.Current(); b != nil; b = m.Current() {
		<-b.Changed() // select with a context in real code
		fmt.Println("new certificate, serial", m.Current().Leaf().SerialNumber)
	}
}
