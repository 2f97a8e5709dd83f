package config

import (
	"cmp"
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/proto"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"
	telemetry "istio.io/api/telemetry/v1alpha1"

	gwv1 "sigs.k8s.io/gateway-api/apis/v1"
	weftnet "weft.dev/weft/api/networking/v1alpha1"
	weftsec "weft.dev/weft/api/security/v1alpha1"
)

// MaxDiagnosticsPerFile caps how many diagnostics one file contributes to
// a snapshot (and to the log, and to /status); the rest are summarised in
// one more. One bad file cannot flood the operator or the control plane's
// memory.
const MaxDiagnosticsPerFile = 100

// Options configure a Store.
type Options struct {
	// DomainSuffix expands short host names; "" means cluster.local.
	DomainSuffix string
	// RootNamespace is the mesh's root namespace: PeerAuthentications
	// there without a selector apply to the whole mesh. "" means
	// DefaultRootNamespace. It decides which PeerAuthentications conflict.
	RootNamespace string
	// KnownHost reports whether a registry other than the config itself
	// knows an FQDN. It decides unknown-host warnings and the two-label
	// host case. It may be nil, and must be safe to call from Load.
	KnownHost func(fqdn string) bool
	// Admit, when set, judges every load: given the snapshot the load
	// proposes and the snapshot in force before it, it returns findings
	// about resources of the proposal. A finding with Hold set makes the
	// resource keep its version in force (or stay absent, if it is new),
	// and the load is judged again without it. Admit is how the
	// traffic-impact guard plugs in (internal/guard). It is called from
	// Load with the store's lock held: it must not call the Store, and it
	// must be deterministic. The proposal Admit judged last is the very
	// Snapshot the load then publishes (its Version and Diagnostics set
	// after Admit returns), so what Admit keeps about it by identity is
	// found again when it is in force.
	Admit func(proposed, inForce *Snapshot) []Finding
	// Logger receives every new diagnostic once; nil means slog.Default().
	Logger *slog.Logger
}

// Finding is Admit's verdict on one resource of a proposed snapshot.
type Finding struct {
	Key string // Meta.Key() of the resource
	// Hold keeps the resource's version in force instead of the proposed one.
	Hold     bool
	Severity Severity
	Code     Code
	Path     string // field path in the resource, e.g. "spec.http[1].route[0]"
	Message  string
}

// Dir is the content of a config directory as ReadDir found it.
type Dir struct {
	// Files maps each readable config file's path to its content.
	Files map[string][]byte
	// Problems maps each config file that could not be read (a dangling or
	// looping symbolic link, a read error, a named pipe called *.yaml) to
	// why. Such a file keeps its last good resources in force, exactly as
	// a file that is not valid YAML does.
	Problems map[string]*FileProblem
}

// FileProblem is why a config file could not be read.
type FileProblem struct {
	Code    Code
	Message string
}

// entry is one resource version in force.
type entry struct {
	meta        Meta
	spec        any // a protobuf of istio.io/api, or a Gateway API spec
	annotations map[string]string
	pos         Positions
}

// candidate is a resource version considered by one Load: either a
// document of this load (current) or a retained last good version.
type candidate struct {
	entry
	prev    *entry // in force before this load; nil for a new resource
	current bool
}

// Store turns sets of config files into Snapshots, keeping the last good
// version of every resource. Load, LoadDir, Reload and Snapshot are safe
// for concurrent use.
type Store struct {
	opts Options
	log  *slog.Logger

	mu       sync.Mutex // serializes loads; guards the fields below
	version  uint64
	inForce  map[string]*entry // by Meta.Key()
	seq      map[string]uint64 // first-seen order of the keys in force
	nextSeq  uint64
	decoded  map[string]*decodedFile // by path: the last decode of each file
	lastDir  *Dir
	reported map[string]bool // diagnostics already logged, by rendering

	snap atomic.Pointer[Snapshot]
}

// NewStore returns an empty Store; its Snapshot is empty at version 0.
func NewStore(opts Options) *Store {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Store{
		opts: opts, log: log.With("component", "config"),
		inForce: map[string]*entry{}, seq: map[string]uint64{},
		decoded: map[string]*decodedFile{}, reported: map[string]bool{},
	}
	s.snap.Store(&Snapshot{})
	return s
}

