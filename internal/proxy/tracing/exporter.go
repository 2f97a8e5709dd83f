package tracing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Protocol is how spans reach the collector.
type Protocol string

const (
	OTLPGRPC Protocol = "grpc" // OpenTelemetryConfig.grpc_service
	OTLPHTTP Protocol = "http" // OpenTelemetryConfig.http_service
)

// ExporterKey names one collector and what this proxy calls itself there.
// Listeners whose tracing has the same key share one exporter.
type ExporterKey struct {
	Protocol Protocol
	// Address is the collector's host:port (the provider cluster's
	// endpoint).
	Address string
	// Path is the OTLP/HTTP request path ("/v1/traces"); "" for gRPC.
	Path string
	// Authority is the gRPC :authority (envoy_grpc.authority); "" for the
	// address.
	Authority string
	// ServiceName is the resource's service.name (OpenTelemetryConfig
	// service_name).
	ServiceName string
	// Headers are the OTLP/HTTP request headers (request_headers_to_add)
	// or gRPC initial metadata, "k=v" joined by "\n" (a comparable key).
	Headers string
}

// Batch processor bounds: spans waiting beyond MaxQueue are dropped.
const (
	MaxQueue      = 2048
	MaxBatch      = 512
	FlushInterval = time.Second
	exportTimeout = 5 * time.Second
)

// Exporter is one collector's OpenTelemetry tracer provider: a batch span
// processor in front of an OTLP exporter.
type Exporter struct {
	key    ExporterKey
	tp     *sdktrace.TracerProvider
	tracer trace.Tracer
}

// Key is the exporter's key.
func (e *Exporter) Key() ExporterKey { return e.key }

func newExporter(k ExporterKey) (*Exporter, error) {
	hdrs := parseHeaders(k.Headers)
	var (
		exp *otlptrace.Exporter
		err error
	)
	ctx := context.Background() // New does not dial: connections are made in the background
	switch k.Protocol {
	case OTLPGRPC:
		opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(k.Address), otlptracegrpc.WithInsecure(), otlptracegrpc.WithTimeout(exportTimeout)}
		if len(hdrs) > 0 {
			opts = append(opts, otlptracegrpc.WithHeaders(hdrs))
		}
		exp, err = otlptracegrpc.New(ctx, opts...)
	case OTLPHTTP:
		path := k.Path
		if path == "" {
			path = "/v1/traces"
		}
		opts := []otlptracehttp.Option{otlptracehttp.WithEndpoint(k.Address), otlptracehttp.WithURLPath(path), otlptracehttp.WithInsecure(), otlptracehttp.WithTimeout(exportTimeout)}
		if len(hdrs) > 0 {
			opts = append(opts, otlptracehttp.WithHeaders(hdrs))
		}
		exp, err = otlptracehttp.New(ctx, opts...)
	default:
		return nil, fmt.Errorf("tracing: unknown OTLP protocol %q", k.Protocol)
	}
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP exporter to %s: %w", k.Address, err)
	}
	res := resource.NewSchemaless(attribute.String("service.name", k.ServiceName))
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.AlwaysSample()), // Config.Start decides
		sdktrace.WithBatcher(exp,
			sdktrace.WithMaxQueueSize(MaxQueue),
			sdktrace.WithMaxExportBatchSize(MaxBatch),
			sdktrace.WithBatchTimeout(FlushInterval),
			sdktrace.WithExportTimeout(exportTimeout)),
	)
	return &Exporter{key: k, tp: tp, tracer: tp.Tracer("weft-proxy")}, nil
}

func parseHeaders(s string) map[string]string {
	if s == "" {
		return nil
	}
	m := map[string]string{}
	for _, kv := range splitLines(s) {
		for i := 0; i < len(kv); i++ {
			if kv[i] == '=' {
				m[kv[:i]] = kv[i+1:]
				break
			}
		}
	}
	return m
}

func splitLines(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// Exporters holds the proxy's exporters across configuration updates: a
// listener whose collector did not change keeps its exporter (and the
// spans queued in it).
type Exporters struct {
	log *slog.Logger
	mu  sync.Mutex
	m   map[ExporterKey]*Exporter
	wg  sync.WaitGroup // retired exporters flushing
}

// NewExporters returns an empty set; log reports export shutdown errors.
func NewExporters(log *slog.Logger) *Exporters {
	return &Exporters{log: log, m: map[ExporterKey]*Exporter{}}
}

// Get returns the exporter for k, creating it on first use.
func (e *Exporters) Get(k ExporterKey) (*Exporter, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if x := e.m[k]; x != nil {
		return x, nil
	}
	x, err := newExporter(k)
	if err != nil {
		return nil, err
	}
	e.m[k] = x
	return x, nil
}

// Retain shuts down, in the background, every exporter whose key is not
// in keep: the running configuration no longer uses it. Spans it still
// holds are flushed first (bounded by the export timeout); spans ended on
// it afterwards, by requests of an older configuration, are dropped.
func (e *Exporters) Retain(keep map[ExporterKey]bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for k, x := range e.m {
		if keep[k] {
			continue
		}
		delete(e.m, k)
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), exportTimeout)
			defer cancel()
			if err := x.tp.Shutdown(ctx); err != nil {
				e.log.Warn("tracing: shutting down an exporter no listener uses", "collector", k.Address, "err", err)
			}
		}()
	}
}

// Shutdown flushes and stops every exporter, waiting until ctx ends at
// most.
func (e *Exporters) Shutdown(ctx context.Context) error {
	e.mu.Lock()
	xs := e.m
	e.m = map[ExporterKey]*Exporter{}
	e.mu.Unlock()
	var errs []error
	for k, x := range xs {
		if err := x.tp.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("tracing: exporter to %s: %w", k.Address, err))
		}
	}
	done := make(chan struct{})
	go func() { e.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, ctx.Err())
	}
	return errors.Join(errs...)
}
