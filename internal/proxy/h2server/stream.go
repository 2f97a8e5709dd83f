package h2server

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"weft.dev/weft/internal/h2wire"
	"weft.dev/weft/internal/proxy/reqctx"
)

// errStreamDone is what writes return on a stream that is over (its
// response ended, it was reset, or its connection lost).
var errStreamDone = errors.New("h2server: stream is over")

// stream is one request: its body as the reader goroutine receives it,
// and its response as the handler writes it.
type stream struct {
	c    *conn
	id   uint32
	ctx  *reqctx.Context // ended by the stream's end or the connection's (cancelStreams)
	body reqBody
	w    responseWriter
	url  url.URL // the request's URL

	path       string        // the request's path, for StreamIdleTimeout's log line
	moved      atomic.Uint32 // bumped by whatever moves on the stream (StreamIdleTimeout)
	remoteDone atomic.Bool   // the client ended its side
	headersOut atomic.Bool   // the response's final header block was written
	recvLeft   atomic.Int32  // stream receive window left

	// Guarded by c.mu.
	sendWindow int64
	done       bool      // reset, or the response ended: nothing more is written
	rstSent    bool      // this side reset the stream
	peerReset  bool      // the client reset the stream
	wdeadline  time.Time // writes fail past it; zero: none
	wtimer     *time.Timer
	swept      bool   // the idle sweep has seen the stream (sweepIdle)
	lastMoved  uint32 // moved as the sweep saw it last
}

// newStream makes stream id from its request's header block; the reason
// when the block is not a request.
func (c *conn) newStream(id uint32, f *h2wire.Fields, end bool) (*stream, *http.Request, string) {
	st := &stream{c: c, id: id}
	st.ctx = reqctx.New(c.ctx)
	st.body.st = st
	st.body.declared = -1
	st.body.cond.L = &st.body.mu
	st.recvLeft.Store(streamWindow)
	c.mu.Lock()
	st.sendWindow = int64(c.peerWindow)
	var h http.Header
	if n := len(c.freeHeaders); n > 0 {
		h = c.freeHeaders[n-1]
		c.freeHeaders[n-1] = nil
		c.freeHeaders = c.freeHeaders[:n-1]
	}
	c.mu.Unlock()
	r, why := c.request(st, f, end, h)
	if why != "" {
		st.ctx.Cancel()
		return nil, nil, why
	}
	st.path = r.URL.Path
	st.w.st = st // st.w.header: the handler goroutine's (conn.work)
	st.w.headOnly = r.Method == http.MethodHead
	if d := c.srv.WriteTimeout; d > 0 {
		st.wdeadline = time.Now().Add(d)
	}
	return st, r, ""
}

// serve runs the handler on the stream's goroutine and ends the
// response after it. A handler's panic resets the stream; one other than
// http.ErrAbortHandler is logged with its stack, as net/http does.
func (st *stream) serve(r *http.Request) {
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				buf := make([]byte, 64<<10)
				buf = buf[:runtime.Stack(buf, false)]
				st.c.srv.log().Error("HTTP/2 handler panic", "remote", st.c.remote, "panic", fmt.Sprint(v), "stack", string(buf))
			}
			st.reset(http2.ErrCodeInternal, errStreamDone)
		}
		st.w.release()
		st.stopTimers()
		c := st.c
		c.mu.Lock()
		c.handlers--
		c.mu.Unlock()
		c.handlerWG.Done()
	}()
	st.c.srv.Handler.ServeHTTP(&st.w, r)
	st.w.finish()
}

// onData takes a DATA frame's payload (n bytes of flow control) on the
// reader goroutine.
func (st *stream) onData(data []byte, n int32, end bool) {
	st.moved.Add(1)
	if n > st.recvLeft.Load() {
		st.c.giveBack(n)
		st.reset(http2.ErrCodeFlowControl, errors.New("h2server: stream receive window exceeded"))
		return
	}
	st.recvLeft.Add(-n)
	if pad := n - int32(len(data)); pad > 0 {
		st.body.credit(pad)
	}
	if err := st.body.push(data); err != nil {
		st.reset(http2.ErrCodeProtocol, err)
		return
	}
	if end {
		st.remoteDone.Store(true)
		st.body.end(nil)
	}
}

// onTrailers takes the request's trailers, which end it.
func (st *stream) onTrailers(f *h2wire.Fields) {
	st.remoteDone.Store(true)
	st.body.end(f)
}