// Snapshot returns the latest snapshot; never nil. It does not block on a
// Load in progress.
func (s *Store) Snapshot() *Snapshot { return s.snap.Load() }

// Load is LoadDir of files that could all be read.
func (s *Store) Load(files map[string][]byte) *Snapshot {
	return s.LoadDir(&Dir{Files: files})
}

// LoadDir replaces the whole set of files the store knows, validates every
// document, and returns the new Snapshot, which Snapshot returns from then
// on.
//
// Each document is judged on its own: one with errors is rejected and the
// last good version of its resource (if any) stays in force; a file that
// is not valid YAML, is too large or cannot be read keeps every resource
// it provided before; a resource no file mentions any more is removed.
// When several documents define one resource, the one from the file its
// version in force came from keeps it and the others are errors (with none
// in force, the first in path order wins). Conflicts between resources
// (two VirtualServices or ServiceEntries for one host, DestinationRules
// for one host) are resolved by the order the store first saw them, as
// Istio resolves them by age, and reported. Options.Admit, when set, may
// hold changes back. The version increases by one on every call.
// Concurrent calls are serialized.
func (s *Store) LoadDir(dir *Dir) *Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	if dir == nil {
		dir = &Dir{}
	}
	s.lastDir = dir
	return s.load(dir)
}

// Reload judges the files of the last load again, for when something
// outside the files changed (a registry): a change the guard held may
// pass now. Files are not read again, and unchanged files are not decoded
// again.
func (s *Store) Reload() *Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lastDir == nil {
		s.lastDir = &Dir{}
	}
	return s.load(s.lastDir)
}

func (s *Store) load(dir *Dir) *Snapshot {
	files := s.decodeAll(dir)
	omitted := map[string]int{}
	for _, f := range files {
		if f.omitted > 0 {
			omitted[f.docs[0].meta.File] = f.omitted
		}
	}
	base, diags := s.candidates(files)
	s.assignSeq(base)

	// Judge the proposal; when Admit holds changes back, judge again from
	// scratch without them, so every check sees the final set.
	held := map[string]Finding{}
	var (
		cc       *crossChecker
		findings []Finding
		proposal *Snapshot // the last one judged: the cands of cc
	)
	for round := 0; ; round++ {
		cands := make(map[string]*candidate, len(base))
		for k, c := range base {
			if _, h := held[k]; h && c.changed() {
				if c.prev == nil {
					continue
				}
				c = &candidate{entry: *c.prev, prev: c.prev}
			}
			cands[k] = c
		}
		cc = &crossChecker{
			suffix: s.opts.DomainSuffix, knownHost: s.opts.KnownHost, rootNS: s.opts.RootNamespace,
			inForce: s.inForce, cands: cands,
		}
		cc.run()
		if s.opts.Admit == nil {
			break
		}
		proposal = s.snapshotOf(cc.cands, 0)
		findings = s.opts.Admit(proposal, s.Snapshot())
		progress := false
		for _, f := range findings {
			if c := cc.cands[f.Key]; f.Hold && c != nil && c.changed() {
				if _, done := held[f.Key]; !done {
					held[f.Key] = f
					progress = true
				}
			}
		}
		if !progress || round > len(base) {
			break
		}
	}
	diags = append(diags, cc.diags...)
	for key, f := range held {
		diags = append(diags, diagOf(&base[key].entry, f))
	}
	for _, f := range findings {
		if _, isHeld := held[f.Key]; isHeld {
			continue
		}
		c := cc.cands[f.Key]
		if c == nil {
			continue
		}
		if f.Hold { // not a change of this load: nothing to hold back
			f.Hold = false
			f.Severity = cmp.Or(f.Severity, SeverityWarning)
		}
		diags = append(diags, diagOf(&c.entry, f))
	}

	s.version++
	// What was judged last is what is published, the same value: Admit
	// may keep what it built from it (the guard keeps the mesh it judged)
	// and find it again when this snapshot is the one in force.
	snap := proposal
	if snap == nil {
		snap = s.snapshotOf(cc.cands, s.version)
	}
	snap.Version = s.version
	diags = append(diags, snap.Diagnostics...) // the Gateway API translation's
	for i := range diags {
		if IsVirtual(diags[i].File) {
			// Lines of a rendered object mean nothing to its author: the
			// resource and field path say where.
			diags[i].Line, diags[i].Column = 0, 0
		}
	}
	snap.Diagnostics = capPerFile(dedupe(diags), omitted)
	inForce := make(map[string]*entry, len(cc.cands))
	for key, c := range cc.cands {
		e := c.entry
		inForce[key] = &e
	}
	s.inForce = inForce
	for key := range s.seq {
		if inForce[key] == nil {
			delete(s.seq, key)
		}
	}
	s.logDiagnostics(snap)
	s.snap.Store(snap)
	return snap
}

