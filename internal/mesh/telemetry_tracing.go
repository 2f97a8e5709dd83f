package mesh

import (
	"strings"

	meshconfig "istio.io/api/mesh/v1alpha1"
	telemetry "istio.io/api/telemetry/v1alpha1"
)

// DefaultTracingSampling is Istio's sampling percentage when neither a
// Telemetry nor the mesh config sets one (PILOT_TRACE_SAMPLING's default).
const DefaultTracingSampling = 1.0

// Tracing resolves the tracing of a workload's side (server: its inbound
// listeners, client: its outbound ones) from the Telemetry resources that
// apply to it, as Istio's Telemetries.Tracing does: from the least to the
// most specific Telemetry, a tracing entry whose match.mode covers the
// side overrides the providers it names, its randomSamplingPercentage,
// disableSpanReporting, and adds or replaces custom tags. Without
// providers the mesh config's defaultProviders.tracing apply. The first
// provider is used; it must be of type opentelemetry (the tracer the
// proxy has): others, unknown providers and disabled span reporting give
// nil (no tracing). The sampling is the mesh config's
// defaultConfig.tracing.sampling, else DefaultTracingSampling, when no
// Telemetry sets it.
func (i *TelemetryIndex) Tracing(set TelemetrySet, server bool) *Tracing {
	if i == nil {
		return nil
	}
	mode := ModeClient
	if server {
		mode = ModeServer
	}
	var (
		names    []string
		sampling *float64
		disabled bool
		tags     = map[string]TracingTag{}
		order    []string
	)
	for _, t := range set.Ordered() {
		for _, tr := range t.Spec.GetTracing() {
			if m := tr.GetMatch(); m != nil && m.GetMode() != telemetry.WorkloadMode_CLIENT_AND_SERVER && m.GetMode() != mode {
				continue
			}
			if len(tr.GetProviders()) > 0 {
				names = providerNames(tr.GetProviders())
			}
			if v := tr.GetRandomSamplingPercentage(); v != nil {
				p := v.GetValue()
				sampling = &p
			}
			if v := tr.GetDisableSpanReporting(); v != nil {
				disabled = v.GetValue()
			}
			for name, ct := range tr.GetCustomTags() {
				tag, ok := customTag(name, ct)
				if !ok {
					continue
				}
				if _, seen := tags[name]; !seen {
					order = append(order, name)
				}
				tags[name] = tag
			}
		}
	}
	if len(names) == 0 {
		names = i.mesh.GetDefaultProviders().GetTracing()
	}
	if disabled || len(names) == 0 {
		return nil
	}
	p := i.provider(names[0])
	otel := p.GetOpentelemetry()
	if otel == nil {
		return nil // not defined, or a tracer the proxy does not have
	}
	out := &Tracing{
		Provider: TracingProvider{
			Name:     p.GetName(),
			Service:  providerHost(otel.GetService()),
			Port:     otel.GetPort(),
			HTTPPath: httpPath(otel),
		},
		SamplingPercent: DefaultTracingSampling,
	}
	if s := i.mesh.GetDefaultConfig().GetTracing().GetSampling(); s != 0 {
		out.SamplingPercent = s
	}
	if sampling != nil {
		out.SamplingPercent = *sampling
	}
	for _, name := range order {
		out.CustomTags = append(out.CustomTags, tags[name])
	}
	if out.Validate() != nil {
		return nil // validation of the mesh config and Telemetry reports why
	}
	return out
}

// customTag converts a Telemetry custom tag.
func customTag(name string, ct *telemetry.Tracing_CustomTag) (TracingTag, bool) {
	switch {
	case ct.GetLiteral() != nil:
		return TracingTag{Tag: name, Literal: ct.GetLiteral().GetValue()}, ct.GetLiteral().GetValue() != ""
	case ct.GetEnvironment() != nil:
		e := ct.GetEnvironment()
		return TracingTag{Tag: name, Environment: e.GetName(), Default: e.GetDefaultValue()}, e.GetName() != ""
	case ct.GetHeader() != nil:
		h := ct.GetHeader()
		return TracingTag{Tag: name, Header: h.GetName(), Default: h.GetDefaultValue()}, h.GetName() != ""
	}
	return TracingTag{}, false
}

// providerHost is a provider's service host: Istio also accepts
// "<namespace>/<host>".
func providerHost(s string) string {
	if _, h, ok := strings.Cut(s, "/"); ok {
		return h
	}
	return s
}

// httpPath is the OTLP/HTTP path of an opentelemetry provider with http
// set ("/v1/traces" when it names none), "" for OTLP/gRPC.
func httpPath(p *meshconfig.MeshConfig_ExtensionProvider_OpenTelemetryTracingProvider) string {
	h := p.GetHttp()
	if h == nil {
		return ""
	}
	if h.GetPath() == "" {
		return "/v1/traces"
	}
	return h.GetPath()
}
