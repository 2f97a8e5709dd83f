package contract

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// Identity is what a proxy tells the control plane about itself. The proxy
// builds it from its flags; the control plane parses it from the xDS node.
type Identity struct {
	ID             string
	Namespace      string
	WorkloadName   string
	Labels         map[string]string
	IPs            []string // every address of the host, first is primary
	ServiceAccount string
	ClusterID      string
	// OutboundAddress is where the outbound HTTP listener binds; empty for none.
	OutboundAddress string
	// AppPorts maps workload port -> local application address.
	AppPorts map[uint32]string
	// Locality is where the proxy runs, "region/zone/subzone" (node.locality);
	// endpoint priorities are relative to it.
	Locality string
	// AdminAddress is where the proxy's admin endpoint can be reached
	// ("host:port"); empty when the proxy does not say. It does not change
	// what the proxy is served.
	AdminAddress string
	// MTLS is set when the proxy has a workload certificate and does
	// mutual TLS (MetaMTLS).
	MTLS bool
	// AutoRegisterGroup, when set, names the WorkloadGroup of the proxy's
	// namespace that the control plane registers it with while it is
	// connected (a VM joining the mesh).
	AutoRegisterGroup string
	// InterceptionMode is how the pod's traffic reaches the proxy
	// (MetaInterceptionMode): InterceptionRedirect for a captured pod;
	// empty or InterceptionNone when applications address the proxy
	// themselves.
	InterceptionMode string
	// Generator is MetaGenerator: GeneratorGRPC for a proxyless gRPC
	// client, else empty.
	Generator string
	// GatewayBind is where a gateway proxy's listeners bind
	// (MetaGatewayBind); empty for every address.
	GatewayBind string
	// VHDS is set when the node lists FeatureVHDS in its client_features:
	// it takes its route configurations' virtual hosts by VHDS.
	VHDS bool
	// HTTP10 is set when the proxy accepts HTTP/1.0 requests (MetaHTTP10).
	HTTP10 bool
}

// Proxyless reports whether the node is a proxyless gRPC client
// (Generator is GeneratorGRPC): it gets only the listeners, routes,
// clusters and endpoints it names, in the form gRPC's xDS client accepts.
func (id Identity) Proxyless() bool { return id.Generator == GeneratorGRPC }

// Router reports whether the node is a gateway proxy: its id starts
// with "router~", as Istio's gateways' ids do (sidecars' start with
// "sidecar~"). A gateway has no application behind it: it serves the
// listeners of the Gateways that select it.
func (id Identity) Router() bool { return strings.HasPrefix(id.ID, RouterNodePrefix) }

// RouterNodePrefix starts a gateway proxy's node id.
const RouterNodePrefix = "router~"

// RouterNodeID builds an Istio-style gateway node id:
// router~IP~workload.ns~ns.svc.cluster.local.
func RouterNodeID(ip, workload, ns string) string {
	return fmt.Sprintf("%s%s~%s.%s~%s.svc.cluster.local", RouterNodePrefix, ip, workload, ns, ns)
}

// Captured reports whether the proxy's pod traffic is redirected to it
// (InterceptionMode is InterceptionRedirect).
func (id Identity) Captured() bool { return id.InterceptionMode == InterceptionRedirect }

// DefaultNodeID builds an Istio-style node id: sidecar~IP~workload.ns~ns.svc.cluster.local.
func DefaultNodeID(ip, workload, ns string) string {
	return fmt.Sprintf("sidecar~%s~%s.%s~%s.svc.cluster.local", ip, workload, ns, ns)
}

