// Package tlssocket is Envoy's TLS transport socket
// (envoy.transport_sockets.tls) for the Go proxy: it compiles a
// DownstreamTlsContext (a listener's filter chain) or an
// UpstreamTlsContext (a cluster's, or one of its transport_socket_matches)
// into crypto/tls configurations, once, at translation time.
//
// Certificates and trust roots named by SDS secrets come from Secrets, the
// proxy's certificate manager, which serves Istio's two names: "default"
// (the workload certificate and key) and "ROOTCA" (the mesh's root),
// whatever the SdsSecretConfig's sds_config says. They are read through
// callbacks on every handshake, so a rotated certificate is presented on
// the next new connection and connections already established keep
// theirs. Files and inline data sources are read once, when compiling. A
// file that cannot be used (missing, unreadable, not PEM) is the host's
// state, not a configuration mistake: the context compiles, reports it
// (Broken), and fails every handshake that needs it, so the rest of the
// configuration still applies — an Envoy would refuse just that cluster
// or listener.
//
// A peer validated against ROOTCA is a mesh workload: its chain must lead
// to the mesh root and its leaf carry exactly one SPIFFE ID
// (internal/spiffe), which subject_alt_name matchers then check. A peer
// validated against a trusted_ca file (DestinationRule SIMPLE/MUTUAL) is
// checked as Envoy does: chain, SAN matchers, CRL.
//
// Everything compiled here is immutable and safe for concurrent use.
package tlssocket

import (
	"cmp"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"weft.dev/weft/internal/proxy/xdswire"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rawbuffer "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"weft.dev/weft/internal/proxy/matcher"
	"weft.dev/weft/internal/spiffe"
)

// Transport socket names.
const (
	Name          = "envoy.transport_sockets.tls"
	RawBufferName = "envoy.transport_sockets.raw_buffer"
)

// SDS secret names the proxy serves (Istio's).
const (
	SecretDefault = "default"
	SecretRootCA  = "ROOTCA"
)

// Secrets is where the SDS secrets come from: the proxy's certificate
// manager. Methods are called on every handshake, from any goroutine,
// and must not block.
type Secrets interface {
	// Certificate is the current workload certificate with its key (SDS
	// "default"), or nil while the proxy has none.
	Certificate() *tls.Certificate
	// Roots is the mesh's trust root (SDS "ROOTCA"), or nil when the
	// proxy has none.
	Roots() *x509.CertPool
}

// Credentials is what a gateway proxy's Secrets also serve: the SDS
// secrets a Gateway server names by credentialName, as Istio spells them
// ("kubernetes://<name>" for the certificate and key,
// "kubernetes://<name>-cacert" for the CA that client certificates must
// chain to). Methods are called on every handshake, from any goroutine,
// and must not block.
type Credentials interface {
	// CredentialCertificate is the certificate with its key of secret
	// name, or nil while the proxy has none.
	CredentialCertificate(name string) *tls.Certificate
	// CredentialRoots is the CA bundle of secret name, or nil.
	CredentialRoots(name string) *x509.CertPool
}

// noSecrets is what a proxy without a certificate manager has: no
// certificate, no root. A handshake that needs them fails.
type noSecrets struct{}

func (noSecrets) Certificate() *tls.Certificate { return nil }
func (noSecrets) Roots() *x509.CertPool         { return nil }

func orNone(s Secrets) Secrets {
	if s == nil {
		return noSecrets{}
	}
	return s
}

// Socket is a parsed transport_socket: TLS with its context, or
// plaintext (raw_buffer, or none).
type Socket struct {
	// Downstream or Upstream is set for TLS, as the socket's side; both
	// are nil for plaintext.
	Downstream *tlsv3.DownstreamTlsContext
	Upstream   *tlsv3.UpstreamTlsContext
}

// ParseSocket reads a transport_socket; upstream says which TLS context
// it must hold. nil means plaintext, as in Envoy. Errors name the field
// inside ts that is wrong.
func ParseSocket(ts *core.TransportSocket, upstream bool) (Socket, error) {
	if ts == nil {
		return Socket{}, nil
	}
	tc := ts.GetTypedConfig()
	switch {
	case tc == nil && ts.GetName() == RawBufferName:
		return Socket{}, nil
	case tc == nil:
		return Socket{}, fmt.Errorf("typed_config: missing (transport socket %q)", ts.GetName())
	case tc.MessageIs((*rawbuffer.RawBuffer)(nil)):
		return Socket{}, nil
	case upstream && tc.MessageIs((*tlsv3.UpstreamTlsContext)(nil)):
		var c tlsv3.UpstreamTlsContext
		if err := xdswire.UnmarshalAny(tc, &c); err != nil {
			return Socket{}, fmt.Errorf("typed_config: %w", err)
		}
		return Socket{Upstream: &c}, nil
	case !upstream && tc.MessageIs((*tlsv3.DownstreamTlsContext)(nil)):
		var c tlsv3.DownstreamTlsContext
		if err := xdswire.UnmarshalAny(tc, &c); err != nil {
			return Socket{}, fmt.Errorf("typed_config: %w", err)
		}
		return Socket{Downstream: &c}, nil
	}
	return Socket{}, fmt.Errorf("typed_config: %s is not supported here (transport socket %q)", tc.GetTypeUrl(), ts.GetName())
}

