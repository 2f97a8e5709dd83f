package h2rpc

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"weft.dev/weft/internal/h2wire"
)

// What this server advertises and enforces.
const (
	maxFrameSize = 16 << 10 // SETTINGS_MAX_FRAME_SIZE, HTTP/2's default
	// recvWindow is each stream's and the connection's receive window.
	// What proxies send a control plane is small; a subscription by name
	// to thousands of resources is a few hundred KB.
	recvWindow           = 1 << 20
	maxConcurrentStreams = 100
	maxHeaderListSize    = 64 << 10
	// maxRecvMsgSize is gRPC-Go's default for a request message.
	maxRecvMsgSize = 4 << 20
	// maxControlPending bounds the control frames (acks, window
	// updates) waiting to be written: a peer that makes more without
	// reading what it is sent is closed.
	maxControlPending = 64 << 10
	// dataFrameMax is the most payload of a DATA frame this server
	// writes: a frame with its 9-byte header then fills one TLS record
	// (16 KiB) exactly, where a 16 KiB payload would take a second
	// record (and system call) for 9 bytes.
	dataFrameMax = 16<<10 - 9
	// writeChunk is the most DATA written per write call: two full
	// frames, two TLS records.
	writeChunk = 2 * dataFrameMax
	// maxPingStrikes: a client may ping too often this many times.
	maxPingStrikes = 2
)

const initialWindow = 65535 // HTTP/2's initial window, both ways

// HTTP/2 error codes (RFC 9113 §7).
const (
	errCodeNo              = http2.ErrCodeNo
	errCodeProtocol        = http2.ErrCodeProtocol
	errCodeFlowControl     = http2.ErrCodeFlowControl
	errCodeStreamClosed    = http2.ErrCodeStreamClosed
	errCodeFrameSize       = http2.ErrCodeFrameSize
	errCodeRefusedStream   = http2.ErrCodeRefusedStream
	errCodeCancel          = http2.ErrCodeCancel
	errCodeCompression     = http2.ErrCodeCompression
	errCodeEnhanceYourCalm = http2.ErrCodeEnhanceYourCalm
)

var (
	errServerClosed = errors.New("h2rpc: server closed the connection")
	errConnClosed   = errors.New("h2rpc: connection closed")
	// ErrStreamDone is what Send and Finish return on a stream that is
	// over (finished, reset, or its connection lost).
	ErrStreamDone = errors.New("h2rpc: stream is over")
)

// conn is one HTTP/2 connection. Its reader goroutine (serve) owns the
// read side; mu guards the streams and the send windows, wmu orders
// writes on the connection.
type conn struct {
	srv  *Server
	nc   net.Conn
	ctx  context.Context // carries the peer; done when the connection ends
	stop context.CancelFunc

	// Read side: the reader goroutine's alone.
	hdr       [9]byte
	hdec      *hpack.Decoder
	fields    h2wire.Fields
	hblock    []byte // a header block being continued; nil outside one
	hstream   uint32
	hend      bool          // the header block's frame ended the stream
	recvLeft  int32         // connection receive window left
	recvOwed  int32         // connection window consumed, not yet given back
	maxStream atomic.Uint32 // the last stream the client opened
	activity  atomic.Bool
	lastPing  time.Time
	strikes   int
	resetPing atomic.Bool // a response went out since the last client ping

	w *h2wire.Writer

	mu         sync.Mutex
	cond       *sync.Cond // send windows grew, or a stream or the connection ended
	streams    map[uint32]*Stream
	sendWindow int64
	peerWindow int32 // SETTINGS_INITIAL_WINDOW_SIZE of the peer
	peerFrame  int   // SETTINGS_MAX_FRAME_SIZE of the peer
	closed     bool
	goingAway  bool // GOAWAY sent
	closeIdle  bool // close once no stream is left
	pingOut    bool
	pingSent   time.Time
	keepalive  *time.Timer
	ageTimer   *time.Timer
	killErr    error
}

