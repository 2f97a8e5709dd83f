package h2rpc

import (
	"context"
	"encoding/binary"
	"io"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"golang.org/x/net/http2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"weft.dev/weft/internal/h2wire"
)

// Stream is one gRPC call on a connection.
type Stream struct {
	c      *conn
	id     uint32
	method string
	ctx    context.Context
	cancel context.CancelFunc
	h      StreamHandler // nil for a stream served by the fallback
	body   *body         // the fallback's request body

	// The reader goroutine's alone.
	recvOwed int32
	pre      [5]byte
	npre     int
	msg      []byte // the message being read; nil between messages
	need     int    // bytes of msg still to come

	recvLeft   atomic.Int32 // receive window left
	remoteDone atomic.Bool  // the client ended its side
	notified   atomic.Bool  // Closed was called

	// Guarded by c.mu.
	sendWindow  int64
	headersSent bool
	done        bool // finished or reset: nothing more is written
}

func newStream(c *conn, id uint32, f *h2wire.Fields) *Stream {
	ctx, cancel := context.WithCancel(c.ctx)
	st := &Stream{c: c, id: id, method: f.Path, ctx: ctx, cancel: cancel, sendWindow: int64(c.peerWindowNow())}
	st.recvLeft.Store(recvWindow)
	return st
}

func (c *conn) peerWindowNow() int32 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peerWindow
}

// Method is the call's full method name ("/package.Service/Method").
func (st *Stream) Method() string { return st.method }

// Context carries the call's peer (grpc/peer, with the TLS state) and is
// done when the stream is over.
func (st *Stream) Context() context.Context { return st.ctx }

// grpcResponseHeaders is the header block of every gRPC response.
var grpcResponseFields = [][2]string{{":status", "200"}, {"content-type", "application/grpc"}}

var grpcResponseHeaders = encodeFields(grpcResponseFields)

// Send writes one message (its pieces, in order) as a gRPC message,
// waiting for flow control as needed; it returns once the message is
// written to the connection. Sends and Finish of one stream must not run
// concurrently; streams are independent.
func (st *Stream) Send(pieces ...[]byte) error { return st.send(true, pieces) }

var writeBufs = sync.Pool{New: func() any { b := make([]byte, 0, writeChunk+4<<10); return &b }}

func (st *Stream) send(prefixed bool, pieces [][]byte) error {
	c := st.c
	src := pieceSource{pieces: pieces}
	total := 0
	for _, p := range pieces {
		total += len(p)
	}
	if prefixed {
		binary.BigEndian.PutUint32(src.pre[1:], uint32(total))
		src.npre = 5
		total += 5
	}
	bp := writeBufs.Get().(*[]byte)
	defer writeBufs.Put(bp)
	for total > 0 {
		c.mu.Lock()
		for !st.done && !c.closed && (st.sendWindow <= 0 || c.sendWindow <= 0) {
			c.cond.Wait()
		}
		if st.done || c.closed {
			c.mu.Unlock()
			return ErrStreamDone
		}
		n := int(min(int64(total), st.sendWindow, c.sendWindow, writeChunk))
		st.sendWindow -= int64(n)
		c.sendWindow -= int64(n)
		frame := min(c.peerFrame, dataFrameMax)
		var hdrs []byte
		if !st.headersSent { // a fallback stream's were sent by its writer
			st.headersSent = true
			hdrs = grpcResponseHeaders
		}
		c.mu.Unlock()

		b := (*bp)[:0]
		if hdrs != nil {
			b = h2wire.AppendHeaders(b, st.id, false, hdrs, maxFrameSize)
		}
		for n > 0 {
			k := min(n, frame)
			b = h2wire.AppendHeader(b, k, http2.FrameData, 0, st.id)
			b = src.appendN(b, k)
			n -= k
			total -= k
		}
		err := c.write(b)
		*bp = b[:0]
		if err != nil {
			return err
		}
	}
	return nil
}