// diagOf renders a finding on the entry it is about.
func diagOf(e *entry, f Finding) Diagnostic {
	pos := e.pos.Lookup(f.Path)
	sev := f.Severity
	if f.Hold {
		sev = SeverityError
	}
	return Diagnostic{
		Severity: sev, Code: f.Code, File: e.meta.File, Doc: e.meta.Doc, Line: pos.Line, Column: pos.Column,
		Resource: e.meta.String(), Path: f.Path, Message: f.Message,
	}
}

// snapshotOf builds a snapshot of a candidate set (without diagnostics).
func (s *Store) snapshotOf(cands map[string]*candidate, version uint64) *Snapshot {
	snap := &Snapshot{Version: version}
	for _, c := range cands {
		e := c.entry
		switch spec := e.spec.(type) {
		case *networking.VirtualService:
			snap.VirtualServices = append(snap.VirtualServices, &VirtualService{Meta: e.meta, Spec: spec, Annotations: e.annotations, Pos: e.pos})
		case *networking.DestinationRule:
			snap.DestinationRules = append(snap.DestinationRules, &DestinationRule{Meta: e.meta, Spec: spec, Annotations: e.annotations, Pos: e.pos})
		case *networking.ServiceEntry:
			snap.ServiceEntries = append(snap.ServiceEntries, &ServiceEntry{Meta: e.meta, Spec: spec, Annotations: e.annotations, Pos: e.pos})
		case *networking.WorkloadEntry:
			snap.WorkloadEntries = append(snap.WorkloadEntries, &WorkloadEntry{Meta: e.meta, Spec: spec, Annotations: e.annotations, Pos: e.pos})
		case *networking.WorkloadGroup:
			snap.WorkloadGroups = append(snap.WorkloadGroups, &WorkloadGroup{Meta: e.meta, Spec: spec, Annotations: e.annotations, Pos: e.pos})
		case *networking.Sidecar:
			snap.Sidecars = append(snap.Sidecars, &Sidecar{Meta: e.meta, Spec: spec, Annotations: e.annotations, Pos: e.pos})
		case *networking.Gateway:
			snap.Gateways = append(snap.Gateways, &Gateway{Meta: e.meta, Spec: spec, Annotations: e.annotations, Pos: e.pos})
		case *security.PeerAuthentication:
			snap.PeerAuthentications = append(snap.PeerAuthentications, &PeerAuthentication{Meta: e.meta, Spec: spec, Annotations: e.annotations, Pos: e.pos})
		case *security.AuthorizationPolicy:
			snap.AuthorizationPolicies = append(snap.AuthorizationPolicies, &AuthorizationPolicy{Meta: e.meta, Spec: spec, Annotations: e.annotations, Pos: e.pos})
		case *security.RequestAuthentication:
			snap.RequestAuthentications = append(snap.RequestAuthentications, &RequestAuthentication{Meta: e.meta, Spec: spec, Annotations: e.annotations, Pos: e.pos})
		case *telemetry.Telemetry:
			snap.Telemetries = append(snap.Telemetries, &Telemetry{Meta: e.meta, Spec: spec, Annotations: e.annotations, Pos: e.pos})
		case *weftnet.RateLimit:
			snap.RateLimits = append(snap.RateLimits, &RateLimit{Meta: e.meta, Spec: spec, Annotations: e.annotations, Pos: e.pos})
		case *gwv1.GatewayClassSpec:
			snap.GatewayClasses = append(snap.GatewayClasses, &GatewayClass{Meta: e.meta, Spec: spec, Annotations: e.annotations, Pos: e.pos})
		case *gwv1.GatewaySpec:
			snap.KubeGateways = append(snap.KubeGateways, &KubeGateway{Meta: e.meta, Spec: spec, Annotations: e.annotations, Pos: e.pos})
		case *gwv1.HTTPRouteSpec:
			snap.HTTPRoutes = append(snap.HTTPRoutes, &HTTPRoute{Meta: e.meta, Spec: spec, Annotations: e.annotations, Pos: e.pos})
		case *gwv1.GRPCRouteSpec:
			snap.GRPCRoutes = append(snap.GRPCRoutes, &GRPCRoute{Meta: e.meta, Spec: spec, Annotations: e.annotations, Pos: e.pos})
		case *gwv1.TCPRouteSpec:
			snap.TCPRoutes = append(snap.TCPRoutes, &TCPRoute{Meta: e.meta, Spec: spec, Annotations: e.annotations, Pos: e.pos})
		case *gwv1.TLSRouteSpec:
			snap.TLSRoutes = append(snap.TLSRoutes, &TLSRoute{Meta: e.meta, Spec: spec, Annotations: e.annotations, Pos: e.pos})
		case *gwv1.ReferenceGrantSpec:
			snap.ReferenceGrants = append(snap.ReferenceGrants, &ReferenceGrant{Meta: e.meta, Spec: spec, Annotations: e.annotations, Pos: e.pos})
		case *weftsec.OIDCLogin:
			snap.OIDCLogins = append(snap.OIDCLogins, &OIDCLogin{Meta: e.meta, Spec: spec, Annotations: e.annotations, Pos: e.pos})
		case *NamespaceSpec:
			snap.Namespaces = append(snap.Namespaces, &Namespace{Meta: e.meta, Spec: spec, Annotations: e.annotations, Pos: e.pos})
		}
	}
	sortResources(snap.VirtualServices)
	sortResources(snap.DestinationRules)
	sortResources(snap.ServiceEntries)
	sortResources(snap.WorkloadEntries)
	sortResources(snap.WorkloadGroups)
	sortResources(snap.Sidecars)
	sortResources(snap.Gateways)
	sortResources(snap.PeerAuthentications)
	sortResources(snap.AuthorizationPolicies)
	sortResources(snap.RequestAuthentications)
	sortResources(snap.Telemetries)
	sortResources(snap.RateLimits)
	sortResources(snap.GatewayClasses)
	sortResources(snap.KubeGateways)
	sortResources(snap.HTTPRoutes)
	sortResources(snap.GRPCRoutes)
	sortResources(snap.TCPRoutes)
	sortResources(snap.TLSRoutes)
	sortResources(snap.ReferenceGrants)
	sortResources(snap.Namespaces)
	// The Gateway API's resources become Gateways and VirtualServices
	// here, after every check of the resources as written: the gateway
	// index and generator then serve them as any other.
	snap.Diagnostics = translateGatewayAPI(snap, s.opts.DomainSuffix, s.opts.KnownHost)
	sortResources(snap.Gateways)
	sortResources(snap.VirtualServices)
	sortResources(snap.OIDCLogins)
	return snap
}

