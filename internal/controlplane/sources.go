package controlplane

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/registry"
	"weft.dev/weft/internal/registry/aggregate"
	"weft.dev/weft/internal/registry/static"
)

// DefaultSourceSyncTimeout bounds how long the control plane waits for its
// config sources and registries to list everything once before it serves
// its first mesh without those that are late.
const DefaultSourceSyncTimeout = 30 * time.Second

// registryPollInterval is how often the first-sync wait looks at the
// sources again; sources signal changes, not syncs.
const registryPollInterval = 50 * time.Millisecond

// runConfig feeds the store: it watches the config directory, runs every
// config source and registry, and loads the directory's files together
// with the sources' virtual files whenever either changes. The first load
// waits until every source has synced (bounded by SourceSyncTimeout), so a
// restarting control plane never serves a mesh that lacks the Kubernetes
// objects or endpoints it has simply not read yet. A registry change
// rebuilds the mesh from the config in force; it judges the config again
// (store.Reload) only when that can change the verdict: the traffic guard
// holds or warns about something, or the set of known hosts changed.
// runConfig returns when ctx is done, after every goroutine it started has
// ended; it returns an error early when the directory cannot be watched or
// a source cannot start.
func (c *ControlPlane) runConfig(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg      sync.WaitGroup
		errMu   sync.Mutex
		errs    []error
		dirMu   sync.Mutex
		dir     *config.Dir
		dirKick = make(chan struct{}, 1)
		cfgKick = make(chan struct{}, 1)
		regKick = make(chan struct{}, 1)
	)
	defer wg.Wait()
	fail := func(err error) {
		if err != nil {
			errMu.Lock()
			errs = append(errs, err)
			errMu.Unlock()
			cancel()
		}
	}
	kick := func(ch chan struct{}) {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
	if c.opts.ConfigDir != "" {
		wg.Go(func() {
			fail(config.WatchDir(ctx, c.opts.ConfigDir, c.log, func(d *config.Dir) {
				dirMu.Lock()
				dir = d
				dirMu.Unlock()
				kick(dirKick)
			}))
		})
	} else {
		kick(dirKick) // no directory: it is read, and empty
	}
	for _, src := range c.opts.ConfigSources {
		wg.Go(func() { fail(src.Run(ctx)) })
		wg.Go(func() { forward(ctx, src.Changed(), cfgKick) })
	}
	for _, src := range c.registries() {
		wg.Go(func() { fail(src.Run(ctx)) })
		wg.Go(func() { forward(ctx, src.Changed(), regKick) })
	}
	credKick := make(chan struct{}, 1)
	if src := c.opts.Credentials; src != nil {
		wg.Go(func() { fail(src.Run(ctx)) })
		wg.Go(func() { forward(ctx, src.Changed(), credKick) })
	}

	// The first load: the directory read and every source synced.
	select {
	case <-ctx.Done():
		return joinErrs(&errMu, errs)
	case <-dirKick:
	}
	c.waitForSync(ctx)

	load := func() {
		dirMu.Lock()
		d := dir
		dirMu.Unlock()
		snap := c.store.LoadDir(c.mergeSources(d))
		c.report(snap)
		c.applyIfChanged(snap)
	}
	load()
	hosts := c.knownHosts()
	var rebuilt time.Time // when the last registry change's rebuild ended
	for {
		select {
		case <-ctx.Done():
			return joinErrs(&errMu, errs)
		case <-dirKick:
			load()
		case <-cfgKick:
			load()
		case <-credKick:
			// A Secret changed: the mesh again from the config in force;
			// only the gateways' secrets differ. Sources that report
			// Gateway API status say again which listeners' certificates
			// resolve.
			c.republish()
			for _, src := range c.opts.ConfigSources {
				if cc, ok := src.(interface{ CertificatesChanged() }); ok {
					cc.CertificatesChanged()
				}
			}
		case <-regKick:
			// A lone registry change is rebuilt at once; changes that
			// follow a rebuild within the debounce are gathered for it,
			// so a burst is one rebuild per debounce period.
			if d := c.registryDebounce(); time.Since(rebuilt) < d {
				coalesce(ctx, regKick, d)
			}
			c.registryChanged(&hosts)
			rebuilt = time.Now()
		}
	}
}

