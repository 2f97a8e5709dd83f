package server

import (
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The control plane's TCP connections: each accepted connection gets the
// keepalive timeout as TCP_USER_TIMEOUT (so a write to a peer that
// vanished fails in seconds, not in the kernel's ~15 minutes), and under
// TLS is read record by record (recordConn).

// connListener sets the keepalive timeout as TCP_USER_TIMEOUT on each
// accepted TCP connection and wraps it (wrap nil: as it is). Other
// connections are returned as they are.
type connListener struct {
	net.Listener
	userTimeout time.Duration // 0: none
	wrap        func(*net.TCPConn) net.Conn
}

func (l connListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return c, nil
	}
	setUserTimeout(tc, l.userTimeout)
	if l.wrap == nil {
		return tc, nil
	}
	return l.wrap(tc), nil
}

// recordConn is the TCP connection under a TLS one: each Read returns at
// most the rest of the current TLS record (its 5-byte header first,
// then its body). crypto/tls reads records into a buffer that it grows
// to hold whatever one read brings and never shrinks; when a proxy sent
// a burst of records — a subscription to 3,000 clusters by name is
// ~180 KB — that buffer kept ~40 KB per connection for the connection's
// life (81 MB at 2,000 proxies). Read record by record, it holds one
// record: at most what the peer puts in a record, 4 KiB from weft-proxy
// (whose write buffer for the control plane is that size). It costs a
// second read per record, and the control plane reads little.
type recordConn struct {
	*net.TCPConn
	hdr  [5]byte
	nhdr int
	left int // body bytes of the current record not yet read
}

func newRecordConn(tc *net.TCPConn) net.Conn { return &recordConn{TCPConn: tc} }

func (c *recordConn) Read(p []byte) (int, error) {
	if c.left == 0 {
		// At a record's header: read no further than its end.
		n, err := c.TCPConn.Read(p[:min(len(p), len(c.hdr)-c.nhdr)])
		copy(c.hdr[c.nhdr:], p[:n])
		c.nhdr += n
		if c.nhdr == len(c.hdr) {
			c.nhdr, c.left = 0, int(c.hdr[3])<<8|int(c.hdr[4])
		}
		return n, err
	}
	n, err := c.TCPConn.Read(p[:min(len(p), c.left)])
	c.left -= n
	return n, err
}

func setUserTimeout(tc *net.TCPConn, d time.Duration) {
	if d <= 0 {
		return
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return
	}
	ms := int(d / time.Millisecond)
	_ = raw.Control(func(fd uintptr) {
		_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, ms)
	})
}
