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

const clientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

var (
	errServerClosed = errors.New("h2rpc: server closed the connection")
	errConnClosed   = errors.New("h2rpc: connection closed")
	// ErrStreamDone is what Send and Finish return on a stream that is
	// over (finished, reset, or its connection lost).
	ErrStreamDone = errors.New("h2rpc: stream is over")
)

// connError is an HTTP/2 connection error: the connection is sent
// GOAWAY with its code and closed.
type connError struct {
	code http2.ErrCode
	msg  string
}

func (e connError) Error() string { return fmt.Sprintf("http2 %v: %s", e.code, e.msg) }

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
	fields    headerBlock
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

	wmu  sync.Mutex
	werr error // the first write error; the connection is over

	mu         sync.Mutex
	cond       *sync.Cond // send windows grew, or a stream or the connection ended
	streams    map[uint32]*Stream
	sendWindow int64
	peerWindow int32 // SETTINGS_INITIAL_WINDOW_SIZE of the peer
	peerFrame  int   // SETTINGS_MAX_FRAME_SIZE of the peer
	control    []byte
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
	c.hdec = hpack.NewDecoder(4096, c.fields.add)
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
	var pre [len(clientPreface)]byte
	if _, err := io.ReadFull(c.nc, pre[:]); err != nil {
		return err
	}
	if string(pre[:]) != clientPreface {
		return connError{errCodeProtocol, "not an HTTP/2 client preface"}
	}
	_ = c.nc.SetReadDeadline(time.Time{})

	var b []byte
	b = appendSettings(b, []http2.Setting{
		{ID: http2.SettingMaxConcurrentStreams, Val: maxConcurrentStreams},
		{ID: http2.SettingInitialWindowSize, Val: recvWindow},
		{ID: http2.SettingMaxHeaderListSize, Val: maxHeaderListSize},
	})
	b = appendWindowUpdate(b, 0, recvWindow-initialWindow)
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
	var ce connError
	if errors.As(err, &ce) {
		c.goAway(ce.code, ce.msg, false)
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
	if _, err := io.ReadFull(c.nc, c.hdr[:]); err != nil {
		return err
	}
	c.activity.Store(true)
	n := int(c.hdr[0])<<16 | int(c.hdr[1])<<8 | int(c.hdr[2])
	typ := http2.FrameType(c.hdr[3])
	flags := http2.Flags(c.hdr[4])
	id := binary.BigEndian.Uint32(c.hdr[5:]) & (1<<31 - 1)
	if n > maxFrameSize {
		return connError{errCodeFrameSize, fmt.Sprintf("frame of %d bytes", n)}
	}
	if c.hblock != nil && (typ != http2.FrameContinuation || id != c.hstream) {
		return connError{errCodeProtocol, "header block interrupted"}
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
			return connError{errCodeProtocol, "CONTINUATION without HEADERS"}
		}
		if len(c.hblock)+len(p) > maxHeaderListSize {
			return connError{errCodeProtocol, "header block too large"}
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
			return connError{errCodeProtocol, "bad PRIORITY"}
		}
		if binary.BigEndian.Uint32(p)&(1<<31-1) == id {
			c.queueControl(appendRST(nil, id, errCodeProtocol)) // a stream may not depend on itself
		}
		return nil
	case http2.FrameRSTStream:
		if id == 0 || n != 4 {
			return connError{errCodeProtocol, "bad RST_STREAM"}
		}
		return c.onReset(id, http2.ErrCode(binary.BigEndian.Uint32(p)))
	case http2.FrameSettings:
		return c.onSettings(id, flags, p)
	case http2.FramePushPromise:
		return connError{errCodeProtocol, "PUSH_PROMISE from a client"}
	case http2.FramePing:
		if id != 0 || n != 8 {
			return connError{errCodeProtocol, "bad PING"}
		}
		return c.onPing(flags, p)
	case http2.FrameGoAway:
		if id != 0 || n < 8 {
			return connError{errCodeProtocol, "bad GOAWAY"}
		}
		return nil // the client stops opening streams; the open ones go on
	case http2.FrameWindowUpdate:
		if n != 4 {
			return connError{errCodeFrameSize, "bad WINDOW_UPDATE"}
		}
		return c.onWindowUpdate(id, binary.BigEndian.Uint32(p)&(1<<31-1))
	}
	return nil // unknown frame types are ignored
}

