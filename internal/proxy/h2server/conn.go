package h2server

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"weft.dev/weft/internal/h2wire"
)

var errClientGone = errors.New("h2server: connection closed")

// conn is one HTTP/2 connection. Its reader goroutine (serve) owns the
// read side; mu guards the streams, the send windows and the control
// frames queued; wmu orders writes on the connection.
type conn struct {
	srv    *Server
	nc     net.Conn
	ctx    context.Context // every request's context derives from it; done when the connection ends
	cancel context.CancelFunc
	remote string
	local  net.Addr

	// Read side: the reader goroutine's alone.
	r        *bufio.Reader
	hdr      [9]byte
	small    [512]byte // payload of the frames that fit (most but DATA)
	hdec     *hpack.Decoder
	fields   h2wire.Fields
	selfDep  bool   // the block's HEADERS frame made the stream depend on itself
	hblock   []byte // a header block being continued; nil outside one
	hstream  uint32
	hend     bool // the header block's frame ended the stream
	canon    h2wire.Canon
	maxHdr   int           // the header list limit
	maxStrm  uint32        // SETTINGS_MAX_CONCURRENT_STREAMS
	lastID   atomic.Uint32 // the last stream the client opened
	recvLeft atomic.Int32  // connection receive window left

	w *h2wire.Writer

	// starts are the streams with a body whose handlers wait for the
	// frames already read: a request's DATA that came with its HEADERS
	// is in its body when the handler starts, so a proxy sends the two
	// upstream together. The reader's own.
	starts []start

	// The header-block clock (Server.HeaderTimeout). armed and done are
	// the reader's; hmu guards the timer against the connection's end.
	armed  bool // the clock runs
	done   bool // a header block has been completed
	hmu    sync.Mutex
	htimer *time.Timer
	hshut  bool

	mu         sync.Mutex
	cond       *sync.Cond // send windows grew, a stream ended, or a deadline passed
	streams    map[uint32]*stream
	handlers   uint32 // handlers running: a stream the client reset may still have one
	handlerWG  sync.WaitGroup
	sendWindow int64
	peerWindow int32 // SETTINGS_INITIAL_WINDOW_SIZE of the client
	peerFrame  int   // SETTINGS_MAX_FRAME_SIZE of the client
	recvOwed   int32 // connection window read by handlers, not yet given back
	closed     bool
	goingAway  bool // GOAWAY sent
	closeIdle  bool // close once no stream is left
	idle       *time.Timer
	sweep      *time.Timer // the stream idle sweep (Server.StreamIdleTimeout)
	sweeping   bool        // sweep is armed: it runs while streams are open
	killErr    error
	// idleWorkers are handler goroutines that finished a stream and wait
	// for the next (at most maxIdleWorkers); workersDone once the
	// connection has ended and they have been let go.
	idleWorkers []chan start
	workersDone bool
	// freeHeaders are request header maps of streams whose handlers
	// returned, emptied, for the next streams' requests.
	freeHeaders []http.Header
	// reset holds the streams this side reset (RST_STREAM) whose client
	// may still send: what it sends on them is dropped, as RFC 9113 §5.1
	// wants, until its END_STREAM. Bounded: the oldest are forgotten.
	reset map[uint32]struct{}
}

func newConn(s *Server, ctx context.Context, nc net.Conn) *conn {
	// Every request's context carries the local address, as net/http's
	// server does: set once for the connection.
	ctx, cancel := context.WithCancel(context.WithValue(ctx, http.LocalAddrContextKey, nc.LocalAddr()))
	c := &conn{
		srv:        s,
		nc:         nc,
		ctx:        ctx,
		cancel:     cancel,
		remote:     nc.RemoteAddr().String(),
		local:      nc.LocalAddr(),
		streams:    map[uint32]*stream{},
		sendWindow: initialWindow,
		peerWindow: initialWindow,
		peerFrame:  16 << 10,
		maxStrm:    s.MaxConcurrentStreams,
		maxHdr:     s.MaxHeaderBytes,
	}
	if c.maxStrm == 0 {
		c.maxStrm = DefaultMaxConcurrentStreams
	}
	if c.maxHdr <= 0 {
		c.maxHdr = 1 << 20 // http.DefaultMaxHeaderBytes
	}
	c.recvLeft.Store(connWindow)
	c.r = bufio.NewReaderSize(nc, readBuffer)
	c.cond = sync.NewCond(&c.mu)
	c.hdec = hpack.NewDecoder(hpackTableSize, c.fields.Add)
	c.w = h2wire.NewWriter(nc, maxControlPending, c.kill)
	c.hdec.SetMaxStringLength(c.headerListLimit()) // longer: a connection error, as in Go's server
	return c
}

