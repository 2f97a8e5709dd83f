package h1server

import (
	"bufio"
	"net"
	"net/http"
	"strconv"
	"strings"

	"weft.dev/weft/internal/proxy/httpdate"
)

// bufferBeforeChunking is how many body bytes a response holds before
// its head is sent: a handler that writes no more and returns gets a
// Content-Length instead of chunked framing (net/http's 2048).
const bufferBeforeChunking = 2048

// response is the ResponseWriter of a connection's requests, reused.
// It implements http.Flusher, http.Hijacker and what
// http.ResponseController looks for (FlushError, EnableFullDuplex).
type response struct {
	c      *conn
	req    *http.Request
	header http.Header // the handler's, reused: cleared for each request

	status      int
	wroteHeader bool   // the final status is set, the header serialized
	committed   bool   // the head has been written to the connection's buffer
	hdr         []byte // the header fields as of WriteHeader
	hasDate     bool
	hasType     bool
	hasCloseHdr bool
	cl          int64 // Content-Length the handler set; -1: none
	trailers    []string
	noBody      bool // HEAD, 1xx, 204, 304
	headOnly    bool // HEAD
	chunked     bool
	buf         []byte // body held before the head is sent
	written     int64
	closeAfter  bool
	hijacked    bool
	werr        error
}

var (
	_ http.Flusher  = (*response)(nil)
	_ http.Hijacker = (*response)(nil)
)

func (w *response) reset(req *http.Request) {
	clear(w.header)
	*w = response{c: w.c, req: req, header: w.header, hdr: w.hdr[:0], buf: w.buf[:0], cl: -1, trailers: w.trailers[:0]}
	w.headOnly = req.Method == http.MethodHead
}

// Header implements http.ResponseWriter.
func (w *response) Header() http.Header { return w.header }

// WriteHeader implements http.ResponseWriter: the header is serialized
// now (later changes are not sent, as with net/http), the head is sent
// with the first body bytes past bufferBeforeChunking, a Flush, or the
// handler's return.
func (w *response) WriteHeader(code int) {
	if w.hijacked {
		w.c.s.logf("WriteHeader on a hijacked connection", "remote", w.c.remote)
		return
	}
	if w.wroteHeader {
		w.c.s.logf("superfluous WriteHeader", "remote", w.c.remote, "code", code)
		return
	}
	if code < 100 || code > 999 {
		panic("invalid WriteHeader code " + strconv.Itoa(code))
	}
	if code < 200 && code != http.StatusSwitchingProtocols {
		w.informational(code)
		return
	}
	w.wroteHeader, w.status = true, code
	w.noBody = w.headOnly || code < 200 || code == http.StatusNoContent || code == http.StatusNotModified
	w.hdr = w.appendFields(w.hdr[:0], true)
}

// appendFields serializes the handler's header fields, noting those the
// framing depends on when final.
func (w *response) appendFields(b []byte, final bool) []byte {
	for k, vv := range w.header {
		switch k {
		case "Content-Length":
			if final && len(vv) > 0 {
				if n, ok := parseLength(trimOWS(vv[0])); ok {
					w.cl = n
				}
			}
			continue // sent with the framing
		case "Transfer-Encoding":
			continue // the framing is ours
		case "Date":
			w.hasDate = true
		case "Content-Type":
			w.hasType = true
		case "Connection":
			if containsToken(vv, "close") {
				w.hasCloseHdr, w.closeAfter = true, true
			}
		case "Trailer":
			if final {
				for _, v := range vv {
					for _, t := range strings.Split(v, ",") {
						if t = trimOWS(t); t != "" {
							w.trailers = append(w.trailers, canonicalKey(t))
						}
					}
				}
			}
		}
		if strings.HasPrefix(k, http.TrailerPrefix) || !validToken(k) {
			continue
		}
		for _, v := range vv {
			b = append(b, k...)
			b = append(b, ": "...)
			b = appendValue(b, v)
			b = append(b, "\r\n"...)
		}
	}
	return b
}

