// Package h2client is the proxy's HTTP/2 client to its upstream
// endpoints (h2c with prior knowledge, or TLS connections that
// negotiated h2): one Client per endpoint multiplexes requests over as
// many connections as the endpoint's stream limit needs.
//
// It replaces golang.org/x/net/http2's Transport on the forwarding path
// for what profiles showed that Transport costs a hop: a request handed
// to a second goroutine that writes its headers and body, each frame
// written and flushed on its own, and an HPACK encoder that evicts a
// table entry for every request's unique x-request-id. Here the caller's
// goroutine writes the HEADERS (and, for a body that is already whole,
// its DATA) in one write; a request body that streams is sent by one
// goroutine of its own; the connection's reader goroutine hands each
// response to the goroutine waiting for it. Header blocks are sent as
// HPACK literals (h2wire), so sending needs no encoder state and no lock
// beyond the one that keeps stream IDs in order on the wire.
//
// What it implements: connection preface and settings, stream limits
// (a new connection when every connection is full), flow control both
// ways, request bodies and trailers, response bodies and trailers, 1xx
// responses skipped, GOAWAY (unprocessed requests retried on a new
// connection, as REFUSED_STREAM ones are, when their body was not
// touched), cancellation by context and by closing the response body
// (RST_STREAM CANCEL), pings after a quiet interval with a deadline for
// the answer, an idle timeout, and a graceful Shutdown. Not implemented:
// server push (refused in SETTINGS), priorities, extended CONNECT.
package h2client

import (
	"context"
	"errors"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
)

// Config is what a Client needs to know about its endpoint.
type Config struct {
	// Dial opens a connection to the endpoint ready for HTTP/2: a TCP
	// connection for h2c, a TLS one that negotiated h2. Its errors are
	// returned by RoundTrip unchanged.
	Dial func(ctx context.Context) (net.Conn, error)
	// Scheme is the :scheme of requests: "http" or "https".
	Scheme string
	// IdleTimeout closes a connection without streams for that long (0:
	// never).
	IdleTimeout time.Duration
	// PingInterval is how long a connection may go without a frame from
	// the peer before it is sent a PING; PingTimeout how long the answer
	// may take before the connection is closed. 0: no pings.
	PingInterval, PingTimeout time.Duration
}

// Client sends requests to one endpoint over HTTP/2. Safe for concurrent
// use.
type Client struct {
	cfg Config

	mu       sync.Mutex
	conns    []*conn
	dialing  *dialCall // a dial under way that waiting requests share; nil: none
	shutdown bool      // Shutdown ran: connections close when their streams end

	// learnedStreams is the stream limit the endpoint's latest SETTINGS
	// set (0: none seen yet), a new connection's limit until its own
	// SETTINGS come.
	learnedStreams atomic.Int32
}

// initialStreams is the stream limit of a new connection.
func (c *Client) initialStreams() int {
	if n := c.learnedStreams.Load(); n > 0 {
		return int(n)
	}
	return initialMaxStreams
}

// dialCall is one dial that every request waiting for a connection waits
// for.
type dialCall struct {
	done chan struct{}
	err  error
	ctx  context.Context // the dialling request's
}

// New returns a client; it dials nothing until the first request.
func New(cfg Config) *Client {
	if cfg.Scheme == "" {
		cfg.Scheme = "http"
	}
	return &Client{cfg: cfg}
}

// errUnprocessed is the error of a request the peer did not process (its
// stream was above a GOAWAY's last stream, or the connection was closed
// before its headers were written): safe to send again.
var errUnprocessed = errors.New("http2: request not processed by the peer")

// maxRetries bounds how many times one request is sent again after the
// peer refused it unprocessed.
const maxRetries = 4

// RoundTrip sends req and returns the response head once it arrives; the
// body streams. ctx bounds the whole exchange, the response body
// included. req.URL gives :path (escaped path and query); req.Host, or
// else req.URL.Host, gives :authority; req.ContentLength and req.Body the
// request body (nil or http.NoBody: none); req.Trailer, read once the
// body has ended, the request's trailers. A stream reset by the peer
// fails with an http2.StreamError (its message names the code, such as
// REFUSED_STREAM). A request the peer refused before reading any of it
// is sent again, on another connection if need be, when its body was not
// read yet, or when it was whole in memory (a body the caller's server
// has received to its end, upstream.InMemoryBody, of at most one frame:
// it goes out with the HEADERS in one write).
func (c *Client) RoundTrip(ctx context.Context, req *http.Request) (*http.Response, error) {
	resp, _, err := c.RoundTripHeld(ctx, req)
	return resp, err
}