// Principal is a certificate's identity as Envoy and Istio name it
// (source.principal, the *_principal metric labels): its first URI SAN
// (a SPIFFE ID), else its first DNS SAN, else its subject.
func Principal(c *x509.Certificate) string {
	switch {
	case c == nil:
		return ""
	case len(c.URIs) > 0:
		return c.URIs[0].String()
	case len(c.DNSNames) > 0:
		return c.DNSNames[0]
	}
	return c.Subject.String()
}

// Hash is the hex SHA-256 of a certificate's DER encoding (XFCC Hash=).
func Hash(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// ---- common_tls_context -------------------------------------------------

// common is a compiled CommonTlsContext: what both sides share.
type common struct {
	minVersion, maxVersion uint16
	ciphers                []uint16
	curves                 []tls.CurveID
	alpn                   []string
	// Own certificate: from SDS "default" (sds), a named credential
	// (named, with sds), or static (files).
	sds    bool
	named  string
	static []tls.Certificate
	// Peer validation; nil verifies nothing.
	v *verifier
	// broken, when set, is why this context cannot make a handshake (a
	// file it names, fileError): every handshake fails with it.
	broken error
}

func compileCommon(c *tlsv3.CommonTlsContext, s Secrets, usage x509.ExtKeyUsage) (*common, error) {
	out := &common{minVersion: tls.VersionTLS12, maxVersion: tls.VersionTLS13, alpn: c.GetAlpnProtocols()}
	if err := out.params(c.GetTlsParams()); err != nil {
		return nil, fmt.Errorf("tls_params: %w", err)
	}
	for i, sc := range c.GetTlsCertificateSdsSecretConfigs() {
		if i > 0 {
			return nil, fmt.Errorf("tls_certificate_sds_secret_configs: one secret is supported, have %d", len(c.GetTlsCertificateSdsSecretConfigs()))
		}
		if n := sc.GetName(); n != SecretDefault {
			if _, ok := s.(Credentials); !ok || n == SecretRootCA {
				return nil, fmt.Errorf("tls_certificate_sds_secret_configs[0]: secret %q: the proxy serves only %q (its workload certificate) and %q, and credentials by name when it runs as a gateway (from its credential directory or the control plane)", n, SecretDefault, SecretRootCA)
			}
			out.named = n
		}
		out.sds = true
	}
	for i, tc := range c.GetTlsCertificates() {
		if out.sds {
			return nil, errors.New("tls_certificates: not together with tls_certificate_sds_secret_configs")
		}
		cert, err := loadCertificate(tc)
		var fe *fileError
		switch {
		case errors.As(err, &fe):
			out.broken = cmp.Or(out.broken, fmt.Errorf("tls_certificates[%d]: %w", i, err))
			continue
		case err != nil:
			return nil, fmt.Errorf("tls_certificates[%d]: %w", i, err)
		}
		out.static = append(out.static, cert)
	}
	switch {
	case c.GetTlsCertificateProviderInstance() != nil, c.GetCustomTlsCertificateSelector() != nil,
		c.GetTlsCertificateCertificateProvider() != nil, c.GetTlsCertificateCertificateProviderInstance() != nil: //nolint:staticcheck // deprecated fields still refused
		return nil, errors.New("certificate providers are not supported: use tls_certificate_sds_secret_configs or tls_certificates")
	case c.GetCustomHandshaker() != nil:
		return nil, errors.New("custom_handshaker: not supported")
	}
	v, err := compileValidation(c, s, usage)
	var fe *fileError
	if errors.As(err, &fe) {
		out.broken = cmp.Or(out.broken, err)
		v, err = &verifier{usage: usage}, nil
	}
	if err != nil {
		return nil, err
	}
	out.v = v
	return out, nil
}

func (c *common) params(p *tlsv3.TlsParameters) error {
	if p == nil {
		return nil
	}
	var err error
	if v := p.GetTlsMinimumProtocolVersion(); v != tlsv3.TlsParameters_TLS_AUTO {
		if c.minVersion, err = tlsVersion(v); err != nil {
			return fmt.Errorf("tls_minimum_protocol_version: %w", err)
		}
	}
	if v := p.GetTlsMaximumProtocolVersion(); v != tlsv3.TlsParameters_TLS_AUTO {
		if c.maxVersion, err = tlsVersion(v); err != nil {
			return fmt.Errorf("tls_maximum_protocol_version: %w", err)
		}
	}
	if c.minVersion > c.maxVersion {
		return errors.New("tls_minimum_protocol_version is above tls_maximum_protocol_version")
	}
	for i, name := range p.GetCipherSuites() {
		// Envoy's equal-preference groups, "[A|B]", are a preference hint.
		for n := range strings.SplitSeq(strings.Trim(name, "[]"), "|") {
			id, ok := cipherSuites[n]
			if !ok {
				return fmt.Errorf("cipher_suites[%d]: %q is not a cipher suite the proxy knows (OpenSSL names, e.g. ECDHE-ECDSA-AES128-GCM-SHA256)", i, n)
			}
			c.ciphers = append(c.ciphers, id)
		}
	}
	for i, name := range p.GetEcdhCurves() {
		id, ok := curves[name]
		if !ok {
			return fmt.Errorf("ecdh_curves[%d]: %q is not supported (X25519, P-256, P-384, P-521, X25519MLKEM768)", i, name)
		}
		c.curves = append(c.curves, id)
	}
	if len(p.GetSignatureAlgorithms()) > 0 {
		return errors.New("signature_algorithms: not supported")
	}
	return nil
}

func tlsVersion(v tlsv3.TlsParameters_TlsProtocol) (uint16, error) {
	switch v {
	case tlsv3.TlsParameters_TLSv1_0:
		return tls.VersionTLS10, nil
	case tlsv3.TlsParameters_TLSv1_1:
		return tls.VersionTLS11, nil
	case tlsv3.TlsParameters_TLSv1_2:
		return tls.VersionTLS12, nil
	case tlsv3.TlsParameters_TLSv1_3:
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("unknown version %v", v)
}

// cipherSuites maps the OpenSSL names Envoy takes to Go's TLS 1.2 suites
// (TLS 1.3's are not configurable, in Envoy or Go).
var cipherSuites = map[string]uint16{
	"ECDHE-ECDSA-AES128-GCM-SHA256": tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	"ECDHE-RSA-AES128-GCM-SHA256":   tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	"ECDHE-ECDSA-AES256-GCM-SHA384": tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	"ECDHE-RSA-AES256-GCM-SHA384":   tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	"ECDHE-ECDSA-CHACHA20-POLY1305": tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	"ECDHE-RSA-CHACHA20-POLY1305":   tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	"ECDHE-ECDSA-AES128-SHA":        tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
	"ECDHE-RSA-AES128-SHA":          tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
	"ECDHE-ECDSA-AES256-SHA":        tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
	"ECDHE-RSA-AES256-SHA":          tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
	"AES128-GCM-SHA256":             tls.TLS_RSA_WITH_AES_128_GCM_SHA256,
	"AES256-GCM-SHA384":             tls.TLS_RSA_WITH_AES_256_GCM_SHA384,
	"AES128-SHA":                    tls.TLS_RSA_WITH_AES_128_CBC_SHA,
	"AES256-SHA":                    tls.TLS_RSA_WITH_AES_256_CBC_SHA,
}

// KnownCipherSuite reports whether name is an OpenSSL cipher suite name
// the proxy accepts in cipher_suites.
func KnownCipherSuite(name string) bool {
	_, ok := cipherSuites[name]
	return ok
}

// KnownCurve reports whether name is a key exchange group the proxy's
// ecdh_curves accepts (Envoy's names: X25519, P-256, P-384, P-521,
// X25519MLKEM768).
func KnownCurve(name string) bool {
	_, ok := curves[name]
	return ok
}

var curves = map[string]tls.CurveID{
	"X25519":         tls.X25519,
	"P-256":          tls.CurveP256,
	"P-384":          tls.CurveP384,
	"P-521":          tls.CurveP521,
	"X25519MLKEM768": tls.X25519MLKEM768,
}

// base is the tls.Config fields both sides set from c.
func (c *common) base() *tls.Config {
	return &tls.Config{
		MinVersion:       c.minVersion,
		MaxVersion:       c.maxVersion,
		CipherSuites:     c.ciphers,
		CurvePreferences: c.curves,
		NextProtos:       c.alpn,
	}
}

// ---- data sources -------------------------------------------------------

// fileError is a file a context names that could not be used: missing,
// unreadable, or not what it should hold. It is the proxy host's state,
// not a mistake in the configuration, so it does not refuse the
// configuration: the handshakes that need the file fail instead (Broken),
// and the rest of the configuration applies.
type fileError struct{ err error }

func (e *fileError) Error() string { return e.err.Error() }
func (e *fileError) Unwrap() error { return e.err }

// onFile makes err a fileError when ds is a file.
func onFile(ds *core.DataSource, err error) error {
	if _, ok := ds.GetSpecifier().(*core.DataSource_Filename); ok && err != nil {
		return &fileError{err}
	}
	return err
}

// readSource reads a DataSource: a file, or inline bytes or string.
func readSource(ds *core.DataSource) ([]byte, error) {
	switch s := ds.GetSpecifier().(type) {
	case *core.DataSource_Filename:
		b, err := os.ReadFile(s.Filename)
		if err != nil {
			return nil, &fileError{err}
		}
		return b, nil
	case *core.DataSource_InlineBytes:
		return s.InlineBytes, nil
	case *core.DataSource_InlineString:
		return []byte(s.InlineString), nil
	case nil:
		return nil, errors.New("empty data source")
	default:
		return nil, fmt.Errorf("data source %T is not supported (filename, inline_bytes, inline_string)", s)
	}
}

func loadCertificate(tc *tlsv3.TlsCertificate) (tls.Certificate, error) {
	if tc.GetPkcs12() != nil || tc.GetPrivateKeyProvider() != nil || tc.GetPassword() != nil || tc.GetWatchedDirectory() != nil {
		return tls.Certificate{}, errors.New("only certificate_chain and private_key are supported")
	}
	chain, err := readSource(tc.GetCertificateChain())
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("certificate_chain: %w", err)
	}
	key, err := readSource(tc.GetPrivateKey())
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("private_key: %w", err)
	}
	cert, err := tls.X509KeyPair(chain, key)
	if err != nil {
		return tls.Certificate{}, onFile(tc.GetCertificateChain(), onFile(tc.GetPrivateKey(), err))
	}
	return cert, nil
}

