package tcpproxy

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"weft.dev/weft/internal/proxy/cluster"
	"weft.dev/weft/internal/proxy/proxytest"
	"weft.dev/weft/internal/proxy/telemetry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    *tcpv3.TcpProxy
		want string // error substring; "" = ok
	}{
		{"cluster", &tcpv3.TcpProxy{StatPrefix: "s", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "c"}}, ""},
		{"weighted", &tcpv3.TcpProxy{StatPrefix: "s", ClusterSpecifier: &tcpv3.TcpProxy_WeightedClusters{WeightedClusters: &tcpv3.TcpProxy_WeightedCluster{
			Clusters: []*tcpv3.TcpProxy_WeightedCluster_ClusterWeight{{Name: "a", Weight: 90}, {Name: "b", Weight: 10}}}}}, ""},
		{"no stat prefix", &tcpv3.TcpProxy{ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "c"}}, "stat_prefix: empty"},
		{"no cluster", &tcpv3.TcpProxy{StatPrefix: "s"}, "cluster or weighted_clusters required"},
		{"zero weights", &tcpv3.TcpProxy{StatPrefix: "s", ClusterSpecifier: &tcpv3.TcpProxy_WeightedClusters{WeightedClusters: &tcpv3.TcpProxy_WeightedCluster{
			Clusters: []*tcpv3.TcpProxy_WeightedCluster_ClusterWeight{{Name: "a"}}}}}, "sum to 0"},
		{"bad idle", &tcpv3.TcpProxy{StatPrefix: "s", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "c"}, IdleTimeout: durationpb.New(-time.Second)}, "idle_timeout"},
		{"header hash", &tcpv3.TcpProxy{StatPrefix: "s", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "c"}, HashPolicy: []*typev3.HashPolicy{{PolicySpecifier: &typev3.HashPolicy_FilterState_{}}}}, "hash_policy[0]: only source_ip"},
		{"bad max duration", &tcpv3.TcpProxy{StatPrefix: "s", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "c"}, MaxDownstreamConnectionDuration: durationpb.New(-time.Second)}, "max_downstream_connection_duration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse(proxytest.MustAny(t, tc.m), nil)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if c.IdleTimeout != DefaultIdleTimeout {
					t.Errorf("idle timeout %v, want Envoy's default %v", c.IdleTimeout, DefaultIdleTimeout)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want …%s…", err, tc.want)
			}
		})
	}
}

// env is a Proxy with its metrics, and a cluster builder.
type env struct {
	p   *Proxy
	reg *prometheus.Registry
	b   *cluster.Builder
}

func newEnv(t *testing.T) *env {
	reg := prometheus.NewRegistry()
	m, err := telemetry.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	tm, err := telemetry.NewTCPMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	st, err := cluster.NewStatVecs(reg)
	if err != nil {
		t.Fatal(err)
	}
	self := m.InternSrc(telemetry.SrcLabels{Workload: "w", Namespace: "ns", App: "a", Version: "v1"})
	return &env{p: &Proxy{Metrics: tm, Self: self, Peer: self}, reg: reg, b: &cluster.Builder{Metrics: m, Stats: st}}
}

func (e *env) build(t *testing.T, c *clusterv3.Cluster) map[string]*cluster.Cluster {
	ct, err := e.b.Build(c, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ct.CloseIdle)
	return map[string]*cluster.Cluster{c.GetName(): ct}
}

// serve runs Serve on the server side of a loopback connection and
// returns the client side; Serve's end is awaited at cleanup.
func (e *env) serve(t *testing.T, cfg *Config, clusters map[string]*cluster.Cluster, dst netip.AddrPort) *net.TCPConn {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.p.Serve(t.Context(), Conn{Conn: sc, Dst: dst}, cfg, clusters)
	}()
	t.Cleanup(func() { cc.Close(); <-done })
	return cc.(*net.TCPConn)
}

// echoUpstream accepts one connection, reads everything to EOF, then
// writes "got:"+what it read and closes.
func echoUpstream(t *testing.T) (netip.AddrPort, <-chan string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- "accept: " + err.Error()
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		b, _ := io.ReadAll(c)
		got <- string(b)
		c.Write(append([]byte("got:"), b...))
	}()
	return ln.Addr().(*net.TCPAddr).AddrPort(), got
}

func cfgFor(name string, idle time.Duration) *Config {
	return &Config{StatPrefix: name, Clusters: []WeightedCluster{{Name: name, Weight: 1}}, IdleTimeout: idle, total: 1}
}

