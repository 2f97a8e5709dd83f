package xdsclient

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// blackhole forwards TCP to a backend until frozen; then it silently drops
// everything both ways, like a control plane host that vanished without
// closing its connections.
type blackhole struct {
	ln     net.Listener
	frozen atomic.Bool
	mu     sync.Mutex
	conns  []net.Conn
	wg     sync.WaitGroup
}

func newBlackhole(t *testing.T, backend string) *blackhole {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &blackhole{ln: ln}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
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
			b.mu.Lock()
			b.conns = append(b.conns, c, u)
			b.mu.Unlock()
			b.wg.Add(2)
			go b.pipe(c, u)
			go b.pipe(u, c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		b.mu.Lock()
		for _, c := range b.conns {
			c.Close()
		}
		b.mu.Unlock()
		b.wg.Wait()
	})
	return b
}

func (b *blackhole) pipe(dst, src net.Conn) {
	defer b.wg.Done()
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
