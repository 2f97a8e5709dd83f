// Package autoreg is VM auto-registration, as Istio's: a proxy that
// connects with the name of a WorkloadGroup of its namespace
// (weft-proxy --auto-register-group) becomes a workload of the mesh — the
// group's template and labels with the proxy's own address, labels and
// locality — for as long as it is connected, and for a grace period after
// it disconnects, so a proxy that reconnects (to another control plane
// replica, after a network blip) does not churn endpoints. The workloads
// are a registry source: ServiceEntries select them by labels exactly as
// they select WorkloadEntries.
//
// The entries live in the control plane's memory; with several replicas,
// each knows the VMs connected to it.
package autoreg

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/registry"
	"weft.dev/weft/internal/xds/contract"
)

// Name is the registry's name (Workload.Source, /status).
const Name = "autoregistration"

// DefaultGrace is how long a disconnected VM stays registered, Istio's
// PILOT_WORKLOAD_ENTRY_GRACE_PERIOD default.
const DefaultGrace = 10 * time.Second

// Options configure a Registry.
type Options struct {
	// Grace is how long a workload stays after its proxy disconnects; 0
	// means DefaultGrace.
	Grace  time.Duration
	Logger *slog.Logger
}

// Registry is the auto-registered workloads. Connect and Disconnect are
// the xDS server's hooks; SetGroups is called with every config in force.
// All methods are safe for concurrent use.
type Registry struct {
	grace time.Duration
	log   *slog.Logger

	mu      sync.Mutex
	groups  map[string]*config.WorkloadGroup // by namespace/name
	conns   map[string]*conn                 // by node id
	refused map[string]string                // node id -> why, for Status
	synced  bool
	updated time.Time
	wake    chan struct{} // Run re-arms its expiry timer

	snap    atomic.Pointer[registry.Snapshot]
	changed chan struct{}
}

// conn is one registering proxy.
type conn struct {
	id contract.Identity
	// gone is when its proxy disconnected; zero while connected.
	gone time.Time
}

// New returns an empty registry.
func New(opts Options) *Registry {
	if opts.Grace <= 0 {
		opts.Grace = DefaultGrace
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	r := &Registry{
		grace: opts.Grace, log: opts.Logger.With("component", "autoregistration"),
		groups: map[string]*config.WorkloadGroup{}, conns: map[string]*conn{}, refused: map[string]string{},
		wake: make(chan struct{}, 1), changed: make(chan struct{}, 1),
	}
	r.snap.Store(registry.New(registry.Contents{}))
	return r
}

// Name implements registry.Source.
func (r *Registry) Name() string { return Name }

// Snapshot implements registry.Source.
func (r *Registry) Snapshot() *registry.Snapshot { return r.snap.Load() }

// Changed implements registry.Source.
func (r *Registry) Changed() <-chan struct{} { return r.changed }

// Status implements registry.Source. LastError lists proxies that asked to
// register and could not (no such group, a service account the group does
// not allow).
func (r *Registry) Status() registry.SourceStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := registry.SourceStatus{Name: Name, Synced: r.synced, Connected: true, LastUpdate: r.updated,
		Workloads: len(r.snap.Load().Workloads())}
	var why []string
	for _, node := range slices.Sorted(maps.Keys(r.refused)) {
		why = append(why, node+": "+r.refused[node])
	}
	st.LastError = strings.Join(why, "; ")
	return st
}

// Run removes workloads whose grace period ended, until ctx is done.
func (r *Registry) Run(ctx context.Context) error {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		r.mu.Lock()
		next := r.expireLocked(time.Now())
		r.mu.Unlock()
		t.Reset(next)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-r.wake:
		}
	}
}

