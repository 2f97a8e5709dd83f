package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/pflag"
	"k8s.io/client-go/kubernetes"

	"weft.dev/weft/internal/controlplane"
	"weft.dev/weft/internal/inject"
	"weft.dev/weft/internal/inject/webhook"
)

// injectionFlags are `weft serve`'s flags for the sidecar injection
// webhook.
type injectionFlags struct {
	addr, webhookConfig, serviceName, serviceNamespace string
	cfg                                                inject.Config
}

func (f *injectionFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.addr, "injection-address", "", "serve the sidecar injection webhook (POST /inject, TLS from the mesh CA) on this `host:port`, e.g. :15017; needs --kubeconfig or --in-cluster. Empty is off. See docs/kubernetes.md")
	fs.StringVar(&f.webhookConfig, "injection-webhook-config", webhook.DefaultWebhookConfigName, "the MutatingWebhookConfiguration `name` whose caBundle is kept equal to the mesh root; - for none")
	fs.StringVar(&f.serviceName, "injection-service", webhook.DefaultServiceName, "the Service `name` the API server reaches the webhook by (its serving certificate is for NAME.NAMESPACE.svc)")
	fs.StringVar(&f.serviceNamespace, "injection-service-namespace", "", "that Service's `namespace` (default: $POD_NAMESPACE, else weft-system)")
	fs.StringVar(&f.cfg.Image, "injection-image", inject.DefaultImage, "weft-proxy `image` of injected pods")
	fs.StringVar(&f.cfg.XDSAddress, "injection-xds-address", inject.DefaultXDSAddress, "the secure port as injected proxies reach it, `host:port`")
	fs.StringVar(&f.cfg.Revision, "injection-revision", "", "the istio.io/rev `revision` this control plane injects (empty: the default revision, namespaces labelled istio-injection=enabled)")
}

// apply sets o.Injection when --injection-address is given.
func (f *injectionFlags) apply(o *controlplane.Options, regs *registryFlags) error {
	if f.addr == "" {
		return nil
	}
	kc, err := regs.kubeConfig()
	if err != nil {
		return err
	}
	if kc == nil {
		return errors.New("--injection-address needs --kubeconfig or --in-cluster")
	}
	client, err := kubernetes.NewForConfig(kc)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	ns := f.serviceNamespace
	if ns == "" {
		ns = os.Getenv("POD_NAMESPACE")
	}
	f.cfg.TrustDomain = o.TrustDomain
	o.Injection = &webhook.Options{Address: f.addr, Client: client, Config: f.cfg, WebhookConfigName: f.webhookConfig,
		ServiceName: f.serviceName, ServiceNamespace: ns, Logger: o.Logger}
	return nil
}