// ---- validation ---------------------------------------------------------

// verifier checks a peer's chain, as a CertificateValidationContext says.
type verifier struct {
	// roots returns the trust roots; nil roots (the function or its
	// result) verify no chain.
	roots func() *x509.CertPool
	// mesh: the roots are the mesh's (SDS ROOTCA): the leaf must carry a
	// SPIFFE ID.
	mesh         bool
	usage        x509.ExtKeyUsage
	sans         []sanMatcher // any SAN matching any matcher; none: no check
	crls         []*x509.RevocationList
	allowExpired bool
}

type sanKind uint8

const (
	sanAny sanKind = iota // match_subject_alt_names: every SAN type
	sanDNS
	sanURI
	sanEmail
	sanIP
)

type sanMatcher struct {
	kind  sanKind
	m     matcher.String
	exact string // the exact value, for wildcard DNS SANs; "" for other patterns
}

func newSANMatcher(k sanKind, m *matcherv3.StringMatcher) (sanMatcher, error) {
	sm, err := matcher.CompileString(m)
	if err != nil {
		return sanMatcher{}, err
	}
	return sanMatcher{kind: k, m: sm, exact: m.GetExact()}, nil
}

func compileValidation(c *tlsv3.CommonTlsContext, s Secrets, usage x509.ExtKeyUsage) (*verifier, error) {
	var cvc *tlsv3.CertificateValidationContext
	var sdsRoot *tlsv3.SdsSecretConfig
	field := "validation_context"
	switch vc := c.GetValidationContextType().(type) {
	case nil:
		return nil, nil
	case *tlsv3.CommonTlsContext_ValidationContext:
		cvc = vc.ValidationContext
	case *tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig:
		sdsRoot, field = vc.ValidationContextSdsSecretConfig, "validation_context_sds_secret_config"
	case *tlsv3.CommonTlsContext_CombinedValidationContext:
		cvc, sdsRoot = vc.CombinedValidationContext.GetDefaultValidationContext(), vc.CombinedValidationContext.GetValidationContextSdsSecretConfig()
		field = "combined_validation_context"
		if sdsRoot == nil {
			return nil, fmt.Errorf("%s.validation_context_sds_secret_config: missing", field)
		}
		if vc.CombinedValidationContext.GetValidationContextCertificateProviderInstance() != nil { //nolint:staticcheck // refused
			return nil, fmt.Errorf("%s: certificate providers are not supported", field)
		}
		field += ".default_validation_context"
	default:
		return nil, fmt.Errorf("%T: not supported (validation_context, validation_context_sds_secret_config, combined_validation_context)", vc)
	}
	v := &verifier{usage: usage}
	if sdsRoot != nil {
		creds, isCreds := s.(Credentials)
		switch n := sdsRoot.GetName(); {
		case n == SecretRootCA:
			s = orNone(s)
			v.roots, v.mesh = s.Roots, true
		case isCreds && n != SecretDefault:
			// A gateway credential's CA: client certificates are checked
			// as against a trusted_ca, read at every handshake.
			v.roots = func() *x509.CertPool { return creds.CredentialRoots(n) }
		default:
			return nil, fmt.Errorf("%s: secret %q: the proxy serves only %q (the mesh root) and %q, and credentials by name when it runs as a gateway (from its credential directory or the control plane)", strings.TrimSuffix(field, ".default_validation_context"), n, SecretRootCA, SecretDefault)
		}
	}
	if cvc == nil {
		return v, nil
	}
	switch {
	case len(cvc.GetVerifyCertificateSpki()) > 0:
		return nil, fmt.Errorf("%s.verify_certificate_spki: not supported", field)
	case len(cvc.GetVerifyCertificateHash()) > 0:
		return nil, fmt.Errorf("%s.verify_certificate_hash: not supported", field)
	case cvc.GetCustomValidatorConfig() != nil:
		return nil, fmt.Errorf("%s.custom_validator_config: not supported", field)
	case cvc.GetCaCertificateProviderInstance() != nil, cvc.GetWatchedDirectory() != nil:
		return nil, fmt.Errorf("%s: certificate providers and watched directories are not supported", field)
	case cvc.GetTrustChainVerification() != tlsv3.CertificateValidationContext_VERIFY_TRUST_CHAIN:
		return nil, fmt.Errorf("%s.trust_chain_verification: only VERIFY_TRUST_CHAIN is supported", field)
	case cvc.GetRequireSignedCertificateTimestamp().GetValue():
		return nil, fmt.Errorf("%s.require_signed_certificate_timestamp: not supported", field)
	}
	v.allowExpired = cvc.GetAllowExpiredCertificate()
	if ca := cvc.GetTrustedCa(); ca != nil {
		if sdsRoot != nil {
			return nil, fmt.Errorf("%s.trusted_ca: not together with the %q secret", field, SecretRootCA)
		}
		pem, err := readSource(ca)
		if err != nil {
			return nil, fmt.Errorf("%s.trusted_ca: %w", field, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s.trusted_ca: %w", field, onFile(ca, errors.New("no PEM certificate in it")))
		}
		v.roots = func() *x509.CertPool { return pool }
	} else if cvc.GetSystemRootCerts() != nil && sdsRoot == nil {
		pool, err := x509.SystemCertPool()
		if err != nil {
			return nil, fmt.Errorf("%s.system_root_certs: %w", field, err)
		}
		v.roots = func() *x509.CertPool { return pool }
	}
	if crl := cvc.GetCrl(); crl != nil {
		b, err := readSource(crl)
		if err != nil {
			return nil, fmt.Errorf("%s.crl: %w", field, err)
		}
		if v.crls, err = parseCRLs(b); err != nil {
			return nil, fmt.Errorf("%s.crl: %w", field, onFile(crl, err))
		}
	}
	for i, m := range cvc.GetMatchSubjectAltNames() {
		sm, err := newSANMatcher(sanAny, m)
		if err != nil {
			return nil, fmt.Errorf("%s.match_subject_alt_names[%d]: %w", field, i, err)
		}
		v.sans = append(v.sans, sm)
	}
	for i, m := range cvc.GetMatchTypedSubjectAltNames() {
		var k sanKind
		switch m.GetSanType() {
		case tlsv3.SubjectAltNameMatcher_DNS:
			k = sanDNS
		case tlsv3.SubjectAltNameMatcher_URI:
			k = sanURI
		case tlsv3.SubjectAltNameMatcher_EMAIL:
			k = sanEmail
		case tlsv3.SubjectAltNameMatcher_IP_ADDRESS:
			k = sanIP
		default:
			return nil, fmt.Errorf("%s.match_typed_subject_alt_names[%d].san_type: %v is not supported", field, i, m.GetSanType())
		}
		sm, err := newSANMatcher(k, m.GetMatcher())
		if err != nil {
			return nil, fmt.Errorf("%s.match_typed_subject_alt_names[%d].matcher: %w", field, i, err)
		}
		v.sans = append(v.sans, sm)
	}
	return v, nil
}

func parseCRLs(b []byte) ([]*x509.RevocationList, error) {
	var out []*x509.RevocationList
	for {
		blk, rest := pem.Decode(b)
		if blk == nil {
			break
		}
		b = rest
		if blk.Type != "X509 CRL" {
			continue
		}
		l, err := x509.ParseRevocationList(blk.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM X509 CRL in it")
	}
	return out, nil
}

// verify checks chain (leaf first) and returns the leaf's SPIFFE ID when
// the roots are the mesh's. name, when set, must be a DNS SAN of the leaf
// (auto_sni_san_validation).
func (v *verifier) verify(chain []*x509.Certificate, name string) (spiffe.ID, error) {
	if len(chain) == 0 {
		return spiffe.ID{}, errors.New("no certificate")
	}
	leaf := chain[0]
	var id spiffe.ID
	var roots *x509.CertPool
	if v.roots != nil {
		roots = v.roots()
	}
	now := time.Now()
	if v.allowExpired {
		now = leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2)
	}
	switch {
	case v.mesh:
		if roots == nil {
			return id, errors.New("the proxy has no mesh root to verify it against")
		}
		var err error
		if id, err = spiffe.Verify(chain, roots, now, v.usage); err != nil {
			return id, err
		}
	case roots != nil:
		inter := x509.NewCertPool()
		for _, c := range chain[1:] {
			inter.AddCert(c)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{v.usage}}); err != nil {
			return id, err
		}
	}
	for _, l := range v.crls {
		for _, c := range chain {
			if l.Issuer.String() != c.Issuer.String() {
				continue
			}
			for _, e := range l.RevokedCertificateEntries {
				if e.SerialNumber.Cmp(c.SerialNumber) == 0 {
					return id, fmt.Errorf("certificate serial %s is revoked", c.SerialNumber.Text(16))
				}
			}
		}
	}
	if len(v.sans) > 0 && !v.matchSANs(leaf) {
		return id, fmt.Errorf("no subject alternative name of the certificate (%s) matches the ones allowed", strings.Join(sans(leaf), ", "))
	}
	if name != "" {
		if err := leaf.VerifyHostname(name); err != nil {
			return id, err
		}
	}
	return id, nil
}

