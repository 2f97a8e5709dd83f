// Package webhook serves sidecar injection as a Kubernetes mutating
// admission webhook: POST /inject takes an AdmissionReview (v1) for a Pod
// and answers with a JSON patch that adds what inject.InjectPod adds. It
// serves TLS with a certificate issued by the mesh CA, keeps the caBundle
// of its MutatingWebhookConfiguration pointed at the CA's root. It has no
// side effects: the root ConfigMap the injected proxies mount
// (weft-ca-root-cert) is published to every namespace by
// internal/ca/kuberoot.
package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"reflect"
	"sync"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"

	"weft.dev/weft/internal/ca"
	"weft.dev/weft/internal/inject"
)

// Defaults.
const (
	DefaultAddress           = ":15017"
	DefaultWebhookConfigName = "weft-sidecar-injector"
	DefaultServiceName       = "weft"
	DefaultServiceNamespace  = "weft-system"
	Path                     = "/inject"
)

// Options configure the webhook.
type Options struct {
	// Address to listen on (DefaultAddress when empty).
	Address string
	// Client reaches the API server: namespaces are read (their labels
	// decide injection) and the MutatingWebhookConfiguration patched
	// (testdata/rbac.yaml lists the rights).
	Client kubernetes.Interface
	// Config is what is injected.
	Config inject.Config
	// WebhookConfigName is the MutatingWebhookConfiguration whose webhooks'
	// caBundle is kept equal to the mesh root (DefaultWebhookConfigName
	// when empty; "-" patches none).
	WebhookConfigName string
	// ServiceName and ServiceNamespace name the Service the API server
	// reaches the webhook by: the serving certificate is for
	// <name>.<namespace>.svc (and .svc.cluster.local), 127.0.0.1 and
	// localhost, plus Hosts.
	ServiceName, ServiceNamespace string
	Hosts                         []string
	Logger                        *slog.Logger
}

// Server is a running webhook; create it with New, run it once with Run.
type Server struct {
	opts    Options
	log     *slog.Logger
	ca      *ca.CA
	serving *ca.ServingCert
	ln      net.Listener
}

// New binds the listener and issues the serving certificate from c.
func New(opts Options, c *ca.CA) (*Server, error) {
	if opts.Client == nil {
		return nil, errors.New("injection webhook: a Kubernetes client is required (--kubeconfig or --in-cluster)")
	}
	if opts.Address == "" {
		opts.Address = DefaultAddress
	}
	if opts.WebhookConfigName == "" {
		opts.WebhookConfigName = DefaultWebhookConfigName
	}
	if opts.ServiceName == "" {
		opts.ServiceName = DefaultServiceName
	}
	if opts.ServiceNamespace == "" {
		opts.ServiceNamespace = DefaultServiceNamespace
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	svc := opts.ServiceName + "." + opts.ServiceNamespace + ".svc"
	hosts := append([]string{svc, svc + ".cluster.local", "127.0.0.1", "localhost"}, opts.Hosts...)
	serving, err := c.ServingCert(hosts)
	if err != nil {
		return nil, fmt.Errorf("injection webhook: %w", err)
	}
	ln, err := net.Listen("tcp", opts.Address)
	if err != nil {
		return nil, fmt.Errorf("injection webhook: listener on %s: %w", opts.Address, err)
	}
	return &Server{opts: opts, log: opts.Logger.With("component", "inject"), ca: c, serving: serving, ln: ln}, nil
}

// Addr is the bound address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close releases the listener of a Server that will not Run.
func (s *Server) Close() error { return s.ln.Close() }

// Run serves until ctx is done and keeps the webhook configuration's
// caBundle current; it returns once both have stopped.
func (s *Server) Run(ctx context.Context) error {
	mux := http.NewServeMux()
	mux.Handle(Path, s)
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         &tls.Config{GetCertificate: s.serving.GetCertificate, MinVersion: tls.VersionTLS12},
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	var wg sync.WaitGroup
	if s.opts.WebhookConfigName != "-" {
		wg.Go(func() { s.patchCABundle(ctx) })
	}
	wg.Go(func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	})
	s.log.Info("injection webhook serving", "address", s.Addr().String(), "path", Path, "webhook_configuration", s.opts.WebhookConfigName)
	err := srv.ServeTLS(s.ln, "", "")
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	} else {
		err = fmt.Errorf("injection webhook on %s: %w", s.Addr(), err)
	}
	wg.Wait()
	return err
}

// ServeHTTP answers one AdmissionReview.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "POST an AdmissionReview", http.StatusMethodNotAllowed)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil || review.Request == nil {
		http.Error(w, fmt.Sprintf("not an AdmissionReview with a request: %v", err), http.StatusBadRequest)
		return
	}
	review.Response = s.admit(r.Context(), review.Request)
	review.Response.UID = review.Request.UID
	review.Request = nil
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(&review)
}

