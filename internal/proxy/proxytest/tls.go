package proxytest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	tlsinspector "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rawbuffer "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"weft.dev/weft/internal/xds/contract"
)

// MeshCA is a test mesh root issuing SPIFFE workload certificates, as
// the control plane's CA does (ECDSA P-256, client and server use).
type MeshCA struct {
	Root    *x509.Certificate
	Pool    *x509.CertPool
	RootPEM []byte
	key     *ecdsa.PrivateKey
	serial  atomic.Int64
}

// NewMeshCA makes a self-signed root.
func NewMeshCA(t testing.TB) *MeshCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{Organization: []string{"weft test"}, CommonName: "root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(der)
	ca := &MeshCA{Root: root, Pool: x509.NewCertPool(), key: key,
		RootPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
	ca.Pool.AddCert(root)
	ca.serial.Store(100)
	return ca
}

// Issue signs a workload certificate for the SPIFFE ID id (no URI SAN
// when id is ""), valid for ttl, with extra DNS SANs.
func (ca *MeshCA) Issue(t testing.TB, id string, ttl time.Duration, dns ...string) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(ca.serial.Add(1)),
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(ttl),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, DNSNames: dns}
	if id != "" {
		u, err := url.Parse(id)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Root, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// Secrets is a certificate manager for tests: the SDS secrets "default"
// (a certificate that can be swapped, as a rotation does) and "ROOTCA".
// It satisfies tlssocket.Secrets.
type Secrets struct {
	cert  atomic.Pointer[tls.Certificate]
	roots *x509.CertPool
}

// Secrets is a certificate manager holding a certificate for id.
func (ca *MeshCA) Secrets(t testing.TB, id string) *Secrets {
	s := &Secrets{roots: ca.Pool}
	s.Set(ca.Issue(t, id, time.Hour))
	return s
}

// Set replaces the certificate (a rotation).
func (s *Secrets) Set(c *tls.Certificate) { s.cert.Store(c) }

// Certificate is the current certificate.
func (s *Secrets) Certificate() *tls.Certificate { return s.cert.Load() }

// Roots is the mesh root.
func (s *Secrets) Roots() *x509.CertPool { return s.roots }

// SPIFFE is the SPIFFE ID of a workload in trust domain cluster.local.
func SPIFFE(ns, sa string) string { return "spiffe://cluster.local/ns/" + ns + "/sa/" + sa }

// SDSSecret is an SdsSecretConfig as Istio writes them.
func SDSSecret(name string) *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: &core.ConfigSource{
		ConfigSourceSpecifier: &core.ConfigSource_ApiConfigSource{ApiConfigSource: &core.ApiConfigSource{
			ApiType: core.ApiConfigSource_GRPC, TransportApiVersion: core.ApiVersion_V3,
			GrpcServices: []*core.GrpcService{{TargetSpecifier: &core.GrpcService_EnvoyGrpc_{
				EnvoyGrpc: &core.GrpcService_EnvoyGrpc{ClusterName: contract.SDSClusterName}}}},
		}}, ResourceApiVersion: core.ApiVersion_V3}}
}

// IstioDownstreamTLS is the DownstreamTlsContext of Istio's sidecar
// inbound mutual TLS: client certificate required, validated against
// ROOTCA, the workload certificate from "default", ALPN h2 and http/1.1.
func IstioDownstreamTLS() *tlsv3.DownstreamTlsContext {
	return &tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsParams: &tlsv3.TlsParameters{
				TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2, TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
				CipherSuites: []string{"ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-ECDSA-AES128-GCM-SHA256",
					"ECDHE-RSA-AES128-GCM-SHA256", "AES256-GCM-SHA384", "AES128-GCM-SHA256"},
			},
			AlpnProtocols:                  []string{"h2", "http/1.1"},
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{SDSSecret(contract.SecretDefault)},
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext:         &tlsv3.CertificateValidationContext{},
				ValidationContextSdsSecretConfig: SDSSecret(contract.SecretRootCA),
			}},
		},
	}
}

// IstioUpstreamTLS is ISTIO_MUTUAL: the workload certificate, the server
// verified against ROOTCA and, when sans are given, its SPIFFE ID.
func IstioUpstreamTLS(sni string, sans []string, alpn ...string) *tlsv3.UpstreamTlsContext {
	var ms []*matcherv3.StringMatcher
	for _, s := range sans {
		ms = append(ms, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}})
	}
	return &tlsv3.UpstreamTlsContext{Sni: sni, CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsParams:                      &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2, TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3},
		AlpnProtocols:                  alpn,
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{SDSSecret(contract.SecretDefault)},
		ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
			DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchSubjectAltNames: ms},
			ValidationContextSdsSecretConfig: SDSSecret(contract.SecretRootCA),
		}},
	}}
}

