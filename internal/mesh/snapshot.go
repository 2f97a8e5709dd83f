// Package mesh joins a config snapshot and a registry snapshot into one
// immutable, versioned view with small indexes the xDS generators need:
// VirtualServices by host (routes.go) and DestinationRule subsets by host
// (subsets.go). Each index is its own type; add new ones beside them rather
// than growing Snapshot into a god object.
package mesh

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"sort"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/registry"
)

// Snapshot is an immutable view of config and registry. Build it with New
// and never modify it (nor the values it points to) afterwards; it is read
// concurrently by every proxy's generator.
type Snapshot struct {
	Config       *config.Snapshot
	Registry     *registry.Snapshot
	DomainSuffix string
	// Version identifies the inputs: the config version and a hash of the
	// registry content, e.g. "7-3fa2c81d09be4411".
	Version string

	Routes  *RouteIndex
	Subsets *SubsetIndex
}

// New indexes cfg and reg. Either may be nil (treated as empty). Hosts in
// VirtualServices and DestinationRules are resolved to FQDNs with
// registry.ResolveHost against the services in reg. New does not block and
// may be called from any goroutine.
func New(cfg *config.Snapshot, reg *registry.Snapshot, domainSuffix string) *Snapshot {
	if cfg == nil {
		cfg = &config.Snapshot{}
	}
	if reg == nil {
		reg = registry.NewSnapshot(nil, nil)
	}
	if domainSuffix == "" {
		domainSuffix = registry.DefaultDomainSuffix
	}
	r := resolver{reg: reg, suffix: domainSuffix}
	return &Snapshot{
		Config:       cfg,
		Registry:     reg,
		DomainSuffix: domainSuffix,
		Version:      fmt.Sprintf("%d-%s", cfg.Version, registryHash(reg)),
		Routes:       newRouteIndex(cfg.VirtualServices, r),
		Subsets:      newSubsetIndex(cfg.DestinationRules, r),
	}
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
