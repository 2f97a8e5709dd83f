// Package kube is the Kubernetes registry: a registry.Source that watches
// Services, EndpointSlices, Pods and Nodes (and Namespaces, when a
// namespace selector is set) with client-go shared informers and
// publishes them as mesh services, endpoints and workloads.
//
// The mapping, in brief (convert.go has each rule):
//   - a Service is the host <name>.<ns>.svc.<domain suffix> with its TCP
//     ports; a port's protocol is its appProtocol, else Istio's port-name
//     rules (http, http-*, http2, grpc-*, https, tls, tcp, mongo…);
//   - its endpoints come from its EndpointSlices (ready → Healthy, serving
//     and terminating → Draining, not ready → Unhealthy), each address on
//     each slice port whose name is a service port's name, with the Pod's
//     labels, service account, workload name and locality;
//   - an ExternalName Service's endpoint is its external DNS name, which
//     proxies resolve (registry.DNS);
//   - every Pod with an IP is a registry.Workload, which ServiceEntries'
//     workloadSelectors select (see static.BuildWith).
//
// Informer events mark what changed; a debounced rebuild reconverts only
// that and publishes a new immutable snapshot.
package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"weft.dev/weft/internal/registry"
)

// SourceName is the registry's name: Service.Source, Workload.Source and
// SourceStatus.Name.
const SourceName = "kubernetes"

// Default debounce timings.
const (
	DefaultDebounce = 100 * time.Millisecond
	DefaultMaxDelay = time.Second
)

// Options configure a Registry.
type Options struct {
	// Config reaches the API server (from a kubeconfig or in-cluster);
	// required. The Registry copies it.
	Config *rest.Config
	// DomainSuffix is the cluster domain of Service hosts
	// (<svc>.<ns>.svc.<suffix>); "" means registry.DefaultDomainSuffix.
	DomainSuffix string
	// Namespaces, when not empty, are the only namespaces watched: the
	// Registry then lists and watches Services, EndpointSlices and Pods in
	// each of them (namespaced RBAC suffices for those), instead of in
	// all namespaces. Nodes are always watched cluster-wide.
	Namespaces []string
	// NamespaceSelector, when not empty, is a label selector (as kubectl
	// spells it: "mesh=enabled,env!=dev") on Namespaces: only Services
	// and Pods in namespaces whose labels match are published, like
	// Istio's discoverySelectors. It needs list/watch on namespaces.
	NamespaceSelector string
	// Debounce is how long the Registry waits after an event for more
	// before it rebuilds, when the event follows a rebuild by less than
	// Debounce (a lone event is built at once); DefaultDebounce when zero.
	// MaxDelay bounds the wait while events keep coming (DefaultMaxDelay
	// when zero).
	Debounce, MaxDelay time.Duration
	// Logger; slog.Default() when nil.
	Logger *slog.Logger
}

// Registry is the Kubernetes registry. Create it with New, start it with
// Run; its other methods are safe from any goroutine.
type Registry struct {
	opts    Options
	client  kubernetes.Interface
	log     *slog.Logger
	nsSel   labels.Selector
	changed chan struct{}
	snap    atomic.Pointer[registry.Snapshot]
	started atomic.Bool

	// kick has a value when events are waiting for a build.
	kick chan struct{}

	mu      sync.Mutex // guards the fields below
	pending *dirty
	status  registry.SourceStatus
	// errs: the last list/watch error of each resource ("pods", …),
	// removed when a request for it succeeds.
	errs map[string]error
	// netErr: the last request failed to reach the API server.
	netErr bool
}

var _ registry.Source = (*Registry)(nil)