// Node renders the identity as an Envoy v3 Node.
func (id Identity) Node() *core.Node {
	labels := map[string]any{}
	for k, v := range id.Labels {
		labels[k] = v
	}
	fields := map[string]any{
		MetaNamespace:      id.Namespace,
		MetaWorkloadName:   id.WorkloadName,
		MetaLabels:         labels,
		MetaInstanceIPs:    strings.Join(id.IPs, ","),
		MetaServiceAccount: id.ServiceAccount,
		MetaClusterID:      id.ClusterID,
	}
	if id.OutboundAddress != "" {
		fields[MetaOutboundAddress] = id.OutboundAddress
	}
	if len(id.AppPorts) > 0 {
		fields[MetaAppPorts] = FormatAppPorts(id.AppPorts)
	}
	if id.AdminAddress != "" {
		fields[MetaAdminAddress] = id.AdminAddress
	}
	if id.MTLS {
		fields[MetaMTLS] = "true"
	}
	if id.AutoRegisterGroup != "" {
		fields[MetaAutoRegisterGroup] = id.AutoRegisterGroup
	}
	if id.InterceptionMode != "" {
		fields[MetaInterceptionMode] = id.InterceptionMode
	}
	if id.Generator != "" {
		fields[MetaGenerator] = id.Generator
	}
	if id.GatewayBind != "" {
		fields[MetaGatewayBind] = id.GatewayBind
	}
	if id.HTTP10 {
		fields[MetaHTTP10] = "1"
	}
	md, err := structpb.NewStruct(fields)
	if err != nil { // only strings and maps of strings: cannot fail
		panic(err)
	}
	n := &core.Node{Id: id.ID, Cluster: id.WorkloadName + "." + id.Namespace, Metadata: md, Locality: NodeLocality(id.Locality)}
	if id.VHDS {
		n.ClientFeatures = []string{FeatureVHDS}
	}
	return n
}

// ParseNode reads an Identity from an Envoy node. Missing fields are left
// empty; malformed ones are an error naming the key.
func ParseNode(n *core.Node) (Identity, error) {
	if n == nil {
		return Identity{}, fmt.Errorf("xds node is missing")
	}
	id := Identity{ID: n.GetId(), Labels: map[string]string{}}
	f := n.GetMetadata().GetFields()
	str := func(k string) string { return f[k].GetStringValue() }
	id.Namespace = str(MetaNamespace)
	id.WorkloadName = str(MetaWorkloadName)
	id.ServiceAccount = str(MetaServiceAccount)
	id.ClusterID = str(MetaClusterID)
	id.OutboundAddress = str(MetaOutboundAddress)
	id.AdminAddress = str(MetaAdminAddress)
	id.MTLS = str(MetaMTLS) == "true"
	id.AutoRegisterGroup = str(MetaAutoRegisterGroup)
	id.Generator = str(MetaGenerator)
	id.GatewayBind = str(MetaGatewayBind)
	id.HTTP10 = EnablesHTTP10(str(MetaHTTP10))
	id.VHDS = slices.Contains(n.GetClientFeatures(), FeatureVHDS)
	switch m := str(MetaInterceptionMode); m {
	case "", InterceptionNone, InterceptionRedirect:
		id.InterceptionMode = m
	default: // TPROXY, or a typo: serving REDIRECT's listeners would break the pod
		return Identity{}, fmt.Errorf("node %q: %s %q: want %s or %s", n.GetId(), MetaInterceptionMode, m, InterceptionRedirect, InterceptionNone)
	}
	for k, v := range f[MetaLabels].GetStructValue().GetFields() {
		id.Labels[k] = v.GetStringValue()
	}
	for _, ip := range strings.Split(str(MetaInstanceIPs), ",") {
		if ip = strings.TrimSpace(ip); ip != "" {
			id.IPs = append(id.IPs, ip)
		}
	}
	ap, err := ParseAppPorts(str(MetaAppPorts))
	if err != nil {
		return Identity{}, fmt.Errorf("node %q: %w", id.ID, err)
	}
	id.AppPorts = ap
	id.Locality = LocalityString(n.GetLocality())
	if id.Namespace == "" {
		id.Namespace = "default"
	}
	return id, nil
}

// SortedLabelKeys returns the label keys in order, for deterministic output.
func (id Identity) SortedLabelKeys() []string {
	keys := make([]string, 0, len(id.Labels))
	for k := range id.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// NodeLocality parses "region/zone/subzone" (trailing parts optional) into
// an Envoy locality; nil when empty.
func NodeLocality(s string) *core.Locality {
	if s == "" {
		return nil
	}
	f := strings.SplitN(s, "/", 3)
	f = append(f, make([]string, 3-len(f))...)
	return &core.Locality{Region: f[0], Zone: f[1], SubZone: f[2]}
}

// LocalityString is the inverse of NodeLocality: "region/zone/subzone"
// without trailing empty parts; "" for nil.
func LocalityString(l *core.Locality) string {
	s := l.GetRegion() + "/" + l.GetZone() + "/" + l.GetSubZone()
	return strings.TrimRight(s, "/")
}

// EnablesHTTP10 reports whether v, the value of MetaHTTP10 or of
// ISTIO_META_HTTP10, turns HTTP/1.0 on: "1" or "true", as Istio reads it.
func EnablesHTTP10(v string) bool { return v == "1" || v == "true" }
