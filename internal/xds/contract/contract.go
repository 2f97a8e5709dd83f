// Package contract holds the conventions both ends of Weft's xDS agree on
// beyond Envoy's own schema: the keys of the proxy identity carried in the
// xDS node, Istio-style resource names, and the metadata the control plane
// puts on clusters and endpoints so a proxy can label its metrics. It is
// imported by the control plane and by the lean proxy, so it must never
// import Istio, Kubernetes or Consul packages.
//
// Everything here is also expressible to Envoy: names are plain strings,
// metadata lives under filter_metadata["istio"] exactly where Istio puts it.
package contract

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// Node metadata keys. The ones Istio also uses keep Istio's spelling so
// existing tooling reads them; Weft-only keys carry a WEFT_ prefix.
const (
	MetaNamespace      = "NAMESPACE"
	MetaWorkloadName   = "WORKLOAD_NAME"
	MetaLabels         = "LABELS"       // struct of string values
	MetaInstanceIPs    = "INSTANCE_IPS" // comma-separated, every address of the host
	MetaServiceAccount = "SERVICE_ACCOUNT"
	MetaClusterID      = "CLUSTER_ID"
	// MetaAutoRegisterGroup names the WorkloadGroup (in the proxy's
	// namespace) a VM proxy registers with, as Istio's
	// ISTIO_META_AUTO_REGISTER_GROUP.
	MetaAutoRegisterGroup = "AUTO_REGISTER_GROUP"
	// MetaOutboundAddress is where the proxy's outbound HTTP listener binds
	// ("127.0.0.1:15001"). Empty means the proxy has no outbound listener.
	MetaOutboundAddress = "WEFT_OUTBOUND_ADDRESS"
	// MetaAppPorts maps a workload port (the port registered for the
	// endpoint, where the proxy's inbound listener binds) to the address the
	// local application listens on: "9080=127.0.0.1:18080,9090=127.0.0.1:19090".
	// A workload port not listed forwards to 127.0.0.1 on the same port.
	MetaAppPorts = "WEFT_APP_PORTS"
	// MetaAdminAddress is where the proxy's admin endpoint (/ready,
	// /config_dump, /stats/prometheus) can be reached, "host:port", so
	// operator commands can find a proxy by name. Istio has no such key.
	// Empty means the proxy does not say.
	MetaAdminAddress = "WEFT_ADMIN_ADDRESS"
	// MetaMTLS is "true" when the proxy has a workload certificate (the
	// SDS secrets default and ROOTCA) and so can do mutual TLS. A proxy
	// without one (plaintext xDS, local development) gets no TLS where
	// PERMISSIVE allows plaintext and no automatic mutual TLS to its
	// upstreams. Istio has no such key: its proxies always have a
	// certificate.
	MetaMTLS = "WEFT_MTLS"
	// MetaInterceptionMode is how the proxy's pod sends traffic to it,
	// Istio's key: InterceptionRedirect when iptables REDIRECT captures
	// the pod's traffic (weft-proxy capture), else empty or
	// InterceptionNone. A captured proxy gets the virtual listeners
	// (ListenerVirtualOutbound, ListenerVirtualInbound) instead of
	// per-workload inbound listeners and the explicit outbound listener.
	MetaInterceptionMode = "INTERCEPTION_MODE"
	// MetaGenerator is Istio's key for the kind of config a node wants:
	// GeneratorGRPC marks a proxyless gRPC client (Istio's gRPC bootstrap
	// sets it), which is served only the resources it names, shaped for
	// gRPC's xDS client (internal/xds/generate's ForProxyless). Empty or
	// any other value is a sidecar.
	MetaGenerator = "GENERATOR"
	// MetaGatewayBind is the address a gateway proxy's listeners bind
	// (a Gateway server's bind overrides it); empty means every address
	// (0.0.0.0), as Istio's gateways. Istio has no such key: its gateway
	// pods have one address each, and several Weft gateways on one host
	// (or loopback) need their own.
	MetaGatewayBind = "WEFT_GATEWAY_BIND"
	// MetaHTTP10 is Istio's key (ISTIO_META_HTTP10) for a proxy that
	// accepts HTTP/1.0 requests: "1" or "true" sets its connection
	// managers' accept_http_10; otherwise they answer HTTP/1.0 with 426,
	// unless the control plane accepts it mesh-wide.
	MetaHTTP10 = "HTTP10"
)