// New checks opts and builds a Registry; it does not contact the API
// server (Run does).
func New(opts Options) (*Registry, error) {
	if opts.Config == nil {
		return nil, errors.New("kubernetes registry: no API server configuration (Options.Config)")
	}
	if opts.Debounce <= 0 {
		opts.Debounce = DefaultDebounce
	}
	if opts.MaxDelay <= 0 {
		opts.MaxDelay = DefaultMaxDelay
	}
	if opts.MaxDelay < opts.Debounce {
		opts.MaxDelay = opts.Debounce
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	opts.Namespaces = slices.Compact(slices.Sorted(slices.Values(opts.Namespaces)))
	if slices.Contains(opts.Namespaces, "") {
		return nil, errors.New("kubernetes registry: an empty namespace in Options.Namespaces (leave the list empty to watch all)")
	}
	r := &Registry{
		opts:    opts,
		log:     opts.Logger.With("registry", SourceName),
		changed: make(chan struct{}, 1),
		kick:    make(chan struct{}, 1),
		pending: newDirty(),
		errs:    map[string]error{},
		status:  registry.SourceStatus{Name: SourceName},
	}
	if opts.NamespaceSelector != "" {
		sel, err := labels.Parse(opts.NamespaceSelector)
		if err != nil {
			return nil, fmt.Errorf("kubernetes registry: namespace selector %q: %w", opts.NamespaceSelector, err)
		}
		r.nsSel = sel
	}
	cfg := rest.CopyConfig(opts.Config)
	cfg.Wrap(r.observe)
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes registry: API server %s: %w", opts.Config.Host, err)
	}
	r.client = client
	r.snap.Store(registry.New(registry.Contents{}))
	return r, nil
}

// Name returns SourceName.
func (r *Registry) Name() string { return SourceName }

// Snapshot returns the latest snapshot; empty until the first sync.
func (r *Registry) Snapshot() *registry.Snapshot { return r.snap.Load() }

// Changed has a value after each new snapshot (capacity 1, coalescing).
func (r *Registry) Changed() <-chan struct{} { return r.changed }

// Status reports whether the informers have synced, whether the API
// server answers, the last list/watch error and the snapshot's counts.
func (r *Registry) Status() registry.SourceStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.status
	st.Connected = !r.netErr
	st.LastError = ""
	for _, k := range sortedKeys(r.errs) {
		st.LastError = k + ": " + r.errs[k].Error()
		break
	}
	return st
}

