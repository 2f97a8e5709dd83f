package tracing

import (
	"net/http"
	"strings"
	"unsafe"

	"go.opentelemetry.io/otel/trace"
)

// Header names, in Go's canonical form (http.Header keys).
const (
	hdrTraceparent = "Traceparent"
	hdrB3          = "B3"
	hdrB3TraceID   = "X-B3-Traceid"
	hdrB3SpanID    = "X-B3-Spanid"
	hdrB3ParentID  = "X-B3-Parentspanid"
	hdrB3Sampled   = "X-B3-Sampled"
	hdrB3Flags     = "X-B3-Flags"
	hdrRequestID   = "X-Request-Id"
	// Envoy's headers that ask for a trace of a request no caller has
	// decided on: x-envoy-force-trace (from a trusted, internal client),
	// and x-client-trace-id (a client's own trace id; Envoy samples these
	// at client_sampling, 100% by default).
	hdrForceTrace    = "X-Envoy-Force-Trace"
	hdrClientTraceID = "X-Client-Trace-Id"
	hdrUserAgent     = "User-Agent"
	hdrDownstreamCl  = "X-Envoy-Downstream-Service-Cluster"
)

// sampling is what an incoming trace context says about sampling.
type sampling uint8

const (
	samplingNone sampling = iota // no decision: the proxy decides
	samplingDrop                 // the caller decided not to trace
	samplingKeep                 // the caller decided to trace (or debug)
)

// parent is the trace context a request arrived with.
type parent struct {
	tid     trace.TraceID
	sid     trace.SpanID
	valid   bool // tid and sid were read
	decided sampling
	b3      bool // the caller used B3 (single or multi) rather than W3C
	b3One   bool // ... the single b3 header
}

// extract reads the incoming trace context: W3C traceparent first, then
// B3's single header, then B3's multi headers, as Envoy's tracers accept
// them. A malformed header is ignored (the request starts a new trace),
// never refused. It does not allocate.
func extract(h http.Header) parent {
	if v := h[hdrTraceparent]; len(v) > 0 {
		if p, ok := parseTraceparent(v[0]); ok {
			return p
		}
	}
	if v := h[hdrB3]; len(v) > 0 {
		if p, ok := parseB3Single(v[0]); ok {
			return p
		}
	}
	if v := h[hdrB3TraceID]; len(v) > 0 {
		p := parent{b3: true}
		if tid, ok := parseTraceID(v[0]); ok {
			if sv := h[hdrB3SpanID]; len(sv) > 0 {
				if sid, ok := parseSpanID(sv[0]); ok {
					p.tid, p.sid, p.valid = tid, sid, true
				}
			}
		}
		p.decided = b3Sampled(h)
		if p.valid || p.decided != samplingNone {
			return p
		}
	} else if d := b3Sampled(h); d != samplingNone {
		return parent{b3: true, decided: d} // a bare sampling decision
	}
	return parent{}
}

func b3Sampled(h http.Header) sampling {
	if v := h[hdrB3Flags]; len(v) > 0 && v[0] == "1" {
		return samplingKeep // debug
	}
	if v := h[hdrB3Sampled]; len(v) > 0 {
		switch v[0] {
		case "1", "true", "d":
			return samplingKeep
		case "0", "false":
			return samplingDrop
		}
	}
	return samplingNone
}

// parseTraceparent reads "00-<32 hex>-<16 hex>-<2 hex>" (W3C Trace
// Context, version 00; a higher version's first four fields the same).
func parseTraceparent(s string) (parent, bool) {
	s = strings.TrimSpace(s)
	if len(s) < 55 || s[2] != '-' || s[35] != '-' || s[52] != '-' || (len(s) > 55 && s[55] != '-') {
		return parent{}, false
	}
	if s[:2] == "ff" || (s[:2] == "00" && len(s) != 55) {
		return parent{}, false
	}
	tid, ok1 := parseTraceID(s[3:35])
	sid, ok2 := parseSpanID(s[36:52])
	flags, ok3 := hexByte(s[53], s[54])
	if !ok1 || !ok2 || !ok3 || len(s[3:35]) != 32 {
		return parent{}, false
	}
	p := parent{tid: tid, sid: sid, valid: true, decided: samplingDrop}
	if flags&1 == 1 {
		p.decided = samplingKeep
	}
	return p, true
}

// parseB3Single reads B3's single header:
// {TraceId}-{SpanId}[-{SamplingState}[-{ParentSpanId}]] or a bare
// sampling state ("0", "1", "d").
func parseB3Single(s string) (parent, bool) {
	s = strings.TrimSpace(s)
	p := parent{b3: true, b3One: true}
	switch s {
	case "0":
		p.decided = samplingDrop
		return p, true
	case "1", "d":
		p.decided = samplingKeep
		return p, true
	}
	i := strings.IndexByte(s, '-')
	if i < 0 {
		return parent{}, false
	}
	tid, ok := parseTraceID(s[:i])
	if !ok {
		return parent{}, false
	}
	rest := s[i+1:]
	sidStr, rest, hasMore := strings.Cut(rest, "-")
	sid, ok := parseSpanID(sidStr)
	if !ok {
		return parent{}, false
	}
	p.tid, p.sid, p.valid = tid, sid, true
	if hasMore {
		state, _, _ := strings.Cut(rest, "-")
		switch state {
		case "1", "d":
			p.decided = samplingKeep
		case "0":
			p.decided = samplingDrop
		default:
			return parent{}, false
		}
	}
	return p, true
}