const (
	initialWindow  = 65535 // HTTP/2's initial window, both ways
	hpackTableSize = 4096  // SETTINGS_HEADER_TABLE_SIZE, HTTP/2's default
	readBuffer     = 2 << 10
)

// serve reads the connection to its end, then waits for the handlers
// it started: their requests' contexts have ended.
func (c *conn) serve() {
	stop := context.AfterFunc(c.ctx, c.cancelStreams)
	defer stop()
	c.finish(c.run())
	c.startHandlers() // any still waiting: their streams have ended, and so do they
	c.handlerWG.Wait()
	c.mu.Lock()
	c.workersDone = true
	for _, w := range c.idleWorkers {
		close(w)
	}
	c.idleWorkers = nil
	c.mu.Unlock()
}

func (c *conn) run() error {
	_ = c.nc.SetReadDeadline(time.Now().Add(prefaceTimeout))
	var pre [len(h2wire.Preface)]byte
	if _, err := io.ReadFull(c.r, pre[:]); err != nil {
		return err
	}
	if string(pre[:]) != h2wire.Preface {
		return h2wire.ConnErr(http2.ErrCodeProtocol, "not an HTTP/2 client preface")
	}
	_ = c.nc.SetReadDeadline(time.Time{})

	b := h2wire.AppendSettings(nil, []http2.Setting{
		{ID: http2.SettingMaxConcurrentStreams, Val: c.maxStrm},
		{ID: http2.SettingInitialWindowSize, Val: streamWindow},
		{ID: http2.SettingMaxHeaderListSize, Val: uint32(c.headerListLimit())},
	})
	b = h2wire.AppendWindowUpdate(b, 0, connWindow-initialWindow)
	if err := c.write(b); err != nil {
		return err
	}
	c.mu.Lock()
	c.armIdle()
	c.mu.Unlock()
	c.armHeaders() // the first header block runs on the preface's clock
	for {
		if len(c.starts) > 0 && !h2wire.FrameBuffered(c.r) {
			c.startHandlers()
		}
		if err := c.readFrame(); err != nil {
			return err
		}
	}
}

// cancelStreams ends the contexts of the open streams once the
// connection's has ended: ServeConn's context was cancelled, or the
// connection finished (which aborts them itself too). A stream's
// context is a reqctx.Context, which costs one allocation and lets
// what watches it (the upstream request) do so without any, where a
// context.WithCancel of the connection's would cost the child, its
// CancelFunc and an entry in the parent's map of children.
func (c *conn) cancelStreams() {
	err := c.ctx.Err()
	c.mu.Lock()
	for _, st := range c.streams {
		st.ctx.CancelWith(err)
	}
	c.mu.Unlock()
}

// start is a stream whose handler is to start.
type start struct {
	st *stream
	r  *http.Request
}

// maxStarts bounds the handlers that wait for the frames behind them.
const maxStarts = 16

// startHandlers starts the handlers that wait.
func (c *conn) startHandlers() {
	for i, s := range c.starts {
		c.startHandler(s)
		c.starts[i] = start{}
	}
	c.starts = c.starts[:0]
}

// maxReusedHeader is the most fields a response header map a handler
// goroutine keeps for its next stream may have held.
const maxReusedHeader = 32

// maxIdleWorkers bounds the handler goroutines a connection keeps
// waiting for its next stream.
const maxIdleWorkers = 8

// startHandler runs a stream's handler on a goroutine of the connection
// that waits for one, or on a new one. A new goroutine starts on a small
// stack that a proxied request grows two or three times, copying it each
// time (3 % of a gRPC proxy's CPU); one that served a stream before has
// the stack already.
func (c *conn) startHandler(s start) {
	c.mu.Lock()
	if n := len(c.idleWorkers); n > 0 {
		w := c.idleWorkers[n-1]
		c.idleWorkers[n-1] = nil
		c.idleWorkers = c.idleWorkers[:n-1]
		c.mu.Unlock()
		w <- s // buffered: the worker takes it when it is scheduled
		return
	}
	c.mu.Unlock()
	go c.work(s)
}