// assignSeq gives every key of cands that is not in force yet the next
// first-seen numbers, in order of creationTimestamp (resources that have
// one first), then file path and document; and writes each candidate's
// Seq into its Meta.
func (s *Store) assignSeq(cands map[string]*candidate) {
	var fresh []*candidate
	for key, c := range cands {
		if _, ok := s.seq[key]; !ok {
			fresh = append(fresh, c)
		}
	}
	slices.SortFunc(fresh, func(a, b *candidate) int {
		if az, bz := a.meta.Created.IsZero(), b.meta.Created.IsZero(); az != bz {
			if az {
				return 1
			}
			return -1
		}
		return cmp.Or(a.meta.Created.Compare(b.meta.Created), cmp.Compare(a.meta.File, b.meta.File),
			cmp.Compare(a.meta.Doc, b.meta.Doc), cmp.Compare(a.meta.Key(), b.meta.Key()))
	})
	for _, c := range fresh {
		s.nextSeq++
		s.seq[c.meta.Key()] = s.nextSeq
	}
	for key, c := range cands {
		c.meta.Seq = s.seq[key]
		if c.prev != nil {
			c.prev.meta.Seq = s.seq[key]
		}
	}
}

// decodedFile is one file's documents, validated on their own. It depends
// only on the file's path and content, so it is reused while they stay
// the same.
type decodedFile struct {
	sum      [sha256.Size]byte
	docs     []*document
	fileDiag *Diagnostic // the whole file is ignored: not YAML, too large, unreadable
	omitted  int         // diagnostics dropped past MaxDiagnosticsPerFile
}