// appendValue appends v with CR and LF made spaces (no response
// splitting) and its ends trimmed, as net/http.
func appendValue(b []byte, v string) []byte {
	v = trimOWS(v)
	if strings.IndexByte(v, '\r') >= 0 || strings.IndexByte(v, '\n') >= 0 {
		return append(b, crlfToSpace.Replace(v)...)
	}
	return append(b, v...)
}

var crlfToSpace = strings.NewReplacer("\r", " ", "\n", " ")

// informational sends a 1xx response at once.
func (w *response) informational(code int) {
	w.c.wmu.Lock()
	defer w.c.wmu.Unlock()
	bw := w.c.bw
	bw.WriteString(statusLine(code))
	bw.Write(w.appendFields(nil, false))
	bw.WriteString("\r\n")
	if err := bw.Flush(); err != nil {
		w.werr = err
	}
}

// Write implements http.ResponseWriter.
func (w *response) Write(p []byte) (int, error) {
	if w.hijacked {
		return 0, http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if w.noBody {
		if w.headOnly {
			return len(p), nil
		}
		return 0, http.ErrBodyNotAllowed
	}
	if w.cl >= 0 && w.written+int64(len(p)) > w.cl {
		return 0, http.ErrContentLength
	}
	if w.werr != nil {
		return 0, w.werr
	}
	w.written += int64(len(p))
	if !w.committed && w.cl < 0 && len(w.buf)+len(p) <= bufferBeforeChunking {
		w.buf = append(w.buf, p...)
		return len(p), nil
	}
	w.c.wmu.Lock()
	defer w.c.wmu.Unlock()
	if !w.committed {
		w.commit(false, p)
	}
	bw := w.c.bw
	if w.chunked {
		bw.WriteString(strconv.FormatInt(int64(len(p)), 16))
		bw.WriteString("\r\n")
		bw.Write(p)
		_, err := bw.WriteString("\r\n")
		w.werr = err
	} else {
		_, w.werr = bw.Write(p)
	}
	if w.werr != nil {
		return 0, w.werr
	}
	return len(p), nil
}

// commit writes the head and what the body held, choosing the framing:
// the handler's Content-Length; the held bytes' length when the handler
// has returned (final); else chunked (HTTP/1.1) or until the connection
// closes (HTTP/1.0). next is the first body bytes to come, for
// Content-Type sniffing. c.wmu is held.
func (w *response) commit(final bool, next []byte) {
	w.committed = true
	bw := w.c.bw
	if w.c.s.shutdown.Load() {
		w.closeAfter = true
	}
	bw.WriteString(statusLine(w.status))
	bw.Write(w.hdr)
	if !w.hasDate {
		bw.WriteString("Date: ")
		bw.Write(httpdate.Now())
		bw.WriteString("\r\n")
	}
	switch {
	case w.noBody:
		if w.cl >= 0 && w.status != http.StatusNoContent && w.status >= 200 {
			writeLength(bw, w.cl)
		}
	case w.cl >= 0:
		writeLength(bw, w.cl)
	case final && !w.hasTrailers():
		w.cl = int64(len(w.buf))
		writeLength(bw, w.cl)
	case w.req.ProtoAtLeast(1, 1):
		w.chunked = true
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	default:
		w.closeAfter = true
	}
	if !w.hasType && !w.noBody && (len(w.buf) > 0 || len(next) > 0) {
		sniff := w.buf
		if len(sniff) == 0 {
			sniff = next
		}
		bw.WriteString("Content-Type: ")
		bw.WriteString(http.DetectContentType(sniff))
		bw.WriteString("\r\n")
	}
	switch {
	case (w.closeAfter || w.req.Close) && !w.hasCloseHdr && w.req.ProtoAtLeast(1, 1):
		bw.WriteString("Connection: close\r\n")
	case !w.closeAfter && !w.req.Close && !w.req.ProtoAtLeast(1, 1):
		bw.WriteString("Connection: keep-alive\r\n")
	}
	bw.WriteString("\r\n")
	if len(w.buf) > 0 {
		if w.chunked {
			bw.WriteString(strconv.FormatInt(int64(len(w.buf)), 16))
			bw.WriteString("\r\n")
			bw.Write(w.buf)
			bw.WriteString("\r\n")
		} else {
			bw.Write(w.buf)
		}
		w.buf = w.buf[:0]
	}
}

// hasTrailers reports whether the handler declared or set trailers,
// which only chunked framing can carry.
func (w *response) hasTrailers() bool {
	if len(w.trailers) > 0 {
		return true
	}
	for k := range w.header {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			return true
		}
	}
	return false
}

