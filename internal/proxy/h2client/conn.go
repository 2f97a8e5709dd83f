package h2client

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"weft.dev/weft/internal/h2wire"
)

// Our side's settings.
const (
	// streamWindow is each stream's receive window: how much of a
	// response body may wait unread. The connection's window is larger
	// than any number of streams can fill (credit is given back as DATA
	// arrives), so one slow reader never stalls the other streams.
	streamWindow = 1 << 20
	connWindow   = 1 << 30
	// maxFrame is the largest frame we accept (the protocol's default):
	// the reader's buffer holds a whole one.
	maxFrame = 16 << 10
	// maxHeaderList bounds a response's header block (HPACK's sizes), as
	// SETTINGS_MAX_HEADER_LIST_SIZE announces.
	maxHeaderList = 1 << 20
	// Until the peer's SETTINGS say otherwise, a connection carries at
	// most initialMaxStreams streams (or the limit the endpoint's last
	// SETTINGS set: streams opened past a limit the client has
	// acknowledged are a PROTOCOL_ERROR, not a refusal); a peer whose
	// SETTINGS set no limit gets at most defaultMaxStreams.
	initialMaxStreams = 100
	defaultMaxStreams = 1000
	// maxControl bounds the control frames queued for a peer that does
	// not read them.
	maxControl = 1 << 20
)

var (
	errConnClosed  = errors.New("http2: upstream connection closed")
	errPingTimeout = errors.New("http2: upstream connection did not answer a PING in time")
	errIdle        = errors.New("http2: upstream connection idle")
)

// preface is what a connection starts with: the client preface, our
// SETTINGS and the connection window raised to connWindow.
var preface = func() []byte {
	b := []byte(h2wire.Preface)
	b = h2wire.AppendSettings(b, []http2.Setting{
		{ID: http2.SettingEnablePush, Val: 0},
		{ID: http2.SettingInitialWindowSize, Val: streamWindow},
		{ID: http2.SettingMaxHeaderListSize, Val: maxHeaderList},
	})
	return h2wire.AppendWindowUpdate(b, 0, connWindow-65535)
}()

// conn is one connection to the endpoint. Its reader goroutine
// (readLoop) owns the read side; mu guards the streams, the windows and
// the connection's state; hmu keeps stream IDs in the order their
// HEADERS are written.
type conn struct {
	client *Client
	nc     net.Conn
	w      *h2wire.Writer

	// The reader's own.
	br      *bufio.Reader
	hdr     [9]byte
	hdec    *hpack.Decoder
	fields  []hpack.HeaderField
	hsize   int
	htoo    bool   // the block is over maxHeaderList
	inBlock bool   // a header block awaits CONTINUATION
	hstream uint32 // its stream
	hend    bool   // its HEADERS frame ended the stream
	canon   h2wire.Canon
	frames  atomic.Uint64 // frames read: the ping clock's sign of life
	// woken are the streams with news (a response, data, an end) whose
	// waiters are signalled once no whole frame is left in br: a
	// response's DATA and the trailers behind it in the same read wake
	// its reader once, which then sees the body's end with its last
	// bytes (and the proxy writes them downstream together).
	woken []*stream

	hmu sync.Mutex

	mu         sync.Mutex
	cond       sync.Cond // send windows grew, a stream ended, the connection closed
	streams    map[uint32]*stream
	nextID     uint32
	reserved   int // streams reserved by requests or open
	maxStreams int
	settled    bool  // the peer's first SETTINGS arrived
	sendFrame  int   // the largest DATA payload we send
	initWindow int32 // the peer's SETTINGS_INITIAL_WINDOW_SIZE
	sendWindow int64 // the connection's send window
	recvLeft   int64 // the connection's receive window
	recvOwed   int64 // received, not yet given back
	goAway     bool  // the peer sent GOAWAY: no new streams
	closing    bool  // Shutdown: close once idle
	closed     bool
	idleSince  time.Time
	idleTimer  *time.Timer
	pingTimer  *time.Timer
	pingOut    bool   // a PING awaits its answer
	pingMark   uint64 // frames read when the clock last looked
}