// work serves s, then waits for more streams while the connection lasts
// and fewer than maxIdleWorkers others wait.
//
// The response header map is the goroutine's, cleared after each stream
// (a handler does not touch it once it returned, as h1server's reuse of
// its own relies on too): a map that has held a response keeps the
// slots for the next, where a new one is allocated with the first field.
// The request's header map goes back to the connection, cleared, for the
// request of a stream to come (h1server keeps its connection's too).
func (c *conn) work(s start) {
	var next chan start
	var header http.Header
	for {
		if header == nil {
			header = make(http.Header, 8)
		}
		s.st.w.header = header
		reqHeader := s.r.Header // the server's, whatever the handler sets
		s.st.serve(s.r)
		if len(header) > maxReusedHeader {
			header = nil // not kept grown by a rare response
		} else {
			clear(header)
		}
		if len(reqHeader) > maxReusedHeader {
			reqHeader = nil
		} else {
			clear(reqHeader)
		}
		c.mu.Lock()
		if reqHeader != nil && len(c.freeHeaders) < maxIdleWorkers {
			c.freeHeaders = append(c.freeHeaders, reqHeader)
		}
		if c.workersDone || len(c.idleWorkers) >= maxIdleWorkers {
			c.mu.Unlock()
			return
		}
		if next == nil {
			next = make(chan start, 1)
		}
		c.idleWorkers = append(c.idleWorkers, next)
		c.mu.Unlock()
		var ok bool
		if s, ok = <-next; !ok {
			return
		}
	}
}

// headerListLimit is the advertised SETTINGS_MAX_HEADER_LIST_SIZE: the
// server's limit with HTTP/1.1's allowance for the request line (as Go's
// server advertises it); past it a request is answered 431.
func (c *conn) headerListLimit() int { return c.maxHdr + 4096 }

