package tlssocket

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"weft.dev/weft/internal/proxy/proxytest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	serverID = proxytest.SPIFFE("default", "reviews")
	clientID = proxytest.SPIFFE("default", "productpage")
)

// handshake runs a TLS handshake between client and server configs over
// a pipe and returns both sides' errors and the client's state.
func handshake(t *testing.T, client, server *tls.Config) (cerr, serr error, cs tls.ConnectionState) {
	t.Helper()
	// Real sockets: TLS 1.3 writes after the handshake (session
	// tickets) that an unbuffered pipe would block on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	defer b.Close()
	a.SetDeadline(time.Now().Add(5 * time.Second))
	b.SetDeadline(time.Now().Add(5 * time.Second))
	done := make(chan error, 1)
	go func() {
		s := tls.Server(b, server)
		err := s.Handshake()
		if err == nil {
			// TLS 1.3: the server checks the client's certificate after
			// the client is done; a read surfaces its verdict to both.
			_, err = s.Read(make([]byte, 1))
		}
		b.Close()
		done <- err
	}()
	c := tls.Client(a, client)
	cerr = c.Handshake()
	if cerr == nil {
		_, cerr = c.Write([]byte("x"))
		if cerr == nil {
			_, cerr = c.Read(make([]byte, 1)) // EOF when the server is happy; an alert when not
			if cerr != nil && strings.Contains(cerr.Error(), "EOF") {
				cerr = nil
			}
		}
		cs = c.ConnectionState()
	}
	a.Close()
	serr = <-done
	return cerr, serr, cs
}