// TestRelayHalfClose: bytes go both ways; the client's half-close reaches
// the upstream, whose answer still comes back.
func TestRelayHalfClose(t *testing.T) {
	e := newEnv(t)
	up, got := echoUpstream(t)
	clusters := e.build(t, proxytest.StaticCluster(t, "outbound|9000||tcp.ns.svc.cluster.local", up.String()))
	cc := e.serve(t, cfgFor("outbound|9000||tcp.ns.svc.cluster.local", time.Minute), clusters, netip.AddrPort{})
	cc.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := cc.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	cc.CloseWrite()
	if s := <-got; s != "hello" {
		t.Fatalf("upstream read %q", s)
	}
	b, err := io.ReadAll(cc)
	if err != nil || string(b) != "got:hello" {
		t.Fatalf("client read %q, %v", b, err)
	}
}

// TestOriginalDstRelay: an ORIGINAL_DST cluster dials the connection's
// destination, and the connection is counted as Istio counts ALLOW_ANY
// passthrough: destination_service_name PassthroughCluster, the other
// destination labels unknown, and upstream_cx_total of the cluster.
func TestOriginalDstRelay(t *testing.T) {
	e := newEnv(t)
	up, got := echoUpstream(t)
	clusters := e.build(t, proxytest.OriginalDstCluster("PassthroughCluster", ""))
	cc := e.serve(t, cfgFor("PassthroughCluster", 0), clusters, up)
	cc.SetDeadline(time.Now().Add(30 * time.Second))
	cc.Write([]byte("x"))
	cc.CloseWrite()
	if s := <-got; s != "x" {
		t.Fatalf("upstream read %q", s)
	}
	if b, _ := io.ReadAll(cc); string(b) != "got:x" {
		t.Fatalf("client read %q", b)
	}
	want := unknownDst("PassthroughCluster", "-")
	waitFor(t, func() error {
		for name, n := range map[string]float64{
			"istio_tcp_connections_opened_total": 1,
			"istio_tcp_connections_closed_total": 1,
			"istio_tcp_sent_bytes_total":         1,
			"istio_tcp_received_bytes_total":     5, // "got:x"
		} {
			if v := sum(t, e.reg, name, want); v != n {
				return errorf("%s%v = %v, want %v", name, want, v, n)
			}
		}
		if v := sum(t, e.reg, "envoy_cluster_upstream_cx_total", map[string]string{cluster.NameLabel: "PassthroughCluster"}); v != 1 {
			return errorf("upstream_cx_total of PassthroughCluster = %v, want 1", v)
		}
		return nil
	})
}

// TestBlackHole: a cluster without endpoints closes the connection at
// once, counted as Envoy and Istio count REGISTRY_ONLY refusals: a
// connection opened and closed to destination_service_name
// BlackHoleCluster with UH, and upstream_cx_none_healthy.
func TestBlackHole(t *testing.T) {
	e := newEnv(t)
	clusters := e.build(t, proxytest.BlackHoleCluster("BlackHoleCluster"))
	cc := e.serve(t, cfgFor("BlackHoleCluster", time.Minute), clusters, netip.MustParseAddrPort("10.0.0.1:80"))
	cc.SetDeadline(time.Now().Add(30 * time.Second))
	if b, err := io.ReadAll(cc); err != nil || len(b) != 0 {
		t.Fatalf("read %q, %v: want EOF", b, err)
	}
	want := unknownDst("BlackHoleCluster", "UH")
	waitFor(t, func() error {
		for _, name := range []string{"istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total"} {
			if v := sum(t, e.reg, name, want); v != 1 {
				return errorf("%s%v = %v, want 1", name, want, v)
			}
		}
		st := map[string]string{cluster.NameLabel: "BlackHoleCluster"}
		if v := sum(t, e.reg, "envoy_cluster_upstream_cx_none_healthy", st); v != 1 {
			return errorf("upstream_cx_none_healthy of BlackHoleCluster = %v, want 1", v)
		}
		if v := sum(t, e.reg, "envoy_cluster_upstream_cx_total", st); v != 0 {
			return errorf("upstream_cx_total of BlackHoleCluster = %v, want 0", v)
		}
		return nil
	})
}

// unknownDst is the label set of an outbound TCP connection the proxy
// handled for a destination outside the mesh with cluster name, as
// Istio's client-side stats filter reports it.
func unknownDst(name, flags string) map[string]string {
	return map[string]string{
		"reporter": "source", "request_protocol": "tcp", "response_flags": flags,
		"source_workload": "w", "source_workload_namespace": "ns", "source_app": "a", "source_version": "v1",
		"destination_service": "unknown", "destination_service_name": name, "destination_service_namespace": "unknown",
		"destination_workload": "unknown", "destination_workload_namespace": "unknown",
		"destination_app": "unknown", "destination_version": "unknown",
		"connection_security_policy": "unknown", "source_principal": "unknown", "destination_principal": "unknown",
	}
}