// newConn starts the connection nc (closing: it closes once idle).
func newConn(c *Client, nc net.Conn, closing bool) *conn {
	cc := &conn{
		client:     c,
		nc:         nc,
		br:         bufio.NewReaderSize(nc, maxFrame+9),
		streams:    map[uint32]*stream{},
		nextID:     1,
		maxStreams: c.initialStreams(),
		sendFrame:  16 << 10,
		initWindow: 65535,
		sendWindow: 65535,
		recvLeft:   connWindow,
		idleSince:  time.Now(),
		closing:    closing,
	}
	cc.cond.L = &cc.mu
	cc.w = h2wire.NewWriter(nc, maxControl, func(err error) { go cc.close(err) })
	cc.hdec = hpack.NewDecoder(4096, cc.addField)
	cc.hdec.SetMaxStringLength(maxHeaderList)
	cc.w.Queue(preface)
	if t := c.cfg.IdleTimeout; t > 0 {
		cc.idleTimer = time.AfterFunc(t, cc.idleCheck)
	}
	if t := c.cfg.PingInterval; t > 0 {
		cc.pingTimer = time.AfterFunc(t, cc.pingCheck)
	}
	return cc
}

// reserve takes a stream of the connection for a request, if it has
// room for one.
func (cc *conn) reserve() bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.closed || cc.goAway || cc.reserved >= cc.maxStreams || cc.nextID >= 1<<31-1 {
		return false
	}
	cc.reserved++
	return true
}

// unreserveLocked gives back a stream reserved or ended; a connection
// left without streams starts its idle clock, or closes when it is
// going away.
func (cc *conn) unreserveLocked() (closeNow bool) {
	cc.reserved--
	if cc.reserved > 0 {
		return false
	}
	cc.idleSince = time.Now()
	return cc.goAway || cc.closing
}

// idleCheck closes the connection once it has been idle for the idle
// timeout.
func (cc *conn) idleCheck() {
	t := cc.client.cfg.IdleTimeout
	cc.mu.Lock()
	if cc.closed {
		cc.mu.Unlock()
		return
	}
	idle := time.Since(cc.idleSince)
	if cc.reserved == 0 && idle >= t {
		cc.mu.Unlock()
		cc.close(errIdle)
		return
	}
	next := t
	if cc.reserved == 0 {
		next = t - idle
	}
	cc.idleTimer.Reset(next)
	cc.mu.Unlock()
}

// pingCheck sends a PING when no frame arrived for the ping interval,
// and closes the connection when nothing arrived for the ping timeout
// after it.
func (cc *conn) pingCheck() {
	cfg := cc.client.cfg
	n := cc.frames.Load()
	cc.mu.Lock()
	if cc.closed {
		cc.mu.Unlock()
		return
	}
	var ping []byte
	switch {
	case n != cc.pingMark: // alive
		cc.pingMark, cc.pingOut = n, false
		cc.pingTimer.Reset(cfg.PingInterval)
	case cc.pingOut:
		go cc.close(errPingTimeout)
	default:
		cc.pingOut = true
		var data [8]byte
		binary.BigEndian.PutUint64(data[:], n)
		ping = h2wire.AppendPing(nil, false, data)
		timeout := cfg.PingTimeout
		if timeout <= 0 {
			timeout = cfg.PingInterval
		}
		cc.pingTimer.Reset(timeout)
	}
	cc.mu.Unlock()
	cc.queue(ping) // not under mu: queueing may write to the socket
}

// closeIfIdle closes the connection if it carries no stream.
func (cc *conn) closeIfIdle() {
	cc.mu.Lock()
	idle := cc.reserved == 0
	cc.mu.Unlock()
	if idle {
		cc.close(errIdle)
	}
}

// shutdown closes the connection now if it is idle, else when its last
// stream ends.
func (cc *conn) shutdown() {
	cc.mu.Lock()
	cc.closing = true
	idle := cc.reserved == 0
	cc.mu.Unlock()
	if idle {
		cc.close(errIdle)
	}
}