// abort ends the stream for a reason of the client's or the
// connection's: its handler's context ends, its body and writes fail.
func (st *stream) abort(err error) {
	c := st.c
	c.mu.Lock()
	st.done = true
	st.remoteDone.Store(true) // under c.mu: respond decides on its RST under it
	c.cond.Broadcast()
	c.mu.Unlock()
	st.ctx.Cancel()
	st.body.drop(err)
	c.dropStream(st)
}

// reset ends the stream with RST_STREAM code, unless this side or the
// client reset it before; a stream whose response has ended is reset too
// (the client's error on it must be answered).
func (st *stream) reset(code http2.ErrCode, err error) {
	c := st.c
	c.mu.Lock()
	was := st.rstSent || st.peerReset
	st.rstSent = true
	st.done = true // the RST_STREAM is the stream's last frame: no write goes after it
	c.cond.Broadcast()
	c.mu.Unlock()
	if was {
		return
	}
	c.queueControl(c.appendRST(nil, st.id, code))
	st.abort(err)
}

// closed reports whether both sides have ended the stream (this side's
// last frame may still be on its way).
func (st *stream) closed() bool {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	return st.done && st.remoteDone.Load()
}

// respond writes a header block (nil: none), data under flow control,
// and, when end, the trailers block (nil: END_STREAM on the last DATA
// frame, or on the header block when there is nothing else) — in one
// write when the client's windows allow. With end the stream is over
// for this side; a client still sending is told to stop (RST_STREAM
// NO_ERROR, RFC 9113 §8.1).
func (st *stream) respond(hdrs, data, trs []byte, end bool) error {
	c := st.c
	bp := writeBufs.Get().(*[]byte)
	b := (*bp)[:0]
	defer func() {
		if cap(b) <= 4*maxWrite {
			*bp = b[:0]
			writeBufs.Put(bp)
		}
	}()
	c.mu.Lock()
	if st.done || c.closed {
		c.mu.Unlock()
		return errStreamDone
	}
	frame := c.peerFrame
	c.mu.Unlock()
	if hdrs != nil {
		st.headersOut.Store(true)
		b = h2wire.AppendHeaders(b, st.id, end && len(data) == 0 && trs == nil, hdrs, frame)
	}
	for len(data) > 0 {
		n, err := st.awaitWindow(len(data), &b)
		if err != nil {
			return err
		}
		c.mu.Lock()
		frame = min(c.peerFrame, maxDataFrame)
		c.mu.Unlock()
		for n > 0 {
			k := min(n, frame)
			var flags http2.Flags
			if end && trs == nil && k == len(data) {
				flags = http2.FlagDataEndStream
			}
			b = h2wire.AppendHeader(b, k, http2.FrameData, flags, st.id)
			b = append(b, data[:k]...)
			data = data[k:]
			n -= k
		}
		if len(b) >= maxWrite && len(data) > 0 {
			if err := c.write(b); err != nil {
				return err
			}
			b = b[:0]
		}
	}
	if end {
		switch {
		case trs != nil:
			b = h2wire.AppendHeaders(b, st.id, true, trs, frame)
		case hdrs == nil && len(b) == 0:
			b = h2wire.AppendHeader(b, 0, http2.FrameData, http2.FlagDataEndStream, st.id)
		}
		c.mu.Lock()
		if st.done {
			c.mu.Unlock()
			return errStreamDone
		}
		st.done = true
		// The client still sending is told to stop; the reset is noted
		// under c.mu, so that a client's RST_STREAM racing it (abort)
		// comes either before (no reset) or after (the note forgotten).
		rst := !st.remoteDone.Load()
		if rst {
			c.noteReset(st.id)
		}
		c.mu.Unlock()
		if rst {
			b = h2wire.AppendRST(b, st.id, http2.ErrCodeNo)
		}
	}
	err := c.write(b)
	if end {
		st.remoteDone.Store(true)
		st.ctx.Cancel()
		st.body.drop(errStreamDone)
		c.dropStream(st)
	}
	return err
}

// maxDataFrame is the most payload of a DATA frame written: with its
// 9-byte header a frame then fills one TLS record (16 KiB) exactly.
const maxDataFrame = 16<<10 - 9

// maxWrite is about the most one write holds of a large response.
const maxWrite = 64 << 10

// writeBufs hold the frames of one write.
var writeBufs = sync.Pool{New: func() any { b := make([]byte, 0, 20<<10); return &b }}