// finish ends the connection after its reader stopped: every stream
// still open is told.
func (c *conn) finish(err error) {
	var ce h2wire.ConnError
	if errors.As(err, &ce) {
		c.mu.Lock()
		c.goingAway = true
		c.mu.Unlock()
		c.queueControl(h2wire.AppendGoAway(nil, c.lastID.Load(), ce.Code, ce.Msg))
		c.srv.log().Debug("HTTP/2 connection error", "remote", c.remote, "err", err)
		c.linger()
	}
	c.hmu.Lock()
	c.hshut = true
	if c.htimer != nil {
		c.htimer.Stop()
	}
	c.hmu.Unlock()
	c.mu.Lock()
	c.closed = true
	if c.killErr == nil {
		c.killErr = errClientGone
	}
	streams := c.streams
	c.streams = map[uint32]*stream{}
	if c.idle != nil {
		c.idle.Stop()
	}
	if c.sweep != nil {
		c.sweep.Stop()
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	c.w.Close()
	c.nc.Close()
	c.cancel()
	for _, st := range streams {
		st.abort(errClientGone)
	}
}

// linger, after a connection error, lets the client read the GOAWAY: it
// reads what the client still sends, up to 64 KiB, for at most a second
// after closing its own side, so that closing does not reset the
// connection (which can discard the GOAWAY).
func (c *conn) linger() {
	if cw, ok := c.nc.(interface{ CloseWrite() error }); !ok || cw.CloseWrite() != nil {
		return
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(time.Second))
	_, _ = io.Copy(io.Discard, io.LimitReader(c.nc, 64<<10))
}

// appendRST appends a RST_STREAM for stream id and notes the reset.
func (c *conn) appendRST(b []byte, id uint32, code http2.ErrCode) []byte {
	c.mu.Lock()
	c.noteReset(id)
	c.mu.Unlock()
	return h2wire.AppendRST(b, id, code)
}

// noteReset notes that this side resets stream id. c.mu is held.
func (c *conn) noteReset(id uint32) {
	if c.reset == nil {
		c.reset = map[uint32]struct{}{}
	}
	if len(c.reset) >= maxResetKept {
		for old := range c.reset {
			delete(c.reset, old)
			break
		}
	}
	c.reset[id] = struct{}{}
}

const maxResetKept = 1024

// wasReset reports whether this side reset stream id and its client
// may still send on it; end forgets it (the client's END_STREAM).
func (c *conn) wasReset(id uint32, end bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.reset[id]
	if ok && end {
		delete(c.reset, id)
	}
	return ok
}

// kill closes the connection from any goroutine; the reader then ends
// it.
func (c *conn) kill(err error) {
	c.mu.Lock()
	if c.killErr == nil {
		c.killErr = err
	}
	c.mu.Unlock()
	c.nc.Close()
}

// readFrame reads and handles one frame.
func (c *conn) readFrame() error {
	h, err := h2wire.ReadFrameHeader(c.r, &c.hdr)
	if err != nil {
		return err
	}
	n, typ, flags, id := h.Length, h.Type, h.Flags, h.StreamID
	if typ == http2.FrameHeaders && c.done && !c.armed &&
		(!flags.Has(http2.FlagHeadersEndHeaders) || c.r.Buffered() < n) {
		c.armHeaders() // a block that may be slow to come: on its clock
	}
	if n > maxFrameSize {
		return h2wire.ConnErr(http2.ErrCodeFrameSize, fmt.Sprintf("frame of %d bytes", n))
	}
	if c.hblock != nil && (typ != http2.FrameContinuation || id != c.hstream) {
		return h2wire.ConnErr(http2.ErrCodeProtocol, "header block interrupted")
	}
	var p []byte
	if n <= len(c.small) {
		p = c.small[:n]
	} else {
		bp := readBufs.Get().(*[]byte)
		defer readBufs.Put(bp)
		p = (*bp)[:n]
	}
	if _, err := io.ReadFull(c.r, p); err != nil {
		return err
	}
	switch typ {
	case http2.FrameData:
		return c.onData(id, flags, p)
	case http2.FrameHeaders:
		return c.onHeaders(id, flags, p)
	case http2.FrameContinuation:
		if c.hblock == nil {
			return h2wire.ConnErr(http2.ErrCodeProtocol, "CONTINUATION without HEADERS")
		}
		if len(c.hblock)+len(p) > c.headerListLimit()+maxFrameSize {
			return h2wire.ConnErr(http2.ErrCodeProtocol, "header block too large")
		}
		c.hblock = append(c.hblock, p...)
		if flags.Has(http2.FlagContinuationEndHeaders) {
			block := c.hblock
			c.hblock = nil
			return c.onHeaderBlock(c.hstream, c.hend, block)
		}
		return nil
	case http2.FramePriority:
		if id == 0 {
			return h2wire.ConnErr(http2.ErrCodeProtocol, "PRIORITY on stream 0")
		}
		if n != 5 {
			c.queueControl(c.appendRST(nil, id, http2.ErrCodeFrameSize))
			return nil
		}
		if binary.BigEndian.Uint32(p)&(1<<31-1) == id {
			c.resetStream(id, http2.ErrCodeProtocol) // a stream may not depend on itself
		}
		return nil
	case http2.FrameRSTStream:
		if id == 0 {
			return h2wire.ConnErr(http2.ErrCodeProtocol, "RST_STREAM on stream 0")
		}
		if n != 4 {
			return h2wire.ConnErr(http2.ErrCodeFrameSize, "bad RST_STREAM")
		}
		return c.onReset(id, http2.ErrCode(binary.BigEndian.Uint32(p)))
	case http2.FrameSettings:
		return c.onSettings(id, flags, p)
	case http2.FramePushPromise:
		return h2wire.ConnErr(http2.ErrCodeProtocol, "PUSH_PROMISE from a client")
	case http2.FramePing:
		if id != 0 {
			return h2wire.ConnErr(http2.ErrCodeProtocol, "PING on a stream")
		}
		if n != 8 {
			return h2wire.ConnErr(http2.ErrCodeFrameSize, "bad PING")
		}
		if !flags.Has(http2.FlagPingAck) {
			var fb [9 + 8]byte
			c.queueControl(h2wire.AppendPing(fb[:0], true, [8]byte(p)))
		}
		return nil
	case http2.FrameGoAway:
		if id != 0 {
			return h2wire.ConnErr(http2.ErrCodeProtocol, "GOAWAY on a stream")
		}
		if n < 8 {
			return h2wire.ConnErr(http2.ErrCodeFrameSize, "bad GOAWAY")
		}
		return nil // the client stops opening streams; the open ones go on
	case http2.FrameWindowUpdate:
		if n != 4 {
			return h2wire.ConnErr(http2.ErrCodeFrameSize, "bad WINDOW_UPDATE")
		}
		return c.onWindowUpdate(id, binary.BigEndian.Uint32(p)&(1<<31-1))
	}
	return nil // unknown frame types are ignored
}

// readBufs hold the payload of frames larger than conn.small.
var readBufs = sync.Pool{New: func() any { b := make([]byte, maxFrameSize); return &b }}

func (c *conn) onData(id uint32, flags http2.Flags, p []byte) error {
	if id == 0 {
		return h2wire.ConnErr(http2.ErrCodeProtocol, "DATA on stream 0")
	}
	n := int32(len(p))
	if n > c.recvLeft.Load() {
		return h2wire.ConnErr(http2.ErrCodeFlowControl, "connection receive window exceeded")
	}
	c.recvLeft.Add(-n)
	data, ok := h2wire.Unpad(flags, p)
	if !ok {
		return h2wire.ConnErr(http2.ErrCodeProtocol, "bad padding")
	}
	c.mu.Lock()
	st := c.streams[id]
	c.mu.Unlock()
	if st == nil || st.remoteDone.Load() {
		c.giveBack(n) // counted against the connection, read by no one
		switch {
		case id > c.lastID.Load():
			return h2wire.ConnErr(http2.ErrCodeProtocol, "DATA on an idle stream")
		case st == nil && c.wasReset(id, flags.Has(http2.FlagDataEndStream)):
			// In flight when this side reset the stream: dropped.
		case st != nil:
			// After the client's END_STREAM (RFC 9113 §5.1): a stream
			// error, half-closed or closed.
			st.reset(http2.ErrCodeStreamClosed, errors.New("h2server: DATA after END_STREAM"))
		default:
			c.queueControl(c.appendRST(nil, id, http2.ErrCodeStreamClosed))
		}
		return nil
	}
	st.onData(data, n, flags.Has(http2.FlagDataEndStream))
	return nil
}

func (c *conn) onHeaders(id uint32, flags http2.Flags, p []byte) error {
	if id == 0 {
		return h2wire.ConnErr(http2.ErrCodeProtocol, "HEADERS on stream 0")
	}
	block, ok := h2wire.Unpad(flags, p)
	if !ok {
		return h2wire.ConnErr(http2.ErrCodeProtocol, "bad padding")
	}
	if flags.Has(http2.FlagHeadersPriority) {
		if len(block) < 5 {
			return h2wire.ConnErr(http2.ErrCodeProtocol, "bad HEADERS priority")
		}
		if binary.BigEndian.Uint32(block)&(1<<31-1) == id {
			// A stream may not depend on itself: a stream error, but the
			// block must still be decoded to keep HPACK in step.
			c.selfDep = true
		}
		block = block[5:]
	}
	end := flags.Has(http2.FlagHeadersEndStream)
	if !flags.Has(http2.FlagHeadersEndHeaders) {
		c.hblock = append(make([]byte, 0, 2*len(block)), block...)
		c.hstream, c.hend = id, end
		return nil
	}
	return c.onHeaderBlock(id, end, block)
}

// onHeaderBlock handles a whole header block: a new stream, or a
// client's trailers.
func (c *conn) onHeaderBlock(id uint32, end bool, block []byte) error {
	c.done = true
	c.stopHeaders()
	selfDependent := c.selfDep
	c.selfDep = false
	c.fields.Reset(c.headerListLimit())
	if _, err := c.hdec.Write(block); err != nil {
		return h2wire.ConnErr(http2.ErrCodeCompression, err.Error())
	}
	if err := c.hdec.Close(); err != nil {
		return h2wire.ConnErr(http2.ErrCodeCompression, err.Error())
	}
	f := &c.fields
	c.mu.Lock()
	st := c.streams[id]
	c.mu.Unlock()
	if st != nil || (id <= c.lastID.Load() && id%2 == 1) {
		return c.onTrailers(st, id, end)
	}
	if id%2 == 0 {
		return h2wire.ConnErr(http2.ErrCodeProtocol, fmt.Sprintf("HEADERS on stream %d, not a client's", id))
	}
	c.lastID.Store(id)
	if selfDependent {
		c.queueControl(c.appendRST(nil, id, http2.ErrCodeProtocol))
		return nil
	}
	c.mu.Lock()
	// Streams the client reset count until their handlers return, so
	// that opening and resetting streams (CVE-2023-44487) cannot run more
	// handlers than the stream limit.
	refuse := c.goingAway || c.closed || c.handlers >= c.maxStrm
	c.mu.Unlock()
	if refuse {
		c.queueControl(c.appendRST(nil, id, http2.ErrCodeRefusedStream))
		return nil
	}
	if f.TooLarge {
		// Answered as Go's server answers it (the client may still be
		// sending a body: RST_STREAM NO_ERROR after the answer).
		b := h2wire.AppendHeaders(nil, id, true, status431, maxFrameSize)
		if !end {
			b = c.appendRST(b, id, http2.ErrCodeNo)
		}
		c.queueControl(b)
		return nil
	}
	if f.CheckRequest(); f.Malformed != "" {
		c.malformed(id, f.Malformed)
		return nil
	}
	st, r, err := c.newStream(id, f, end)
	if err != "" {
		c.malformed(id, err)
		return nil
	}
	c.mu.Lock()
	c.streams[id] = st
	if err := c.ctx.Err(); err != nil {
		st.ctx.CancelWith(err) // cancelStreams has run, or runs after this
	}
	c.handlers++
	if c.idle != nil {
		c.idle.Stop()
	}
	c.armSweep()
	c.mu.Unlock()
	c.handlerWG.Add(1)
	if end {
		c.startHandler(start{st, r}) // nothing to wait for
		return nil
	}
	if len(c.starts) == maxStarts {
		c.startHandlers()
	}
	c.starts = append(c.starts, start{st, r})
	return nil
}

// malformed resets stream id, whose request is malformed (RFC 9113
// §8.1.1): a stream error.
func (c *conn) malformed(id uint32, why string) {
	c.srv.log().Debug("HTTP/2 stream reset: malformed request", "remote", c.remote, "why", why)
	if cb := c.srv.OnMalformed; cb != nil {
		cb(c.remote, why)
	}
	c.queueControl(c.appendRST(nil, id, http2.ErrCodeProtocol))
}

// armHeaders starts (or restarts) the header-block clock.
func (c *conn) armHeaders() {
	d := c.srv.HeaderTimeout
	if d <= 0 {
		return
	}
	c.armed = true
	c.hmu.Lock()
	defer c.hmu.Unlock()
	if c.hshut {
		return
	}
	if c.htimer == nil {
		c.htimer = time.AfterFunc(d, c.headersLate)
		return
	}
	c.htimer.Reset(d)
}

// stopHeaders stops the header-block clock: a block is complete.
func (c *conn) stopHeaders() {
	if !c.armed {
		return
	}
	c.armed = false
	c.hmu.Lock()
	if c.htimer != nil {
		c.htimer.Stop()
	}
	c.hmu.Unlock()
}

// headersLate closes the connection: its header block is late.
func (c *conn) headersLate() {
	c.hmu.Lock()
	shut := c.hshut
	c.hmu.Unlock()
	if shut {
		return
	}
	c.srv.log().Debug("HTTP/2 connection closed: request headers timeout", "remote", c.remote, "timeout", c.srv.HeaderTimeout)
	if cb := c.srv.OnHeaderTimeout; cb != nil {
		cb(c.remote)
	}
	c.kill(errors.New("h2server: request headers timeout"))
}

// onTrailers handles a header block on an open stream: the request's
// trailers, which must end it.
func (c *conn) onTrailers(st *stream, id uint32, end bool) error {
	switch {
	case st == nil && c.wasReset(id, end):
		// Trailers in flight when this side reset the stream (ended its
		// response early): dropped (RFC 9113 §5.1). The block was decoded,
		// so HPACK stays in step.
		return nil
	case st == nil:
		// A stream both sides closed, or one the client skipped.
		return h2wire.ConnErr(http2.ErrCodeStreamClosed, fmt.Sprintf("HEADERS on stream %d, which is closed", id))
	case st.closed():
		// Both sides ended it; this side's last frame may be on its way.
		return h2wire.ConnErr(http2.ErrCodeStreamClosed, fmt.Sprintf("HEADERS on stream %d, which is closed", id))
	case st.remoteDone.Load():
		// Half-closed by the client: a stream error.
		st.reset(http2.ErrCodeStreamClosed, errors.New("h2server: HEADERS after END_STREAM"))
		return nil
	}
	f := &c.fields
	switch {
	case !end:
		c.resetStream(id, http2.ErrCodeProtocol)
	case f.Malformed != "" || f.Pseudo:
		c.resetStream(id, http2.ErrCodeProtocol)
	default:
		st.onTrailers(f)
	}
	return nil
}

func (c *conn) onReset(id uint32, code http2.ErrCode) error {
	if id > c.lastID.Load() {
		return h2wire.ConnErr(http2.ErrCodeProtocol, "RST_STREAM on an idle stream")
	}
	c.mu.Lock()
	st := c.streams[id]
	if st != nil {
		st.peerReset = true // this side sends no RST_STREAM of its own now
	}
	c.mu.Unlock()
	if st != nil {
		st.abort(fmt.Errorf("h2server: the client reset the stream (%v)", code))
	}
	// The client has closed the stream too: what it sends on it now is
	// an error, not frames in flight (RFC 9113 §5.1). After abort: a
	// response ending meanwhile has noted its own reset by now, or
	// never will (the stream is done).
	c.wasReset(id, true)
	return nil
}

// resetStream resets stream id, open or not, with code.
func (c *conn) resetStream(id uint32, code http2.ErrCode) {
	c.mu.Lock()
	st := c.streams[id]
	c.mu.Unlock()
	if st != nil {
		st.reset(code, fmt.Errorf("h2server: stream reset (%v)", code))
		return
	}
	c.queueControl(c.appendRST(nil, id, code))
}

func (c *conn) onSettings(id uint32, flags http2.Flags, p []byte) error {
	if id != 0 {
		return h2wire.ConnErr(http2.ErrCodeProtocol, "SETTINGS on a stream")
	}
	if flags.Has(http2.FlagSettingsAck) {
		if len(p) != 0 {
			return h2wire.ConnErr(http2.ErrCodeFrameSize, "SETTINGS ack with a payload")
		}
		return nil
	}
	// Acknowledged before the new values take effect, as Go's server
	// does: a writer a larger window wakes must not send DATA ahead of
	// the acknowledgement (h2spec 6.9.2/1 reads them in that order).
	if err := h2wire.ParseSettings(p, func(http2.SettingID, uint32) {}); err != nil {
		return err
	}
	c.queueControl(h2wire.AppendSettingsAck(nil))
	c.mu.Lock()
	var overflow bool
	err := h2wire.ParseSettings(p, func(sid http2.SettingID, v uint32) {
		switch sid {
		case http2.SettingInitialWindowSize:
			delta := int64(v) - int64(c.peerWindow)
			c.peerWindow = int32(v)
			for _, st := range c.streams {
				st.sendWindow += delta
				overflow = overflow || st.sendWindow > 1<<31-1
			}
		case http2.SettingMaxFrameSize:
			c.peerFrame = int(v)
		}
	})
	if err == nil && overflow {
		err = h2wire.ConnError{Code: http2.ErrCodeFlowControl, Msg: "stream window overflow"}
	}
	if err != nil {
		c.mu.Unlock()
		return err
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	return nil
}

func (c *conn) onWindowUpdate(id, incr uint32) error {
	c.mu.Lock()
	if id == 0 {
		if incr == 0 {
			c.mu.Unlock()
			return h2wire.ConnErr(http2.ErrCodeProtocol, "WINDOW_UPDATE of 0")
		}
		c.sendWindow += int64(incr)
		if c.sendWindow > 1<<31-1 {
			c.mu.Unlock()
			return h2wire.ConnErr(http2.ErrCodeFlowControl, "connection window overflow")
		}
		c.cond.Broadcast()
		c.mu.Unlock()
		return nil
	}
	st := c.streams[id]
	if st == nil {
		c.mu.Unlock()
		switch {
		case id > c.lastID.Load():
			return h2wire.ConnErr(http2.ErrCodeProtocol, "WINDOW_UPDATE on an idle stream")
		case incr == 0:
			c.queueControl(c.appendRST(nil, id, http2.ErrCodeProtocol))
		}
		return nil
	}
	if incr == 0 {
		c.mu.Unlock()
		st.reset(http2.ErrCodeProtocol, errors.New("h2server: WINDOW_UPDATE of 0"))
		return nil
	}
	st.sendWindow += int64(incr)
	if st.sendWindow > 1<<31-1 {
		c.mu.Unlock()
		st.reset(http2.ErrCodeFlowControl, errors.New("h2server: stream window overflow"))
		return nil
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	return nil
}

// giveBack returns n bytes of the connection's receive window, read (or
// dropped), to the client once a quarter of the window is owed.
func (c *conn) giveBack(n int32) {
	if n <= 0 {
		return
	}
	c.mu.Lock()
	c.recvOwed += n
	owed := c.recvOwed
	if owed < connWindow/4 {
		c.mu.Unlock()
		return
	}
	c.recvOwed = 0
	c.mu.Unlock()
	c.recvLeft.Add(owed)
	var fb [9 + 4]byte
	c.queueControl(h2wire.AppendWindowUpdate(fb[:0], 0, uint32(owed)))
}

// goAway sends GOAWAY (once) naming the last stream accepted; streams
// after it are refused. closeIdle also closes the connection once no
// stream is left.
func (c *conn) goAway(closeIdle bool) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	first := !c.goingAway
	c.goingAway = true
	c.closeIdle = c.closeIdle || closeIdle
	idle := c.closeIdle && len(c.streams) == 0
	c.mu.Unlock()
	if first {
		c.queueControl(h2wire.AppendGoAway(nil, c.lastID.Load(), http2.ErrCodeNo, ""))
	}
	if idle {
		c.w.Flush()
		c.kill(ErrServerClosed)
	}
}

// dropStream forgets a stream. The last stream of a connection going
// away closes it; otherwise the idle timeout starts.
func (c *conn) dropStream(st *stream) {
	c.mu.Lock()
	if c.streams[st.id] == st {
		delete(c.streams, st.id)
	}
	last := len(c.streams) == 0 && !c.closed
	closeNow := last && c.closeIdle
	if last && !closeNow {
		c.armIdle()
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	if closeNow {
		c.w.Flush()
		c.kill(ErrServerClosed)
	}
}

// armIdle starts (or restarts) the idle timeout. c.mu is held.
func (c *conn) armIdle() {
	d := c.srv.IdleTimeout
	if d <= 0 {
		return
	}
	if c.idle == nil {
		c.idle = time.AfterFunc(d, c.onIdle)
		return
	}
	c.idle.Reset(d)
}

// armSweep starts the stream idle sweep unless it runs. c.mu is held.
func (c *conn) armSweep() {
	d := c.srv.StreamIdleTimeout
	if d <= 0 || c.sweeping || c.closed {
		return
	}
	c.sweeping = true
	if c.sweep == nil {
		c.sweep = time.AfterFunc(d, c.sweepIdle)
		return
	}
	c.sweep.Reset(d)
}

// sweepIdle resets the streams on which nothing moved since the sweep
// before, and comes back in a timeout while streams are open. A stream
// is idle once two sweeps in a row saw the same count of its moves: the
// first that sees it only notes the count.
func (c *conn) sweepIdle() {
	var idle []*stream
	c.mu.Lock()
	for _, st := range c.streams {
		n := st.moved.Load()
		if st.swept && n == st.lastMoved {
			idle = append(idle, st)
			continue
		}
		st.swept, st.lastMoved = true, n
	}
	c.sweeping = false
	if len(c.streams) > len(idle) {
		c.armSweep()
	}
	c.mu.Unlock()
	d := c.srv.StreamIdleTimeout
	for _, st := range idle {
		c.srv.log().Debug("HTTP/2 stream reset: stream idle timeout", "remote", c.remote, "path", st.path, "timeout", d)
		if f := c.srv.OnStreamIdle; f != nil {
			f(c.remote, st.path)
		}
		st.reset(http2.ErrCodeInternal, os.ErrDeadlineExceeded)
	}
}

func (c *conn) onIdle() {
	c.mu.Lock()
	idle := len(c.streams) == 0 && !c.closed
	c.mu.Unlock()
	if idle {
		c.srv.log().Debug("HTTP/2 connection idle: closing", "remote", c.remote, "idle_timeout", c.srv.IdleTimeout)
		c.goAway(true)
	}
}

// queueControl queues control frames (written before the next write,
// or now).
func (c *conn) queueControl(b []byte) { c.w.Queue(b) }

// write writes b (whole frames) after the queued control frames.
func (c *conn) write(b []byte) error { return c.w.Write(b) }