func (v *verifier) matchSANs(leaf *x509.Certificate) bool {
	for i := range v.sans {
		m := &v.sans[i]
		if m.kind == sanAny || m.kind == sanURI {
			for _, u := range leaf.URIs {
				if m.m.Match(u.String()) {
					return true
				}
			}
		}
		if m.kind == sanAny || m.kind == sanDNS {
			for _, d := range leaf.DNSNames {
				if m.m.Match(d) || dnsWildcardMatch(d, m.exact) {
					return true
				}
			}
		}
		if m.kind == sanAny || m.kind == sanEmail {
			for _, e := range leaf.EmailAddresses {
				if m.m.Match(e) {
					return true
				}
			}
		}
		if m.kind == sanAny || m.kind == sanIP {
			for _, ip := range leaf.IPAddresses {
				if m.m.Match(ip.String()) {
					return true
				}
			}
		}
	}
	return false
}

// dnsWildcardMatch: a certificate's "*.example.com" matches an exact
// matcher's "api.example.com", as Envoy's DNS SAN matching does.
func dnsWildcardMatch(san, want string) bool {
	rest, ok := strings.CutPrefix(san, "*.")
	if !ok || want == "" {
		return false
	}
	_, tail, found := strings.Cut(want, ".")
	return found && strings.EqualFold(tail, rest)
}

