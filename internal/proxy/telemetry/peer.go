package telemetry

import (
	"encoding/base64"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"weft.dev/weft/internal/xds/contract"
)

// maxPeerCache bounds the decoded peer metadata cache; when full it is
// dropped and refilled, which is cheap since real meshes have few peers.
const maxPeerCache = 1024

// The metadata exchange headers as net/http keys them.
var (
	HeaderPeerMetadata   = http.CanonicalHeaderKey(contract.HeaderPeerMetadata)
	HeaderPeerMetadataID = http.CanonicalHeaderKey(contract.HeaderPeerMetadataID)
)

// IdentitySrc returns the source labels of requests a proxy with this
// identity sends (not interned).
func IdentitySrc(id contract.Identity) SrcLabels {
	svc, rev := Canonical(id.Labels, id.WorkloadName)
	return SrcLabels{
		Workload: OrUnknown(id.WorkloadName), Namespace: OrUnknown(id.Namespace),
		App: OrUnknown(id.Labels["app"]), Version: OrUnknown(id.Labels["version"]),
		CanonicalService: svc, CanonicalRevision: rev, Cluster: OrUnknown(id.ClusterID),
	}
}

// IdentityDst returns the destination labels of requests a proxy with
// this identity receives for the service host (name, namespace); not
// interned.
func IdentityDst(id contract.Identity, host, name, namespace string) DstLabels {
	s := IdentitySrc(id)
	return DstLabels{Service: host, ServiceName: name, ServiceNamespace: namespace,
		Workload: s.Workload, WorkloadNamespace: s.Namespace, App: s.App, Version: s.Version,
		CanonicalService: s.CanonicalService, CanonicalRevision: s.CanonicalRevision, Cluster: s.Cluster}
}

// EncodePeerMetadata renders the proxy identity as Istio's metadata
// exchange header: base64 of a serialized google.protobuf.Struct with
// NAMESPACE, WORKLOAD_NAME, LABELS and, when set, CLUSTER_ID.
func EncodePeerMetadata(id contract.Identity) (string, error) {
	labels := map[string]any{}
	for k, v := range id.Labels {
		labels[k] = v
	}
	fields := map[string]any{
		contract.MetaNamespace:    id.Namespace,
		contract.MetaWorkloadName: id.WorkloadName,
		contract.MetaLabels:       labels,
	}
	if id.ClusterID != "" {
		fields[contract.MetaClusterID] = id.ClusterID
	}
	s, err := structpb.NewStruct(fields)
	if err != nil {
		return "", err
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(s)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// PeerCache decodes metadata exchange headers into interned source labels,
// remembering recent header values. Safe for concurrent use; lookups of a
// known header value take no lock.
type PeerCache struct {
	metrics *Metrics
	m       atomic.Pointer[sync.Map] // header value -> *SrcLabels
	n       atomic.Int64
	unknown *SrcLabels
}

// NewPeerCache returns a cache that interns labels in m.
func NewPeerCache(m *Metrics) *PeerCache {
	c := &PeerCache{metrics: m}
	c.m.Store(new(sync.Map))
	c.unknown = m.InternSrc(SrcLabels{Workload: Unknown, Namespace: Unknown, App: Unknown, Version: Unknown})
	return c
}

// Take returns the source labels of an inbound request's peer (all
// Unknown without a readable header) and removes the metadata exchange
// headers from h, so the application never sees them. Called on the
// request goroutine.
func (c *PeerCache) Take(h http.Header) *SrcLabels {
	v := h[HeaderPeerMetadata]
	if v == nil {
		return c.unknown
	}
	delete(h, HeaderPeerMetadata)
	delete(h, HeaderPeerMetadataID)
	return c.Lookup(v[0])
}

// Lookup returns the source labels of a peer whose metadata exchange
// header is v ("": none, all Unknown). Called on the request goroutine.
func (c *PeerCache) Lookup(v string) *SrcLabels {
	if v == "" {
		return c.unknown
	}
	m := c.m.Load()
	if s, ok := m.Load(v); ok {
		return s.(*SrcLabels)
	}
	s := c.decode(v)
	if c.n.Add(1) > maxPeerCache {
		c.n.Store(0)
		m = new(sync.Map)
		c.m.Store(m)
	}
	m.Store(strings.Clone(v), s) // v may be a view of a reused buffer (the byte path's)
	return s
}

func (c *PeerCache) decode(v string) *SrcLabels {
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		return c.unknown
	}
	var st structpb.Struct
	if err := proto.Unmarshal(b, &st); err != nil {
		return c.unknown
	}
	f := st.GetFields()
	labels := map[string]string{}
	for k, v := range f[contract.MetaLabels].GetStructValue().GetFields() {
		labels[k] = v.GetStringValue()
	}
	workload := f[contract.MetaWorkloadName].GetStringValue()
	svc, rev := Canonical(labels, workload)
	return c.metrics.InternSrc(SrcLabels{
		Workload:          OrUnknown(workload),
		Namespace:         OrUnknown(f[contract.MetaNamespace].GetStringValue()),
		App:               OrUnknown(labels["app"]),
		Version:           OrUnknown(labels["version"]),
		CanonicalService:  svc,
		CanonicalRevision: rev,
		Cluster:           OrUnknown(f[contract.MetaClusterID].GetStringValue()),
	})
}