func (s *Server) admit(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	allow := &admissionv1.AdmissionResponse{Allowed: true}
	if req.Kind.Kind != "Pod" || req.Operation != admissionv1.Create {
		return allow
	}
	deny := func(err error) *admissionv1.AdmissionResponse {
		s.log.Warn("injection refused", "namespace", req.Namespace, "name", req.Name, "error", err)
		return &admissionv1.AdmissionResponse{Result: &metav1.Status{Status: metav1.StatusFailure,
			Code: http.StatusBadRequest, Message: "weft sidecar injection: " + err.Error()}}
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		return deny(fmt.Errorf("the object is not a Pod: %w", err))
	}
	ns, err := s.opts.Client.CoreV1().Namespaces().Get(ctx, req.Namespace, metav1.GetOptions{})
	if err != nil {
		return deny(fmt.Errorf("reading namespace %s: %w", req.Namespace, err))
	}
	out, why, err := inject.InjectPod(&pod, req.Namespace, ns.Labels, s.opts.Config)
	name := pod.Name
	if name == "" {
		name = pod.GenerateName
	}
	if err != nil {
		return deny(fmt.Errorf("pod %s/%s: %w", req.Namespace, name, err))
	}
	if why != "" {
		s.log.Debug("pod not injected", "namespace", req.Namespace, "pod", name, "reason", why)
		return allow
	}
	patch, err := Patch(&pod, out)
	if err != nil {
		return deny(err)
	}
	s.log.Info("sidecar injected", "namespace", req.Namespace, "pod", name, "workload", inject.WorkloadName(&pod.ObjectMeta))
	pt := admissionv1.PatchTypeJSONPatch
	allow.Patch, allow.PatchType = patch, &pt
	return allow
}

// Patch is the RFC 6902 JSON patch turning before into after: an "add"
// (which replaces a present member) of each of metadata.labels,
// metadata.annotations and spec that differ.
func Patch(before, after *corev1.Pod) ([]byte, error) {
	type op struct {
		Op    string `json:"op"`
		Path  string `json:"path"`
		Value any    `json:"value"`
	}
	var ops []op
	if !reflect.DeepEqual(before.Labels, after.Labels) {
		ops = append(ops, op{"add", "/metadata/labels", after.Labels})
	}
	if !reflect.DeepEqual(before.Annotations, after.Annotations) {
		ops = append(ops, op{"add", "/metadata/annotations", after.Annotations})
	}
	if !reflect.DeepEqual(before.Spec, after.Spec) {
		ops = append(ops, op{"add", "/spec", after.Spec})
	}
	if ops == nil {
		return nil, nil
	}
	return json.Marshal(ops)
}

// patchCABundle keeps every webhook of the MutatingWebhookConfiguration
// trusting the mesh root: once at start and whenever the object changes
// (a watch; re-established after a second when it ends).
func (s *Server) patchCABundle(ctx context.Context) {
	api := s.opts.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	name := s.opts.WebhookConfigName
	root := s.ca.RootPEM()
	missing := false
	reconcile := func() {
		cfg, err := api.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			if !missing {
				s.log.Warn("MutatingWebhookConfiguration not found: the API server will not call the injection webhook until it exists", "name", name)
			}
			missing = true
			return
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("reading MutatingWebhookConfiguration", "name", name, "error", err)
			return
		}
		missing = false
		changed := false
		for i := range cfg.Webhooks {
			if !bytes.Equal(cfg.Webhooks[i].ClientConfig.CABundle, root) {
				cfg.Webhooks[i].ClientConfig.CABundle = root
				changed = true
			}
		}
		if !changed {
			return
		}
		if _, err := api.Update(ctx, cfg, metav1.UpdateOptions{}); err != nil {
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("patching the caBundle of MutatingWebhookConfiguration", "name", name, "error", err)
			return
		}
		s.log.Info("caBundle of MutatingWebhookConfiguration set to the mesh root", "name", name, "webhooks", len(cfg.Webhooks))
	}
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	for ctx.Err() == nil {
		reconcile()
		w, err := api.Watch(ctx, metav1.ListOptions{FieldSelector: sel})
		if err == nil {
			watchUntilClosed(ctx, w.ResultChan(), reconcile)
			w.Stop()
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// watchUntilClosed calls f for each event of ch until ch closes or ctx is
// done.
func watchUntilClosed[T any](ctx context.Context, ch <-chan T, f func()) {
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-ch:
			if !ok {
				return
			}
			f()
		}
	}
}
