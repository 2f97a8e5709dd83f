package testenv

import (
	"context"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// TestNetworkNamespaces: two namespaces on one test network reach each
// other and the host's gateway address, and are gone after cleanup.
func TestNetworkNamespaces(t *testing.T) {
	n := NewNetwork(t)
	a, b := n.Netns(t, "a"), n.Netns(t, "b")

	l, err := b.Listen("tcp", b.IP+":8080")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "hello from b\n")
			c.Close()
		}
	}()
	hostL, err := net.Listen("tcp", n.Gateway+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer hostL.Close()
	go func() {
		c, err := hostL.Accept()
		if err == nil {
			io.WriteString(c, "hello from host\n")
			c.Close()
		}
	}()

	read := func(ns *Netns, addr string) string {
		t.Helper()
		var got string
		err := ns.Do(func() error {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			b, err := io.ReadAll(c)
			got = string(b)
			return err
		})
		if err != nil {
			t.Fatalf("dial %s from %s: %v", addr, ns.Name, err)
		}
		return got
	}
	if got := read(a, b.IP+":8080"); !strings.Contains(got, "from b") {
		t.Errorf("a -> b: %q", got)
	}
	if got := read(a, hostL.Addr().String()); !strings.Contains(got, "from host") {
		t.Errorf("a -> host: %q", got)
	}
	// The host reaches b directly too.
	c, err := net.DialTimeout("tcp", b.IP+":8080", 5*time.Second)
	if err != nil {
		t.Fatalf("host -> b: %v", err)
	}
	c.Close()
	// A command runs inside.
	out, err := a.Command(context.Background(), "ip", "-4", "-o", "addr", "show", "eth0").CombinedOutput()
	if err != nil || !strings.Contains(string(out), a.IP) {
		t.Errorf("ip addr inside %s: %v %s", a.Name, err, out)
	}
}

// TestConsulAgent: the agent answers, and comes back after a restart.
func TestConsulAgent(t *testing.T) {
	c := Consul(t)
	c.Restart()
	if c.Addr == "" {
		t.Fatal("no address")
	}
}

// TestKubeAPIServerWithIstioCRDs: the API server starts and serves the
// Istio CRDs users install, and objects of them can be created.
func TestKubeAPIServerWithIstioCRDs(t *testing.T) {
	k := KubeAPIServer(t, WithIstioCRDs())
	ctx := context.Background()
	v, err := k.Client(t).Discovery().ServerVersion()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kube-apiserver %s", v.GitVersion)
	err = k.Apply(ctx, []byte(`
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v1}
`))
	if err != nil {
		t.Fatal(err)
	}
	vs := schema.GroupVersionResource{Group: "networking.istio.io", Version: "v1", Resource: "virtualservices"}
	got, err := k.Dynamic(t).Resource(vs).Namespace("shop").Get(ctx, "reviews", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetName() != "reviews" {
		t.Errorf("got %s", got.GetName())
	}
}

// TestNetworkNamespacesIPv6: on a kernel with IPv6 the network is
// dual-stack: two namespaces reach each other and the host by their IPv6
// addresses at once (no duplicate address detection to wait for), and the
// bridge and namespaces are gone after cleanup. Without IPv6 it skips.
func TestNetworkNamespacesIPv6(t *testing.T) {
	var bridge string
	var names []string
	t.Run("dual-stack", func(t *testing.T) {
		n := NewNetwork(t)
		n.RequireIPv6(t)
		a, b := n.Netns(t, "a"), n.Netns(t, "b")
		n.RequireIPv6(t)
		bridge, names = n.Bridge, []string{a.Name, b.Name}
		if a.IP6 == "" || b.IP6 == "" || a.IP6 == b.IP6 || !strings.HasPrefix(a.IP6, n.Prefix6) || n.Gateway6 != n.Prefix6+"1" {
			t.Fatalf("addresses: a %q, b %q, gateway %q, prefix %q", a.IP6, b.IP6, n.Gateway6, n.Prefix6)
		}
		l, err := b.Listen("tcp6", net.JoinHostPort(b.IP6, "8080"))
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				io.WriteString(c, "from "+c.RemoteAddr().String())
				c.Close()
			}
		}()
		hostL, err := net.Listen("tcp6", net.JoinHostPort(n.Gateway6, "0"))
		if err != nil {
			t.Fatal(err)
		}
		defer hostL.Close()
		go func() {
			c, err := hostL.Accept()
			if err == nil {
				io.WriteString(c, "hello from host")
				c.Close()
			}
		}()
		read := func(addr string) string {
			t.Helper()
			c, err := a.DialContext(t.Context(), "tcp", addr)
			if err != nil {
				t.Fatalf("dial %s from %s: %v", addr, a.Name, err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			got, _ := io.ReadAll(c)
			return string(got)
		}
		if got, want := read(net.JoinHostPort(b.IP6, "8080")), "from ["+a.IP6+"]:"; !strings.HasPrefix(got, want) {
			t.Errorf("a -> b over IPv6: %q, want it to start %q", got, want)
		}
		if got := read(hostL.Addr().String()); got != "hello from host" {
			t.Errorf("a -> host over IPv6: %q", got)
		}
		// IPv4 is unchanged.
		out, err := a.Command(context.Background(), "ip", "-o", "addr", "show", "eth0").CombinedOutput()
		if err != nil || !strings.Contains(string(out), a.IP+"/24") || !strings.Contains(string(out), a.IP6+"/64") {
			t.Errorf("eth0 of %s: %v %s", a.Name, err, out)
		}
	})
	if bridge == "" {
		t.Skip("no IPv6 (see the subtest)")
	}
	if out, err := exec.Command("ip", "link", "show", bridge).CombinedOutput(); err == nil {
		t.Errorf("bridge %s still exists after cleanup: %s", bridge, out)
	}
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, name := range names {
		if strings.Contains(string(out), name) {
			t.Errorf("namespace %s still exists after cleanup", name)
		}
	}
}
