package h2server

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"

	"weft.dev/weft/internal/h2wire"
	"weft.dev/weft/internal/proxy/httpdate"
)

// holdMax is the most body a response holds back: written with the
// headers when the handler returns or flushes, or before more is taken.
const holdMax = 16 << 10

// responseWriter is a stream's http.ResponseWriter. It implements
// http.Flusher and what http.ResponseController looks for (FlushError,
// SetReadDeadline, SetWriteDeadline, EnableFullDuplex).
type responseWriter struct {
	st       *stream
	header   http.Header
	status   int    // the final status, once written
	hblock   []byte // the final header block, encoded when the status was written
	headOnly bool   // a HEAD request: no body goes out
	noBody   bool   // a status without a body
	hasType  bool   // the handler set Content-Type
	hasLen   bool   // the handler set Content-Length
	sent     bool   // hblock went out
	close    bool   // "Connection: close": the connection goes away after this response
	trailers []string
	hold     *[]byte // body held back (from holdBufs), or nil
	err      error   // the first write error

	// Where the header block and the trailers' are encoded while they
	// fit, so that a response's blocks cost no allocation of their own.
	hbuf [256]byte
	tbuf [64]byte
}

var holdBufs = sync.Pool{New: func() any { b := make([]byte, 0, holdMax); return &b }}

var (
	_ http.Flusher        = (*responseWriter)(nil)
	_ http.ResponseWriter = (*responseWriter)(nil)
)

func (w *responseWriter) Header() http.Header { return w.header }

// WriteHeader sends an informational (1xx) response at once; a final
// status is kept, with the header map as it is now, for the first write.
func (w *responseWriter) WriteHeader(code int) {
	if w.status != 0 {
		return
	}
	if code < 100 || code > 999 {
		panic("h2server: invalid WriteHeader code " + strconv.Itoa(code))
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		w.informational(code)
		return
	}
	w.st.moved.Add(1)
	w.status = code
	w.noBody = code == http.StatusNoContent || code == http.StatusNotModified || code < 200
	if w.hblock == nil {
		w.hblock = w.hbuf[:0]
	}
	w.hblock = w.encode(w.hblock[:0], code, true)
}

func (w *responseWriter) informational(code int) {
	st := w.st
	st.c.mu.Lock()
	frame, done := st.c.peerFrame, st.done
	st.c.mu.Unlock()
	if done {
		return
	}
	block := w.encode(nil, code, false)
	_ = st.c.write(h2wire.AppendHeaders(nil, st.id, false, block, frame))
}

// encode appends the header block of status code with the handler's
// fields; final notes what the framing and the connection depend on.
func (w *responseWriter) encode(b []byte, code int, final bool) []byte {
	b = h2wire.AppendStatus(b, code)
	hasDate := false
	for k, vv := range w.header {
		switch k {
		case "Connection":
			if final && httpguts.HeaderValuesContainsToken(vv, "close") {
				w.close = true
			}
			continue
		case "Keep-Alive", "Proxy-Connection", "Transfer-Encoding", "Upgrade":
			continue // connection-specific (RFC 9113 §8.2.2)
		case "Trailer":
			if final {
				for _, v := range vv {
					for t := range strings.SplitSeq(v, ",") {
						if t = strings.TrimSpace(t); t != "" {
							w.trailers = append(w.trailers, http.CanonicalHeaderKey(t))
						}
					}
				}
			}
			continue
		case "Date":
			hasDate = true
		case "Content-Type":
			w.hasType = final
		case "Content-Length":
			w.hasLen = final
		}
		if strings.HasPrefix(k, http.TrailerPrefix) || !httpguts.ValidHeaderFieldName(k) {
			continue
		}
		b = h2wire.AppendFields(b, k, vv)
	}
	if final && !hasDate {
		b = h2wire.AppendLiteral(b, "date", httpdate.Now())
	}
	return b
}

// Write holds p back while the response fits holdMax; past it the held
// body and p go out.
func (w *responseWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	w.st.moved.Add(1)
	switch {
	case w.err != nil:
		return 0, w.err
	case w.noBody:
		return 0, http.ErrBodyNotAllowed
	case w.headOnly || len(p) == 0:
		return len(p), nil
	}
	if w.hold == nil {
		if !w.sent && len(p) <= holdMax {
			w.hold = holdBufs.Get().(*[]byte)
		}
	}
	if w.hold != nil && len(*w.hold)+len(p) <= holdMax {
		*w.hold = append(*w.hold, p...)
		return len(p), nil
	}
	if err := w.flush(false); err != nil {
		return 0, err
	}
	if err := w.st.respond(nil, p, nil, false); err != nil {
		w.err = err
		return 0, err
	}
	return len(p), nil
}

