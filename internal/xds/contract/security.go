package contract

// Security conventions, as Istio names them (docs/architecture.md, "The
// wire contract"): the SDS secrets a proxy serves from its own certificate
// manager, the label and endpoint metadata that drive automatic mutual
// TLS, and where the JWT filter leaves a verified token's claims.
const (
	// SecretDefault is the SDS secret of the workload's certificate and key.
	SecretDefault = "default"
	// SecretRootCA is the SDS secret of the mesh's trust root.
	SecretRootCA = "ROOTCA"
	// SDSClusterName is the cluster sds_config names, as Istio's; the Go
	// proxy serves SecretDefault and SecretRootCA itself, whatever the
	// sds_config says.
	SDSClusterName = "sds-grpc"
	// SecretCredentialPrefix starts the SDS name of a gateway's credential
	// (a Gateway's credentialName: "kubernetes://<name>"), as in Istio; a
	// gateway serves it from its credential directory. The credential's
	// client CA is "kubernetes://<name>" + SecretCASuffix, and one of its
	// other files "kubernetes://<name>/<file>" (OIDCLogin's secrets).
	SecretCredentialPrefix = "kubernetes://"
	SecretCASuffix         = "-cacert"
	// SecretGatewayCredentialPrefix starts the SDS name of a Gateway API
	// listener's certificate in another namespace, a ReferenceGrant
	// permitting: "kubernetes-gateway://<namespace>/<name>", as in Istio.
	SecretGatewayCredentialPrefix = "kubernetes-gateway://"

	// TLSModeLabel on a workload (a WorkloadEntry's labels) says whether it
	// runs a sidecar that accepts mutual TLS: TLSModeIstio.
	TLSModeLabel = "security.istio.io/tlsMode"
	TLSModeIstio = "istio"
	// FilterMetadataTransportSocketMatch is the endpoint filter_metadata
	// namespace a cluster's transport_socket_matches match on; an endpoint
	// of a workload labelled TLSModeLabel=istio carries
	// {MetaTLSMode: TLSModeIstio} there.
	FilterMetadataTransportSocketMatch = "envoy.transport_socket_match"
	MetaTLSMode                        = "tlsMode"

	// FilterJWTAuthn is the JWT HTTP filter's name; a verified token's
	// payload is its dynamic metadata under MetaJWTPayload, where the RBAC
	// filter reads request principals and claims.
	FilterJWTAuthn = "envoy.filters.http.jwt_authn"
	MetaJWTPayload = "payload"
)