func sans(c *x509.Certificate) []string {
	var out []string
	for _, u := range c.URIs {
		out = append(out, u.String())
	}
	out = append(out, c.DNSNames...)
	out = append(out, c.EmailAddresses...)
	for _, ip := range c.IPAddresses {
		out = append(out, ip.String())
	}
	if len(out) == 0 {
		return []string{"none"}
	}
	return out
}

// ---- server -------------------------------------------------------------

// Server is a compiled DownstreamTlsContext.
type Server struct {
	proto  *tlsv3.DownstreamTlsContext
	cfg    *tls.Config
	broken error
}

// NewServer compiles ctx for a listener's filter chain. The server's
// certificate comes from s at every handshake (SDS "default"), or from the
// context's static tls_certificates. Errors name the field of ctx that is
// wrong.
func NewServer(ctx *tlsv3.DownstreamTlsContext, s Secrets) (*Server, error) {
	s = orNone(s)
	c, err := compileCommon(ctx.GetCommonTlsContext(), s, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return nil, fmt.Errorf("common_tls_context.%w", err)
	}
	if !c.sds && len(c.static) == 0 && c.broken == nil {
		return nil, errors.New("common_tls_context: a server needs a certificate (tls_certificate_sds_secret_configs or tls_certificates)")
	}
	switch {
	case ctx.GetRequireSni().GetValue():
		return nil, errors.New("require_sni: not supported")
	case ctx.GetSessionTicketKeysType() != nil:
		return nil, errors.New("session_ticket_keys: not supported (the proxy makes and rotates its own)")
	case ctx.GetOcspStaplePolicy() != tlsv3.DownstreamTlsContext_LENIENT_STAPLING:
		return nil, errors.New("ocsp_staple_policy: not supported")
	}
	cfg := c.base()
	cfg.SessionTicketsDisabled = ctx.GetDisableStatelessSessionResumption()
	switch {
	case c.named != "":
		creds, name := s.(Credentials), c.named
		cfg.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			if cert := creds.CredentialCertificate(name); cert != nil {
				return cert, nil
			}
			return nil, fmt.Errorf("the gateway has no certificate for credential %q (SDS): neither in its credential directory nor sent by the control plane (a Secret of the gateway's namespace), or unusable", name)
		}
	case c.sds:
		cfg.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			if cert := s.Certificate(); cert != nil {
				return cert, nil
			}
			return nil, errors.New("the proxy has no valid workload certificate (SDS \"default\"): none yet, or it expired")
		}
	default:
		cfg.Certificates = c.static
	}
	require := ctx.GetRequireClientCertificate().GetValue()
	switch {
	case require:
		cfg.ClientAuth = tls.RequireAnyClientCert // verified below, by VerifyConnection
	case c.v != nil:
		cfg.ClientAuth = tls.RequestClientCert
	default:
		cfg.ClientAuth = tls.NoClientCert
	}
	if v := c.v; v != nil {
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return nil // not required (RequireAnyClientCert refuses before)
			}
			if _, err := v.verify(cs.PeerCertificates, ""); err != nil {
				return fmt.Errorf("client certificate: %w", err)
			}
			return nil
		}
	}
	if len(cfg.NextProtos) > 0 {
		cfg.GetConfigForClient = withoutALPNMismatch(cfg)
	}
	if err := c.broken; err != nil {
		err = fmt.Errorf("common_tls_context.%w", err)
		cfg.Certificates = nil
		cfg.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return nil, err }
		return &Server{proto: ctx, cfg: cfg, broken: err}, nil
	}
	return &Server{proto: ctx, cfg: cfg}, nil
}