// awaitWindow takes up to want bytes of the stream's and the
// connection's send windows, waiting for the client to open them;
// what b holds is written first when the wait would be long. It fails
// when the stream ends or its write deadline passes.
func (st *stream) awaitWindow(want int, b *[]byte) (int, error) {
	c := st.c
	c.mu.Lock()
	for !st.done && !c.closed && (st.sendWindow <= 0 || c.sendWindow <= 0) {
		if len(*b) > 0 {
			c.mu.Unlock()
			if err := c.write(*b); err != nil {
				return 0, err
			}
			*b = (*b)[:0]
			c.mu.Lock()
			continue
		}
		if !st.wdeadline.IsZero() {
			d := time.Until(st.wdeadline)
			if d <= 0 {
				c.mu.Unlock()
				st.reset(http2.ErrCodeInternal, os.ErrDeadlineExceeded)
				return 0, os.ErrDeadlineExceeded
			}
			if st.wtimer == nil {
				st.wtimer = time.AfterFunc(d, c.wake)
			} else {
				st.wtimer.Reset(d)
			}
		}
		c.cond.Wait()
	}
	if st.done || c.closed {
		c.mu.Unlock()
		return 0, errStreamDone
	}
	n := int(min(int64(want), st.sendWindow, c.sendWindow, 2*maxDataFrame))
	st.sendWindow -= int64(n)
	c.sendWindow -= int64(n)
	c.mu.Unlock()
	st.moved.Add(1)
	return n, nil
}

// wake wakes the writers waiting for flow control (a deadline passed).
func (c *conn) wake() {
	c.mu.Lock()
	c.cond.Broadcast()
	c.mu.Unlock()
}

// setWriteDeadline moves the stream's write deadline; one passed resets
// the stream (INTERNAL_ERROR), as Go's server does when it expires.
func (st *stream) setWriteDeadline(t time.Time) {
	c := st.c
	c.mu.Lock()
	st.wdeadline = t
	c.cond.Broadcast()
	c.mu.Unlock()
	if !t.IsZero() && !time.Now().Before(t) {
		st.reset(http2.ErrCodeInternal, os.ErrDeadlineExceeded)
	}
}

func (st *stream) stopTimers() {
	c := st.c
	c.mu.Lock()
	if st.wtimer != nil {
		st.wtimer.Stop()
	}
	c.mu.Unlock()
	st.body.stopTimer()
}

// reqBody is a request's body: what the reader goroutine took from DATA
// frames, read by the handler; the windows are given back as it reads.
type reqBody struct {
	st             *stream
	declared       int64       // Content-Length, -1 when none
	got            int64       // bytes received
	expectContinue bool        // 100 Continue is sent at the first read
	trailer        http.Header // the declared trailers (nil: none), filled at EOF
	received       http.Header // the trailers that came, for the declared ones

	mu      sync.Mutex
	cond    sync.Cond
	buf     []byte  // received, not read: buf[off:]
	bufp    *[]byte // where buf came from (h2wire.DataBuf); nil: no buffer
	off     int
	owed    int32 // stream window read, not yet given back
	err     error // set once the client ended its side or the stream ended
	closed  bool  // the handler closed it
	dropped bool  // the stream ended: DATA is dropped as it comes
	timer   *time.Timer
}

// push adds a DATA frame's payload; an error when it exceeds the
// declared length (the stream must then be reset).
func (b *reqBody) push(p []byte) error {
	b.got += int64(len(p))
	if b.declared >= 0 && b.got > b.declared {
		// The caller resets the stream, which ends the body with err.
		return fmt.Errorf("h2server: client sent more than its Content-Length of %d bytes", b.declared)
	}
	if len(p) == 0 {
		return nil
	}
	b.mu.Lock()
	if b.closed || b.dropped {
		b.mu.Unlock()
		b.st.c.giveBack(int32(len(p))) // nobody reads it
		return nil
	}
	if b.bufp == nil {
		b.bufp = h2wire.DataBuf()
		b.buf, b.off = *b.bufp, 0
	}
	if b.off == len(b.buf) {
		b.buf, b.off = b.buf[:0], 0
	}
	b.buf = append(b.buf, p...)
	b.cond.Broadcast()
	b.mu.Unlock()
	return nil
}

// credit gives back n bytes of window that carried nothing to read
// (padding).
func (b *reqBody) credit(n int32) {
	b.st.c.giveBack(n)
}

// end ends the body at the client's END_STREAM, with its trailers (f,
// or nil).
func (b *reqBody) end(f *h2wire.Fields) {
	var err error = io.EOF
	if b.declared >= 0 && b.got != b.declared {
		err = fmt.Errorf("h2server: request body of %d bytes, declared Content-Length %d", b.got, b.declared)
	}
	b.mu.Lock()
	if f != nil && b.trailer != nil {
		b.received = http.Header{}
		for _, hf := range f.Regular {
			k := b.st.c.canon.Key(hf.Name)
			b.received[k] = append(b.received[k], hf.Value)
		}
	}
	if b.err == nil {
		b.err = err
	}
	b.cond.Broadcast()
	b.mu.Unlock()
}

