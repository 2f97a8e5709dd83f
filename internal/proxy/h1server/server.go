// Package h1server serves HTTP/1.1 connections to an http.Handler, one
// goroutine per connection, for the proxy's downstream hot path.
//
// It gives a handler what net/http's server gives it on HTTP/1.1 — the
// same requests, the same answers to malformed ones — at less CPU per
// request: a request head is read from the connection's bufio.Reader
// and parsed in place, without net/textproto, into one string that the
// request line, header names and values are slices of; the
// ResponseWriter and its header map are the connection's, reused, and
// the header is serialized at WriteHeader instead of cloned; read
// deadlines are moved only when one must become earlier (a stale one
// that fires is put right and the read retried); and the read that
// notices a client going away while its request is served is started
// only for requests that outlive watchDelay, not for each.
//
// It also refuses what Envoy's HTTP/1.1 codec refuses and net/http
// accepts: both Content-Length and Transfer-Encoding (unless
// ConnOptions.AllowChunkedLength), obsolete line folding, and a bare LF
// ending a chunk line or a trailer line (a head's lines may end in one,
// as net/http and Envoy take them); and, as RFC 9112 requires,
// Transfer-Encoding on an HTTP/1.0 request, which net/http ignores (the
// bytes of a chunked body would become the next request).
//
// HTTP/2 is not served here: a connection that starts with HTTP/2's
// preface is handed to ConnOptions.Handoff with the bytes already read.
package h1server

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"weft.dev/weft/internal/proxy/reqctx"
)

// DefaultMaxHeaderBytes is net/http's default limit of a request head.
const DefaultMaxHeaderBytes = 1 << 20

// watchDelay is how long a request is served before the server starts
// watching its connection for the client going away (a read that would
// see EOF). Shorter requests — most — never pay for that read.
const watchDelay = 5 * time.Millisecond

// maxPostHandlerReadBytes is how much of a request body the handler left
// unread is read and discarded to keep the connection; past it the
// connection is closed (net/http's limit).
const maxPostHandlerReadBytes = 256 << 10

// Server serves HTTP/1.1 connections handed to ServeConn. Its fields are
// set before the first ServeConn and not changed after.
type Server struct {
	// Handler answers every request. It must not use the request, its
	// header, URL or body, nor the ResponseWriter, after it returns.
	Handler http.Handler
	// ReadHeaderTimeout bounds the wait for a request head, from the
	// connection's start for the first request and from a request's
	// first byte for the others; 0: none.
	ReadHeaderTimeout time.Duration
	// IdleTimeout bounds the wait for the next request's first byte;
	// 0: none.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request head (its request line and
	// headers) at MaxHeaderBytes+4 KiB, as net/http: a longer head is
	// answered 431. 0: DefaultMaxHeaderBytes.
	MaxHeaderBytes int
	// Log hears of handler panics and refused requests; nil: discarded.
	Log *slog.Logger

	shutdown atomic.Bool
	mu       sync.Mutex
	conns    map[*conn]struct{}
	closed   bool
}

// ConnOptions are what ServeConn knows of one connection.
type ConnOptions struct {
	// AllowChunkedLength accepts a request with both Content-Length and
	// Transfer-Encoding: chunked, reading it as chunked (Envoy's
	// allow_chunked_length); otherwise it is refused with 400.
	AllowChunkedLength bool
	// TLS is the connection's TLS state, set as every request's
	// Request.TLS; nil for plaintext.
	TLS *tls.ConnectionState
	// Refused, if set, is called on the connection's goroutine with the
	// status and the reason of each request the server refuses itself,
	// before answering it and closing the connection.
	Refused func(status int, err error)
	// Handoff, if set, takes over a connection whose first bytes are
	// HTTP/2's preface: it gets the connection, its bytes read so far
	// given back first. Without it such a connection gets 505.
	Handoff func(net.Conn)
	// Bytes, if set, is offered each request whose head is whole in the
	// read buffer before it is parsed (bytes.go).
	Bytes BytesHandler
}

// ErrServerClosed is returned by ServeConn after Shutdown or Close.
var ErrServerClosed = errors.New("h1server: server closed")