// sum adds up the series of metric name whose labels include want.
func sum(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var total float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range want {
				if have[k] != v {
					continue series
				}
			}
			total += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return total
}

// TestIdleTimeout: a connection idle in both directions is closed.
func TestIdleTimeout(t *testing.T) {
	e := newEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	clusters := e.build(t, proxytest.StaticCluster(t, "c", ln.Addr().String()))
	cc := e.serve(t, cfgFor("c", 50*time.Millisecond), clusters, netip.AddrPort{})
	cc.SetDeadline(time.Now().Add(30 * time.Second))
	if b, err := io.ReadAll(cc); err != nil || len(b) != 0 {
		t.Fatalf("read %q, %v: want EOF after the idle timeout", b, err)
	}
	select {
	case c := <-accepted:
		c.Close()
	case <-time.After(30 * time.Second):
		t.Fatal("upstream never connected")
	}
}

// TestSentReceivedBytes: the byte counters see both directions.
func TestSentReceivedBytes(t *testing.T) {
	e := newEnv(t)
	up, got := echoUpstream(t)
	clusters := e.build(t, proxytest.StaticCluster(t, "c", up.String()))
	cc := e.serve(t, cfgFor("c", time.Minute), clusters, netip.AddrPort{})
	cc.SetDeadline(time.Now().Add(30 * time.Second))
	payload := bytes.Repeat([]byte("a"), 100000)
	cc.Write(payload)
	cc.CloseWrite()
	<-got
	b, _ := io.ReadAll(cc)
	if len(b) != len(payload)+4 {
		t.Fatalf("client read %d bytes", len(b))
	}
	waitFor(t, func() error {
		mfs, err := e.reg.Gather()
		if err != nil {
			return err
		}
		vals := map[string]float64{}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				vals[mf.GetName()] += m.GetCounter().GetValue()
			}
		}
		if vals["istio_tcp_sent_bytes_total"] != float64(len(payload)) || vals["istio_tcp_received_bytes_total"] != float64(len(payload)+4) ||
			vals["istio_tcp_connections_opened_total"] != 1 || vals["istio_tcp_connections_closed_total"] != 1 {
			return errorf("metrics %v", vals)
		}
		return nil
	})
}

type errString string

func (e errString) Error() string { return string(e) }

func errorf(format string, a ...any) error { return errString(fmt.Sprintf(format, a...)) }

// waitFor polls f for a bounded time (the relay's goroutine records its
// last counters right after the client sees EOF).
func waitFor(t *testing.T, f func() error) {
	t.Helper()
	var err error
	for range 200 {
		if err = f(); err == nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal(err)
}

// TestConnectFailure: an endpoint that refuses closes the downstream
// connection, counted as UF and upstream_cx_connect_fail.
func TestConnectFailure(t *testing.T) {
	e := newEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	clusters := e.build(t, proxytest.StaticCluster(t, "c", addr))
	cc := e.serve(t, cfgFor("c", time.Minute), clusters, netip.AddrPort{})
	cc.SetDeadline(time.Now().Add(30 * time.Second))
	if b, err := io.ReadAll(cc); err != nil || len(b) != 0 {
		t.Fatalf("read %q, %v: want EOF", b, err)
	}
	waitFor(t, func() error {
		mfs, err := e.reg.Gather()
		if err != nil {
			return err
		}
		var fail, uf float64
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				switch mf.GetName() {
				case "envoy_cluster_upstream_cx_connect_fail":
					fail += m.GetCounter().GetValue()
				case "istio_tcp_connections_closed_total":
					for _, l := range m.GetLabel() {
						if l.GetName() == "response_flags" && l.GetValue() == "UF" {
							uf += m.GetCounter().GetValue()
						}
					}
				}
			}
		}
		if fail != 1 || uf != 1 {
			return errorf("connect_fail=%v UF=%v, want 1 and 1", fail, uf)
		}
		return nil
	})
}