// drop ends the body as its stream ends: what is unread is dropped
// and its window given back to the connection, as are DATA frames that
// still come; reads fail with err unless the body had ended.
func (b *reqBody) drop(err error) {
	b.mu.Lock()
	if b.err == nil {
		b.err = err
	}
	unread := len(b.buf) - b.off
	b.releaseLocked()
	b.dropped = true
	b.cond.Broadcast()
	b.mu.Unlock()
	b.st.c.giveBack(int32(unread))
}

// fail ends the body with err unless it has ended.
func (b *reqBody) fail(err error) {
	b.mu.Lock()
	if b.err == nil {
		b.err = err
	}
	b.cond.Broadcast()
	b.mu.Unlock()
}

func (b *reqBody) Read(p []byte) (int, error) {
	if b.expectContinue {
		b.expectContinue = false
		b.st.sendContinue()
	}
	b.mu.Lock()
	for b.off == len(b.buf) && b.err == nil && !b.closed {
		b.cond.Wait()
	}
	if b.closed {
		b.mu.Unlock()
		return 0, http.ErrBodyReadAfterClose
	}
	if b.off == len(b.buf) {
		err := b.err
		if err == io.EOF {
			b.endLocked()
			b.releaseLocked()
		}
		b.mu.Unlock()
		return 0, err
	}
	n := copy(p, b.buf[b.off:])
	b.st.moved.Add(1)
	b.off += n
	b.owed += int32(n)
	var give int32
	if b.owed >= streamWindow/4 {
		give, b.owed = b.owed, 0
	}
	// The last bytes of a body that has ended come with io.EOF: a
	// reader forwarding it ends its stream with them.
	var eof error
	if b.off == len(b.buf) && b.err == io.EOF {
		eof = io.EOF
		b.endLocked()
		b.releaseLocked()
	}
	b.mu.Unlock()
	st := b.st
	st.c.giveBack(int32(n))
	if give > 0 && !st.remoteDone.Load() {
		st.recvLeft.Add(give)
		var fb [9 + 4]byte
		st.c.queueControl(h2wire.AppendWindowUpdate(fb[:0], st.id, uint32(give)))
	}
	return n, eof
}

// releaseLocked drops what is unread and gives the buffer back.
func (b *reqBody) releaseLocked() {
	if b.bufp != nil {
		*b.bufp = b.buf
		h2wire.PutDataBuf(b.bufp)
		b.bufp = nil
	}
	b.buf, b.off = nil, 0
}

// endLocked sets the declared trailers as the body ends, on the
// goroutine that reads it to its end, as net/http's server does.
func (b *reqBody) endLocked() {
	for k, vv := range b.received {
		if _, ok := b.trailer[k]; ok {
			b.trailer[k] = vv
		}
	}
	b.received = nil
}

// InMemory reports whether the rest of the body is in memory: the client
// ended its side, so reading to the end cannot block
// (upstream.InMemoryBody).
func (b *reqBody) InMemory() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err == io.EOF && !b.closed
}

// Close drops what is unread; later DATA frames are dropped as they come.
func (b *reqBody) Close() error {
	b.mu.Lock()
	unread := len(b.buf) - b.off
	b.releaseLocked()
	b.closed = true
	b.cond.Broadcast()
	b.mu.Unlock()
	b.st.c.giveBack(int32(unread))
	return nil
}

// setDeadline: reads past t fail with os.ErrDeadlineExceeded (the body
// is closed with it, as Go's server does); zero: none.
func (b *reqBody) setDeadline(t time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.timer != nil {
		b.timer.Stop()
	}
	if t.IsZero() {
		return
	}
	d := time.Until(t)
	if d <= 0 {
		if b.err == nil {
			b.err = os.ErrDeadlineExceeded
		}
		b.cond.Broadcast()
		return
	}
	b.timer = time.AfterFunc(d, func() { b.fail(os.ErrDeadlineExceeded) })
}

func (b *reqBody) stopTimer() {
	b.mu.Lock()
	if b.timer != nil {
		b.timer.Stop()
	}
	b.mu.Unlock()
}

// sendContinue answers 100 Continue before the first read of a body
// that expects it.
func (st *stream) sendContinue() {
	c := st.c
	c.mu.Lock()
	frame, done := c.peerFrame, st.done
	c.mu.Unlock()
	if done || st.headersOut.Load() {
		return
	}
	_ = c.write(h2wire.AppendHeaders(nil, st.id, false, status100, frame))
}