func mustServer(t *testing.T, ctx *tlsv3.DownstreamTlsContext, s Secrets) *Server {
	t.Helper()
	srv, err := NewServer(ctx, s)
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

func mustClient(t *testing.T, ctx *tlsv3.UpstreamTlsContext, s Secrets) *Client {
	t.Helper()
	c, err := NewClient(ctx, s, false, false)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestMeshMutualTLS: Istio's sidecar contexts on both sides: the server
// verifies the client by SPIFFE ID against the mesh root, the client the
// server and, when the cluster lists them, its SPIFFE ID.
func TestMeshMutualTLS(t *testing.T) {
	ca := proxytest.NewMeshCA(t)
	other := proxytest.NewMeshCA(t)
	server := mustServer(t, proxytest.IstioDownstreamTLS(), ca.Secrets(t, serverID))
	for _, tc := range []struct {
		name          string
		sans          []string
		clientSecrets Secrets
		serverSecrets Secrets
		wantErr       string
	}{
		{name: "any mesh identity", clientSecrets: ca.Secrets(t, clientID)},
		{name: "the expected server", sans: []string{serverID}, clientSecrets: ca.Secrets(t, clientID)},
		{name: "another server identity", sans: []string{proxytest.SPIFFE("default", "ratings")}, clientSecrets: ca.Secrets(t, clientID),
			wantErr: "no subject alternative name of the certificate (" + serverID + ") matches"},
		{name: "client of another root", clientSecrets: other.Secrets(t, clientID), wantErr: "certificate signed by unknown authority"},
		{name: "client without certificate", clientSecrets: rootsOnly{ca.Pool}, wantErr: "certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := mustClient(t, proxytest.IstioUpstreamTLS("outbound_.9080_._.reviews", tc.sans, "h2", "http/1.1"), tc.clientSecrets)
			cerr, serr, cs := handshake(t, cl.Config(cl.SNI(), ALPNFor(cl.ALPN(), true), nil), server.Config())
			if tc.wantErr == "" {
				if cerr != nil || serr != nil {
					t.Fatalf("client %v, server %v", cerr, serr)
				}
				if cs.NegotiatedProtocol != "h2" || Principal(cs.PeerCertificates[0]) != serverID {
					t.Errorf("ALPN %q, peer %q", cs.NegotiatedProtocol, Principal(cs.PeerCertificates[0]))
				}
				return
			}
			if cerr == nil && serr == nil || !strings.Contains(fmt.Sprint(cerr, serr), tc.wantErr) {
				t.Errorf("client %v, server %v; want an error with %q", cerr, serr, tc.wantErr)
			}
		})
	}
}

type rootsOnly struct{ pool *x509.CertPool }

func (rootsOnly) Certificate() *tls.Certificate { return nil }
func (r rootsOnly) Roots() *x509.CertPool       { return r.pool }

// TestServerWithoutCertificate: a proxy with no workload certificate
// yet fails its handshakes instead of serving without one.
func TestServerWithoutCertificate(t *testing.T) {
	ca := proxytest.NewMeshCA(t)
	server := mustServer(t, proxytest.IstioDownstreamTLS(), nil)
	cl := mustClient(t, proxytest.IstioUpstreamTLS("", nil), ca.Secrets(t, clientID))
	cerr, serr, _ := handshake(t, cl.Config("", nil, nil), server.Config())
	if serr == nil || !strings.Contains(serr.Error(), `no valid workload certificate (SDS "default")`) || cerr == nil {
		t.Errorf("client %v, server %v", cerr, serr)
	}
}

// TestFileValidation: SIMPLE/MUTUAL-style contexts with a trusted_ca
// file: chain, SAN matchers, the host name with auto_sni_san_validation,
// and a CRL.
func TestFileValidation(t *testing.T) {
	ca := proxytest.NewMeshCA(t)
	server := ca.Issue(t, "", time.Hour, "payments.example.com")
	srvCfg := &tls.Config{Certificates: []tls.Certificate{*server}}
	ctx := func(sans ...string) *tlsv3.UpstreamTlsContext {
		vc := &tlsv3.CertificateValidationContext{TrustedCa: &core.DataSource{Specifier: &core.DataSource_InlineBytes{InlineBytes: ca.RootPEM}}}
		for _, s := range sans {
			vc.MatchSubjectAltNames = append(vc.MatchSubjectAltNames, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}})
		}
		return &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: vc}}}
	}
	for _, tc := range []struct {
		name    string
		ctx     *tlsv3.UpstreamTlsContext
		autoSAN bool
		sni     string
		wantErr string
	}{
		{name: "trusted", ctx: ctx()},
		{name: "SAN matches", ctx: ctx("payments.example.com")},
		{name: "SAN differs", ctx: ctx("billing.example.com"), wantErr: "no subject alternative name"},
		{name: "auto SAN validation, right host", ctx: ctx(), autoSAN: true, sni: "payments.example.com"},
		{name: "auto SAN validation, wrong host", ctx: ctx(), autoSAN: true, sni: "billing.example.com", wantErr: "not billing.example.com"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl, err := NewClient(tc.ctx, nil, tc.autoSAN, tc.autoSAN)
			if err != nil {
				t.Fatal(err)
			}
			cerr, _, _ := handshake(t, cl.Config(tc.sni, nil, nil), srvCfg)
			if (cerr == nil) != (tc.wantErr == "") || (cerr != nil && !strings.Contains(cerr.Error(), tc.wantErr)) {
				t.Errorf("client error %v, want %q", cerr, tc.wantErr)
			}
		})
	}

	// A CRL that revokes the server's serial.
	crl := revocationList(t, ca, server.Leaf)
	c := ctx()
	c.CommonTlsContext.GetValidationContext().Crl = &core.DataSource{Specifier: &core.DataSource_InlineBytes{InlineBytes: crl}}
	cl, err := NewClient(c, nil, false, false)
	if err != nil {
		t.Fatal(err)
	}
	if cerr, _, _ := handshake(t, cl.Config("", nil, nil), srvCfg); cerr == nil || !strings.Contains(cerr.Error(), "is revoked") {
		t.Errorf("revoked server: %v", cerr)
	}
}

// revocationList revokes a certificate of ca. The CA's key is not
// exported: a throwaway issuer of the same name signs it (the proxy
// matches a list to a certificate by issuer name and serial).
func revocationList(t *testing.T, ca *proxytest.MeshCA, revoked *x509.Certificate) []byte {
	t.Helper()
	tmpl := &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: time.Now(), NextUpdate: time.Now().Add(time.Hour),
		RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: revoked.SerialNumber, RevocationTime: time.Now()}}}
	issuerKey, issuer := selfSigned(t, ca.Root.Subject)
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, issuer, issuerKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})
}

func selfSigned(t *testing.T, subject pkix.Name) (*ecdsa.PrivateKey, *x509.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: subject, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return key, c
}

