package server

import (
	"cmp"
	"maps"
	"slices"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// SyncState says how a proxy's config of one xDS type compares with the
// version the control plane holds for it, in istioctl's words.
type SyncState string

// Sync states.
const (
	// Synced: the proxy runs (has ACKed) the version the control plane holds for it.
	Synced SyncState = "SYNCED"
	// Stale: the proxy runs another version; the one held is sent and not
	// yet ACKed, or not yet sent (an ADS ordering wait, a push in flight).
	Stale SyncState = "STALE"
	// NACKed: the proxy rejected the version held for it and keeps running
	// an older one; the control plane does not re-send it until it changes.
	NACKed SyncState = "NACKED"
	// NotSent: nothing of this type was sent and the proxy reports having
	// none; usually it has not subscribed to the type.
	NotSent SyncState = "NOT SENT"
)

// ProxyStatus is one connected proxy's identity and, per xDS type, where
// its config stands. GET /debug/proxies on the control plane's status
// endpoint serves a list of them.
type ProxyStatus struct {
	Node           string            `json:"node"`
	Namespace      string            `json:"namespace"`
	Workload       string            `json:"workload"`
	Labels         map[string]string `json:"labels"`
	IPs            []string          `json:"ips"`
	ServiceAccount string            `json:"serviceAccount,omitempty"`
	Locality       string            `json:"locality,omitempty"`
	// AdminAddress is the proxy's admin endpoint, as the proxy reported it
	// in its node (WEFT_ADMIN_ADDRESS); empty when it did not.
	AdminAddress string    `json:"adminAddress,omitempty"`
	ConnectedAt  time.Time `json:"connectedAt"`
	Streams      int       `json:"streams"`
	// MeshVersion is the mesh snapshot the proxy's config was last
	// generated from; empty before the first.
	MeshVersion string `json:"meshVersion,omitempty"`
	// Types has one entry per type the server serves: CDS, LDS, EDS, RDS, and VHDS for a proxy that takes it (contract.FeatureVHDS).
	Types []TypeStatus `json:"types"`
}

// TypeStatus is where one proxy's config of one xDS type stands.
type TypeStatus struct {
	Type    string    `json:"type"` // CDS, LDS, EDS, RDS, VHDS
	TypeURL string    `json:"typeUrl"`
	State   SyncState `json:"state"`
	// Current is the version the control plane holds for the proxy: what
	// it has sent or will send next. Empty before the first snapshot.
	Current string `json:"current"`
	// Sent is the version of the last response of this type, and when.
	Sent   string    `json:"sent,omitempty"`
	SentAt time.Time `json:"sentAt,omitzero"`
	// Acked is the version the proxy reports running (a state-of-the-world
	// request's version_info; for delta xDS, the last response ACKed), and
	// since when.
	Acked   string    `json:"acked,omitempty"`
	AckedAt time.Time `json:"ackedAt,omitzero"`
	// LastNACK is the proxy's latest rejection of this type, kept after a
	// later version is accepted so the error stays visible; see State for
	// whether it still stands.
	LastNACK *Rejection `json:"lastNack,omitempty"`
}

// statusOrder is the order of ProxyStatus.Types, istioctl's.
var statusOrder = []string{resource.ClusterType, resource.ListenerType, resource.EndpointType, resource.RouteType, resource.VirtualHostType, resource.SecretType}

// shortTypes names each served type as operators know it.
var shortTypes = map[string]string{
	resource.ClusterType:     "CDS",
	resource.ListenerType:    "LDS",
	resource.EndpointType:    "EDS",
	resource.RouteType:       "RDS",
	resource.VirtualHostType: "VHDS",
	resource.SecretType:      "SDS",
}

// typeState is what the server saw of one proxy's config of one type.
// Guarded by proxy.mu.
type typeState struct {
	sent     string
	sentAt   time.Time
	acked    string
	ackedAt  time.Time
	lastNACK *Rejection // shared with proxy.rejected while it stands; copy to read
}

// typeState returns p's state of typeURL, creating it. Callers hold p.mu.
func (p *proxy) typeState(typeURL string) *typeState {
	if p.xds == nil {
		p.xds = map[string]*typeState{}
	}
	ts := p.xds[typeURL]
	if ts == nil {
		ts = &typeState{}
		p.xds[typeURL] = ts
	}
	return ts
}

// recordSent notes a response about to go out on one of p's streams.
func (p *proxy) recordSent(typeURL, version string, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ts := p.typeState(typeURL)
	ts.sent, ts.sentAt = version, now
}

// recordAcked notes the version p reports running for typeURL.
func (p *proxy) recordAcked(typeURL, version string, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.typeState(typeURL).setAcked(version, now)
}

// setAcked records the version the proxy runs; ackedAt is when it first
// reported it. Callers hold proxy.mu.
func (ts *typeState) setAcked(version string, now time.Time) {
	if version == "" {
		ts.acked, ts.ackedAt = "", time.Time{}
		return
	}
	if ts.acked != version || ts.ackedAt.IsZero() {
		ts.acked, ts.ackedAt = version, now
	}
}

// current is the version p's snapshot holds for typeURL. Callers hold p.mu.
func (p *proxy) current(typeURL string) string {
	if i := typeIndex(typeURL); i >= 0 && i < len(p.versions) {
		return p.versions[i]
	}
	return ""
}

// syncState compares what the proxy runs with what is held for it.
func syncState(current string, ts typeState) SyncState {
	switch {
	case current != "" && ts.acked == current:
		return Synced
	case current != "" && ts.lastNACK != nil && ts.lastNACK.Version == current && !ts.sentAt.After(ts.lastNACK.Last):
		// Not re-sent since the NACK (the server re-sends a rejected
		// version when another type of the set changes: then it is STALE).
		return NACKed
	case ts.sent == "" && ts.acked == "":
		return NotSent
	default:
		return Stale
	}
}

// status reads p's state. Callers hold Server.mu (for streams); it takes p.mu.
func (p *proxy) status() ProxyStatus {
	ps := ProxyStatus{
		Node:           p.id.ID,
		Namespace:      p.id.Namespace,
		Workload:       p.id.WorkloadName,
		Labels:         maps.Clone(p.id.Labels),
		IPs:            slices.Clone(p.id.IPs),
		ServiceAccount: p.id.ServiceAccount,
		Locality:       p.id.Locality,
		AdminAddress:   p.id.AdminAddress,
		ConnectedAt:    p.connectedAt,
		Streams:        p.streams,
	}
	if ps.Labels == nil {
		ps.Labels = map[string]string{}
	}
	if ps.IPs == nil {
		ps.IPs = []string{}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	ps.MeshVersion = p.meshVersion
	for _, typeURL := range statusOrder {
		if typeURL == resource.VirtualHostType && !p.id.VHDS {
			continue // served only to proxies that take it
		}
		if typeURL == resource.SecretType && !p.id.Router() {
			continue // served only to gateways
		}
		var ts typeState
		if t := p.xds[typeURL]; t != nil {
			ts = *t
		}
		cur := p.current(typeURL)
		st := TypeStatus{
			Type: shortTypes[typeURL], TypeURL: typeURL, State: syncState(cur, ts), Current: cur,
			Sent: ts.sent, SentAt: ts.sentAt, Acked: ts.acked, AckedAt: ts.ackedAt,
		}
		if ts.lastNACK != nil {
			r := *ts.lastNACK
			st.LastNACK = &r
		}
		ps.Types = append(ps.Types, st)
	}
	return ps
}

// ProxyStatuses lists every connected proxy with, per type the server
// serves, the version held for it, the last version sent and ACKed, its
// last NACK and the resulting SyncState. Sorted by node id. Safe from any
// goroutine; it does not block on pushes.
func (s *Server) ProxyStatuses() []ProxyStatus {
	s.mu.Lock()
	out := make([]ProxyStatus, 0, len(s.proxies))
	for _, p := range s.proxies {
		out = append(out, p.status())
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b ProxyStatus) int { return cmp.Compare(a.Node, b.Node) })
	return out
}