// registryChanged rebuilds the mesh for a registry change: from the
// config in force, judged again only when the known hosts changed (into
// *hosts) or the traffic guard has an opinion. The caller is runConfig's
// loop.
func (c *ControlPlane) registryChanged(hosts *map[string]string) {
	next := c.knownHosts()
	if !maps.Equal(*hosts, next) || guardHasOpinion(c.lastConfig()) {
		*hosts = next
		snap := c.store.Reload()
		c.report(snap)
		if c.applyIfChanged(snap) {
			return
		}
	}
	c.republish()
}

// waitForSync waits until every config source and registry has synced, ctx
// is done or SourceSyncTimeout passes, and says which sources were late.
func (c *ControlPlane) waitForSync(ctx context.Context) {
	if len(c.opts.ConfigSources) == 0 && len(c.opts.Registries) == 0 && c.opts.Credentials == nil {
		return
	}
	timeout := c.opts.SourceSyncTimeout
	if timeout <= 0 {
		timeout = DefaultSourceSyncTimeout
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(registryPollInterval)
	defer tick.Stop()
	for {
		var late []string
		for _, s := range c.opts.ConfigSources {
			if !s.Synced() {
				late = append(late, s.Name())
			}
		}
		for _, r := range c.opts.Registries {
			if !r.Status().Synced {
				late = append(late, r.Name())
			}
		}
		if cr := c.opts.Credentials; cr != nil && !cr.Synced() {
			late = append(late, cr.Name())
		}
		if len(late) == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-deadline.C:
			c.log.Warn("serving before every source has synced; their objects and endpoints arrive when they do",
				"late", late, "waited", timeout)
			return
		case <-tick.C:
		}
	}
}

// mergeSources is the directory's content plus every synced config
// source's virtual files (their names cannot collide with file paths).
func (c *ControlPlane) mergeSources(d *config.Dir) *config.Dir {
	if len(c.opts.ConfigSources) == 0 {
		return d
	}
	out := &config.Dir{Files: map[string][]byte{}}
	if d != nil {
		maps.Copy(out.Files, d.Files)
		out.Problems = d.Problems
	}
	for _, s := range c.opts.ConfigSources {
		if s.Synced() {
			maps.Copy(out.Files, s.Files())
		}
	}
	return out
}

// report tells every config source that writes results back (Kubernetes
// status) the outcome of a load.
func (c *ControlPlane) report(snap *config.Snapshot) {
	for _, s := range c.opts.ConfigSources {
		if r, ok := s.(config.Reporter); ok {
			r.Report(snap)
		}
	}
}

// applyIfChanged applies snap when its content differs from the config in
// force, and says whether it did.
func (c *ControlPlane) applyIfChanged(snap *config.Snapshot) bool {
	if last := c.lastConfig(); last != nil && config.SameContent(last, snap) {
		return false
	}
	c.apply(snap)
	return true
}

// lastConfig is the config snapshot in force, nil before the first.
func (c *ControlPlane) lastConfig() *config.Snapshot {
	c.publishMu.Lock()
	defer c.publishMu.Unlock()
	return c.lastCfg
}

// republish builds and pushes the mesh again from the config in force,
// for a registry change. Only what changed reaches the proxies: the xDS
// server versions each resource type, so new endpoints alone are an
// EDS-only push.
func (c *ControlPlane) republish() {
	c.publishMu.Lock()
	defer c.publishMu.Unlock()
	if c.lastCfg != nil {
		c.publish(c.lastCfg)
	}
}

// registryOf is the registry the mesh of cfg is built from (the guard
// judges candidate configs with it too): the services of the config's
// ServiceEntries merged with every registry source's, as
// aggregate.Merge does.
func (c *ControlPlane) registryOf(cfg *config.Snapshot) *registry.Snapshot {
	reg, _ := c.buildRegistry(cfg)
	return reg
}

