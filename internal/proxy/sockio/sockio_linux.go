package sockio

import (
	"io"
	"os"
	"syscall"
	"unsafe"
)

const supported = true

// read is the RawConn read callback: false to wait for the socket to be
// readable, true with the outcome in s.
func (s *IO) read(fd uintptr) bool {
	p := s.rp
	for {
		n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		switch {
		case errno == syscall.EINTR:
			continue
		case errno == syscall.EAGAIN:
			return false
		case errno != 0:
			s.rerr = os.NewSyscallError("read", errno)
		case n == 0:
			s.rerr = io.EOF
		default:
			raceWrite(p[:n])
			s.rn = int(n)
		}
		return true
	}
}

// write is the RawConn write callback: it writes what is left of s.wp
// until the socket's buffer is full (false: wait to be writable) or all
// is written or an error comes (true).
func (s *IO) write(fd uintptr) bool {
	for s.wn < len(s.wp) {
		p := s.wp[s.wn:]
		raceRead(p)
		n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		switch {
		case errno == syscall.EINTR:
			continue
		case errno == syscall.EAGAIN:
			return false
		case errno != 0:
			s.werr = os.NewSyscallError("write", errno)
			return true
		}
		s.wn += int(n)
	}
	return true
}

// peek is Quiet's RawConn.Control callback.
func (s *IO) peek(fd uintptr) {
	_, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&s.qb[0])), 1,
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	s.quiet = errno == syscall.EAGAIN
}
