// Package mesh joins a config snapshot and a registry snapshot into one
// immutable, versioned view with small indexes the xDS generators need:
// VirtualServices by host (routes.go), Gateways and the VirtualServices
// bound to them (gateways.go), DestinationRule subsets by host
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
	"hash/fnv"
	"maps"
	"slices"
	"sort"
	"sync"
	"sync/atomic"

	meshconfig "istio.io/api/mesh/v1alpha1"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/credentials"
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
	// OIDC is what OpenID discovery found for the issuers of OIDCLogins,
	// by issuer (jwks.Fetcher.Discovered). Not modified after Build.
	OIDC map[string]jwks.Discovery
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
	// Credentials are the Secrets gateways name by credentialName (the
	// Kubernetes API's); nil means none. Immutable.
	Credentials *credentials.Set
	// HTTP10 makes every proxy accept HTTP/1.0 requests (Istio's
	// PILOT_HTTP10); without it, or the mesh config's
	// defaultConfig.proxyMetadata ISTIO_META_HTTP10, only proxies whose
	// node says so do (contract.MetaHTTP10), and the others answer 426.
	HTTP10 bool
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

	Routes *RouteIndex
	// Gateways finds a gateway proxy's Gateways and the VirtualServices
	// bound to them (gateways.go).
	Gateways     *GatewayIndex
	Subsets      *SubsetIndex
	PeerAuthn    *PeerAuthnIndex
	Authz        *AuthzIndex
	RequestAuthn *RequestAuthnIndex
	Keys         *KeyIndex
	// Logins finds a gateway's OIDCLogins and their issuers' endpoints.
	Logins *LoginIndex
	// Scopes says which services each proxy is sent (Sidecar resources,
	// EgressScope).
	Scopes *ScopeIndex
	// Telemetry finds the Telemetry resources of a workload and resolves
	// them against the mesh config's providers (MeshConfig()).
	Telemetry *TelemetryIndex
	// RateLimits finds the RateLimit (networking.weft.dev) of a workload.
	RateLimits *RateLimitIndex
	// Credentials are Options'; nil means none.
	Credentials *credentials.Set

	tracing *Tracing // Options.Tracing (tracing.go)

	memo sync.Map // Memo's values, by key

	// opts are the Options it was built with, servicesHash a digest of
	// the registry's services (not their endpoints): with the config but
	// its WorkloadEntries, what BuildFrom compares to carry work over.
	opts         Options
	servicesHash string
	svcDigests   map[*registry.Service][sha256.Size]byte // servicesHash's, by service
	epDigests    map[hostPort]uint64                     // EndpointsDigest's
	// carry is the snapshot this one was built from when they differ in
	// endpoints or VirtualServices only (BuildFrom; level says which):
	// MemoCarry and MemoCarryRoutes reuse its values. Cut when the next
	// snapshot is built from this one, so at most one older snapshot is
	// kept alive.
	carry atomic.Pointer[Snapshot]
	level carryLevel
	used  atomic.Bool // a Memo ran: some generation started from it
}

// carryLevel is how much a snapshot has in common with the one it
// carries values from.
type carryLevel int

const (
	carryNone      carryLevel = iota
	carryRoutes               // endpoints and VirtualServices may differ
	carryEndpoints            // only endpoints may differ
)

// Memo returns the value stored under key for this snapshot, building and
// storing it on first use. It lets the per-proxy generators share what
// does not depend on the proxy (or depends on a part many proxies have in
// common): a value is computed about once per snapshot and key, and lives
// as long as the snapshot. build may run more than once when callers race;
// one result wins. Keys must be comparable and distinct across users
// (use a key type of your own package); values must be immutable.
func (s *Snapshot) Memo(key any, build func() any) any {
	s.used.Store(true)
	if v, ok := s.memo.Load(key); ok {
		return v
	}
	v, _ := s.memo.LoadOrStore(key, build())
	return v
}

