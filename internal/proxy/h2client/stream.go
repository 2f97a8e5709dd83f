package h2client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"

	"weft.dev/weft/internal/h2wire"
)

// stream is one request and its response. The fields under "cc.mu" are
// guarded by the connection's mu; wmu orders what is written on the
// stream (its HEADERS, DATA, trailers, RST_STREAM).
type stream struct {
	cc      *conn
	id      uint32
	req     *http.Request
	isHead  bool
	store   *Storage        // lent for the response (RoundTripInto); nil: allocated
	notify  chan struct{}   // a response, data, an end or an error arrived
	ctxDone <-chan struct{} // the request context's; closed: the stream is given up
	ctx     context.Context

	// cc.mu
	resp       *http.Response
	err        error // the stream failed: the response wait and body reads fail with it
	buf        []byte
	bufp       *[]byte // where buf came from (h2wire.DataBuf); nil: no buffer
	off        int     // buf[off:] is unread
	recvEnded  bool
	trailer    http.Header
	clLeft     int64 // body bytes the content-length still promises; -1: none
	recvLeft   int32 // our receive window left
	owed       int32 // read, credit not yet given back
	sendWindow int32
	sendDone   bool // the request's END_STREAM is sent (or there is nothing to send)
	reset      bool // nothing more is sent on the stream
	done       bool // removed from the connection
	bodyClosed bool

	headSeen bool // the reader's: the final response head arrived

	wmu         sync.Mutex
	headersSent bool // wmu
	rstSent     bool // wmu: a RST_STREAM went out, or the stream was given up before its HEADERS

	// bodyClaim hands the request body to one owner: 0 untouched, 1
	// being sent, 2 given up so the request can be sent again.
	bodyClaim atomic.Int32
}

// signal wakes the goroutine waiting on the stream, if any.
func (s *stream) signal() {
	select {
	case s.notify <- struct{}{}:
	default:
	}
}

// endedLocked finishes the stream once both sides have ended.
func (s *stream) endedLocked() {
	if s.recvEnded && s.sendDone {
		s.cc.finishLocked(s)
	}
}

// frameBufs hold a DATA frame (header and payload), or a request's
// first write: its HEADERS and the frames of a body in memory.
var frameBufs = sync.Pool{New: func() any { b := make([]byte, 0, 2*maxFrame+64); return &b }}

// inMemoryBody is upstream.InMemoryBody: a body whose remaining bytes
// are all in memory, so reading it to the end cannot block.
type inMemoryBody interface{ InMemory() bool }

// memBody is the start of a request body read without waiting because
// it was in memory: the whole body (eof) when it fits a frame. Its data
// is in a pooled buffer the request's RoundTrip gives back as it
// returns; a goroutine that sends it later gets a copy (clone).
type memBody struct {
	data     []byte
	bufp     *[]byte // data's buffer (h2wire.DataBuf); nil: data is the memBody's own
	eof      bool    // data is the whole body (the body is closed)
	trailers []byte  // with eof: the trailers' header block; nil: none
}

// inMemory reports whether req's body says it is in memory.
func inMemory(req *http.Request) bool {
	m, ok := req.Body.(inMemoryBody)
	return ok && m.InMemory()
}

// readMem reads up to a frame of req's body, which is in memory.
func readMem(req *http.Request) (*memBody, error) {
	bp := h2wire.DataBuf()
	buf := (*bp)[:maxFrame]
	n, eof := 0, false
	for i := 0; n < len(buf) && i < 64; i++ {
		k, err := req.Body.Read(buf[n:])
		n += k
		if err == io.EOF {
			eof = true
			break
		}
		if err != nil {
			h2wire.PutDataBuf(bp)
			return nil, fmt.Errorf("http2: reading the request body: %w", err)
		}
	}
	m := &memBody{data: buf[:n], bufp: bp, eof: eof}
	if eof {
		m.trailers = appendTrailers(nil, req.Trailer)
		req.Body.Close()
	}
	return m, nil
}