// close ends the connection: streams still waiting for their response
// or reading their body fail with err (the ones whose response has
// ended keep their body). A ConnError is told to the peer in a GOAWAY
// first.
func (cc *conn) close(err error) {
	cc.client.forget(cc) // first: a request failed by the close finds it gone
	cc.mu.Lock()
	if cc.closed {
		cc.mu.Unlock()
		return
	}
	cc.closed = true
	for _, s := range cc.streams {
		s.reset, s.done = true, true
		if !s.recvEnded && s.err == nil {
			s.err = fmt.Errorf("%w: %w", errConnClosed, err)
		}
		s.signal()
	}
	cc.streams = nil
	cc.cond.Broadcast()
	if cc.idleTimer != nil {
		cc.idleTimer.Stop()
	}
	if cc.pingTimer != nil {
		cc.pingTimer.Stop()
	}
	cc.mu.Unlock()
	var ce h2wire.ConnError
	if errors.As(err, &ce) {
		cc.nc.SetWriteDeadline(time.Now().Add(time.Second))
		_ = cc.w.Write(h2wire.AppendGoAway(nil, 0, ce.Code, ce.Msg))
	}
	cc.w.Close()
	cc.nc.Close()
}

// readLoop reads the connection until it ends.
func (cc *conn) readLoop() {
	err := cc.serve()
	cc.wakeAll()
	cc.close(err)
}

// serve reads and handles frames until the connection fails.
func (cc *conn) serve() error {
	for {
		if len(cc.woken) > 0 && !h2wire.FrameBuffered(cc.br) {
			cc.wakeAll()
		}
		fh, err := h2wire.ReadFrameHeader(cc.br, &cc.hdr)
		if err != nil {
			return err
		}
		if fh.Length > maxFrame {
			return h2wire.ConnErr(http2.ErrCodeFrameSize, "frame larger than SETTINGS_MAX_FRAME_SIZE")
		}
		p, err := cc.br.Peek(fh.Length)
		if err != nil {
			return err
		}
		cc.frames.Add(1)
		if cc.inBlock && (fh.Type != http2.FrameContinuation || fh.StreamID != cc.hstream) {
			return h2wire.ConnErr(http2.ErrCodeProtocol, "header block interrupted")
		}
		switch fh.Type {
		case http2.FrameData:
			err = cc.onData(fh, p)
		case http2.FrameHeaders:
			err = cc.onHeaders(fh, p)
		case http2.FrameContinuation:
			if !cc.inBlock {
				err = h2wire.ConnErr(http2.ErrCodeProtocol, "CONTINUATION outside a header block")
			} else {
				err = cc.onFragment(fh.Flags.Has(http2.FlagContinuationEndHeaders), p)
			}
		case http2.FrameRSTStream:
			err = cc.onRST(fh, p)
		case http2.FrameSettings:
			err = cc.onSettings(fh, p)
		case http2.FramePing:
			err = cc.onPing(fh, p)
		case http2.FrameGoAway:
			err = cc.onGoAway(fh, p)
		case http2.FrameWindowUpdate:
			err = cc.onWindowUpdate(fh, p)
		case http2.FramePushPromise:
			err = h2wire.ConnErr(http2.ErrCodeProtocol, "PUSH_PROMISE with push disabled")
		}
		// PRIORITY and unknown frame types are ignored.
		cc.br.Discard(fh.Length)
		if err != nil {
			return err
		}
	}
}

// wake signals s's waiter once the frames already read are handled.
func (cc *conn) wake(s *stream) {
	for _, w := range cc.woken {
		if w == s {
			return
		}
	}
	if len(cc.woken) == maxWoken {
		cc.wakeAll()
	}
	cc.woken = append(cc.woken, s)
}

// maxWoken bounds the streams whose signal waits for the frames behind.
const maxWoken = 16

// wakeAll signals the waiters wake deferred.
func (cc *conn) wakeAll() {
	for i, s := range cc.woken {
		s.signal()
		cc.woken[i] = nil
	}
	cc.woken = cc.woken[:0]
}

// openedLocked reports whether id is a stream this connection has opened (an
// ID it has used), as opposed to an idle one.
func (cc *conn) openedLocked(id uint32) bool { return id%2 == 1 && id < cc.nextID }

