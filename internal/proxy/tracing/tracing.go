// Package tracing is the proxy's distributed tracing, what Envoy's HTTP
// connection manager does with HttpConnectionManager.tracing and the
// OpenTelemetry tracer (envoy.tracers.opentelemetry): per request it reads
// the incoming trace context (W3C traceparent, B3 single and multi
// header), decides on sampling (the caller's decision, else
// random_sampling), and for a sampled request records one span — a server
// span on an inbound listener, a client span on an outbound one — named
// and tagged as Envoy and Istio do, and writes the new context into the
// request headers the upstream receives. Spans leave through the
// OpenTelemetry Go SDK's batch processor to an OTLP collector (gRPC or
// HTTP): bounded in memory, dropped rather than waited for, never on the
// request's path.
//
// Threading: a Config is immutable and serves any number of requests at
// once; a Span belongs to one request. Exporters is safe for concurrent
// use.
package tracing

import (
	"context"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Config is one connection manager's tracing, compiled from
// HttpConnectionManager.tracing. The zero sampling keeps nothing unless
// the caller decided to trace.
type Config struct {
	exp      *Exporter
	server   bool   // span kind: server (inbound listener) or client
	sampling uint64 // a request is sampled when rand.Uint64() < sampling; MaxUint64: always
	always   bool
	tags     []attribute.KeyValue // literal and environment custom tags, and node_id, zone
	hdrTags  []headerTag          // request_header custom tags
	maxPath  int                  // max_path_tag_length
}

type headerTag struct {
	key    attribute.Key
	header string // canonical
	def    string
}

// CustomTag is one HttpConnectionManager.tracing.custom_tags entry the
// proxy supports.
type CustomTag struct {
	Tag string
	// Exactly one of Literal, Environment or RequestHeader names the value.
	Literal       *string
	Environment   string // variable name
	RequestHeader string // header name
	Default       string // for Environment and RequestHeader
}

// Options describe a Config.
type Options struct {
	Exporter *Exporter // where sampled spans go (required)
	Inbound  bool      // server spans; else client spans
	// SamplingPercent is random_sampling (0-100): the share of requests
	// without an upstream decision that are traced.
	SamplingPercent float64
	CustomTags      []CustomTag
	// NodeID and Zone are tagged on every span (node_id, zone) as Envoy
	// does.
	NodeID, Zone string
	// MaxPathTagLength truncates http.url (0: Envoy's default, 256).
	MaxPathTagLength int
}

// New compiles o.
func New(o Options) *Config {
	c := &Config{exp: o.Exporter, server: o.Inbound, maxPath: o.MaxPathTagLength}
	if c.maxPath <= 0 {
		c.maxPath = 256
	}
	switch p := o.SamplingPercent; {
	case p >= 100:
		c.always, c.sampling = true, math.MaxUint64
	case p > 0:
		c.sampling = uint64(p / 100 * (1 << 63) * 2)
	}
	c.tags = append(c.tags, attribute.String("component", "proxy"), attribute.String("node_id", o.NodeID))
	if o.Zone != "" {
		c.tags = append(c.tags, attribute.String("zone", o.Zone))
	}
	for _, t := range o.CustomTags {
		switch {
		case t.Literal != nil:
			c.tags = append(c.tags, attribute.String(t.Tag, *t.Literal))
		case t.Environment != "":
			v, ok := os.LookupEnv(t.Environment)
			if !ok {
				v = t.Default
			}
			if v != "" {
				c.tags = append(c.tags, attribute.String(t.Tag, v))
			}
		case t.RequestHeader != "":
			c.hdrTags = append(c.hdrTags, headerTag{key: attribute.Key(t.Tag), header: http.CanonicalHeaderKey(t.RequestHeader), def: t.Default})
		}
	}
	return c
}

// Span is one sampled request's span. A nil *Span (the request is not
// sampled, or tracing is off) is valid: its methods do nothing.
type Span struct {
	c      *Config
	span   trace.Span
	start  time.Time
	name   string
	header http.Header // the request's headers, for the tags read at End
}

// Start is called when a request arrives on a listener with this config,
// before routing and the filters, with the request's headers and its
// arrival time. It decides on sampling and writes the outgoing trace
// context into h (for a request that is not sampled only when it came
// without one, so the next hop keeps the decision). It returns the
// request's span, or nil when it is not sampled. A request that came
// without x-request-id gets one when it is traced, so the span and every
// hop carry the same (guid:x-request-id).
func (c *Config) Start(h http.Header, start time.Time, newRequestID func() string) *Span {
	if c == nil {
		return nil
	}
	p := extract(h)
	var keep bool
	switch p.decided {
	case samplingKeep:
		keep = true
	case samplingDrop:
		keep = false
	default:
		// As Envoy: forced, or asked for by the client, else at the
		// random sampling rate.
		keep = c.always || len(h[hdrForceTrace]) > 0 || len(h[hdrClientTraceID]) > 0 ||
			(c.sampling > 0 && rand.Uint64() < c.sampling)
	}
	if !keep {
		if p.decided == samplingNone {
			// The caller did not decide: send the decision on, so the
			// next hop does not sample part of this trace.
			tid, pid := p.tid, p.sid
			if !p.valid {
				fillRandom(tid[:])
				pid = trace.SpanID{}
			}
			var sid trace.SpanID
			fillRandom(sid[:])
			injectUnsampled(h, tid, sid, pid, p)
		}
		return nil
	}
	ctx := context.Background()
	if p.valid {
		ctx = trace.ContextWithRemoteSpanContext(ctx, trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: p.tid, SpanID: p.sid, TraceFlags: trace.FlagsSampled, Remote: true,
		}))
	}
	kind := trace.SpanKindClient
	if c.server {
		kind = trace.SpanKindServer
	}
	_, sp := c.exp.tracer.Start(ctx, "", trace.WithSpanKind(kind), trace.WithTimestamp(start))
	sc := sp.SpanContext()
	var pid trace.SpanID
	if p.valid {
		pid = p.sid
	}
	inject(h, sc.TraceID(), sc.SpanID(), pid, true, p.b3One)
	if _, ok := h[hdrRequestID]; !ok && newRequestID != nil {
		h[hdrRequestID] = []string{newRequestID()}
	}
	return &Span{c: c, span: sp, start: start, header: h}
}

