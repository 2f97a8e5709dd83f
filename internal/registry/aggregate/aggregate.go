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
//   - A later part's port joins the definition's port with the same
//     number, else the definition's only port whose target port it is (a
//     Kubernetes Service's port 80 with targetPort 8080 and Consul
//     instances on 8080), else the definition's only port whose number is
//     its target port; its endpoints then serve that port.
//   - A later part that disagrees about a host's ports is a Conflict: a
//     port that joins none of the definition's (its endpoints on that port
//     are left out: no service port carries them), or one that joins a
//     port of another protocol (its endpoints are kept and receive traffic
//     with the first definition's protocol). A later part serving only some
//     of the definition's ports is no conflict.
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
// definition is in force (see the package doc for what happens to Loser's
// endpoints).
type Conflict struct {
	Host   string
	Winner string // the part whose Service is kept
	Loser  string // the part that disagrees
	// Port is the loser's service port; WinnerPort is the winner's port it
	// corresponds to (the same number, or the port whose target it is), 0
	// when there is none.
	Port, WinnerPort uint32
	// WinnerProtocol is WinnerPort's protocol ("" without one);
	// LoserProtocol is Port's.
	WinnerProtocol, LoserProtocol registry.Protocol
}

// String says what conflicts and what happens, for logs and /status.
func (c Conflict) String() string {
	if c.WinnerPort == 0 {
		return fmt.Sprintf("host %s: %s defines port %d (%s), which matches no single port of %s (the first registry defining the host) by number or target port: %s's endpoints on port %d are left out",
			c.Host, c.Loser, c.Port, c.LoserProtocol, c.Winner, c.Loser, c.Port)
	}
	winnerPort := fmt.Sprintf("port %d", c.WinnerPort)
	loserPort := ""
	if c.WinnerPort != c.Port {
		loserPort = fmt.Sprintf(" (its port %d)", c.Port)
	}
	return fmt.Sprintf("host %s: %s is %s in %s but %s in %s%s: %s (the first registry defining the host) wins; %s's endpoints get %s traffic",
		c.Host, winnerPort, c.WinnerProtocol, c.Winner, c.LoserProtocol, c.Loser, loserPort, c.Winner, c.Loser, c.WinnerProtocol)
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
		part string
		svc  *registry.Service
	}
	owners := map[string]*owner{}
	var (
		c         registry.Contents
		conflicts []Conflict
		seen      = map[epKey]bool{}
	)
	for _, p := range parts {
		// How this part's endpoints join a host another part defined: by
		// host, its service port -> the definition's (0: left out).
		remap := map[string]map[uint32]uint32{}
		for _, svc := range p.Snapshot.Services() {
			o, ok := owners[svc.Hostname]
			if !ok {
				owners[svc.Hostname] = &owner{part: p.Name, svc: svc}
				c.Services = append(c.Services, svc)
				continue
			}
			m := map[uint32]uint32{}
			remap[svc.Hostname] = m
			for _, port := range svc.Ports {
				w, found := correspondingPort(o.svc.Ports, port)
				m[port.Number] = w.Number
				switch {
				case !found:
					conflicts = append(conflicts, Conflict{Host: svc.Hostname, Winner: o.part, Loser: p.Name, Port: port.Number, LoserProtocol: port.Protocol})
				case w.Protocol != port.Protocol:
					conflicts = append(conflicts, Conflict{Host: svc.Hostname, Winner: o.part, Loser: p.Name, Port: port.Number, WinnerPort: w.Number,
						WinnerProtocol: w.Protocol, LoserProtocol: port.Protocol})
				}
			}
		}
		for _, svc := range p.Snapshot.Services() {
			m := remap[svc.Hostname]
			for _, ep := range p.Snapshot.Endpoints(svc.Hostname, 0) {
				if m != nil {
					to, ok := m[ep.ServicePort]
					if !ok || to == 0 {
						continue // on a port the host's definition lacks
					}
					if to != ep.ServicePort {
						moved := *ep
						moved.ServicePort = to
						ep = &moved
					}
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
	c.Endpoints = append(c.Endpoints, selected(c.Services, c.Workloads, seen)...)
	slices.SortStableFunc(conflicts, func(a, b Conflict) int {
		return cmp.Or(cmp.Compare(a.Host, b.Host), cmp.Compare(a.Loser, b.Loser), cmp.Compare(a.Port, b.Port))
	})
	return registry.New(c), conflicts
}

// correspondingPort is the port of the host's definition (ports) that a
// later registry's port p serves: the one with p's number; else the only
// one whose target port is p's number (Kubernetes port 80 -> 8080, Consul
// instances on 8080) or whose number is p's target port (the reverse).
func correspondingPort(ports []registry.Port, p registry.Port) (registry.Port, bool) {
	for _, w := range ports {
		if w.Number == p.Number {
			return w, true
		}
	}
	pTarget := cmp.Or(p.TargetPort, p.Number)
	var found []registry.Port
	for _, w := range ports {
		if cmp.Or(w.TargetPort, w.Number) == p.Number || (pTarget != p.Number && w.Number == pTarget) {
			found = append(found, w)
		}
	}
	if len(found) == 1 {
		return found[0], true
	}
	return registry.Port{}, false
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

// selected are the endpoints services with a Selector get from other
// registries' workloads: a Kubernetes Service selecting WorkloadEntries
// and auto-registered VMs in its namespace, as Istio's Services do. A
// workload of the service's own registry is left out (its Pods are
// endpoints through EndpointSlices already), and so is an endpoint
// already present (seen). The endpoint port is the workload's port named
// like the service port, else named like its named target port, else the
// numeric target port, else the service port.
func selected(services []*registry.Service, workloads []*registry.Workload, seen map[epKey]bool) []*registry.Endpoint {
	var out []*registry.Endpoint
	for _, svc := range services {
		if len(svc.Selector) == 0 {
			continue
		}
		for _, w := range workloads {
			if w.Source == svc.Source || w.Namespace != svc.Namespace || w.Address == "" || !registry.HasLabels(w.Labels, svc.Selector) {
				continue
			}
			for _, p := range svc.Ports {
				port := w.Ports[p.Name]
				if port == 0 && p.TargetPortName != "" {
					port = w.Ports[p.TargetPortName]
				}
				if port == 0 {
					port = p.TargetPort
				}
				if port == 0 {
					port = p.Number
				}
				k := epKey{svc.Hostname, p.Number, w.Address, port}
				if seen[k] {
					continue
				}
				seen[k] = true
				name := w.WorkloadName
				if name == "" {
					name = w.Name
				}
				out = append(out, &registry.Endpoint{
					ServiceHostname: svc.Hostname, ServicePort: p.Number, Address: w.Address, Port: port,
					Labels: w.Labels, Locality: w.Locality, ServiceAccount: w.ServiceAccount,
					WorkloadName: name, Namespace: w.Namespace, Health: w.Health,
				})
			}
		}
	}
	return out
}