func (cc *conn) onData(fh h2wire.FrameHeader, p []byte) error {
	if fh.StreamID == 0 {
		return h2wire.ConnErr(http2.ErrCodeProtocol, "DATA on stream 0")
	}
	data, ok := h2wire.Unpad(fh.Flags, p)
	if !ok {
		return h2wire.ConnErr(http2.ErrCodeProtocol, "DATA padding too long")
	}
	n := int64(fh.Length)
	var give []byte
	cc.mu.Lock()
	if cc.recvLeft -= n; cc.recvLeft < 0 {
		cc.mu.Unlock()
		return h2wire.ConnErr(http2.ErrCodeFlowControl, "DATA beyond the connection window")
	}
	// The connection's credit comes back on arrival: streams' windows
	// bound what waits unread.
	if cc.recvOwed += n; cc.recvOwed >= connWindow/2 {
		give = h2wire.AppendWindowUpdate(nil, 0, uint32(cc.recvOwed))
		cc.recvLeft += cc.recvOwed
		cc.recvOwed = 0
	}
	s := cc.streams[fh.StreamID]
	if s == nil {
		opened := cc.openedLocked(fh.StreamID)
		cc.mu.Unlock()
		cc.queue(give)
		if !opened {
			return h2wire.ConnErr(http2.ErrCodeProtocol, "DATA on an idle stream")
		}
		return nil // a stream reset or ended: dropped
	}
	var code http2.ErrCode
	var why string
	end := fh.Flags.Has(http2.FlagDataEndStream)
	switch {
	case !s.headSeen:
		code, why = http2.ErrCodeProtocol, "DATA before the response headers"
	case s.recvEnded:
		code, why = http2.ErrCodeStreamClosed, "DATA after the end of the stream"
	case int64(s.recvLeft) < n:
		code, why = http2.ErrCodeFlowControl, "DATA beyond the stream window"
	case s.clLeft >= 0 && (int64(len(data)) > s.clLeft || end && int64(len(data)) != s.clLeft):
		code, why = http2.ErrCodeProtocol, "response body length differs from its content-length"
	}
	if code != 0 {
		cc.mu.Unlock()
		cc.queue(give)
		cc.resetStream(s, code, fmt.Errorf("http2: %s", why))
		return nil
	}
	s.recvLeft -= int32(n)
	s.owed += int32(n) - int32(len(data)) // padding comes back with the next read's credit
	if s.clLeft >= 0 {
		s.clLeft -= int64(len(data))
	}
	if s.bufp == nil && len(data) > 0 {
		s.bufp = h2wire.DataBuf()
		s.buf = *s.bufp
	}
	s.buf = append(s.buf, data...)
	if end {
		s.recvEnded = true
		s.endedLocked()
	}
	cc.wake(s)
	cc.mu.Unlock()
	cc.queue(give)
	return nil
}

// queue queues control frames b (none when empty).
func (cc *conn) queue(b []byte) {
	if len(b) > 0 {
		cc.w.Queue(b)
	}
}

func (cc *conn) onHeaders(fh h2wire.FrameHeader, p []byte) error {
	if fh.StreamID == 0 {
		return h2wire.ConnErr(http2.ErrCodeProtocol, "HEADERS on stream 0")
	}
	p, ok := h2wire.Unpad(fh.Flags, p)
	if !ok {
		return h2wire.ConnErr(http2.ErrCodeProtocol, "HEADERS padding too long")
	}
	if fh.Flags.Has(http2.FlagHeadersPriority) {
		if len(p) < 5 {
			return h2wire.ConnErr(http2.ErrCodeFrameSize, "HEADERS too short for its priority")
		}
		p = p[5:]
	}
	cc.hstream, cc.hend, cc.inBlock = fh.StreamID, fh.Flags.Has(http2.FlagHeadersEndStream), true
	cc.fields, cc.hsize, cc.htoo = cc.fields[:0], 0, false
	return cc.onFragment(fh.Flags.Has(http2.FlagHeadersEndHeaders), p)
}

// addField is the HPACK decoder's emit function.
func (cc *conn) addField(hf hpack.HeaderField) {
	if cc.hsize += int(hf.Size()); cc.hsize > maxHeaderList {
		cc.htoo = true
		return
	}
	cc.fields = append(cc.fields, hf)
}