// release gives the pooled buffer back (nil m: nothing to do).
func (m *memBody) release() {
	if m != nil && m.bufp != nil {
		h2wire.PutDataBuf(m.bufp)
		m.bufp, m.data = nil, nil
	}
}

// clone is a copy of m that owns its data.
func (m *memBody) clone() *memBody {
	c := *m
	c.data, c.bufp = append([]byte(nil), m.data...), nil
	return &c
}

// roundTrip sends req on a stream reserved on cc and waits for the
// response head. *memp (nil: none) is the start of the body, read
// already; a body found in memory once the HEADERS are out is read and
// left there too. retry reports that the request was not processed and
// can be sent again: nothing of its body was read, or all of it is in
// *memp. sending reports that a goroutine was started to send the body,
// which holds req until the body ends.
func (cc *conn) roundTrip(ctx context.Context, req *http.Request, memp **memBody, store *Storage) (resp *http.Response, retry, sending bool, err error) {
	hasBody := req.Body != nil && req.Body != http.NoBody
	mem := *memp
	s := &stream{
		cc:       cc,
		req:      req,
		store:    store,
		isHead:   req.Method == http.MethodHead,
		notify:   make(chan struct{}, 1),
		clLeft:   -1,
		recvLeft: streamWindow,
		sendDone: !hasBody,
	}
	bp := frameBufs.Get().(*[]byte)
	block := appendRequestHead((*bp)[:9], req, cc.client.cfg.Scheme, hasBody)

	cc.hmu.Lock()
	cc.mu.Lock()
	if cc.closed || cc.goAway {
		closeNow := cc.unreserveLocked()
		cc.mu.Unlock()
		cc.hmu.Unlock()
		frameBufs.Put(bp)
		if closeNow {
			cc.close(errIdle)
		}
		return nil, true, false, errUnprocessed
	}
	s.id = cc.nextID
	cc.nextID += 2
	s.sendWindow = cc.initWindow
	frameMax := cc.sendFrame
	allSent := !hasBody || mem != nil && mem.eof && s.takeWindowLocked(len(mem.data))
	s.sendDone = allSent
	cc.streams[s.id] = s
	cc.mu.Unlock()
	var frames []byte
	if n := len(block) - 9; n <= frameMax {
		flags := http2.FlagHeadersEndHeaders
		if !hasBody {
			flags |= http2.FlagHeadersEndStream
		}
		frames = h2wire.AppendHeader(block[:0], n, http2.FrameHeaders, flags, s.id)[:len(block)]
	} else {
		frames = h2wire.AppendHeaders(nil, s.id, !hasBody, block[9:], frameMax)
	}
	if hasBody && allSent {
		frames = appendBody(frames, s.id, mem, frameMax)
	}
	s.wmu.Lock()
	if !s.rstSent {
		err = cc.w.Write(frames)
		s.headersSent = true
	}
	s.wmu.Unlock()
	cc.hmu.Unlock()
	if cap(frames) <= 64<<10 {
		*bp = frames[:0]
		frameBufs.Put(bp)
	}
	if err != nil {
		cc.close(err)
	}

	// The context is watched by whoever waits on the stream (the
	// response, a body read); a body nobody reads is reset when closed.
	s.ctx, s.ctxDone = ctx, ctx.Done()
	if hasBody && !allSent {
		// A body that was not in memory before may be now (it often
		// arrives just after the head): sent from here when it is whole
		// and the windows take it, else by a goroutine of its own.
		if mem == nil && err == nil && inMemory(req) && s.bodyClaim.CompareAndSwap(0, 1) {
			if mem, err = readMem(req); err != nil {
				req.Body.Close()
				s.cancel(err)
			} else {
				*memp = mem
				allSent = mem.eof && s.sendMem(mem)
			}
		}
		if !allSent && err == nil {
			if mem != nil {
				mem = mem.clone() // *memp's buffer goes back to the pool when RoundTrip returns
			}
			go s.sendBody(mem)
			sending = true
		}
	}
	for {
		cc.mu.Lock()
		resp, err := s.resp, s.err
		cc.mu.Unlock()
		if resp != nil {
			return resp, false, sending, nil
		}
		if err != nil {
			retry := errors.Is(err, errUnprocessed) || isRefused(err)
			var untouched bool
			switch {
			case !hasBody:
				untouched = true
			case mem != nil:
				untouched = mem.eof // the whole body is in mem
			default:
				untouched = s.bodyClaim.CompareAndSwap(0, 2)
			}
			if retry && untouched {
				return nil, true, sending, err
			}
			if hasBody && mem == nil && untouched {
				req.Body.Close() // as http.RoundTripper: the body is closed, also on errors
			}
			return nil, false, sending, err
		}
		s.wait()
	}
}

