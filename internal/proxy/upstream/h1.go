package upstream

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"weft.dev/weft/internal/proxy/h2client"
	"weft.dev/weft/internal/proxy/reqctx"
)

// The synchronous HTTP/1.1 upstream path.
//
// http.Transport runs a reader and a writer goroutine per connection and
// hands every request to them over channels: several goroutine wake-ups per
// request, which dominate the CPU cost of a proxy hop. For requests without
// a body (most RPC-style traffic) the handler goroutine instead takes an idle
// connection of the endpoint (or dials one), writes the request, and reads
// the response itself. So do requests whose whole body is already in
// memory (a small body that arrived with the head), and requests with a
// body when the cluster limits requests per connection (h1_body.go).
// Everything else — other request bodies, upgrades, h2c — still goes
// through the cluster's http.Transport.

const maxIdlePerEndpoint = 64

// aLongTimeAgo is a deadline in the past: setting it makes blocked reads and
// writes on a connection return at once.
var aLongTimeAgo = time.Unix(1, 0)

// h1Pool holds a cluster's idle HTTP/1.1 connections, one small LIFO stack
// per endpoint address. It lives in the Pool, so it survives updates that
// leave the Cluster unchanged. The map is touched only when translating
// and applying configuration; requests go straight to their endpoint's
// stack (Pool.Endpoint).
type h1Pool struct {
	pool *Pool
	// idle is how long a connection may stay idle (0: forever) and maxUses
	// how many requests it carries (0: no limit): the cluster's
	// common_http_protocol_options, set before first use (NewPool).
	idle    time.Duration
	maxUses uint32

	mu     sync.Mutex
	eps    map[endpointKey]*Conns
	closed bool
}

// endpointKey is an endpoint in one transport socket: an endpoint whose
// metadata moves it to another socket (it gets a sidecar) gets new
// connections.
type endpointKey struct {
	addr   string
	socket int // index in sockets.all
}

func newH1Pool(p *Pool) *h1Pool {
	return &h1Pool{pool: p, eps: map[endpointKey]*Conns{}, idle: IdleTimeout}
}

// endpoint returns the connections of addr in socket sock, creating them
// if needed.
func (p *h1Pool) endpoint(addr string, sock int) *Conns {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := endpointKey{addr, sock}
	e := p.eps[k]
	if e == nil {
		e = &Conns{addr: addr, dialer: p.pool.dialer, closed: p.closed, idleTimeout: p.idle, maxUses: p.maxUses}
		e.setSocket(p.pool.sockets.all[sock])
		p.eps[k] = e
	}
	return e
}

// retain closes the connections of every endpoint not in keep. Requests
// still running on a dropped endpoint finish normally, but their
// connections are closed instead of pooled.
func (p *h1Pool) retain(keep []*Conns) {
	live := make(map[*Conns]bool, len(keep))
	for _, c := range keep {
		live[c] = true
	}
	p.mu.Lock()
	var drop []*Conns
	for k, e := range p.eps {
		if !live[e] {
			drop = append(drop, e)
			delete(p.eps, k)
		}
	}
	p.mu.Unlock()
	for _, e := range drop {
		e.shutdown()
	}
}

// close closes every idle connection, and from now on every connection
// given back. For pools no longer used by the running configuration and at
// Close.
func (p *h1Pool) close() {
	p.mu.Lock()
	p.closed = true
	eps := make([]*Conns, 0, len(p.eps))
	for _, e := range p.eps {
		eps = append(eps, e)
	}
	p.mu.Unlock()
	for _, e := range eps {
		e.shutdown()
	}
}

// Conns is the connections of one endpoint of a pool in one transport
// socket. Its HTTP/1.1 connections (the synchronous path) are a stack of
// idle ones, LIFO, so the most recently used connection is reused first,
// the number of connections follows the concurrency and the others age
// out. A TLS endpoint also has its own http.Transports for what the
// synchronous path does not carry (tls.go). Safe for concurrent use.
type Conns struct {
	addr        string
	dialer      *dialer
	idleTimeout time.Duration                   // 0: never
	maxUses     uint32                          // 0: unlimited
	endpointTLS                                 // the endpoint's TLS; zero for plaintext (tls.go)
	h2          atomic.Pointer[h2client.Client] // HTTP/2 requests (h2.go); nil until the first

	mu     sync.Mutex
	idle   []*h1Conn // oldest first
	closed bool
}

