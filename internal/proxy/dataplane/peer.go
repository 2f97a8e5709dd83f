package dataplane

import (
	"encoding/base64"
	"net/http"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"weft.dev/weft/internal/xds/contract"
)

// maxPeerCache bounds the decoded peer metadata cache; when full it is
// dropped and refilled, which is cheap since real meshes have few peers.
const maxPeerCache = 1024

var (
	hdrPeerMetadata   = http.CanonicalHeaderKey(contract.HeaderPeerMetadata)
	hdrPeerMetadataID = http.CanonicalHeaderKey(contract.HeaderPeerMetadataID)
)

// encodePeerMetadata renders the proxy identity as Istio's metadata exchange
// header: base64 of a serialized google.protobuf.Struct.
func encodePeerMetadata(id contract.Identity) (string, error) {
	labels := map[string]any{}
	for k, v := range id.Labels {
		labels[k] = v
	}
	s, err := structpb.NewStruct(map[string]any{
		contract.MetaNamespace:    id.Namespace,
		contract.MetaWorkloadName: id.WorkloadName,
		contract.MetaLabels:       labels,
	})
	if err != nil {
		return "", err
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(s)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// peerCache decodes peer metadata headers into interned source labels,
// remembering recent header values. Safe for concurrent use; lookups of a
// known header take no lock.
type peerCache struct {
	metrics *metrics
	m       atomic.Pointer[sync.Map] // header value -> *srcLabels
	n       atomic.Int64
	unknown *srcLabels
}

func newPeerCache(m *metrics) *peerCache {
	c := &peerCache{metrics: m}
	c.m.Store(new(sync.Map))
	c.unknown = m.internSrc(srcLabels{unknown, unknown, unknown, unknown})
	return c
}

// take returns the source labels of an inbound request's peer and removes
// the metadata exchange headers from it.
func (c *peerCache) take(h http.Header) *srcLabels {
	v := h[hdrPeerMetadata]
	if v == nil {
		return c.unknown
	}
	delete(h, hdrPeerMetadata)
	delete(h, hdrPeerMetadataID)
	m := c.m.Load()
	if s, ok := m.Load(v[0]); ok {
		return s.(*srcLabels)
	}
	s := c.decode(v[0])
	if c.n.Add(1) > maxPeerCache {
		c.n.Store(0)
		m = new(sync.Map)
		c.m.Store(m)
	}
	m.Store(v[0], s)
	return s
}

func (c *peerCache) decode(v string) *srcLabels {
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		return c.unknown
	}
	var st structpb.Struct
	if err := proto.Unmarshal(b, &st); err != nil {
		return c.unknown
	}
	f := st.GetFields()
	labels := f[contract.MetaLabels].GetStructValue().GetFields()
	return c.metrics.internSrc(srcLabels{
		workload:  orUnknown(f[contract.MetaWorkloadName].GetStringValue()),
		namespace: orUnknown(f[contract.MetaNamespace].GetStringValue()),
		app:       orUnknown(labels["app"].GetStringValue()),
		version:   orUnknown(labels["version"].GetStringValue()),
	})
}
