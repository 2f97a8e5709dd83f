package mesh

import (
	"fmt"
	"net"
	"strconv"
)

// Tracing is what a workload's proxies trace and where the spans go:
// Istio's tracing Telemetry for the workload over its mesh config
// (defaultProviders.tracing naming an extensionProviders entry of type
// opentelemetry). Immutable once in a Snapshot.
type Tracing struct {
	// Provider is where spans are exported.
	Provider TracingProvider
	// SamplingPercent is randomSamplingPercentage (0-100): the share of
	// requests arriving without a sampling decision that are traced.
	SamplingPercent float64
	// CustomTags are added to every span, sorted by Tag when generated.
	CustomTags []TracingTag
}

// TracingProvider is a mesh config extensionProviders entry of type
// opentelemetry: an OTLP collector.
type TracingProvider struct {
	// Name is the provider's name (extensionProviders[].name).
	Name string
	// Service is the collector's host name (or IP address) and Port its
	// OTLP port, as Istio's provider takes them.
	Service string
	Port    uint32
	// HTTPPath, when set, exports with OTLP/HTTP on that path
	// (opentelemetry.http.path, e.g. /v1/traces); else OTLP/gRPC.
	HTTPPath string
}

// Address is the collector's host:port.
func (p TracingProvider) Address() string {
	return net.JoinHostPort(p.Service, strconv.FormatUint(uint64(p.Port), 10))
}

// TracingTag is one customTags entry: exactly one of Literal,
// Environment and Header is set.
type TracingTag struct {
	Tag         string
	Literal     string
	Environment string
	Header      string
	// Default is the value of an Environment or Header tag when the
	// variable or header is absent.
	Default string
}

// Validate checks t as Istio's validation would, naming the field.
func (t *Tracing) Validate() error {
	p := t.Provider
	if p.Service == "" {
		return fmt.Errorf("tracing provider %q: service is required", p.Name)
	}
	if p.Port == 0 || p.Port > 65535 {
		return fmt.Errorf("tracing provider %q: port %d is not a port", p.Name, p.Port)
	}
	if t.SamplingPercent < 0 || t.SamplingPercent > 100 {
		return fmt.Errorf("tracing: randomSamplingPercentage %v is not within 0-100", t.SamplingPercent)
	}
	for i, c := range t.CustomTags {
		n := 0
		for _, v := range []string{c.Literal, c.Environment, c.Header} {
			if v != "" {
				n++
			}
		}
		if c.Tag == "" || n > 1 || (n == 0 && c.Default == "") {
			return fmt.Errorf("tracing: customTags[%d] %q: want a name and one of literal, environment, header", i, c.Tag)
		}
	}
	return nil
}

// TracingFor is the tracing of the workload in namespace ns with labels
// on one side of its traffic — server (inbound listeners) or client
// (outbound) — nil when that side does not trace: the Telemetry API's
// (with the mesh config's providers, TelemetryIndex.Tracing) when it
// gives one, else the flags' mesh-wide default (Options.Tracing).
func (s *Snapshot) TracingFor(ns string, labels map[string]string, server bool) *Tracing {
	if t := s.Telemetry.Tracing(s.Telemetry.For(ns, labels), server); t != nil {
		return t
	}
	return s.tracing
}

// TracingEnabled reports whether any workload of the mesh may trace: the
// routes then carry the decorators that name spans (a route shared by
// every proxy cannot tell which of them trace; decorators only name
// spans).
func (s *Snapshot) TracingEnabled() bool {
	if s.tracing != nil {
		return true
	}
	if s.Telemetry == nil {
		return false
	}
	if len(s.Telemetry.MeshConfig().GetDefaultProviders().GetTracing()) > 0 {
		return true
	}
	for _, ts := range s.Telemetry.byNS {
		for _, t := range ts {
			if len(t.Spec.GetTracing()) > 0 {
				return true
			}
		}
	}
	return false
}
