package generate

import (
	"regexp"
	"slices"
	"strconv"
	"strings"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry"
	"weft.dev/weft/internal/xds/contract"
)

// Envoy resources a proxy's error message may name, in the forms the Weft
// proxy (and Envoy) write them.
var (
	clusterRef  = regexp.MustCompile(`(?:cluster|clusters?) "([^"]+)"`)
	listenerRef = regexp.MustCompile(`listener "([^"]+)"`)
	vhostRef    = regexp.MustCompile(`virtual_hosts\[\d+\] \(([^)]+)\)`)
	// An Istio-style cluster name anywhere in the text.
	clusterName = regexp.MustCompile(`\b(?:outbound|inbound)\|\d+\|[^|\s"]*\|[^\s"|:;,)]*`)
)

// Origins names the config resources behind the Envoy resources a proxy's
// error message (a NACK's error_detail) mentions, so an operator learns
// which file to fix: a virtual host maps to the VirtualService routing its
// host (or, with none, the ServiceEntry defining it), a cluster to the
// DestinationRules and the ServiceEntry of its host, an inbound listener
// to the WorkloadEntries at its address. The result is sorted, without
// repeats; it is empty when the message names nothing Weft generated.
func Origins(s *mesh.Snapshot, message string) []config.Meta {
	set := map[string]config.Meta{}
	add := func(m config.Meta) {
		if m.Name != "" {
			set[m.Key()] = m
		}
	}
	addHost := func(host string, routes bool) {
		if routes {
			for _, vs := range s.Routes.ForHost(host) {
				add(vs.Meta)
			}
		}
		for _, se := range serviceEntriesFor(s, host) {
			add(se.Meta)
		}
	}
	var clusters []string
	for _, m := range clusterRef.FindAllStringSubmatch(message, -1) {
		clusters = append(clusters, m[1])
	}
	clusters = append(clusters, clusterName.FindAllString(message, -1)...)
	for _, c := range clusters {
		_, _, subset, host, err := contract.ParseClusterName(c)
		if err != nil || host == "" {
			continue
		}
		for _, dr := range s.Subsets.RulesFor(host).From {
			if subset == "" || dr.Spec.GetTrafficPolicy() != nil || definesSubset(dr, subset) {
				add(dr.Meta)
			}
		}
		addHost(host, false)
	}
	for _, m := range vhostRef.FindAllStringSubmatch(message, -1) {
		host := m[1]
		if i := strings.LastIndexByte(host, ':'); i > 0 {
			if _, err := strconv.Atoi(host[i+1:]); err == nil {
				host = host[:i]
			}
		}
		addHost(host, true)
	}
	for _, m := range listenerRef.FindAllStringSubmatch(message, -1) {
		name := m[1]
		i := strings.LastIndexByte(name, '_')
		if i <= 0 {
			continue
		}
		ip := name[:i]
		for _, ep := range s.Registry.EndpointsAt([]string{ip}) {
			for _, we := range s.Config.WorkloadEntries {
				if we.Spec.GetAddress() == ep.Address && we.Name == ep.WorkloadName && we.Namespace == ep.Namespace {
					add(we.Meta)
				}
			}
			for _, se := range serviceEntriesFor(s, ep.ServiceHostname) {
				add(se.Meta)
			}
		}
	}
	out := make([]config.Meta, 0, len(set))
	for _, m := range set {
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b config.Meta) int { return strings.Compare(a.Key(), b.Key()) })
	return out
}

func definesSubset(dr *config.DestinationRule, name string) bool {
	for _, x := range dr.Spec.GetSubsets() {
		if x.GetName() == name {
			return true
		}
	}
	return false
}

// serviceEntriesFor returns the ServiceEntry that defines host (the first
// seen), if one does.
func serviceEntriesFor(s *mesh.Snapshot, host string) []*config.ServiceEntry {
	ses := slices.Clone(s.Config.ServiceEntries)
	slices.SortFunc(ses, config.FirstSeen)
	for _, se := range ses {
		for _, h := range se.Spec.GetHosts() {
			if registry.ResolveHost(h, se.Namespace, s.DomainSuffix, nil) == host {
				return []*config.ServiceEntry{se}
			}
		}
	}
	return nil
}
