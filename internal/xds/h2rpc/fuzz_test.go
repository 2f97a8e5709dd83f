package h2rpc

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"weft.dev/weft/internal/h2wire"
)

// FuzzConn: whatever a client sends after the preface — frames of any
// kind, order and size — the server neither panics nor hangs: the
// connection ends once the client has closed its side. The seeds are a
// well-formed call and its variations.
func FuzzConn(f *testing.F) {
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, kv := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", echoMethod}, {":authority", "x"}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
	}
	block := hb.Bytes()
	frames := func(write func(fr *http2.Framer)) []byte {
		var b bytes.Buffer
		fr := http2.NewFramer(&b, nil)
		fr.AllowIllegalWrites = true
		write(fr)
		return b.Bytes()
	}
	msg := []byte{0, 0, 0, 0, 3, 10, 1, 'x'}
	f.Add(frames(func(fr *http2.Framer) {
		_ = fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block, EndHeaders: true})
		_ = fr.WriteData(1, false, msg)
		_ = fr.WritePing(false, [8]byte{1})
		_ = fr.WriteWindowUpdate(0, 1000)
		_ = fr.WriteData(1, true, msg)
	}))
	f.Add(frames(func(fr *http2.Framer) {
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:3]})
		_ = fr.WriteContinuation(1, true, block[3:])
		_ = fr.WriteData(1, false, msg[:2])
		_ = fr.WriteData(1, false, msg[2:])
		_ = fr.WriteRSTStream(1, http2.ErrCodeCancel)
		_ = fr.WriteGoAway(1, http2.ErrCodeNo, nil)
	}))
	f.Add(frames(func(fr *http2.Framer) {
		_ = fr.WriteSettings(http2.Setting{ID: http2.SettingMaxFrameSize, Val: 1 << 20})
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block, EndHeaders: true, PadLength: 4})
		_ = fr.WriteData(3, true, []byte{1, 0, 0, 0, 1, 0})
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 5, BlockFragment: block, EndHeaders: true, EndStream: true})
	}))
	f.Add([]byte{0, 0, 0, 4, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		s := &Server{Open: func(st *Stream) StreamHandler {
			return handlerFuncs{message: func(b []byte) { go st.Send(b) }, closed: func(error) { go st.Finish(0, "") }}
		}}
		s.init()
		client, server := net.Pipe()
		done := make(chan struct{})
		go func() { s.serveConn(server); close(done) }()
		go func() { _, _ = io.Copy(io.Discard, client) }()
		_, _ = client.Write([]byte(h2wire.Preface))
		_, _ = client.Write(in)
		client.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("the connection did not end after the client closed it")
		}
	})
}
