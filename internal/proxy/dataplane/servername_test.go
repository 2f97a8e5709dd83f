package dataplane

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsinspector "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"

	"weft.dev/weft/internal/proxy/proxytest"
)

// tlsNamed serves TLS with cert on a loopback port, answering each
// handshake with name and the server name the client asked for.
func tlsNamed(t *testing.T, name string, cert *tls.Certificate) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{*cert}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				tc := c.(*tls.Conn)
				tc.SetDeadline(time.Now().Add(10 * time.Second))
				if tc.Handshake() == nil {
					fmt.Fprintf(tc, "%s %s\n", name, tc.ConnectionState().ServerName)
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// TestVirtualOutboundServerNames: with the TLS inspector, a connection's
// chain is picked by the ClientHello's server name after its destination
// — the exact name, then the longest wildcard, then the chain without
// names — and the client's handshake goes through untouched to the
// upstream it picked. Plaintext to the same address takes the chain
// without names.
func TestVirtualOutboundServerNames(t *testing.T) {
	f := &fakeOrigDst{dst: map[netip.Addr]netip.AddrPort{}}
	d := newCaptureDataplane(t, f)
	ca := proxytest.NewMeshCA(t)
	cert := ca.Issue(t, "", time.Hour, "a.example.com", "x.b.example.com", "y.x.b.example.com", "other.example.com")
	match := func(names ...string) *listener.FilterChainMatch {
		m := proxytest.Match(443, []string{"10.77.0.9/32"})
		m.ServerNames = names
		return m
	}
	l := proxytest.VirtualListener(t, "virtualOutbound", core.TrafficDirection_OUTBOUND,
		proxytest.TCPProxyChain(t, nil, "PassthroughCluster"),
		proxytest.TCPProxyChain(t, match("a.example.com"), "a"),
		proxytest.TCPProxyChain(t, match("*.b.example.com"), "b"),
		proxytest.TCPProxyChain(t, match(), "rest"),
	)
	l.ListenerFilters = append(l.ListenerFilters, &listener.ListenerFilter{
		Name: "envoy.filters.listener.tls_inspector", ConfigType: &listener.ListenerFilter_TypedConfig{TypedConfig: proxytest.MustAny(t, &tlsinspector.TlsInspector{})},
	})
	mustApply(t, d, resources(l,
		staticCluster(t, "a", tlsNamed(t, "a", cert)),
		staticCluster(t, "b", tlsNamed(t, "b", cert)),
		staticCluster(t, "rest", tcpNamed(t, "rest")),
		proxytest.OriginalDstCluster("PassthroughCluster", ""),
	))
	addr := d.ListenerAddr("virtualOutbound").String()
	for i, tc := range []struct{ name, want string }{
		{"a.example.com", "a a.example.com"},
		{"x.b.example.com", "b x.b.example.com"},
		{"y.x.b.example.com", "b y.x.b.example.com"},
	} {
		src := fmt.Sprintf("127.0.0.%d", 60+i)
		f.set(src, netip.MustParseAddrPort("10.77.0.9:443"))
		c := tls.Client(dialFrom(t, src, addr), &tls.Config{ServerName: tc.name, RootCAs: ca.Pool})
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || line != tc.want+"\n" {
			t.Errorf("TLS as %s: %q %v, want %q", tc.name, line, err, tc.want)
		}
		c.Close()
	}
	// Another name, and plaintext: the chain without names (a TCP echo,
	// which answers the ClientHello's bytes, so the handshake fails).
	f.set("127.0.0.70", netip.MustParseAddrPort("10.77.0.9:443"))
	c := tls.Client(dialFrom(t, "127.0.0.70", addr), &tls.Config{ServerName: "other.example.com", RootCAs: ca.Pool})
	if err := c.Handshake(); err == nil {
		t.Errorf("TLS as other.example.com reached a TLS upstream; want the chain without names (plain TCP)")
	}
	c.Close()
	f.set("127.0.0.71", netip.MustParseAddrPort("10.77.0.9:443"))
	if got := exchange(t, dialFrom(t, "127.0.0.71", addr), "ping"); got != "rest:ping" {
		t.Errorf("plaintext: %q, want rest:ping", got)
	}
}
