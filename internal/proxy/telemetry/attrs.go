package telemetry

import (
	"strings"

	"weft.dev/weft/internal/celexpr"
	"weft.dev/weft/internal/xds/contract"
)

// Node answers the node attributes of metric label expressions
// (xds.node.id, xds.node.metadata['KEY'], xds.node.metadata['LABELS']['k'])
// from the proxy's identity. Immutable; safe for concurrent use.
type Node struct {
	id       string
	metadata map[string]string
	labels   map[string]string
}

// NewNode returns the node attributes of a proxy with this identity: its
// node id and the node metadata keys Weft's proxies send (contract.Meta*).
func NewNode(id contract.Identity) *Node {
	md := map[string]string{
		contract.MetaNamespace:        id.Namespace,
		contract.MetaWorkloadName:     id.WorkloadName,
		contract.MetaServiceAccount:   id.ServiceAccount,
		contract.MetaClusterID:        id.ClusterID,
		contract.MetaInstanceIPs:      strings.Join(id.IPs, ","),
		contract.MetaInterceptionMode: id.InterceptionMode,
	}
	for k, v := range md {
		if v == "" {
			delete(md, k)
		}
	}
	return &Node{id: id.ID, metadata: md, labels: id.Labels}
}

// Attr answers NodeID, NodeMetadata and NodeLabel; false for any other
// attribute or an absent key.
func (n *Node) Attr(a celexpr.Attr) (string, bool) {
	if n == nil {
		return "", false
	}
	var v string
	var ok bool
	switch a.ID {
	case celexpr.NodeID:
		v, ok = n.id, n.id != ""
	case celexpr.NodeMetadata:
		v, ok = n.metadata[a.Key]
	case celexpr.NodeLabel:
		v, ok = n.labels[a.Key]
	}
	return v, ok
}

// SrcAttr answers a peer field (celexpr.Peer*) from source labels: the
// downstream peer of an inbound request. Unknown values are absent.
func SrcAttr(s *SrcLabels, field string) (string, bool) {
	if s == nil {
		return "", false
	}
	return peerField(field, s.App, s.Version, s.CanonicalService, s.CanonicalRevision, s.Namespace, s.Workload, s.Cluster)
}

// DstAttr answers a peer field (celexpr.Peer*) from destination labels:
// the upstream peer of an outbound request. Unknown values are absent.
func DstAttr(d *DstLabels, field string) (string, bool) {
	if d == nil {
		return "", false
	}
	return peerField(field, d.App, d.Version, d.CanonicalService, d.CanonicalRevision, d.WorkloadNamespace, d.Workload, d.Cluster)
}

func peerField(field, app, version, service, revision, namespace, workload, cluster string) (string, bool) {
	var v string
	switch field {
	case celexpr.PeerApp:
		v = app
	case celexpr.PeerVersion:
		v = version
	case celexpr.PeerService:
		v = service
	case celexpr.PeerRevision:
		v = revision
	case celexpr.PeerNamespace:
		v = namespace
	case celexpr.PeerWorkload:
		v = workload
	case celexpr.PeerCluster:
		v = cluster
	}
	if v == "" || v == Unknown {
		return "", false
	}
	return v, true
}
