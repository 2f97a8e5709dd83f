package registry

import (
	"context"
	"time"
)

// Source is a registry that watches something outside the config files
// (the Kubernetes API server, a Consul catalog) and publishes immutable
// snapshots of the services, endpoints and workloads it knows. The control
// plane merges every source's snapshot with the services of the config's
// ServiceEntries (see package registry/aggregate) and rebuilds the mesh
// whenever a source signals a change.
type Source interface {
	// Name names the source in Service.Source, /status and logs
	// ("kubernetes", "consul").
	Name() string
	// Run watches until ctx is done, then returns nil once every goroutine
	// it started has ended. It returns an error only when the source cannot
	// start at all (bad address, no credentials); an outage after start is
	// retried with backoff and reported by Status, while Snapshot keeps
	// the last known state.
	Run(ctx context.Context) error
	// Snapshot returns the latest state; never nil, never modified after
	// it is returned.
	Snapshot() *Snapshot
	// Changed has a value after each new Snapshot. It has capacity 1 and
	// coalesces: a reader that was slow sees one value for many changes.
	Changed() <-chan struct{}
	// Status reports the source's health for /status.
	Status() SourceStatus
}

// SourceStatus is a registry source's health as /status shows it.
type SourceStatus struct {
	Name string `json:"name"`
	// Synced is true once the source has read its registry completely at
	// least once; until then the mesh does not wait for it, and its
	// services may be missing.
	Synced bool `json:"synced"`
	// Connected is false while the registry cannot be reached; the last
	// known snapshot keeps serving meanwhile.
	Connected bool `json:"connected"`
	// LastError is the most recent error talking to the registry, "" when
	// the last attempt succeeded.
	LastError string `json:"lastError,omitempty"`
	// LastErrorTime is when LastError happened.
	LastErrorTime time.Time `json:"lastErrorTime,omitzero"`
	// LastUpdate is when the snapshot last changed.
	LastUpdate time.Time `json:"lastUpdate,omitzero"`
	Services   int       `json:"services"`
	Endpoints  int       `json:"endpoints"`
	Workloads  int       `json:"workloads"`
}

// Workload is one running instance of an application — a Kubernetes Pod,
// a VM — that a ServiceEntry's workloadSelector may select, as Istio's
// ServiceEntry selects Pods and WorkloadEntries by labels.
type Workload struct {
	Name      string
	Namespace string
	// Address is the workload's IP.
	Address        string
	Labels         map[string]string
	ServiceAccount string
	// Locality is "region/zone/subzone"; any part may be empty.
	Locality string
	Health   Health
	// Ports maps a service port name to the port the workload receives it
	// on, as WorkloadEntry.ports; nil when the workload uses the service's
	// target ports.
	Ports map[string]uint32
	// Source names the registry ("kubernetes").
	Source string
	// WorkloadName names what the instance belongs to (a Pod's
	// Deployment) in endpoints' metadata; "" means Name.
	WorkloadName string
}

// Contents is what a Snapshot is built from.
type Contents struct {
	Services  []*Service
	Endpoints []*Endpoint
	Workloads []*Workload
}

// New builds a snapshot of c, as NewSnapshot does, keeping its workloads
// too (sorted by namespace, name).
func New(c Contents) *Snapshot {
	s := NewSnapshot(c.Services, c.Endpoints)
	s.workloads = sortWorkloads(c.Workloads)
	return s
}

// Workloads returns every workload, sorted by namespace, name.
func (s *Snapshot) Workloads() []*Workload {
	if s == nil {
		return nil
	}
	return s.workloads
}