// writeHeaders sends the response's headers now (the fallback's Flush).
func (st *Stream) writeHeaders(block []byte) error {
	c := st.c
	c.mu.Lock()
	if st.done || c.closed {
		c.mu.Unlock()
		return ErrStreamDone
	}
	if st.headersSent {
		c.mu.Unlock()
		return nil
	}
	st.headersSent = true
	c.mu.Unlock()
	return c.write(h2wire.AppendHeaders(nil, st.id, false, block, maxFrameSize))
}

// replyPlain answers a request that is not gRPC with an HTTP status and
// a text body, then forgets the stream.
func (st *Stream) replyPlain(code int, msg string) {
	c := st.c
	hdrs := encodeFields([][2]string{{":status", strconv.Itoa(code)}, {"content-type", "text/plain; charset=utf-8"}})
	if st.writeHeaders(hdrs) == nil && st.send(false, [][]byte{[]byte(msg)}) == nil && st.markDone() {
		// END_STREAM on an empty DATA frame, which flow control does not
		// count. No RST_STREAM: a client still sending is answered
		// STREAM_CLOSED by the reader.
		_ = c.write(h2wire.AppendHeader(nil, 0, http2.FrameData, http2.FlagDataEndStream, st.id))
	}
	st.cancel()
	c.dropStream(st)
}

// pieceSource reads a message's prefix and pieces in order.
type pieceSource struct {
	pre    [5]byte
	npre   int // prefix bytes left (from the end of pre)
	pieces [][]byte
}

func (s *pieceSource) appendN(b []byte, n int) []byte {
	for n > 0 {
		if s.npre > 0 {
			k := min(n, s.npre)
			off := len(s.pre) - s.npre
			b = append(b, s.pre[off:off+k]...)
			s.npre -= k
			n -= k
			continue
		}
		p := s.pieces[0]
		k := min(n, len(p))
		b = append(b, p[:k]...)
		n -= k
		if k == len(p) {
			s.pieces = s.pieces[1:]
		} else {
			s.pieces[0] = p[k:]
		}
	}
	return b
}

// maxStatusMessage bounds grpc-message, so trailers fit in one frame.
const maxStatusMessage = 4 << 10

// Finish ends the stream with a gRPC status (its trailers, or the
// headers and trailers together when nothing was sent). It returns
// ErrStreamDone when the stream was over already.
func (st *Stream) Finish(code codes.Code, msg string) error {
	return st.end(statusFields(code, msg), grpcResponseFields)
}

// FinishErr ends the stream with err's status: OK for nil, Unknown for
// an error without one.
func (st *Stream) FinishErr(err error) error {
	s, _ := status.FromError(err)
	return st.Finish(s.Code(), s.Message())
}

func statusFields(code codes.Code, msg string) [][2]string {
	f := [][2]string{{"grpc-status", strconv.Itoa(int(code))}}
	if msg != "" {
		if len(msg) > maxStatusMessage {
			msg = msg[:maxStatusMessage]
		}
		f = append(f, [2]string{"grpc-message", encodeGrpcMessage(msg)})
	}
	return f
}

// end writes the trailers (with headers first if none were sent) and
// forgets the stream; a client still sending is told to stop
// (RST_STREAM NO_ERROR, as gRPC-Go does).
func (st *Stream) end(trailers, headers [][2]string) error {
	c := st.c
	c.mu.Lock()
	if st.done || c.closed {
		c.mu.Unlock()
		return ErrStreamDone
	}
	st.done = true
	sent := st.headersSent
	st.headersSent = true
	c.mu.Unlock()
	fields := trailers
	if !sent {
		fields = append(slices.Clone(headers), trailers...)
	}
	b := h2wire.AppendHeaders(nil, st.id, true, encodeFields(fields), maxFrameSize)
	if !st.remoteDone.Load() {
		b = h2wire.AppendRST(b, st.id, errCodeNo)
	}
	err := c.write(b)
	st.cancel()
	if st.body != nil {
		st.body.close(ErrStreamDone)
	}
	c.dropStream(st)
	return err
}