func fillRandom(b []byte) {
	for i := 0; i < len(b); i += 8 {
		v := rand.Uint64()
		for j := i; j < i+8 && j < len(b); j++ {
			b[j] = byte(v)
			v >>= 8
		}
	}
	if b[0] == 0 {
		b[0] = 1 // never the invalid all-zero id
	}
}

// Finish is what the request path knows of a request when it ends.
type Finish struct {
	// Operation is the span's name: the route's decorator operation
	// (Istio's "<host>:<port>/*"), else a name derived by the caller.
	Operation string
	Method    string
	URL       string // scheme://host/path?query as received
	Protocol  string // "HTTP/1.1", "HTTP/2"
	PeerAddr  string // the downstream peer's IP
	// Code is the response status (0: none was sent); GRPCCode the gRPC
	// status ("": not gRPC, or none).
	Code     int
	GRPCCode string
	Flags    string // response flags ("" = "-")
	Cluster  string // the upstream cluster ("" = none chosen)
	Upstream string // the endpoint's host:port ("" = none)
}

// End ends the span with what f says, tagged as Envoy tags its
// connection manager spans. The span is handed to the batch processor,
// which never blocks: when its queue is full the span is dropped.
func (s *Span) End(f Finish, end time.Time) {
	if s == nil {
		return
	}
	c := s.c
	s.span.SetName(f.Operation)
	ap := attrPool.Get().(*[]attribute.KeyValue)
	attrs := append((*ap)[:0], c.tags...)
	url := f.URL
	if len(url) > c.maxPath {
		url = url[:c.maxPath]
	}
	code := "0"
	switch {
	case f.Code >= 100 && f.Code < 100+len(statusCodes):
		code = statusCodes[f.Code-100]
	case f.Code > 0:
		code = strconv.Itoa(f.Code)
	}
	flags := f.Flags
	if flags == "" {
		flags = "-"
	}
	attrs = append(attrs,
		attribute.String("guid:x-request-id", first(s.header[hdrRequestID], "")),
		attribute.String("http.url", url),
		attribute.String("http.method", f.Method),
		attribute.String("http.protocol", f.Protocol),
		attribute.String("downstream_cluster", first(s.header[hdrDownstreamCl], "-")),
		attribute.String("user_agent", first(s.header[hdrUserAgent], "-")),
		attribute.String("peer.address", f.PeerAddr),
		attribute.String("http.status_code", code),
		attribute.String("response_flags", flags),
	)
	if f.Cluster != "" {
		attrs = append(attrs, attribute.String("upstream_cluster", f.Cluster), attribute.String("upstream_cluster.name", f.Cluster))
	}
	if f.Upstream != "" {
		attrs = append(attrs, attribute.String("upstream_address", f.Upstream))
	}
	if f.GRPCCode != "" {
		attrs = append(attrs, attribute.String("grpc.status_code", f.GRPCCode))
	}
	for _, t := range c.hdrTags {
		if v := first(s.header[t.header], t.def); v != "" {
			attrs = append(attrs, t.key.String(v))
		}
	}
	// Envoy: a 5xx, or no response at all, is an error.
	if f.Code >= 500 || f.Code == 0 {
		attrs = append(attrs, attribute.String("error", "true"))
		s.span.SetStatus(codes.Error, "")
	}
	s.span.SetAttributes(attrs...) // copies them
	clear(attrs)                   // the pool keeps no strings alive
	*ap = attrs[:0]
	attrPool.Put(ap)
	s.span.End(trace.WithTimestamp(end))
}

// attrPool recycles End's attribute lists: the SDK copies what
// SetAttributes is given, so each sampled request need not allocate one.
var attrPool = sync.Pool{New: func() any { a := make([]attribute.KeyValue, 0, 32); return &a }}

// statusCodes are the strings of the status codes 100-599, so that a
// span's http.status_code costs no allocation.
var statusCodes = func() []string {
	out := make([]string, 500)
	for i := range out {
		out[i] = strconv.Itoa(100 + i)
	}
	return out
}()

func first(v []string, def string) string {
	if len(v) > 0 && strings.TrimSpace(v[0]) != "" {
		return v[0]
	}
	return def
}