// withoutALPNMismatch makes a server of cfg take a client whose ALPN
// offers none of cfg's protocols, as Envoy does (BoringSSL's selection
// callback answers "no acknowledgement" and the handshake goes on without
// a protocol), where Go refuses the handshake: for such a ClientHello
// the handshake runs on a copy of cfg without NextProtos. An Istio
// sidecar offering only "istio-peer-exchange" and "istio" to a TCP port
// is such a client. Other handshakes use cfg itself.
func withoutALPNMismatch(cfg *tls.Config) func(*tls.ClientHelloInfo) (*tls.Config, error) {
	var (
		once   sync.Once
		noALPN *tls.Config
	)
	return func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if len(hello.SupportedProtos) == 0 {
			return nil, nil
		}
		for _, p := range hello.SupportedProtos {
			// Go lets an http/1.1 client on an h2 server go on too.
			if slices.Contains(cfg.NextProtos, p) || p == "http/1.1" && slices.Contains(cfg.NextProtos, "h2") {
				return nil, nil
			}
		}
		once.Do(func() {
			noALPN = cfg.Clone()
			noALPN.NextProtos = nil
			noALPN.GetConfigForClient = nil
		})
		return noALPN, nil
	}
}

// Broken is why the server cannot make handshakes (a file its context
// names could not be used: all its handshakes fail), or nil.
func (s *Server) Broken() error { return s.broken }

