package generate

import (
	"fmt"
	"slices"
	"strings"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	networking "istio.io/api/networking/v1alpha3"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry"
	"weft.dev/weft/internal/xds/contract"
)

// Client-side TLS of outbound clusters, as Istio's cluster builder does it
// for a sidecar (pilot/pkg/networking/core/cluster_tls.go): the
// DestinationRule's tls (per port and subset, mergedTrafficPolicy), or,
// when no rule sets one, automatic mutual TLS to the endpoints that have a
// sidecar (endpoints.go marks them).

// withUpstreamTLS sets the transport of outbound cluster c (svc's port p,
// subset may be empty) for proxy id and returns c.
func withUpstreamTLS(s *mesh.Snapshot, id contract.Identity, svc *registry.Service, p registry.Port, subset string, c *cluster.Cluster) *cluster.Cluster {
	t := mergedTrafficPolicy(s, drView(s, id), svc.Hostname, p.Number, subset).GetTls()
	if t == nil {
		// Automatic mutual TLS: only a proxy with a certificate can, and
		// not toward a namespace whose PeerAuthentication is DISABLE
		// (Istio's BestEffortInferServiceMTLSMode).
		if !id.MTLS || s.PeerAuthn.NamespaceMode(svc.Namespace) == config.MTLSDisable {
			return c
		}
		ctx := istioMutualUpstream(c, sniFor(p.Number, subset, svc.Hostname), serviceAccounts(s, svc, p))
		c.TransportSocketMatches = []*cluster.Cluster_TransportSocketMatch{
			{
				Name:            "tlsMode-" + contract.TLSModeIstio,
				Match:           &structpb.Struct{Fields: map[string]*structpb.Value{contract.MetaTLSMode: structpb.NewStringValue(contract.TLSModeIstio)}},
				TransportSocket: upstreamTLSSocket(ctx),
			},
			{Name: "tlsMode-disabled", Match: &structpb.Struct{}, TransportSocket: rawBufferSocket()},
		}
		return c
	}
	switch t.GetMode() {
	case networking.ClientTLSSettings_ISTIO_MUTUAL:
		sni := t.GetSni()
		if sni == "" {
			sni = sniFor(p.Number, subset, svc.Hostname)
		}
		sans := t.GetSubjectAltNames()
		if sans == nil {
			sans = serviceAccounts(s, svc, p)
		}
		c.TransportSocket = upstreamTLSSocket(istioMutualUpstream(c, sni, sans))
	case networking.ClientTLSSettings_SIMPLE, networking.ClientTLSSettings_MUTUAL:
		if cred := t.GetCredentialName(); cred != "" {
			// A gateway (an egress gateway originating TLS) takes the
			// credential over ADS, as Istio's do. Istio ignores
			// credentialName on sidecars without a workloadSelector;
			// Weft on every sidecar (a validation warning says so), so
			// the cluster stays plaintext as there. ConfigMaps
			// (configmap://) are not read.
			if !id.Router() || strings.HasPrefix(cred, "configmap://") {
				return c
			}
			c.TransportSocket = upstreamTLSSocket(credentialUpstream(c, t))
			return c
		}
		c.TransportSocket = upstreamTLSSocket(fileUpstream(c, t))
	}
	return c
}

// sniFor is Istio's BuildDNSSrvSubsetKey for outbound traffic:
// outbound_.<port>_.<subset>_.<host>.
func sniFor(port uint32, subset, host string) string {
	return fmt.Sprintf("outbound_.%d_.%s_.%s", port, subset, host)
}

