package mesh

import (
	"maps"
	"slices"

	telemetry "istio.io/api/telemetry/v1alpha1"

	"weft.dev/weft/internal/xds/contract"
)

// statNames maps the Telemetry API's metric selectors onto the names of
// Istio's stats config (Istio's metricToPrometheusMetric).
var statNames = map[telemetry.MetricSelector_IstioMetric]string{
	telemetry.MetricSelector_REQUEST_COUNT:          contract.StatRequestsTotal,
	telemetry.MetricSelector_REQUEST_DURATION:       contract.StatRequestDuration,
	telemetry.MetricSelector_REQUEST_SIZE:           contract.StatRequestBytes,
	telemetry.MetricSelector_RESPONSE_SIZE:          contract.StatResponseBytes,
	telemetry.MetricSelector_TCP_OPENED_CONNECTIONS: contract.StatTCPOpened,
	telemetry.MetricSelector_TCP_CLOSED_CONNECTIONS: contract.StatTCPClosed,
	telemetry.MetricSelector_TCP_SENT_BYTES:         contract.StatTCPSentBytes,
	telemetry.MetricSelector_TCP_RECEIVED_BYTES:     contract.StatTCPReceivedBytes,
	telemetry.MetricSelector_GRPC_REQUEST_MESSAGES:  contract.StatGRPCRequestMessages,
	telemetry.MetricSelector_GRPC_RESPONSE_MESSAGES: contract.StatGRPCReplyMessages,
}

// allStats is every standard metric, sorted, as ALL_METRICS expands.
var allStats = slices.Sorted(maps.Values(statNames))

// metricOverride is one metric's merged override (Istio's metricOverride).
type metricOverride struct {
	disabled *bool
	tags     map[string]*telemetry.MetricsOverrides_TagOverride
}

// Metrics resolves the Prometheus metrics of a workload's side (mode) as
// Istio's mergeMetrics does for its stats filter, and returns them as the
// filter's config: empty when the standard metrics are reported unchanged.
//
// Providers: the mesh config's defaultProviders.metrics, replaced by the
// providers the most specific Telemetry names; a Telemetry's metrics entry
// without providers applies to its parent's. Only Prometheus providers
// (the built-in "prometheus", or any extension provider of type
// prometheus) produce metrics on Weft's proxy: when none is in scope, or a
// level disables ALL_METRICS for this side (and no later level overrides
// a metric again), every metric is dropped. Overrides are applied least
// specific level first, each level's in order: disabled and tag overrides
// replace those of earlier ones, key by key.
func (i *TelemetryIndex) Metrics(set TelemetrySet, mode Mode) contract.StatsConfig {
	if i == nil {
		return contract.StatsConfig{}
	}
	var metrics []*telemetry.Metrics
	for _, t := range set.Ordered() {
		metrics = append(metrics, t.Spec.GetMetrics()...)
	}
	defaults := i.mesh.GetDefaultProviders().GetMetrics()
	inScope := defaults
	for _, m := range metrics {
		if names := providerNames(m.GetProviders()); len(names) > 0 {
			inScope = names
		}
	}
	provider := ""
	for _, name := range inScope {
		if i.isPrometheus(name) {
			provider = name
			break
		}
	}
	dropAll := contract.StatsConfig{Metrics: []contract.StatsMetric{{Drop: true}}}
	if provider == "" {
		return dropAll
	}
	overrides := map[string]*metricOverride{}
	disabledAll := false
	parent := defaults
	for _, m := range metrics {
		names := providerNames(m.GetProviders())
		if len(names) == 0 {
			names = parent
		}
		parent = names
		if !slices.Contains(names, provider) {
			continue
		}
		for _, o := range m.GetOverrides() {
			if !modeMatches(o.GetMatch().GetMode(), mode) {
				continue
			}
			if allMetricsSelected(o.GetMatch()) && o.GetDisabled().GetValue() {
				disabledAll = true
				continue
			}
			disabledAll = false // a more specific level turns metrics back on
			for _, name := range selectedStats(o.GetMatch()) {
				mo := overrides[name]
				if mo == nil {
					mo = &metricOverride{}
					overrides[name] = mo
				}
				if o.GetDisabled() != nil {
					d := o.GetDisabled().GetValue()
					mo.disabled = &d
				}
				for k, v := range o.GetTagOverrides() {
					if mo.tags == nil {
						mo.tags = map[string]*telemetry.MetricsOverrides_TagOverride{}
					}
					mo.tags[k] = v
				}
			}
		}
	}
	if disabledAll {
		return dropAll
	}
	var cfg contract.StatsConfig
	for _, name := range sortedKeys(overrides) {
		mo := overrides[name]
		sm := contract.StatsMetric{Name: name, Drop: mo.disabled != nil && *mo.disabled}
		for _, tag := range sortedKeys(mo.tags) {
			switch to := mo.tags[tag]; to.GetOperation() {
			case telemetry.MetricsOverrides_TagOverride_REMOVE:
				sm.TagsToRemove = append(sm.TagsToRemove, tag)
			default: // UPSERT
				if sm.Dimensions == nil {
					sm.Dimensions = map[string]string{}
				}
				sm.Dimensions[tag] = to.GetValue()
			}
		}
		if sm.Drop || len(sm.TagsToRemove) > 0 || len(sm.Dimensions) > 0 {
			cfg.Metrics = append(cfg.Metrics, sm)
		}
	}
	return cfg
}

// isPrometheus reports whether the provider named so reports Prometheus
// metrics.
func (i *TelemetryIndex) isPrometheus(name string) bool {
	return i.provider(name).GetPrometheus() != nil
}

func modeMatches(m telemetry.WorkloadMode, mode Mode) bool {
	return m == telemetry.WorkloadMode_CLIENT_AND_SERVER || m == mode
}

// allMetricsSelected reports whether the selector selects every metric
// (ALL_METRICS, or no metric named).
func allMetricsSelected(s *telemetry.MetricSelector) bool {
	switch m := s.GetMetricMatch().(type) {
	case *telemetry.MetricSelector_CustomMetric:
		return false
	case *telemetry.MetricSelector_Metric:
		return m.Metric == telemetry.MetricSelector_ALL_METRICS
	}
	return true
}

// selectedStats lists the stats config names the selector selects.
func selectedStats(s *telemetry.MetricSelector) []string {
	switch m := s.GetMetricMatch().(type) {
	case *telemetry.MetricSelector_CustomMetric:
		return []string{m.CustomMetric}
	case *telemetry.MetricSelector_Metric:
		if name, ok := statNames[m.Metric]; ok {
			return []string{name}
		}
	}
	return allStats
}
