package testenv

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"
)

// JaegerEnv is a Jaeger all-in-one (v2: an OpenTelemetry collector with
// an in-memory trace store and the query API) on loopback ephemeral
// ports. Every port it opens is bound to 127.0.0.1: by default Jaeger
// binds its query ports on all interfaces, and its receivers on fixed
// ports another test would collide with.
type JaegerEnv struct {
	// OTLPGRPC and OTLPHTTP are the OTLP receivers' host:port (gRPC, and
	// HTTP: POST /v1/traces).
	OTLPGRPC, OTLPHTTP string
	// Query is the HTTP query API's host:port (/api/services,
	// /api/traces?service=…, /api/traces/<id>). The web UI's assets are
	// not in the Go module; the API answers.
	Query string

	proc *process
}

// Jaeger starts `jaeger` (built by hack/tools.sh) for t and waits until
// its query API answers; it stops in t.Cleanup. It skips t when the
// binary is missing (fails when Required).
func Jaeger(t testing.TB) *JaegerEnv {
	t.Helper()
	bin := Tool(t, "jaeger")
	dir := t.TempDir()
	p := freePorts(t, 4)
	addr := func(port int) string { return fmt.Sprintf("127.0.0.1:%d", port) }
	j := &JaegerEnv{OTLPGRPC: addr(p[0]), OTLPHTTP: addr(p[1]), Query: addr(p[2])}
	// Keys of its built-in all-in-one configuration
	// (cmd/jaeger/internal/all-in-one.yaml) and of the jaeger_query
	// extension. Only the OTLP receivers and the query API run, each on a
	// loopback port of its own; the Jaeger and Zipkin receivers, remote
	// sampling, health check, expvar and zpages (all on fixed ports, the
	// query API on every interface by default) are left out.
	set := []string{
		"receivers.otlp.protocols.grpc.endpoint=" + j.OTLPGRPC,
		"receivers.otlp.protocols.http.endpoint=" + j.OTLPHTTP,
		"service.pipelines.traces.receivers=[otlp]",
		"service.extensions=[jaeger_storage,jaeger_query]",
		"extensions.jaeger_query.http.endpoint=" + j.Query,
		"extensions.jaeger_query.grpc.endpoint=" + addr(p[3]),
		// Its own spans would go to localhost:4317, maybe another test's
		// collector.
		"extensions.jaeger_query.enable_tracing=false",
		// Its own metrics would listen on a fixed port (8888).
		"service.telemetry.metrics.level=none",
		"service.telemetry.logs.level=warn",
		// Spans reach the store without waiting for a full batch.
		"processors.batch.timeout=100ms",
	}
	var args []string
	for _, s := range set {
		args = append(args, "--set="+s)
	}
	j.proc = start(t, dir, "jaeger", bin, nil, args...)
	t.Cleanup(func() {
		j.proc.stop(5 * time.Second)
		if t.Failed() {
			t.Logf("testenv: jaeger log ends:\n%s", j.proc.tail(30))
		}
	})
	waitFor(t, j.proc, 30*time.Second, func(ctx context.Context) error {
		_, err := j.get(ctx, "/api/services", nil)
		return err
	})
	return j
}

// JaegerTrace is one trace of the query API (/api/traces), in Jaeger's
// JSON model.
type JaegerTrace struct {
	TraceID   string                   `json:"traceID"`
	Spans     []JaegerSpan             `json:"spans"`
	Processes map[string]JaegerProcess `json:"processes"`
}

// JaegerSpan is one span of a JaegerTrace.
type JaegerSpan struct {
	TraceID       string `json:"traceID"`
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	References    []struct {
		RefType string `json:"refType"`
		TraceID string `json:"traceID"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
	StartTime int64       `json:"startTime"` // µs since the epoch
	Duration  int64       `json:"duration"`  // µs
	Tags      []JaegerTag `json:"tags"`
	ProcessID string      `json:"processID"`
}

// JaegerTag is a span tag.
type JaegerTag struct {
	Key   string `json:"key"`
	Type  string `json:"type"`
	Value any    `json:"value"`
}

// JaegerProcess is the service a span came from.
type JaegerProcess struct {
	ServiceName string      `json:"serviceName"`
	Tags        []JaegerTag `json:"tags"`
}

// Tag returns the value of tag key as a string ("" when absent), and
// whether it is there.
func (s JaegerSpan) Tag(key string) (string, bool) {
	for _, t := range s.Tags {
		if t.Key == key {
			return fmt.Sprint(t.Value), true
		}
	}
	return "", false
}

// Parent is the span id of the span's CHILD_OF reference ("": a root).
func (s JaegerSpan) Parent() string {
	for _, r := range s.References {
		if r.RefType == "CHILD_OF" {
			return r.SpanID
		}
	}
	return ""
}

// Traces queries /api/traces for service's traces (at most limit, the
// newest first), over the last hour.
func (j *JaegerEnv) Traces(ctx context.Context, service string, limit int) ([]JaegerTrace, error) {
	q := url.Values{"service": {service}, "limit": {fmt.Sprint(limit)}, "lookback": {"1h"}}
	var out struct {
		Data []JaegerTrace `json:"data"`
	}
	b, err := j.get(ctx, "/api/traces", q)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("jaeger /api/traces: %w", err)
	}
	return out.Data, nil
}

// Trace fetches one trace by its id (hex).
func (j *JaegerEnv) Trace(ctx context.Context, id string) (JaegerTrace, error) {
	var out struct {
		Data []JaegerTrace `json:"data"`
	}
	b, err := j.get(ctx, "/api/traces/"+id, nil)
	if err != nil {
		return JaegerTrace{}, err
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return JaegerTrace{}, fmt.Errorf("jaeger /api/traces/%s: %w", id, err)
	}
	if len(out.Data) != 1 {
		return JaegerTrace{}, fmt.Errorf("jaeger /api/traces/%s: %d traces", id, len(out.Data))
	}
	return out.Data[0], nil
}

// Services lists the services Jaeger has spans of.
func (j *JaegerEnv) Services(ctx context.Context) ([]string, error) {
	var out struct {
		Data []string `json:"data"`
	}
	b, err := j.get(ctx, "/api/services", nil)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("jaeger /api/services: %w", err)
	}
	return out.Data, nil
}

func (j *JaegerEnv) get(ctx context.Context, path string, q url.Values) ([]byte, error) {
	u := "http://" + j.Query + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("jaeger GET %s: %s: %.200s", path, resp.Status, b)
	}
	return b, nil
}