// h1Conn is one upstream HTTP/1.1 connection. Used by one request at a time.
type h1Conn struct {
	nc        net.Conn // a *tls.Conn for a TLS endpoint
	raw       net.Conn // the TCP connection under nc (nc itself in plaintext)
	br        *bufio.Reader
	bw        *bufio.Writer
	idleAt    time.Time
	interrupt func() // makes blocked I/O on nc return; allocated once per connection
	uses      uint32 // requests completed on it
}

func (e *Conns) get() *h1Conn {
	e.mu.Lock()
	n := len(e.idle)
	if n == 0 {
		e.mu.Unlock()
		return nil
	}
	pc := e.idle[n-1]
	e.idle[n-1] = nil
	e.idle = e.idle[:n-1]
	if e.idleTimeout == 0 || time.Since(pc.idleAt) <= e.idleTimeout {
		e.mu.Unlock()
		return pc
	}
	// pc and every older connection have been idle too long.
	stale := append([]*h1Conn{pc}, e.idle...)
	clear(e.idle)
	e.idle = e.idle[:0]
	e.mu.Unlock()
	for _, c := range stale {
		c.nc.Close()
	}
	return nil
}

func (e *Conns) put(pc *h1Conn) {
	now := time.Now()
	pc.idleAt = now
	pc.uses++
	e.mu.Lock()
	if e.closed || len(e.idle) >= maxIdlePerEndpoint || (e.maxUses > 0 && pc.uses >= e.maxUses) {
		e.mu.Unlock()
		pc.nc.Close()
		return
	}
	// Age out the oldest connection lazily, one per put.
	var old *h1Conn
	if len(e.idle) > 0 && e.idleTimeout > 0 && now.Sub(e.idle[0].idleAt) > e.idleTimeout {
		old = e.idle[0]
		n := copy(e.idle, e.idle[1:])
		e.idle[n] = nil
		e.idle = e.idle[:n]
	}
	e.idle = append(e.idle, pc)
	e.mu.Unlock()
	if old != nil {
		old.nc.Close()
	}
}

// shutdown closes the idle connections and every connection given back
// later, and the idle connections of the endpoint's TLS transports.
func (e *Conns) shutdown() {
	e.mu.Lock()
	e.closed = true
	idle := e.idle
	e.idle = nil
	e.mu.Unlock()
	for _, c := range idle {
		c.nc.Close()
	}
	e.shutdownTLS()
	e.shutdownH2()
}

func (e *Conns) dial(ctx context.Context) (*h1Conn, error) {
	raw, err := e.dialer.DialContext(ctx, "tcp", e.addr)
	if err != nil {
		return nil, &connectError{err}
	}
	nc := raw
	if e.tls != nil {
		if nc, err = e.handshake(ctx, raw, e.h1Config); err != nil {
			return nil, err
		}
	}
	pc := &h1Conn{nc: nc, raw: raw, br: bufio.NewReaderSize(nc, 4<<10), bw: bufio.NewWriterSize(nc, 4<<10)}
	pc.interrupt = func() { nc.SetDeadline(aLongTimeAgo) }
	return pc, nil
}

// RoundTrip sends req, which has no body, on one of the endpoint's
// connections and reads the response head, on the calling goroutine. The
// response body must be read to EOF or closed; at EOF the connection goes
// back to the stack if both sides allow keep-alive. A reused connection that
// fails before the first response byte (the upstream closed it while idle)
// is replaced by a fresh one once: safe, since there is no body to replay.
func (e *Conns) RoundTrip(ctx context.Context, req *http.Request) (*http.Response, error) {
	return e.roundTrip(ctx, req, nil, nil)
}

// roundTrip is RoundTrip for req and its body, all in memory (nil: none;
// see roundTripInMemory), which a fresh connection can send again; s,
// when not nil, is the storage of the response (Scratch).
func (e *Conns) roundTrip(ctx context.Context, req *http.Request, body []byte, s *Scratch) (*http.Response, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	idempotent := isIdempotent(req)
	pc, reused := e.get(), true
	// Replaying a request that is not idempotent is only safe if it never
	// reached the upstream, so first drop connections the upstream has
	// visibly closed. Idempotent requests skip the check and are retried.
	for pc != nil && !idempotent && !connAlive(pc.raw) {
		pc.nc.Close()
		pc = e.get()
	}
	if pc == nil {
		var err error
		if pc, err = e.dial(ctx); err != nil {
			return nil, err
		}
		reused = false
	}
	resp, err := e.send(ctx, pc, req, body, reused, idempotent, s)
	if err == errRetry {
		if pc, err = e.dial(ctx); err != nil {
			return nil, err
		}
		resp, err = e.send(ctx, pc, req, body, false, idempotent, s)
	}
	return resp, err
}

