package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/pflag"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"weft.dev/weft/internal/ca/kuberoot"
	"weft.dev/weft/internal/ca/kubetoken"
	"weft.dev/weft/internal/config/kubesource"
	"weft.dev/weft/internal/controlplane"
	"weft.dev/weft/internal/credentials/kubesecrets"
	"weft.dev/weft/internal/registry/consul"
	kuberegistry "weft.dev/weft/internal/registry/kube"
)

// registryFlags are `weft serve`'s flags for the sources of config and
// services besides the config directory: Kubernetes and Consul.
type registryFlags struct {
	kubeconfig, kubeNamespace, kubeAudience, leaseNamespace string
	kubeNamespaceSelector                                   string
	inCluster, kubeReadOnly                                 bool

	consulAddr, consulDomain, consulDatacenter, consulNamespace string
	consulNoAlias                                               bool
}

func (f *registryFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "read Istio config (VirtualService, DestinationRule, … custom resources), Services, EndpointSlices and Pods from the Kubernetes API server this kubeconfig `file` names; see docs/registries.md")
	fs.BoolVar(&f.inCluster, "in-cluster", false, "like --kubeconfig, with the pod's own service account (running inside Kubernetes)")
	fs.StringVar(&f.kubeNamespace, "kube-namespace", "", "read Istio config, Services and Pods from this Kubernetes `namespace` only (default: all)")
	fs.StringVar(&f.kubeNamespaceSelector, "kube-namespace-selector", "", "publish only Services and Pods of namespaces whose labels match this `selector` (as kubectl spells it, e.g. istio-discovery=enabled), as Istio's discoverySelectors")
	fs.StringVar(&f.kubeAudience, "kube-token-audience", kubetoken.DefaultAudience, "the `audience` of projected service-account tokens the CA accepts from pods (verified with TokenReview)")
	fs.StringVar(&f.leaseNamespace, "leader-election-namespace", kubesource.DefaultLeaseNamespace, "`namespace` of the Lease that elects the one replica writing status and events")
	fs.BoolVar(&f.kubeReadOnly, "kube-read-only", false, "never write status or events to Kubernetes (no leader election)")
	fs.StringVar(&f.consulAddr, "consul", "", "read services from the Consul catalog at this agent's HTTP `address` (host:port or URL; CONSUL_HTTP_TOKEN and CONSUL_CACERT … as for the consul CLI); see docs/registries.md")
	fs.StringVar(&f.consulDomain, "consul-domain", consul.DefaultDomain, "a Consul service NAME is the mesh host NAME.`domain` (and NAME, a short alias)")
	fs.StringVar(&f.consulDatacenter, "consul-datacenter", "", "the Consul `datacenter` to read (default: the agent's)")
	fs.StringVar(&f.consulNamespace, "consul-namespace", consul.DefaultNamespace, "the mesh `namespace` of Consul services (their config, policies and metrics labels)")
	fs.BoolVar(&f.consulNoAlias, "consul-no-short-alias", false, "do not also route the bare Consul service name")
}

// kubeConfig is the API server configuration the flags name, or nil.
func (f *registryFlags) kubeConfig() (*rest.Config, error) {
	switch {
	case f.kubeconfig != "" && f.inCluster:
		return nil, errors.New("--kubeconfig and --in-cluster: give one")
	case f.kubeconfig != "":
		if _, err := os.Stat(f.kubeconfig); err != nil {
			return nil, fmt.Errorf("--kubeconfig: %w", err)
		}
		cfg, err := clientcmd.BuildConfigFromFlags("", f.kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("--kubeconfig %s: %w", f.kubeconfig, err)
		}
		return cfg, nil
	case f.inCluster:
		cfg, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("--in-cluster: %w", err)
		}
		return cfg, nil
	}
	return nil, nil
}

// apply adds the sources the flags ask for to o.
func (f *registryFlags) apply(o *controlplane.Options, log *slog.Logger) error {
	kc, err := f.kubeConfig()
	if err != nil {
		return err
	}
	if kc != nil {
		// client-go's own logs (leader election, reflectors) go where ours do.
		klog.SetSlogLogger(log)
		client, err := kubernetes.NewForConfig(kc)
		if err != nil {
			return fmt.Errorf("kubernetes client: %w", err)
		}
		creds, err := kubesecrets.New(kubesecrets.Options{Client: client, Namespace: f.kubeNamespace, Logger: log})
		if err != nil {
			return err
		}
		o.Credentials = creds
		src, err := kubesource.New(kubesource.Options{Config: kc, Namespace: f.kubeNamespace, ReadOnly: f.kubeReadOnly,
			LeaseNamespace: f.leaseNamespace, Identity: os.Getenv("POD_NAME"), Logger: log,
			Certificates: creds.Certificate})
		if err != nil {
			return err
		}
		o.ConfigSources = append(o.ConfigSources, src)
		td := o.TrustDomain
		if td == "" {
			td = "cluster.local"
		}
		auth, err := kubetoken.New(kubetoken.Options{TokenReviews: client.AuthenticationV1().TokenReviews(), TrustDomain: td, Audience: f.kubeAudience})
		if err != nil {
			return err
		}
		o.Authenticators = append(o.Authenticators, auth)
		o.RootPublishers = append(o.RootPublishers, kuberoot.New(client, log))
		var nss []string
		if f.kubeNamespace != "" {
			nss = []string{f.kubeNamespace}
		}
		reg, err := kuberegistry.New(kuberegistry.Options{Config: kc, DomainSuffix: o.DomainSuffix, Namespaces: nss,
			NamespaceSelector: f.kubeNamespaceSelector, Logger: log})
		if err != nil {
			return err
		}
		o.Registries = append(o.Registries, reg)
	}
	if f.consulAddr != "" {
		src, err := consul.New(consul.Options{Address: f.consulAddr, Domain: f.consulDomain, Datacenter: f.consulDatacenter,
			Namespace: f.consulNamespace, DisableShortAlias: f.consulNoAlias, Logger: log})
		if err != nil {
			return err
		}
		o.Registries = append(o.Registries, src)
	}
	return nil
}
