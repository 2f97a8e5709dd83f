package kubesource

import (
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"weft.dev/weft/internal/config"
)

// PathPrefix starts the path of every virtual file this source provides.
const PathPrefix = config.VirtualPrefix

// kind is an Istio kind Weft loads and where the API server serves it.
type kind struct {
	kind     config.Kind
	group    string
	resource string   // plural, lowercase
	versions []string // in order of preference
}

// kinds are the kinds Weft's config package loads (config.Kind*), every
// one of them. EnvoyFilter and the other Istio kinds are not
// loaded by Weft yet, so they are not watched either: a kind is added here
// when the decoder learns it (TestKindsCoverTheDecoder checks), and its
// resource goes into the chart's ClusterRole and docs/registries.md's
// RBAC (read, and update of its status).
var kinds = []kind{
	{config.KindVirtualService, "networking.istio.io", "virtualservices", networkingVersions},
	{config.KindDestinationRule, "networking.istio.io", "destinationrules", networkingVersions},
	{config.KindServiceEntry, "networking.istio.io", "serviceentries", networkingVersions},
	{config.KindWorkloadEntry, "networking.istio.io", "workloadentries", networkingVersions},
	{config.KindWorkloadGroup, "networking.istio.io", "workloadgroups", networkingVersions},
	{config.KindSidecar, "networking.istio.io", "sidecars", networkingVersions},
	{config.KindGateway, "networking.istio.io", "gateways", networkingVersions},
	{config.KindPeerAuthentication, "security.istio.io", "peerauthentications", securityVersions},
	{config.KindAuthorizationPolicy, "security.istio.io", "authorizationpolicies", securityVersions},
	{config.KindRequestAuthentication, "security.istio.io", "requestauthentications", securityVersions},
	{config.KindTelemetry, "telemetry.istio.io", "telemetries", telemetryVersions},
	{config.KindRateLimit, "networking.weft.dev", "ratelimits", weftNetworkingVersions},
	{config.KindOIDCLogin, "security.weft.dev", "oidclogins", weftSecurityVersions},
	// The Gateway API's kinds: their status is the Gateway API's
	// (gatewayapi_status.go), not Istio's.
	{config.KindGatewayClass, gatewayAPIGroup, "gatewayclasses", config.GatewayAPIVersions(config.KindGatewayClass)},
	{config.KindKubeGateway, gatewayAPIGroup, "gateways", config.GatewayAPIVersions(config.KindKubeGateway)},
	{config.KindHTTPRoute, gatewayAPIGroup, "httproutes", config.GatewayAPIVersions(config.KindHTTPRoute)},
	{config.KindGRPCRoute, gatewayAPIGroup, "grpcroutes", config.GatewayAPIVersions(config.KindGRPCRoute)},
	{config.KindTCPRoute, gatewayAPIGroup, "tcproutes", config.GatewayAPIVersions(config.KindTCPRoute)},
	{config.KindTLSRoute, gatewayAPIGroup, "tlsroutes", config.GatewayAPIVersions(config.KindTLSRoute)},
	{config.KindReferenceGrant, gatewayAPIGroup, "referencegrants", config.GatewayAPIVersions(config.KindReferenceGrant)},
	// Namespaces, for their labels (a Gateway API listener's
	// allowedRoutes selects namespaces by them); read, never written.
	{config.KindNamespace, "", "namespaces", []string{"v1"}},
}

// gatewayAPIGroup is the Kubernetes Gateway API's group.
const gatewayAPIGroup = "gateway.networking.k8s.io"

// clusterScoped reports whether objects of kind k have no namespace.
// Their virtual file is "k8s:<Kind>/<name>"; the decoder, as for a file
// without metadata.namespace, puts them in namespace "default".
func clusterScoped(k config.Kind) bool {
	return k == config.KindGatewayClass || k == config.KindNamespace
}

// decodedNamespace is the namespace the decoder gives an object of
// namespace ns ("" for a cluster-scoped one).
func decodedNamespace(ns string) string {
	if ns == "" {
		return "default"
	}
	return ns
}

// The versions Weft's decoder reads, newest first (they share one schema).
var (
	networkingVersions = []string{"v1", "v1beta1", "v1alpha3"}
	securityVersions   = []string{"v1", "v1beta1"}
	telemetryVersions  = []string{"v1", "v1alpha1"}
	// Weft's own kinds (charts/weft-crds/files/weft-crds.yaml).
	weftNetworkingVersions = []string{"v1alpha1"}
	weftSecurityVersions   = []string{"v1alpha1"}
)

// FilePath is the virtual file of an object: "k8s:<Kind>/<namespace>/<name>",
// or "k8s:<Kind>/<name>" for a cluster-scoped one (namespace "").
func FilePath(k config.Kind, namespace, name string) string {
	if namespace == "" {
		return PathPrefix + string(k) + "/" + name
	}
	return PathPrefix + string(k) + "/" + namespace + "/" + name
}

// ParseFilePath splits a virtual file's path; ok is false for a path that
// is not one of this source's.
func ParseFilePath(path string) (k config.Kind, namespace, name string, ok bool) {
	rest, found := strings.CutPrefix(path, PathPrefix)
	if !found {
		return "", "", "", false
	}
	parts := strings.Split(rest, "/")
	if len(parts) == 2 && clusterScoped(config.Kind(parts[0])) && parts[1] != "" {
		return config.Kind(parts[0]), "", parts[1], true
	}
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" || clusterScoped(config.Kind(parts[0])) {
		return "", "", "", false
	}
	return config.Kind(parts[0]), parts[1], parts[2], true
}

// droppedAnnotations are left out of the virtual file: kubectl's copy of
// the last applied object repeats the spec and is no config of Weft's.
var droppedAnnotations = map[string]bool{
	"kubectl.kubernetes.io/last-applied-configuration": true,
}

// render turns an object into the YAML document of its virtual file:
// apiVersion, kind, metadata (name, namespace, labels, annotations,
// creationTimestamp, generation) and spec, exactly as the API server
// holds them, so Weft's own decoder judges what the user wrote.
//
// status, resourceVersion, uid and managedFields are left out on purpose:
// they change without the user changing anything (our own status writes
// change them), and a file whose content changed would be loaded again.
// generation changes only when the spec does (Istio's CRDs have a status
// subresource), so it costs no reload.
func render(u *unstructured.Unstructured) ([]byte, error) {
	md := map[string]any{"name": u.GetName()}
	if ns := u.GetNamespace(); ns != "" {
		md["namespace"] = ns
	}
	if l := u.GetLabels(); len(l) > 0 {
		md["labels"] = l
	}
	ann := map[string]string{}
	for k, v := range u.GetAnnotations() {
		if !droppedAnnotations[k] {
			ann[k] = v
		}
	}
	if len(ann) > 0 {
		md["annotations"] = ann
	}
	if ts := u.GetCreationTimestamp(); !ts.IsZero() {
		md["creationTimestamp"] = ts.UTC().Format("2006-01-02T15:04:05Z")
	}
	if g := u.GetGeneration(); g != 0 {
		md["generation"] = g
	}
	doc := map[string]any{"apiVersion": u.GetAPIVersion(), "kind": u.GetKind(), "metadata": md}
	if spec, ok := u.Object["spec"]; ok {
		doc["spec"] = spec
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("%s %s/%s: render as YAML: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
	}
	return out, nil
}

// gvr is the resource of a kind at one version.
func (k kind) gvr(version string) schema.GroupVersionResource {
	return schema.GroupVersionResource{Group: k.group, Version: version, Resource: k.resource}
}