func newConn(s *Server, nc net.Conn, auth credentials.AuthInfo) *conn {
	p := &peer.Peer{Addr: nc.RemoteAddr(), LocalAddr: nc.LocalAddr(), AuthInfo: auth}
	ctx, stop := context.WithCancel(peer.NewContext(context.Background(), p))
	c := &conn{
		srv:        s,
		nc:         nc,
		ctx:        ctx,
		stop:       stop,
		recvLeft:   recvWindow,
		streams:    map[uint32]*Stream{},
		sendWindow: initialWindow,
		peerWindow: initialWindow,
		peerFrame:  16 << 10,
	}
	c.cond = sync.NewCond(&c.mu)
	c.hdec = hpack.NewDecoder(4096, c.fields.Add)
	c.w = h2wire.NewWriter(nc, maxControlPending, c.kill)
	c.hdec.SetMaxStringLength(maxHeaderListSize)
	return c
}

// serve reads the connection to its end.
func (c *conn) serve() {
	err := c.run()
	c.finish(err)
}

func (c *conn) run() error {
	_ = c.nc.SetReadDeadline(time.Now().Add(handshakeTimeout))
	var pre [len(h2wire.Preface)]byte
	if _, err := io.ReadFull(c.nc, pre[:]); err != nil {
		return err
	}
	if string(pre[:]) != h2wire.Preface {
		return h2wire.ConnErr(errCodeProtocol, "not an HTTP/2 client preface")
	}
	_ = c.nc.SetReadDeadline(time.Time{})

	var b []byte
	b = h2wire.AppendSettings(b, []http2.Setting{
		{ID: http2.SettingMaxConcurrentStreams, Val: maxConcurrentStreams},
		{ID: http2.SettingInitialWindowSize, Val: recvWindow},
		{ID: http2.SettingMaxHeaderListSize, Val: maxHeaderListSize},
	})
	b = h2wire.AppendWindowUpdate(b, 0, recvWindow-initialWindow)
	if err := c.write(b); err != nil {
		return err
	}
	c.startTimers()

	for {
		if err := c.readFrame(); err != nil {
			return err
		}
	}
}

func (c *conn) startTimers() {
	s := c.srv
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.KeepaliveTime > 0 {
		c.keepalive = time.AfterFunc(s.KeepaliveTime, c.onKeepalive)
	}
	if s.MaxConnectionAge > 0 {
		c.ageTimer = time.AfterFunc(ageJitter(s.MaxConnectionAge), c.onMaxAge)
	}
}

// finish ends the connection after its reader stopped: every stream
// still open is told, on this goroutine.
func (c *conn) finish(err error) {
	var ce h2wire.ConnError
	if errors.As(err, &ce) {
		c.goAway(ce.Code, ce.Msg, false)
		c.srv.Log.Debug("HTTP/2 connection error", "remote", c.nc.RemoteAddr().String(), "error", err)
		c.linger()
	}
	c.mu.Lock()
	c.closed = true
	if c.killErr != nil {
		err = c.killErr
	}
	streams := c.streams
	c.streams = map[uint32]*Stream{}
	if c.keepalive != nil {
		c.keepalive.Stop()
	}
	if c.ageTimer != nil {
		c.ageTimer.Stop()
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	c.nc.Close()
	c.stop()
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		err = errConnClosed
	}
	for _, st := range streams {
		st.ended(err)
	}
}

// linger, after a connection error, lets the peer read the GOAWAY: it
// reads what the peer still sends, up to 64 KiB, so that closing does
// not reset the connection (which can discard the GOAWAY) when the
// peer's data is left unread — typically the rest of a frame too large
// to read. Where the connection can close its sending side, it does, and
// the peer's close ends the wait (at most lingerTime). A TLS connection
// from gRPC's credentials cannot (its wrapper hides CloseWrite): the
// peer, not told, may wait for the close itself, so the wait is short
// (lingerOpen), enough for bytes already on their way.
func (c *conn) linger() {
	c.flushControl()
	wait := lingerOpen
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
		wait = lingerTime
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(wait))
	_, _ = io.Copy(io.Discard, io.LimitReader(c.nc, 64<<10))
}