// errRetry is send's answer when a reused connection turned out stale.
var errRetry = errors.New("stale pooled connection")

// send writes req (and body, its whole body when not nil) on pc and reads
// the response head. It returns errRetry when pc was reused and failed in
// a way that shows the upstream never processed the request: the write
// failed (the request was not delivered whole), or, for an idempotent
// request, the connection was closed or reset before any response byte.
func (e *Conns) send(ctx context.Context, pc *h1Conn, req *http.Request, body []byte, reused, idempotent bool, s *Scratch) (*http.Response, error) {
	stop := reqctx.AfterFunc(ctx, pc.interrupt) // no allocation for an HTTP/1.1 server request
	fail := func(err error, retry bool) (*http.Response, error) {
		stop.Stop()
		pc.nc.Close()
		if retry && reused && ctx.Err() == nil {
			return nil, errRetry
		}
		return nil, err
	}
	var err error
	if body == nil {
		err = writeRequestHead(pc.bw, req) // req.Write, without its allocations (h1_write.go)
	} else if err = writeHead(pc.bw, req, int64(len(body))); err == nil {
		_, err = pc.bw.Write(body) // with the head in one write when it fits the buffer
	}
	if retry, err := pc.awaitResponse(err, idempotent); err != nil {
		return fail(err, retry)
	}
	var resp *http.Response
	var wrap *h1Body
	for n := 0; ; n++ {
		if resp, wrap, err = readResponse(pc.br, req, s); err != nil { // http.ReadResponse, lighter (h1_read.go)
			return fail(err, false)
		}
		// Skip informational responses (100 Continue, 103 Early Hints), as
		// http.Transport does. A 101 was never asked for: this path carries
		// no Upgrade requests.
		if resp.StatusCode >= 200 {
			break
		}
		if resp.StatusCode == http.StatusSwitchingProtocols || n == 5 {
			return fail(fmt.Errorf("upstream sent unexpected %d response", resp.StatusCode), false)
		}
	}
	if wrap == nil {
		wrap = new(h1Body)
	}
	// An HTTP/1.0 response never leaves its connection to another
	// request: net/http ignores its Transfer-Encoding and frames its body
	// by Content-Length, so the rest of a chunked body would be read as
	// the next request's response (RFC 9112 section 6.1).
	*wrap = h1Body{rc: resp.Body, e: e, pc: pc, stop: stop, keepAlive: !resp.Close && !req.Close && resp.ProtoAtLeast(1, 1)}
	resp.Body = wrap
	return resp, nil
}

// awaitResponse flushes the request written to pc (werr: the error
// writing it) and waits for the response's first byte. On failure retry
// says whether the request may go again on a fresh connection: its
// write failed, so it was not delivered whole, or, for an idempotent
// request, the connection was closed or reset before any response byte.
func (pc *h1Conn) awaitResponse(werr error, idempotent bool) (retry bool, err error) {
	if werr == nil {
		werr = pc.bw.Flush()
	}
	if werr != nil {
		var oe *net.OpError
		return errors.As(werr, &oe) && oe.Op == "write", werr
	}
	if _, err := pc.br.Peek(1); err != nil {
		return idempotent && isStale(err), err
	}
	return false, nil
}

// isStale reports whether err, read before any response byte, means the
// upstream closed or reset the connection.
func isStale(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNABORTED)
}

// isIdempotent reports whether req may be sent twice (RFC 9110 9.2.2).
func isIdempotent(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return req.Header["Idempotency-Key"] != nil || req.Header["X-Idempotency-Key"] != nil
}

// h1Body is the response body of the synchronous path: it gives the
// connection back at EOF and closes it when closed early.
type h1Body struct {
	rc        io.ReadCloser
	e         *Conns
	pc        *h1Conn // nil once released
	stop      reqctx.Stop
	keepAlive bool
	wrote     <-chan error // the request write's result when it had a body (h1_body.go); else nil
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.pc == nil {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		pc := b.pc
		b.pc = nil
		// Reuse only if the cancellation hook never ran (so no deadline is
		// set) and nothing unsolicited follows the response.
		if b.stop.Stop() && b.keepAlive && pc.br.Buffered() == 0 && (b.wrote == nil || writeDone(b.wrote)) {
			b.e.put(pc)
		} else {
			pc.nc.Close()
		}
	}
	return n, err
}

func (b *h1Body) Close() error {
	if pc := b.pc; pc != nil {
		b.pc = nil
		b.stop.Stop()
		pc.nc.Close()
	}
	return nil
}