// MemoCarry is Memo for a value that depends on the config and the
// registry's services but not on endpoints, or on endpoints only in ways
// keep can check: on first use in this snapshot, the value the snapshot
// it was built from (BuildFrom) has under key is reused when keep (nil:
// always) says it still holds for this snapshot; else build runs. A
// reused value keeps its identity, so what was derived from it by
// identity (an encoding, keyed by pointer) is reused too.
func (s *Snapshot) MemoCarry(key any, keep func(prev any) bool, build func() any) any {
	return s.memoCarry(carryEndpoints, key, keep, build)
}

// MemoCarryRoutes is MemoCarry for a value that does not read the
// VirtualServices either (a cluster, a load assignment, an encoding): it
// is also carried over a change of VirtualServices.
func (s *Snapshot) MemoCarryRoutes(key any, keep func(prev any) bool, build func() any) any {
	return s.memoCarry(carryRoutes, key, keep, build)
}

func (s *Snapshot) memoCarry(need carryLevel, key any, keep func(prev any) bool, build func() any) any {
	s.used.Store(true)
	if v, ok := s.memo.Load(key); ok {
		return v
	}
	if prev := s.carry.Load(); prev != nil && s.level >= need {
		if v, ok := prev.memo.Load(key); ok && (keep == nil || keep(v)) {
			v, _ = s.memo.LoadOrStore(key, v)
			return v
		}
	}
	v, _ := s.memo.LoadOrStore(key, build())
	return v
}

// MemoDerive is MemoCarry for a value that follows the endpoints in a
// way that can be brought up to date rather than built again (a list
// with an entry per service port, keyed by its endpoints' digest): on
// first use in this snapshot, when only endpoints changed since the
// snapshot it carries over from and that one has a value under key,
// derive makes this snapshot's value from it, told which service ports'
// endpoints changed (changed; the others' EndpointsDigest is the same
// in both); else build runs. derive must not modify prev, nor keep a
// reference to the snapshot prev was made in.
func (s *Snapshot) MemoDerive(key any, derive func(prev any, changed func(host string, port uint32) bool) any, build func() any) any {
	s.used.Store(true)
	if v, ok := s.memo.Load(key); ok {
		return v
	}
	if prev := s.carry.Load(); prev != nil && s.level >= carryEndpoints {
		if v, ok := prev.memo.Load(key); ok {
			changed := s.endpointsChangedSince(prev)
			v, _ = s.memo.LoadOrStore(key, derive(v, func(host string, port uint32) bool {
				_, ok := changed[hostPort{host, port}]
				return ok
			}))
			return v
		}
	}
	v, _ := s.memo.LoadOrStore(key, build())
	return v
}

// MemoDeriveRoutes is MemoDerive for a value that does not read the
// VirtualServices and is brought up to date by its own checks (a set of
// encodings keyed by what they encode): derive is also given the value
// of a snapshot that VirtualServices changed since.
func (s *Snapshot) MemoDeriveRoutes(key any, derive func(prev any) any, build func() any) any {
	s.used.Store(true)
	if v, ok := s.memo.Load(key); ok {
		return v
	}
	if prev := s.carry.Load(); prev != nil && s.level >= carryRoutes {
		if v, ok := prev.memo.Load(key); ok {
			v, _ = s.memo.LoadOrStore(key, derive(v))
			return v
		}
	}
	v, _ := s.memo.LoadOrStore(key, build())
	return v
}

type endpointsChangedKey struct{}

// endpointsChangedSince is the set of service ports whose endpoints
// differ between s and prev, the snapshot s carries over from (there is
// only ever that one), computed once per snapshot. The key holds no
// pointer to prev: a memo that did would keep every snapshot before alive.
func (s *Snapshot) endpointsChangedSince(prev *Snapshot) map[hostPort]struct{} {
	return s.Memo(endpointsChangedKey{}, func() any {
		changed := map[hostPort]struct{}{}
		for k, d := range s.epDigests {
			if prev.epDigests[k] != d {
				changed[k] = struct{}{}
			}
		}
		for k := range prev.epDigests {
			if _, ok := s.epDigests[k]; !ok {
				changed[k] = struct{}{}
			}
		}
		return changed
	}).(map[hostPort]struct{})
}

