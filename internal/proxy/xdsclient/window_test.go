package xdsclient

import (
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// frameCounter relays TCP connections to a backend and parses what the
// client sends as HTTP/2 frames, counting its PINGs (not their ACKs) and
// keeping its initial window setting.
type frameCounter struct {
	*relay
	pings  atomic.Int64
	window atomic.Uint32 // the client's SETTINGS_INITIAL_WINDOW_SIZE
}

func newFrameCounter(t *testing.T, backend string) *frameCounter {
	f := &frameCounter{}
	f.relay = newRelay(t, backend, func(r *relay, c, u net.Conn) {
		pr, pw := io.Pipe()
		r.track(pr, pw)
		r.Go(func() { _, _ = io.Copy(c, u); c.Close() })
		r.Go(func() {
			_, _ = io.Copy(u, io.TeeReader(c, pw))
			u.Close()
			pw.Close()
		})
		r.Go(func() { f.parse(pr) })
	})
	return f
}

func (f *frameCounter) parse(r *io.PipeReader) {
	defer io.Copy(io.Discard, r) // never block the relay
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(r, preface); err != nil {
		return
	}
	fr := http2.NewFramer(nil, r)
	fr.SetMaxReadFrameSize(1 << 24)
	for {
		frame, err := fr.ReadFrame()
		if err != nil {
			return
		}
		switch fr := frame.(type) {
		case *http2.PingFrame:
			if !fr.IsAck() {
				f.pings.Add(1)
			}
		case *http2.SettingsFrame:
			if v, ok := fr.Value(http2.SettingInitialWindowSize); ok {
				f.window.Store(v)
			}
		}
	}
}

// TestNoPingPerResponse: the connection to the control plane has a fixed
// window, so gRPC-Go's bandwidth estimator, which sends a PING with the
// first DATA frame of every response, is off: pushes to thousands of
// proxies cost one frame each way, not two.
func TestNoPingPerResponse(t *testing.T) {
	ctx := testCtx(t)
	srv := startServer(t, "127.0.0.1:0")
	relay := newFrameCounter(t, srv.addr)
	_, rec := startClient(t, relay.ln.Addr().String(), func(o *Options) {
		o.KeepaliveTime = time.Hour // no keepalive pings in the count
	})
	fs := srv.nextStream(ctx, t)
	bootstrap(ctx, t, fs, rec, "1")
	for _, v := range []string{"2", "3", "4"} {
		n := fs.send(ctx, t, TypeEndpoint, v, cla("c1"))
		fs.expect(ctx, t, TypeEndpoint, "ACK of "+v, isACK(v, n))
	}
	if got := relay.window.Load(); got != WindowSize {
		t.Errorf("client's initial window %d, want %d", got, WindowSize)
	}
	if n := relay.pings.Load(); n != 0 {
		t.Errorf("client sent %d PINGs over 7 responses, want none", n)
	}
}
