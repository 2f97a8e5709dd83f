package config

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
)

// Options configure a Store.
type Options struct {
	// DomainSuffix expands short host names; "" means cluster.local.
	DomainSuffix string
	// KnownHost reports whether a registry other than the config itself
	// knows an FQDN. It decides unknown-host warnings and the two-label
	// host case. It may be nil, and must be safe to call from Load.
	KnownHost func(fqdn string) bool
	// Logger receives every diagnostic once per Load; nil means slog.Default().
	Logger *slog.Logger
}

// entry is one resource version in force.
type entry struct {
	meta Meta
	spec proto.Message
}

// candidate is a resource version considered by one Load: either a
// document of this load (current) or a retained last good version.
type candidate struct {
	entry
	prev    *entry // in force before this load; nil for a new resource
	current bool
}

// Store turns sets of config files into Snapshots, keeping the last good
// version of every resource. Load and Snapshot are safe for concurrent use.
type Store struct {
	opts Options
	log  *slog.Logger

	mu      sync.Mutex // serializes Load; guards the fields below
	version uint64
	inForce map[string]*entry // by Meta.Key()

	snap atomic.Pointer[Snapshot]
}

// NewStore returns an empty Store; its Snapshot is empty at version 0.
func NewStore(opts Options) *Store {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Store{opts: opts, log: log.With("component", "config"), inForce: map[string]*entry{}}
	s.snap.Store(&Snapshot{})
	return s
}

// Snapshot returns the latest snapshot; never nil. It does not block on a
// Load in progress.
func (s *Store) Snapshot() *Snapshot { return s.snap.Load() }

// Load replaces the whole set of files the store knows (path -> content),
// validates every document, and returns the new Snapshot, which Snapshot
// returns from then on. Each document is judged on its own: one with errors
// is rejected and the last good version of its resource (if any) stays in
// force; a file that is not valid YAML keeps every resource it provided
// before; a resource no file mentions any more is removed. When several
// documents define one resource, the one from the file its version in force
// came from keeps it and the others are errors (with none in force, the
// first in path order wins). The version increases by one on every call.
// Concurrent calls are serialized.
func (s *Store) Load(files map[string][]byte) *Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()

	cands, diags := s.candidates(files)
	cc := &crossChecker{
		suffix:    s.opts.DomainSuffix,
		knownHost: s.opts.KnownHost,
		inForce:   s.inForce,
		cands:     cands,
	}
	cc.run()
	diags = append(diags, cc.diags...)

	s.version++
	snap := &Snapshot{Version: s.version, Diagnostics: diags}
	inForce := make(map[string]*entry, len(cc.cands))
	for key, c := range cc.cands {
		e := c.entry
		inForce[key] = &e
		switch spec := e.spec.(type) {
		case *networking.VirtualService:
			snap.VirtualServices = append(snap.VirtualServices, &VirtualService{Meta: e.meta, Spec: spec})
		case *networking.DestinationRule:
			snap.DestinationRules = append(snap.DestinationRules, &DestinationRule{Meta: e.meta, Spec: spec})
		case *networking.ServiceEntry:
			snap.ServiceEntries = append(snap.ServiceEntries, &ServiceEntry{Meta: e.meta, Spec: spec})
		case *networking.WorkloadEntry:
			snap.WorkloadEntries = append(snap.WorkloadEntries, &WorkloadEntry{Meta: e.meta, Spec: spec})
		}
	}
	sortResources(snap.VirtualServices)
	sortResources(snap.DestinationRules)
	sortResources(snap.ServiceEntries)
	sortResources(snap.WorkloadEntries)
	sortDiagnostics(snap.Diagnostics)
	s.inForce = inForce
	s.logDiagnostics(snap)
	s.snap.Store(snap)
	return snap
}

