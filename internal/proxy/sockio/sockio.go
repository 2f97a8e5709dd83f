// Package sockio reads and writes the data path's TCP sockets with raw
// system calls, so that the Go scheduler's monitor thread is not woken
// by each of them.
//
// A read or write through net.Conn enters the runtime's system-call
// state (entersyscall). When every P has gone idle — a proxy at a
// moderate rate is idle most of the time between requests — the
// runtime's monitor thread (sysmon) sleeps until a goroutine next
// enters a system call; that call wakes it (a futex wake-up, another
// thread scheduled) and sets it back to polling every 20 µs for the
// next millisecond or more. A sidecar at 1,000 requests/s so paid, on
// every request, for waking a second thread and a string of timer sleeps
// on it: about one context switch per request of its two
// (bench/ab.sh, docs/benchmarks.md). The data path's sockets are
// non-blocking — Go's poller owns them — so a read or write never
// sleeps in the kernel and the scheduler need not know of it: IO waits
// on the poller as net.Conn does (RawConn), deadlines and Close
// included, and issues the read(2) or write(2) itself as a raw system
// call.
//
// Setting WEFT_SOCKIO=off in the proxy's environment keeps net.Conn's
// own reads and writes (an escape hatch and the baseline of bench/ab.sh).
package sockio

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
)

// Enabled reports whether the raw path is used (WEFT_SOCKIO is not "off"
// and the platform has it).
var Enabled = os.Getenv("WEFT_SOCKIO") != "off" && supported

// IO does a TCP connection's reads and writes. The zero value is not in
// use (Ok reports false) and its owner reads and writes as before; Init
// sets it up. One read and one write may run at once, as on net.Conn.
type IO struct {
	c  *net.TCPConn
	rc syscall.RawConn

	rmu  sync.Mutex // held by the read in progress, which owns rp, rn and rerr
	rp   []byte
	rn   int
	rerr error
	rfn  func(fd uintptr) bool

	wmu  sync.Mutex // held by the write in progress, which owns wp, wn and werr
	wp   []byte
	wn   int
	werr error
	wfn  func(fd uintptr) bool

	quiet bool    // Quiet's answer, under rmu
	qb    [1]byte // Quiet's peek buffer
	qfn   func(fd uintptr)
}

// Init sets s up for c's socket and reports whether it is in use: false
// when the raw path is off or c has no socket to give.
func (s *IO) Init(c *net.TCPConn) bool {
	if !Enabled || c == nil {
		return false
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return false
	}
	s.c, s.rc = c, rc
	s.rfn, s.wfn, s.qfn = s.read, s.write, s.peek // method values made once, not per call
	return true
}

// Ok reports whether Init set s up.
func (s *IO) Ok() bool { return s.rc != nil }

// Read is net.Conn's Read: io.EOF when the peer has closed its side, a
// *net.OpError otherwise, as net.Conn returns them.
func (s *IO) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.rmu.Lock()
	s.rp, s.rn, s.rerr = p, 0, nil
	err := s.rc.Read(s.rfn)
	n, rerr := s.rn, s.rerr
	s.rp, s.rerr = nil, nil
	s.rmu.Unlock()
	if err != nil {
		return n, s.opError("read", err)
	}
	if rerr != nil && rerr != io.EOF {
		return n, s.opError("read", rerr)
	}
	return n, rerr
}

// Quiet reports whether the socket is open with nothing to read: one
// non-blocking MSG_PEEK, which neither waits nor consumes. An idle
// upstream connection that is not quiet was closed by its peer or has
// sent something unsolicited. It must not run beside a Read.
func (s *IO) Quiet() bool {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	s.quiet = false
	if err := s.rc.Control(s.qfn); err != nil {
		return false
	}
	return s.quiet
}

// Write is net.Conn's Write: all of p, or the bytes written and an error.
func (s *IO) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.wmu.Lock()
	s.wp, s.wn, s.werr = p, 0, nil
	err := s.rc.Write(s.wfn)
	n, werr := s.wn, s.werr
	s.wp, s.werr = nil, nil
	s.wmu.Unlock()
	if err == nil {
		err = werr
	}
	if err != nil {
		return n, s.opError("write", err)
	}
	return n, nil
}

// opError wraps err as net.Conn does: the poller's errors (a deadline,
// a closed connection) come from RawConn already wrapped, as op
// "raw-read" or "raw-write", and are renamed; an errno from the system
// call is wrapped fresh.
func (s *IO) opError(op string, err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) {
		oe.Op = op
		return oe
	}
	return &net.OpError{Op: op, Net: "tcp", Source: s.c.LocalAddr(), Addr: s.c.RemoteAddr(), Err: err}
}
