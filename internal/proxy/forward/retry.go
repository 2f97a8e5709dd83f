package forward

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"weft.dev/weft/internal/proxy/route"
	"weft.dev/weft/internal/proxy/upstream"
)

// outcome classifies one upstream attempt.
type outcome uint8

const (
	outcomeResponse       outcome = iota // headers received
	outcomeConnectFailure                // UF
	outcomeRefusedStream                 // reset with REFUSED_STREAM
	outcomeReset                         // UC: reset/disconnect before headers
	outcomePerTryTimeout                 // UT on this attempt only
)

// retriableError reports whether an attempt that failed with o may be
// retried under rp.
func retriableError(rp *route.RetryPolicy, o outcome) bool {
	switch o {
	case outcomeConnectFailure:
		return rp.RetriableFailure(route.ConnectFailure)
	case outcomeRefusedStream:
		return rp.RetriableFailure(route.RefusedStream)
	case outcomeReset:
		return rp.RetriableFailure(route.Reset)
	case outcomePerTryTimeout:
		return rp.RetriableFailure(route.PerTryTimeout)
	}
	return false
}

// retryBodyBufferLimit is the per_request_buffer_limit_bytes Envoy applies
// to request bodies it may retry.
const retryBodyBufferLimit = 64 << 10

// classify turns a RoundTrip error into an outcome. perTryFired tells a
// per-try timeout apart from other cancellations.
func classify(err error, perTryFired bool) outcome {
	switch {
	case perTryFired:
		return outcomePerTryTimeout
	case upstream.IsConnectError(err):
		return outcomeConnectFailure
	case strings.Contains(err.Error(), "REFUSED_STREAM"):
		return outcomeRefusedStream
	}
	return outcomeReset
}

// errStaleAttempt is what an abandoned attempt reads from the request body
// once a retry owns it.
var errStaleAttempt = errors.New("request body: a newer attempt owns the body")

// replayBody lets a request body be sent again on a retry, as Envoy does: it
// keeps what has been read so far while that stays within
// retryBodyBufferLimit. A retry is possible when nothing was read yet or the
// whole body was read and kept; a body that outgrew the buffer is never
// replayed. Safe for the concurrent use of overlapping attempts: only the
// attempt that owns the body reads the downstream body.
type replayBody struct {
	src io.Reader

	mu       sync.Mutex
	buf      []byte
	started  bool // a read from src has begun
	eof      bool // src is exhausted and buf holds all of it
	overflow bool // more than the limit was read: buf is dropped
	owner    *bodyView
}

// bodyView is one attempt's reader over a replayBody.
type bodyView struct {
	rb  *replayBody
	pos int
}

func newReplayBody(src io.Reader) *replayBody { return &replayBody{src: src} }

// attempt returns a fresh reader for a new attempt, or nil when the body can
// no longer be replayed.
func (rb *replayBody) attempt() *bodyView {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	if rb.owner != nil && rb.started && !rb.eof {
		return nil // part of the body went to an earlier attempt and is not complete here
	}
	if rb.overflow {
		return nil
	}
	v := &bodyView{rb: rb}
	rb.owner = v
	return v
}

func (v *bodyView) Read(p []byte) (int, error) {
	rb := v.rb
	rb.mu.Lock()
	if !rb.overflow && v.pos < len(rb.buf) {
		n := copy(p, rb.buf[v.pos:])
		v.pos += n
		rb.mu.Unlock()
		return n, nil
	}
	if rb.eof {
		rb.mu.Unlock()
		return 0, io.EOF
	}
	if rb.owner != v {
		rb.mu.Unlock()
		return 0, errStaleAttempt
	}
	rb.started = true
	rb.mu.Unlock()

	n, err := rb.src.Read(p)

	rb.mu.Lock()
	if n > 0 && !rb.overflow {
		if len(rb.buf)+n > retryBodyBufferLimit {
			rb.overflow, rb.buf = true, nil
		} else {
			rb.buf = append(rb.buf, p[:n]...)
			v.pos += n
		}
	}
	if err == io.EOF && !rb.overflow {
		rb.eof = true
	}
	rb.mu.Unlock()
	return n, err
}

// InMemory reports whether the rest of v is in memory: kept from an
// earlier attempt, or the downstream body's remaining bytes
// (upstream.InMemoryBody).
func (v *bodyView) InMemory() bool {
	rb := v.rb
	rb.mu.Lock()
	defer rb.mu.Unlock()
	if rb.owner != v || rb.overflow {
		return false
	}
	if rb.eof {
		return true
	}
	m, ok := rb.src.(upstream.InMemoryBody)
	return ok && m.InMemory()
}

// Close is a no-op: the server closes the downstream body when the handler
// returns, and an attempt that gives up must not end the body for a retry.
func (v *bodyView) Close() error { return nil }

// flagsOrder is the order Envoy prints response flags in.
// RBAC (an RBAC filter denied the request) is Weft's: Envoy's access log
// shows such a request by its response code details
// (rbac_access_denied_matched_policy[...]), which Weft does not log.
var flagsOrder = []string{"UH", "UT", "UF", "UC", "UO", "NR", "DI", "FI", "URX", "RBAC"}

// joinFlags joins response flags in Envoy's order.
func joinFlags(flags ...string) string {
	var b strings.Builder
	for _, f := range flagsOrder {
		for _, g := range flags {
			if g == f {
				if b.Len() > 0 {
					b.WriteByte(',')
				}
				b.WriteString(f)
				break
			}
		}
	}
	return b.String()
}

// sleepCtx waits d or until ctx ends; it reports whether d elapsed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// grpcStatusHeader is the grpc-status of a trailers-only response, or "".
func grpcStatusHeader(h http.Header) string {
	if v := h["Grpc-Status"]; len(v) > 0 {
		if _, err := strconv.Atoi(v[0]); err == nil {
			return v[0]
		}
	}
	return ""
}