// wait waits for news on the stream; the context's end cancels it.
func (s *stream) wait() {
	select {
	case <-s.notify:
	case <-s.ctxDone:
		s.cancel(s.ctx.Err())
	}
}

// takeWindowLocked takes n bytes of the stream's and the connection's
// send windows if both have them and n fits a frame.
func (s *stream) takeWindowLocked(n int) bool {
	cc := s.cc
	if n > cc.sendFrame || int64(n) > min(int64(s.sendWindow), cc.sendWindow) {
		return false
	}
	s.sendWindow -= int32(n)
	cc.sendWindow -= int64(n)
	return true
}

// appendBody appends the frames of a whole body in memory: its DATA
// (ending the stream unless trailers follow) and its trailers.
func appendBody(b []byte, id uint32, mem *memBody, frameMax int) []byte {
	if mem.trailers == nil {
		b = h2wire.AppendHeader(b, len(mem.data), http2.FrameData, http2.FlagDataEndStream, id)
		return append(b, mem.data...)
	}
	if len(mem.data) > 0 {
		b = h2wire.AppendHeader(b, len(mem.data), http2.FrameData, 0, id)
		b = append(b, mem.data...)
	}
	return h2wire.AppendHeaders(b, id, true, mem.trailers, frameMax)
}

// sendMem sends a whole body in memory in one write if the windows take
// it now; false when they do not (nothing was sent).
func (s *stream) sendMem(mem *memBody) bool {
	cc := s.cc
	cc.mu.Lock()
	if s.reset || cc.closed || !s.takeWindowLocked(len(mem.data)) {
		cc.mu.Unlock()
		return false
	}
	frameMax := cc.sendFrame
	cc.mu.Unlock()
	bp := frameBufs.Get().(*[]byte)
	frames := appendBody((*bp)[:0], s.id, mem, frameMax)
	s.wmu.Lock()
	ok := !s.rstSent && cc.w.Write(frames) == nil
	s.wmu.Unlock()
	if cap(frames) <= 64<<10 {
		*bp = frames[:0]
		frameBufs.Put(bp)
	}
	if ok {
		s.sentEnd()
	}
	return true
}

// isRefused reports whether err is the peer's REFUSED_STREAM.
func isRefused(err error) bool {
	var se http2.StreamError
	return errors.As(err, &se) && se.Code == http2.ErrCodeRefusedStream
}

// cancel gives the stream up with err (the context ended): the response
// wait and body reads fail with it, unread data is dropped, the peer is
// sent RST_STREAM CANCEL.
func (s *stream) cancel(err error) {
	cc := s.cc
	cc.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.releaseBufLocked()
	open := s.abortLocked()
	s.signal()
	cc.mu.Unlock()
	if open {
		s.writeRST(http2.ErrCodeCancel)
	}
}

// writeRST sends RST_STREAM; a stream whose HEADERS were not written yet
// is never written.
func (s *stream) writeRST(code http2.ErrCode) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.rstSent {
		return
	}
	s.rstSent = true
	if s.headersSent {
		_ = s.cc.w.Write(h2wire.AppendRST(nil, s.id, code))
	}
}

