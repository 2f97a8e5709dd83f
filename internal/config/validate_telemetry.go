package config

import (
	"fmt"
	"regexp"

	telemetry "istio.io/api/telemetry/v1alpha1"

	"weft.dev/weft/internal/celexpr"
)

// validateTelemetry is Istio's ValidateTelemetry (selector, targetRef(s),
// metrics, tracing, accessLogging), plus Weft's stricter check of access
// log filters: Weft's proxy runs Envoy's native access log filters, so an
// expression must be of the CEL subset they express (logfilter.go).
func validateTelemetry(is *issues, t *telemetry.Telemetry) {
	validateTargetRefs(is, "Telemetry", false, t.GetSelector(), t.GetTargetRef(), t.GetTargetRefs())
	validateSelector(is, "spec.selector", t.GetSelector())
	for i, l := range t.GetAccessLogging() {
		p := fmt.Sprintf("spec.accessLogging[%d]", i)
		if l == nil {
			continue
		}
		validateProviderRefs(is, p+".providers", l.GetProviders())
		if f := l.GetFilter(); f != nil {
			if _, err := ParseLogFilter(f.GetExpression()); err != nil {
				is.errf(p+".filter.expression", "filter %q: %v; Weft supports %s", f.GetExpression(), err, LogFilterSupport)
			}
		}
	}
	if len(t.GetTracing()) > 1 {
		is.warnf("spec.tracing", "only the first tracing entry is used (as Istio: multiple tracing is not supported)")
	}
	for i, tr := range t.GetTracing() {
		p := fmt.Sprintf("spec.tracing[%d]", i)
		if tr == nil {
			continue
		}
		if len(tr.GetProviders()) > 1 {
			is.warnf(p+".providers", "only the first provider is used (as Istio: multiple providers are not supported)")
		}
		validateProviderRefs(is, p+".providers", tr.GetProviders())
		if v := tr.GetRandomSamplingPercentage().GetValue(); v < 0 || v > 100 {
			is.errf(p+".randomSamplingPercentage", "randomSamplingPercentage must be in [0.0, 100.0], got %v", v)
		}
		for _, name := range sortedKeys(tr.GetCustomTags()) {
			tp := p + ".customTags." + name
			tag := tr.GetCustomTags()[name]
			if name == "" {
				is.errf(p+".customTags", "tag name may not be empty")
			}
			if tag == nil {
				is.errf(tp, "tag %q may not have a nil value", name)
				continue
			}
			switch tt := tag.GetType().(type) {
			case *telemetry.Tracing_CustomTag_Literal:
				if tt.Literal.GetValue() == "" {
					is.errf(tp+".literal.value", "literal tag value may not be empty")
				}
			case *telemetry.Tracing_CustomTag_Header:
				if tt.Header.GetName() == "" {
					is.errf(tp+".header.name", "header tag name may not be empty")
				}
			case *telemetry.Tracing_CustomTag_Environment:
				if tt.Environment.GetName() == "" {
					is.errf(tp+".environment.name", "environment tag name may not be empty")
				}
			}
		}
	}
	for i, m := range t.GetMetrics() {
		p := fmt.Sprintf("spec.metrics[%d]", i)
		if m == nil {
			continue
		}
		validateProviderRefs(is, p+".providers", m.GetProviders())
		if m.GetReportingInterval() != nil {
			is.warnf(p+".reportingInterval", "has no effect: Weft's proxy updates the TCP metrics as bytes flow, not at intervals")
		}
		for j, o := range m.GetOverrides() {
			op := fmt.Sprintf("%s.overrides[%d]", p, j)
			if o == nil {
				is.errf(op, "overrides may not be null")
				continue
			}
			for _, name := range sortedKeys(o.GetTagOverrides()) {
				tp := op + ".tagOverrides." + name
				to := o.GetTagOverrides()[name]
				if name == "" {
					is.warnf(op+".tagOverrides", "tagOverrides name may not be empty")
				}
				if to == nil {
					is.errf(tp, "tagOverrides may not be null")
					continue
				}
				if name != "" && !promLabelName.MatchString(name) {
					is.errf(tp, "%q is not a Prometheus label name (letters, digits and _, not starting with a digit or __)", name)
				}
				switch to.GetOperation() {
				case telemetry.MetricsOverrides_TagOverride_UPSERT:
					if to.GetValue() == "" {
						is.errf(tp+".value", "value must be set when operation is UPSERT")
					} else if _, err := celexpr.ParseValue(to.GetValue()); err != nil {
						is.errf(tp+".value", "%v (Weft's proxy evaluates a CEL subset: %s)", err, celexpr.ValueSupport)
					}
				case telemetry.MetricsOverrides_TagOverride_REMOVE:
					if to.GetValue() != "" {
						is.errf(tp+".value", "value may only be set when operation is UPSERT")
					}
				}
			}
			switch mm := o.GetMatch().GetMetricMatch().(type) {
			case *telemetry.MetricSelector_CustomMetric:
				if mm.CustomMetric == "" {
					is.errf(op+".match.customMetric", "customMetric may not be empty")
				} else {
					is.warnf(op+".match.customMetric", "Weft's proxy reports Istio's standard metrics only; overrides of custom metric %q have no effect", mm.CustomMetric)
				}
			case *telemetry.MetricSelector_Metric:
				if mm.Metric == telemetry.MetricSelector_GRPC_REQUEST_MESSAGES || mm.Metric == telemetry.MetricSelector_GRPC_RESPONSE_MESSAGES {
					is.warnf(op+".match.metric", "Weft's proxy does not report %s; this override has no effect", mm.Metric)
				}
			}
		}
	}
}

// validateProviderRefs is Istio's validateTelemetryProviders: every
// provider names one.
func validateProviderRefs(is *issues, path string, providers []*telemetry.ProviderRef) {
	for i, p := range providers {
		if p.GetName() == "" {
			is.errf(fmt.Sprintf("%s[%d].name", path, i), "providers.name may not be empty")
		}
	}
}

// promLabelName is a label name Prometheus accepts and does not reserve.
var promLabelName = regexp.MustCompile(`^(?:[a-zA-Z]|_[a-zA-Z0-9])[a-zA-Z0-9_]*$`)