// decodeAll decodes and validates every file of dir, reusing the previous
// decode of files whose content has not changed, and forgets files that
// are gone.
func (s *Store) decodeAll(dir *Dir) []*decodedFile {
	paths := slices.Sorted(maps.Keys(dir.Files))
	for p := range dir.Problems {
		if _, ok := dir.Files[p]; !ok {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	out := make([]*decodedFile, 0, len(paths))
	next := make(map[string]*decodedFile, len(paths))
	for _, path := range paths {
		if prob := dir.Problems[path]; prob != nil {
			f := &decodedFile{fileDiag: &Diagnostic{
				Severity: SeverityError, Code: prob.Code, File: path,
				Message: prob.Message + "; its last good resources stay in force",
			}}
			out = append(out, f)
			continue
		}
		data := dir.Files[path]
		sum := sha256.Sum256(data)
		f := s.decoded[path]
		if f == nil || f.sum != sum {
			f = decodeAndValidate(path, data)
			f.sum = sum
		}
		next[path] = f
		out = append(out, f)
	}
	s.decoded = next
	return out
}

// decodeAndValidate decodes a file and validates each document on its
// own. A document with errors keeps only what identifies it (its spec and
// positions are dropped), and a file keeps at most MaxDiagnosticsPerFile
// diagnostics, so a large bad file costs little memory.
func decodeAndValidate(path string, data []byte) *decodedFile {
	docs, fileDiag := decodeFile(path, data)
	f := &decodedFile{docs: docs, fileDiag: fileDiag}
	kept := 0
	for _, d := range docs {
		if d.spec != nil && !specMissing(d) {
			var found issues
			if pm, ok := d.spec.(proto.Message); ok {
				found = validateResource(d.meta.Namespace, pm)
			} else {
				found = validateGatewayAPI(d.spec)
			}
			if d.meta.Kind == KindGateway && !isDNSLabel(d.meta.Name) {
				// VirtualServices name gateways <namespace>/<name>.
				found = append(found, Diagnostic{Severity: SeverityError, Path: "metadata.name", Message: fmt.Sprintf("gateway name %q must be a DNS-1123 label (no dots): VirtualServices refer to it as <namespace>/<name>", d.meta.Name)})
			}
			found = append(found, validateInDocument(d.spec, d.annotations, d.pos)...)
			for _, i := range found {
				if d.decodeErrors > 0 && overlapsDecodeError(d, i.Path) {
					continue // a consequence of a value that could not be decoded
				}
				code := i.Code
				if code == "" {
					code = CodeInvalidValue
				}
				d.diags = append(d.diags, d.diag(i.Severity, code, i.Path, i.Message))
			}
		}
		if hasErrors(d.diags) {
			d.spec, d.pos, d.annotations = nil, nil, nil
		}
		if room := MaxDiagnosticsPerFile - kept; len(d.diags) > room {
			f.omitted += len(d.diags) - room
			d.diags = d.diags[:room:room]
		}
		kept += len(d.diags)
	}
	return f
}

// specMissing reports whether the document's spec could not be read at
// all (a misspelt "spec:" key, a spec that is not a mapping): validating
// the empty spec would only add noise.
func specMissing(d *document) bool {
	for _, e := range d.diags[:d.decodeErrors] {
		if e.Path == "spec" || (e.Code == CodeUnknownField && !strings.Contains(e.Path, ".")) {
			return true
		}
	}
	return false
}

// overlapsDecodeError reports whether path is, contains or is inside a
// field the document could not decode.
func overlapsDecodeError(d *document, path string) bool {
	for _, e := range d.diags[:d.decodeErrors] {
		if pathWithin(path, e.Path) || pathWithin(e.Path, path) {
			return true
		}
	}
	return false
}

// pathWithin reports whether path is prefix or inside it.
func pathWithin(path, prefix string) bool {
	if len(path) < len(prefix) || path[:len(prefix)] != prefix {
		return false
	}
	return len(path) == len(prefix) || path[len(prefix)] == '.' || path[len(prefix)] == '['
}

func hasErrors(ds []Diagnostic) bool {
	return slices.ContainsFunc(ds, func(d Diagnostic) bool { return d.Severity == SeverityError })
}

// candidates builds the candidate set (valid documents plus retained last
// good versions) with the per-document diagnostics.
//
// When several documents define the same resource, one owns it and the
// others are errors: the one in the file the version in force came from
// (it was there first), else the first in path and document order.
func (s *Store) candidates(files []*decodedFile) (map[string]*candidate, []Diagnostic) {
	var diags []Diagnostic
	cands := map[string]*candidate{}
	inForceKeys := sortedKeys(s.inForce)

	// A definition of a resource: a document of this load, or (doc == nil)
	// the version in force retained from a file that was not read.
	type definition struct {
		meta Meta
		doc  *document
	}
	defs := map[string][]definition{}
	filePath := func(f *decodedFile) string {
		if f.fileDiag != nil {
			return f.fileDiag.File
		}
		return f.docs[0].meta.File
	}
	for _, f := range files {
		if f.fileDiag != nil {
			for _, key := range inForceKeys {
				if prev := s.inForce[key]; prev.meta.File == filePath(f) {
					defs[key] = append(defs[key], definition{meta: prev.meta})
				}
			}
			continue
		}
		for _, d := range f.docs {
			if d.resource() != "" {
				defs[d.meta.Key()] = append(defs[d.meta.Key()], definition{meta: d.meta, doc: d})
			}
		}
	}
	owner := make(map[string]definition, len(defs))
	// keptInForce marks the keys whose owner is not the first definition
	// in path order but the one in force: only then do messages say so,
	// so that loading the same files again words every diagnostic the same.
	keptInForce := map[string]bool{}
	for key, ds := range defs {
		owner[key] = ds[0]
		if prev := s.inForce[key]; prev != nil {
			for i, d := range ds {
				if d.meta.File == prev.meta.File {
					owner[key] = d
					keptInForce[key] = i > 0
					break
				}
			}
		}
	}

	for _, f := range files {
		if f.fileDiag != nil {
			diags = append(diags, *f.fileDiag)
			for _, key := range inForceKeys {
				prev := s.inForce[key]
				if prev.meta.File == filePath(f) && owner[key].doc == nil {
					cands[key] = &candidate{entry: *prev, prev: prev}
				}
			}
			continue
		}
		for _, d := range f.docs {
			diags = append(diags, d.diags...)
			if d.resource() == "" {
				continue // nothing identifies a resource to keep or replace
			}
			key := d.meta.Key()
			if o := owner[key]; o.doc != d {
				where := fmt.Sprintf("%s:%d (doc %d)", o.meta.File, o.meta.Line, o.meta.Doc)
				if keptInForce[key] {
					where += ", whose version is in force"
				}
				diags = append(diags, Diagnostic{
					Severity: SeverityError, Code: CodeDuplicateResource, File: d.meta.File, Doc: d.meta.Doc,
					Line: d.meta.Line, Column: 1, Resource: d.resource(), Path: "metadata.name",
					Message: fmt.Sprintf("duplicate %s: already defined in %s; this document is ignored", d.meta, where),
				})
				continue
			}
			prev := s.inForce[key]
			if d.spec == nil {
				if prev != nil {
					cands[key] = &candidate{entry: *prev, prev: prev}
				}
				continue
			}
			cands[key] = &candidate{
				entry: entry{meta: d.meta, spec: d.spec, annotations: d.annotations, pos: d.pos},
				prev:  prev, current: true,
			}
		}
	}
	return cands, diags
}

func sortResources[T any](rs []*Resource[T]) {
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
			cmp.Compare(a.Line, b.Line),
			cmp.Compare(a.Column, b.Column),
			cmp.Compare(a.Path, b.Path),
			cmp.Compare(a.Message, b.Message),
		) < 0
	})
}

