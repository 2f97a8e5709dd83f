// Package aggregate merges the snapshots of several registries — the static
// one built from ServiceEntries and every registry.Source (Kubernetes,
// Consul) — into the one registry.Snapshot the mesh is built from.
//
// Rules:
//   - Parts are given in precedence order (static first, then the sources
//     in the order the control plane lists them); the first part that
//     defines a host defines its Service (namespace, ports, protocols).
//   - The same host in several parts has the endpoints of all of them, so
//     a service migrating from VMs (Consul) to Kubernetes is one host whose
//     subsets may select either side.
//   - A later part that disagrees about a host's ports is a Conflict: a
//     port number the first definition lacks (its endpoints on that port are
//     dropped: no service port carries them), or the same port number with
//     another protocol (its endpoints are kept and receive traffic with the
//     first definition's protocol). A later part serving only some of the
//     first definition's ports is no conflict.
//   - An endpoint (host, service port, address, port) present in several
//     parts is kept once, from the first.
//   - Workloads of every part are kept.
//   - Only the endpoints of hosts a part defines a Service for are merged
//     (a registry.Snapshot lists endpoints by host).
//
// Merge is a pure function with deterministic output.
package aggregate

import (
	"cmp"
	"fmt"
	"slices"

	"weft.dev/weft/internal/registry"
)

// Part is one registry's snapshot; Name names it in conflicts ("static",
// "kubernetes", "consul").
type Part struct {
	Name     string
	Snapshot *registry.Snapshot
}

// Conflict is a host that two registries define differently. Winner's
// definition is in force; Loser's disagreeing ports are left out (see the
// package doc).
type Conflict struct {
	Host   string
	Winner string // the part whose Service is kept
	Loser  string // the part that disagrees
	// Port is the service port they disagree about.
	Port uint32
	// WinnerProtocol is "" when Winner has no such port; LoserProtocol is
	// the loser's protocol of Port.
	WinnerProtocol, LoserProtocol registry.Protocol
}

// String says what conflicts and what happens, for logs and /status.
func (c Conflict) String() string {
	if c.WinnerProtocol == "" {
		return fmt.Sprintf("host %s: %s defines port %d (%s), which %s (the first registry defining the host) does not: %s's endpoints on port %d are left out",
			c.Host, c.Loser, c.Port, c.LoserProtocol, c.Winner, c.Loser, c.Port)
	}
	return fmt.Sprintf("host %s: port %d is %s in %s but %s in %s: %s (the first registry defining the host) wins; %s's endpoints get %s traffic",
		c.Host, c.Port, c.WinnerProtocol, c.Winner, c.LoserProtocol, c.Loser, c.Winner, c.Loser, c.WinnerProtocol)
}

// SourceParts returns the static snapshot (named "static") followed by the
// current snapshot of each source, in order: the argument Merge expects.
func SourceParts(static *registry.Snapshot, sources []registry.Source) []Part {
	parts := make([]Part, 0, len(sources)+1)
	parts = append(parts, Part{Name: "static", Snapshot: static})
	for _, src := range sources {
		parts = append(parts, Part{Name: src.Name(), Snapshot: src.Snapshot()})
	}
	return parts
}

// Merge combines parts (in precedence order; nil snapshots are empty) into
// one snapshot, and returns the conflicts found, sorted by host, loser,
// port. It does not modify its input; the services and endpoints of the
// result are shared with the parts' snapshots, which are immutable.
func Merge(parts ...Part) (*registry.Snapshot, []Conflict) {
	type owner struct {
		part  string
		svc   *registry.Service
		ports map[uint32]registry.Protocol
	}
	owners := map[string]*owner{}
	var (
		c         registry.Contents
		conflicts []Conflict
		seen      = map[epKey]bool{}
	)
	for _, p := range parts {
		// Which of this part's endpoints may join: by host, the service
		// ports the host's definition has.
		dropPort := map[string]map[uint32]bool{}
		for _, svc := range p.Snapshot.Services() {
			o, ok := owners[svc.Hostname]
			if !ok {
				o = &owner{part: p.Name, svc: svc, ports: map[uint32]registry.Protocol{}}
				for _, port := range svc.Ports {
					o.ports[port.Number] = port.Protocol
				}
				owners[svc.Hostname] = o
				c.Services = append(c.Services, svc)
				continue
			}
			for _, port := range svc.Ports {
				want, has := o.ports[port.Number]
				switch {
				case !has:
					conflicts = append(conflicts, Conflict{Host: svc.Hostname, Winner: o.part, Loser: p.Name, Port: port.Number, LoserProtocol: port.Protocol})
					if dropPort[svc.Hostname] == nil {
						dropPort[svc.Hostname] = map[uint32]bool{}
					}
					dropPort[svc.Hostname][port.Number] = true
				case want != port.Protocol:
					conflicts = append(conflicts, Conflict{Host: svc.Hostname, Winner: o.part, Loser: p.Name, Port: port.Number, WinnerProtocol: want, LoserProtocol: port.Protocol})
				}
			}
		}
		for _, svc := range p.Snapshot.Services() {
			for _, ep := range p.Snapshot.Endpoints(svc.Hostname, 0) {
				if dropPort[ep.ServiceHostname][ep.ServicePort] {
					continue
				}
				k := epKey{ep.ServiceHostname, ep.ServicePort, ep.Address, ep.Port}
				if seen[k] {
					continue
				}
				seen[k] = true
				c.Endpoints = append(c.Endpoints, ep)
			}
		}
		c.Workloads = append(c.Workloads, p.Snapshot.Workloads()...)
	}
	slices.SortStableFunc(conflicts, func(a, b Conflict) int {
		return cmp.Or(cmp.Compare(a.Host, b.Host), cmp.Compare(a.Loser, b.Loser), cmp.Compare(a.Port, b.Port))
	})
	return registry.New(c), conflicts
}

type epKey struct {
	host    string
	svcPort uint32
	addr    string
	port    uint32
}

// Added returns the conflicts of cur that are not in prev, so the caller
// logs each conflict once however often the mesh is rebuilt.
func Added(prev, cur []Conflict) []Conflict {
	var out []Conflict
	for _, c := range cur {
		if !slices.Contains(prev, c) {
			out = append(out, c)
		}
	}
	return out
}
