package xdsclient

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// frameCounter relays one TCP connection to a backend and parses what
// the client sends as HTTP/2 frames, counting its PINGs (not their ACKs)
// and its SETTINGS.
type frameCounter struct {
	ln     net.Listener
	pings  atomic.Int64
	window atomic.Uint32 // the client's SETTINGS_INITIAL_WINDOW_SIZE
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []io.Closer
}

func newFrameCounter(t *testing.T, backend string) *frameCounter {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &frameCounter{ln: ln}
	f.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", backend)
			if err != nil {
				c.Close()
				continue
			}
			pr, pw := io.Pipe()
			f.mu.Lock()
			f.conns = append(f.conns, c, u, pr, pw)
			f.mu.Unlock()
			f.wg.Go(func() { _, _ = io.Copy(c, u); c.Close() })
			f.wg.Go(func() {
				_, _ = io.Copy(u, io.TeeReader(c, pw))
				u.Close()
				pw.Close()
			})
			f.wg.Go(func() { f.parse(pr) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		f.mu.Lock()
		for _, c := range f.conns {
			c.Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
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