// Run checks that the API server accepts the credentials (an error if it
// answers 401), starts the informers, waits for their first list, publishes the
// first snapshot (Status().Synced becomes true) and then rebuilds after
// each change until ctx is done. It returns nil once the informers have
// stopped. An API server that cannot be reached is retried by the
// informers (client-go's backoff) and reported by Status; Run does not
// fail for it. Run may be called once.
func (r *Registry) Run(ctx context.Context) error {
	if !r.started.CompareAndSwap(false, true) {
		return errors.New("kubernetes registry: Run called twice")
	}
	if err := r.checkCredentials(ctx); err != nil {
		return err
	}
	st, factories := r.informers()
	defer func() {
		for _, f := range factories {
			f.Shutdown() // waits for the informers' goroutines
		}
	}()
	for _, f := range factories {
		f.Start(ctx.Done())
	}
	r.log.Info("watching the API server", "host", r.opts.Config.Host, "namespaces", r.opts.Namespaces, "namespaceSelector", r.opts.NamespaceSelector)
	for _, f := range factories {
		for typ, ok := range f.WaitForCacheSync(ctx.Done()) {
			if !ok && ctx.Err() == nil {
				r.log.Warn("informer did not sync", "type", typ.String())
			}
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	b := newBuilder(r.opts.DomainSuffix)
	b.st = st
	b.nsSelector = r.nsSel
	r.mu.Lock()
	r.pending = newDirty()
	r.mu.Unlock()
	everything := newDirty()
	everything.all = true
	r.publish(b.build(everything), true)
	r.loop(ctx, b)
	return nil
}

// checkCredentials asks the API server for its version once: a server that
// refuses our credentials (401) is a configuration error Run reports at
// once. Any other failure (not reachable yet, slow) is left to the
// informers' retries.
func (r *Registry) checkCredentials(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := r.client.Discovery().RESTClient().Get().AbsPath("/version").Do(ctx).Error()
	if apierrors.IsUnauthorized(err) {
		return fmt.Errorf("kubernetes registry: the API server at %s refused our credentials: %w", r.opts.Config.Host, err)
	}
	if err != nil && ctx.Err() == nil {
		r.log.Warn("API server not reachable yet; retrying", "host", r.opts.Config.Host, "error", err)
	}
	return nil
}

// informers creates the informer factories and their event handlers.
func (r *Registry) informers() (stores, []informers.SharedInformerFactory) {
	st := stores{services: store{}, slices: store{}, pods: store{}, nodes: store{}, namespaces: store{}}
	nsList := r.opts.Namespaces
	if len(nsList) == 0 {
		nsList = []string{""} // all
	}
	var factories []informers.SharedInformerFactory
	for _, ns := range nsList {
		f := informers.NewSharedInformerFactoryWithOptions(r.client, 0, informers.WithNamespace(ns))
		factories = append(factories, f)

		svc := f.Core().V1().Services().Informer()
		r.watch(svc, "services", func(old, cur any) {
			for _, o := range []any{old, cur} {
				if s := asService(o); s != nil {
					r.mark(func(d *dirty) { d.services[s.Namespace+"/"+s.Name] = true })
				}
			}
		})
		st.services[ns] = svc.GetIndexer()

		sl := f.Discovery().V1().EndpointSlices().Informer()
		must(sl.AddIndexers(cache.Indexers{indexService: sliceServiceIndex}))
		r.watch(sl, "endpointslices", func(old, cur any) {
			for _, o := range []any{old, cur} {
				if s := asSlice(o); s != nil && s.Labels[discoveryv1.LabelServiceName] != "" {
					r.mark(func(d *dirty) { d.services[s.Namespace+"/"+s.Labels[discoveryv1.LabelServiceName]] = true })
				}
			}
		})
		st.slices[ns] = sl.GetIndexer()

		pods := f.Core().V1().Pods().Informer()
		must(pods.AddIndexers(cache.Indexers{indexIP: podIPIndex, indexNode: podNodeIndex}))
		r.watch(pods, "pods", func(old, cur any) {
			o, c := asPod(old), asPod(cur)
			if o != nil && c != nil && !podRelevantChange(o, c) {
				return
			}
			if p := cmpOr(c, o); p != nil {
				r.mark(func(d *dirty) { d.pods[p.Namespace+"/"+p.Name] = true })
			}
		})
		st.pods[ns] = pods.GetIndexer()
	}

	cluster := informers.NewSharedInformerFactoryWithOptions(r.client, 0)
	factories = append(factories, cluster)
	nodes := cluster.Core().V1().Nodes().Informer()
	r.watch(nodes, "nodes", func(old, cur any) {
		o, c := asNode(old), asNode(cur)
		if o != nil && c != nil && !nodeRelevantChange(o, c) {
			return
		}
		if n := cmpOr(c, o); n != nil {
			r.mark(func(d *dirty) { d.nodes[n.Name] = true })
		}
	})
	st.nodes[""] = nodes.GetIndexer()
	if r.nsSel != nil {
		nsInf := cluster.Core().V1().Namespaces().Informer()
		r.watch(nsInf, "namespaces", func(old, cur any) {
			o, c := asNamespace(old), asNamespace(cur)
			if o != nil && c != nil && maps.Equal(o.Labels, c.Labels) {
				return
			}
			r.mark(func(d *dirty) { d.all = true })
		})
		st.namespaces[""] = nsInf.GetIndexer()
	}
	return st, factories
}

// watch registers on(old, cur) for every add (old nil), update and delete
// (cur nil) of inf's objects, slims what it caches and records its list/watch errors under resource.
func (r *Registry) watch(inf cache.SharedIndexInformer, resource string, on func(old, cur any)) {
	must(inf.SetTransform(slim))
	must(inf.SetWatchErrorHandlerWithContext(func(ctx context.Context, _ *cache.Reflector, err error) {
		if ctx.Err() != nil {
			return
		}
		r.mu.Lock()
		r.errs[resource] = err
		r.status.LastErrorTime = time.Now()
		r.mu.Unlock()
		r.log.Warn("list/watch failed; retrying", "resource", resource, "error", err)
	}))
	_, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { on(nil, obj) },
		UpdateFunc: func(old, cur any) { on(old, cur) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			on(obj, nil)
		},
	})
	must(err)
}

// slim drops what the registry never reads before an informer caches an
// object: managed fields and annotations of every object, and of Pods and
// Nodes everything but what the conversion reads (a Node's status, with
// its image list, is most of its bytes; a Pod's spec is mostly
// containers' commands, environment and volumes). That keeps a large
// cluster's caches small.
func slim(obj any) (any, error) {
	switch o := obj.(type) {
	case *corev1.Pod:
		return slimPod(o), nil
	case *corev1.Node:
		return &corev1.Node{TypeMeta: o.TypeMeta, ObjectMeta: slimMeta(o.ObjectMeta)}, nil
	case metav1.Object:
		o.SetManagedFields(nil)
	}
	return obj, nil
}

