package upstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

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
	stop := context.AfterFunc(ctx, pc.interrupt)
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
		stop()
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
	resp.Body = &h1Body{rc: resp.Body, e: e, pc: pc, stop: stop, keepAlive: !resp.Close && !req.Close, wrote: wrote}
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