// Reset ends the stream at once with RST_STREAM (a Send blocked on flow
// control returns ErrStreamDone). Closed is not called for it. The
// RST_STREAM goes out whatever the response's state: the reader resets
// streams for the client's errors on them, which must be answered also
// when the response has just ended and the stream been forgotten
// (replyPlain racing a client's second HEADERS: h2spec 8.1/1, one run
// in many over TLS); a reset of a stream already gone costs the client
// one frame it ignores.
func (st *Stream) Reset(code http2.ErrCode) {
	live := st.markDone() || st.c.has(st)
	st.c.queueControl(h2wire.AppendRST(nil, st.id, code))
	if live {
		st.cancel()
		st.c.dropStream(st)
	}
}

// markDone marks the stream over for writers; false if it was.
func (st *Stream) markDone() bool {
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if st.done {
		return false
	}
	st.done = true
	c.cond.Broadcast()
	return true
}

// ended: the stream is over for a reason of the client's or the
// connection's; its handler is told.
func (st *Stream) ended(err error) {
	st.markDone()
	st.notify(err)
	st.cancel()
	st.c.dropStream(st)
}

func (st *Stream) notify(err error) {
	if st.notified.Swap(true) {
		return
	}
	if st.h != nil {
		st.h.Closed(err)
	} else if st.body != nil {
		st.body.close(err)
	}
}

// fail ends the stream with a status for what the client sent, and tells
// its handler.
func (st *Stream) fail(code codes.Code, msg string) {
	_ = st.Finish(code, msg)
	st.notify(status.Error(code, msg))
}

// onData takes a DATA frame's payload (n bytes of flow control) on the
// reader goroutine.
func (st *Stream) onData(data []byte, n int32, end bool) {
	if st.h != nil {
		// The handler takes each message as it comes: the window is
		// given back at once.
		st.recvOwed += n
		if st.recvOwed >= recvWindow/4 {
			st.c.queueControl(h2wire.AppendWindowUpdate(nil, st.id, uint32(st.recvOwed)))
			st.recvLeft.Add(st.recvOwed)
			st.recvOwed = 0
		}
		if !st.parse(data) {
			return
		}
	} else if st.body != nil {
		if pad := n - int32(len(data)); pad > 0 {
			st.body.credit(pad)
		}
		if len(data) > 0 {
			st.body.push(data)
		}
	}
	if end {
		st.remoteDone.Store(true)
		if st.h != nil && (st.msg != nil || st.npre > 0) {
			st.fail(codes.Internal, "the client ended the stream within a message")
			return
		}
		st.notify(io.EOF)
	}
}

// parse cuts data into gRPC messages for the handler; false when the
// stream failed.
func (st *Stream) parse(data []byte) bool {
	for len(data) > 0 {
		if st.msg == nil {
			k := copy(st.pre[st.npre:], data)
			st.npre += k
			data = data[k:]
			if st.npre < len(st.pre) {
				return true
			}
			st.npre = 0
			if st.pre[0] != 0 {
				st.fail(codes.Unimplemented, "compressed requests are not supported")
				return false
			}
			size := binary.BigEndian.Uint32(st.pre[1:])
			if size > maxRecvMsgSize {
				st.fail(codes.ResourceExhausted, "received message larger than max ("+strconv.Itoa(int(size))+" vs. "+strconv.Itoa(maxRecvMsgSize)+")")
				return false
			}
			st.msg = make([]byte, 0, size)
			st.need = int(size)
			if size == 0 {
				st.msg = nil
				st.h.Message([]byte{})
				continue
			}
		}
		k := min(st.need, len(data))
		st.msg = append(st.msg, data[:k]...)
		st.need -= k
		data = data[k:]
		if st.need == 0 {
			m := st.msg
			st.msg = nil
			st.h.Message(m)
		}
	}
	return true
}

// encodeGrpcMessage percent-encodes a status message as gRPC's
// grpc-message header wants.
func encodeGrpcMessage(msg string) string {
	clean := true
	for i := 0; i < len(msg); i++ {
		if c := msg[i]; c < ' ' || c > '~' || c == '%' {
			clean = false
			break
		}
	}
	if clean {
		return msg
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(msg)+16)
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c < ' ' || c > '~' || c == '%' {
			b = append(b, '%', hex[c>>4], hex[c&15])
		} else {
			b = append(b, c)
		}
	}
	return string(b)
}
