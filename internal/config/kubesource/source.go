// Package kubesource reads Istio's custom resources (and Weft's, and the
// Kubernetes Gateway API's) from a Kubernetes API server as a
// config.Source, and writes the outcome of each load back to the objects
// (status and Warning events) as a config.Reporter.
//
// Each object of a kind Weft loads becomes one virtual file,
// "k8s:<Kind>/<namespace>/<name>", whose content is the object as YAML
// (see render), so it goes through the same decoder, validation,
// last-good store, conflict rules and traffic guard as files on disk.
//
// Objects are watched with dynamic (unstructured) shared informers rather
// than istio.io/client-go's typed ones: a typed informer decodes every
// object into the istio.io/api Go types, and an object that does not
// decode (a field of the wrong type, written while the CRD's schema was
// looser, or by an older Istio) would make its whole list fail or vanish
// silently. Unstructured objects always decode, so a bad object reaches
// Weft's own decoder, is rejected with a message on its status, and its
// last good version stays in force.
package kubesource

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"weft.dev/weft/internal/config"
)

// LeaseName is the name of the Lease the status writers elect their
// leader with.
const LeaseName = "weft-status-leader"

// Defaults of Options.
const (
	DefaultLeaseNamespace = "weft-system"
	DefaultLeaseDuration  = 15 * time.Second
	DefaultRenewDeadline  = 10 * time.Second
	DefaultRetryPeriod    = 2 * time.Second
)

// Options configure a Source.
type Options struct {
	// Config reaches the API server (from a kubeconfig, or in-cluster).
	// Required. Its QPS and Burst, when zero, are raised to 50 and 100:
	// status writes after a load touch every object that changed.
	Config *rest.Config
	// Namespace, when set, limits the source to one namespace; then
	// cluster-scoped kinds (GatewayClass) are not watched, and Gateways
	// name the built-in class "weft".
	Namespace string
	// ReadOnly turns the Reporter off: no leader election, no status
	// writes, no events (for a replica that must not write, or RBAC
	// without write rights).
	ReadOnly bool
	// LeaseNamespace holds the Lease named LeaseName; "" means
	// DefaultLeaseNamespace (in a pod, pass its own namespace).
	LeaseNamespace string
	// Identity names this replica in the Lease and as the events'
	// reportingInstance; "" means the host name plus a random suffix.
	Identity string
	// LeaseDuration, RenewDeadline and RetryPeriod tune leader election
	// (client-go's meaning); zero means the defaults above. A replica that
	// stops cleanly releases the Lease; one that dies is replaced after
	// LeaseDuration.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// DocsURL, when set, is the base of each validation message's
	// documentationUrl: DocsURL + "#" + the lowercase code.
	DocsURL string
	// Certificates, when set, checks the Secret a Gateway API listener
	// names for its certificate: nil when it exists and holds a
	// certificate and key, else why not. A listener whose check fails
	// is reported ResolvedRefs false (InvalidCertificateRef), as the
	// Gateway API asks; call CertificatesChanged when its answers may
	// have changed.
	Certificates func(namespace, name string) error
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// object is what the source keeps of one watched object.
type object struct {
	kind       kind
	gvr        schema.GroupVersionResource
	namespace  string
	name       string
	generation int64
	content    []byte
}

// Source is the Kubernetes config source. It implements config.Source
// and config.Reporter; create it with New and run it with Run.
type Source struct {
	opts Options
	log  *slog.Logger
	dyn  dynamic.Interface
	kube kubernetes.Interface
	disc discovery.DiscoveryInterface

	changed chan struct{}

	mu         sync.Mutex
	objects    map[string]*object // by virtual file path
	files      map[string][]byte  // cache of Files; nil when objects changed
	served     map[string]int64   // path -> generation, as of the last Files call
	synced     bool
	connected  bool
	lastErr    string
	lastErrAt  time.Time
	lastUpdate time.Time
	missing    []string // kinds the API server does not serve
	informers  map[schema.GroupVersionResource]cache.SharedIndexInformer

	w *writer
}

var (
	_ config.Source   = (*Source)(nil)
	_ config.Reporter = (*Source)(nil)
)

// New checks opts and builds the clients; it does not contact the API
// server (Run does).
func New(opts Options) (*Source, error) {
	if opts.Config == nil {
		return nil, errors.New("kubesource: no API server config")
	}
	cfg := rest.CopyConfig(opts.Config)
	if cfg.QPS == 0 {
		cfg.QPS = 50
	}
	if cfg.Burst == 0 {
		cfg.Burst = 100
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "weft"
	}
	if opts.LeaseNamespace == "" {
		opts.LeaseNamespace = DefaultLeaseNamespace
	}
	if opts.Identity == "" {
		host, _ := os.Hostname()
		opts.Identity = strings.Trim(host+"-"+rand.String(6), "-")
	}
	opts.LeaseDuration = durationOr(opts.LeaseDuration, DefaultLeaseDuration)
	opts.RenewDeadline = durationOr(opts.RenewDeadline, DefaultRenewDeadline)
	opts.RetryPeriod = durationOr(opts.RetryPeriod, DefaultRetryPeriod)
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	s := &Source{
		opts: opts, log: log.With("component", "kubesource"),
		changed: make(chan struct{}, 1),
		objects: map[string]*object{}, served: map[string]int64{},
		informers: map[schema.GroupVersionResource]cache.SharedIndexInformer{},
	}
	// A successful request means the API server is reachable (again, after
	// a watch error): Status says Connected from then on.
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(req *http.Request) (*http.Response, error) {
			resp, err := rt.RoundTrip(req)
			if err == nil && resp.StatusCode/100 == 2 {
				s.markConnected()
			}
			return resp, err
		})
	})
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubesource: dynamic client: %w", err)
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubesource: client: %w", err)
	}
	s.dyn, s.kube, s.disc = dyn, kube, kube.Discovery()
	s.w = newWriter(s)
	return s, nil
}

