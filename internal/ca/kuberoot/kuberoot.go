// Package kuberoot publishes the mesh's root certificate to every
// Kubernetes namespace as the ConfigMap weft-ca-root-cert (key
// root-cert.pem), as istiod publishes istio-ca-root-cert: a pod mounts it
// and its sidecar verifies the control plane and its peers against it
// (weft-proxy --root-cert). The ConfigMap is created in each namespace,
// and put back when it is edited or deleted. Several control-plane
// replicas may run it: each writes only when the content differs, and
// they all write the same root.
package kuberoot

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// Names of the ConfigMap and its key.
const (
	ConfigMapName = "weft-ca-root-cert"
	Key           = "root-cert.pem"
)

// Publisher keeps the root ConfigMap in every namespace.
type Publisher struct {
	client kubernetes.Interface
	log    *slog.Logger
}

// New returns a publisher using client; nil log means slog.Default().
func New(client kubernetes.Interface, log *slog.Logger) *Publisher {
	if log == nil {
		log = slog.Default()
	}
	return &Publisher{client: client, log: log.With("component", "kuberoot")}
}

// Run publishes rootPEM until ctx is done, then returns nil once its
// goroutines have ended.
func (p *Publisher) Run(ctx context.Context, rootPEM []byte) error {
	factory := informers.NewSharedInformerFactoryWithOptions(p.client, 0)
	nsInf := factory.Core().V1().Namespaces()
	cmFactory := informers.NewSharedInformerFactoryWithOptions(p.client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", ConfigMapName).String()
	}))
	cmInf := cmFactory.Core().V1().ConfigMaps()

	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())
	defer q.ShutDown()
	enqueueNS := func(obj any) {
		if ns, ok := obj.(*corev1.Namespace); ok {
			q.Add(ns.Name)
		}
	}
	enqueueCM := func(obj any) {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		if cm, ok := obj.(*corev1.ConfigMap); ok {
			q.Add(cm.Namespace)
		}
	}
	if _, err := nsInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: enqueueNS, UpdateFunc: func(_, n any) { enqueueNS(n) }}); err != nil {
		return fmt.Errorf("kuberoot: %w", err)
	}
	if _, err := cmInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(_, n any) { enqueueCM(n) }, DeleteFunc: enqueueCM,
	}); err != nil {
		return fmt.Errorf("kuberoot: %w", err)
	}
	factory.Start(ctx.Done())
	cmFactory.Start(ctx.Done())
	defer factory.Shutdown()
	defer cmFactory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), nsInf.Informer().HasSynced, cmInf.Informer().HasSynced) {
		return nil
	}
	go func() {
		<-ctx.Done()
		q.ShutDown()
	}()
	for {
		ns, quit := q.Get()
		if quit {
			return nil
		}
		err := p.reconcile(ctx, ns, rootPEM, nsInf.Lister().Get, cmInf.Lister().ConfigMaps(ns).Get)
		if err != nil && ctx.Err() == nil {
			p.log.Warn("cannot publish the root certificate; retrying", "namespace", ns, "err", err)
			q.AddRateLimited(ns)
		} else {
			q.Forget(ns)
		}
		q.Done(ns)
	}
}

// reconcile makes namespace ns hold the root ConfigMap with rootPEM.
func (p *Publisher) reconcile(ctx context.Context, ns string, rootPEM []byte,
	getNS func(string) (*corev1.Namespace, error), getCM func(string) (*corev1.ConfigMap, error)) error {
	n, err := getNS(ns)
	if apierrors.IsNotFound(err) || (err == nil && n.Status.Phase == corev1.NamespaceTerminating) {
		return nil // gone or going: nothing to keep
	}
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cms := p.client.CoreV1().ConfigMaps(ns)
	cur, err := getCM(ConfigMapName)
	switch {
	case apierrors.IsNotFound(err):
		_, err = cms.Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: ConfigMapName, Namespace: ns,
				Labels: map[string]string{"app.kubernetes.io/managed-by": "weft"}},
			Data: map[string]string{Key: string(rootPEM)},
		}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return nil // the informer brings it, and an update if it differs
		}
		return err
	case err != nil:
		return err
	case bytes.Equal([]byte(cur.Data[Key]), rootPEM):
		return nil
	}
	upd := cur.DeepCopy()
	if upd.Data == nil {
		upd.Data = map[string]string{}
	}
	upd.Data[Key] = string(rootPEM)
	_, err = cms.Update(ctx, upd, metav1.UpdateOptions{})
	return err
}
