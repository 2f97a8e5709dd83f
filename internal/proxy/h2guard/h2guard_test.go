package h2guard

import (
	"context"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// frame is an HTTP/2 frame of type t with flags and a payload of n bytes
// on stream 1.
func frame(t, flags byte, n int) []byte {
	b := []byte{byte(n >> 16), byte(n >> 8), byte(n), t, flags, 0, 0, 0, 1}
	return append(b, make([]byte, n)...)
}

var (
	settings     = frame(0x4, 0, 0)
	headersOpen  = frame(frameHeaders, 0, 10)                  // no END_HEADERS
	headersDone  = frame(frameHeaders, flagEndHeaders|0x1, 10) // END_HEADERS, END_STREAM
	continuation = frame(frameContinuation, 0, 3)              // more of the block
	contDone     = frame(frameContinuation, flagEndHeaders, 3) // the block's end
	ping         = frame(0x6, 0, 8)                            // PING
)

// served is a guarded server side of a connection whose reads run on a
// goroutine, as an HTTP server's: closed reports the guard closing it.
type served struct {
	client   net.Conn
	closed   chan struct{}
	timeouts atomic.Int32
}

func serve(t *testing.T, timeout time.Duration) *served {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	raw, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	s := &served{client: client, closed: make(chan struct{})}
	on := func() { s.timeouts.Add(1) }
	c := New(raw, Options{HeaderTimeout: timeout, OnTimeout: on})
	go func() { io.Copy(io.Discard, c); close(s.closed) }()
	t.Cleanup(func() { client.Close(); c.Close(); <-s.closed })
	return s
}

func (s *served) send(t *testing.T, bs ...[]byte) {
	t.Helper()
	for _, b := range bs {
		if _, err := s.client.Write(b); err != nil {
			t.Fatal(err)
		}
	}
}

// waitClosed waits (bounded) for the guard to close the connection.
func (s *served) waitClosed(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	select {
	case <-s.closed:
	case <-ctx.Done():
		t.Fatal("the connection was not closed")
	}
	if s.timeouts.Load() != 1 {
		t.Errorf("onTimeout called %d times, want 1", s.timeouts.Load())
	}
}

// open says whether the connection is still open: a round of bytes sent
// and the reader not done. (Only ever asserted where no clock runs, so
// there is no timing in it.)
func (s *served) open() bool {
	select {
	case <-s.closed:
		return false
	default:
		return true
	}
}

const short = 50 * time.Millisecond

func TestClosesWithoutHeaders(t *testing.T) {
	for _, tc := range []struct {
		name string
		send [][]byte
	}{
		{"preface and SETTINGS, then nothing", [][]byte{[]byte(Preface), settings}},
		{"preface in pieces, then PINGs", [][]byte{[]byte(Preface[:5]), []byte(Preface[5:]), settings, ping, ping}},
		{"nothing at all", nil},
		{"preface only", [][]byte{[]byte(Preface)}},
		{"a HEADERS frame never ended", [][]byte{[]byte(Preface), settings, headersOpen}},
		{"CONTINUATION frames, never the last", [][]byte{[]byte(Preface), settings, headersOpen, continuation, continuation}},
		{"END_HEADERS frame's payload never all sent", [][]byte{[]byte(Preface), settings, headersDone[:12]}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := serve(t, short)
			s.send(t, tc.send...)
			s.waitClosed(t)
		})
	}
}

// TestLaterBlocksTimed: after a complete request, the connection may be
// idle (no clock runs), but a header block it starts must end in time.
func TestLaterBlocksTimed(t *testing.T) {
	s := serve(t, short)
	s.send(t, []byte(Preface), settings, headersDone, headersOpen[:9])
	s.send(t, headersOpen[9:], contDone, ping)
	// No clock runs: the block ended. One more block that never ends.
	if !s.open() {
		t.Fatal("closed after complete header blocks")
	}
	s.send(t, headersOpen, continuation)
	s.waitClosed(t)
}

// TestCompleteFirstBlockStopsClock: a request's complete header block in
// time stops the first clock; the connection stays open while idle.
func TestCompleteFirstBlockStopsClock(t *testing.T) {
	s := serve(t, short)
	s.send(t, []byte(Preface), settings, headersOpen, contDone)
	time.Sleep(4 * short)
	if !s.open() || s.timeouts.Load() != 0 {
		t.Fatal("an idle connection that had sent a complete request was closed")
	}
}

// TestWithoutPreface: bytes that are not the preface end the reads, so
// the server closes the connection instead of reading HTTP/1.1 there.
func TestWithoutPreface(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	c := New(b, Options{HeaderTimeout: time.Minute})
	defer c.Close()
	go a.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	buf := make([]byte, 64)
	if n, err := c.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("Read = %d, %v; want 0, EOF", n, err)
	}
	if n, err := c.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("second Read = %d, %v; want 0, EOF", n, err)
	}
}