// dedupe sorts diagnostics and drops exact repeats (a check reached by
// two ways).
func dedupe(ds []Diagnostic) []Diagnostic {
	sortDiagnostics(ds)
	return slices.Compact(ds)
}

// capPerFile keeps at most MaxDiagnosticsPerFile diagnostics of each file
// (errors first) and says how many more there were, counting those
// already dropped while decoding (omitted, by file). ds must be sorted.
func capPerFile(ds []Diagnostic, omitted map[string]int) []Diagnostic {
	var out []Diagnostic
	summarise := func(file string, more int) {
		out = append(out, Diagnostic{
			Severity: SeverityInfo, Code: CodeTooManyProblems, File: file,
			Message: fmt.Sprintf("%d more problems in this file are not shown; fix the ones above first", more),
		})
	}
	seen := map[string]bool{}
	for start := 0; start < len(ds); {
		end := start
		for end < len(ds) && ds[end].File == ds[start].File {
			end++
		}
		group, file := ds[start:end], ds[start].File
		seen[file] = true
		more := omitted[file]
		if len(group) > MaxDiagnosticsPerFile {
			sorted := slices.Clone(group)
			slices.SortStableFunc(sorted, func(a, b Diagnostic) int {
				return cmp.Compare(severityRank(a.Severity), severityRank(b.Severity))
			})
			group = sorted[:MaxDiagnosticsPerFile]
			sortDiagnostics(group)
			more += len(ds[start:end]) - MaxDiagnosticsPerFile
		}
		out = append(out, group...)
		if more > 0 {
			summarise(file, more)
		}
		start = end
	}
	for _, file := range sortedKeys(omitted) {
		if !seen[file] {
			summarise(file, omitted[file])
		}
	}
	return out
}

