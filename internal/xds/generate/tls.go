package generate

import (
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsinspector "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	rawbuffer "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcher "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/wellknown"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"weft.dev/weft/internal/xds/contract"
)

// Transport sockets, as Istio builds them (pilot/pkg/security/model,
// pilot/pkg/security/authn/utils, pilot/pkg/networking/core/cluster_tls.go):
// the workload certificate and trust root come over SDS as the secrets
// "default" and "ROOTCA".

// sdsSecret is Istio's ConstructSdsSecretConfig for the workload secrets:
// SDS over gRPC to the cluster sds-grpc, node sent once, no initial fetch
// timeout (a listener or cluster waits for its certificate).
func sdsSecret(name string) *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{
		Name: name,
		SdsConfig: &core.ConfigSource{
			ConfigSourceSpecifier: &core.ConfigSource_ApiConfigSource{
				ApiConfigSource: &core.ApiConfigSource{
					ApiType:                   core.ApiConfigSource_GRPC,
					SetNodeOnFirstMessageOnly: true,
					TransportApiVersion:       core.ApiVersion_V3,
					GrpcServices: []*core.GrpcService{{
						TargetSpecifier: &core.GrpcService_EnvoyGrpc_{EnvoyGrpc: &core.GrpcService_EnvoyGrpc{ClusterName: contract.SDSClusterName}},
					}},
				},
			},
			ResourceApiVersion:  core.ApiVersion_V3,
			InitialFetchTimeout: durationpb.New(0 * time.Second),
		},
	}
}

// credentialSecret is Istio's ConstructSdsSecretConfigForCredential: a
// gateway's credentialName comes over ADS from the control plane, which
// serves the Secret of the gateway's namespace (Secrets). A Weft gateway
// with a credential directory serves it from there first.
func credentialSecret(name string) *tlsv3.SdsSecretConfig {
	return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: adsConfigSource()}
}

// inboundCiphers are Istio's SupportedCiphers for sidecar servers (TLS
// 1.2; TLS 1.3 suites are not configurable).
var inboundCiphers = []string{
	"ECDHE-ECDSA-AES256-GCM-SHA384",
	"ECDHE-RSA-AES256-GCM-SHA384",
	"ECDHE-ECDSA-AES128-GCM-SHA256",
	"ECDHE-RSA-AES128-GCM-SHA256",
	"AES256-GCM-SHA384",
	"AES128-GCM-SHA256",
}

// istioMutualDownstream is Istio's BuildInboundTLS for an HTTP port: the
// client must present a certificate of the mesh (validated against
// ROOTCA, any SAN), ALPN h2 and http/1.1, TLS 1.2 to 1.3.
func istioMutualDownstream() *tlsv3.DownstreamTlsContext {
	return &tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsParams: &tlsv3.TlsParameters{
				CipherSuites:              inboundCiphers,
				TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2,
				TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
			},
			AlpnProtocols:                  []string{"h2", "http/1.1"},
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sdsSecret(contract.SecretDefault)},
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{
				CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
					DefaultValidationContext:         &tlsv3.CertificateValidationContext{},
					ValidationContextSdsSecretConfig: sdsSecret(contract.SecretRootCA),
				},
			},
		},
	}
}

// downstreamTLSSocket and upstreamTLSSocket wrap a TLS context as
// envoy.transport_sockets.tls.
func downstreamTLSSocket(ctx *tlsv3.DownstreamTlsContext) *core.TransportSocket {
	return &core.TransportSocket{
		Name:       wellknown.TransportSocketTLS,
		ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)},
	}
}

func upstreamTLSSocket(ctx *tlsv3.UpstreamTlsContext) *core.TransportSocket {
	return &core.TransportSocket{
		Name:       wellknown.TransportSocketTLS,
		ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)},
	}
}

// rawBufferSocket is plaintext, spelled out (Istio's RawBufferTransportSocket).
func rawBufferSocket() *core.TransportSocket {
	return &core.TransportSocket{
		Name:       wellknown.TransportSocketRawBuffer,
		ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: mustAny(&rawbuffer.RawBuffer{})},
	}
}

// tlsInspector detects TLS on a connection's first bytes, so PERMISSIVE
// listeners can pick the mutual TLS or the plaintext chain (Istio's
// TLSInspector, with its 512-byte initial read buffer).
func tlsInspector() *listener.ListenerFilter {
	return &listener.ListenerFilter{
		Name: wellknown.TLSInspector,
		ConfigType: &listener.ListenerFilter_TypedConfig{TypedConfig: mustAny(&tlsinspector.TlsInspector{
			InitialReadBufferSize: wrapperspb.UInt32(512),
		})},
	}
}

// exactSANs is Istio's StringToExactMatch.
func exactSANs(sans []string) []*matcher.StringMatcher {
	var out []*matcher.StringMatcher
	for _, s := range sans {
		out = append(out, &matcher.StringMatcher{MatchPattern: &matcher.StringMatcher_Exact{Exact: s}})
	}
	return out
}