// unpad strips a frame's padding.
func unpad(flags http2.Flags, p []byte) ([]byte, error) {
	if !flags.Has(http2.FlagDataPadded) { // the same bit for HEADERS
		return p, nil
	}
	if len(p) == 0 || int(p[0]) >= len(p) {
		return nil, connError{errCodeProtocol, "bad padding"}
	}
	return p[1 : len(p)-int(p[0])], nil
}

func (c *conn) onData(id uint32, flags http2.Flags, p []byte) error {
	if id == 0 {
		return connError{errCodeProtocol, "DATA on stream 0"}
	}
	n := int32(len(p))
	if n > c.recvLeft {
		return connError{errCodeFlowControl, "connection receive window exceeded"}
	}
	c.recvLeft -= n
	c.recvOwed += n
	if c.recvOwed >= recvWindow/4 {
		c.queueControl(appendWindowUpdate(nil, 0, uint32(c.recvOwed)))
		c.recvLeft += c.recvOwed
		c.recvOwed = 0
	}
	data, err := unpad(flags, p)
	if err != nil {
		return err
	}
	c.mu.Lock()
	st := c.streams[id]
	c.mu.Unlock()
	if st == nil || st.remoteDone.Load() {
		if id > c.maxStream.Load() {
			return connError{errCodeProtocol, "DATA on an idle stream"}
		}
		c.queueControl(appendRST(nil, id, errCodeStreamClosed))
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
		return connError{errCodeProtocol, "HEADERS on stream 0"}
	}
	block, err := unpad(flags, p)
	if err != nil {
		return err
	}
	selfDependent := false
	if flags.Has(http2.FlagHeadersPriority) {
		if len(block) < 5 {
			return connError{errCodeProtocol, "bad HEADERS priority"}
		}
		selfDependent = binary.BigEndian.Uint32(block)&(1<<31-1) == id
		block = block[5:]
	}
	if selfDependent {
		if id > c.maxStream.Load() {
			c.maxStream.Store(id)
		}
		c.queueControl(appendRST(nil, id, errCodeProtocol))
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
	c.fields.reset()
	if _, err := c.hdec.Write(block); err != nil {
		return connError{errCodeCompression, err.Error()}
	}
	if err := c.hdec.Close(); err != nil {
		return connError{errCodeCompression, err.Error()}
	}
	c.mu.Lock()
	st := c.streams[id]
	c.mu.Unlock()
	if st != nil { // trailers: only END_STREAM matters
		if st.remoteDone.Load() {
			// Frames after the client's END_STREAM (RFC 9113 §5.1).
			return connError{errCodeStreamClosed, fmt.Sprintf("HEADERS on stream %d after its END_STREAM", id)}
		}
		if !end {
			st.Reset(errCodeProtocol)
			st.ended(errors.New("h2rpc: HEADERS in the middle of a stream"))
			return nil
		}
		st.onData(nil, 0, true)
		return nil
	}
	if f := &c.fields; f.malformed == "" && (f.method == "" || f.scheme == "" || f.path == "") {
		f.malformed = "a request without :method, :scheme or :path"
	}
	switch {
	case id%2 == 0:
		return connError{errCodeProtocol, fmt.Sprintf("HEADERS on stream %d, not a client's", id)}
	case id <= c.maxStream.Load():
		return connError{errCodeStreamClosed, fmt.Sprintf("HEADERS on stream %d, which is closed", id)}
	}
	c.maxStream.Store(id)
	f := &c.fields
	if f.tooLarge {
		c.queueControl(appendRST(nil, id, errCodeRefusedStream))
		return nil
	}
	if f.malformed != "" {
		// A malformed request (RFC 9113 §8.1.1): a stream error.
		c.srv.Log.Debug("malformed HTTP/2 request", "remote", c.nc.RemoteAddr().String(), "why", f.malformed)
		c.queueControl(appendRST(nil, id, errCodeProtocol))
		return nil
	}
	c.mu.Lock()
	refuse := c.goingAway || c.closed || len(c.streams) >= maxConcurrentStreams
	c.mu.Unlock()
	if refuse {
		c.queueControl(appendRST(nil, id, errCodeRefusedStream))
		return nil
	}
	if code := f.check(); code != 0 {
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
		go c.srv.serveFallback(st, f.request(c, st))
	}
	if end {
		st.onData(nil, 0, true)
	}
	return nil
}

func (c *conn) onReset(id uint32, code http2.ErrCode) error {
	if id > c.maxStream.Load() {
		return connError{errCodeProtocol, "RST_STREAM on an idle stream"}
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
		return connError{errCodeProtocol, "SETTINGS on a stream"}
	}
	if flags.Has(http2.FlagSettingsAck) {
		if len(p) != 0 {
			return connError{errCodeFrameSize, "SETTINGS ack with a payload"}
		}
		return nil
	}
	if len(p)%6 != 0 {
		return connError{errCodeFrameSize, "bad SETTINGS"}
	}
	c.mu.Lock()
	for ; len(p) > 0; p = p[6:] {
		sid := http2.SettingID(binary.BigEndian.Uint16(p))
		v := binary.BigEndian.Uint32(p[2:])
		switch sid {
		case http2.SettingInitialWindowSize:
			if v > 1<<31-1 {
				c.mu.Unlock()
				return connError{errCodeFlowControl, "initial window too large"}
			}
			delta := int64(v) - int64(c.peerWindow)
			c.peerWindow = int32(v)
			for _, st := range c.streams {
				st.sendWindow += delta
			}
		case http2.SettingEnablePush:
			if v > 1 {
				c.mu.Unlock()
				return connError{errCodeProtocol, "bad SETTINGS_ENABLE_PUSH"}
			}
		case http2.SettingMaxFrameSize:
			if v < 16<<10 || v > 1<<24-1 {
				c.mu.Unlock()
				return connError{errCodeProtocol, "bad SETTINGS_MAX_FRAME_SIZE"}
			}
			c.peerFrame = int(v)
		}
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	c.queueControl(appendFrameHeader(nil, 0, http2.FrameSettings, http2.FlagSettingsAck, 0))
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
				return connError{errCodeEnhanceYourCalm, "too_many_pings"}
			}
		}
		c.lastPing = now
	}
	b := appendFrameHeader(nil, 8, http2.FramePing, http2.FlagPingAck, 0)
	c.queueControl(append(b, p...))
	return nil
}