func severityRank(s Severity) int {
	switch s {
	case SeverityError:
		return 0
	case SeverityWarning:
		return 1
	}
	return 2
}

// logDiagnostics logs the diagnostics this snapshot has that were not
// logged before (a problem is logged once, not on every reload), and
// forgets those that are gone so they are logged again if they come back.
func (s *Store) logDiagnostics(snap *Snapshot) {
	now := make(map[string]bool, len(snap.Diagnostics))
	for _, d := range snap.Diagnostics {
		key := string(d.Severity) + " " + d.Error()
		now[key] = true
		if s.reported[key] {
			continue
		}
		level, msg := slog.LevelError, "config rejected"
		switch d.Severity {
		case SeverityWarning:
			level, msg = slog.LevelWarn, "config warning"
		case SeverityInfo:
			level, msg = slog.LevelInfo, "config note"
		}
		s.log.Log(context.Background(), level, msg,
			"version", snap.Version, "code", d.Code, "file", d.File, "line", d.Line, "doc", d.Doc,
			"resource", d.Resource, "path", d.Path, "message", d.Message)
	}
	s.reported = now
}

// sameContent reports whether two snapshots hold the same resources (same
// identity, origin and spec) and diagnostics, ignoring their versions.
func sameContent(a, b *Snapshot) bool {
	return slices.Equal(a.Diagnostics, b.Diagnostics) &&
		sameResources(a.VirtualServices, b.VirtualServices) &&
		sameResources(a.DestinationRules, b.DestinationRules) &&
		sameResources(a.ServiceEntries, b.ServiceEntries) &&
		sameResources(a.WorkloadEntries, b.WorkloadEntries) &&
		sameResources(a.WorkloadGroups, b.WorkloadGroups) &&
		sameResources(a.Sidecars, b.Sidecars) &&
		sameResources(a.Gateways, b.Gateways) &&
		sameResources(a.PeerAuthentications, b.PeerAuthentications) &&
		sameResources(a.AuthorizationPolicies, b.AuthorizationPolicies) &&
		sameResources(a.RequestAuthentications, b.RequestAuthentications) &&
		sameResources(a.Telemetries, b.Telemetries) &&
		sameResources(a.RateLimits, b.RateLimits) &&
		sameResources(a.GatewayClasses, b.GatewayClasses) &&
		sameResources(a.KubeGateways, b.KubeGateways) &&
		sameResources(a.HTTPRoutes, b.HTTPRoutes) &&
		sameResources(a.GRPCRoutes, b.GRPCRoutes) &&
		sameResources(a.TCPRoutes, b.TCPRoutes) &&
		sameResources(a.TLSRoutes, b.TLSRoutes) &&
		sameResources(a.ReferenceGrants, b.ReferenceGrants) &&
		sameResources(a.OIDCLogins, b.OIDCLogins) &&
		sameResources(a.Namespaces, b.Namespaces)
}

func sameResources[T any](a, b []*Resource[T]) bool {
	return slices.EqualFunc(a, b, func(x, y *Resource[T]) bool {
		return x.Meta == y.Meta && specEqual(x.Spec, y.Spec) && maps.Equal(x.Annotations, y.Annotations)
	})
}