const (
	lingerTime = time.Second
	lingerOpen = 200 * time.Millisecond
)

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
	h, err := h2wire.ReadFrameHeader(c.nc, &c.hdr)
	if err != nil {
		return err
	}
	c.activity.Store(true)
	n, typ, flags, id := h.Length, h.Type, h.Flags, h.StreamID
	if n > maxFrameSize {
		return h2wire.ConnErr(errCodeFrameSize, fmt.Sprintf("frame of %d bytes", n))
	}
	if c.hblock != nil && (typ != http2.FrameContinuation || id != c.hstream) {
		return h2wire.ConnErr(errCodeProtocol, "header block interrupted")
	}
	bp := getBuf(n)
	defer putBuf(bp)
	p := (*bp)[:n]
	if _, err := io.ReadFull(c.nc, p); err != nil {
		return err
	}
	switch typ {
	case http2.FrameData:
		return c.onData(id, flags, p)
	case http2.FrameHeaders:
		return c.onHeaders(id, flags, p)
	case http2.FrameContinuation:
		if c.hblock == nil {
			return h2wire.ConnErr(errCodeProtocol, "CONTINUATION without HEADERS")
		}
		if len(c.hblock)+len(p) > maxHeaderListSize {
			return h2wire.ConnErr(errCodeProtocol, "header block too large")
		}
		c.hblock = append(c.hblock, p...)
		if flags.Has(http2.FlagContinuationEndHeaders) {
			block := c.hblock
			c.hblock = nil
			return c.onHeaderBlock(c.hstream, c.hend, block)
		}
		return nil
	case http2.FramePriority:
		if id == 0 || n != 5 {
			return h2wire.ConnErr(errCodeProtocol, "bad PRIORITY")
		}
		if binary.BigEndian.Uint32(p)&(1<<31-1) == id {
			c.queueControl(h2wire.AppendRST(nil, id, errCodeProtocol)) // a stream may not depend on itself
		}
		return nil
	case http2.FrameRSTStream:
		if id == 0 || n != 4 {
			return h2wire.ConnErr(errCodeProtocol, "bad RST_STREAM")
		}
		return c.onReset(id, http2.ErrCode(binary.BigEndian.Uint32(p)))
	case http2.FrameSettings:
		return c.onSettings(id, flags, p)
	case http2.FramePushPromise:
		return h2wire.ConnErr(errCodeProtocol, "PUSH_PROMISE from a client")
	case http2.FramePing:
		if id != 0 || n != 8 {
			return h2wire.ConnErr(errCodeProtocol, "bad PING")
		}
		return c.onPing(flags, p)
	case http2.FrameGoAway:
		if id != 0 || n < 8 {
			return h2wire.ConnErr(errCodeProtocol, "bad GOAWAY")
		}
		return nil // the client stops opening streams; the open ones go on
	case http2.FrameWindowUpdate:
		if n != 4 {
			return h2wire.ConnErr(errCodeFrameSize, "bad WINDOW_UPDATE")
		}
		return c.onWindowUpdate(id, binary.BigEndian.Uint32(p)&(1<<31-1))
	}
	return nil // unknown frame types are ignored
}

func (c *conn) onData(id uint32, flags http2.Flags, p []byte) error {
	if id == 0 {
		return h2wire.ConnErr(errCodeProtocol, "DATA on stream 0")
	}
	n := int32(len(p))
	if n > c.recvLeft {
		return h2wire.ConnErr(errCodeFlowControl, "connection receive window exceeded")
	}
	c.recvLeft -= n
	c.recvOwed += n
	if c.recvOwed >= recvWindow/4 {
		c.queueControl(h2wire.AppendWindowUpdate(nil, 0, uint32(c.recvOwed)))
		c.recvLeft += c.recvOwed
		c.recvOwed = 0
	}
	data, ok := h2wire.Unpad(flags, p)
	if !ok {
		return h2wire.ConnErr(errCodeProtocol, "bad padding")
	}
	c.mu.Lock()
	st := c.streams[id]
	c.mu.Unlock()
	if st == nil || st.remoteDone.Load() {
		if id > c.maxStream.Load() {
			return h2wire.ConnErr(errCodeProtocol, "DATA on an idle stream")
		}
		c.queueControl(h2wire.AppendRST(nil, id, errCodeStreamClosed))
		return nil
	}
	if n > st.recvLeft.Load() {
		st.Reset(errCodeFlowControl)
		st.ended(errors.New("h2rpc: stream receive window exceeded"))
		return nil
	}
	st.recvLeft.Add(-n)
	st.onData(data, n, flags.Has(http2.FlagDataEndStream))
	return nil
}