func durationOr(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// Name implements config.Source.
func (s *Source) Name() string { return "kubernetes" }

// Changed implements config.Source.
func (s *Source) Changed() <-chan struct{} { return s.changed }

func (s *Source) notify() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// Synced implements config.Source: true once every watched kind has been
// listed and each listed object turned into a file.
func (s *Source) Synced() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.synced
}

// Files implements config.Source. It also remembers which generation of
// each object it returned, so that Report, called with the snapshot made
// from these files, writes the observedGeneration that was judged.
func (s *Source) Files() map[string][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.files == nil {
		s.files = make(map[string][]byte, len(s.objects))
		for p, o := range s.objects {
			s.files[p] = o.content
		}
	}
	served := make(map[string]int64, len(s.objects))
	for p, o := range s.objects {
		served[p] = o.generation
	}
	s.served = served
	return s.files
}

// Status implements config.Source.
func (s *Source) Status() config.SourceStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	objects := 0
	for _, o := range s.objects {
		if o.kind.kind != config.KindNamespace { // read for their labels, not config
			objects++
		}
	}
	st := config.SourceStatus{
		Name: s.Name(), Synced: s.synced, Connected: s.connected, Objects: objects,
		LastError: s.lastErr, LastErrorTime: s.lastErrAt, LastUpdate: s.lastUpdate,
	}
	if len(s.missing) > 0 && st.LastError == "" {
		st.LastError = "the API server serves no " + strings.Join(s.missing, ", ") + " (their CRDs are not installed); those kinds are not watched"
	}
	return st
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func (s *Source) markConnected() {
	s.mu.Lock()
	s.connected = true
	s.mu.Unlock()
}

func (s *Source) setError(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastErr, s.lastErrAt, s.connected = err.Error(), time.Now(), false
}