// ServeConn serves c until the client or the server closes it, the
// server shuts down, or a handler hijacks it; it closes c unless it was
// hijacked or handed off. ctx is the base of every request's context.
// Called by the owner of c on a goroutine of c's own; it blocks.
func (s *Server) ServeConn(ctx context.Context, c net.Conn, o ConnOptions) error {
	cn := newConn(s, c, o)
	if !s.track(cn) {
		c.Close()
		return ErrServerClosed
	}
	defer s.untrack(cn)
	cn.ctx, cn.cancel = context.WithCancel(ctx)
	defer cn.cancel()
	stop := context.AfterFunc(cn.ctx, cn.connDone)
	defer stop()
	cn.serve()
	return nil
}

func (s *Server) track(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.shutdown.Load() {
		return false
	}
	if s.conns == nil {
		s.conns = map[*conn]struct{}{}
	}
	s.conns[c] = struct{}{}
	return true
}

func (s *Server) untrack(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
}

// Shutdown stops taking connections and requests: connections waiting
// for a request are closed at once (and those that become idle later),
// a response in progress is sent with Connection: close. It returns when
// no connection is left, or ctx.Err() when ctx ends first (then Close
// ends the rest).
func (s *Server) Shutdown(ctx context.Context) error {
	s.shutdown.Store(true)
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		s.mu.Lock()
		n := len(s.conns)
		for c := range s.conns {
			c.closeIfIdle()
		}
		s.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Close closes every connection at once, requests in flight too.
func (s *Server) Close() error {
	s.shutdown.Store(true)
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.state.Store(stateClosing)
		c.nc.Close()
	}
	s.mu.Unlock()
	return nil
}

func (s *Server) maxHeadBytes() int {
	n := s.MaxHeaderBytes
	if n <= 0 {
		n = DefaultMaxHeaderBytes
	}
	return n + 4096
}

func (s *Server) logf(msg string, args ...any) {
	if s.Log != nil {
		s.Log.Debug(msg, args...)
	}
}

// Connection states.
const (
	stateActive  = iota // reading or serving a request
	stateIdle           // waiting for a request's first byte
	stateClosing        // Shutdown or Close: reads end
)

var aLongTimeAgo = time.Unix(1, 0)

// conn is one connection served. Its fields are the connection
// goroutine's unless said otherwise.
type conn struct {
	s      *Server
	nc     net.Conn
	o      ConnOptions
	br     *bufio.Reader
	bw     *bufio.Writer
	remote string
	ctx    context.Context
	cancel context.CancelFunc
	state  atomic.Int32

	// want is the read deadline the current phase needs (zero: none);
	// installed the one set on nc. A read that times out before want
	// (a stale, earlier deadline) resets it and reads again. Used by the
	// one goroutine reading at a time (the connection's, the body's
	// reader, or the background read).
	want, installed time.Time
	bgAbort         atomic.Bool // the background read is being ended: its timeout is real

	linger bool         // unread input at the end: close lingering (lingerClose)
	head   []byte       // the head offered to o.Bytes, copied out of br (bytes.go)
	big    []byte       // a request head too long for br's buffer
	tmpl   http.Request // the request read, before WithContext copies it
	// reqHeader is the last request's header map, for the next.
	reqHeader http.Header
	// url is the request's URL, filled again for each (as the header
	// map, the handler does not keep it past its return).
	url url.URL
	w   response

	// wmu serializes writes of the response and of "100 Continue" (which
	// a body read on another goroutine may send).
	wmu sync.Mutex

	// The watch for the client going away, guarded by mu.
	mu        sync.Mutex
	timer     *time.Timer
	serving   bool // a handler is running
	slow      bool // it has run longer than watchDelay
	bodyDone  bool // its body has been read to its end (or it has none)
	bgRunning bool
	bgDone    chan struct{}
	req       *reqctx.Context // the context of the request being served
	gone      bool            // the background read saw the client go
}

var (
	brPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}
	bwPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4096) }}
)