// TestMaxConnections: the cluster's circuit breaker bounds the relayed
// connections, as Envoy's tcp_proxy does: with max_connections 1 and one
// connection open, the next is closed at once (UO, upstream_cx_overflow)
// without reaching the upstream; once the first ends, a new one relays.
func TestMaxConnections(t *testing.T) {
	e := newEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	c := proxytest.StaticCluster(t, "c", ln.Addr().String())
	c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxConnections: wrapperspb.UInt32(1)}}}
	clusters := e.build(t, c)
	first := e.serve(t, cfgFor("c", time.Minute), clusters, netip.AddrPort{})
	var up net.Conn
	select {
	case up = <-accepted:
	case <-time.After(30 * time.Second):
		t.Fatal("the first connection never reached the upstream")
	}
	second := e.serve(t, cfgFor("c", time.Minute), clusters, netip.AddrPort{})
	second.SetDeadline(time.Now().Add(30 * time.Second))
	if b, err := io.ReadAll(second); err != nil || len(b) != 0 {
		t.Fatalf("second connection: read %q, %v; want EOF (overflow)", b, err)
	}
	waitFor(t, func() error {
		if v := sum(t, e.reg, "envoy_cluster_upstream_cx_overflow", map[string]string{cluster.NameLabel: "c"}); v != 1 {
			return errorf("upstream_cx_overflow = %v, want 1", v)
		}
		if v := sum(t, e.reg, "istio_tcp_connections_closed_total", map[string]string{"response_flags": "UO"}); v != 1 {
			return errorf("connections closed with UO = %v, want 1", v)
		}
		return nil
	})
	first.Close()
	up.Close()
	// The first relay ends and gives its connection back.
	waitFor(t, func() error {
		if v := sum(t, e.reg, "envoy_cluster_circuit_breakers_default_cx_open", map[string]string{cluster.NameLabel: "c"}); v != 0 {
			return errorf("cx_open = %v, want 0 once the first connection is closed", v)
		}
		return nil
	})
	third := e.serve(t, cfgFor("c", time.Minute), clusters, netip.AddrPort{})
	defer third.Close()
	select {
	case up3 := <-accepted:
		up3.Close()
	case <-time.After(30 * time.Second):
		t.Fatal("the third connection never reached the upstream")
	}
}

// TestMaxDuration: max_downstream_connection_duration closes a
// connection that is busy (never idle) once it has lasted that long.
func TestMaxDuration(t *testing.T) {
	e := newEnv(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		io.Copy(io.Discard, c)
	}()
	a, err := Parse(proxytest.MustAny(t, &tcpv3.TcpProxy{StatPrefix: "c", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "c"},
		IdleTimeout: durationpb.New(0), MaxDownstreamConnectionDuration: durationpb.New(200 * time.Millisecond)}), nil)
	if err != nil {
		t.Fatal(err)
	}
	clusters := e.build(t, proxytest.StaticCluster(t, "c", ln.Addr().String()))
	cc := e.serve(t, a, clusters, netip.AddrPort{})
	cc.SetDeadline(time.Now().Add(30 * time.Second))
	// Keep it busy: writes succeed until the proxy closes the connection.
	var werr error
	for i := 0; i < 3000 && werr == nil; i++ {
		_, werr = cc.Write([]byte("x"))
		time.Sleep(10 * time.Millisecond)
	}
	if werr == nil {
		t.Fatal("the connection was still open after 30 s of writes")
	}
}

// TestHashSourceIP: with hash_policy source_ip on a ring hash cluster,
// every connection of one client reaches the same endpoint (without a
// hash, ten connections over two endpoints all landing on one would
// happen once in 512).
func TestHashSourceIP(t *testing.T) {
	e := newEnv(t)
	hits := make(chan string, 64)
	var addrs []string
	for range 2 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		addr := ln.Addr().String()
		addrs = append(addrs, addr)
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				hits <- addr
				c.Close()
			}
		}()
	}
	c := proxytest.StaticCluster(t, "c", addrs[0])
	c.LoadAssignment = proxytest.CLA("c", proxytest.Endpoint{Addr: addrs[0]}, proxytest.Endpoint{Addr: addrs[1]})
	c.LbPolicy = clusterv3.Cluster_RING_HASH
	clusters := e.build(t, c)
	cfg, err := Parse(proxytest.MustAny(t, &tcpv3.TcpProxy{StatPrefix: "c", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "c"},
		HashPolicy: []*typev3.HashPolicy{{PolicySpecifier: &typev3.HashPolicy_SourceIp_{SourceIp: &typev3.HashPolicy_SourceIp{}}}}}), nil)
	if err != nil || !cfg.HashSourceIP {
		t.Fatalf("parse: %v, HashSourceIP %v", err, cfg != nil && cfg.HashSourceIP)
	}
	seen := map[string]int{}
	for range 10 {
		cc := e.serve(t, cfg, clusters, netip.AddrPort{})
		cc.SetDeadline(time.Now().Add(30 * time.Second))
		io.ReadAll(cc) // the endpoint closes at once
		select {
		case a := <-hits:
			seen[a]++
		case <-time.After(30 * time.Second):
			t.Fatal("no endpoint was reached")
		}
	}
	if len(seen) != 1 {
		t.Errorf("one client's connections reached %v, want one endpoint", seen)
	}
}