// candidates decodes and validates every document and returns the
// candidate set (valid documents plus retained last good versions) with
// the per-document diagnostics.
//
// When several documents define the same resource, one owns it and the
// others are errors: the one in the file the version in force came from
// (it was there first), else the first in path and document order.
func (s *Store) candidates(files map[string][]byte) (map[string]*candidate, []Diagnostic) {
	var diags []Diagnostic
	cands := map[string]*candidate{}
	inForceKeys := sortedKeys(s.inForce)

	// A definition of a resource: a document of this load, or (doc == nil)
	// the version in force retained from a file that is not valid YAML.
	type definition struct {
		meta Meta
		doc  *document
	}
	type decoded struct {
		path     string
		docs     []*document
		fileDiag *Diagnostic
	}
	var (
		decodedFiles []decoded
		defs         = map[string][]definition{}
	)
	for _, path := range sortedKeys(files) {
		docs, fileDiag := decodeFile(path, files[path])
		decodedFiles = append(decodedFiles, decoded{path, docs, fileDiag})
		if fileDiag != nil {
			for _, key := range inForceKeys {
				if prev := s.inForce[key]; prev.meta.File == path {
					defs[key] = append(defs[key], definition{meta: prev.meta})
				}
			}
			continue
		}
		for _, d := range docs {
			if d.resource() != "" {
				defs[d.meta.Key()] = append(defs[d.meta.Key()], definition{meta: d.meta, doc: d})
			}
		}
	}
	owner := make(map[string]definition, len(defs))
	for key, ds := range defs {
		owner[key] = ds[0]
		if prev := s.inForce[key]; prev != nil {
			for _, d := range ds {
				if d.meta.File == prev.meta.File {
					owner[key] = d
					break
				}
			}
		}
	}

	for _, f := range decodedFiles {
		if f.fileDiag != nil {
			diags = append(diags, *f.fileDiag)
			for _, key := range inForceKeys {
				prev := s.inForce[key]
				if prev.meta.File == f.path && owner[key].doc == nil {
					cands[key] = &candidate{entry: *prev, prev: prev}
				}
			}
			continue
		}
		for _, d := range f.docs {
			diags = append(diags, d.diags...)
			var is issues
			if d.spec != nil {
				is = validateSpec(d.spec)
				for _, i := range is {
					i.File, i.Doc, i.Resource = d.meta.File, d.meta.Doc, d.resource()
					diags = append(diags, i)
				}
			}
			if d.resource() == "" {
				continue // nothing identifies a resource to keep or replace
			}
			key := d.meta.Key()
			if o := owner[key]; o.doc != d {
				where := fmt.Sprintf("%s doc %d", o.meta.File, o.meta.Doc)
				if prev := s.inForce[key]; prev != nil && o.meta.File == prev.meta.File {
					where += ", whose version is in force"
				}
				diags = append(diags, Diagnostic{
					Severity: SeverityError, File: d.meta.File, Doc: d.meta.Doc, Resource: d.resource(),
					Path:    "metadata.name",
					Message: fmt.Sprintf("duplicate %s: already defined in %s; this document is ignored", d.meta, where),
				})
				continue
			}
			prev := s.inForce[key]
			if d.spec == nil || is.hasErrors() {
				if prev != nil {
					cands[key] = &candidate{entry: *prev, prev: prev}
				}
				continue
			}
			cands[key] = &candidate{entry: entry{meta: d.meta, spec: d.spec}, prev: prev, current: true}
		}
	}
	return cands, diags
}

func sortResources[T proto.Message](rs []*Resource[T]) {
	slices.SortFunc(rs, func(a, b *Resource[T]) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
}

func sortDiagnostics(ds []Diagnostic) {
	sort.SliceStable(ds, func(i, j int) bool {
		a, b := ds[i], ds[j]
		return cmp.Or(
			cmp.Compare(a.File, b.File),
			cmp.Compare(a.Doc, b.Doc),
			cmp.Compare(a.Path, b.Path),
			cmp.Compare(a.Message, b.Message),
		) < 0
	})
}

func (s *Store) logDiagnostics(snap *Snapshot) {
	for _, d := range snap.Diagnostics {
		level, msg := slog.LevelError, "config rejected"
		if d.Severity == SeverityWarning {
			level, msg = slog.LevelWarn, "config warning"
		}
		s.log.Log(context.Background(), level, msg,
			"version", snap.Version, "file", d.File, "doc", d.Doc,
			"resource", d.Resource, "path", d.Path, "message", d.Message)
	}
}

// sameContent reports whether two snapshots hold the same resources (same
// identity, origin and spec) and diagnostics, ignoring their versions.
func sameContent(a, b *Snapshot) bool {
	return slices.Equal(a.Diagnostics, b.Diagnostics) &&
		sameResources(a.VirtualServices, b.VirtualServices) &&
		sameResources(a.DestinationRules, b.DestinationRules) &&
		sameResources(a.ServiceEntries, b.ServiceEntries) &&
		sameResources(a.WorkloadEntries, b.WorkloadEntries)
}

func sameResources[T proto.Message](a, b []*Resource[T]) bool {
	return slices.EqualFunc(a, b, func(x, y *Resource[T]) bool {
		return x.Meta == y.Meta && proto.Equal(x.Spec, y.Spec)
	})
}
