package main

import (
	"log/slog"

	"github.com/spf13/pflag"

	"weft.dev/weft/internal/controlplane"
	"weft.dev/weft/internal/registry/consul"
)

// registryFlags are `weft serve`'s flags for the registries and config
// sources besides the config directory.
type registryFlags struct {
	consulAddr, consulDomain, consulDatacenter, consulNamespace string
	consulNoAlias                                               bool
}

func (f *registryFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.consulAddr, "consul", "", "read services from the Consul catalog at this agent's HTTP `address` (host:port or URL; CONSUL_HTTP_TOKEN and CONSUL_CACERT … as for the consul CLI); see docs/registries.md")
	fs.StringVar(&f.consulDomain, "consul-domain", consul.DefaultDomain, "a Consul service NAME is the mesh host NAME.`domain` (and NAME, a short alias)")
	fs.StringVar(&f.consulDatacenter, "consul-datacenter", "", "the Consul `datacenter` to read (default: the agent's)")
	fs.StringVar(&f.consulNamespace, "consul-namespace", consul.DefaultNamespace, "the mesh `namespace` of Consul services (their config, policies and metrics labels)")
	fs.BoolVar(&f.consulNoAlias, "consul-no-short-alias", false, "do not also route the bare Consul service name")
}

// apply adds the sources the flags ask for to o.
func (f *registryFlags) apply(o *controlplane.Options, log *slog.Logger) error {
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
