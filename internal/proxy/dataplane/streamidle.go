package dataplane

import (
	"context"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Envoy's stream_idle_timeout for HTTP/2 streams. Go's HTTP/2 server has
// no per-stream timeout but http.Server.WriteTimeout, which bounds a whole
// response and would cut long gRPC streams. A stream whose client never
// reads its response (never opens the flow-control window) or never sends
// the rest of its body blocks the request's goroutine, its upstream
// request and their buffers; with 250 streams per connection, a few
// connections hold thousands. An idle watch resets such a stream once
// nothing has moved either way — bytes written to or read from the
// client — for the listener's stream_idle_timeout (5 min by default):
// the request's context is cancelled (ending the upstream request) and
// its read and write deadlines passed (the HTTP/2 server resets the
// stream, so a blocked read or write returns).
//
// HTTP/1.1 is not watched: net/http's connection deadlines and the
// request headers timeout are its bounds, and its hot path stays as it
// is.

// idleWatch is one stream's watch. Its timer checks, every timeout,
// whether the stream moved since the last check.
type idleWatch struct {
	rc      *http.ResponseController // the server's own writer's
	cancel  context.CancelFunc
	timeout time.Duration
	moved   atomic.Uint64 // bumped by every read and write
	last    uint64        // moved at the last check; the timer's goroutine only
	onReset func()

	mu    sync.Mutex // orders the timer's reset against the handler's return
	done  bool
	timer *time.Timer
}

// watchIdle starts watching the HTTP/2 stream of w and r; the handler
// serves the returned writer and request and calls done when it returns.
func (bl *boundListener) watchIdle(w http.ResponseWriter, r *http.Request) (http.ResponseWriter, *http.Request, func()) {
	ctx, cancel := context.WithCancel(r.Context())
	iw := &idleWatch{rc: http.NewResponseController(w), cancel: cancel, timeout: bl.streamIdle,
		onReset: func() {
			bl.stats.streamIdleTimeout.Inc()
			bl.d.log.Debug("HTTP/2 stream reset: stream idle timeout", "listener", bl.name, "remote", r.RemoteAddr, "path", r.URL.Path, "timeout", bl.streamIdle)
		}}
	r = r.WithContext(ctx)
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = &idleBody{ReadCloser: r.Body, iw: iw}
	}
	iw.timer = time.AfterFunc(iw.timeout, iw.check)
	return &idleWriter{ResponseWriter: w, iw: iw}, r, iw.stop
}

// check runs on the timer's goroutine.
func (iw *idleWatch) check() {
	iw.mu.Lock()
	defer iw.mu.Unlock()
	if iw.done {
		return
	}
	if n := iw.moved.Load(); n != iw.last {
		iw.last = n
		iw.timer.Reset(iw.timeout)
		return
	}
	iw.onReset()
	iw.cancel()
	iw.rc.SetReadDeadline(aLongTimeAgo)
	iw.rc.SetWriteDeadline(aLongTimeAgo)
}

// stop ends the watch, as the handler returns; after it the timer
// touches nothing of the stream. What the handler wrote may still be
// buffered: the HTTP/2 server sends it after the handler returns, which
// blocks on flow control as a write would, out of the watch's sight. A
// write deadline one timeout away bounds that last send (the server
// resets the stream if it passes, and drops the deadline when the
// stream ends).
func (iw *idleWatch) stop() {
	iw.mu.Lock()
	iw.done = true
	iw.timer.Stop()
	iw.mu.Unlock()
	iw.rc.SetWriteDeadline(time.Now().Add(iw.timeout))
	iw.cancel()
}

// idleWriter is the ResponseWriter the handler sees: each write is
// activity. It keeps Flush (forward streams with it) and Unwrap (for
// http.ResponseController).
type idleWriter struct {
	http.ResponseWriter
	iw *idleWatch
}

func (w *idleWriter) Write(p []byte) (int, error) {
	w.iw.moved.Add(1)
	n, err := w.ResponseWriter.Write(p)
	w.iw.moved.Add(1)
	return n, err
}

func (w *idleWriter) WriteHeader(code int) {
	w.iw.moved.Add(1)
	w.ResponseWriter.WriteHeader(code)
}

func (w *idleWriter) Flush() {
	w.iw.moved.Add(1)
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
	w.iw.moved.Add(1)
}

func (w *idleWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// idleBody is the request body the handler reads: each read is activity.
type idleBody struct {
	io.ReadCloser
	iw *idleWatch
}

func (b *idleBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.iw.moved.Add(1)
	return n, err
}
