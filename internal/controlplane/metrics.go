package controlplane

import (
	"github.com/prometheus/client_golang/prometheus"

	"weft.dev/weft/internal/config"
)

// Conflicts in the configuration in force, exported when scraped. Where
// istiod has a metric for the same conflict it has its name:
// pilot_vservice_dup_domain (VirtualServices that lose a host to another,
// WF0201) and pilot_destrule_subsets (DestinationRule parts that lose a
// conflict, WF0203). Every conflict diagnostic is also counted by code
// in weft_config_conflicts, and hosts several registries define
// differently in weft_registry_conflicts. istiod's pilot_conflict_*
// listener conflicts have no counterpart: Weft's generator builds one
// listener per port and does not produce them.
var (
	descVSDupDomain = prometheus.NewDesc("pilot_vservice_dup_domain",
		"VirtualServices that lose a host to another for the same host (WF0201), as istiod's metric.", nil, nil)
	descDRSubsets = prometheus.NewDesc("pilot_destrule_subsets",
		"DestinationRule parts that lose a conflict with another for the same host (WF0203), as istiod's duplicate-subset metric.", nil, nil)
	descConfigConflicts = prometheus.NewDesc("weft_config_conflicts",
		"Conflict diagnostics of the configuration in force, by code (WF0201 VirtualService, WF0203 DestinationRule, WF0204 ServiceEntry, WF0205 PeerAuthentication).", []string{"code"}, nil)
	descRegistryConflicts = prometheus.NewDesc("weft_registry_conflicts",
		"Hosts two registries define differently (the first registry's definition is in force).", nil, nil)
)

// conflictCodes are the diagnostics weft_config_conflicts counts.
var conflictCodes = []config.Code{config.CodeVirtualServiceConflict, config.CodeDestinationRuleConflict,
	config.CodeServiceEntryConflict, config.CodePeerAuthnConflict}

// conflictMetrics reads the mesh in force at each scrape.
type conflictMetrics struct{ c *ControlPlane }

func (m conflictMetrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- descVSDupDomain
	ch <- descDRSubsets
	ch <- descConfigConflicts
	ch <- descRegistryConflicts
}

func (m conflictMetrics) Collect(ch chan<- prometheus.Metric) {
	counts := map[config.Code]int{}
	if cur := m.c.current.Load(); cur != nil && cur.Config != nil {
		for _, d := range cur.Config.Diagnostics {
			counts[d.Code]++
		}
	}
	ch <- prometheus.MustNewConstMetric(descVSDupDomain, prometheus.GaugeValue, float64(counts[config.CodeVirtualServiceConflict]))
	ch <- prometheus.MustNewConstMetric(descDRSubsets, prometheus.GaugeValue, float64(counts[config.CodeDestinationRuleConflict]))
	for _, code := range conflictCodes {
		ch <- prometheus.MustNewConstMetric(descConfigConflicts, prometheus.GaugeValue, float64(counts[code]), string(code))
	}
	ch <- prometheus.MustNewConstMetric(descRegistryConflicts, prometheus.GaugeValue, float64(len(m.c.registryConflicts())))
}