// sendBody sends the request body, then its trailers or END_STREAM, as
// the stream's and the connection's send windows allow: first mem (nil:
// none), read already and not sent, then the rest of the body. It stops
// when the stream is reset; a body that fails resets the stream.
func (s *stream) sendBody(mem *memBody) {
	req := s.req
	if mem == nil && !s.bodyClaim.CompareAndSwap(0, 1) {
		return // given up before it began: a retry owns the body
	}
	if mem == nil || !mem.eof {
		defer req.Body.Close()
	}
	bp := frameBufs.Get().(*[]byte)
	defer frameBufs.Put(bp)
	buf := (*bp)[:9+maxFrame]
	pending := mem != nil
	for {
		var n int
		var eof bool
		var trailers []byte
		if pending {
			n, eof, trailers = copy(buf[9:], mem.data), mem.eof, mem.trailers
			pending = false
		} else {
			var rerr error
			n, rerr = req.Body.Read(buf[9:])
			if rerr != nil && rerr != io.EOF {
				s.cancel(fmt.Errorf("http2: reading the request body: %w", rerr))
				return
			}
			if eof = rerr == io.EOF; eof {
				trailers = appendTrailers(nil, req.Trailer)
			}
		}
		for off := 0; off < n; {
			take, ok := s.awaitWindow(n - off)
			if !ok {
				return
			}
			last := eof && trailers == nil && off+take == n
			if !s.writeData(buf[off:off+9+take], last) {
				return
			}
			off += take
			if last {
				s.sentEnd()
				return
			}
		}
		if !eof {
			continue
		}
		var ok bool
		if trailers != nil {
			ok = s.writeTrailers(trailers)
		} else {
			ok = s.writeData(buf[:9], true)
		}
		if ok {
			s.sentEnd()
		}
		return
	}
}

// awaitWindow waits until the stream may send some of want bytes and
// takes that much of the windows; false when the stream is over.
func (s *stream) awaitWindow(want int) (int, bool) {
	cc := s.cc
	cc.mu.Lock()
	defer cc.mu.Unlock()
	for {
		if s.reset || cc.closed {
			return 0, false
		}
		take := min(int64(want), int64(s.sendWindow), cc.sendWindow, int64(cc.sendFrame))
		if take > 0 {
			s.sendWindow -= int32(take)
			cc.sendWindow -= take
			return int(take), true
		}
		cc.cond.Wait()
	}
}

// writeData writes frame, a DATA frame's payload after 9 bytes kept for
// its header.
func (s *stream) writeData(frame []byte, end bool) bool {
	var flags http2.Flags
	if end {
		flags = http2.FlagDataEndStream
	}
	h2wire.AppendHeader(frame[:0], len(frame)-9, http2.FrameData, flags, s.id)
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.rstSent {
		return false
	}
	return s.cc.w.Write(frame) == nil
}

func (s *stream) writeTrailers(block []byte) bool {
	s.cc.mu.Lock()
	frameMax := s.cc.sendFrame
	s.cc.mu.Unlock()
	frames := h2wire.AppendHeaders(nil, s.id, true, block, frameMax)
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if s.rstSent {
		return false
	}
	return s.cc.w.Write(frames) == nil
}

// sentEnd records the request's END_STREAM.
func (s *stream) sentEnd() {
	s.cc.mu.Lock()
	s.sendDone = true
	s.endedLocked()
	s.cc.mu.Unlock()
}

