// Package origdst recovers the destination a client originally dialled on
// a TCP connection that an iptables REDIRECT (transparent capture, see
// internal/proxy/capture) delivered to a local listener instead. Linux
// conntrack remembers it; the SO_ORIGINAL_DST socket option (IPv4) and
// IP6T_SO_ORIGINAL_DST (IPv6) read it back.
package origdst

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/sys/unix"
)

// ip6tSOOriginalDst is IP6T_SO_ORIGINAL_DST from linux/netfilter_ipv6/
// ip6_tables.h (golang.org/x/sys/unix defines only the IPv4 name; both are
// 80).
const ip6tSOOriginalDst = 80

// ErrNotRedirected is returned (wrapped) when the connection was not
// redirected by conntrack NAT: there is no original destination to read.
var ErrNotRedirected = errors.New("connection has no original destination (not redirected)")

// OriginalDst returns the address the peer of c dialled before a REDIRECT
// sent the connection to this listener. c must be a TCP connection
// accepted from a listener (a *net.TCPConn, or anything exposing
// syscall.Conn). For a connection that was not redirected the kernel
// answers with the listener's own address on some kernels and ENOENT on
// others; the latter is reported as ErrNotRedirected. It does not block
// and may be called from any goroutine.
func OriginalDst(c net.Conn) (netip.AddrPort, error) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("original destination: %T is not a socket", c)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("original destination: %w", err)
	}
	// The local address says which family's conntrack entry to ask: an
	// IPv4 connection (also one accepted on a dual-stack [::] socket, where
	// it shows as ::ffff:a.b.c.d) has an IPv4 original destination.
	v4 := true
	if la, ok := c.LocalAddr().(*net.TCPAddr); ok {
		if a, ok := netip.AddrFromSlice(la.IP); ok {
			v4 = a.Unmap().Is4()
		}
	}
	var dst netip.AddrPort
	var opErr error
	err = raw.Control(func(fd uintptr) {
		if v4 {
			dst, opErr = originalDst4(int(fd))
		} else {
			dst, opErr = originalDst6(int(fd))
		}
	})
	if err == nil {
		err = opErr
	}
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			err = fmt.Errorf("%w: %w", ErrNotRedirected, err)
		}
		return netip.AddrPort{}, fmt.Errorf("original destination of %s -> %s: %w", c.RemoteAddr(), c.LocalAddr(), err)
	}
	return dst, nil
}

// originalDst4 reads a struct sockaddr_in. GetsockoptIPv6Mreq is only a
// 16-byte buffer here: exactly sizeof(struct sockaddr_in).
func originalDst4(fd int) (netip.AddrPort, error) {
	m, err := unix.GetsockoptIPv6Mreq(fd, unix.SOL_IP, unix.SO_ORIGINAL_DST)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("getsockopt(SOL_IP, SO_ORIGINAL_DST): %w", err)
	}
	b := m.Multiaddr // family (2 bytes, host order), port (2, network order), address (4)
	if fam := binary.NativeEndian.Uint16(b[0:2]); fam != unix.AF_INET {
		return netip.AddrPort{}, fmt.Errorf("getsockopt(SOL_IP, SO_ORIGINAL_DST): address family %d, want AF_INET", fam)
	}
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), binary.BigEndian.Uint16(b[2:4])), nil
}

// originalDst6 reads a struct sockaddr_in6 (IP6T_SO_ORIGINAL_DST has the
// same number, 80, at SOL_IPV6). IPv6MTUInfo starts with one.
func originalDst6(fd int) (netip.AddrPort, error) {
	info, err := unix.GetsockoptIPv6MTUInfo(fd, unix.SOL_IPV6, ip6tSOOriginalDst)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST): %w", err)
	}
	sa := info.Addr
	if sa.Family != unix.AF_INET6 {
		return netip.AddrPort{}, fmt.Errorf("getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST): address family %d, want AF_INET6", sa.Family)
	}
	// Port holds the bytes in network order as the kernel wrote them.
	port := binary.BigEndian.Uint16(binary.NativeEndian.AppendUint16(nil, sa.Port))
	return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), port), nil
}