func newConn(s *Server, nc net.Conn, o ConnOptions) *conn {
	c := &conn{s: s, nc: nc, o: o}
	c.br = brPool.Get().(*bufio.Reader)
	c.br.Reset(c)
	c.bw = bwPool.Get().(*bufio.Writer)
	c.bw.Reset(writerFunc(c.write))
	if a := nc.RemoteAddr(); a != nil {
		c.remote = a.String()
	}
	c.w.c = c
	c.w.header = make(http.Header, 8)
	return c
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// write writes to the connection; a failure means the client is gone and
// cancels the request being served.
func (c *conn) write(p []byte) (int, error) {
	n, err := c.nc.Write(p)
	if err != nil {
		c.mu.Lock()
		c.gone = true
		if c.req != nil {
			c.req.Cancel()
		}
		c.mu.Unlock()
	}
	return n, err
}

// Read reads from the connection for br, putting a stale deadline right.
func (c *conn) Read(p []byte) (int, error) {
	for {
		n, err := c.nc.Read(p)
		if err == nil || n > 0 || !isTimeout(err) || c.bgAbort.Load() || c.state.Load() == stateClosing {
			return n, err
		}
		if !c.want.IsZero() && !time.Now().Before(c.want) {
			return n, err // the phase's own deadline
		}
		c.nc.SetReadDeadline(c.want)
		c.installed = c.want
	}
}

// setWant sets the read deadline the next reads need, moving the
// connection's only when it must become earlier.
func (c *conn) setWant(t time.Time) {
	c.want = t
	if !t.IsZero() && (c.installed.IsZero() || t.Before(c.installed)) {
		c.nc.SetReadDeadline(t)
		c.installed = t
	}
}

// closeIfIdle ends the connection if it waits for a request (Shutdown).
// Called with s.mu held, from any goroutine.
func (c *conn) closeIfIdle() {
	if c.state.CompareAndSwap(stateIdle, stateClosing) || c.state.Load() == stateClosing {
		c.nc.SetReadDeadline(aLongTimeAgo)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// serve is the connection's request loop.
func (c *conn) serve() {
	hijacked := false
	defer func() {
		if hijacked {
			return
		}
		c.bw.Flush()
		if c.linger {
			c.lingerClose()
		}
		c.nc.Close()
		c.release()
	}()
	if c.s.ReadHeaderTimeout > 0 {
		c.setWant(time.Now().Add(c.s.ReadHeaderTimeout))
	}
	if c.handoff() {
		hijacked = true
		return
	}
	for first := true; ; first = false {
		if !first && c.br.Buffered() == 0 {
			// Idle until the next request's first byte.
			var want time.Time
			if c.s.IdleTimeout > 0 {
				want = time.Now().Add(c.s.IdleTimeout)
			}
			c.setWant(want)
			c.state.Store(stateIdle)
			if c.s.shutdown.Load() {
				return
			}
			if _, err := c.br.Peek(1); err != nil {
				return
			}
			if !c.state.CompareAndSwap(stateIdle, stateActive) {
				return
			}
		}
		var next http.Handler // serves the request instead of s.Handler
		var ctx *reqctx.Context
		var req *http.Request
		var err error
		if end := c.bytesHead(); end > 0 {
			var res BytesResult
			switch res, next, ctx = c.serveBytes(end); res {
			case BytesServed:
				if c.bw.Flush() != nil || c.s.shutdown.Load() {
					return
				}
				continue
			case BytesAborted:
				return
			}
			req, err = c.parseRequest(string(c.head))
		} else {
			req, err = c.readRequest(first)
		}
		if err != nil {
			if ctx != nil {
				ctx.Cancel()
			}
			if a, ok := next.(Abandoner); ok {
				a.Abandon()
			}
			c.refuse(err)
			return
		}
		keep, hj := c.serveRequest(req, next, ctx)
		if hj {
			hijacked = true
			return
		}
		if !keep || c.s.shutdown.Load() {
			return
		}
	}
}

// release gives the buffers back, unless a hijacker holds them.
func (c *conn) release() {
	c.br.Reset(nil)
	brPool.Put(c.br)
	c.bw.Reset(nil)
	bwPool.Put(c.bw)
}

// handoff gives a connection that starts with HTTP/2's preface to
// o.Handoff, and reports whether it did.
func (c *conn) handoff() bool {
	for n := 1; ; {
		if _, err := c.br.Peek(n); err != nil {
			return false
		}
		avail := min(c.br.Buffered(), len(preface))
		if b, _ := c.br.Peek(avail); string(b) != preface[:avail] {
			return false
		}
		if avail == len(preface) {
			break
		}
		n = avail + 1
	}
	if c.o.Handoff == nil {
		return false // answered 505 as an HTTP/2.0 request
	}
	b, _ := c.br.Peek(c.br.Buffered())
	head := append([]byte(nil), b...)
	c.nc.SetReadDeadline(time.Time{})
	c.o.Handoff(&replayConn{Conn: c.nc, head: head})
	return true
}

const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// replayConn gives back bytes already read before reading on.
type replayConn struct {
	net.Conn
	head []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.head) > 0 {
		n := copy(p, c.head)
		c.head = c.head[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// NetConn returns the connection under the replayed bytes.
func (c *replayConn) NetConn() net.Conn { return c.Conn }

// CloseWrite half-closes the connection when it can.
func (c *replayConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// serveRequest runs the handler for req and finishes its response. keep
// says the connection may serve another request; hijacked that the
// handler took the connection over.
func (c *conn) serveRequest(req *http.Request, h http.Handler, ctx *reqctx.Context) (keep, hijacked bool) {
	// One allocation for the context (see reqctx) and one for the
	// Request: req is the connection's template. ctx, when not nil, is
	// the context the bytes handler gave the request (bytes.go).
	if ctx == nil {
		ctx = reqctx.New(c.ctx) // its values; connDone passes its cancellation on
	}
	req = req.WithContext(ctx)
	w := &c.w
	w.reset(req)
	b, _ := req.Body.(*body)
	if b != nil {
		b.req = req // trailers go to the request the handler has, not the template
	}

	c.startWatch(ctx, b == nil)
	if c.ctx.Err() != nil { // ended before connDone could see this request
		ctx.CancelWith(context.Cause(c.ctx))
	}

	panicked := c.runHandler(w, req, h)

	c.endWatch()
	ctx.Cancel()
	if w.hijacked {
		return false, true
	}
	if panicked {
		if b != nil {
			b.Close()
		}
		return false, false
	}
	if b != nil && !b.finish() {
		// What the handler left of the body could not be read (too
		// long, broken, or a 100 Continue never sent): the connection
		// closes after the response, which says so if it can; the
		// client, maybe still sending, gets time to read it.
		w.closeAfter = true
		c.linger = true
	}
	w.finish()
	keep = !w.closeAfter && !req.Close && w.werr == nil
	c.mu.Lock()
	keep = keep && !c.gone
	c.mu.Unlock()
	return keep, false
}

// startWatch starts the watch for the client going away while the
// request whose context is ctx is served; bodyDone: it has no body left
// to read.
func (c *conn) startWatch(ctx *reqctx.Context, bodyDone bool) {
	c.mu.Lock()
	c.serving, c.slow, c.gone = true, false, false
	c.bodyDone = bodyDone
	c.req = ctx
	if c.timer == nil {
		c.timer = time.AfterFunc(watchDelay, c.onSlow)
	} else {
		c.timer.Reset(watchDelay)
	}
	c.mu.Unlock()
}

// runHandler calls h (nil: the server's Handler) and reports whether it
// panicked (logged unless it was http.ErrAbortHandler).
func (c *conn) runHandler(w *response, req *http.Request, h http.Handler) (panicked bool) {
	defer func() {
		if err := recover(); err != nil {
			panicked = true
			if err != http.ErrAbortHandler {
				buf := make([]byte, 64<<10)
				buf = buf[:runtime.Stack(buf, false)]
				if c.s.Log != nil {
					c.s.Log.Error("panic serving request", "remote", c.remote, "err", err, "stack", string(buf))
				}
			}
			// Send what the handler had sent, then close.
			if w.committed {
				c.wmu.Lock()
				c.bw.Flush()
				c.wmu.Unlock()
			}
		}
	}()
	if h == nil {
		h = c.s.Handler
	}
	if req.RequestURI == "*" && req.Method == http.MethodOptions {
		h = globalOptions // as net/http
	}
	h.ServeHTTP(w, req)
	return false
}

// globalOptions answers "OPTIONS *" as net/http's server does.
var globalOptions = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Length", "0")
	if r.ContentLength != 0 {
		io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, 4<<10))
	}
})

// onSlow runs watchDelay into a request: if its body has been read, a
// background read watches for the client going away.
func (c *conn) onSlow() {
	c.mu.Lock()
	if !c.serving {
		c.mu.Unlock()
		return
	}
	c.slow = true
	start := c.startBackgroundLocked()
	c.mu.Unlock()
	if start != nil {
		c.backgroundRead(start)
	}
}

// connDone cancels the request being served when the connection's
// context ends (the server's base context was cancelled): a request's
// context follows the connection's through this one watch per
// connection, not one per request.
func (c *conn) connDone() {
	c.mu.Lock()
	if c.req != nil {
		c.req.CancelWith(context.Cause(c.ctx))
	}
	c.mu.Unlock()
}

// bodyEOF is called by the body reader when the body is read to its end.
func (c *conn) bodyEOF() {
	c.mu.Lock()
	c.bodyDone = true
	var start chan struct{}
	if c.slow {
		start = c.startBackgroundLocked()
	}
	c.mu.Unlock()
	if start != nil {
		go c.backgroundRead(start)
	}
}

// startBackgroundLocked returns the done channel of a background read to
// start, or nil when none should. c.mu is held.
func (c *conn) startBackgroundLocked() chan struct{} {
	if !c.serving || !c.bodyDone || c.bgRunning || c.gone {
		return nil
	}
	c.bgRunning = true
	c.bgDone = make(chan struct{})
	return c.bgDone
}

// backgroundRead waits for the next byte on the connection: an error
// means the client went away, and cancels its request.
func (c *conn) backgroundRead(done chan struct{}) {
	defer close(done)
	if _, err := c.br.Peek(1); err != nil && !c.bgAbort.Load() {
		c.mu.Lock()
		c.gone = true
		if c.req != nil {
			c.req.Cancel()
		}
		c.mu.Unlock()
	}
}

// endWatch ends the watch of the request served: the timer is stopped
// and a background read ended before anything else reads.
func (c *conn) endWatch() {
	c.mu.Lock()
	c.serving = false
	c.req = nil
	running, done := c.bgRunning, c.bgDone
	c.bgRunning, c.bgDone = false, nil
	c.mu.Unlock()
	c.timer.Stop()
	if running {
		c.bgAbort.Store(true)
		c.nc.SetReadDeadline(aLongTimeAgo)
		<-done
		c.bgAbort.Store(false)
		c.installed = aLongTimeAgo // put right by the next read
	}
}

// refuse answers a request that could not be read, when there is
// something to answer (a read error or timeout closes quietly), and
// lingers so the client reads the answer before the connection closes.
func (c *conn) refuse(err error) {
	var re *requestError
	if !errors.As(err, &re) {
		return
	}
	if c.o.Refused != nil {
		c.o.Refused(re.code, err)
	}
	c.s.logf("request refused", "remote", c.remote, "code", re.code, "err", re.msg)
	c.bw.WriteString(re.response())
	c.bw.Flush()
	c.lingerClose()
}

// lingerClose half-closes the connection and reads what the client still
// sends for a moment, so that closing does not reset the connection
// before the client has read the answer.
func (c *conn) lingerClose() {
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	c.want = time.Now().Add(500 * time.Millisecond)
	c.nc.SetReadDeadline(c.want)
	c.installed = c.want
	c.br.Discard(c.br.Buffered())
	var buf [16 << 10]byte
	for range 1 << 16 { // and 500 ms
		if _, err := c.Read(buf[:]); err != nil {
			return
		}
	}
}
