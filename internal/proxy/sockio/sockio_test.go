//go:build linux

package sockio

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"
)

// pair returns a connected loopback pair: a is read and written through
// an IO, b is a plain *net.TCPConn.
func pair(t testing.TB) (*IO, *net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acc <- c
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-acc
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	var s IO
	if !s.Init(a.(*net.TCPConn)) {
		t.Fatal("Init: false")
	}
	return &s, a.(*net.TCPConn), b.(*net.TCPConn)
}

// TestLargeBothWays moves 8 MiB each way at once, so writes fill the
// socket buffer and wait on the poller, and reads find nothing yet.
func TestLargeBothWays(t *testing.T) {
	s, _, b := pair(t)
	out := make([]byte, 8<<20)
	rand.Read(out)
	in := make([]byte, 8<<20)
	rand.Read(in)
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { // through s
		defer wg.Done()
		if n, err := s.Write(out); n != len(out) || err != nil {
			t.Errorf("Write = %d, %v", n, err)
		}
	}()
	var gotByS []byte
	go func() {
		defer wg.Done()
		buf := make([]byte, 0, len(in))
		p := make([]byte, 3000) // odd size: many partial reads
		for len(buf) < len(in) {
			n, err := s.Read(p)
			buf = append(buf, p[:n]...)
			if err != nil {
				t.Errorf("Read after %d bytes: %v", len(buf), err)
				return
			}
		}
		gotByS = buf
	}()
	var gotByB []byte
	go func() { // the plain side, slowly at first
		defer wg.Done()
		time.Sleep(50 * time.Millisecond)
		go func() {
			if _, err := b.Write(in); err != nil {
				t.Errorf("peer Write: %v", err)
			}
		}()
		buf, err := io.ReadAll(io.LimitReader(b, int64(len(out))))
		if err != nil {
			t.Errorf("peer read: %v", err)
		}
		gotByB = buf
	}()
	wg.Wait()
	if !bytes.Equal(gotByB, out) {
		t.Errorf("peer got %d bytes, not what was written", len(gotByB))
	}
	if !bytes.Equal(gotByS, in) {
		t.Errorf("IO read %d bytes, not what the peer wrote", len(gotByS))
	}
}

func TestEOF(t *testing.T) {
	s, _, b := pair(t)
	b.Write([]byte("last"))
	b.Close()
	p := make([]byte, 16)
	n, err := s.Read(p)
	if n != 4 || err != nil || string(p[:4]) != "last" {
		t.Fatalf("Read = %d %q, %v; want the last bytes", n, p[:n], err)
	}
	if n, err := s.Read(p); n != 0 || err != io.EOF {
		t.Fatalf("Read after the peer closed = %d, %v; want 0, io.EOF (bare)", n, err)
	}
}

func TestZeroLength(t *testing.T) {
	s, _, _ := pair(t)
	if n, err := s.Read(nil); n != 0 || err != nil {
		t.Errorf("Read(nil) = %d, %v", n, err)
	}
	if n, err := s.Write(nil); n != 0 || err != nil {
		t.Errorf("Write(nil) = %d, %v", n, err)
	}
}

// TestDeadline: a read past its deadline fails as net.Conn's does.
func TestDeadline(t *testing.T) {
	s, a, _ := pair(t)
	a.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err := s.Read(make([]byte, 8))
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read past the deadline: %v; want a timeout", err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "read" {
		t.Errorf("error %#v; want a *net.OpError with Op read", err)
	}
	// A deadline already past fails before any system call; a later one
	// lets the read through.
	a.SetReadDeadline(time.Now().Add(-time.Second))
	if _, err := s.Read(make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Read with a past deadline: %v", err)
	}
	a.SetReadDeadline(time.Time{})
}

// TestCloseWakesRead: Close interrupts a read waiting on the poller.
func TestCloseWakesRead(t *testing.T) {
	s, a, _ := pair(t)
	done := make(chan error, 1)
	go func() {
		_, err := s.Read(make([]byte, 8))
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	a.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Read on a closed connection: %v; want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Read still waiting after Close")
	}
}

