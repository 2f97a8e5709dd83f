package dataplane

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"weft.dev/weft/internal/proxy/proxytest"
	"weft.dev/weft/internal/xds/contract"
)

// A captured sidecar's virtual listener, served on real sockets. The
// original destination of each connection is faked by its source
// address (every 127/8 address is local on Linux): the test dials from
// 127.0.0.<n>, and the fake SO_ORIGINAL_DST returns what it registered
// for that source.

// fakeOrigDst maps a connection's source IP to its original destination.
type fakeOrigDst struct {
	mu  sync.Mutex
	dst map[netip.Addr]netip.AddrPort
}

func (f *fakeOrigDst) set(src string, dst netip.AddrPort) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dst[netip.MustParseAddr(src)] = dst
}

func (f *fakeOrigDst) lookup(c net.Conn) (netip.AddrPort, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	src := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr()
	if d, ok := f.dst[src]; ok {
		return d, nil
	}
	return netip.AddrPort{}, fmt.Errorf("not redirected")
}

// tcpNamed is a TCP server that answers each connection with its name,
// then echoes what it reads until EOF, then closes: a client that
// half-closes gets name+everything it sent.
func tcpNamed(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
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
				c.SetDeadline(time.Now().Add(30 * time.Second))
				io.WriteString(c, name+":")
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// dialFrom connects to addr from source IP src.
func dialFrom(t *testing.T, src, addr string) *net.TCPConn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(30 * time.Second))
	return c.(*net.TCPConn)
}

// exchange sends msg, half-closes and reads to EOF.
func exchange(t *testing.T, c *net.TCPConn, msg string) string {
	t.Helper()
	if _, err := io.WriteString(c, msg); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read: %v (got %q)", err, b)
	}
	return string(b)
}

func newCaptureDataplane(t *testing.T, f *fakeOrigDst) *Dataplane {
	d, err := New(Options{Identity: contract.Identity{WorkloadName: "a", Namespace: "ns"}, OriginalDst: f.lookup})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := d.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return d
}

