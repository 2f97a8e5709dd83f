// Package mesh joins a config snapshot and a registry snapshot into one
// immutable, versioned view with small indexes the xDS generators need:
// VirtualServices by host (routes.go), DestinationRule subsets by host
// (subsets.go), and per workload its mutual TLS mode (peerauthn.go), its
// AuthorizationPolicies (authz.go) and RequestAuthentications
// (requestauthn.go), with the JWT keys fetched for them (keys.go). Each index is its own type; add new ones beside them rather
// than growing Snapshot into a god object.
package mesh

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"sort"
	"sync"

	meshconfig "istio.io/api/mesh/v1alpha1"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/jwks"
	"weft.dev/weft/internal/registry"
)

// DefaultTrustDomain is the trust domain of SPIFFE identities when none is
// configured.
const DefaultTrustDomain = "cluster.local"

// Options are a snapshot's settings beyond its config and registry.
type Options struct {
	// DomainSuffix is the cluster domain; "" means cluster.local.
	DomainSuffix string
	// RootNamespace holds the mesh-wide policies; "" means
	// config.DefaultRootNamespace (istio-system).
	RootNamespace string
	// TrustDomain of the mesh's SPIFFE identities; "" means
	// DefaultTrustDomain. AuthorizationPolicy principals written with
	// cluster.local are matched against it, as Istio does.
	TrustDomain string
	// JWKS are the key sets fetched for JWT rules, by source (see
	// jwks.SourceOf). A rule whose source is missing gets jwks.FailClosed.
	// Not modified after Build.
	JWKS map[jwks.Source]string
	// OutboundTrafficPolicy is what a captured proxy does with traffic to
	// destinations the mesh does not know; "" means AllowAny.
	OutboundTrafficPolicy OutboundTrafficPolicy
	// EgressScope is what a proxy without a Sidecar is sent; "" means
	// EgressScopeMesh (every service).
	EgressScope EgressScope
	// Tracing is the mesh's default tracing (mesh config
	// defaultProviders.tracing); nil: off. Not modified after Build.
	Tracing *Tracing
	// MeshConfig is Istio's mesh config as `weft serve --mesh-config`
	// read it (config.ParseMeshConfig): the telemetry providers. nil
	// means config.DefaultMeshConfig(). Not modified after Build.
	MeshConfig *meshconfig.MeshConfig
}

// OutboundTrafficPolicy is Istio's MeshConfig outboundTrafficPolicy.mode.
type OutboundTrafficPolicy string

// Outbound traffic policies, spelled as Istio's.
const (
	// AllowAny forwards traffic to unknown destinations to where it was
	// going (PassthroughCluster). Istio's default.
	AllowAny OutboundTrafficPolicy = "ALLOW_ANY"
	// RegistryOnly refuses it (BlackHoleCluster): only services of the
	// registry are reachable.
	RegistryOnly OutboundTrafficPolicy = "REGISTRY_ONLY"
)

// ParseOutboundTrafficPolicy reads ALLOW_ANY or REGISTRY_ONLY.
func ParseOutboundTrafficPolicy(s string) (OutboundTrafficPolicy, error) {
	switch p := OutboundTrafficPolicy(s); p {
	case AllowAny, RegistryOnly:
		return p, nil
	}
	return "", fmt.Errorf("outbound traffic policy %q: want %s or %s", s, AllowAny, RegistryOnly)
}

// Snapshot is an immutable view of config and registry. Build it with New
// and never modify it (nor the values it points to) afterwards; it is read
// concurrently by every proxy's generator.
type Snapshot struct {
	Config       *config.Snapshot
	Registry     *registry.Snapshot
	DomainSuffix string
	// RootNamespace and TrustDomain are Options', defaults filled in.
	RootNamespace string
	TrustDomain   string
	// OutboundTrafficPolicy is Options', default filled in.
	OutboundTrafficPolicy OutboundTrafficPolicy
	// Version identifies the inputs: the config version and a hash of the
	// registry content, e.g. "7-3fa2c81d09be4411", then "-k" and a hash of
	// the fetched JWT keys when there are any.
	Version string

	Routes       *RouteIndex
	Subsets      *SubsetIndex
	PeerAuthn    *PeerAuthnIndex
	Authz        *AuthzIndex
	RequestAuthn *RequestAuthnIndex
	Keys         *KeyIndex
	// Scopes says which services each proxy is sent (Sidecar resources,
	// EgressScope).
	Scopes *ScopeIndex
	// Telemetry finds the Telemetry resources of a workload and resolves
	// them against the mesh config's providers (MeshConfig()).
	Telemetry *TelemetryIndex

	tracing *Tracing // Options.Tracing (tracing.go)

	memo sync.Map // Memo's values, by key
}

// Memo returns the value stored under key for this snapshot, building and
// storing it on first use. It lets the per-proxy generators share what
// does not depend on the proxy (or depends on a part many proxies have in
// common): a value is computed about once per snapshot and key, and lives
// as long as the snapshot. build may run more than once when callers race;
// one result wins. Keys must be comparable and distinct across users
// (use a key type of your own package); values must be immutable.
func (s *Snapshot) Memo(key any, build func() any) any {
	if v, ok := s.memo.Load(key); ok {
		return v
	}
	v, _ := s.memo.LoadOrStore(key, build())
	return v
}