// RoundTripHeld is RoundTrip, and reports whether the client may still
// use req once it returns: a goroutine of its own sends req's body (one
// not whole in memory, or larger than the windows took at once) and
// reads req.Body and req.Trailer until the body ends. Otherwise the
// client is done with req, its header and its body.
func (c *Client) RoundTripHeld(ctx context.Context, req *http.Request) (resp *http.Response, held bool, err error) {
	return c.RoundTripInto(ctx, req, nil)
}

// Storage is what a caller may lend a round trip for its response: the
// Response and the maps of its header and trailers, which a busy proxy
// would otherwise allocate for every request. They stay valid until the
// Storage is lent again (a retry's response takes the place of the one
// before) or Reset; the header values they hold are the response's own
// and stay valid after. Once a round trip has returned an error, or the
// response body is closed, nothing of the stream writes to the Storage
// any more. The zero value is ready; a Storage is not safe for
// concurrent use.
type Storage struct {
	resp            http.Response
	header, trailer http.Header
}

// maxStorageHeader is the most fields a map kept by a Storage for the
// next request may have held.
const maxStorageHeader = 32

// Reset makes st ready for another round trip: its maps cleared (let go
// when an unusual response grew them), the Response zeroed.
func (st *Storage) Reset() {
	st.header, st.trailer = reusable(st.header), reusable(st.trailer)
	st.resp = http.Response{}
}

// reusable is h cleared, or nil when it grew past maxStorageHeader.
func reusable(h http.Header) http.Header {
	if len(h) > maxStorageHeader {
		return nil
	}
	clear(h)
	return h
}

// RoundTripInto is RoundTripHeld with the response's storage lent by
// the caller (nil: allocated).
func (c *Client) RoundTripInto(ctx context.Context, req *http.Request, store *Storage) (resp *http.Response, held bool, err error) {
	var mem *memBody
	if req.Body != nil && req.Body != http.NoBody && inMemory(req) {
		var err error
		if mem, err = readMem(req); err != nil {
			req.Body.Close()
			return nil, false, err
		}
	}
	defer func() { mem.release() }() // roundTrip may have read it too
	for try := 0; ; try++ {
		cc, err := c.reserve(ctx)
		if err != nil {
			return nil, held, err
		}
		resp, retry, sending, err := cc.roundTrip(ctx, req, &mem, store)
		held = held || sending
		if err == nil || !retry || try == maxRetries || ctx.Err() != nil {
			if errors.Is(err, errUnprocessed) {
				err = http2.StreamError{Code: http2.ErrCodeRefusedStream, Cause: err}
			}
			return resp, held, err
		}
	}
}

// reserve returns a connection with a stream reserved for a request,
// dialling one when none has room.
func (c *Client) reserve(ctx context.Context) (*conn, error) {
	for {
		c.mu.Lock()
		for _, cc := range c.conns {
			if cc.reserve() {
				c.mu.Unlock()
				return cc, nil
			}
		}
		d := c.dialing
		if d == nil {
			d = &dialCall{done: make(chan struct{}), ctx: ctx}
			c.dialing = d
			c.mu.Unlock()
			c.dial(d)
			if d.err != nil {
				return nil, d.err
			}
			continue
		}
		c.mu.Unlock()
		select {
		case <-d.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if d.err != nil && d.ctx.Err() == nil {
			return nil, d.err // the endpoint refused; a dial ended by its requester's context is tried again
		}
	}
}

// dial opens a connection for d and adds it to the client.
func (c *Client) dial(d *dialCall) {
	nc, err := c.cfg.Dial(d.ctx)
	var cc *conn
	c.mu.Lock()
	c.dialing = nil
	if err == nil {
		cc = newConn(c, nc, c.shutdown)
		c.conns = append(c.conns, cc)
	}
	c.mu.Unlock()
	d.err = err
	close(d.done)
	if cc != nil {
		go cc.readLoop()
	}
}

// forget removes a closed connection.
func (c *Client) forget(cc *conn) {
	c.mu.Lock()
	for i, x := range c.conns {
		if x == cc {
			c.conns = slices.Delete(c.conns, i, i+1)
			break
		}
	}
	c.mu.Unlock()
}

// CloseIdle closes the connections that carry no stream.
func (c *Client) CloseIdle() {
	c.mu.Lock()
	conns := append([]*conn(nil), c.conns...)
	c.mu.Unlock()
	for _, cc := range conns {
		cc.closeIfIdle()
	}
}

// Shutdown closes the idle connections now and the others when their
// last stream ends; connections dialled later (for requests still
// running on a retired configuration) close the same way.
func (c *Client) Shutdown() {
	c.mu.Lock()
	c.shutdown = true
	conns := append([]*conn(nil), c.conns...)
	c.mu.Unlock()
	for _, cc := range conns {
		cc.shutdown()
	}
}

// Conns reports how many connections the client holds.
func (c *Client) Conns() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.conns)
}
