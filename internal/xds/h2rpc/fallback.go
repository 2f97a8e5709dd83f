package h2rpc

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"

	"weft.dev/weft/internal/h2wire"
)

// The fallback: a stream Open does not take is served by an
// http.Handler (a grpc.Server's ServeHTTP) on a goroutine of its own,
// with the request's body read from the stream and a response writer
// that writes to it. The handler declares its trailers in the "Trailer"
// header or with http.TrailerPrefix, as net/http's own HTTP/2 server
// wants.

// request makes the fallback's request from the stream's header block.
func request(f *h2wire.Fields, c *conn, st *Stream) *http.Request {
	h := make(http.Header, len(f.Regular))
	for _, kv := range f.Regular {
		h.Add(kv.Name, kv.Value)
	}
	ctx := context.WithValue(st.ctx, http.LocalAddrContextKey, c.nc.LocalAddr())
	r := (&http.Request{
		Method:        f.Method,
		URL:           &url.URL{Path: f.Path},
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        h,
		Body:          st.body,
		ContentLength: -1,
		Host:          f.Authority,
		RemoteAddr:    c.nc.RemoteAddr().String(),
		RequestURI:    f.Path,
	}).WithContext(ctx)
	if p := peerOf(c); p != nil {
		if ti, ok := p.(credentials.TLSInfo); ok {
			state := ti.State
			r.TLS = &state
		}
	}
	return r
}

func peerOf(c *conn) credentials.AuthInfo {
	if p, ok := peerFrom(c.ctx); ok {
		return p.AuthInfo
	}
	return nil
}

// serveFallback runs the fallback handler for one stream.
func (s *Server) serveFallback(st *Stream, r *http.Request) {
	if s.Fallback == nil {
		_ = st.Finish(codes.Unimplemented, "unknown method "+st.method)
		return
	}
	w := &respWriter{st: st, header: http.Header{}}
	s.Fallback.ServeHTTP(w, r)
	w.finish()
}

// respWriter is the fallback's http.ResponseWriter (and http.Flusher).
type respWriter struct {
	st     *Stream
	header http.Header
	status int
	sent   bool
}

func (w *respWriter) Header() http.Header { return w.header }

func (w *respWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}

func (w *respWriter) Write(p []byte) (int, error) {
	if err := w.sendHeaders(); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	if err := w.st.send(false, [][]byte{p}); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (w *respWriter) Flush() { _ = w.sendHeaders() }

// headerFields are the response's headers, :status first.
func (w *respWriter) headerFields() [][2]string {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	f := [][2]string{{":status", strconv.Itoa(w.status)}}
	for k, vv := range w.header {
		switch {
		case k == "Trailer", strings.HasPrefix(k, http.TrailerPrefix),
			k == "Connection", k == "Transfer-Encoding", k == "Keep-Alive", k == "Upgrade":
			continue
		}
		lk := strings.ToLower(k)
		for _, v := range vv {
			f = append(f, [2]string{lk, v})
		}
	}
	return f
}

func (w *respWriter) sendHeaders() error {
	if w.sent {
		return nil
	}
	w.sent = true
	return w.st.writeHeaders(encodeFields(w.headerFields()))
}

// finish writes the trailers the handler declared and set, and ends the
// stream.
func (w *respWriter) finish() {
	var tr [][2]string
	for _, decl := range w.header["Trailer"] {
		for k := range strings.SplitSeq(decl, ",") {
			k = http.CanonicalHeaderKey(strings.TrimSpace(k))
			for _, v := range w.header[k] {
				tr = append(tr, [2]string{strings.ToLower(k), v})
			}
		}
	}
	for k, vv := range w.header {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			for _, v := range vv {
				tr = append(tr, [2]string{strings.ToLower(name), v})
			}
		}
	}
	var headers [][2]string
	if !w.sent {
		w.sent = true
		// Nothing was sent: the declared trailers go with the headers.
		headers = w.headerFields()
		if len(tr) == 0 {
			headers, tr = nil, headers
		}
	}
	_ = w.st.end(tr, headers)
}

// body is a fallback stream's request body: what the reader goroutine
// took from DATA frames, read by the handler; the stream's window is
// given back as it is read.
type body struct {
	st     *Stream
	mu     sync.Mutex
	cond   *sync.Cond
	chunks [][]byte
	owed   int32
	err    error // set once the client ended its side or the stream ended
}

func newBody(st *Stream) *body {
	b := &body{st: st}
	b.cond = sync.NewCond(&b.mu)
	return b
}

func (b *body) push(p []byte) {
	b.mu.Lock()
	b.chunks = append(b.chunks, append([]byte(nil), p...))
	b.cond.Broadcast()
	b.mu.Unlock()
}

// credit gives back n bytes of window that carried nothing to read.
func (b *body) credit(n int32) {
	b.mu.Lock()
	b.owed += n
	b.mu.Unlock()
}

func (b *body) close(err error) {
	b.mu.Lock()
	if b.err == nil {
		b.err = err
	}
	b.cond.Broadcast()
	b.mu.Unlock()
}

func (b *body) Read(p []byte) (int, error) {
	b.mu.Lock()
	for len(b.chunks) == 0 && b.err == nil {
		b.cond.Wait()
	}
	if len(b.chunks) == 0 {
		err := b.err
		b.mu.Unlock()
		return 0, err
	}
	n := copy(p, b.chunks[0])
	b.chunks[0] = b.chunks[0][n:]
	if len(b.chunks[0]) == 0 {
		b.chunks = b.chunks[1:]
	}
	b.owed += int32(n)
	var give int32
	if b.owed >= recvWindow/4 || len(b.chunks) == 0 {
		give, b.owed = b.owed, 0
	}
	b.mu.Unlock()
	if give > 0 && !b.st.remoteDone.Load() {
		b.st.recvLeft.Add(give)
		b.st.c.queueControl(h2wire.AppendWindowUpdate(nil, b.st.id, uint32(give)))
	}
	return n, nil
}

func (b *body) Close() error { return nil }