// New is Build with default Options but the domain suffix.
func New(cfg *config.Snapshot, reg *registry.Snapshot, domainSuffix string) *Snapshot {
	return Build(cfg, reg, Options{DomainSuffix: domainSuffix})
}

// Build indexes cfg and reg. Either may be nil (treated as empty). Hosts
// in VirtualServices and DestinationRules are resolved to FQDNs with
// registry.ResolveHost against the services in reg. Build does not block
// and may be called from any goroutine.
func Build(cfg *config.Snapshot, reg *registry.Snapshot, opts Options) *Snapshot {
	domainSuffix := opts.DomainSuffix
	if cfg == nil {
		cfg = &config.Snapshot{}
	}
	if reg == nil {
		reg = registry.NewSnapshot(nil, nil)
	}
	if domainSuffix == "" {
		domainSuffix = registry.DefaultDomainSuffix
	}
	rootNS := opts.RootNamespace
	if rootNS == "" {
		rootNS = config.DefaultRootNamespace
	}
	td := opts.TrustDomain
	if td == "" {
		td = DefaultTrustDomain
	}
	otp := opts.OutboundTrafficPolicy
	if otp == "" {
		otp = AllowAny
	}
	r := resolver{reg: reg, suffix: domainSuffix}
	version := fmt.Sprintf("%d-%s", cfg.Version, registryHash(reg))
	if len(opts.JWKS) > 0 {
		version += "-k" + keysHash(opts.JWKS)
	}
	s := &Snapshot{
		Config:                cfg,
		Registry:              reg,
		DomainSuffix:          domainSuffix,
		RootNamespace:         rootNS,
		TrustDomain:           td,
		Version:               version,
		OutboundTrafficPolicy: otp,

		Routes:       newRouteIndex(cfg.VirtualServices, r),
		Subsets:      newSubsetIndex(cfg.DestinationRules, r),
		PeerAuthn:    newPeerAuthnIndex(cfg.PeerAuthentications, rootNS),
		Authz:        newAuthzIndex(cfg.AuthorizationPolicies, rootNS),
		RequestAuthn: newRequestAuthnIndex(cfg.RequestAuthentications, rootNS),
		Keys:         &KeyIndex{fetched: opts.JWKS},
		tracing:      opts.Tracing,
		Telemetry:    newTelemetryIndex(cfg.Telemetries, rootNS, opts.MeshConfig),
	}
	s.Scopes = newScopeIndex(s, cfg.Sidecars, opts.EgressScope)
	return s
}

// keysHash summarises the fetched key sets, so Version changes with them.
func keysHash(keys map[jwks.Source]string) string {
	srcs := make([]jwks.Source, 0, len(keys))
	for s := range keys {
		srcs = append(srcs, s)
	}
	sort.Slice(srcs, func(i, j int) bool { return srcs[i].String() < srcs[j].String() })
	h := sha256.New()
	for _, s := range srcs {
		writeStr(h, s.URI, s.Issuer, keys[s])
	}
	return hex.EncodeToString(h.Sum(nil)[:4])
}

// ResolveHost expands host as written in a resource of namespace ns into an
// FQDN, knowing the services of this snapshot's registry.
func (s *Snapshot) ResolveHost(host, ns string) string {
	return resolver{reg: s.Registry, suffix: s.DomainSuffix}.resolve(host, ns)
}

type resolver struct {
	reg    *registry.Snapshot
	suffix string
}

func (r resolver) resolve(host, ns string) string {
	return registry.ResolveHost(host, ns, r.suffix, r.known)
}

func (r resolver) known(fqdn string) bool { return r.reg.Service(fqdn) != nil }

// registryHash summarises every service and endpoint so that Version changes
// whenever the registry content does.
func registryHash(reg *registry.Snapshot) string {
	h := sha256.New()
	for _, svc := range reg.Services() {
		writeStr(h, svc.Hostname, svc.Namespace)
		writeU32(h, uint32(len(svc.Aliases)))
		writeStr(h, svc.Aliases...)
		writeU32(h, uint32(len(svc.Addresses)))
		for _, a := range svc.Addresses {
			writeStr(h, a.String())
		}
		for _, p := range svc.Ports {
			writeStr(h, p.Name, string(p.Protocol))
			writeU32(h, p.Number, p.TargetPort)
		}
		for _, ep := range reg.Endpoints(svc.Hostname, 0) {
			writeStr(h, ep.Address, ep.Locality, ep.ServiceAccount, ep.WorkloadName, ep.Namespace)
			writeU32(h, ep.ServicePort, ep.Port, ep.Weight, uint32(ep.Health))
			keys := make([]string, 0, len(ep.Labels))
			for k := range ep.Labels {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				writeStr(h, k, ep.Labels[k])
			}
		}
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

func writeStr(h hash.Hash, ss ...string) {
	for _, s := range ss {
		writeU32(h, uint32(len(s)))
		h.Write([]byte(s))
	}
}

func writeU32(h hash.Hash, vs ...uint32) {
	var b [4]byte
	for _, v := range vs {
		binary.LittleEndian.PutUint32(b[:], v)
		h.Write(b[:])
	}
}