// Config is the server's tls.Config, for tls.Server. Shared: the caller
// must not modify it.
func (s *Server) Config() *tls.Config { return s.cfg }

// Same reports whether ctx is the context s was compiled from, so a
// translation can keep s (and its session ticket keys) across updates.
func (s *Server) Same(ctx *tlsv3.DownstreamTlsContext) bool {
	return s != nil && xdswire.Equal(s.proto, ctx)
}

// ---- client -------------------------------------------------------------

// Client is a compiled UpstreamTlsContext: the template of the TLS
// configuration of every connection to one cluster's endpoints that
// use it.
type Client struct {
	c       *common
	s       Secrets
	sni     string
	autoSNI bool // SNI from the request's host (auto_host_sni, or the cluster's auto_sni)
	autoSAN bool // the server's certificate must be for that host
	// sessions is false when max_session_keys is 0: no resumption.
	sessions bool
}

// NewClient compiles ctx. autoSNI and autoSAN are the cluster's
// upstream_http_protocol_options auto_sni and auto_san_validation, which
// the context's auto_host_sni and auto_sni_san_validation also set.
// Errors name the field of ctx that is wrong.
func NewClient(ctx *tlsv3.UpstreamTlsContext, s Secrets, autoSNI, autoSAN bool) (*Client, error) {
	s = orNone(s)
	c, err := compileCommon(ctx.GetCommonTlsContext(), s, x509.ExtKeyUsageServerAuth)
	if err != nil {
		return nil, fmt.Errorf("common_tls_context.%w", err)
	}
	if ctx.GetAllowRenegotiation() {
		return nil, errors.New("allow_renegotiation: not supported")
	}
	cl := &Client{c: c, s: s, sni: ctx.GetSni(), sessions: true,
		autoSNI: autoSNI || ctx.GetAutoHostSni(), autoSAN: autoSAN || ctx.GetAutoSniSanValidation()}
	if cl.sni != "" {
		cl.autoSNI = false // an explicit sni wins, as in Envoy
	}
	if m := ctx.GetMaxSessionKeys(); m != nil && m.GetValue() == 0 {
		cl.sessions = false
	}
	return cl, nil
}

// Broken is why the client cannot make handshakes (a file its context
// names could not be used: all its handshakes fail), or nil.
func (c *Client) Broken() error {
	if c.c.broken != nil {
		return fmt.Errorf("common_tls_context.%w", c.c.broken)
	}
	return nil
}

