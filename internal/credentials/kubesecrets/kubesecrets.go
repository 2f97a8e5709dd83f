// Package kubesecrets reads the credentials gateways name by
// credentialName from the Kubernetes API's Secrets, as istiod does: every
// Secret but service-account tokens, bootstrap tokens, registry
// credentials and Helm's releases, watched, and kept as a
// credentials.Set. Each Secret is reduced to its usable keys as it
// arrives (the informer's transform), so the cache does not hold
// annotations, managed fields or Secrets with nothing usable in them.
package kubesecrets

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"weft.dev/weft/internal/credentials"
)

// skippedTypes are the Secret types that never hold a gateway's
// credential; the API server leaves them out of the watch.
var skippedTypes = []corev1.SecretType{
	corev1.SecretTypeServiceAccountToken,
	corev1.SecretTypeBootstrapToken,
	corev1.SecretTypeDockercfg,
	corev1.SecretTypeDockerConfigJson,
	"helm.sh/release.v1",
}

// FieldSelector is the selector of the Secrets watched.
func FieldSelector() string {
	var sel []fields.Selector
	for _, t := range skippedTypes {
		sel = append(sel, fields.OneTermNotEqualSelector("type", string(t)))
	}
	return fields.AndSelectors(sel...).String()
}

// Options configure a Source.
type Options struct {
	Client kubernetes.Interface
	// Namespace restricts the watch to one namespace; "" means all.
	Namespace string
	// Debounce gathers a burst of Secret changes into one Set; 0 means
	// 100ms.
	Debounce time.Duration
	Logger   *slog.Logger
}

// Source is the Secrets of the Kubernetes API as a credentials.Source.
type Source struct {
	opts    Options
	log     *slog.Logger
	cur     atomic.Pointer[credentials.Set]
	synced  atomic.Bool
	listed  atomic.Bool // the Secrets were listed (not only counted synced)
	changed chan struct{}
	running atomic.Bool
	// lastGood and reported, by namespace/name, are rebuild's (one
	// goroutine): the last version of each Secret that passed Check, and
	// the problem last logged of each that did not.
	lastGood map[string]*credentials.Credential
	reported map[string]string
}

var _ credentials.Source = (*Source)(nil)