// serviceAccounts are the SPIFFE identities of the service's endpoints on
// port p, sorted: the server certificates an ISTIO_MUTUAL client accepts,
// as Istio's service accounts of a service. Empty when no endpoint names
// its service account; any certificate of the mesh is then accepted.
func serviceAccounts(s *mesh.Snapshot, svc *registry.Service, p registry.Port) []string {
	var out []string
	for _, ep := range s.Registry.Endpoints(svc.Hostname, p.Number) {
		if ep.ServiceAccount == "" {
			continue
		}
		ns := ep.Namespace
		if ns == "" {
			ns = svc.Namespace
		}
		out = append(out, fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", s.TrustDomain, ns, ep.ServiceAccount))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// defaultUpstreamCommon is Istio's defaultUpstreamCommonTLSContext.
func defaultUpstreamCommon() *tlsv3.CommonTlsContext {
	return &tlsv3.CommonTlsContext{TlsParams: &tlsv3.TlsParameters{
		TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2,
		TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3,
	}}
}

// istioMutualUpstream presents the workload certificate (SDS default),
// verifies the server against the mesh root (SDS ROOTCA) and, when sans is
// not empty, its identity; ALPN offers what the cluster speaks (alpnFor).
func istioMutualUpstream(c *cluster.Cluster, sni string, sans []string) *tlsv3.UpstreamTlsContext {
	common := defaultUpstreamCommon()
	common.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{sdsSecret(contract.SecretDefault)}
	common.ValidationContextType = &tlsv3.CommonTlsContext_CombinedValidationContext{
		CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
			DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchSubjectAltNames: exactSANs(sans)},
			ValidationContextSdsSecretConfig: sdsSecret(contract.SecretRootCA),
		},
	}
	common.AlpnProtocols = alpnFor(c)
	return &tlsv3.UpstreamTlsContext{CommonTlsContext: common, Sni: sni}
}

// alpnFor is the ALPN a mutual TLS client offers for the cluster's
// upstream protocol: h2, http/1.1, or both when it follows the downstream
// protocol; none for TCP.
func alpnFor(c *cluster.Cluster) []string {
	o := httpProtocolOptions(c)
	switch {
	case o == nil:
		return nil
	case o.GetUseDownstreamProtocolConfig() != nil:
		return []string{"h2", "http/1.1"}
	case o.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil:
		return []string{"h2"}
	}
	return []string{"http/1.1"}
}

// fileUpstream is Istio's constructUpstreamTLS for SIMPLE and MUTUAL with
// files: the client certificate and key of MUTUAL, the server verified
// against caCertificates (or the system roots) and subjectAltNames, with
// caCrl; nothing verified with insecureSkipVerify. Without sni, the SNI
// (and, without subjectAltNames, the verified name) is the request's host
// (auto_sni, auto_san_validation). ALPN h2 for HTTP/2 clusters.
func fileUpstream(c *cluster.Cluster, t *networking.ClientTLSSettings) *tlsv3.UpstreamTlsContext {
	ctx := &tlsv3.UpstreamTlsContext{CommonTlsContext: defaultUpstreamCommon(), Sni: t.GetSni()}
	common := ctx.CommonTlsContext
	if t.GetMode() == networking.ClientTLSSettings_MUTUAL {
		common.TlsCertificates = []*tlsv3.TlsCertificate{{
			CertificateChain: fileSource(t.GetClientCertificate()),
			PrivateKey:       fileSource(t.GetPrivateKey()),
		}}
	}
	insecure := t.GetInsecureSkipVerify().GetValue()
	if insecure {
		common.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{}}
	} else {
		vc := &tlsv3.CertificateValidationContext{MatchSubjectAltNames: exactSANs(t.GetSubjectAltNames())}
		if ca := t.GetCaCertificates(); ca != "" {
			vc.TrustedCa = fileSource(ca)
		} else {
			vc.SystemRootCerts = &tlsv3.CertificateValidationContext_SystemRootCerts{}
		}
		if crl := t.GetCaCrl(); crl != "" {
			vc.Crl = fileSource(crl)
		}
		common.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: vc}
	}
	if o := httpProtocolOptions(c); o != nil {
		if o.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil {
			common.AlpnProtocols = []string{"h2"}
		}
		if t.GetSni() == "" {
			if o.UpstreamHttpProtocolOptions == nil {
				o.UpstreamHttpProtocolOptions = &core.UpstreamHttpProtocolOptions{}
			}
			o.UpstreamHttpProtocolOptions.AutoSni = true
			o.UpstreamHttpProtocolOptions.AutoSanValidation = len(t.GetSubjectAltNames()) == 0 && !insecure
			c.TypedExtensionProtocolOptions[httpProtocolOptionsKey] = mustAny(o)
		}
	}
	return ctx
}

// credentialUpstream is fileUpstream with the credential of
// credentialName instead of files, as Istio's buildUpstreamTLSSettings
// for a gateway: for MUTUAL the client certificate
// "kubernetes://<name>", and the server verified against the CA
// "kubernetes://<name>-cacert" (and subjectAltNames), both over ADS.
func credentialUpstream(c *cluster.Cluster, t *networking.ClientTLSSettings) *tlsv3.UpstreamTlsContext {
	name := contract.SecretCredentialPrefix + strings.TrimPrefix(t.GetCredentialName(), contract.SecretCredentialPrefix)
	files := proto.Clone(t).(*networking.ClientTLSSettings)
	files.ClientCertificate, files.PrivateKey, files.CaCertificates = "", "", ""
	ctx := fileUpstream(c, files)
	common := ctx.CommonTlsContext
	if t.GetMode() == networking.ClientTLSSettings_MUTUAL {
		common.TlsCertificates = nil
		common.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{credentialSecret(name)}
	}
	if vc := common.GetValidationContext(); vc != nil && !t.GetInsecureSkipVerify().GetValue() {
		vc.SystemRootCerts = nil
		common.ValidationContextType = &tlsv3.CommonTlsContext_CombinedValidationContext{
			CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				DefaultValidationContext:         vc,
				ValidationContextSdsSecretConfig: credentialSecret(name + contract.SecretCASuffix),
			},
		}
	}
	return ctx
}

func fileSource(path string) *core.DataSource {
	return &core.DataSource{Specifier: &core.DataSource_Filename{Filename: path}}
}
