// Package config loads Istio networking resources (VirtualService,
// DestinationRule, ServiceEntry, WorkloadEntry) from multi-document YAML into
// istio.io/api types, validates them, and keeps the last good version of
// each resource so one bad document never takes good config down with it.
// Its output is an immutable Snapshot; nothing downstream parses YAML.
package config

import (
	"fmt"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
)

// Kind is a resource kind as written in YAML.
type Kind string

// Kinds Weft loads.
const (
	KindVirtualService  Kind = "VirtualService"
	KindDestinationRule Kind = "DestinationRule"
	KindServiceEntry    Kind = "ServiceEntry"
	KindWorkloadEntry   Kind = "WorkloadEntry"
)

// Meta identifies a resource and where it was read from.
type Meta struct {
	Kind       Kind
	APIVersion string
	Namespace  string // "default" when the document leaves it out
	Name       string
	// File is the path the document was read from; Doc is its 1-based
	// index among the file's YAML documents.
	File string
	Doc  int
}

// Key identifies a resource across files and reloads: "Kind/namespace/name".
func (m Meta) Key() string { return fmt.Sprintf("%s/%s/%s", m.Kind, m.Namespace, m.Name) }

// String is "Kind namespace/name".
func (m Meta) String() string { return fmt.Sprintf("%s %s/%s", m.Kind, m.Namespace, m.Name) }

// Resource is one validated resource with its typed spec. Specs are shared
// between snapshots and must never be modified.
type Resource[T proto.Message] struct {
	Meta
	Spec T
}

// Typed resources.
type (
	VirtualService  = Resource[*networking.VirtualService]
	DestinationRule = Resource[*networking.DestinationRule]
	ServiceEntry    = Resource[*networking.ServiceEntry]
	WorkloadEntry   = Resource[*networking.WorkloadEntry]
)

// Snapshot is an immutable, versioned set of the resources in force. Each
// list is sorted by namespace, then name.
type Snapshot struct {
	// Version increases by one with every snapshot a Store produces.
	Version          uint64
	VirtualServices  []*VirtualService
	DestinationRules []*DestinationRule
	ServiceEntries   []*ServiceEntry
	WorkloadEntries  []*WorkloadEntry
	// Diagnostics are the errors and warnings of the load that produced
	// this snapshot, sorted by file, document, path.
	Diagnostics []Diagnostic
}

// Severity of a diagnostic.
type Severity string

// Severities. An error rejects the document (the last good version of the
// resource stays in force); a warning is reported and the document is used.
const (
	SeverityError   Severity = "error"
	SeverityWarning Severity = "warning"
)

// Diagnostic is one problem found while loading config, located precisely
// enough for a person to fix it without searching.
type Diagnostic struct {
	Severity Severity `json:"severity"`
	File     string   `json:"file"`
	Doc      int      `json:"doc"` // 1-based; 0 when the problem is with the whole file
	// Resource is "Kind namespace/name" when the document got that far.
	Resource string `json:"resource,omitempty"`
	// Path is the field path in the document, e.g. "spec.http[1].route[0].destination.subset".
	Path    string `json:"path,omitempty"`
	Message string `json:"message"`
}

// Error renders the diagnostic on one line:
//
//	routes.yaml: doc 2: VirtualService default/reviews: spec.http[1].route[0].destination.subset: subset "v9" is not defined by any DestinationRule for reviews.default.svc.cluster.local
func (d Diagnostic) Error() string {
	s := d.File
	if d.Doc > 0 {
		s += fmt.Sprintf(": doc %d", d.Doc)
	}
	if d.Resource != "" {
		s += ": " + d.Resource
	}
	if d.Path != "" {
		s += ": " + d.Path
	}
	return s + ": " + d.Message
}
