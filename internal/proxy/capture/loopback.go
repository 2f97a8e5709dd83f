package capture

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// InboundPassthroughIPv6 is the address the proxy binds to reach the
// application on inbound connections over IPv6 (Istio's ::6). IPv4 needs
// nothing: 127.0.0.0/8 is all on lo. IPv6's lo has only ::1/128, so
// Install adds ::6/128 to lo (as Istio's istio-iptables does); without it
// the proxy's bind fails and inbound IPv6 connections to undeclared ports
// are closed.
var InboundPassthroughIPv6 = netip.MustParseAddr("::6")

// addLoopbackAddress puts ::6/128 on lo. Without a Runner it asks the
// kernel directly (netlink), so the init container needs no iproute2;
// with one it runs `ip -6 addr replace` through it, so the address lands
// where the iptables commands run. Either way adding it twice is no
// error. Without a Runner, a lo with IPv6 disabled is left alone.
func (in *Installer) addLoopbackAddress(ctx context.Context) error {
	a := InboundPassthroughIPv6
	if in.Run != nil {
		if _, err := in.run(ctx, "", "ip", "-6", "addr", "replace", a.String()+"/128", "dev", "lo"); err != nil {
			return fmt.Errorf("add %s/128 to lo: %w", a, err)
		}
		return nil
	}
	// A namespace whose lo has IPv6 switched off has no ::1 either, so
	// no IPv6 connection is captured to a proxy there: nothing to add.
	if b, err := os.ReadFile("/proc/sys/net/ipv6/conf/lo/disable_ipv6"); err == nil && strings.TrimSpace(string(b)) == "1" {
		in.log().Info("IPv6 is disabled on lo: the inbound passthrough address is not added", "address", a.String())
		return nil
	}
	if err := replaceAddr("lo", a); err != nil {
		return fmt.Errorf("add %s/128 to lo: %w", a, err)
	}
	return nil
}

// replaceAddr adds a host address (/32 or /128) to the interface named
// ifname in this thread's network namespace, as `ip addr replace` does:
// an RTM_NEWADDR request with NLM_F_CREATE|NLM_F_REPLACE, acknowledged.
func replaceAddr(ifname string, a netip.Addr) error {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return err
	}
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_ROUTE)
	if err != nil {
		return fmt.Errorf("netlink socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink bind: %w", err)
	}
	msg := newAddrRequest(ifi.Index, a, 1)
	if err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink send: %w", err)
	}
	buf := make([]byte, 4096)
	for range 16 { // the ack comes first; anything else (none expected) is skipped, a bounded number of times
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return fmt.Errorf("netlink receive: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return fmt.Errorf("netlink reply: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Type != syscall.NLMSG_ERROR || m.Header.Seq != 1 {
				continue
			}
			if len(m.Data) < 4 {
				return fmt.Errorf("netlink reply: short error message")
			}
			if errno := int32(binary.NativeEndian.Uint32(m.Data[:4])); errno != 0 {
				return fmt.Errorf("RTM_NEWADDR: %w", unix.Errno(-errno))
			}
			return nil
		}
	}
	return fmt.Errorf("netlink: no acknowledgement for RTM_NEWADDR")
}

// newAddrRequest is an RTM_NEWADDR message (struct nlmsghdr, struct
// ifaddrmsg, then IFA_LOCAL and IFA_ADDRESS attributes) adding a as a
// host address of interface index.
func newAddrRequest(index int, a netip.Addr, seq uint32) []byte {
	family, raw := byte(unix.AF_INET), a.AsSlice()
	if a.Is6() {
		family = unix.AF_INET6
	}
	attr := func(typ uint16, data []byte) []byte {
		b := make([]byte, unix.SizeofRtAttr, rtaAlign(unix.SizeofRtAttr+len(data)))
		binary.NativeEndian.PutUint16(b[0:2], uint16(unix.SizeofRtAttr+len(data)))
		binary.NativeEndian.PutUint16(b[2:4], typ)
		b = append(b, data...)
		return b[:cap(b)]
	}
	body := []byte{family, byte(a.BitLen()), 0, unix.RT_SCOPE_UNIVERSE, 0, 0, 0, 0} // struct ifaddrmsg
	binary.NativeEndian.PutUint32(body[4:8], uint32(index))
	body = append(body, attr(unix.IFA_LOCAL, raw)...)
	body = append(body, attr(unix.IFA_ADDRESS, raw)...)
	hdr := make([]byte, unix.SizeofNlMsghdr)
	binary.NativeEndian.PutUint32(hdr[0:4], uint32(unix.SizeofNlMsghdr+len(body)))
	binary.NativeEndian.PutUint16(hdr[4:6], unix.RTM_NEWADDR)
	binary.NativeEndian.PutUint16(hdr[6:8], unix.NLM_F_REQUEST|unix.NLM_F_ACK|unix.NLM_F_CREATE|unix.NLM_F_REPLACE)
	binary.NativeEndian.PutUint32(hdr[8:12], seq)
	return append(hdr, body...)
}

func rtaAlign(n int) int { return (n + unix.RTA_ALIGNTO - 1) &^ (unix.RTA_ALIGNTO - 1) }
