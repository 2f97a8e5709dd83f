package origdst_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"weft.dev/weft/internal/proxy/capture"
	"weft.dev/weft/internal/proxy/origdst"
	"weft.dev/weft/internal/testenv"
)

// accepted is one connection a listener accepted and the first bytes read
// from it.
type accepted struct {
	conn net.Conn
	msg  string
}

// acceptOne accepts one connection on l (bounded by a deadline, so a
// broken capture fails the test instead of hanging it) and reads what the
// client sent until it closes its side.
func acceptOne(t *testing.T, l net.Listener) accepted {
	t.Helper()
	if err := l.(*net.TCPListener).SetDeadline(time.Now().Add(20 * time.Second)); err != nil {
		t.Fatal(err)
	}
	c, err := l.Accept()
	if err != nil {
		t.Fatalf("accept on %s: %v", l.Addr(), err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SetReadDeadline(time.Now().Add(20 * time.Second)); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read from %s: %v", c.RemoteAddr(), err)
	}
	return accepted{conn: c, msg: string(b)}
}

// dialSend dials addr from inside ns, as root, sends msg and closes its
// sending side.
func dialSend(t *testing.T, ns *testenv.Netns, addr, msg string) {
	t.Helper()
	err := ns.Do(func() error {
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		if _, err := io.WriteString(c, msg); err != nil {
			return err
		}
		return c.(*net.TCPConn).CloseWrite()
	})
	if err != nil {
		t.Fatalf("dial %s from %s: %v", addr, ns.Name, err)
	}
}

// dialAs dials addr from inside ns as uid:gid (a separate process: bash's
// /dev/tcp under setpriv), sends msg and exits.
func dialAs(t *testing.T, ctx context.Context, ns *testenv.Netns, uid int, host, port, msg string) {
	t.Helper()
	script := fmt.Sprintf("exec 3<>/dev/tcp/%s/%s && printf %%s %q >&3", host, port, msg)
	out, err := ns.Command(ctx, "setpriv", fmt.Sprintf("--reuid=%d", uid), fmt.Sprintf("--regid=%d", uid), "--clear-groups",
		"bash", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("dial %s:%s as uid %d: %v: %s", host, port, uid, err, out)
	}
}

// TestCaptureOriginalDst installs the capture rules in a "pod" namespace
// and checks, for IPv4 and (when the kernel has it) IPv6: a connection
// the application makes to another namespace's address is redirected to
// the outbound capture listener, which reads the original destination; a
// connection to an excluded port or an excluded CIDR reaches its
// destination directly; a connection into the pod reaches the inbound
// capture listener with its original port, except on the proxy's own
// ports; the proxy's UID is not captured while another UID is.
func TestCaptureOriginalDst(t *testing.T) {
	testenv.Privileged(t)
	for _, name := range []string{"iptables-restore", "iptables-save", "setpriv", "bash"} {
		if _, err := exec.LookPath(name); err != nil {
			if testenv.Required() {
				t.Fatalf("%s not found (WEFT_REQUIRE_TOOLS=1)", name)
			}
			t.Skipf("%s not found", name)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	network := testenv.NewNetwork(t)
	pod := network.Netns(t, "pod")
	srv := network.Netns(t, "srv")
	ext := network.Netns(t, "ext") // its address is an excluded CIDR

	families := []struct {
		name            string
		podIP, dst, ext string
	}{{"ipv4", pod.IP, srv.IP, ext.IP}}
	if why := network.IPv6(); why == "" {
		families = append(families, struct{ name, podIP, dst, ext string }{"ipv6", pod.IP6, srv.IP6, ext.IP6})
	} else {
		t.Logf("IPv4 only: %s", why)
	}

	cfg := capture.Default()
	cfg.ExcludeOutboundPorts = []uint16{9090}
	for _, f := range families {
		a := netip.MustParseAddr(f.ext)
		cfg.ExcludeOutbound = append(cfg.ExcludeOutbound, netip.PrefixFrom(a, a.BitLen()))
	}
	in := &capture.Installer{Run: pod.Command}
	if err := in.Install(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	listen := func(ns *testenv.Netns, port string) net.Listener {
		t.Helper()
		l, err := ns.Listen("tcp", ":"+port) // dual-stack, as a proxy's would be
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		return l
	}
	capL := listen(pod, "15001")    // outbound capture
	inL := listen(pod, "15006")     // inbound capture
	statusL := listen(pod, "15021") // a proxy port: never captured inbound
	srvL := map[string]net.Listener{"8080": listen(srv, "8080"), "9090": listen(srv, "9090")}
	extL := listen(ext, "8080")

	for _, fam := range families {
		t.Run(fam.name, func(t *testing.T) {
			captured := net.JoinHostPort(fam.dst, "8080")
			want := netip.MustParseAddrPort(captured)

			// The application's connection is redirected; the listener
			// recovers where it was going.
			dialSend(t, pod, captured, "app")
			got := acceptOne(t, capL)
			if got.msg != "app" {
				t.Fatalf("capture listener read %q, want %q", got.msg, "app")
			}
			dst, err := origdst.OriginalDst(got.conn)
			if err != nil {
				t.Fatal(err)
			}
			if dst != want {
				t.Errorf("OriginalDst = %s, want %s", dst, want)
			}

			// An excluded port goes straight through.
			dialSend(t, pod, net.JoinHostPort(fam.dst, "9090"), "excluded")
			if got := acceptOne(t, srvL["9090"]); got.msg != "excluded" || !strings.Contains(got.conn.RemoteAddr().String(), fam.podIP) {
				t.Errorf("server on 9090 got %q from %s, want %q from %s", got.msg, got.conn.RemoteAddr(), "excluded", fam.podIP)
			}

			// An excluded destination CIDR goes straight through.
			dialSend(t, pod, net.JoinHostPort(fam.ext, "8080"), "excluded cidr")
			if got := acceptOne(t, extL); got.msg != "excluded cidr" {
				t.Errorf("excluded destination got %q", got.msg)
			}

			// Inbound: a connection from another pod to this pod's
			// application port reaches the inbound capture listener,
			// which reads the port the client dialled.
			dialSend(t, srv, net.JoinHostPort(fam.podIP, "8080"), "inbound")
			got = acceptOne(t, inL)
			if got.msg != "inbound" {
				t.Fatalf("inbound capture listener read %q, want %q", got.msg, "inbound")
			}
			wantIn := netip.MustParseAddrPort(net.JoinHostPort(fam.podIP, "8080"))
			if dst, err := origdst.OriginalDst(got.conn); err != nil || dst != wantIn {
				t.Errorf("inbound OriginalDst = %s, %v; want %s", dst, err, wantIn)
			}
			// The proxy's own ports are not captured inbound.
			dialSend(t, srv, net.JoinHostPort(fam.podIP, "15021"), "status")
			if got := acceptOne(t, statusL); got.msg != "status" {
				t.Errorf("port 15021 got %q", got.msg)
			}

			// The proxy's own connection (uid 1337) is not captured...
			dialAs(t, ctx, pod, capture.DefaultProxyUID, fam.dst, "8080", "proxy")
			if got := acceptOne(t, srvL["8080"]); got.msg != "proxy" {
				t.Errorf("server on 8080 got %q, want the proxy's connection", got.msg)
			}
			// ...while another user's is.
			dialAs(t, ctx, pod, 1000, fam.dst, "8080", "user")
			got = acceptOne(t, capL)
			if got.msg != "user" {
				t.Fatalf("capture listener read %q, want %q", got.msg, "user")
			}
			if dst, err := origdst.OriginalDst(got.conn); err != nil || dst != want {
				t.Errorf("OriginalDst = %s, %v; want %s", dst, err, want)
			}
		})
	}
}

func TestOriginalDstNotSocket(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, err := origdst.OriginalDst(a); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("OriginalDst(pipe) = %v, want a 'not a socket' error", err)
	}
}