// TestVirtualOutboundChains: the chain a connection takes follows
// Envoy's order — destination port, then the longest prefix, then the
// application protocol the HTTP inspector found, then the default chain
// — and tcp_proxy chains relay bytes both ways with half-close.
func TestVirtualOutboundChains(t *testing.T) {
	f := &fakeOrigDst{dst: map[netip.Addr]netip.AddrPort{}}
	d := newCaptureDataplane(t, f)
	httpUp := echoUpstream(t, "http-svc", true)
	passthrough := tcpNamed(t, "passthrough")
	rc := routeConfig("8080", vhost("svc", []string{"*"}, toCluster("r", prefixMatch("/"), "http")))
	l := proxytest.VirtualListener(t, "virtualOutbound", core.TrafficDirection_OUTBOUND,
		proxytest.TCPProxyChain(t, nil, "PassthroughCluster"),
		proxytest.TCPProxyChain(t, proxytest.Match(8080, []string{"10.77.0.1/32"}), "vip-tcp"),
		proxytest.HTTPChain(t, proxytest.Match(8080, nil, "http/1.1", "h2c"), rc),
		proxytest.TCPProxyChain(t, proxytest.Match(8080, nil), "port-tcp"),
		proxytest.TCPProxyChain(t, proxytest.Match(0, []string{"10.77.0.0/16"}), "range-tcp"),
	)
	mustApply(t, d, resources(l,
		staticCluster(t, "http", httpUp),
		staticCluster(t, "vip-tcp", tcpNamed(t, "vip-tcp")),
		staticCluster(t, "port-tcp", tcpNamed(t, "port-tcp")),
		staticCluster(t, "range-tcp", tcpNamed(t, "range-tcp")),
		proxytest.OriginalDstCluster("PassthroughCluster", ""),
	))
	addr := d.ListenerAddr("virtualOutbound").String()

	for i, tc := range []struct {
		dst, want string
	}{
		{"10.77.0.1:8080", "vip-tcp"},   // port, then the /32
		{"10.99.0.1:8080", "port-tcp"},  // port, no prefix, no HTTP
		{"10.77.5.5:9090", "range-tcp"}, // no chain for the port: the port-less ones, by prefix
		{passthrough, "passthrough"},    // nothing matches: the default chain, to the original destination
	} {
		src := fmt.Sprintf("127.0.0.%d", 10+i)
		f.set(src, netip.MustParseAddrPort(tc.dst))
		if got := exchange(t, dialFrom(t, src, addr), "ping"); got != tc.want+":ping" {
			t.Errorf("to %s: got %q, want %q", tc.dst, got, tc.want+":ping")
		}
	}

	// HTTP/1.1 and h2c to port 8080 of an address without its own chain:
	// the HTTP inspector sends both to the HTTP chain.
	for i, h2c := range []bool{false, true} {
		src := fmt.Sprintf("127.0.0.%d", 20+i)
		f.set(src, netip.MustParseAddrPort("10.99.0.2:8080"))
		tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
			return d.DialContext(ctx, "tcp", addr)
		}}
		if h2c {
			tr.Protocols = new(http.Protocols)
			tr.Protocols.SetUnencryptedHTTP2(true)
		}
		t.Cleanup(tr.CloseIdleConnections)
		r := do(t, &http.Client{Transport: tr, Timeout: 10 * time.Second}, "GET", "http://10.99.0.2:8080/x", "svc", nil)
		if r.code != 200 || r.upstream != "http-svc" {
			t.Errorf("h2c=%v: %d from %q, want 200 from http-svc", h2c, r.code, r.upstream)
		}
		if r.header.Get("X-Seen-Proto") != "HTTP/1.1" { // the cluster's protocol, whatever the client spoke
			t.Errorf("h2c=%v: upstream saw %s", h2c, r.header.Get("X-Seen-Proto"))
		}
	}

	// HTTP/1.0 is not HTTP to Istio's sniffing (Envoy's inspector says
	// "http/1.0", the HTTP chain wants "http/1.1" or "h2c"): the port's
	// TCP chain relays it, as Istio's "http10 to auto" test expects
	// (Istio's bytes: bare LFs), here in one write and in two.
	for i, parts := range [][]string{{"GET / HTTP/1.0\n\n"}, {"GET /lo", "ng HTTP/1.0\r\nHost: x\r\n\r\n"}} {
		src := fmt.Sprintf("127.0.0.%d", 25+i)
		f.set(src, netip.MustParseAddrPort("10.99.0.3:8080"))
		c := dialFrom(t, src, addr)
		for _, p := range parts[:len(parts)-1] {
			io.WriteString(c, p)
			time.Sleep(20 * time.Millisecond) // the inspector reads the first part alone
		}
		msg := strings.Join(parts, "")
		if got := exchange(t, c, parts[len(parts)-1]); got != "port-tcp:"+msg {
			t.Errorf("HTTP/1.0 in %d writes: got %q, want it relayed by port-tcp", len(parts), got)
		}
	}

	// HTTP to the VIP's own chain is still relayed as bytes (the prefix
	// is matched before the application protocol).
	f.set("127.0.0.30", netip.MustParseAddrPort("10.77.0.1:8080"))
	c := dialFrom(t, "127.0.0.30", addr)
	if got := exchange(t, c, "GET / HTTP/1.1\r\n\r\n"); !strings.HasPrefix(got, "vip-tcp:GET / HTTP/1.1") {
		t.Errorf("HTTP to the VIP's tcp chain: got %q", got)
	}
}

// TestBlackHoleChain: the default chain to a cluster without endpoints
// (REGISTRY_ONLY's BlackHoleCluster) closes the connection at once.
func TestBlackHoleChain(t *testing.T) {
	f := &fakeOrigDst{dst: map[netip.Addr]netip.AddrPort{}}
	d := newCaptureDataplane(t, f)
	l := proxytest.VirtualListener(t, "virtualOutbound", core.TrafficDirection_OUTBOUND,
		proxytest.TCPProxyChain(t, nil, "BlackHoleCluster"))
	mustApply(t, d, resources(l, proxytest.BlackHoleCluster("BlackHoleCluster")))
	f.set("127.0.0.40", netip.MustParseAddrPort("203.0.113.1:443"))
	c := dialFrom(t, "127.0.0.40", d.ListenerAddr("virtualOutbound").String())
	io.WriteString(c, "hello")
	if b, err := io.ReadAll(c); len(b) != 0 {
		t.Errorf("read %q, %v: want the connection closed", b, err)
	}
}

