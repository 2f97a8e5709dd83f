package h2server

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"weft.dev/weft/internal/h2wire"
)

// FuzzServe: whatever a client sends after the preface — frames of any
// kind, order and size, cut on the wire anywhere — the server neither
// panics nor hangs: once the client's bytes end and it closes, ServeConn
// returns, which it does after every handler it started. cut is where the bytes
// are split into writes (every cut-th byte; 0: one write).
func FuzzServe(f *testing.F) {
	var buf bytes.Buffer
	fr := http2.NewFramer(&buf, nil)
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	block := func(kv ...string) []byte {
		hb.Reset()
		for i := 0; i < len(kv); i += 2 {
			enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
		}
		return append([]byte(nil), hb.Bytes()...)
	}
	get := []string{":method", "GET", ":scheme", "http", ":path", "/", ":authority", "a"}
	post := []string{":method", "POST", ":scheme", "http", ":path", "/p", ":authority", "a", "content-length", "4"}
	fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 10})
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(get...), EndStream: true, EndHeaders: true})
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block(post...), EndHeaders: true, PadLength: 2})
	fr.WriteData(3, false, []byte("bo"))
	fr.WriteWindowUpdate(0, 100)
	fr.WriteData(3, true, []byte("dy"))
	b := block(append(get, "x-a", "b")...)
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 5, BlockFragment: b[:2]})
	fr.WriteContinuation(5, true, b[2:])
	fr.WriteRSTStream(5, http2.ErrCodeCancel)
	fr.WritePing(false, [8]byte{1})
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 7, BlockFragment: block(append(get, "te", "gzip")...), EndStream: true, EndHeaders: true})
	fr.WriteGoAway(7, http2.ErrCodeNo, nil)
	f.Add(buf.Bytes(), uint16(0))
	f.Add(buf.Bytes(), uint16(1))
	f.Add(buf.Bytes(), uint16(7))
	f.Add([]byte{0, 0, 5, 1, 0x2c, 0, 0, 0, 1, 9, 0, 0, 0, 0}, uint16(0)) // padded, priority, pad too long
	f.Add([]byte{0, 0, 4, 8, 0, 0, 0, 0, 3, 0, 0, 0, 1}, uint16(3))       // WINDOW_UPDATE on an idle stream
	f.Fuzz(func(t *testing.T, in []byte, cut uint16) {
		s := &Server{MaxConcurrentStreams: 4, MaxHeaderBytes: 1 << 10, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Trailer", "X-T")
			io.WriteString(w, "answer")
			w.(http.Flusher).Flush()
			w.Header().Set("X-T", "1")
		})}
		client, server := net.Pipe()
		done := make(chan struct{})
		go func() {
			s.ServeConn(context.Background(), server)
			close(done)
		}()
		go io.Copy(io.Discard, client) // the server's writes never block
		client.SetWriteDeadline(time.Now().Add(5 * time.Second))
		data := append([]byte(h2wire.Preface), in...)
		step := int(cut)
		if step == 0 {
			step = len(data)
		}
		for len(data) > 0 {
			n := min(step, len(data))
			if _, err := client.Write(data[:n]); err != nil {
				break // the server closed the connection
			}
			data = data[n:]
		}
		client.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("ServeConn (or a handler) did not return after the client closed")
		}
	})
}
