package config

import (
	"context"
	"strings"
	"time"
)

// Source is a place config comes from besides the watched directory — the
// Kubernetes API server's Istio custom resources. Each object a source
// holds is one virtual file (path "k8s:<Kind>/<namespace>/<name>",
// content the object as YAML), so objects from every source go through
// the same decoder, validation, last-good store, conflict rules and
// traffic guard as files do. The control plane merges the files of the
// directory and of every source into the one Dir it loads.
type Source interface {
	// Name names the source in /status and logs ("kubernetes").
	Name() string
	// Run watches until ctx is done, then returns nil once every goroutine
	// it started has ended. It returns an error only when the source cannot
	// start at all; an outage after start is retried and reported by
	// Status, while Files keeps the last known objects.
	Run(ctx context.Context) error
	// Files returns the latest objects as virtual files; the caller must
	// not modify the map or its contents.
	Files() map[string][]byte
	// Changed has a value after each change of Files (capacity 1,
	// coalescing).
	Changed() <-chan struct{}
	// Synced reports whether the source has listed everything once; the
	// control plane loads nothing from a source before it has synced, so
	// a start does not drop resources that are merely not read yet.
	Synced() bool
	// Status reports the source's health for /status.
	Status() SourceStatus
}

// VirtualPrefix starts the path of every virtual file a Source provides:
// "k8s:<Kind>/<namespace>/<name>".
const VirtualPrefix = "k8s:"

// IsVirtual reports whether path names a Source's virtual file rather
// than a file on disk.
func IsVirtual(path string) bool { return strings.HasPrefix(path, VirtualPrefix) }

// Reporter is implemented by a Source that writes the outcome of each load
// back where its users look (status conditions and events of Kubernetes
// objects). The control plane calls Report after every load with the new
// snapshot; the snapshot's Diagnostics name the source's virtual files.
// Report must not block for long: it queues work for its own goroutine.
type Reporter interface {
	Report(snap *Snapshot)
}

// SourceStatus is a config source's health for /status.
type SourceStatus struct {
	Name          string    `json:"name"`
	Synced        bool      `json:"synced"`
	Connected     bool      `json:"connected"`
	Objects       int       `json:"objects"`
	LastError     string    `json:"lastError,omitempty"`
	LastErrorTime time.Time `json:"lastErrorTime,omitzero"`
	LastUpdate    time.Time `json:"lastUpdate,omitzero"`
}