// TestCompileErrors: what the proxy cannot do exactly as Envoy would is
// refused, naming the field.
func TestCompileErrors(t *testing.T) {
	sds := func(name string) []*tlsv3.SdsSecretConfig { return []*tlsv3.SdsSecretConfig{proxytest.SDSSecret(name)} }
	down := func(mut func(*tlsv3.DownstreamTlsContext)) *tlsv3.DownstreamTlsContext {
		c := proxytest.IstioDownstreamTLS()
		mut(c)
		return c
	}
	for _, tc := range []struct {
		name string
		ctx  *tlsv3.DownstreamTlsContext
		want string
	}{
		{"another secret", down(func(c *tlsv3.DownstreamTlsContext) {
			c.CommonTlsContext.TlsCertificateSdsSecretConfigs = sds("kubernetes://gw")
		}),
			`common_tls_context.tls_certificate_sds_secret_configs[0]: secret "kubernetes://gw": the proxy serves only "default"`},
		{"no certificate", down(func(c *tlsv3.DownstreamTlsContext) { c.CommonTlsContext.TlsCertificateSdsSecretConfigs = nil }),
			"a server needs a certificate"},
		{"unknown cipher", down(func(c *tlsv3.DownstreamTlsContext) { c.CommonTlsContext.TlsParams.CipherSuites = []string{"RC4-SHA"} }),
			`common_tls_context.tls_params: cipher_suites[0]: "RC4-SHA" is not a cipher suite`},
		{"min above max", down(func(c *tlsv3.DownstreamTlsContext) {
			c.CommonTlsContext.TlsParams.TlsMaximumProtocolVersion = tlsv3.TlsParameters_TLSv1_1
		}), "tls_minimum_protocol_version is above"},
		{"root secret name", down(func(c *tlsv3.DownstreamTlsContext) {
			c.CommonTlsContext.GetCombinedValidationContext().ValidationContextSdsSecretConfig = proxytest.SDSSecret("file-root:/etc/ca.pem")
		}), `combined_validation_context: secret "file-root:/etc/ca.pem": the proxy serves only "ROOTCA"`},
		{"spki pinning", down(func(c *tlsv3.DownstreamTlsContext) {
			c.CommonTlsContext.GetCombinedValidationContext().DefaultValidationContext.VerifyCertificateSpki = []string{"x"}
		}), "combined_validation_context.default_validation_context.verify_certificate_spki: not supported"},
		{"require sni", down(func(c *tlsv3.DownstreamTlsContext) { c.RequireSni = wrapperspb.Bool(true) }), "require_sni"},
		{"bad inline trusted_ca", down(func(c *tlsv3.DownstreamTlsContext) {
			c.CommonTlsContext.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: &core.DataSource{Specifier: &core.DataSource_InlineString{InlineString: "not PEM"}}}}
		}), "validation_context.trusted_ca: no PEM certificate in it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewServer(tc.ctx, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want …%s…", err, tc.want)
			}
		})
	}
	if _, err := NewClient(&tlsv3.UpstreamTlsContext{AllowRenegotiation: true}, nil, false, false); err == nil || !strings.Contains(err.Error(), "allow_renegotiation") {
		t.Errorf("allow_renegotiation: %v", err)
	}
	if _, err := NewClient(&tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{TlsParams: &tlsv3.TlsParameters{EcdhCurves: []string{"brainpool"}}}}, nil, false, false); err == nil ||
		!strings.Contains(err.Error(), `ecdh_curves[0]: "brainpool" is not supported`) {
		t.Errorf("unknown curve: %v", err)
	}
}

// TestMissingFiles: a file a context names that the host lacks does not
// refuse the configuration; the context says why it is broken and its
// handshakes fail.
func TestMissingFiles(t *testing.T) {
	ca := proxytest.NewMeshCA(t)
	missing := &core.DataSource{Specifier: &core.DataSource_Filename{Filename: "/nonexistent/client.pem"}}
	cl, err := NewClient(&tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificates: []*tlsv3.TlsCertificate{{CertificateChain: missing, PrivateKey: missing}}}}, nil, false, false)
	if err != nil {
		t.Fatal(err)
	}
	want := "common_tls_context.tls_certificates[0]: certificate_chain: open /nonexistent/client.pem"
	if b := cl.Broken(); b == nil || !strings.Contains(b.Error(), want) {
		t.Errorf("Broken() = %v, want …%s…", b, want)
	}
	server := mustServer(t, proxytest.IstioDownstreamTLS(), ca.Secrets(t, serverID))
	if cerr, _, _ := handshake(t, cl.Config("", nil, nil), server.Config()); cerr == nil || !strings.Contains(cerr.Error(), want) {
		t.Errorf("handshake: %v, want …%s…", cerr, want)
	}
	srv, err := NewServer(&tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificates: []*tlsv3.TlsCertificate{{CertificateChain: missing, PrivateKey: missing}}}}, nil)
	if err != nil || srv.Broken() == nil {
		t.Errorf("server with a missing file: %v, broken %v", err, srv.Broken())
	}
}