// Run implements config.Source; call it once. It finds the served versions of Istio's
// kinds (retrying while the API server cannot be reached), watches them
// until ctx is done and, unless ReadOnly, runs the status writer and its
// leader election. It returns nil after everything it started has ended.
func (s *Source) Run(ctx context.Context) error {
	watched, err := s.discover(ctx)
	if err != nil {
		return nil // ctx done before the API server answered
	}
	watched = s.readable(ctx, watched)
	factory := dynamicinformer.NewFilteredDynamicSharedInformerFactory(s.dyn, 0, s.opts.Namespace, nil)
	var regs []cache.ResourceEventHandlerRegistration
	for _, w := range watched {
		inf := factory.ForResource(w.gvr).Informer()
		_ = inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
			s.setError(fmt.Errorf("watch %s: %w", w.gvr.GroupResource(), err))
			s.log.Warn("watch failed; retrying", "resource", w.gvr.String(), "error", err)
		})
		reg, err := inf.AddEventHandler(s.handler(w))
		if err != nil {
			return fmt.Errorf("kubesource: watch %s: %w", w.gvr, err)
		}
		regs = append(regs, reg)
		s.mu.Lock()
		s.informers[w.gvr] = inf
		s.mu.Unlock()
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()

	var wg sync.WaitGroup
	defer wg.Wait()
	if !s.opts.ReadOnly {
		wg.Go(func() { s.w.run(ctx) })
		wg.Go(func() { s.w.elect(ctx) })
	}

	syncs := make([]cache.InformerSynced, len(regs))
	for i, r := range regs {
		syncs[i] = r.HasSynced
	}
	if !cache.WaitForCacheSync(ctx.Done(), syncs...) {
		return nil
	}
	s.mu.Lock()
	s.synced, s.connected, s.lastUpdate = true, true, time.Now()
	n := len(s.objects)
	s.mu.Unlock()
	s.log.Info("synced", "objects", n, "kinds", len(watched))
	s.notify()
	<-ctx.Done()
	return nil
}

// readable drops Namespaces from watched when this replica may not list
// them (RBAC written before Weft read them), rather than wait for a sync
// that never comes: a Gateway API listener's namespace selector then sees
// only each namespace's kubernetes.io/metadata.name.
func (s *Source) readable(ctx context.Context, watched []watchedKind) []watchedKind {
	return slices.DeleteFunc(watched, func(w watchedKind) bool {
		if w.kind.kind != config.KindNamespace {
			return false
		}
		_, err := s.dyn.Resource(w.gvr).List(ctx, metav1.ListOptions{Limit: 1})
		if apierrors.IsForbidden(err) {
			s.log.Warn("cannot list namespaces (grant get, list, watch on namespaces): Gateway API listeners' namespace selectors see only kubernetes.io/metadata.name", "error", err)
			return true
		}
		return false
	})
}

// watchedKind is a kind at the version the API server serves it.
type watchedKind struct {
	kind
	gvr schema.GroupVersionResource
}