// SetGroups takes the WorkloadGroups of the config in force. The first call
// marks the registry synced: before it no group is known.
func (r *Registry) SetGroups(cfg *config.Snapshot) {
	groups := map[string]*config.WorkloadGroup{}
	for _, g := range cfg.WorkloadGroups {
		groups[g.Namespace+"/"+g.Name] = g
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.synced = true
	if maps.EqualFunc(groups, r.groups, func(a, b *config.WorkloadGroup) bool { return a == b }) {
		return
	}
	r.groups = groups
	r.rebuildLocked()
}

// Connect is the xDS server's OnConnect hook.
func (r *Registry) Connect(id contract.Identity) {
	if id.AutoRegisterGroup == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.conns[id.ID] = &conn{id: id}
	r.log.Info("VM connected for auto-registration", "node", id.ID, "group", id.Namespace+"/"+id.AutoRegisterGroup)
	r.rebuildLocked()
}

// Disconnect is the xDS server's OnDisconnect hook: the workload stays for
// the grace period.
func (r *Registry) Disconnect(id contract.Identity) {
	if id.AutoRegisterGroup == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	c, ok := r.conns[id.ID]
	if !ok {
		return
	}
	c.gone = time.Now()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// expireLocked drops connections whose grace ended and returns how long
// until the next one does (an hour when none is pending).
func (r *Registry) expireLocked(now time.Time) time.Duration {
	next := time.Hour
	dropped := false
	for node, c := range r.conns {
		if c.gone.IsZero() {
			continue
		}
		if left := c.gone.Add(r.grace).Sub(now); left > 0 {
			next = min(next, left)
			continue
		}
		delete(r.conns, node)
		delete(r.refused, node)
		r.log.Info("VM unregistered after its grace period", "node", node, "grace", r.grace)
		dropped = true
	}
	if dropped {
		r.rebuildLocked()
	}
	return next
}

// rebuildLocked makes the snapshot of the current groups and connections
// and signals Changed when it differs.
func (r *Registry) rebuildLocked() {
	var ws []*registry.Workload
	refused := map[string]string{}
	for _, node := range slices.Sorted(maps.Keys(r.conns)) {
		c := r.conns[node]
		w, why := workload(c.id, r.groups[c.id.Namespace+"/"+c.id.AutoRegisterGroup])
		if why != "" {
			refused[node] = why
			if r.refused[node] != why {
				r.log.Warn("VM not registered", "node", node, "reason", why)
			}
			continue
		}
		ws = append(ws, w)
	}
	r.refused = refused
	if slices.EqualFunc(ws, r.snap.Load().Workloads(), sameWorkload) {
		return
	}
	r.snap.Store(registry.New(registry.Contents{Workloads: ws}))
	r.updated = time.Now()
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// workload is what proxy id registers as with group g, or why it cannot.
// Labels are the template's, then the group's metadata labels, then the
// proxy's own (the most specific wins); the service account and locality
// are the template's, else the proxy's. A template that names a service
// account admits only proxies proving that account: registration must not
// let a workload claim another's endpoints.
func workload(id contract.Identity, g *config.WorkloadGroup) (*registry.Workload, string) {
	if g == nil {
		return nil, fmt.Sprintf("WorkloadGroup %s/%s does not exist", id.Namespace, id.AutoRegisterGroup)
	}
	if len(id.IPs) == 0 {
		return nil, "the proxy reported no address (--ip)"
	}
	t := g.Spec.GetTemplate()
	sa := t.GetServiceAccount()
	if sa == "" {
		sa = id.ServiceAccount
	} else if id.ServiceAccount != sa {
		return nil, fmt.Sprintf("WorkloadGroup %s/%s is for service account %q, the proxy is %q", id.Namespace, id.AutoRegisterGroup, sa, id.ServiceAccount)
	}
	labels := map[string]string{}
	maps.Copy(labels, t.GetLabels())
	maps.Copy(labels, g.Spec.GetMetadata().GetLabels())
	maps.Copy(labels, id.Labels)
	loc := t.GetLocality()
	if loc == "" {
		loc = id.Locality
	}
	var ports map[string]uint32
	if len(t.GetPorts()) > 0 {
		ports = maps.Clone(t.GetPorts())
	}
	return &registry.Workload{
		// Istio names the WorkloadEntry <group>-<address>.
		Name:           id.AutoRegisterGroup + "-" + strings.NewReplacer(".", "-", ":", "-").Replace(id.IPs[0]),
		Namespace:      id.Namespace,
		Address:        id.IPs[0],
		Labels:         labels,
		ServiceAccount: sa,
		Locality:       loc,
		Health:         registry.Healthy,
		Ports:          ports,
		Source:         Name,
	}, ""
}

func sameWorkload(a, b *registry.Workload) bool {
	return a.Name == b.Name && a.Namespace == b.Namespace && a.Address == b.Address && maps.Equal(a.Labels, b.Labels) &&
		a.ServiceAccount == b.ServiceAccount && a.Locality == b.Locality && a.Health == b.Health && maps.Equal(a.Ports, b.Ports)
}
