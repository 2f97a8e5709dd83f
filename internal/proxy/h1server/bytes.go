package h1server

import (
	"bufio"
	"context"
	"net/http"
	"runtime"
	"time"

	"weft.dev/weft/internal/proxy/reqctx"
)

// BytesHandler serves requests from the bytes of their heads, without an
// http.Request: the request path's byte path (forward/bytepath.go). The
// server offers it every request whose whole head is in its read buffer;
// what it declines is parsed and served as usual.
type BytesHandler interface {
	// ServeBytes serves the request whose head is head (the request
	// line to the empty line, as received), writing the whole response
	// to w; ctx is the request's, cancelled when the client goes away.
	// With BytesDeclined it has written nothing, and next (nil: the
	// server's Handler) serves the request. head and w must not be used
	// after it returns.
	ServeBytes(ctx context.Context, head []byte, w *bufio.Writer) (res BytesResult, next http.Handler)
}

// Abandoner is a handler ServeBytes returns that holds something for
// the request (an upstream attempt): when the request cannot be parsed
// after all, the server calls Abandon instead of ServeHTTP.
type Abandoner interface {
	Abandon()
}

// BytesResult is what ServeBytes did with a request.
type BytesResult int

const (
	// BytesDeclined: nothing written; the request is served as usual.
	BytesDeclined BytesResult = iota
	// BytesServed: the whole response is written; the connection may
	// carry the next request.
	BytesServed
	// BytesAborted: the response was cut short (the upstream's body
	// broke); the connection closes.
	BytesAborted
)

// serveBytes offers the request whose head ends at end in c.br to
// c.o.Bytes, with the watch for the client going away that a handler
// has. The head is copied out of the read buffer first: the watch's
// background read may fill the buffer while the request is served. A
// declined request keeps its context (ctx) for the general serving: an
// upstream attempt the bytes handler made is tied to it.
func (c *conn) serveBytes(end int) (res BytesResult, next http.Handler, ctx *reqctx.Context) {
	b, _ := c.br.Peek(end)
	c.head = append(c.head[:0], b...)
	c.br.Discard(end)
	c.setWant(time.Time{}) // no deadline while the request is served
	ctx = reqctx.New(c.ctx)
	c.startWatch(ctx, true)
	if c.ctx.Err() != nil { // ended before connDone could see this request
		ctx.CancelWith(context.Cause(c.ctx))
	}
	res, next = c.runBytes(ctx)
	c.endWatch()
	if res == BytesDeclined {
		return res, next, ctx
	}
	ctx.Cancel()
	if res == BytesServed {
		c.mu.Lock()
		if c.gone {
			res = BytesAborted
		}
		c.mu.Unlock()
	}
	return res, next, nil
}

// runBytes calls the bytes handler; a panic closes the connection (it
// is logged unless it was http.ErrAbortHandler).
func (c *conn) runBytes(ctx context.Context) (res BytesResult, next http.Handler) {
	defer func() {
		if err := recover(); err != nil {
			res, next = BytesAborted, nil
			if err != http.ErrAbortHandler && c.s.Log != nil {
				buf := make([]byte, 64<<10)
				buf = buf[:runtime.Stack(buf, false)]
				c.s.Log.Error("panic serving request", "remote", c.remote, "err", err, "stack", string(buf))
			}
			c.bw.Flush() // what was written
		}
	}()
	return c.o.Bytes.ServeBytes(ctx, c.head, c.bw)
}

// bytesHead returns the end of the next request's head when there is a
// bytes handler to offer it to and all of it is in the read buffer,
// within the limit; else 0.
func (c *conn) bytesHead() int {
	if c.o.Bytes == nil || c.s.shutdown.Load() {
		return 0
	}
	b, _ := c.br.Peek(c.br.Buffered())
	end, _ := headEnd(b, 0)
	if end <= 0 || end > c.s.maxHeadBytes() {
		return 0
	}
	return end
}