// ReleaseCarry lets go of the snapshot s carries values over from
// (BuildFrom). A caller that has generated what every proxy is sent from
// s calls it: the values of the snapshot before that s did not take
// (after a route change, the old route configurations and their
// encodings: tens of MB in a large mesh) are then garbage at once rather
// than at the next change. What s took is in its own memo, so the next
// snapshot still carries it over from s; generation from s may go on,
// and builds anew what it would have carried. Safe for concurrent use.
func (s *Snapshot) ReleaseCarry() { s.carry.Store(nil) }

// Forget drops the memo values whose keys match says: a value a caller
// has derived what it needs from (an encoding) and that is large, so it
// is not kept for the snapshot's life. A later Memo (or MemoCarry, here
// or in the snapshot built from this one) builds it anew. Safe for
// concurrent use; match must not call back into s.
func (s *Snapshot) Forget(match func(key any) bool) {
	s.memo.Range(func(k, _ any) bool {
		if match(k) {
			s.memo.Delete(k)
		}
		return true
	})
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
	return BuildFrom(nil, cfg, reg, opts)
}

// BuildFrom is Build, reusing what it can of prev (the snapshot before,
// or nil): when prev was built with the same Options, from the same
// config but for its WorkloadEntries (config.Snapshot.SameExceptWorkloadEntries)
// and a registry with the same services, only endpoints differ. The new
// snapshot then shares prev's indexes (they read the config and the
// services only) and its MemoCarry values, which the generators check
// against the endpoints they read. An endpoint change in a large mesh so
// costs what changed, not a rebuild of everything.
func BuildFrom(prev *Snapshot, cfg *config.Snapshot, reg *registry.Snapshot, opts Options) *Snapshot {
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
	svcHash, svcDigests := servicesHash(reg, prev)
	epDigests := endpointDigests(reg, prev)
	version := fmt.Sprintf("%d-%s", cfg.Version, registryHash(reg, svcHash, epDigests))
	if len(opts.JWKS) > 0 {
		version += "-k" + keysHash(opts.JWKS)
	}
	if len(opts.OIDC) > 0 {
		version += "-o" + discoveryHash(opts.OIDC)
	}
	if h := opts.Credentials.Hash(); h != "" {
		version += "-s" + h
	}
	s := &Snapshot{
		Config:                cfg,
		Registry:              reg,
		DomainSuffix:          domainSuffix,
		RootNamespace:         rootNS,
		TrustDomain:           td,
		Version:               version,
		OutboundTrafficPolicy: otp,
		Keys:                  &KeyIndex{fetched: opts.JWKS},
		Credentials:           opts.Credentials,
		Logins:                newLoginIndex(cfg.OIDCLogins, rootNS, opts.OIDC),
		tracing:               opts.Tracing,
		opts:                  opts,
		servicesHash:          svcHash,
		svcDigests:            svcDigests,
		epDigests:             epDigests,
	}
	level := carryNone
	if prev != nil {
		level = prev.carries(s)
	}
	if level != carryNone {
		// Carry from prev, or, when nothing was generated from prev (a
		// push skipped it), from what prev would have carried from.
		from := prev
		if c := prev.carry.Load(); c != nil && !prev.used.Load() {
			from, level = c, min(level, prev.level)
		}
		// prev is left as it is: a push round may still be serving it,
		// and the caller may drop s (a registry echo builds the same
		// version) and keep prev. Cutting prev's carry here made both
		// build and encode again, for every proxy, what they would have
		// carried (in a storm, snapshots come every few milliseconds).
		// A round lets go of its snapshot's carry when it ends
		// (ReleaseCarry); a replaced snapshot nothing was generated from
		// is garbage with what it carried from.
		s.carry.Store(from)
		s.level = level
		// The indexes that read neither endpoints nor VirtualServices.
		s.Subsets, s.PeerAuthn, s.Authz = prev.Subsets, prev.PeerAuthn, prev.Authz
		s.RequestAuthn, s.Telemetry = prev.RequestAuthn, prev.Telemetry
		s.RateLimits = prev.RateLimits
		if level == carryEndpoints {
			s.Routes, s.Scopes, s.Gateways = prev.Routes, prev.Scopes, prev.Gateways
			return s
		}
	} else {
		s.Subsets = newSubsetIndex(cfg.DestinationRules, rootNS, r)
		s.PeerAuthn = newPeerAuthnIndex(cfg.PeerAuthentications, rootNS)
		s.Authz = newAuthzIndex(cfg.AuthorizationPolicies, rootNS)
		s.RequestAuthn = newRequestAuthnIndex(cfg.RequestAuthentications, rootNS)
		s.Telemetry = newTelemetryIndex(cfg.Telemetries, rootNS, opts.MeshConfig)
		s.RateLimits = newRateLimitIndex(cfg.RateLimits, rootNS)
	}
	s.Routes = newRouteIndex(cfg.VirtualServices, r)
	s.Gateways = newGatewayIndex(cfg.Gateways, cfg.VirtualServices)
	s.Scopes = newScopeIndex(s, cfg.Sidecars, opts.EgressScope)
	return s
}

