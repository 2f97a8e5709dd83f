// Package h2server is the HTTP/2 server of the proxy's listeners: h2c
// with prior knowledge and HTTP/2 over TLS, serving an http.Handler.
//
// Go's HTTP/2 server hands every request between three goroutines — the
// connection's frame reader, its serving loop, and the stream's handler
// — and every frame the handler writes goes to the serving loop and back:
// a proxied response (headers, data, end of stream) is two round trips
// and two system calls at the least, three with trailers. Here a
// connection has one goroutine, its reader, and each stream one, its
// handler; the handler writes its frames to the connection itself, under
// the connection's write lock, and a response that fits in a frame
// (headers, data and trailers or END_STREAM) leaves in one write. A
// response the handler flushes goes out at each flush.
//
// What it implements of RFC 9113 is what a proxy's server side needs:
// the preface and settings, header blocks with CONTINUATION, requests
// checked as Go's server checks them (malformed ones reset with
// PROTOCOL_ERROR), request bodies and trailers with flow control given
// back as the handler reads, responses with trailers under the client's
// flow control, informational responses (100 Continue when the handler
// first reads a body that expects it), RST_STREAM both ways, PING,
// GOAWAY for a graceful shutdown, an idle connection's timeout, and
// "Connection: close" from the handler, which asks the client to go
// (GOAWAY) as Go's server does. Responses are HPACK-encoded without the
// dynamic table, so writers keep no shared encoder state. Server push
// and priorities are not implemented (clients' PRIORITY frames are
// read and ignored); extended CONNECT is not offered.
//
// The connection is read through a 2 KiB buffer, so a frame's header
// and its payload seldom cost two system calls. Header blocks are timed
// (Server.HeaderTimeout), as Go's server does not.
package h2server

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// Defaults of Server's limits.
const (
	DefaultMaxConcurrentStreams = 100
	// streamWindow and connWindow are what a client may send ahead of the
	// handler's reads: per stream and for the connection (Go's server
	// allows 1 MiB each too).
	streamWindow = 1 << 20
	connWindow   = 1 << 20
	// maxFrameSize is the largest frame read (SETTINGS_MAX_FRAME_SIZE
	// is left at HTTP/2's default).
	maxFrameSize = 16 << 10
	// prefaceTimeout bounds the wait for the client's preface.
	prefaceTimeout = 10 * time.Second
	// maxControlPending bounds the control frames (acks, window
	// updates, resets) waiting to be written: a client that makes more
	// without reading what it is sent is closed.
	maxControlPending = 64 << 10
)

// Server serves HTTP/2 connections handed to ServeConn. Its fields are
// set before the first ServeConn and not changed after.
type Server struct {
	Handler http.Handler
	// MaxConcurrentStreams is SETTINGS_MAX_CONCURRENT_STREAMS; streams
	// past it are refused (RST_STREAM REFUSED_STREAM). 0: 100.
	MaxConcurrentStreams uint32
	// MaxHeaderBytes bounds a request's header list (names, values and
	// 32 bytes each, as HPACK counts them); a larger request is answered
	// 431. 0: http.DefaultMaxHeaderBytes.
	MaxHeaderBytes int
	// IdleTimeout closes a connection (GOAWAY) that has had no stream
	// open this long. 0: never.
	IdleTimeout time.Duration
	// WriteTimeout is every stream's write deadline, from its start; the
	// handler may move it (http.ResponseController). A write that would
	// pass it fails and the stream is reset. 0: none.
	WriteTimeout time.Duration
	// StreamIdleTimeout resets a stream on which nothing has moved
	// either way for this long (Envoy's stream_idle_timeout): no DATA
	// from the client, no read of the request's body by the handler, no
	// write of its response, no send window the client opened for it. A
	// client that never reads its response or never sends the body it
	// announced would otherwise hold the stream's handler, its upstream
	// request and their buffers. One sweep per connection looks at its
	// streams every StreamIdleTimeout, so an idle stream is reset
	// (RST_STREAM INTERNAL_ERROR: its handler's context ends, reads of
	// its body fail with os.ErrDeadlineExceeded) between one and two
	// timeouts after it last moved — also once its handler has
	// returned, while what it wrote waits for the client's window. A
	// stream costs the sweep nothing but a counter. 0: none.
	StreamIdleTimeout time.Duration
	// OnStreamIdle, if set, is called for each stream StreamIdleTimeout
	// resets, with its request's path.
	OnStreamIdle func(remote, path string)
	// HeaderTimeout bounds header blocks (Envoy's
	// request_headers_timeout, for a protocol where a stream exists only
	// once its header block is whole): a connection that completes no
	// header block within it of the preface, or keeps one open longer
	// (HEADERS and CONTINUATION frames trickled), is closed — the whole
	// connection, as a header block is one unit no other frame may
	// interrupt. Between requests a connection may be idle as long as
	// IdleTimeout allows. 0: no bound.
	HeaderTimeout time.Duration
	// OnHeaderTimeout, if set, is called before a connection is closed
	// for HeaderTimeout.
	OnHeaderTimeout func(remote string)
	// OnMalformed, if set, is called for each request reset as malformed
	// (RFC 9113 §8.1.1), with why.
	OnMalformed func(remote, why string)
	// Log takes the server's debug messages. nil: none.
	Log *slog.Logger

	mu       sync.Mutex
	conns    map[*conn]struct{}
	shutdown bool
	changed  *sync.Cond // a connection ended
}

// ErrServerClosed is what ServeConn returns after Shutdown or Close.
var ErrServerClosed = errors.New("h2server: server closed")

func (s *Server) init() {
	if s.conns == nil {
		s.conns = map[*conn]struct{}{}
		s.changed = sync.NewCond(&s.mu)
	}
}

func (s *Server) log() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

// ServeConn serves nc, whose first bytes are the client's preface, until
// the client or the server closes it, and returns once the handlers it
// started have returned (their requests' contexts end with the
// connection). Each request's context derives from ctx. nc is read in frame-sized pieces: a connection that buffers
// its reads (TLS, the dataplane's h2guard) saves system calls.
func (s *Server) ServeConn(ctx context.Context, nc net.Conn) error {
	s.mu.Lock()
	s.init()
	if s.shutdown {
		s.mu.Unlock()
		nc.Close()
		return ErrServerClosed
	}
	c := newConn(s, ctx, nc)
	s.conns[c] = struct{}{}
	s.mu.Unlock()

	c.serve()

	s.mu.Lock()
	delete(s.conns, c)
	s.changed.Broadcast()
	s.mu.Unlock()
	return nil
}

func (s *Server) stop() []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.init()
	s.shutdown = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	return conns
}

// Shutdown sends every connection GOAWAY, closes each once its streams
// are done (idle ones at once), and waits for that or ctx; on ctx's end
// it returns ctx.Err() and leaves the rest to Close.
func (s *Server) Shutdown(ctx context.Context) error {
	for _, c := range s.stop() {
		c.goAway(true)
	}
	done := make(chan struct{})
	go func() {
		s.mu.Lock()
		for len(s.conns) > 0 && ctx.Err() == nil {
			s.changed.Wait()
		}
		s.mu.Unlock()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		s.changed.Broadcast() // the waiter sees ctx's end
		s.mu.Unlock()
		<-done
		return ctx.Err()
	}
}

// Close closes every connection now; their handlers see their requests'
// contexts end.
func (s *Server) Close() error {
	for _, c := range s.stop() {
		c.kill(ErrServerClosed)
	}
	return nil
}

// Conns reports how many connections are being served.
func (s *Server) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}