// GeneratorGRPC is the MetaGenerator value of a proxyless gRPC client.
const GeneratorGRPC = "grpc"

// FeatureVHDS, among a node's client_features, says the proxy takes its
// outbound route configurations' virtual hosts by VHDS (Envoy's Virtual
// Host Discovery Service, type VirtualHost) on a delta stream: each route
// configuration then comes without virtual hosts and with vhds set, and
// each of its virtual hosts is a resource of its own named
// VirtualHostName(route configuration, virtual host), so a change to one
// service's routes sends that service's virtual hosts and nothing else.
// weft-proxy's delta client sets it; Envoy, which asks for virtual hosts
// only on demand, and proxyless gRPC clients get whole route
// configurations.
const FeatureVHDS = "weft.vhds"

// VirtualHostName is the VHDS resource name of virtual host vh of route
// configuration rc, as Envoy names them: "<rc>/<vh>". Route configuration
// names never hold a "/", so the first one splits the two
// (SplitVirtualHostName).
func VirtualHostName(rc, vh string) string { return rc + "/" + vh }

// SplitVirtualHostName is the inverse of VirtualHostName.
func SplitVirtualHostName(name string) (rc, vh string, ok bool) {
	return strings.Cut(name, "/")
}

// Interception modes (MetaInterceptionMode values), spelled as Istio's.
const (
	InterceptionRedirect = "REDIRECT"
	InterceptionNone     = "NONE"
)

// Filter metadata namespace used on clusters and endpoints, as in Istio.
const FilterMetadataIstio = "istio"

// Keys under filter_metadata["istio"].
const (
	// MetaClusterServices (on a Cluster) is a list of structs with "host",
	// "name" and "namespace": the services the cluster reaches.
	MetaClusterServices = "services"
	// MetaClusterSubset (on a Cluster) names the DestinationRule subset.
	MetaClusterSubset = "subset"
	// MetaEndpointWorkload (on an LbEndpoint) is
	// "workload;namespace;app;version;cluster", Istio's format; the proxy
	// reads destination_workload and destination_version from it.
	MetaEndpointWorkload = "workload"
)

// Peer metadata headers, as Istio's HTTP metadata exchange uses them: the
// client proxy adds them to upstream requests so the server proxy can label
// its metrics with the source workload; the server proxy strips them before
// the request reaches the application.
const (
	HeaderPeerMetadata   = "x-envoy-peer-metadata"    // base64 of a serialized google.protobuf.Struct
	HeaderPeerMetadataID = "x-envoy-peer-metadata-id" // the peer's node id
)

// Well-known names.
const (
	// RouteHTTPProxy is the RDS name of the outbound route configuration:
	// every service the proxy may reach, chosen by Host/:authority.
	RouteHTTPProxy = "http_proxy"
	// DefaultOutboundAddress is where a sidecar's outbound listener binds
	// when it does not say otherwise.
	DefaultOutboundAddress = "127.0.0.1:15001"

	// ListenerVirtualOutbound is a captured proxy's listener for the
	// pod's outbound connections, on [::]:VirtualOutboundPort with
	// use_original_dst: its filter chains match the original destination
	// (service VIP and port).
	ListenerVirtualOutbound = "virtualOutbound"
	// ListenerVirtualInbound is a captured proxy's listener for
	// connections to the pod, on [::]:VirtualInboundPort with
	// use_original_dst: one set of filter chains per workload port.
	ListenerVirtualInbound = "virtualInbound"
	// VirtualOutboundPort and VirtualInboundPort are where the capture
	// rules redirect to; fixed, as in Istio.
	VirtualOutboundPort = 15001
	VirtualInboundPort  = 15006

	// ClusterPassthrough forwards to the connection's original
	// destination (ORIGINAL_DST): outbound traffic to destinations the
	// mesh does not know, under the ALLOW_ANY outbound policy.
	ClusterPassthrough = "PassthroughCluster"
	// ClusterBlackHole has no endpoints: outbound traffic to unknown
	// destinations under REGISTRY_ONLY ends there.
	ClusterBlackHole = "BlackHoleCluster"
	// ClusterInboundPassthroughIPv4 and …IPv6 forward inbound connections
	// to ports the mesh does not declare to the application on the
	// original destination, from InboundPassthroughSourceIPv4/…IPv6, a
	// source the capture rules let through without re-capture.
	ClusterInboundPassthroughIPv4 = "InboundPassthroughClusterIpv4"
	ClusterInboundPassthroughIPv6 = "InboundPassthroughClusterIpv6"
	InboundPassthroughSourceIPv4  = "127.0.0.6"
	InboundPassthroughSourceIPv6  = "::6"

	// RouteAllowAny and RouteBlockAll name the last route of a captured
	// proxy's outbound HTTP route configurations, for a Host the mesh
	// does not know: to ClusterPassthrough (ALLOW_ANY), or a direct 502
	// (REGISTRY_ONLY). As in Istio, the proxy's metrics report requests
	// they handled as destination_service_name ClusterPassthrough and
	// ClusterBlackHole.
	RouteAllowAny = "allow_any"
	RouteBlockAll = "block_all"
)