func (c *conn) onHeaders(id uint32, flags http2.Flags, p []byte) error {
	if id == 0 {
		return h2wire.ConnErr(errCodeProtocol, "HEADERS on stream 0")
	}
	block, ok := h2wire.Unpad(flags, p)
	if !ok {
		return h2wire.ConnErr(errCodeProtocol, "bad padding")
	}
	selfDependent := false
	if flags.Has(http2.FlagHeadersPriority) {
		if len(block) < 5 {
			return h2wire.ConnErr(errCodeProtocol, "bad HEADERS priority")
		}
		selfDependent = binary.BigEndian.Uint32(block)&(1<<31-1) == id
		block = block[5:]
	}
	if selfDependent {
		if id > c.maxStream.Load() {
			c.maxStream.Store(id)
		}
		c.queueControl(h2wire.AppendRST(nil, id, errCodeProtocol))
		return nil
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
	c.fields.Reset(maxHeaderListSize)
	if _, err := c.hdec.Write(block); err != nil {
		return h2wire.ConnErr(errCodeCompression, err.Error())
	}
	if err := c.hdec.Close(); err != nil {
		return h2wire.ConnErr(errCodeCompression, err.Error())
	}
	c.mu.Lock()
	st := c.streams[id]
	c.mu.Unlock()
	if st != nil { // trailers: only END_STREAM matters
		if st.remoteDone.Load() {
			// Frames after the client's END_STREAM (RFC 9113 §5.1).
			return h2wire.ConnErr(errCodeStreamClosed, fmt.Sprintf("HEADERS on stream %d after its END_STREAM", id))
		}
		if !end {
			st.Reset(errCodeProtocol)
			st.ended(errors.New("h2rpc: HEADERS in the middle of a stream"))
			return nil
		}
		st.onData(nil, 0, true)
		return nil
	}
	c.fields.CheckRequest()
	switch {
	case id%2 == 0:
		return h2wire.ConnErr(errCodeProtocol, fmt.Sprintf("HEADERS on stream %d, not a client's", id))
	case id <= c.maxStream.Load():
		return h2wire.ConnErr(errCodeStreamClosed, fmt.Sprintf("HEADERS on stream %d, which is closed", id))
	}
	c.maxStream.Store(id)
	f := &c.fields
	if f.TooLarge {
		c.queueControl(h2wire.AppendRST(nil, id, errCodeRefusedStream))
		return nil
	}
	if f.Malformed != "" {
		// A malformed request (RFC 9113 §8.1.1): a stream error.
		c.srv.Log.Debug("malformed HTTP/2 request", "remote", c.nc.RemoteAddr().String(), "why", f.Malformed)
		c.queueControl(h2wire.AppendRST(nil, id, errCodeProtocol))
		return nil
	}
	c.mu.Lock()
	refuse := c.goingAway || c.closed || len(c.streams) >= maxConcurrentStreams
	c.mu.Unlock()
	if refuse {
		c.queueControl(h2wire.AppendRST(nil, id, errCodeRefusedStream))
		return nil
	}
	if code := grpcStatus(f); code != 0 {
		// Not a gRPC request: answered with the HTTP status and why, as
		// gRPC-Go does, under flow control like any response.
		st = newStream(c, id, f)
		if end {
			st.remoteDone.Store(true)
		}
		c.mu.Lock()
		c.streams[id] = st
		c.mu.Unlock()
		go st.replyPlain(code, "gRPC requires HTTP/2 POST with content-type application/grpc\n")
		return nil
	}
	st = newStream(c, id, f)
	c.mu.Lock()
	c.streams[id] = st
	c.mu.Unlock()
	if c.srv.Open != nil {
		st.h = c.srv.Open(st)
	}
	if st.h == nil {
		st.body = newBody(st)
		go c.srv.serveFallback(st, request(f, c, st))
	}
	if end {
		st.onData(nil, 0, true)
	}
	return nil
}

func (c *conn) onReset(id uint32, code http2.ErrCode) error {
	if id > c.maxStream.Load() {
		return h2wire.ConnErr(errCodeProtocol, "RST_STREAM on an idle stream")
	}
	c.mu.Lock()
	st := c.streams[id]
	c.mu.Unlock()
	if st == nil {
		return nil
	}
	st.markDone()
	st.ended(fmt.Errorf("h2rpc: the client reset the stream (%v)", code))
	return nil
}

func (c *conn) onSettings(id uint32, flags http2.Flags, p []byte) error {
	if id != 0 {
		return h2wire.ConnErr(errCodeProtocol, "SETTINGS on a stream")
	}
	if flags.Has(http2.FlagSettingsAck) {
		if len(p) != 0 {
			return h2wire.ConnErr(errCodeFrameSize, "SETTINGS ack with a payload")
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
	err := h2wire.ParseSettings(p, func(sid http2.SettingID, v uint32) {
		switch sid {
		case http2.SettingInitialWindowSize:
			delta := int64(v) - int64(c.peerWindow)
			c.peerWindow = int32(v)
			for _, st := range c.streams {
				st.sendWindow += delta
			}
		case http2.SettingMaxFrameSize:
			c.peerFrame = int(v)
		}
	})
	if err != nil {
		c.mu.Unlock()
		return err
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	return nil
}

func (c *conn) onPing(flags http2.Flags, p []byte) error {
	if flags.Has(http2.FlagPingAck) {
		c.mu.Lock()
		c.pingOut = false
		c.mu.Unlock()
		return nil
	}
	if min := c.srv.MinPingInterval; min > 0 {
		now := time.Now()
		if c.resetPing.Swap(false) {
			c.strikes = 0
			c.lastPing = time.Time{}
		}
		if !c.lastPing.IsZero() && now.Sub(c.lastPing) < min {
			c.strikes++
			if c.strikes > maxPingStrikes {
				return h2wire.ConnErr(errCodeEnhanceYourCalm, "too_many_pings")
			}
		}
		c.lastPing = now
	}
	c.queueControl(h2wire.AppendPing(nil, true, [8]byte(p)))
	return nil
}

func (c *conn) onWindowUpdate(id, incr uint32) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if id == 0 {
		if incr == 0 {
			return h2wire.ConnErr(errCodeProtocol, "WINDOW_UPDATE of 0")
		}
		c.sendWindow += int64(incr)
		if c.sendWindow > 1<<31-1 {
			return h2wire.ConnErr(errCodeFlowControl, "connection window overflow")
		}
		c.cond.Broadcast()
		return nil
	}
	st := c.streams[id]
	if st == nil {
		switch {
		case id > c.maxStream.Load():
			return h2wire.ConnErr(errCodeProtocol, "WINDOW_UPDATE on an idle stream")
		case incr == 0:
			c.mu.Unlock()
			c.queueControl(h2wire.AppendRST(nil, id, errCodeProtocol))
			c.mu.Lock()
		}
		return nil
	}
	if incr == 0 {
		c.mu.Unlock()
		st.Reset(errCodeProtocol)
		c.mu.Lock()
		return nil
	}
	st.sendWindow += int64(incr)
	if st.sendWindow > 1<<31-1 {
		c.mu.Unlock()
		st.Reset(errCodeFlowControl)
		st.ended(errors.New("h2rpc: stream window overflow"))
		c.mu.Lock()
		return nil
	}
	c.cond.Broadcast()
	return nil
}

// onKeepalive runs on the keepalive timer.
func (c *conn) onKeepalive() {
	s := c.srv
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	if c.pingOut {
		if time.Since(c.pingSent) >= s.KeepaliveTimeout && !c.activity.Load() {
			c.mu.Unlock()
			s.Log.Debug("closing a connection that did not answer a keepalive ping", "remote", c.nc.RemoteAddr().String())
			c.kill(errors.New("h2rpc: keepalive ping not answered"))
			return
		}
		c.pingOut = false
	}
	if c.activity.Swap(false) {
		c.keepalive.Reset(s.KeepaliveTime)
		c.mu.Unlock()
		return
	}
	c.pingOut, c.pingSent = true, time.Now()
	c.keepalive.Reset(max(s.KeepaliveTimeout, time.Millisecond))
	c.mu.Unlock()
	var payload [8]byte
	c.queueControl(h2wire.AppendPing(nil, false, payload))
}

// onMaxAge runs when the connection has reached its maximum age.
func (c *conn) onMaxAge() {
	c.goAway(errCodeNo, "max_age", false)
	if g := c.srv.MaxConnectionAgeGrace; g > 0 {
		time.AfterFunc(g, func() { c.kill(errors.New("h2rpc: connection reached its maximum age")) })
	}
}

// goAway sends GOAWAY (once) naming the last stream this connection
// accepted; closeIdle also closes it once no stream is left.
func (c *conn) goAway(code http2.ErrCode, debug string, closeIdle bool) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	first := !c.goingAway
	c.goingAway = true
	if closeIdle {
		c.closeIdle = true
	}
	idle := c.closeIdle && len(c.streams) == 0
	c.mu.Unlock()
	if first || code != errCodeNo {
		c.queueControl(h2wire.AppendGoAway(nil, c.maxStream.Load(), code, debug))
	}
	if idle {
		c.kill(errServerClosed)
	}
}

// has reports whether st is one of the connection's streams still.
func (c *conn) has(st *Stream) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.streams[st.id] == st
}

// dropStream forgets a stream; a connection going away closes when its
// last stream is gone.
func (c *conn) dropStream(st *Stream) {
	c.mu.Lock()
	if c.streams[st.id] == st {
		delete(c.streams, st.id)
	}
	idle := c.closeIdle && len(c.streams) == 0 && !c.closed
	c.cond.Broadcast()
	c.mu.Unlock()
	if idle {
		c.flushControl()
		c.kill(errServerClosed)
	}
}

// queueControl queues control frames (written before the next write,
// or now).
func (c *conn) queueControl(b []byte) { c.w.Queue(b) }

// flushControl writes the queued control frames unless a write is under
// way (which writes them).
func (c *conn) flushControl() { c.w.Flush() }

// write writes b (whole frames) after the queued control frames.
func (c *conn) write(b []byte) error {
	if err := c.w.Write(b); err != nil {
		return err
	}
	// As gRPC-Go's server: a client's pings while responses come (its
	// bandwidth estimates) are not held against it.
	c.resetPing.Store(true)
	return nil
}

// grpcStatus is the HTTP status a request that is not gRPC is answered
// with, or 0.
func grpcStatus(f *h2wire.Fields) int {
	switch {
	case f.Path == "" || f.Method == "":
		return 400
	case f.Method != "POST":
		return 405
	case !isGRPCContentType(f.Get("content-type")):
		return 415
	}
	return 0
}

func isGRPCContentType(ct string) bool {
	if !strings.HasPrefix(ct, "application/grpc") {
		return false
	}
	rest := ct[len("application/grpc"):]
	return rest == "" || rest[0] == '+' || rest[0] == ';'
}

// encodeFields encodes header fields without HPACK's dynamic table
// (literals never indexed, names from the static table), so no
// connection keeps encoder state.
func encodeFields(fields [][2]string) []byte {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	for _, f := range fields {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1], Sensitive: true})
	}
	return buf.Bytes()
}

// Read buffers, by size class.
var bufPools [3]sync.Pool

func bufClass(n int) (int, int) {
	switch {
	case n <= 512:
		return 0, 512
	case n <= 4<<10:
		return 1, 4 << 10
	}
	return 2, maxFrameSize
}

func getBuf(n int) *[]byte {
	i, size := bufClass(n)
	if b, ok := bufPools[i].Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, size)
	return &b
}

func putBuf(b *[]byte) {
	i, _ := bufClass(cap(*b))
	bufPools[i].Put(b)
}

func peerFrom(ctx context.Context) (*peer.Peer, bool) { return peer.FromContext(ctx) }