// TestReset: an errno from the system call arrives as net.Conn's does,
// wrapped in an OpError with the addresses, and errors.Is finds it.
func TestReset(t *testing.T) {
	s, a, b := pair(t)
	b.SetLinger(0)
	b.Close() // RST
	time.Sleep(20 * time.Millisecond)
	_, err := s.Read(make([]byte, 8))
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("Read after a reset: %v; want ECONNRESET", err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "read" || oe.Addr.String() != a.RemoteAddr().String() || oe.Source.String() != a.LocalAddr().String() {
		t.Errorf("error %#v; want an OpError like net.Conn's", err)
	}
	var werr error
	for i := 0; i < 10 && werr == nil; i++ { // the first write may be taken before the RST is seen
		_, werr = s.Write([]byte("x"))
	}
	if !errors.Is(werr, syscall.EPIPE) && !errors.Is(werr, syscall.ECONNRESET) {
		t.Errorf("Write after a reset: %v; want EPIPE or ECONNRESET", werr)
	}
}

func TestOff(t *testing.T) {
	defer func(e bool) { Enabled = e }(Enabled)
	Enabled = false
	var s IO
	c, err := net.Dial("tcp", "127.0.0.1:1")
	if err == nil {
		defer c.Close()
	}
	if tc, _ := c.(*net.TCPConn); s.Init(tc) || s.Ok() {
		t.Error("Init with the raw path off: true")
	}
}

// TestNoAllocations: a read and a write allocate nothing.
func TestNoAllocations(t *testing.T) {
	s, _, b := pair(t)
	p := make([]byte, 64)
	q := make([]byte, 64)
	r := readerFunc(s.Read)
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := s.Write(p); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(b, q); err != nil {
			t.Fatal(err)
		}
		b.Write(q)
		if _, err := io.ReadFull(r, p); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 0 {
		t.Errorf("%.1f allocations per write and read; want 0", allocs)
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// BenchmarkPingPong is a 1 KiB request and answer over loopback, read
// and written through IO (raw) and through net.Conn (net).
func BenchmarkPingPong(b *testing.B) {
	for _, raw := range []bool{true, false} {
		name := "net"
		if raw {
			name = "raw"
		}
		b.Run(name, func(b *testing.B) {
			s, a, peer := pair(b)
			var rw io.ReadWriter = a
			if raw {
				rw = struct {
					io.Reader
					io.Writer
				}{readerFunc(s.Read), writerFunc(s.Write)}
			}
			go func() {
				buf := make([]byte, 1024)
				for {
					if _, err := io.ReadFull(peer, buf); err != nil {
						return
					}
					if _, err := peer.Write(buf); err != nil {
						return
					}
				}
			}()
			buf := make([]byte, 1024)
			b.SetBytes(2048)
			b.ReportAllocs()
			for b.Loop() {
				rw.Write(buf)
				if _, err := io.ReadFull(rw, buf); err != nil {
					b.Fatal(err)
				}
			}
			a.Close()
			peer.Close()
		})
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestQuiet: an open connection with nothing to read is quiet; one with
// unread bytes, or closed by its peer, is not; peeking consumes nothing.
func TestQuiet(t *testing.T) {
	s, _, b := pair(t)
	if !s.Quiet() {
		t.Fatal("an idle open connection: not quiet")
	}
	b.Write([]byte("x"))
	time.Sleep(20 * time.Millisecond)
	if s.Quiet() {
		t.Fatal("unread bytes: quiet")
	}
	p := make([]byte, 4)
	if n, err := s.Read(p); n != 1 || err != nil || p[0] != 'x' {
		t.Fatalf("Read after Quiet = %d %q, %v; the peek consumed the byte", n, p[:n], err)
	}
	if !s.Quiet() {
		t.Fatal("after the read: not quiet")
	}
	b.Close()
	time.Sleep(20 * time.Millisecond)
	if s.Quiet() {
		t.Fatal("closed by the peer: quiet")
	}
	if allocs := testing.AllocsPerRun(100, func() { s.Quiet() }); allocs > 0 {
		t.Errorf("Quiet: %.1f allocations, want 0", allocs)
	}
}