func writeLength(bw *bufio.Writer, n int64) {
	bw.WriteString("Content-Length: ")
	// Digits appended to the writer's own free space: a local array
	// would escape through Write and be allocated for every response.
	bw.Write(strconv.AppendInt(bw.AvailableBuffer(), n, 10))
	bw.WriteString("\r\n")
}

// statusLines caches the common status lines.
var statusLines = func() map[int]string {
	m := map[int]string{}
	for code := 100; code < 600; code++ {
		if t := http.StatusText(code); t != "" {
			m[code] = "HTTP/1.1 " + strconv.Itoa(code) + " " + t + "\r\n"
		}
	}
	return m
}()

// StatusLine is the status line the server writes for code, CRLF
// included.
func StatusLine(code int) string { return statusLine(code) }

func statusLine(code int) string {
	if s, ok := statusLines[code]; ok {
		return s
	}
	return "HTTP/1.1 " + strconv.Itoa(code) + " status code " + strconv.Itoa(code) + "\r\n"
}

// Flush implements http.Flusher.
func (w *response) Flush() { w.FlushError() }

// FlushError sends the head (if not yet) and what is buffered.
func (w *response) FlushError() error {
	if w.hijacked {
		return http.ErrHijacked
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	w.c.wmu.Lock()
	defer w.c.wmu.Unlock()
	if !w.committed {
		w.commit(false, nil)
	}
	if err := w.c.bw.Flush(); err != nil {
		w.werr = err
		return err
	}
	return nil
}

// EnableFullDuplex is what http.ResponseController calls: request and
// response bodies always stream at the same time here.
func (w *response) EnableFullDuplex() error { return nil }

// Hijack implements http.Hijacker: the handler gets the connection and
// its buffers; the server no longer reads, writes or closes it.
func (w *response) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if w.hijacked {
		return nil, nil, http.ErrHijacked
	}
	c := w.c
	c.endWatch() // no background read may touch br now
	c.wmu.Lock()
	if w.committed {
		c.bw.Flush()
	}
	c.wmu.Unlock()
	w.hijacked = true
	c.s.untrack(c)
	return c.nc, bufio.NewReadWriter(c.br, c.bw), nil
}

// finish ends the response after the handler returned.
func (w *response) finish() {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	c := w.c
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if !w.committed {
		w.commit(true, nil)
	}
	bw := c.bw
	if w.chunked {
		bw.WriteString("0\r\n")
		for k, vv := range w.header {
			name, ok := strings.CutPrefix(k, http.TrailerPrefix)
			if !ok {
				continue
			}
			writeTrailer(bw, name, vv)
		}
		for _, k := range w.trailers {
			writeTrailer(bw, k, w.header[k])
		}
		bw.WriteString("\r\n")
	}
	if !w.noBody && w.cl >= 0 && w.written != w.cl {
		w.closeAfter = true // the client cannot find the next response
	}
	if err := bw.Flush(); err != nil {
		w.werr = err
	}
}

func writeTrailer(bw *bufio.Writer, name string, vv []string) {
	if !validToken(name) {
		return
	}
	for _, v := range vv {
		bw.WriteString(name)
		bw.WriteString(": ")
		bw.Write(appendValue(nil, v))
		bw.WriteString("\r\n")
	}
}

// writeContinue sends "100 Continue" unless the response has begun.
func (c *conn) writeContinue() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.w.committed {
		return nil
	}
	c.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
	return c.bw.Flush()
}
