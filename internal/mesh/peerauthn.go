package mesh

import (
	"weft.dev/weft/internal/config"
)

// PeerAuthnIndex answers which mutual TLS mode a workload port accepts,
// from the PeerAuthentications, with Istio's precedence (config.Compose):
// workload selector over namespace over the root namespace, the oldest
// within a level, UNSET inheriting, PERMISSIVE when nothing says
// otherwise. It is immutable after construction.
type PeerAuthnIndex struct {
	rootNS string
	byNS   map[string][]*config.PeerAuthentication
}

func newPeerAuthnIndex(pas []*config.PeerAuthentication, rootNS string) *PeerAuthnIndex {
	idx := &PeerAuthnIndex{rootNS: rootNS, byNS: map[string][]*config.PeerAuthentication{}}
	for _, pa := range pas {
		if pa.Spec != nil {
			idx.byNS[pa.Namespace] = append(idx.byNS[pa.Namespace], pa)
		}
	}
	return idx
}

// For returns the policies that govern a workload of namespace ns with
// these labels.
func (i *PeerAuthnIndex) For(ns string, labels map[string]string) config.PeerAuthnSet {
	if i == nil {
		return config.PeerAuthnSet{}
	}
	cands := i.byNS[ns]
	if ns != i.rootNS {
		cands = append(append([]*config.PeerAuthentication(nil), cands...), i.byNS[i.rootNS]...)
	}
	return config.SelectPeerAuthentications(i.rootNS, ns, labels, cands)
}

// Effective is the composed mode of a workload: its mode and the ports
// that override it.
func (i *PeerAuthnIndex) Effective(ns string, labels map[string]string) config.MergedPeerAuthn {
	return i.For(ns, labels).Compose()
}

// Mode is the mode a workload accepts on one of its ports (the port it
// receives traffic on: the endpoint port).
func (i *PeerAuthnIndex) Mode(ns string, labels map[string]string, port uint32) config.MTLSMode {
	return i.Effective(ns, labels).ModeFor(port)
}

// NamespaceMode is the mode of namespace ns ignoring workload policies:
// what Istio's BestEffortInferServiceMTLSMode uses to decide whether a
// client may use mutual TLS toward a service of ns at all.
func (i *PeerAuthnIndex) NamespaceMode(ns string) config.MTLSMode {
	set := i.For(ns, nil)
	set.Workload = nil
	return set.Compose().Mode
}