// onResponse takes the header block just decoded as s's response head
// (a 1xx one is skipped).
func (cc *conn) onResponse(s *stream) error {
	status := 0
	cl := int64(-1)
	regular := false // a regular field came
	var malformed string
	for _, f := range cc.fields {
		if len(f.Name) > 0 && f.Name[0] == ':' {
			if f.Name != ":status" || status != 0 || regular {
				malformed = "pseudo-header " + f.Name
				break
			}
			if len(f.Value) != 3 {
				malformed = "bad :status"
				break
			}
			v, err := strconv.Atoi(f.Value)
			if err != nil || v < 100 {
				malformed = "bad :status"
				break
			}
			status = v
			continue
		}
		regular = true
		if why := checkField(f.Name, f.Value); why != "" {
			malformed = why
			break
		}
		if f.Name == "content-length" { // names are lower case (checkField)
			n, err := strconv.ParseUint(f.Value, 10, 63)
			if err != nil || cl >= 0 && int64(n) != cl {
				malformed = "bad content-length"
				break
			}
			cl = int64(n)
		}
	}
	switch {
	case malformed != "":
	case status == 0:
		malformed = "no :status"
	case status == http.StatusSwitchingProtocols:
		malformed = "101 over HTTP/2"
	case status < 200 && cc.hend:
		malformed = "1xx ending the stream"
	case status < 200:
		return nil // informational: the final head follows
	}
	if malformed != "" {
		cc.resetStream(s, http2.ErrCodeProtocol, fmt.Errorf("http2: malformed response from the upstream: %s", malformed))
		return nil
	}
	s.headSeen = true
	noBody := s.isHead || status == http.StatusNoContent || status == http.StatusNotModified
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if s.done && s.err != nil || s.store != nil && s.err != nil {
		// Given up meanwhile: a lent Storage may be the caller's again.
		return nil
	}
	// Built under cc.mu: once the caller has given the stream up
	// (s.err, set under cc.mu), a lent Storage is not written to.
	var resp *http.Response
	var h http.Header
	if st := s.store; st != nil {
		resp, h = &st.resp, st.header
		if h == nil {
			h = make(http.Header, len(cc.fields))
			st.header = h
		}
		clear(h) // an earlier attempt's response
	} else {
		resp, h = new(http.Response), make(http.Header, len(cc.fields))
	}
	cc.fill(h)
	*resp = http.Response{
		Status:        statusLine(status),
		StatusCode:    status,
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        h,
		ContentLength: cl,
		Body:          (*body)(s),
		Request:       s.req,
	}
	if cc.hend && cl < 0 {
		resp.ContentLength = 0
	}
	if !noBody {
		s.clLeft = cl
	}
	if cc.hend {
		if s.clLeft > 0 {
			s.err = errors.New("http2: response body length differs from its content-length")
		}
		s.recvEnded = true
		s.endedLocked()
	}
	s.resp = resp
	cc.wake(s)
	return nil
}

// fill adds the regular fields of the header block just decoded, checked
// already, to h: every value in one allocation, which h then holds (the
// values outlive a lent Storage's maps, so they are never reused).
func (cc *conn) fill(h http.Header) {
	n := 0
	for _, f := range cc.fields {
		if len(f.Name) == 0 || f.Name[0] != ':' {
			n++
		}
	}
	vals := make([]string, n)
	for _, f := range cc.fields {
		if len(f.Name) > 0 && f.Name[0] == ':' {
			continue
		}
		k := cc.canon.Key(f.Name)
		vals[0] = f.Value
		if vv := h[k]; vv == nil {
			h[k] = vals[:1:1]
		} else {
			h[k] = append(vv, f.Value)
		}
		vals = vals[1:]
	}
}

// statusLines are the Response.Status of the common codes, made once.
var statusLines = func() map[int]string {
	m := map[int]string{}
	for _, c := range []int{200, 201, 202, 204, 206, 301, 302, 304, 307, 308, 400, 401, 403, 404, 405, 409, 412, 413, 429, 500, 502, 503, 504} {
		m[c] = strconv.Itoa(c) + " " + http.StatusText(c)
	}
	return m
}()

// statusLine is Response.Status for code ("200 OK").
func statusLine(code int) string {
	if s, ok := statusLines[code]; ok {
		return s
	}
	return strconv.Itoa(code) + " " + http.StatusText(code)
}