// TestParseSocket: raw_buffer and none are plaintext; a TLS context must
// be of the socket's side.
func TestParseSocket(t *testing.T) {
	if s, err := ParseSocket(nil, true); err != nil || s.Upstream != nil {
		t.Errorf("nil: %+v %v", s, err)
	}
	if s, err := ParseSocket(proxytest.RawBufferSocket(t), false); err != nil || s.Downstream != nil {
		t.Errorf("raw_buffer: %+v %v", s, err)
	}
	if s, err := ParseSocket(proxytest.TLSSocket(t, proxytest.IstioUpstreamTLS("", nil)), true); err != nil || s.Upstream == nil {
		t.Errorf("upstream TLS: %+v %v", s, err)
	}
	if _, err := ParseSocket(proxytest.TLSSocket(t, proxytest.IstioUpstreamTLS("", nil)), false); err == nil ||
		!strings.Contains(err.Error(), "UpstreamTlsContext is not supported here") {
		t.Errorf("an upstream context on a listener: %v", err)
	}
}

// TestSessionCacheForgetsOnRotation: a session is resumed while the
// proxy's certificate is the one it was made with, never after.
func TestSessionCacheForgetsOnRotation(t *testing.T) {
	ca := proxytest.NewMeshCA(t)
	s := ca.Secrets(t, clientID)
	cl := mustClient(t, proxytest.IstioUpstreamTLS("", nil), s)
	cache := cl.NewSessionCache()
	server := mustServer(t, proxytest.IstioDownstreamTLS(), ca.Secrets(t, serverID))
	resumed := func() bool {
		// A server name: the session cache key (each handshake here is
		// to a new port, and Go keys sessions by address without one).
		cerr, serr, cs := handshake(t, cl.Config("reviews", nil, cache), server.Config())
		if cerr != nil || serr != nil {
			t.Fatalf("client %v, server %v", cerr, serr)
		}
		return cs.DidResume
	}
	if resumed() {
		t.Fatal("the first handshake resumed")
	}
	if !resumed() {
		t.Error("the second handshake did not resume")
	}
	s.Set(ca.Issue(t, clientID, time.Hour))
	if resumed() {
		t.Error("a handshake after the rotation resumed the old session")
	}
	noSessions := mustClient(t, &tlsv3.UpstreamTlsContext{MaxSessionKeys: wrapperspb.UInt32(0)}, s)
	if noSessions.NewSessionCache() != nil {
		t.Error("max_session_keys 0 has a session cache")
	}
}

func TestIsHandshakeAndALPN(t *testing.T) {
	for in, want := range map[string]bool{"\x16\x03\x01": true, "\x16": true, "GET / HTTP/1.1": false, "PRI * HTTP/2.0": false, "\x16\x01": false, "": false} {
		if got := IsHandshake([]byte(in)); got != want {
			t.Errorf("IsHandshake(%q) = %v", in, got)
		}
	}
	for _, tc := range []struct {
		alpn []string
		h2   bool
		want string
	}{
		{[]string{"h2", "http/1.1"}, false, "http/1.1"},
		{[]string{"h2", "http/1.1"}, true, "h2"},
		{nil, true, "h2"},
		{nil, false, ""},
		{[]string{"istio"}, false, "istio"},
	} {
		if got := strings.Join(ALPNFor(tc.alpn, tc.h2), ","); got != tc.want {
			t.Errorf("ALPNFor(%v, %v) = %q, want %q", tc.alpn, tc.h2, got, tc.want)
		}
	}
}

// TestServerTakesUnknownALPN: a client whose ALPN offers none of the
// server's protocols (an Istio sidecar's "istio-peer-exchange", "istio"
// to a TCP port) completes the handshake without a protocol, as with
// Envoy, where Go alone refuses it; a client offering one of them still
// negotiates it.
func TestServerTakesUnknownALPN(t *testing.T) {
	ca := proxytest.NewMeshCA(t)
	server := mustServer(t, proxytest.IstioDownstreamTLS(), ca.Secrets(t, serverID))
	for _, tc := range []struct {
		alpn []string
		want string
	}{
		{[]string{"istio-peer-exchange", "istio"}, ""},
		{[]string{"istio", "h2"}, "h2"},
		{[]string{"http/1.1"}, "http/1.1"},
		{nil, ""},
	} {
		cl := mustClient(t, proxytest.IstioUpstreamTLS("outbound_.9080_._.reviews", nil), ca.Secrets(t, clientID))
		cerr, serr, cs := handshake(t, cl.Config(cl.SNI(), tc.alpn, nil), server.Config())
		if cerr != nil || serr != nil || cs.NegotiatedProtocol != tc.want {
			t.Errorf("client ALPN %q: client %v, server %v, negotiated %q, want %q", tc.alpn, cerr, serr, cs.NegotiatedProtocol, tc.want)
		}
	}
}