// onFragment decodes a piece of a header block; the last one (end)
// hands the block to its stream. Every block is decoded, a stream's
// that is gone too: the decoder's table must follow the peer's.
func (cc *conn) onFragment(end bool, p []byte) error {
	if _, err := cc.hdec.Write(p); err != nil {
		return h2wire.ConnErr(http2.ErrCodeCompression, err.Error())
	}
	if !end {
		return nil
	}
	cc.inBlock = false
	if err := cc.hdec.Close(); err != nil {
		return h2wire.ConnErr(http2.ErrCodeCompression, err.Error())
	}
	id := cc.hstream
	cc.mu.Lock()
	s := cc.streams[id]
	opened := cc.openedLocked(id)
	cc.mu.Unlock()
	if s == nil {
		if !opened {
			return h2wire.ConnErr(http2.ErrCodeProtocol, "HEADERS on an idle stream")
		}
		return nil
	}
	if cc.htoo {
		cc.resetStream(s, http2.ErrCodeProtocol, errors.New("http2: response header list too large"))
		return nil
	}
	if s.headSeen {
		return cc.onTrailers(s)
	}
	return cc.onResponse(s)
}

// onRST ends a stream the peer reset.
func (cc *conn) onRST(fh h2wire.FrameHeader, p []byte) error {
	if fh.Length != 4 {
		return h2wire.ConnErr(http2.ErrCodeFrameSize, "RST_STREAM of a bad length")
	}
	if fh.StreamID == 0 {
		return h2wire.ConnErr(http2.ErrCodeProtocol, "RST_STREAM on stream 0")
	}
	code := http2.ErrCode(binary.BigEndian.Uint32(p))
	cc.mu.Lock()
	defer cc.mu.Unlock()
	s := cc.streams[fh.StreamID]
	if s == nil {
		if !cc.openedLocked(fh.StreamID) {
			return h2wire.ConnErr(http2.ErrCodeProtocol, "RST_STREAM on an idle stream")
		}
		return nil
	}
	// A complete response followed by NO_ERROR only stops the request
	// body (RFC 9113 §8.1); otherwise the stream failed.
	if !(code == http2.ErrCodeNo && s.recvEnded) && s.err == nil {
		s.err = http2.StreamError{StreamID: s.id, Code: code}
	}
	s.reset = true
	cc.finishLocked(s)
	return nil
}

func (cc *conn) onSettings(fh h2wire.FrameHeader, p []byte) error {
	if fh.StreamID != 0 {
		return h2wire.ConnErr(http2.ErrCodeProtocol, "SETTINGS on a stream")
	}
	if fh.Flags.Has(http2.FlagSettingsAck) {
		if fh.Length != 0 {
			return h2wire.ConnErr(http2.ErrCodeFrameSize, "SETTINGS ACK with a payload")
		}
		return nil
	}
	// The acknowledgement is queued first: it must reach the peer before
	// anything written under the new settings.
	cc.w.Queue(h2wire.AppendSettingsAck(nil))
	cc.mu.Lock()
	defer cc.mu.Unlock()
	sawMax := false
	var ferr error
	err := h2wire.ParseSettings(p, func(id http2.SettingID, v uint32) {
		switch id {
		case http2.SettingMaxConcurrentStreams:
			cc.maxStreams, sawMax = int(min(v, defaultMaxStreams)), true
		case http2.SettingInitialWindowSize:
			delta := int32(v) - cc.initWindow
			cc.initWindow = int32(v)
			for _, s := range cc.streams {
				if w := int64(s.sendWindow) + int64(delta); w > 1<<31-1 {
					ferr = h2wire.ConnErr(http2.ErrCodeFlowControl, "SETTINGS_INITIAL_WINDOW_SIZE overflows a stream window")
				} else {
					s.sendWindow = int32(w)
				}
			}
		case http2.SettingMaxFrameSize:
			cc.sendFrame = int(min(v, maxFrame))
		}
	})
	if err != nil {
		return err
	}
	if !sawMax && !cc.settled {
		cc.maxStreams = defaultMaxStreams
	}
	if sawMax || !cc.settled {
		cc.client.learnedStreams.Store(int32(cc.maxStreams))
	}
	cc.settled = true
	cc.cond.Broadcast()
	return ferr
}