// onTrailers takes the header block just decoded as s's trailers.
func (cc *conn) onTrailers(s *stream) error {
	var malformed string
	if !cc.hend {
		malformed = "a second header block not ending the stream"
	} else {
		for _, f := range cc.fields {
			if len(f.Name) > 0 && f.Name[0] == ':' {
				malformed = "pseudo-header in trailers"
				break
			}
			if why := checkField(f.Name, f.Value); why != "" {
				malformed = why
				break
			}
		}
	}
	if malformed != "" {
		cc.resetStream(s, http2.ErrCodeProtocol, fmt.Errorf("http2: malformed response trailers from the upstream: %s", malformed))
		return nil
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if s.done && s.err != nil || s.recvEnded || s.store != nil && s.err != nil {
		return nil
	}
	var t http.Header
	if st := s.store; st != nil {
		if t = st.trailer; t == nil {
			t = make(http.Header, len(cc.fields))
			st.trailer = t
		}
		clear(t) // an earlier attempt's trailers
	} else {
		t = make(http.Header, len(cc.fields))
	}
	cc.fill(t)
	if s.clLeft > 0 {
		s.err = errors.New("http2: response body length differs from its content-length")
	}
	s.trailer = t
	s.recvEnded = true
	s.endedLocked()
	cc.wake(s)
	return nil
}

// checkField says why a response field is malformed (RFC 9113 §8.2):
// an invalid or upper-case name, a connection-specific field, an invalid
// value. "" when it is fine.
func checkField(name, value string) string {
	if !httpguts.ValidHeaderFieldName(name) {
		return "invalid field name " + strconv.Quote(name)
	}
	for i := 0; i < len(name); i++ {
		if 'A' <= name[i] && name[i] <= 'Z' {
			return "upper-case field name " + strconv.Quote(name)
		}
	}
	switch name {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		return "connection-specific field " + name
	}
	if !httpguts.ValidHeaderFieldValue(value) {
		return "invalid value of " + name
	}
	return ""
}

// body is a response body: a stream read by the caller.
type body stream

// Read returns the response body as it arrives, then io.EOF (with the
// last bytes when they are already there) once the stream ended; the
// trailers are then in the Response's Trailer. Stream credit goes back
// to the peer as the body is read.
func (b *body) Read(p []byte) (int, error) {
	s := (*stream)(b)
	cc := s.cc
	cc.mu.Lock()
	for s.off == len(s.buf) {
		if err := s.err; err != nil {
			s.releaseBufLocked()
			cc.mu.Unlock()
			return 0, err
		}
		if s.recvEnded {
			s.releaseBufLocked()
			s.endBodyLocked()
			cc.mu.Unlock()
			return 0, io.EOF
		}
		cc.mu.Unlock()
		s.wait()
		cc.mu.Lock()
	}
	n := copy(p, s.buf[s.off:])
	s.off += n
	if s.off == len(s.buf) {
		s.off = 0
		s.buf = s.buf[:0]
		if s.recvEnded {
			s.releaseBufLocked()
		}
	}
	var give int32
	eof := false
	switch {
	case !s.recvEnded:
		if s.owed += int32(n); s.owed >= streamWindow/4 {
			give = s.owed
			s.recvLeft += give
			s.owed = 0
		}
	case s.off == len(s.buf) && s.err == nil:
		eof = true
		s.endBodyLocked()
	}
	cc.mu.Unlock()
	if give > 0 {
		var fb [9 + 4]byte
		cc.w.Queue(h2wire.AppendWindowUpdate(fb[:0], s.id, uint32(give)))
	}
	if eof {
		return n, io.EOF
	}
	return n, nil
}

// releaseBufLocked drops what is unread and gives the buffer back.
func (s *stream) releaseBufLocked() {
	if s.bufp != nil {
		*s.bufp = s.buf
		h2wire.PutDataBuf(s.bufp)
		s.bufp = nil
	}
	s.buf, s.off = nil, 0
}

// endBodyLocked hands the trailers to the response as the body ends.
func (s *stream) endBodyLocked() {
	if s.trailer != nil {
		s.resp.Trailer = s.trailer
		s.trailer = nil
	}
}

// Close ends the body; a stream not over yet is reset (CANCEL).
func (b *body) Close() error {
	s := (*stream)(b)
	cc := s.cc
	cc.mu.Lock()
	if s.bodyClosed {
		cc.mu.Unlock()
		return nil
	}
	s.bodyClosed = true
	if s.err == nil {
		s.err = http.ErrBodyReadAfterClose
	}
	s.releaseBufLocked()
	open := s.abortLocked()
	cc.mu.Unlock()
	if open {
		s.writeRST(http2.ErrCodeCancel)
	}
	return nil
}
