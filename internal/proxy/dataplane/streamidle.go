package dataplane

import (
	"io"
	"math"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"weft.dev/weft/internal/proxy/upstream"
)

// Envoy's stream_idle_timeout for HTTP/2 streams served by Go's HTTP/2
// server (WEFT_HTTP2_SERVER=go). The proxy's own server, h2server, sweeps
// its streams itself (h2server.Server.StreamIdleTimeout: a counter per
// stream and one timer per connection), and none of this runs for it.
//
// Go's HTTP/2 server has no per-stream timeout but http.Server.WriteTimeout, which alone bounds
// a whole response and would cut long gRPC streams. A stream whose client never
// reads its response (never opens the flow-control window) or never sends
// the rest of its body blocks the request's goroutine, its upstream
// request and their buffers; with 250 streams per connection, a few
// connections hold thousands. An idle watch resets such a stream once
// nothing has moved either way — bytes written to or read from the
// client — for the listener's stream_idle_timeout (5 min by default):
// its read and write deadlines are passed, and the HTTP/2 server resets
// the stream, which ends the request's context (and the upstream
// request) and makes a blocked read or write return.
//
// What the handler wrote last may still be buffered when it returns:
// the HTTP/2 server sends it after the handler, which blocks on flow
// control as a write would, out of the watch's sight. That last send is
// bounded by the stream's write deadline: the listener's server gives
// every stream one of twice the timeout as it opens it
// (streamWriteTimeout), and the watch moves it on, to twice the timeout
// from then, whenever it finds the stream moved. Once the handler has
// returned, the stream therefore has between one and two timeouts to
// finish before it is reset. (Setting a deadline from the handler is a
// message to the connection's serving goroutine; this way a short
// request sends none.)
//
// HTTP/1.1 is not watched: the h1server's connection deadlines and the
// request headers timeout are its bounds, and its hot path stays as it
// is.

// idleWatch is one stream's watch. Its timer checks, every timeout,
// whether the stream moved since the last check. The writer and body the
// handler sees live in it: one allocation per stream for all three.
type idleWatch struct {
	bl      *boundListener
	w       http.ResponseWriter // the server's own
	moved   atomic.Uint64       // bumped by every read and write
	last    uint64              // moved at the last check; the timer's goroutine only
	remote  string              // for the log line, read at the start: the
	path    string              // handler may change the request meanwhile
	writer  idleWriter
	body    idleBody
	timeout time.Duration

	mu    sync.Mutex // orders the timer's reset against the handler's return
	done  bool
	timer *time.Timer
}

// watchIdle starts watching the HTTP/2 stream of w and r; the handler
// serves the returned writer and request and calls the watch's stop when
// it returns.
func (bl *boundListener) watchIdle(w http.ResponseWriter, r *http.Request) (http.ResponseWriter, *http.Request, *idleWatch) {
	iw := &idleWatch{bl: bl, w: w, timeout: bl.streamIdle, remote: r.RemoteAddr, path: r.URL.Path}
	iw.writer = idleWriter{ResponseWriter: w, iw: iw}
	if r.Body != nil && r.Body != http.NoBody {
		iw.body = idleBody{ReadCloser: r.Body, iw: iw}
		r.Body = &iw.body
	}
	iw.timer = time.AfterFunc(iw.timeout, iw.check)
	return &iw.writer, r, iw
}

// check runs on the timer's goroutine.
func (iw *idleWatch) check() {
	iw.mu.Lock()
	defer iw.mu.Unlock()
	if iw.done {
		return
	}
	rc := http.NewResponseController(iw.w)
	if n := iw.moved.Load(); n != iw.last {
		iw.last = n
		iw.timer.Reset(iw.timeout)
		rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout(iw.timeout)))
		return
	}
	bl := iw.bl
	bl.stats.streamIdleTimeout.Inc()
	bl.d.log.Debug("HTTP/2 stream reset: stream idle timeout", "listener", bl.name, "remote", iw.remote, "path", iw.path, "timeout", iw.timeout)
	rc.SetReadDeadline(aLongTimeAgo)
	rc.SetWriteDeadline(aLongTimeAgo) // resets the stream: its context ends
}

// stop ends the watch, as the handler returns; after it the timer
// touches nothing of the stream. The stream's write deadline, at least
// one timeout away, bounds what the server still sends.
func (iw *idleWatch) stop() {
	iw.mu.Lock()
	iw.done = true
	iw.timer.Stop()
	iw.mu.Unlock()
}

// streamWriteTimeout is the write deadline of an HTTP/2 stream whose
// stream idle timeout is idle: twice that, from the stream's start or
// from the last time the watch saw it move; 0 (none) without a timeout.
func streamWriteTimeout(idle time.Duration) time.Duration {
	if idle <= 0 || idle > math.MaxInt64/2 {
		return 0
	}
	return 2 * idle
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

// InMemory passes on whether the rest of the body is in memory
// (upstream.InMemoryBody): the upstream request then goes out with its
// body in one write, from the request's goroutine.
func (b *idleBody) InMemory() bool {
	m, ok := b.ReadCloser.(upstream.InMemoryBody)
	return ok && m.InMemory()
}

func (b *idleBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.iw.moved.Add(1)
	return n, err
}