// OutboundRouteName is the RDS name of a captured proxy's outbound route
// configuration for one service port: "9080", as Istio names it. It holds
// the virtual hosts of the services on that port.
func OutboundRouteName(port uint32) string { return strconv.FormatUint(uint64(port), 10) }

// Direction of a cluster, as in Istio cluster names.
type Direction string

// Directions.
const (
	Inbound  Direction = "inbound"
	Outbound Direction = "outbound"
)

// ClusterName builds an Istio-style cluster name:
// "outbound|9080|v2|reviews.default.svc.cluster.local" or "inbound|9080||".
func ClusterName(dir Direction, port uint32, subset, host string) string {
	return fmt.Sprintf("%s|%d|%s|%s", dir, port, subset, host)
}

// ParseClusterName splits an Istio-style cluster name.
func ParseClusterName(name string) (dir Direction, port uint32, subset, host string, err error) {
	parts := strings.Split(name, "|")
	if len(parts) != 4 {
		return "", 0, "", "", fmt.Errorf("cluster name %q: want direction|port|subset|host", name)
	}
	p, err := strconv.ParseUint(parts[1], 10, 32)
	if err != nil {
		return "", 0, "", "", fmt.Errorf("cluster name %q: bad port: %w", name, err)
	}
	return Direction(parts[0]), uint32(p), parts[2], parts[3], nil
}

// ListenerName names a listener bound to ip:port, as Istio does ("10.0.0.1_9080").
func ListenerName(ip string, port uint32) string {
	return fmt.Sprintf("%s_%d", ip, port)
}

// InboundRouteName names the inline route configuration of an inbound listener.
func InboundRouteName(port uint32) string { return ClusterName(Inbound, port, "", "") }

// WorkloadMetadata formats MetaEndpointWorkload.
func WorkloadMetadata(workload, namespace, app, version, cluster string) string {
	return strings.Join([]string{workload, namespace, app, version, cluster}, ";")
}

// ParseWorkloadMetadata is the inverse of WorkloadMetadata; missing fields are empty.
func ParseWorkloadMetadata(s string) (workload, namespace, app, version, cluster string) {
	f := strings.SplitN(s, ";", 5)
	for len(f) < 5 {
		f = append(f, "")
	}
	return f[0], f[1], f[2], f[3], f[4]
}

// FormatAppPorts renders MetaAppPorts sorted by port.
func FormatAppPorts(m map[uint32]string) string {
	ports := make([]uint32, 0, len(m))
	for p := range m {
		ports = append(ports, p)
	}
	sort.Slice(ports, func(i, j int) bool { return ports[i] < ports[j] })
	parts := make([]string, 0, len(ports))
	for _, p := range ports {
		parts = append(parts, fmt.Sprintf("%d=%s", p, m[p]))
	}
	return strings.Join(parts, ",")
}

// ParseAppPorts parses MetaAppPorts.
func ParseAppPorts(s string) (map[uint32]string, error) {
	out := map[uint32]string{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for _, item := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok || v == "" {
			return nil, fmt.Errorf("%s: %q: want port=host:port", MetaAppPorts, item)
		}
		p, err := strconv.ParseUint(k, 10, 16)
		if err != nil || p == 0 {
			return nil, fmt.Errorf("%s: %q: bad port %q", MetaAppPorts, item, k)
		}
		out[uint32(p)] = v
	}
	return out, nil
}

// AppAddress returns where the application for workload port p listens.
func AppAddress(appPorts map[uint32]string, p uint32) string {
	if a, ok := appPorts[p]; ok {
		return a
	}
	return fmt.Sprintf("127.0.0.1:%d", p)
}