// SNI is the configured server name ("" when none, or auto).
func (c *Client) SNI() string { return c.sni }

// AutoSNI reports whether the server name is the request's host.
func (c *Client) AutoSNI() bool { return c.autoSNI }

// ALPN is the configured ALPN list.
func (c *Client) ALPN() []string { return c.c.alpn }

// Config returns the TLS configuration of connections to one endpoint:
// serverName is the SNI to send ("" sends none), alpn the protocols to
// offer, cache the endpoint's session cache (nil: no resumption). The
// client certificate comes from the Secrets (SDS "default") at each
// handshake, or from the context's static tls_certificates.
func (c *Client) Config(serverName string, alpn []string, cache tls.ClientSessionCache) *tls.Config {
	cfg := c.c.base()
	cfg.ServerName = serverName
	cfg.NextProtos = alpn
	if c.sessions {
		cfg.ClientSessionCache = cache
	}
	// Verified by VerifyConnection: by SPIFFE ID against the mesh root,
	// or as the validation context says; never by Go's host name check.
	cfg.InsecureSkipVerify = true //nolint:gosec // VerifyConnection verifies.
	s := c.s
	switch {
	case c.c.named != "":
		// A credential as a client certificate (an egress gateway
		// originating mutual TLS with a named credential).
		creds, name := s.(Credentials), c.c.named
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if cert := creds.CredentialCertificate(name); cert != nil {
				return cert, nil
			}
			return &tls.Certificate{}, nil
		}
	case c.c.sds:
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if cert := s.Certificate(); cert != nil {
				return cert, nil
			}
			return &tls.Certificate{}, nil // none yet: the server decides
		}
	case len(c.c.static) > 0:
		cfg.Certificates = c.c.static
	}
	var name string
	if c.autoSAN {
		name = serverName
		if h, _, err := net.SplitHostPort(name); err == nil {
			name = h
		}
	}
	if err := c.Broken(); err != nil {
		cfg.VerifyConnection = func(tls.ConnectionState) error { return err }
	} else if v := c.c.v; v != nil {
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if _, err := v.verify(cs.PeerCertificates, name); err != nil {
				return fmt.Errorf("server certificate: %w", err)
			}
			return nil
		}
	} else if name != "" {
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("server certificate: none")
			}
			return cs.PeerCertificates[0].VerifyHostname(name)
		}
	}
	return cfg
}

// NewSessionCache returns a session cache for one endpoint's
// connections. It keeps the last session, and forgets it when the
// proxy's certificate changes: a resumed session would present the old
// certificate's identity again, so after a rotation every new connection
// makes a full handshake with the new one.
func (c *Client) NewSessionCache() tls.ClientSessionCache {
	if !c.sessions {
		return nil
	}
	return &sessionCache{s: c.s}
}

// sessionCache holds one endpoint's last session. Get and Put run once
// per new connection, never per request.
type sessionCache struct {
	s  Secrets
	mu sync.Mutex
	sessionSlot
}

type sessionSlot struct {
	key  string
	cert *tls.Certificate // the proxy's certificate when the session was stored
	cs   *tls.ClientSessionState
}

// Get implements tls.ClientSessionCache.
func (c *sessionCache) Get(key string) (*tls.ClientSessionState, bool) {
	cur := c.s.Certificate()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cs == nil || c.key != key || c.cert != cur {
		return nil, false
	}
	return c.cs, true
}

// Put implements tls.ClientSessionCache; a nil cs forgets the session.
func (c *sessionCache) Put(key string, cs *tls.ClientSessionState) {
	cur := c.s.Certificate()
	c.mu.Lock()
	defer c.mu.Unlock()
	if cs == nil {
		if c.key == key {
			c.sessionSlot = sessionSlot{}
		}
		return
	}
	c.sessionSlot = sessionSlot{key: key, cert: cur, cs: cs}
}

// ---- helpers ------------------------------------------------------------

// IsHandshake reports whether b, the first bytes a client sent, starts a
// TLS handshake record (content type 22, major version 3), as Envoy's
// tls_inspector decides; one byte is enough to rule it out.
func IsHandshake(b []byte) bool {
	if len(b) == 0 || b[0] != 0x16 {
		return false
	}
	return len(b) < 2 || b[1] == 0x03
}

// ALPNFor narrows the configured ALPN list to what one connection pool
// speaks: h2 for an HTTP/2 pool, http/1.1 for an HTTP/1.1 pool. A list
// without that protocol is offered unchanged; an empty list offers
// "h2" to an HTTP/2 pool (it speaks nothing else) and nothing otherwise.
func ALPNFor(alpn []string, h2 bool) []string {
	want := "http/1.1"
	if h2 {
		want = "h2"
	}
	if len(alpn) == 0 {
		if h2 {
			return []string{"h2"}
		}
		return nil
	}
	if slices.Contains(alpn, want) {
		return []string{want}
	}
	return alpn
}