// headerBlock is the final header block if it has not gone out, with
// the Content-Type sniffed from body when the handler set none.
func (w *responseWriter) headerBlock(body []byte) []byte {
	if w.sent {
		return nil
	}
	w.sent = true
	if w.close {
		// GOAWAY ahead of the response, as Go's server sends it, so that
		// the client takes its next request elsewhere, not to this
		// connection between the response and the GOAWAY.
		w.st.c.goAway(true)
	}
	if !w.hasType && !w.noBody && len(body) > 0 {
		w.hblock = h2wire.AppendLiteral(w.hblock, "content-type", []byte(http.DetectContentType(body)))
	}
	return w.hblock
}

// flush writes the header block if it has not gone out and the body
// held back.
func (w *responseWriter) flush(end bool) error {
	if w.err != nil {
		return w.err
	}
	var held []byte
	if w.hold != nil {
		held = *w.hold
	}
	err := w.st.respond(w.headerBlock(held), held, nil, end)
	if w.hold != nil {
		*w.hold = (*w.hold)[:0]
	}
	if err != nil {
		w.err = err
	}
	return err
}

// Flush implements http.Flusher.
func (w *responseWriter) Flush() { _ = w.FlushError() }

// FlushError is Flush, with the error (http.ResponseController).
func (w *responseWriter) FlushError() error {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	w.st.moved.Add(1)
	if w.sent && (w.hold == nil || len(*w.hold) == 0) {
		return w.err
	}
	return w.flush(false)
}

// SetReadDeadline bounds the reads of the request's body
// (http.ResponseController).
func (w *responseWriter) SetReadDeadline(t time.Time) error {
	w.st.body.setDeadline(t)
	return nil
}

// SetWriteDeadline bounds the response's writes; a deadline that passes
// resets the stream (http.ResponseController).
func (w *responseWriter) SetWriteDeadline(t time.Time) error {
	w.st.setWriteDeadline(t)
	return nil
}

// EnableFullDuplex: HTTP/2 is (http.ResponseController).
func (w *responseWriter) EnableFullDuplex() error { return nil }

// finish ends the response after the handler returned: the header
// block if it has not gone out (with a Content-Length when the whole
// body was held back), the body held back, and the trailers or
// END_STREAM — one write when they fit the client's windows.
func (w *responseWriter) finish() {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	var held []byte
	if w.hold != nil {
		held = *w.hold
	}
	trs := w.trailerBlock()
	if !w.sent && !w.hasLen && trs == nil && !w.noBody && !w.headOnly {
		var nb [20]byte
		w.hblock = h2wire.AppendLiteral(w.hblock, "content-length", strconv.AppendInt(nb[:0], int64(len(held)), 10))
	}
	if w.err == nil {
		_ = w.st.respond(w.headerBlock(held), held, trs, true)
	}
}

// trailerBlock encodes the trailers the handler declared ("Trailer")
// and set, and those it set with http.TrailerPrefix; nil when none.
func (w *responseWriter) trailerBlock() []byte {
	b := w.tbuf[:0]
	for _, k := range w.trailers {
		if vv := w.header[k]; len(vv) > 0 && httpguts.ValidTrailerHeader(k) {
			b = h2wire.AppendFields(b, k, vv)
		}
	}
	for k, vv := range w.header {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok && httpguts.ValidTrailerHeader(name) {
			b = h2wire.AppendFields(b, name, vv)
		}
	}
	if len(b) == 0 {
		return nil
	}
	return b
}

// release gives back what the writer holds, once the handler is done.
func (w *responseWriter) release() {
	if w.hold != nil {
		*w.hold = (*w.hold)[:0]
		holdBufs.Put(w.hold)
		w.hold = nil
	}
}

// Header blocks the server answers with by itself.
var (
	status100 = h2wire.AppendStatus(nil, http.StatusContinue)
	status431 = h2wire.AppendStatus(nil, http.StatusRequestHeaderFieldsTooLarge)
)
