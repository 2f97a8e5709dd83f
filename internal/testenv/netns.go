package testenv

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// Network is a Linux bridge with a private /24 (in 10.77.0.0/16) that
// network namespaces attach to: the test's stand-in for a pod network or a
// VM subnet. The host side has the gateway address (.1), so processes on
// the host — the control plane, the Kubernetes API server clients — are
// reachable from every namespace on it, and each namespace reaches the
// others directly. Traffic never leaves the machine: the /24 exists only
// on the bridge the test made. Everything is removed in t.Cleanup.
//
// When the kernel has IPv6 the network is dual-stack: the bridge also
// carries the unique local /64 fd77:X:: (X the same number as the IPv4
// prefix's third octet, so 10.77.31.5 is also fd77:31::5), the host has
// Gateway6 on it and every namespace an IPv6 address too (IP6). Without
// IPv6, Prefix6, Gateway6 and the Netns's IP6 are empty and IPv6 says
// why; RequireIPv6, called once a test's namespaces exist, skips a test
// that needs it.
type Network struct {
	// Bridge is the bridge interface's name.
	Bridge string
	// Prefix is the first three octets, e.g. "10.77.31".
	Prefix string
	// Gateway is the host's address on the network ("<Prefix>.1").
	Gateway string
	// Prefix6 is the IPv6 /64 without its length, e.g. "fd77:31::";
	// empty without IPv6.
	Prefix6 string
	// Gateway6 is the host's IPv6 address on the network ("<Prefix6>1");
	// empty without IPv6.
	Gateway6 string

	t    testing.TB
	mu   sync.Mutex
	next int // last host number handed out
	seq  int // this network's sequence number, for interface names
	// noIPv6 says why the network has no IPv6 ("" when it has).
	noIPv6 string
}

// Netns is a network namespace attached to a Network through a veth pair,
// with its loopback up and a default route via the gateway.
type Netns struct {
	// Name is the namespace's name (ip netns).
	Name string
	// IP is its address on the network.
	IP string
	// IP6 is its IPv6 address on the network, usable at once (no
	// duplicate address detection); empty when the network has no IPv6.
	IP6 string
	// Network is what it is attached to.
	Network *Network
}

// Privileged skips t (fails when Required) unless it runs as root with
// the ip command.
func Privileged(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		unavailable(t, "testenv: network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		unavailable(t, "testenv: network namespaces need the ip command (iproute2)")
	}
}

// NewNetwork creates a bridge with a free 10.77.X.0/24 for t, and
// fd77:X::/64 when the kernel has IPv6.
func NewNetwork(t testing.TB) *Network {
	t.Helper()
	Privileged(t)
	netnsMu.Lock()
	netnsSeq++
	seq := netnsSeq
	netnsMu.Unlock()
	h := fnv.New32a()
	fmt.Fprintf(h, "%d/%d", os.Getpid(), seq)
	start := int(h.Sum32() % 250)
	n := &Network{t: t, seq: seq, Bridge: fmt.Sprintf("wfb%d-%d", os.Getpid()%100000, seq)}
	if len(n.Bridge) > 15 {
		n.Bridge = n.Bridge[:15]
	}
	for i := range 250 {
		x := (start+i)%250 + 2
		prefix := fmt.Sprintf("10.77.%d", x)
		out, _ := exec.Command("ip", "-4", "route", "show", prefix+".0/24").Output()
		if strings.TrimSpace(string(out)) != "" {
			continue // another test (process) uses it
		}
		prefix6 := fmt.Sprintf("fd77:%d::", x)
		if out, _ := exec.Command("ip", "-6", "route", "show", prefix6+"/64").Output(); strings.TrimSpace(string(out)) != "" {
			continue
		}
		n.Prefix, n.Prefix6 = prefix, prefix6
		break
	}
	if n.Prefix == "" {
		t.Fatal("testenv: no free 10.77.X.0/24 for a test network")
	}
	n.Gateway = n.Prefix + ".1"
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", n.Bridge).Run() })
	run(t, "ip", "link", "add", n.Bridge, "type", "bridge")
	run(t, "ip", "addr", "add", n.Gateway+"/24", "dev", n.Bridge)
	n.noIPv6 = kernelIPv6()
	if n.noIPv6 == "" {
		gw := n.Prefix6 + "1"
		// nodad: usable at once, not after duplicate address detection.
		if out, err := exec.Command("ip", "-6", "addr", "add", gw+"/64", "dev", n.Bridge, "nodad").CombinedOutput(); err != nil {
			n.noIPv6 = fmt.Sprintf("cannot add an IPv6 address to the test bridge: %v: %s", err, strings.TrimSpace(string(out)))
		} else {
			n.Gateway6 = gw
		}
	}
	if n.noIPv6 != "" {
		n.Prefix6 = ""
	}
	run(t, "ip", "link", "set", n.Bridge, "up")
	return n
}

