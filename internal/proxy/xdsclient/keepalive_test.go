package xdsclient

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// relay accepts TCP connections, dials backend for each and hands both
// ends to serve, which runs its goroutines with r.Go. The test's cleanup
// closes the listener and every connection and waits for them.
type relay struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns []io.Closer
}

func newRelay(t *testing.T, backend string, serve func(r *relay, client, upstream net.Conn)) *relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{ln: ln}
	r.wg.Go(func() {
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
			r.track(c, u)
			serve(r, c, u)
		}
	})
	t.Cleanup(func() {
		ln.Close()
		r.mu.Lock()
		for _, c := range r.conns {
			c.Close()
		}
		r.mu.Unlock()
		r.wg.Wait()
	})
	return r
}

// track has cleanup close cs too.
func (r *relay) track(cs ...io.Closer) {
	r.mu.Lock()
	r.conns = append(r.conns, cs...)
	r.mu.Unlock()
}

// Go runs f as one of the relay's goroutines.
func (r *relay) Go(f func()) { r.wg.Go(f) }

// blackhole forwards TCP to a backend until frozen; then it silently drops
// everything both ways, like a control plane host that vanished without
// closing its connections.
type blackhole struct {
	*relay
	frozen atomic.Bool
}

func newBlackhole(t *testing.T, backend string) *blackhole {
	b := &blackhole{}
	b.relay = newRelay(t, backend, func(r *relay, c, u net.Conn) {
		r.Go(func() { b.pipe(c, u) })
		r.Go(func() { b.pipe(u, c) })
	})
	return b
}

func (b *blackhole) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !b.frozen.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil { // io.EOF or closed
			return
		}
	}
}

// TestKeepaliveNoticesDeadControlPlane: a control plane that stops
// answering while its host's TCP stack still acknowledges (this relay keeps
// ACKing at the kernel, so TCP keepalive and TCP_USER_TIMEOUT see nothing):
// only HTTP/2 pings tell. gRPC does not ping more often than every 10s, so
// this takes about KeepaliveTime+KeepaliveTimeout. A vanished host is
// noticed sooner; see TestControlPlaneBlackhole in e2e/registries.
func TestKeepaliveNoticesDeadControlPlane(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for a keepalive ping (about 11s)")
	}
	ctx := testCtx(t)
	srv := startServer(t, "127.0.0.1:0")
	bh := newBlackhole(t, srv.addr)
	c, rec := startClient(t, bh.ln.Addr().String(), func(o *Options) {
		o.KeepaliveTime, o.KeepaliveTimeout = 10*time.Second, time.Second
	})
	fs := srv.nextStream(ctx, t)
	bootstrap(ctx, t, fs, rec, "1")

	bh.frozen.Store(true)
	start := time.Now()
	deadline := time.After(20 * time.Second)
	for c.Connected() {
		select {
		case <-deadline:
			t.Fatalf("dead control plane not noticed after %v", time.Since(start))
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Logf("dead control plane noticed after %v", time.Since(start))
	if s := c.Stats(); s.Applies != 1 || s.NACKs != 0 {
		t.Errorf("Stats = %+v: the Applier must not be touched while disconnected", s)
	}
}
