package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"weft.dev/weft/internal/proxy/reqctx"
)

// Requests whose body is already in memory.
//
// A small request body usually arrives in the same packets as the head,
// so the downstream server has it buffered before the request is routed.
// Such a body is read into a pooled buffer and written with the head in
// one write on the handler's goroutine: none of http.Transport's goroutine
// hand-offs, and one system call instead of two (http.Transport flushes
// the head before a body it does not know to be in memory). The buffer
// also lets a stale pooled connection be replaced and the request sent
// again, as for a request without a body.

// InMemoryBody is a request body that can tell whether all of its
// remaining bytes are in memory, so that reading it to the end cannot
// block: the proxy's HTTP/1.1 server's bodies (h1server) and the
// forwarder's wrappers of them.
type InMemoryBody interface {
	InMemory() bool
}

// inMemoryBodyMax bounds the bodies the synchronous path takes in memory.
// Larger ones stream through http.Transport.
const inMemoryBodyMax = 64 << 10

// inMemory reports whether req's body is one roundTripInMemory sends: a
// length-framed body of at most inMemoryBodyMax bytes, all in memory,
// under a head writeHead writes.
func inMemory(req *http.Request) bool {
	if req.ContentLength <= 0 || req.ContentLength > inMemoryBodyMax || len(req.TransferEncoding) > 0 || len(req.Trailer) > 0 {
		return false
	}
	b, ok := req.Body.(InMemoryBody)
	return ok && b.InMemory() && plainHead(req)
}

// bodyBufs holds the buffers of in-memory bodies up to bodyBufSize bytes.
var bodyBufs = sync.Pool{New: func() any { b := make([]byte, bodyBufSize); return &b }}

const bodyBufSize = 4 << 10

// roundTripInMemory sends req, whose body inMemory accepted, on the
// synchronous path. It reads and closes the body first; an error reading
// it (the downstream's) is returned before anything is sent.
func (e *Conns) roundTripInMemory(ctx context.Context, req *http.Request, s *Scratch) (*http.Response, error) {
	n := int(req.ContentLength)
	var body []byte
	if n <= bodyBufSize {
		bp := bodyBufs.Get().(*[]byte)
		defer bodyBufs.Put(bp) // send has written it all when roundTrip returns
		body = (*bp)[:n]
	} else {
		body = make([]byte, n)
	}
	_, err := io.ReadFull(req.Body, body)
	req.Body.Close()
	if err != nil {
		return nil, err
	}
	return e.roundTrip(ctx, req, body, s)
}

// Requests with a body on the synchronous HTTP/1.1 path.
//
// When the cluster sets common_http_protocol_options.max_requests_per_connection
// every HTTP/1.1 request must be counted on the connection it used, so
// requests with a body take the synchronous path too (Pool.RoundTrip)
// instead of http.Transport, whose pool does not limit requests per
// connection. One goroutine writes the request head and body while the
// handler goroutine reads the response, as http.Transport's writeLoop does:
// request and response bodies can stream at the same time, and an upstream
// that answers before it has read the whole body (or closes) is answered
// with its response, or the read error when none arrived.

// maxWriteWaitBeforeReuse bounds how long a finished response waits for the
// request write to complete before its connection is closed instead of
// pooled (http.Transport waits the same 50ms).
const maxWriteWaitBeforeReuse = 50 * time.Millisecond

// roundTripBody sends req, which has a body, and reads the response head.
// The body cannot be replayed here, so a failure is never retried on another
// connection (the caller decides on replays); pooled connections the upstream
// has visibly closed are dropped first, as for non-idempotent requests.
func (e *Conns) roundTripBody(ctx context.Context, req *http.Request) (*http.Response, error) {
	if err := ctx.Err(); err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	pc := e.get()
	for pc != nil && !connAlive(pc.raw) {
		pc.nc.Close()
		pc = e.get()
	}
	if pc == nil {
		var err error
		if pc, err = e.dial(ctx); err != nil {
			if req.Body != nil {
				req.Body.Close()
			}
			return nil, err
		}
	}
	stop := reqctx.AfterFunc(ctx, pc.interrupt) // no allocation for an HTTP/1.1 server request
	wrote := make(chan error, 1)
	go func() {
		err := req.Write(pc.bw) // closes req.Body
		if err == nil {
			err = pc.bw.Flush()
		}
		var oe *net.OpError
		if err != nil && !(errors.As(err, &oe) && oe.Op == "write") {
			// The request body failed (not the connection): the upstream
			// would wait for the rest of it, so end the exchange.
			pc.nc.Close()
		}
		wrote <- err
	}()
	fail := func(err error) (*http.Response, error) {
		stop.Stop()
		pc.nc.Close() // ends a write still in progress
		return nil, err
	}
	var resp *http.Response
	var err error
	for n := 0; ; n++ {
		if resp, err = http.ReadResponse(pc.br, req); err != nil {
			return fail(err)
		}
		if resp.StatusCode >= 200 {
			break
		}
		if resp.StatusCode == http.StatusSwitchingProtocols || n == 5 {
			return fail(fmt.Errorf("upstream sent unexpected %d response", resp.StatusCode))
		}
	}
	resp.Body = &h1Body{rc: resp.Body, e: e, pc: pc, stop: stop, keepAlive: !resp.Close && !req.Close && resp.ProtoAtLeast(1, 1), wrote: wrote} // HTTP/1.0: see send
	return resp, nil
}

// writeDone reports whether the request write of a body-carrying request
// finished without error, waiting at most maxWriteWaitBeforeReuse. Only
// then may the connection be reused. Called once, at response EOF.
func writeDone(wrote <-chan error) bool {
	select {
	case err := <-wrote:
		return err == nil
	default:
	}
	t := time.NewTimer(maxWriteWaitBeforeReuse)
	defer t.Stop()
	select {
	case err := <-wrote:
		return err == nil
	case <-t.C:
		return false
	}
}