// kernelIPv6 says why the kernel (in this network namespace) has no usable
// IPv6, or returns "" when it has.
func kernelIPv6() string {
	if _, err := os.Stat("/proc/net/if_inet6"); err != nil {
		return "the kernel has no IPv6 (no /proc/net/if_inet6)"
	}
	if b, err := os.ReadFile("/proc/sys/net/ipv6/conf/default/disable_ipv6"); err == nil && strings.TrimSpace(string(b)) == "1" {
		return "IPv6 is disabled (net.ipv6.conf.default.disable_ipv6=1)"
	}
	return ""
}

// IPv6 returns "" when the network is dual-stack, or why it has no IPv6.
// Call it (or RequireIPv6) after creating the namespaces a test needs: a
// namespace that could not get an IPv6 address makes the network IPv4
// only.
func (n *Network) IPv6() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.noIPv6
}

// RequireIPv6 skips t, saying why, when the network has no IPv6. A kernel
// without IPv6 is never a failure, not even under WEFT_REQUIRE_TOOLS=1: it
// is the machine, not a missing tool.
func (n *Network) RequireIPv6(t testing.TB) {
	t.Helper()
	if why := n.IPv6(); why != "" {
		t.Skipf("testenv: no IPv6 on the test network: %s", why)
	}
}

// Netns creates a namespace on the network with the next free address;
// name is for people (it is part of the namespace's name).
func (n *Network) Netns(t testing.TB, name string) *Netns {
	t.Helper()
	n.mu.Lock()
	n.next++
	host := n.next + 1
	n.mu.Unlock()
	if host > 254 {
		t.Fatal("testenv: network is full")
	}
	ns := &Netns{
		Name:    fmt.Sprintf("weft-%d-%d-%s", os.Getpid(), n.seq, name),
		IP:      fmt.Sprintf("%s.%d", n.Prefix, host),
		Network: n,
	}
	hostIf := fmt.Sprintf("wfv%d-%d-%d", os.Getpid()%10000, n.seq, host)
	if len(hostIf) > 15 {
		hostIf = hostIf[:15]
	}
	t.Cleanup(func() {
		_ = exec.Command("ip", "netns", "del", ns.Name).Run()
		_ = exec.Command("ip", "link", "del", hostIf).Run()
	})
	run(t, "ip", "netns", "add", ns.Name)
	run(t, "ip", "link", "add", hostIf, "type", "veth", "peer", "name", "eth0", "netns", ns.Name)
	run(t, "ip", "link", "set", hostIf, "master", n.Bridge)
	run(t, "ip", "link", "set", hostIf, "up")
	run(t, "ip", "-n", ns.Name, "link", "set", "lo", "up")
	run(t, "ip", "-n", ns.Name, "addr", "add", ns.IP+"/24", "dev", "eth0")
	run(t, "ip", "-n", ns.Name, "link", "set", "eth0", "up")
	run(t, "ip", "-n", ns.Name, "route", "add", "default", "via", n.Gateway)
	if n.IPv6() == "" {
		ip6 := fmt.Sprintf("%s%d", n.Prefix6, host)
		if err := n.setupIPv6(ns.Name, ip6); err != nil {
			// IPv6 on the host but not in new namespaces (their
			// disable_ipv6 default): the network is IPv4 only from now
			// on, and RequireIPv6 says why. IPv4 tests go on.
			n.mu.Lock()
			n.noIPv6 = fmt.Sprintf("namespace %s: %v", ns.Name, err)
			n.mu.Unlock()
			t.Logf("testenv: %v; the network is IPv4 only", err)
		} else {
			ns.IP6 = ip6
		}
	}
	return ns
}

// setupIPv6 gives namespace name the address ip6 (nodad: usable at once)
// and a default route via the gateway.
func (n *Network) setupIPv6(name, ip6 string) error {
	for _, args := range [][]string{
		{"-n", name, "-6", "addr", "add", ip6 + "/64", "dev", "eth0", "nodad"},
		{"-n", name, "-6", "route", "add", "default", "via", n.Gateway6},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

// Command returns a command that runs inside the namespace.
func (ns *Netns) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("testenv: %s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// Do runs f on an OS thread that has entered the namespace, so sockets f
// creates belong to it (a listener made there keeps accepting in the
// namespace after Do returns). The thread returns to the host's namespace
// afterwards; if it cannot, it is not reused.
func (ns *Netns) Do(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Not unlocked on failure: the thread then dies with the goroutine.
		host, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			errc <- err
			return
		}
		defer host.Close()
		target, err := os.Open("/var/run/netns/" + ns.Name)
		if err != nil {
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", ns.Name, err)
			return
		}
		ferr := f()
		if err := unix.Setns(int(host.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leave netns %s: %w", ns.Name, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Listen listens on addr inside the namespace.
func (ns *Netns) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := ns.Do(func() (err error) {
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// DialContext dials from inside the namespace, as an app in the pod would
// (its connections go through the pod's iptables rules): use it as an
// http.Transport's DialContext.
func (ns *Netns) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := ns.Do(func() (err error) {
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}