// New returns a Source; Run starts it.
func New(opts Options) (*Source, error) {
	if opts.Client == nil {
		return nil, errors.New("kubesecrets: a Kubernetes client is required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Debounce <= 0 {
		opts.Debounce = 100 * time.Millisecond
	}
	s := &Source{opts: opts, log: opts.Logger.With("component", "kubesecrets"), changed: make(chan struct{}, 1),
		lastGood: map[string]*credentials.Credential{}, reported: map[string]string{}}
	s.cur.Store(credentials.NewSet(nil))
	return s, nil
}

// Name is "kubernetes-secrets".
func (s *Source) Name() string { return "kubernetes-secrets" }

// Current is the latest Set.
func (s *Source) Current() *credentials.Set { return s.cur.Load() }

// Changed has a value after each new Set.
func (s *Source) Changed() <-chan struct{} { return s.changed }

// Synced is true once the Secrets were listed.
func (s *Source) Synced() bool { return s.synced.Load() }

// Certificate reports whether Secret namespace/name holds a certificate
// and key in force (credentials.Set.Certificate); nil as long as the
// Secrets have not been listed (not yet, or not allowed), when there is
// no telling.
func (s *Source) Certificate(namespace, name string) error {
	if !s.listed.Load() {
		return nil
	}
	return s.Current().Certificate(namespace, name)
}

// Run watches the Secrets until ctx is done.
func (s *Source) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("kubesecrets: Run called twice")
	}
	factory := informers.NewSharedInformerFactoryWithOptions(s.opts.Client, 0,
		informers.WithNamespace(s.opts.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = FieldSelector() }))
	inf := factory.Core().V1().Secrets().Informer()
	// Keep only what a credential is made of: the cache then holds no
	// annotations (kubectl's last-applied copy of the data), managed
	// fields or values too large to be a credential.
	if err := inf.SetTransform(func(obj any) (any, error) {
		sec, ok := obj.(*corev1.Secret)
		if !ok {
			return obj, nil
		}
		slim := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: sec.Namespace, Name: sec.Name, ResourceVersion: sec.ResourceVersion, UID: sec.UID}, Type: sec.Type}
		if c := credentials.FromData(sec.Namespace, sec.Name, sec.Data); c != nil {
			slim.Data = make(map[string][]byte, len(sec.Data))
			for k, v := range sec.Data {
				if len(v) <= credentials.MaxValue {
					slim.Data[k] = v
				}
			}
		}
		return slim, nil
	}); err != nil {
		return fmt.Errorf("kubesecrets: %w", err)
	}
	// Without the right to list Secrets (a ClusterRole from before
	// Weft read them) the watch would never sync and the control plane
	// would wait for it before serving: count it as synced, with none,
	// and say why; it syncs for real once the right is granted.
	var warned atomic.Bool
	if err := inf.SetWatchErrorHandlerWithContext(func(ctx context.Context, r *cache.Reflector, err error) {
		if apierrors.IsForbidden(err) && !s.synced.Load() && warned.CompareAndSwap(false, true) {
			s.log.Warn("cannot list Secrets: gateways get no credentials from Kubernetes (give the control plane's service account get, list and watch on secrets; docs/registries.md, RBAC)", "err", err)
			s.synced.Store(true)
		}
		cache.DefaultWatchErrorHandler(ctx, r, err)
	}); err != nil {
		return fmt.Errorf("kubesecrets: %w", err)
	}
	kick := make(chan struct{}, 1)
	poke := func(any) {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: poke, UpdateFunc: func(_, n any) { poke(n) }, DeleteFunc: poke,
	}); err != nil {
		return fmt.Errorf("kubesecrets: %w", err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() { inf.Run(ctx.Done()) })
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return nil // ctx done
	}
	s.rebuild(inf.GetStore())
	s.listed.Store(true)
	s.synced.Store(true)
	s.log.Info("Secrets read", "credentials", s.Current().Len())
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-kick:
		}
		t := time.NewTimer(s.opts.Debounce)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		}
		s.rebuild(inf.GetStore())
	}
}

// rebuild makes the Set of the store's Secrets and signals Changed when
// its content differs from the one in force. A Secret whose certificate,
// key or CA cannot be used (a rotation caught half-way, a key that does
// not match) is reported, and its last good version stays in force; one
// that never had a good version serves what of it is usable.
func (s *Source) rebuild(store cache.Store) {
	var creds []*credentials.Credential
	seen := map[string]bool{}
	for _, obj := range store.List() {
		sec, ok := obj.(*corev1.Secret)
		if !ok {
			continue
		}
		c := credentials.FromData(sec.Namespace, sec.Name, sec.Data)
		if c == nil {
			continue
		}
		key := sec.Namespace + "/" + sec.Name
		seen[key] = true
		if err := c.Check(); err != nil {
			if msg := err.Error(); s.reported[key] != msg {
				s.reported[key] = msg
				s.log.Warn("Secret not usable as a credential; its last good version (if any) stays in force",
					"secret", key, "err", err)
			}
			if good := s.lastGood[key]; good != nil {
				c = good
			} else if c = c.Usable(); c == nil {
				continue
			}
		} else {
			delete(s.reported, key)
			s.lastGood[key] = c
		}
		creds = append(creds, c)
	}
	for key := range s.lastGood {
		if !seen[key] {
			delete(s.lastGood, key)
			delete(s.reported, key)
		}
	}
	next := credentials.NewSet(creds)
	if next.Hash() == s.Current().Hash() {
		return
	}
	s.cur.Store(next)
	s.log.Debug("credentials changed", "credentials", next.Len())
	select {
	case s.changed <- struct{}{}:
	default:
	}
}
