//go:build unix

package upstream

import (
	"net"
	"syscall"
)

// connAlive reports whether an idle connection may still be used: the
// upstream has neither closed it nor sent anything unsolicited. One
// non-blocking MSG_PEEK; it never waits.
func connAlive(nc net.Conn) bool {
	if t, ok := nc.(*tcpConn); ok && t.sio.Ok() {
		return t.sio.Quiet() // raw, and nothing allocated
	}
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	alive := true
	var buf [1]byte
	err = rc.Read(func(fd uintptr) bool {
		// Nothing to read is the only healthy answer: 0 bytes is EOF and
		// data would be an unsolicited response.
		_, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		alive = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
		return true
	})
	return alive && err == nil
}