// TestOriginalDstFallback: a connection that was not redirected (the
// hook fails) is matched on its own local address.
func TestOriginalDstFallback(t *testing.T) {
	f := &fakeOrigDst{dst: map[netip.Addr]netip.AddrPort{}}
	d := newCaptureDataplane(t, f)
	l := proxytest.VirtualListener(t, "v", core.TrafficDirection_OUTBOUND, nil,
		proxytest.TCPProxyChain(t, proxytest.Match(0, []string{"127.0.0.1/32"}), "local"))
	mustApply(t, d, resources(l, staticCluster(t, "local", tcpNamed(t, "local"))))
	if got := exchange(t, dialFrom(t, "127.0.0.50", d.ListenerAddr("v").String()), "x"); got != "local:x" {
		t.Errorf("got %q", got)
	}
}

func TestChainMatchErrors(t *testing.T) {
	d := newDataplane(t, contract.Identity{}, nil)
	for _, tc := range []struct {
		name string
		l    *listener.Listener
		want string
	}{
		{"duplicate", proxytest.VirtualListener(t, "v", core.TrafficDirection_OUTBOUND, nil,
			proxytest.TCPProxyChain(t, proxytest.Match(80, []string{"10.0.0.0/8"}), "a"),
			proxytest.TCPProxyChain(t, proxytest.Match(80, []string{"10.0.0.0/8", "10.1.0.0/16"}), "a")),
			"filter_chains[1].filter_chain_match: matches the same connections as filter_chains[0]'s"},
		{"duplicate app protocol", proxytest.VirtualListener(t, "v", core.TrafficDirection_OUTBOUND, nil,
			proxytest.TCPProxyChain(t, proxytest.Match(80, nil, "h2c"), "a"),
			proxytest.TCPProxyChain(t, proxytest.Match(80, nil, "http/1.1", "h2c"), "a")),
			"filter_chains[1].filter_chain_match: matches the same connections as filter_chains[0]'s"},
		{"server name wildcard", proxytest.VirtualListener(t, "v", core.TrafficDirection_OUTBOUND, nil,
			proxytest.TCPProxyChain(t, &listener.FilterChainMatch{ServerNames: []string{"a.*.example"}}, "a")),
			`filter_chains[0].filter_chain_match.server_names[0]: "a.*.example" is not a name or a wildcard`},
		{"server name star", proxytest.VirtualListener(t, "v", core.TrafficDirection_OUTBOUND, nil,
			proxytest.TCPProxyChain(t, &listener.FilterChainMatch{ServerNames: []string{"*"}}, "a")),
			`filter_chains[0].filter_chain_match.server_names[0]: "*" is not a name`},
		{"duplicate server name", proxytest.VirtualListener(t, "v", core.TrafficDirection_OUTBOUND, nil,
			proxytest.TCPProxyChain(t, &listener.FilterChainMatch{ServerNames: []string{"a.example", "b.example"}}, "a"),
			proxytest.TCPProxyChain(t, &listener.FilterChainMatch{ServerNames: []string{"B.example"}}, "a")),
			"filter_chains[1].filter_chain_match: matches the same connections as filter_chains[0]'s"},
		{"bad prefix", proxytest.VirtualListener(t, "v", core.TrafficDirection_OUTBOUND, nil,
			proxytest.TCPProxyChain(t, proxytest.Match(0, []string{"10.0.0.0/40"}), "a")),
			"filter_chains[0].filter_chain_match.prefix_ranges[0].prefix_len: 40 is too long"},
		{"default with a match", proxytest.VirtualListener(t, "v", core.TrafficDirection_OUTBOUND,
			proxytest.TCPProxyChain(t, proxytest.Match(80, nil), "a")),
			"default_filter_chain.filter_chain_match: must be empty"},
		{"tcp proxy without cluster", proxytest.VirtualListener(t, "v", core.TrafficDirection_OUTBOUND, nil,
			proxytest.TCPProxyChain(t, nil, "")),
			"filter_chains[0].filters[0] (envoy.filters.network.tcp_proxy).typed_config.stat_prefix: empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := d.Apply(resources(tc.l))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want …%s…", err, tc.want)
			}
		})
	}
}