// carries says how much a snapshot s built after p has in common with
// it: with the same Options and services, carryEndpoints when the config
// is the same but for its WorkloadEntries, carryRoutes when its
// VirtualServices differ too, else carryNone.
func (p *Snapshot) carries(s *Snapshot) carryLevel {
	po, so := p.opts, s.opts
	if po.DomainSuffix != so.DomainSuffix || po.RootNamespace != so.RootNamespace ||
		po.TrustDomain != so.TrustDomain || po.OutboundTrafficPolicy != so.OutboundTrafficPolicy ||
		po.EgressScope != so.EgressScope || po.Tracing != so.Tracing || po.MeshConfig != so.MeshConfig || po.HTTP10 != so.HTTP10 ||
		!maps.Equal(po.JWKS, so.JWKS) || !maps.Equal(po.OIDC, so.OIDC) || p.servicesHash != s.servicesHash {
		return carryNone
	}
	switch {
	case s.Config.SameExcept(p.Config, config.KindWorkloadEntry):
		return carryEndpoints
	case s.Config.SameExcept(p.Config, config.KindWorkloadEntry, config.KindVirtualService):
		return carryRoutes
	}
	return carryNone
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

// discoveryHash summarises the discovered OpenID endpoints, so Version
// changes with them.
func discoveryHash(d map[string]jwks.Discovery) string {
	issuers := slices.Sorted(maps.Keys(d))
	h := sha256.New()
	for _, iss := range issuers {
		e := d[iss]
		writeStr(h, iss, e.Issuer, e.AuthorizationEndpoint, e.TokenEndpoint, e.EndSessionEndpoint)
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

// servicesHash summarises every service (not its endpoints), with the
// digest of each service value, which the next snapshot takes over for
// the services whose values are the same (registry snapshots are
// immutable, and sources keep the values of services they saw no change
// to): at 1,000 services, hashing them all again was ~3 ms a change.
func servicesHash(reg *registry.Snapshot, prev *Snapshot) (string, map[*registry.Service][sha256.Size]byte) {
	svcs := reg.Services()
	digests := make(map[*registry.Service][sha256.Size]byte, len(svcs))
	h := sha256.New()
	for _, svc := range svcs {
		d, ok := [sha256.Size]byte{}, false
		if prev != nil {
			d, ok = prev.svcDigests[svc]
		}
		if !ok {
			d = serviceDigest(svc)
		}
		digests[svc] = d
		h.Write(d[:])
	}
	return hex.EncodeToString(h.Sum(nil)[:8]), digests
}

// serviceDigest digests what of a service the generators read.
func serviceDigest(svc *registry.Service) [sha256.Size]byte {
	h := sha256.New()
	writeStr(h, svc.Hostname, svc.Namespace, svc.TrafficDistribution)
	writeU32(h, uint32(svc.Resolution), uint32(len(svc.Aliases)))
	writeStr(h, svc.Aliases...)
	if svc.ExportTo == nil {
		writeStr(h, "*")
	} else {
		writeU32(h, uint32(len(svc.ExportTo)))
		writeStr(h, svc.ExportTo...)
	}
	writeU32(h, uint32(len(svc.Addresses)))
	for _, a := range svc.Addresses {
		writeStr(h, a.String())
	}
	writeU32(h, uint32(len(svc.Ports)))
	for _, p := range svc.Ports {
		writeStr(h, p.Name, string(p.Protocol))
		writeU32(h, p.Number, p.TargetPort)
	}
	var d [sha256.Size]byte
	h.Sum(d[:0])
	return d
}

type hostPort struct {
	host string
	port uint32
}

// endpointDigests digests the endpoints of every service port (by the
// service port the endpoints serve). A service whose endpoints are the
// very ones prev's registry has for it (the same *Endpoint values, in
// the same order: registry snapshots are immutable, and the sources keep
// the endpoints of what they did not see change) keeps prev's digests
// rather than hashing them again: an endpoint change to one service of
// 1,000 costs that service, not ~7 ms of hashing every endpoint.
func endpointDigests(reg *registry.Snapshot, prev *Snapshot) map[hostPort]uint64 {
	var out map[hostPort]uint64
	if prev != nil {
		out = make(map[hostPort]uint64, len(prev.epDigests))
	} else {
		out = map[hostPort]uint64{}
	}
	hashes := map[hostPort]hash.Hash64{}
	for _, svc := range reg.Services() {
		eps := reg.Endpoints(svc.Hostname, 0)
		if prev != nil && len(eps) > 0 && slices.Equal(eps, prev.Registry.Endpoints(svc.Hostname, 0)) {
			for _, ep := range eps {
				k := hostPort{svc.Hostname, ep.ServicePort}
				out[k] = prev.epDigests[k]
			}
			continue
		}
		for _, ep := range eps {
			k := hostPort{svc.Hostname, ep.ServicePort}
			h := hashes[k]
			if h == nil {
				h = fnv.New64a()
				hashes[k] = h
			}
			HashEndpoint(h, ep)
		}
	}
	for k, h := range hashes {
		out[k] = h.Sum64()
	}
	return out
}

// EndpointsDigest is a digest of the endpoints of service host's port
// (registry.Snapshot.Endpoints(host, port)), in their order: equal
// digests, equal endpoints. 0 when the port has none.
func (s *Snapshot) EndpointsDigest(host string, port uint32) uint64 {
	return s.epDigests[hostPort{host, port}]
}

// registryHash summarises every service (svcHash, servicesHash's) and
// endpoint (digests, endpointDigests') so that Version changes whenever
// the registry content does.
func registryHash(reg *registry.Snapshot, svcHash string, digests map[hostPort]uint64) string {
	h := sha256.New()
	writeStr(h, svcHash)
	for _, svc := range reg.Services() {
		for _, p := range svc.Ports {
			writeU32(h, p.Number)
			var b [8]byte
			binary.LittleEndian.PutUint64(b[:], digests[hostPort{svc.Hostname, p.Number}])
			h.Write(b[:])
		}
	}
	// Endpoints of ports the service does not declare still change the
	// version.
	keys := make([]hostPort, 0, len(digests))
	for k := range digests {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		return keys[i].host < keys[j].host || keys[i].host == keys[j].host && keys[i].port < keys[j].port
	})
	for _, k := range keys {
		writeStr(h, k.host)
		writeU32(h, k.port)
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], digests[k])
		h.Write(b[:])
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// HashEndpoint writes every field of ep to h, so that equal sums mean
// equal endpoints.
func HashEndpoint(h hash.Hash, ep *registry.Endpoint) {
	writeStr(h, ep.ServiceHostname, ep.Address, ep.Locality, ep.ServiceAccount, ep.WorkloadName, ep.Namespace)
	writeU32(h, ep.ServicePort, ep.Port, ep.Weight, uint32(ep.Health))
	var buf [16]string
	keys := buf[:0]
	for k := range ep.Labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	writeU32(h, uint32(len(keys)))
	for _, k := range keys {
		writeStr(h, k, ep.Labels[k])
	}
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

// HTTP10 reports whether every proxy of the mesh accepts HTTP/1.0
// requests: Options.HTTP10, or the mesh config's
// defaultConfig.proxyMetadata ISTIO_META_HTTP10 ("1" or "true"), as
// Istio reads them.
func (s *Snapshot) HTTP10() bool {
	if s.opts.HTTP10 {
		return true
	}
	v := s.opts.MeshConfig.GetDefaultConfig().GetProxyMetadata()["ISTIO_META_HTTP10"]
	return v == "1" || v == "true"
}
