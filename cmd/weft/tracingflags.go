package main

import (
	"fmt"
	"net"
	"strconv"

	"github.com/spf13/pflag"

	"weft.dev/weft/internal/controlplane"
	"weft.dev/weft/internal/mesh"
)

// tracingFlags are `weft serve`'s mesh-wide tracing: Istio's mesh config
// defaultProviders.tracing naming an opentelemetry extension provider,
// given as flags. They fill controlplane.Options.Tracing, the same input
// the Telemetry API's tracing feeds.
type tracingFlags struct {
	address  string
	httpPath string
	sampling float64
}

func (t *tracingFlags) register(f *pflag.FlagSet) {
	f.StringVar(&t.address, "tracing-otlp-address", "", "OpenTelemetry collector (host:port, e.g. a Jaeger's OTLP port 4317) the proxies send their spans to; empty: no tracing. As Istio's mesh config extensionProviders opentelemetry {service, port} made the default tracing provider")
	f.StringVar(&t.httpPath, "tracing-otlp-http-path", "", "export spans with OTLP/HTTP to this path of the collector (e.g. /v1/traces, port 4318) instead of OTLP/gRPC")
	f.Float64Var(&t.sampling, "tracing-sampling", 1, "percentage (0-100) of requests without an upstream sampling decision that are traced, as Telemetry randomSamplingPercentage (Istio's default is 1)")
}

// apply sets o.Tracing from the flags.
func (t *tracingFlags) apply(o *controlplane.Options) error {
	if t.address == "" {
		if t.httpPath != "" {
			return fmt.Errorf("--tracing-otlp-http-path needs --tracing-otlp-address")
		}
		return nil
	}
	host, port, err := net.SplitHostPort(t.address)
	if err != nil {
		return fmt.Errorf("--tracing-otlp-address %q: want host:port: %w", t.address, err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || p == 0 {
		return fmt.Errorf("--tracing-otlp-address %q: port %q is not a port", t.address, port)
	}
	tr := &mesh.Tracing{
		Provider:        mesh.TracingProvider{Name: "otel", Service: host, Port: uint32(p), HTTPPath: t.httpPath},
		SamplingPercent: t.sampling,
	}
	if err := tr.Validate(); err != nil {
		return fmt.Errorf("--tracing-*: %w", err)
	}
	o.Tracing = tr
	return nil
}
