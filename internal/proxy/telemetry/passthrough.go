package telemetry

import (
	"sync"
	"sync/atomic"
)

// Istio reports traffic to a destination the mesh does not know by the
// cluster (or catch-all route) that handled it: destination_service_name
// is "PassthroughCluster" (ALLOW_ANY, the allow_any route) or
// "BlackHoleCluster" (REGISTRY_ONLY, the block_all route), the
// destination_service of an HTTP request is its Host (:authority) as the
// client sent it, and every other destination label is "unknown" (Istio's
// client-side stats filter, host header fallback on).

// MaxHostDsts bounds the Host values HostDst labels separately: the Host
// of passthrough traffic is chosen by the application, and each new one
// is a new series. Past the bound a new Host is reported as "unknown";
// the service name still says PassthroughCluster or BlackHoleCluster.
const MaxHostDsts = 1024

// hostDsts is the interned destination labels of passthrough and
// black-holed requests, by cluster name and Host. Lookups of a known pair
// take no lock.
type hostDsts struct {
	m  sync.Map // hostKey -> *DstLabels
	n  atomic.Int64
	mu sync.Mutex // adding a pair
}

type hostKey struct{ name, host string }

// HostDst returns the destination labels of an HTTP request that
// cluster (or catch-all route) name handled for a destination outside
// the mesh: destination_service host (Unknown when empty, or when
// MaxHostDsts Hosts have been seen already), destination_service_name
// name, every other destination label Unknown. Interned; safe for
// concurrent use; a known pair takes no lock, so it may be called per
// request.
func (m *Metrics) HostDst(name, host string) *DstLabels {
	if host == "" {
		host = Unknown
	}
	k := hostKey{name, host}
	if d, ok := m.hosts.m.Load(k); ok {
		return d.(*DstLabels)
	}
	m.hosts.mu.Lock()
	defer m.hosts.mu.Unlock()
	if d, ok := m.hosts.m.Load(k); ok {
		return d.(*DstLabels)
	}
	if m.hosts.n.Load() >= MaxHostDsts {
		host = Unknown // not stored: Unknown's pair is interned below once
		if d, ok := m.hosts.m.Load(hostKey{name, host}); ok {
			return d.(*DstLabels)
		}
		k = hostKey{name, host}
	}
	d := m.InternDst(DstLabels{Service: host, ServiceName: name, ServiceNamespace: Unknown,
		Workload: Unknown, WorkloadNamespace: Unknown, App: Unknown, Version: Unknown})
	m.hosts.m.Store(k, d)
	m.hosts.n.Add(1)
	return d
}