// parseTraceID reads 32 hex digits, or 16 (a 64-bit B3 id, left-padded
// with zeros as B3 says). An all-zero id is invalid.
func parseTraceID(s string) (trace.TraceID, bool) {
	var id trace.TraceID
	switch len(s) {
	case 32:
		if !decodeHex(id[:], s) {
			return id, false
		}
	case 16:
		if !decodeHex(id[8:], s) {
			return id, false
		}
	default:
		return id, false
	}
	return id, id.IsValid()
}

func parseSpanID(s string) (trace.SpanID, bool) {
	var id trace.SpanID
	if len(s) != 16 || !decodeHex(id[:], s) {
		return id, false
	}
	return id, id.IsValid()
}

func decodeHex(dst []byte, s string) bool {
	for i := range dst {
		b, ok := hexByte(s[2*i], s[2*i+1])
		if !ok {
			return false
		}
		dst[i] = b
	}
	return true
}

func hexByte(a, b byte) (byte, bool) {
	x, ok1 := unhex(a)
	y, ok2 := unhex(b)
	return x<<4 | y, ok1 && ok2
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

const hexDigits = "0123456789abcdef"

var (
	sampledYes = []string{"1"} // shared, never modified
	sampledNo  = []string{"0"}
)

// inject writes the outgoing trace context for span sid of trace tid
// (parent pid, zero: none) into h: W3C traceparent always, B3's multi
// headers always (apps that forward only x-b3-* keep the trace), and B3's
// single header when the request came with one. tracestate passes through
// unchanged. Two allocations: one string holding every id, one array
// holding the header values.
func inject(h http.Header, tid trace.TraceID, sid, pid trace.SpanID, sampled, b3One bool) {
	// buf: traceparent (55) | parent id (16) | b3 single suffix "-1" or "-0"
	var buf [55 + 16 + 2]byte
	copy(buf[:3], "00-")
	hexEncode(buf[3:35], tid[:])
	buf[35] = '-'
	hexEncode(buf[36:52], sid[:])
	buf[52] = '-'
	buf[53] = '0'
	buf[54] = '0'
	state := byte('0')
	if sampled {
		buf[54], state = '1', '1'
	}
	hexEncode(buf[55:71], pid[:])
	buf[71], buf[72] = '-', state
	s := string(buf[:])
	vals := new([5]string)
	vals[0] = s[:55]   // traceparent
	vals[1] = s[3:35]  // x-b3-traceid
	vals[2] = s[36:52] // x-b3-spanid
	vals[3] = s[55:71] // x-b3-parentspanid
	vals[4] = s[3:52]  // b3 single: tid-sid, then "-state" appended below when needed
	h[hdrTraceparent] = vals[0:1:1]
	h[hdrB3TraceID] = vals[1:2:2]
	h[hdrB3SpanID] = vals[2:3:3]
	if pid.IsValid() {
		h[hdrB3ParentID] = vals[3:4:4]
	} else {
		delete(h, hdrB3ParentID)
	}
	if sampled {
		h[hdrB3Sampled] = sampledYes
	} else {
		h[hdrB3Sampled] = sampledNo
	}
	delete(h, hdrB3Flags) // the decision is in x-b3-sampled now
	if b3One {
		// {TraceId}-{SpanId}-{SamplingState}[-{ParentSpanId}]
		if pid.IsValid() {
			vals[4] = s[3:52] + s[71:73] + "-" + s[55:71]
		} else {
			vals[4] = s[3:52] + s[71:73]
		}
		h[hdrB3] = vals[4:5:5]
	}
}

// injectUnsampled writes the decision "not sampled" for a request that
// came without one: traceparent (…-00) and x-b3-sampled: 0, the fewest
// headers that make the next hop of either format keep the decision. A
// request that came with B3 ids keeps them; one that came with the single
// b3 header gets b3: 0. One allocation: the header value and its text
// share it (unsampledHeader).
func injectUnsampled(h http.Header, tid trace.TraceID, sid, _ trace.SpanID, p parent) {
	u := new(unsampledHeader)
	b := &u.text
	copy(b[:3], "00-")
	hexEncode(b[3:35], tid[:])
	b[35] = '-'
	hexEncode(b[36:52], sid[:])
	b[52], b[53], b[54] = '-', '0', '0'
	// b is written once, above, and never again: the string may alias it.
	u.vals[0] = unsafe.String(&b[0], len(b))
	h[hdrTraceparent] = u.vals[:]
	h[hdrB3Sampled] = sampledNo
	if p.b3One {
		h[hdrB3] = sampledNo
	}
}

// unsampledHeader is a traceparent header value ([]string of one) and the
// bytes of its text in one allocation.
type unsampledHeader struct {
	vals [1]string
	text [55]byte
}

func hexEncode(dst, src []byte) {
	for i, b := range src {
		dst[2*i], dst[2*i+1] = hexDigits[b>>4], hexDigits[b&0xf]
	}
}