func (cc *conn) onPing(fh h2wire.FrameHeader, p []byte) error {
	if fh.Length != 8 {
		return h2wire.ConnErr(http2.ErrCodeFrameSize, "PING of a bad length")
	}
	if fh.StreamID != 0 {
		return h2wire.ConnErr(http2.ErrCodeProtocol, "PING on a stream")
	}
	if !fh.Flags.Has(http2.FlagPingAck) {
		var fb [9 + 8]byte
		cc.w.Queue(h2wire.AppendPing(fb[:0], true, [8]byte(p)))
	}
	return nil // an answer counts as any frame for the ping clock
}

// onGoAway stops new streams on the connection; the streams above the
// peer's last one were not processed and fail with errUnprocessed (sent
// again elsewhere). The connection closes when its last stream ends.
func (cc *conn) onGoAway(fh h2wire.FrameHeader, p []byte) error {
	if fh.Length < 8 {
		return h2wire.ConnErr(http2.ErrCodeFrameSize, "GOAWAY too short")
	}
	if fh.StreamID != 0 {
		return h2wire.ConnErr(http2.ErrCodeProtocol, "GOAWAY on a stream")
	}
	last := binary.BigEndian.Uint32(p) & (1<<31 - 1)
	cc.mu.Lock()
	cc.goAway = true
	for id, s := range cc.streams {
		if id > last {
			if s.err == nil {
				s.err = errUnprocessed
			}
			s.reset = true // nothing more is sent on it
			cc.finishLocked(s)
		}
	}
	closeNow := cc.reserved == 0
	cc.mu.Unlock()
	if closeNow {
		return errConnClosed
	}
	return nil
}

func (cc *conn) onWindowUpdate(fh h2wire.FrameHeader, p []byte) error {
	if fh.Length != 4 {
		return h2wire.ConnErr(http2.ErrCodeFrameSize, "WINDOW_UPDATE of a bad length")
	}
	incr := binary.BigEndian.Uint32(p) & (1<<31 - 1)
	cc.mu.Lock()
	if fh.StreamID == 0 {
		if incr == 0 {
			cc.mu.Unlock()
			return h2wire.ConnErr(http2.ErrCodeProtocol, "WINDOW_UPDATE of 0")
		}
		if cc.sendWindow += int64(incr); cc.sendWindow > 1<<31-1 {
			cc.mu.Unlock()
			return h2wire.ConnErr(http2.ErrCodeFlowControl, "connection window over 2^31-1")
		}
		cc.cond.Broadcast()
		cc.mu.Unlock()
		return nil
	}
	s := cc.streams[fh.StreamID]
	if s == nil {
		opened := cc.openedLocked(fh.StreamID)
		cc.mu.Unlock()
		if !opened {
			return h2wire.ConnErr(http2.ErrCodeProtocol, "WINDOW_UPDATE on an idle stream")
		}
		return nil
	}
	w := int64(s.sendWindow) + int64(incr)
	cc.cond.Broadcast()
	if incr != 0 && w <= 1<<31-1 {
		s.sendWindow = int32(w)
		cc.mu.Unlock()
		return nil
	}
	cc.mu.Unlock()
	if incr == 0 {
		cc.resetStream(s, http2.ErrCodeProtocol, errors.New("http2: WINDOW_UPDATE of 0"))
	} else {
		cc.resetStream(s, http2.ErrCodeFlowControl, errors.New("http2: stream window over 2^31-1"))
	}
	return nil
}

// resetStream ends s with err and tells the peer with a RST_STREAM of
// code (CANCEL when we gave up, else the error the peer made).
func (cc *conn) resetStream(s *stream, code http2.ErrCode, err error) {
	cc.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	open := s.abortLocked()
	cc.mu.Unlock()
	if open {
		s.writeRST(code)
	}
}

// abortLocked ends s from this side: nothing more is sent on it and it
// leaves the connection. It reports whether s was still open, when the
// caller sends RST_STREAM (after unlocking).
func (s *stream) abortLocked() bool {
	if s.done {
		return false
	}
	s.reset = true
	s.cc.finishLocked(s)
	return true
}

// finishLocked removes s, whose both sides have ended or which was
// reset, from the connection.
func (cc *conn) finishLocked(s *stream) {
	s.signal()
	if s.done {
		return
	}
	s.done = true
	cc.cond.Broadcast()
	if cc.streams != nil {
		delete(cc.streams, s.id)
	}
	if cc.unreserveLocked() && !cc.closed {
		go cc.close(errIdle)
	}
}