// buildRegistry is registryOf with the conflicts between registries.
//
// A config change builds the registry of the same inputs up to three
// times: the guard judges the candidate against the config in force (one
// registry each), then publish builds the candidate's again. The inputs
// are immutable snapshots, so the last few results are kept, keyed by
// their identities, and each is built once.
func (c *ControlPlane) buildRegistry(cfg *config.Snapshot) (*registry.Snapshot, []aggregate.Conflict) {
	regs := c.registries()
	key := registryKey{cfg: cfg, sources: make([]*registry.Snapshot, len(regs))}
	for i, r := range regs {
		key.sources[i] = r.Snapshot()
	}
	if b, ok := c.regMemo.get(key); ok {
		return b.reg, b.conflicts
	}
	var workloads []*registry.Workload
	for _, s := range key.sources {
		workloads = append(workloads, s.Workloads()...)
	}
	// ServiceEntries select Pods and auto-registered VMs by labels, as
	// they select WorkloadEntries.
	st := c.staticMemo.build(cfg, workloads, func() *registry.Snapshot {
		return static.BuildWith(cfg, static.Options{DomainSuffix: c.opts.DomainSuffix, Workloads: workloads})
	})
	parts := make([]aggregate.Part, 0, len(regs)+1)
	parts = append(parts, aggregate.Part{Name: "static", Snapshot: st})
	for i, r := range regs {
		parts = append(parts, aggregate.Part{Name: r.Name(), Snapshot: key.sources[i]})
	}
	reg, conflicts := aggregate.Merge(parts...)
	c.regMemo.put(key, builtRegistry{reg: reg, conflicts: conflicts})
	return reg, conflicts
}

// registryKey identifies the inputs of buildRegistry: a config snapshot
// and each registry source's snapshot, all immutable.
type registryKey struct {
	cfg     *config.Snapshot
	sources []*registry.Snapshot
}

func (k registryKey) equal(o registryKey) bool {
	return k.cfg == o.cfg && slices.Equal(k.sources, o.sources)
}

type builtRegistry struct {
	reg       *registry.Snapshot
	conflicts []aggregate.Conflict
}

// registryMemo keeps the registries built last, most recently used
// first: the one in force and the candidate being judged or published.
// A registry holds every endpoint of the mesh, and its key the config
// snapshot it was built from, so the memo keeps no more than those two:
// with three, the registry and config replaced by the last change stayed
// alive, ~9 MB at 1,000 services. Safe for concurrent use.
type registryMemo struct {
	mu      sync.Mutex
	keys    []registryKey
	results []builtRegistry
}

const registryMemoSize = 2

// get returns the registry built from k, if kept, and makes it the most
// recently used: a rejected candidate then cannot push the registry in
// force out.
func (m *registryMemo) get(k registryKey) (builtRegistry, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i, o := range m.keys {
		if o.equal(k) {
			b := m.results[i]
			copy(m.keys[1:i+1], m.keys[:i])
			copy(m.results[1:i+1], m.results[:i])
			m.keys[0], m.results[0] = k, b
			return b, true
		}
	}
	return builtRegistry{}, false
}

func (m *registryMemo) put(k registryKey, b builtRegistry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.keys = append([]registryKey{k}, m.keys...)
	m.results = append([]builtRegistry{b}, m.results...)
	if len(m.keys) > registryMemoSize {
		clear(m.keys[registryMemoSize:])
		clear(m.results[registryMemoSize:])
		m.keys, m.results = m.keys[:registryMemoSize], m.results[:registryMemoSize]
	}
}

// staticMemo keeps the last static registry built (from the
// ServiceEntries and WorkloadEntries of a config snapshot, and the
// sources' workloads they may select): a registry change that moves
// endpoints leaves both alone, and rebuilding the static part of a
// 1,000-service mesh cost about half of merging the registries. Safe for
// concurrent use.
type staticMemo struct {
	mu        sync.Mutex
	cfg       *config.Snapshot
	workloads []*registry.Workload
	reg       *registry.Snapshot
}