// discover finds, for each kind, the most preferred version the API
// server serves. Kinds whose CRD is not installed are left out and
// reported by Status, except the Gateway API's: a cluster without it is
// an ordinary cluster, so their absence is only logged. It retries until the API server answers or ctx is
// done (then it returns ctx's error).
func (s *Source) discover(ctx context.Context) ([]watchedKind, error) {
	backoff := time.Second
	for {
		watched, missing, err := s.discoverOnce()
		if err == nil {
			var gwapi []string
			missing = slices.DeleteFunc(missing, func(k string) bool {
				if isGatewayAPIKind(config.Kind(k)) {
					gwapi = append(gwapi, k)
					return true
				}
				return false
			})
			s.mu.Lock()
			s.missing = missing
			s.mu.Unlock()
			if len(missing) > 0 {
				s.log.Warn("kinds not served by the API server are not watched (install their CRDs: the weft-crds chart has Istio's and Weft's)", "kinds", strings.Join(missing, ", "))
			}
			if len(gwapi) > 0 {
				s.log.Info("the Gateway API's kinds not served by the API server are not watched (install its CRDs, then restart, to use them)", "kinds", strings.Join(gwapi, ", "))
			}
			return watched, nil
		}
		s.setError(err)
		s.log.Warn("cannot reach the API server; retrying", "error", err, "in", backoff)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

func (s *Source) discoverOnce() (watched []watchedKind, missing []string, err error) {
	served := map[string]map[string]bool{} // group/version -> resources
	lookup := func(gv string) (map[string]bool, error) {
		if r, ok := served[gv]; ok {
			return r, nil
		}
		list, err := s.disc.ServerResourcesForGroupVersion(gv)
		r := map[string]bool{}
		switch {
		case err == nil:
			for _, res := range list.APIResources {
				r[res.Name] = true
			}
		case apierrors.IsNotFound(err): // the group or version is not served
		default:
			return nil, fmt.Errorf("discover %s: %w", gv, err)
		}
		served[gv] = r
		return r, nil
	}
	for _, k := range kinds {
		if clusterScoped(k.kind) && s.opts.Namespace != "" {
			// One namespace's rights reach no cluster-scoped object: the
			// built-in classes (config.BuiltinGatewayClass) serve.
			continue
		}
		found := false
		for _, v := range k.versions {
			gv := k.group + "/" + v
			if k.group == "" {
				gv = v // the core group
			}
			r, err := lookup(gv)
			if err != nil {
				return nil, nil, err
			}
			if r[k.resource] {
				watched = append(watched, watchedKind{kind: k, gvr: k.gvr(v)})
				found = true
				break
			}
		}
		if !found {
			missing = append(missing, string(k.kind))
		}
	}
	return watched, missing, nil
}

// handler keeps s.objects up to date with one informer's objects.
func (s *Source) handler(w watchedKind) cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { s.upsert(w, obj) },
		UpdateFunc: func(_, obj any) { s.upsert(w, obj) },
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			m, err := meta.Accessor(obj)
			if err != nil {
				return
			}
			path := FilePath(w.kind.kind, m.GetNamespace(), m.GetName())
			s.mu.Lock()
			_, had := s.objects[path]
			delete(s.objects, path)
			s.files = nil
			s.lastUpdate = time.Now()
			synced := s.synced
			s.mu.Unlock()
			s.w.forget(path)
			if had && synced {
				s.notify()
			}
		},
	}
}

// upsert records an added or updated object; a change that leaves its
// virtual file as it was (a status write, ours or anyone's) is not a
// change of Files, but may need the status writer to look again.
func (s *Source) upsert(w watchedKind, obj any) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return
	}
	content, err := render(u)
	if err != nil {
		s.log.Error("object cannot be rendered; ignored", "error", err)
		return
	}
	path := FilePath(w.kind.kind, u.GetNamespace(), u.GetName())
	o := &object{kind: w.kind, gvr: w.gvr, namespace: u.GetNamespace(), name: u.GetName(), generation: u.GetGeneration(), content: content}
	s.mu.Lock()
	prev := s.objects[path]
	same := prev != nil && string(prev.content) == string(content) && prev.generation == o.generation
	if !same {
		s.objects[path] = o
		s.files = nil
		s.lastUpdate = time.Now()
	}
	synced := s.synced
	s.mu.Unlock()
	if same {
		s.w.poke() // someone may have changed the status we wrote
		return
	}
	if synced {
		s.notify()
	}
}

// cached returns the informer's current copy of the object at path, or
// nil; it must not be modified.
func (s *Source) cached(path string) (*unstructured.Unstructured, *object) {
	s.mu.Lock()
	o := s.objects[path]
	var inf cache.SharedIndexInformer
	if o != nil {
		inf = s.informers[o.gvr]
	}
	s.mu.Unlock()
	if o == nil || inf == nil {
		return nil, nil
	}
	key := o.name
	if o.namespace != "" {
		key = o.namespace + "/" + o.name
	}
	item, ok, err := inf.GetStore().GetByKey(key)
	if err != nil || !ok {
		return nil, nil
	}
	u, _ := item.(*unstructured.Unstructured)
	return u, o
}

// servedGenerations returns the generations the last Files call returned.
func (s *Source) servedGenerations() map[string]int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.served)
}