func slimMeta(m metav1.ObjectMeta) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name: m.Name, GenerateName: m.GenerateName, Namespace: m.Namespace, UID: m.UID,
		ResourceVersion: m.ResourceVersion, Generation: m.Generation, CreationTimestamp: m.CreationTimestamp,
		DeletionTimestamp: m.DeletionTimestamp, Labels: m.Labels, OwnerReferences: m.OwnerReferences,
	}
}

// slimPod keeps what convertPod, podRelevantChange and the indexes read.
func slimPod(p *corev1.Pod) *corev1.Pod {
	ports := func(cs []corev1.Container) []corev1.Container {
		var out []corev1.Container
		for _, c := range cs {
			if len(c.Ports) > 0 {
				out = append(out, corev1.Container{Name: c.Name, Ports: c.Ports, RestartPolicy: c.RestartPolicy})
			}
		}
		return out
	}
	var conds []corev1.PodCondition
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			conds = append(conds, corev1.PodCondition{Type: c.Type, Status: c.Status})
		}
	}
	return &corev1.Pod{
		TypeMeta:   p.TypeMeta,
		ObjectMeta: slimMeta(p.ObjectMeta),
		Spec: corev1.PodSpec{
			NodeName:           p.Spec.NodeName,
			ServiceAccountName: p.Spec.ServiceAccountName,
			HostNetwork:        p.Spec.HostNetwork,
			Containers:         ports(p.Spec.Containers),
			InitContainers:     ports(p.Spec.InitContainers),
		},
		Status: corev1.PodStatus{Phase: p.Status.Phase, PodIP: p.Status.PodIP, PodIPs: p.Status.PodIPs, Conditions: conds},
	}
}

// must panics on errors that only a programming mistake causes (adding an
// index or handler to an informer that has started).
func must(err error) {
	if err != nil {
		panic(fmt.Sprintf("kubernetes registry: %v", err))
	}
}

// mark records a change for the next build and wakes the loop.
func (r *Registry) mark(f func(*dirty)) {
	r.mu.Lock()
	f(r.pending)
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

func (r *Registry) take() *dirty {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.pending
	r.pending = newDirty()
	return d
}

// loop rebuilds after changes. The first event after a quiet spell (no
// rebuild for Debounce) is built at once; an event that follows a rebuild
// sooner starts a burst, built once events stop for Debounce, or MaxDelay
// after its first.
func (r *Registry) loop(ctx context.Context, b *builder) {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var built time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
		}
		first := time.Now()
		if first.Sub(built) >= r.opts.Debounce {
			if d := r.take(); !d.empty() {
				r.publish(b.build(d), false)
			}
			built = time.Now()
			continue
		}
		timer.Reset(r.opts.Debounce)
	wait:
		for {
			select {
			case <-ctx.Done():
				return
			case <-r.kick:
				if left := r.opts.MaxDelay - time.Since(first); left > 0 {
					timer.Reset(min(r.opts.Debounce, left))
				}
			case <-timer.C:
				break wait
			}
		}
		if d := r.take(); !d.empty() {
			r.publish(b.build(d), false)
		}
		built = time.Now()
	}
}

// publish stores a new snapshot, updates Status and signals Changed.
func (r *Registry) publish(c registry.Contents, first bool) {
	r.snap.Store(registry.New(c))
	r.mu.Lock()
	r.status.Synced = true
	r.status.LastUpdate = time.Now()
	r.status.Services, r.status.Endpoints, r.status.Workloads = len(c.Services), len(c.Endpoints), len(c.Workloads)
	r.mu.Unlock()
	if first {
		r.log.Info("synced", "services", len(c.Services), "endpoints", len(c.Endpoints), "workloads", len(c.Workloads))
	} else {
		r.log.Debug("rebuilt", "services", len(c.Services), "endpoints", len(c.Endpoints), "workloads", len(c.Workloads))
	}
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

func asService(o any) *corev1.Service          { s, _ := o.(*corev1.Service); return s }
func asSlice(o any) *discoveryv1.EndpointSlice { s, _ := o.(*discoveryv1.EndpointSlice); return s }
func asPod(o any) *corev1.Pod                  { p, _ := o.(*corev1.Pod); return p }
func asNode(o any) *corev1.Node                { n, _ := o.(*corev1.Node); return n }
func asNamespace(o any) *corev1.Namespace      { n, _ := o.(*corev1.Namespace); return n }

func cmpOr[T any](a, b *T) *T {
	if a != nil {
		return a
	}
	return b
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