func (c *conn) onWindowUpdate(id, incr uint32) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if id == 0 {
		if incr == 0 {
			return connError{errCodeProtocol, "WINDOW_UPDATE of 0"}
		}
		c.sendWindow += int64(incr)
		if c.sendWindow > 1<<31-1 {
			return connError{errCodeFlowControl, "connection window overflow"}
		}
		c.cond.Broadcast()
		return nil
	}
	st := c.streams[id]
	if st == nil {
		switch {
		case id > c.maxStream.Load():
			return connError{errCodeProtocol, "WINDOW_UPDATE on an idle stream"}
		case incr == 0:
			c.mu.Unlock()
			c.queueControl(appendRST(nil, id, errCodeProtocol))
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
	c.queueControl(append(appendFrameHeader(nil, 8, http2.FramePing, 0, 0), payload[:]...))
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
		b := appendFrameHeader(nil, 8+len(debug), http2.FrameGoAway, 0, 0)
		b = binary.BigEndian.AppendUint32(b, c.maxStream.Load())
		b = binary.BigEndian.AppendUint32(b, uint32(code))
		c.queueControl(append(b, debug...))
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

// queueControl adds control frames to be written before the next
// write, and writes them now unless a write is under way (which writes
// them when it ends).
func (c *conn) queueControl(b []byte) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.control = append(c.control, b...)
	over := len(c.control) > maxControlPending
	c.mu.Unlock()
	if over {
		c.kill(errors.New("h2rpc: the peer does not read what it is sent"))
		return
	}
	c.flushControl()
}

// flushControl writes the pending control frames unless another write
// holds the connection (it flushes them after its own).
func (c *conn) flushControl() {
	for {
		if !c.wmu.TryLock() {
			return
		}
		c.mu.Lock()
		b := c.control
		c.control = nil
		c.mu.Unlock()
		if len(b) > 0 && c.werr == nil {
			if _, err := c.nc.Write(b); err != nil {
				c.werr = err
			}
		}
		c.wmu.Unlock()
		c.mu.Lock()
		more := len(c.control) > 0 && !c.closed
		c.mu.Unlock()
		if !more {
			return
		}
	}
}

// write writes b (whole frames) after the pending control frames.
func (c *conn) write(b []byte) error {
	c.wmu.Lock()
	err := c.werr
	if err == nil {
		c.mu.Lock()
		ctl := c.control
		c.control = nil
		c.mu.Unlock()
		if len(ctl) > 0 {
			_, err = c.nc.Write(ctl)
		}
		if err == nil {
			_, err = c.nc.Write(b)
		}
		if err != nil {
			c.werr = err
		}
	}
	c.wmu.Unlock()
	if err != nil {
		c.kill(err)
		return err
	}
	// As gRPC-Go's server: a client's pings while responses come (its
	// bandwidth estimates) are not held against it.
	c.resetPing.Store(true)
	c.flushControl()
	return nil
}

// headerBlock collects a request's header fields.
type headerBlock struct {
	method, path, scheme, authority, contentType string
	regular                                      [][2]string
	size                                         int
	tooLarge                                     bool
	malformed                                    string // why the block is not a valid request
}

func (f *headerBlock) reset() { *f = headerBlock{} }

func (f *headerBlock) add(hf hpack.HeaderField) {
	f.size += int(hf.Size())
	if f.size > maxHeaderListSize {
		f.tooLarge = true
		return
	}
	if f.malformed != "" {
		return
	}
	if strings.HasPrefix(hf.Name, ":") {
		if len(f.regular) > 0 {
			f.malformed = "pseudo-header " + hf.Name + " after a regular one"
			return
		}
		var dst *string
		switch hf.Name {
		case ":method":
			dst = &f.method
		case ":path":
			dst = &f.path
			if hf.Value == "" {
				f.malformed = "empty :path"
				return
			}
		case ":scheme":
			dst = &f.scheme
		case ":authority":
			dst = &f.authority
		default:
			f.malformed = "pseudo-header " + hf.Name + " in a request"
			return
		}
		if *dst != "" {
			f.malformed = "pseudo-header " + hf.Name + " twice"
			return
		}
		*dst = hf.Value
		return
	}
	for i := 0; i < len(hf.Name); i++ {
		if c := hf.Name[i]; 'A' <= c && c <= 'Z' {
			f.malformed = "header name " + hf.Name + " not in lowercase"
			return
		}
	}
	switch hf.Name {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		f.malformed = "connection-specific header " + hf.Name
		return
	case "te":
		if hf.Value != "trailers" {
			f.malformed = "te other than trailers"
			return
		}
	case "content-type":
		f.contentType = hf.Value
	}
	f.regular = append(f.regular, [2]string{hf.Name, hf.Value})
}

// check returns the HTTP status a request that is not gRPC is answered
// with, or 0.
func (f *headerBlock) check() int {
	switch {
	case f.path == "" || f.method == "":
		return 400
	case f.method != "POST":
		return 405
	case !isGRPCContentType(f.contentType):
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

// Frame writing.

func appendFrameHeader(b []byte, n int, typ http2.FrameType, flags http2.Flags, id uint32) []byte {
	return append(b, byte(n>>16), byte(n>>8), byte(n), byte(typ), byte(flags),
		byte(id>>24), byte(id>>16), byte(id>>8), byte(id))
}

func appendSettings(b []byte, settings []http2.Setting) []byte {
	b = appendFrameHeader(b, 6*len(settings), http2.FrameSettings, 0, 0)
	for _, s := range settings {
		b = binary.BigEndian.AppendUint16(b, uint16(s.ID))
		b = binary.BigEndian.AppendUint32(b, s.Val)
	}
	return b
}

func appendWindowUpdate(b []byte, id, incr uint32) []byte {
	b = appendFrameHeader(b, 4, http2.FrameWindowUpdate, 0, id)
	return binary.BigEndian.AppendUint32(b, incr)
}

func appendRST(b []byte, id uint32, code http2.ErrCode) []byte {
	b = appendFrameHeader(b, 4, http2.FrameRSTStream, 0, id)
	return binary.BigEndian.AppendUint32(b, uint32(code))
}

// appendHeaders appends a header block in one HEADERS frame (the blocks
// this server writes are small).
func appendHeaders(b []byte, id uint32, endStream bool, block []byte) []byte {
	flags := http2.FlagHeadersEndHeaders
	if endStream {
		flags |= http2.FlagHeadersEndStream
	}
	b = appendFrameHeader(b, len(block), http2.FrameHeaders, flags, id)
	return append(b, block...)
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
