package mesh

import (
	"fmt"
	"strings"

	meshconfig "istio.io/api/mesh/v1alpha1"

	"weft.dev/weft/internal/config"
)

// ExtAuthzProvider finds an extension provider of the mesh config by
// name, for CUSTOM AuthorizationPolicies, and says why Weft cannot use it
// ("" when it can): not defined, not an envoyExtAuthzHttp or
// envoyExtAuthzGrpc provider, a field the proxy cannot honour, or a
// service the registry does not have. Policies naming an unusable
// provider deny the requests their rules match (fail closed).
func (s *Snapshot) ExtAuthzProvider(name string) (*meshconfig.MeshConfig_ExtensionProvider, string) {
	for _, p := range s.Telemetry.MeshConfig().GetExtensionProviders() {
		if p.GetName() != name {
			continue
		}
		if p.GetEnvoyExtAuthzHttp() == nil && p.GetEnvoyExtAuthzGrpc() == nil {
			return p, fmt.Sprintf("extension provider %q is not an envoyExtAuthzHttp or envoyExtAuthzGrpc provider", name)
		}
		if why := config.ExtAuthzProblem(p); why != "" {
			return p, fmt.Sprintf("extension provider %q: %s", name, why)
		}
		if host := ExtAuthzHost(p); s.Registry.Service(host) == nil {
			return p, fmt.Sprintf("extension provider %q: service %q is not in the mesh's registry", name, host)
		}
		return p, ""
	}
	return nil, fmt.Sprintf("no extension provider %q in meshConfig.extensionProviders", name)
}

// ExtAuthzHost is the hostname of an ext_authz provider's service,
// written "[<namespace>/]<hostname>"; "" for other providers.
func ExtAuthzHost(p *meshconfig.MeshConfig_ExtensionProvider) string {
	svc := p.GetEnvoyExtAuthzHttp().GetService()
	if g := p.GetEnvoyExtAuthzGrpc(); g != nil {
		svc = g.GetService()
	}
	if _, host, ok := strings.Cut(svc, "/"); ok {
		return host
	}
	return svc
}

// ExtAuthzPort is the port of an ext_authz provider's service.
func ExtAuthzPort(p *meshconfig.MeshConfig_ExtensionProvider) uint32 {
	if g := p.GetEnvoyExtAuthzGrpc(); g != nil {
		return g.GetPort()
	}
	return p.GetEnvoyExtAuthzHttp().GetPort()
}