// build returns the static registry of cfg and workloads, calling build
// only when either differs from the last call's (the same snapshot, the
// same workload values in the same order).
func (m *staticMemo) build(cfg *config.Snapshot, workloads []*registry.Workload, build func() *registry.Snapshot) *registry.Snapshot {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.reg != nil && m.cfg == cfg && slices.Equal(m.workloads, workloads) {
		return m.reg
	}
	m.cfg, m.workloads, m.reg = cfg, workloads, build()
	return m.reg
}

// recordConflicts keeps the conflicts of the registry in force for
// /status and logs each new one once. The caller holds publishMu.
func (c *ControlPlane) recordConflicts(cur []aggregate.Conflict) {
	for _, cf := range aggregate.Added(c.lastConflicts, cur) {
		c.log.Warn("registry conflict: one host defined differently by two registries", "host", cf.Host,
			"in_force", cf.Winner, "ignored", cf.Loser, "detail", cf.String())
	}
	c.lastConflicts = cur
	out := make([]string, 0, len(cur))
	for _, cf := range cur {
		out = append(out, cf.String())
	}
	c.conflicts.Store(&out)
}

// registries are the registry sources: the configured ones and the VMs
// registered by WorkloadGroup.
func (c *ControlPlane) registries() []registry.Source {
	return append(slices.Clone(c.opts.Registries), c.autoreg)
}

// knownHost reports whether a registry source knows fqdn: such hosts are
// not "unknown" to config validation. Safe from any goroutine.
func (c *ControlPlane) knownHost(fqdn string) bool {
	for _, r := range c.opts.Registries {
		if r.Snapshot().Service(fqdn) != nil {
			return true
		}
	}
	return false
}

// knownHosts is every host the registry sources know, with its ports, to
// tell when a registry change may change config verdicts.
func (c *ControlPlane) knownHosts() map[string]string {
	out := map[string]string{}
	seen := make(map[*registry.Service]string, len(c.portsOf))
	for _, r := range c.opts.Registries {
		for _, s := range r.Snapshot().Services() {
			// Registry snapshots are immutable and a source keeps the
			// services it saw no change to: their port lists are the
			// ones made last time (at 1,000 services, ~3 ms a change).
			joined, ok := c.portsOf[s]
			if !ok {
				var ports []string
				for _, p := range s.Ports {
					ports = append(ports, p.Name+"/"+string(p.Protocol)+"/"+itoa(p.Number))
				}
				slices.Sort(ports)
				joined = joinStrings(ports)
			}
			seen[s] = joined
			out[s.Hostname] = joined
		}
	}
	c.portsOf = seen
	return out
}

// registryDebounce is how long registry changes are gathered before one
// rebuild: the xDS debounce, which bounds pushes anyway.
func (c *ControlPlane) registryDebounce() time.Duration {
	if c.opts.Debounce > 0 {
		return c.opts.Debounce
	}
	return 20 * time.Millisecond
}

// guardHasOpinion reports whether the traffic guard holds back or warns
// about a change in cfg, a verdict new endpoints may change.
func guardHasOpinion(cfg *config.Snapshot) bool {
	if cfg == nil {
		return false
	}
	for _, d := range cfg.Diagnostics {
		if d.Code == config.CodeTrafficHeld || d.Code == config.CodeUnservedTraffic {
			return true
		}
	}
	return false
}

// forward kicks out after each value of in, until ctx is done.
func forward(ctx context.Context, in <-chan struct{}, out chan struct{}) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-in:
			select {
			case out <- struct{}{}:
			default:
			}
		}
	}
}

// coalesce waits d, absorbing further kicks, so a burst that follows a
// rebuild is one rebuild.
func coalesce(ctx context.Context, ch chan struct{}, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	select {
	case <-ch:
	default:
	}
}

func joinErrs(mu *sync.Mutex, errs []error) error {
	mu.Lock()
	defer mu.Unlock()
	return errors.Join(errs...)
}

func itoa(n uint32) string { return strconv.FormatUint(uint64(n), 10) }

func joinStrings(s []string) string { return strings.Join(s, ",") }

// registryConflicts are the conflicts of the registry in force, rendered.
func (c *ControlPlane) registryConflicts() []string {
	if p := c.conflicts.Load(); p != nil {
		return *p
	}
	return []string{}
}