// TestChainIndex: Envoy's order without backtracking: once a level has a
// specific match, the less specific chains of that level are not
// considered.
func TestChainIndex(t *testing.T) {
	var names []string // server_names of the next chain mk makes
	mk := func(port uint32, prefixes []string, transport string, app ...string) *chainConfig {
		cm := chainMatch{port: port, transport: transport, appProtos: app, names: names}
		for _, p := range prefixes {
			cm.prefixes = append(cm.prefixes, netip.MustParsePrefix(p))
		}
		return &chainConfig{match: cm}
	}
	portTLS := mk(443, nil, transportTLS)
	anyPort := mk(0, nil, "")
	wide := mk(0, []string{"10.0.0.0/8"}, "")
	narrow := mk(0, []string{"10.1.0.0/16"}, "")
	h1 := mk(8080, nil, "", "http/1.1")
	vip := mk(0, []string{"10.1.9.9/32", "fd00::9/128"}, "")
	alpn := mk(9443, nil, transportTLS, "h2", "http/1.1")
	alpnTCP := mk(9443, nil, transportTLS)
	names = []string{"a.example.com"}
	sniA := mk(8443, []string{"10.1.9.9/32"}, "")
	names = []string{"*.example.com"}
	sniWild := mk(8443, []string{"10.1.9.9/32"}, "")
	names = []string{"*.b.example.com", "c.example.org"}
	sniWildB := mk(8443, []string{"10.1.9.9/32"}, "")
	names = []string{"raw.example.com"}
	sniRaw := mk(8443, []string{"10.1.9.9/32"}, transportRaw) // a server name on a plaintext chain: never matched by plaintext
	names = nil
	sniNone := mk(8443, []string{"10.1.9.9/32"}, "")
	def := &chainConfig{}
	chains := []*chainConfig{portTLS, anyPort, wide, narrow, h1, vip, alpn, alpnTCP, sniA, sniWild, sniWildB, sniRaw, sniNone}
	ix, err := buildChainIndex(chains, []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m"})
	if err != nil {
		t.Fatal(err)
	}
	lc := &listenerConfig{index: ix, def: def}
	for _, tc := range []struct {
		dst, transport, app string
		want                *chainConfig
		sni                 string
	}{
		{"10.1.2.3:443", transportTLS, "", portTLS, ""},
		{"10.1.2.3:443", transportRaw, "", def, ""}, // port 443 matched; no raw chain there: no fallback to port-less chains
		{"10.1.2.3:80", transportRaw, "", narrow, ""},
		{"10.2.2.3:80", transportRaw, "", wide, ""},
		{"[::ffff:10.2.2.3]:80", transportRaw, "", wide, ""},
		{"192.168.0.1:80", transportRaw, "", anyPort, ""},
		{"192.168.0.1:8080", transportRaw, "http/1.1", h1, ""},
		{"192.168.0.1:8080", transportRaw, "", def, ""},
		{"10.1.9.9:80", transportRaw, "", vip, ""},
		{"[::ffff:10.1.9.9]:80", transportRaw, "", vip, ""},
		{"[fd00::9]:80", transportRaw, "", vip, ""},
		{"[fd00::8]:80", transportRaw, "", anyPort, ""},
		// A ClientHello's ALPN list: the first protocol a chain names.
		{"10.1.2.3:9443", transportTLS, "istio,http/1.1", alpn, ""},
		{"10.1.2.3:9443", transportTLS, "h2", alpn, ""},
		{"10.1.2.3:9443", transportTLS, "", alpnTCP, ""},
		{"10.1.2.3:9443", transportTLS, "istio", alpnTCP, ""},
		// server_names, after the destination IP: the exact name, then
		// the longest wildcard suffix, then the chains without names.
		{"10.1.9.9:8443", transportTLS, "", sniA, "a.example.com"},
		{"10.1.9.9:8443", transportTLS, "", sniA, "A.Example.COM"},
		{"10.1.9.9:8443", transportTLS, "", sniWild, "z.example.com"},
		{"10.1.9.9:8443", transportTLS, "", sniWild, "z.y.example.com"},
		{"10.1.9.9:8443", transportTLS, "", sniWildB, "z.b.example.com"},
		{"10.1.9.9:8443", transportTLS, "", sniWildB, "c.example.org"},
		{"10.1.9.9:8443", transportTLS, "", sniNone, "example.com"},
		{"10.1.9.9:8443", transportTLS, "", sniNone, ""},
		{"10.1.9.9:8443", transportTLS, "", def, "raw.example.com"}, // its names' level has only a raw_buffer chain: no backtracking
		{"10.1.9.9:8443", transportRaw, "", sniNone, ""},
		{"10.2.9.9:8443", transportTLS, "", def, "a.example.com"}, // port 8443 matched, its IP did not: the names are not looked at
	} {
		var apps []string
		if tc.app != "" {
			apps = strings.Split(tc.app, ",")
		}
		if got := lc.match(netip.MustParseAddrPort(tc.dst), tc.sni, tc.transport, apps); got != tc.want {
			t.Errorf("%s %q %s %q: got chain %+v, want %+v", tc.dst, tc.sni, tc.transport, tc.app, got.match, tc.want.match)
		}
	}
}

func TestHTTPInspector(t *testing.T) {
	for _, tc := range []struct {
		head    string
		decided bool
		want    string
	}{
		{"GET / HTTP/1.1\r\n", true, "http/1.1"},
		{"GET / HTTP/1.0\r\n", true, "http/1.0"},
		{"GET / HTTP/1.0\n\n", true, "http/1.0"},
		{"GET /" + strings.Repeat("a", 100) + " HTTP/1.0\r\nHost: x\r\n", true, "http/1.0"},
		{"POST ", false, "http/1.1"}, // the version is still to come
		{"POST /x HTTP/1.1", false, "http/1.1"},
		{"GET /" + strings.Repeat("a", maxInspectBytes), true, "http/1.1"}, // too long to wait for
		{"GE", false, ""},
		{"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", true, "h2c"},
		{"PRI * HTTP", false, ""},
		{"\x16\x03\x01", true, ""},
		{"SSH-2.0-OpenSSH", true, ""},
		{"get / HTTP/1.1", true, ""},
	} {
		if got := httpDecided([]byte(tc.head)); got != tc.decided {
			t.Errorf("httpDecided(%q) = %v", tc.head, got)
		}
		if got := httpProtocol([]byte(tc.head)); got != tc.want {
			t.Errorf("httpProtocol(%q) = %q, want %q", tc.head, got, tc.want)
		}
	}
}

// TestTCPProxyEndsWithClose: a relayed connection in progress is counted
// by the data plane and ends when it closes. The client sends nothing
// (a server-first protocol): with continue_on_listener_filters_timeout
// the HTTP inspector gives up and the connection is matched without an
// application protocol.
func TestTCPProxyEndsWithClose(t *testing.T) {
	f := &fakeOrigDst{dst: map[netip.Addr]netip.AddrPort{}}
	d, err := New(Options{OriginalDst: f.lookup})
	if err != nil {
		t.Fatal(err)
	}
	l := proxytest.VirtualListener(t, "v", core.TrafficDirection_OUTBOUND, proxytest.TCPProxyChain(t, nil, "PassthroughCluster"))
	l.ListenerFiltersTimeout = durationpb.New(50 * time.Millisecond)
	l.ContinueOnListenerFiltersTimeout = true
	mustApply(t, d, resources(l, proxytest.OriginalDstCluster("PassthroughCluster", "")))
	up := tcpNamed(t, "up")
	f.set("127.0.0.60", netip.MustParseAddrPort(up))
	c := dialFrom(t, "127.0.0.60", d.ListenerAddr("v").String())
	buf := make([]byte, 3)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "up:" {
		t.Fatalf("read %q, %v", buf, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if b, _ := io.ReadAll(c); len(b) != 0 {
		t.Errorf("read %q after Close: want the connection ended", b)
	}
}

// TestTCPProxyMutualTLS: a tcp_proxy chain reaches a sidecar's inbound
// TCP chain over mutual TLS (the cluster's transport_socket_matches, as
// for HTTP), the server side terminates it and relays to its app, and
// counts the connection with the client's principal.
func TestTCPProxyMutualTLS(t *testing.T) {
	ca := proxytest.NewMeshCA(t)
	clientID, serverID := proxytest.SPIFFE("default", "client"), proxytest.SPIFFE("default", "server")
	serverReg := newRegistry()
	server, _ := mtlsProxy(t, ca, "server", serverID, serverReg)
	in := &listener.Listener{Name: "in", Address: sockAddr("127.0.0.1", 0), TrafficDirection: core.TrafficDirection_INBOUND,
		FilterChains: []*listener.FilterChain{proxytest.TCPProxyChain(t, nil, "inbound|9000||")}}
	in.FilterChains[0].TransportSocket = proxytest.TLSSocket(t, proxytest.IstioDownstreamTLS())
	mustApply(t, server, resources(in, staticCluster(t, "inbound|9000||", tcpNamed(t, "app"))))

	client, _ := mtlsProxy(t, ca, "client", clientID, nil)
	f := &fakeOrigDst{dst: map[netip.Addr]netip.AddrPort{}}
	client.originalDst = f.lookup
	c := staticCluster(t, "outbound|9000||tcp.default.svc.cluster.local", "127.0.0.1:1")
	c.LoadAssignment = cla(c.GetName(), ep{Addr: server.ListenerAddr("in").String(), TLSMode: contract.TLSModeIstio})
	proxytest.AutoMTLS(t, c, proxytest.IstioUpstreamTLS("", []string{serverID}))
	out := proxytest.VirtualListener(t, "virtualOutbound", core.TrafficDirection_OUTBOUND, nil,
		proxytest.TCPProxyChain(t, proxytest.Match(9000, nil), c.GetName()))
	mustApply(t, client, resources(out, c))

	f.set("127.0.0.70", netip.MustParseAddrPort("10.77.0.9:9000"))
	if got := exchange(t, dialFrom(t, "127.0.0.70", client.ListenerAddr("virtualOutbound").String()), "secret"); got != "app:secret" {
		t.Fatalf("got %q, want app:secret", got)
	}
	var opened float64
	for range 200 { // the server records the connection as its relay ends
		mfs, err := serverReg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() != "istio_tcp_connections_closed_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				l := map[string]string{}
				for _, lp := range m.GetLabel() {
					l[lp.GetName()] = lp.GetValue()
				}
				if l["reporter"] == "destination" && l["connection_security_policy"] == "mutual_tls" && l["source_principal"] == clientID {
					opened += m.GetCounter().GetValue()
				}
			}
		}
		if opened > 0 {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if opened != 1 {
		t.Errorf("server counted %v mutual TLS connections from %s, want 1", opened, clientID)
	}
}

// TestPassthroughNoLoop: a connection that reached the virtual listener
// directly (no original destination) is not relayed back to the listener
// by an ORIGINAL_DST cluster: it is closed.
func TestPassthroughNoLoop(t *testing.T) {
	f := &fakeOrigDst{dst: map[netip.Addr]netip.AddrPort{}}
	d := newCaptureDataplane(t, f)
	l := proxytest.VirtualListener(t, "v", core.TrafficDirection_OUTBOUND, proxytest.TCPProxyChain(t, nil, "PassthroughCluster"))
	mustApply(t, d, resources(l, proxytest.OriginalDstCluster("PassthroughCluster", "")))
	c := dialFrom(t, "127.0.0.80", d.ListenerAddr("v").String())
	io.WriteString(c, "hello")
	if b, _ := io.ReadAll(c); len(b) != 0 {
		t.Errorf("read %q: want the connection closed", b)
	}
}

// TestHTTPPassthrough: HTTP routed to an ORIGINAL_DST cluster (Istio's
// allow_any virtual host) goes where the client dialled; a request that
// came to the listener's own address is not sent back to it (503, UH).
func TestHTTPPassthrough(t *testing.T) {
	f := &fakeOrigDst{dst: map[netip.Addr]netip.AddrPort{}}
	d := newCaptureDataplane(t, f)
	rc := routeConfig("80", vhost("allow_any", []string{"*"}, toCluster("allow_any", prefixMatch("/"), "PassthroughCluster")))
	l := proxytest.VirtualListener(t, "v", core.TrafficDirection_OUTBOUND, nil, proxytest.HTTPChain(t, nil, rc))
	mustApply(t, d, resources(l, proxytest.OriginalDstCluster("PassthroughCluster", "")))
	addr := d.ListenerAddr("v").String()
	up := echoUpstream(t, "external", false)
	f.set("127.0.0.90", netip.MustParseAddrPort(up))
	get := func(src string) result {
		tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
			return d.DialContext(ctx, "tcp", addr)
		}}
		t.Cleanup(tr.CloseIdleConnections)
		return do(t, &http.Client{Transport: tr, Timeout: 10 * time.Second}, "GET", "http://example.com/", "example.com", nil)
	}
	if r := get("127.0.0.90"); r.code != 200 || r.upstream != "external" {
		t.Errorf("redirected request: %d from %q, want 200 from the original destination", r.code, r.upstream)
	}
	if r := get("127.0.0.91"); r.code != http.StatusServiceUnavailable || r.header.Get("X-Upstream") != "" {
		t.Errorf("request to the listener itself: %d from %q, want 503 without a loop", r.code, r.upstream)
	}
}