// TLSSocket wraps a TLS context as envoy.transport_sockets.tls.
func TLSSocket(t testing.TB, ctx proto.Message) *core.TransportSocket {
	return &core.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: MustAny(t, ctx)}}
}

// RawBufferSocket is plaintext, spelled out.
func RawBufferSocket(t testing.TB) *core.TransportSocket {
	return &core.TransportSocket{Name: "envoy.transport_sockets.raw_buffer", ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: MustAny(t, &rawbuffer.RawBuffer{})}}
}

// AutoMTLS gives c Istio's automatic mutual TLS: ISTIO_MUTUAL (ctx) to
// the endpoints whose metadata says tlsMode=istio, plaintext to the
// others. It returns c.
func AutoMTLS(t testing.TB, c *cluster.Cluster, ctx *tlsv3.UpstreamTlsContext) *cluster.Cluster {
	c.TransportSocketMatches = []*cluster.Cluster_TransportSocketMatch{
		{Name: "tlsMode-istio", Match: &structpb.Struct{Fields: map[string]*structpb.Value{contract.MetaTLSMode: structpb.NewStringValue(contract.TLSModeIstio)}},
			TransportSocket: TLSSocket(t, ctx)},
		{Name: "tlsMode-disabled", Match: &structpb.Struct{}, TransportSocket: RawBufferSocket(t)},
	}
	return c
}

// MTLS modes of InboundListener.
const (
	Strict     = "STRICT"
	Permissive = "PERMISSIVE"
	Disable    = "DISABLE"
)

// InboundListener is an inbound sidecar listener on 127.0.0.1:0 as
// Istio's generator writes it for a PeerAuthentication mode: STRICT (one
// mutual TLS chain), PERMISSIVE (the TLS inspector, a "tls" and a
// "raw_buffer" chain) or DISABLE (plaintext); the connection manager
// forwards the client certificate's details (APPEND_FORWARD with
// subject, URI and DNS) and routes to rc.
func InboundListener(t testing.TB, name, mode string, rc *route.RouteConfiguration) *listener.Listener {
	m := &hcm.HttpConnectionManager{
		StatPrefix:                  name,
		RouteSpecifier:              &hcm.HttpConnectionManager_RouteConfig{RouteConfig: rc},
		HttpFilters:                 []*hcm.HttpFilter{{Name: RouterFilterName, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: MustAny(t, &routerv3.Router{})}}},
		ForwardClientCertDetails:    hcm.HttpConnectionManager_APPEND_FORWARD,
		SetCurrentClientCertDetails: &hcm.HttpConnectionManager_SetCurrentClientCertDetails{Subject: wrapperspb.Bool(true), Dns: true, Uri: true},
	}
	chain := func(transport string, tls bool) *listener.FilterChain {
		fc := &listener.FilterChain{Filters: []*listener.Filter{{Name: HCMFilterName, ConfigType: &listener.Filter_TypedConfig{TypedConfig: MustAny(t, m)}}}}
		if transport != "" {
			fc.FilterChainMatch = &listener.FilterChainMatch{TransportProtocol: transport}
		}
		if tls {
			fc.TransportSocket = TLSSocket(t, IstioDownstreamTLS())
		}
		return fc
	}
	l := &listener.Listener{Name: name, Address: SockAddr("127.0.0.1", 0), TrafficDirection: core.TrafficDirection_INBOUND}
	switch mode {
	case Strict:
		l.FilterChains = []*listener.FilterChain{chain("", true)}
	case Permissive:
		l.ListenerFilters = []*listener.ListenerFilter{{Name: "envoy.filters.listener.tls_inspector",
			ConfigType: &listener.ListenerFilter_TypedConfig{TypedConfig: MustAny(t, &tlsinspector.TlsInspector{InitialReadBufferSize: wrapperspb.UInt32(512)})}}}
		l.FilterChains = []*listener.FilterChain{chain("tls", true), chain("raw_buffer", false)}
	case Disable:
		l.FilterChains = []*listener.FilterChain{chain("", false)}
	default:
		t.Fatalf("InboundListener: mode %q", mode)
	}
	return l
}
