package cluster

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"weft.dev/weft/internal/proxy/proxytest"
	"weft.dev/weft/internal/proxy/telemetry"
	"weft.dev/weft/internal/proxy/xdswire"
)

// TestBuildCarriesState: an identical update keeps the cluster's state and
// its endpoints; an endpoint-only update keeps the state and replaces the
// endpoints; a changed Cluster gets new state.
// With the encodings (BuildWire), the same, told by the bytes, and the
// Cluster keeps no decoded message.
func TestBuildCarriesState(t *testing.T) {
	t.Run("messages", func(t *testing.T) { testBuildCarriesState(t, false) })
	t.Run("encodings", func(t *testing.T) { testBuildCarriesState(t, true) })
}

func testBuildCarriesState(t *testing.T, wire bool) {
	b := testBuilder(t)
	mk := func(addr string, timeout time.Duration) (*clusterv3.Cluster, map[string]*endpointv3.ClusterLoadAssignment) {
		c := edsCluster(t, "svc", false, "")
		c.ConnectTimeout = durationpb.New(timeout)
		return c, map[string]*endpointv3.ClusterLoadAssignment{"svc": cla("svc", ep{Addr: addr})}
	}
	enc := func(m proto.Message) xdswire.Packed {
		out, err := xdswire.Pack(m)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	build := func(prev *Cluster, addr string, timeout time.Duration) *Cluster {
		t.Helper()
		c, eps := mk(addr, timeout)
		var ct *Cluster
		var err error
		if wire {
			// As the xDS client hands an unchanged assignment over: its
			// encoding only.
			ct, err = b.BuildWire(enc(c), func() (*clusterv3.Cluster, error) { return c, nil },
				AssignmentMaps{Encodings: map[string]xdswire.Packed{"svc": enc(eps["svc"])}}, prev)
		} else {
			ct, err = b.Build(c, eps, prev)
		}
		if err != nil {
			t.Fatal(err)
		}
		if wire && (ct.cfg != nil || ct.cla != nil) {
			t.Error("built from encodings, the cluster keeps its decoded resource or assignment")
		}
		t.Cleanup(ct.CloseIdle)
		return ct
	}
	first := build(nil, "10.0.0.1:80", time.Second)
	same := build(first, "10.0.0.1:80", time.Second)
	if !same.SharesState(first) || pickerID(same) != pickerID(first) {
		t.Errorf("identical update replaced state or endpoints")
	}
	if wire && same != first {
		t.Errorf("identical encodings built a new cluster, want the same one carried over")
	}
	moved := build(same, "10.0.0.2:80", time.Second)
	if !moved.SharesState(first) || pickerID(moved) == pickerID(first) {
		t.Errorf("endpoint-only update: state kept=%v endpoints replaced=%v", moved.SharesState(first), pickerID(moved) != pickerID(first))
	}
	if e := moved.Pick(HashKey{}); e == nil || e.Addr() != "10.0.0.2:80" || e.Conns() == nil {
		t.Errorf("picked %v, want the new endpoint with its connections", e)
	}
	changed := build(moved, "10.0.0.2:80", 2*time.Second)
	if changed.SharesState(moved) {
		t.Errorf("changed cluster kept its state")
	}
}

// pickerID is what stands for c's endpoints: its picker, or the lazy
// one that builds it.
func pickerID(c *Cluster) any {
	if c.lazy != nil {
		return c.lazy
	}
	return c.picker
}

// TestPoolBuiltAtFirstUse: a cluster's pool and its endpoints'
// connections are built at the first request, not when the cluster is;
// once built, an endpoint-only update keeps the connections of the
// endpoints that stay, and drops those of the ones that left.
func TestPoolBuiltAtFirstUse(t *testing.T) {
	b := testBuilder(t)
	c := edsCluster(t, "svc", false, "")
	eps := func(addrs ...string) map[string]*endpointv3.ClusterLoadAssignment {
		var es []ep
		for _, a := range addrs {
			es = append(es, ep{Addr: a})
		}
		return map[string]*endpointv3.ClusterLoadAssignment{"svc": cla("svc", es...)}
	}
	first, err := b.Build(c, eps("10.0.0.1:80", "10.0.0.2:80"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(first.CloseIdle)
	first.RetainConnections()
	if first.cell.get().up.Built() != nil {
		t.Fatal("the pool was built with the cluster, before any request")
	}
	for _, e := range first.picker.endpoints {
		if e.conns.Load() != nil {
			t.Fatalf("endpoint %s has connections before any request", e.Addr())
		}
	}
	if first.Broken() != nil || first.Breaker() == nil {
		t.Fatal("a plaintext cluster reports broken sockets, or has no breaker")
	}
	var one *Endpoint
	for _, e := range first.picker.endpoints {
		if e.Addr() == "10.0.0.1:80" {
			one = e
		}
	}
	conns := one.Conns()
	if conns == nil || first.cell.get().up.Built() == nil || first.Upstream() != first.cell.get().up.Built() {
		t.Fatal("the first request built no pool, or another one than the cluster's")
	}
	if one.Conns() != conns {
		t.Fatal("the endpoint's connections changed between two requests")
	}

	// An endpoint-only update: the endpoint that stays keeps its
	// connections; the pool is the same.
	moved, err := b.Build(c, eps("10.0.0.1:80", "10.0.0.3:80"), first)
	if err != nil {
		t.Fatal(err)
	}
	moved.RetainConnections()
	for _, e := range moved.picker.endpoints {
		got := e.conns.Load()
		if got == nil {
			t.Errorf("endpoint %s of a cluster whose pool is built has no connections", e.Addr())
		}
		if e.Addr() == "10.0.0.1:80" && got != conns {
			t.Errorf("endpoint %s got new connections in an endpoint-only update", e.Addr())
		}
	}
}

func TestBuildErrors(t *testing.T) {
	b := testBuilder(t)
	for _, tc := range []struct {
		name string
		mod  func(c *clusterv3.Cluster)
		want string
	}{
		{"original dst without CLUSTER_PROVIDED", func(c *clusterv3.Cluster) {
			c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}
		}, "lb_policy: an ORIGINAL_DST cluster must use CLUSTER_PROVIDED"},
		{"original dst with endpoints", func(c *clusterv3.Cluster) {
			c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}
			c.LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED
			c.LoadAssignment = cla("svc", ep{Addr: "10.0.0.1:80"})
		}, "load_assignment: an ORIGINAL_DST cluster takes no endpoints"},
		{"bind config", func(c *clusterv3.Cluster) {
			c.UpstreamBindConfig = &core.BindConfig{SourceAddress: &core.SocketAddress{Address: "nope"}}
		}, `upstream_bind_config.source_address.address: "nope" is not an IP address`},
		{"lb policy", func(c *clusterv3.Cluster) { c.LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED }, "lb_policy"},
		{"connect timeout", func(c *clusterv3.Cluster) { c.ConnectTimeout = durationpb.New(0) }, "connect_timeout"},
		{"retry budget", func(c *clusterv3.Cluster) {
			c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{}}}}
		}, "circuit_breakers.thresholds[0].retry_budget: unsupported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := edsCluster(t, "svc", false, "")
			tc.mod(c)
			ct, err := b.Build(c, nil, nil)
			if err == nil {
				ct.CloseIdle()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want …%s…", err, tc.want)
			}
		})
	}
}

// TestOriginalDst: an ORIGINAL_DST cluster's endpoint is the destination
// asked for, the same Endpoint while it is used, kept across an update
// that leaves the cluster unchanged, and dropped once unused for the
// cleanup interval; its connections come from the bind address.
func TestOriginalDst(t *testing.T) {
	b := testBuilder(t)
	c := proxytest.OriginalDstCluster("PassthroughCluster", "127.0.0.1")
	c.CleanupInterval = durationpb.New(time.Hour)
	ct, err := b.Build(c, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ct.CloseIdle)
	if !ct.IsOriginalDst() || ct.Pick(HashKey{}) != nil {
		t.Fatalf("IsOriginalDst=%v, Pick=%v: want an original-destination cluster without endpoints", ct.IsOriginalDst(), ct.Pick(HashKey{}))
	}
	if got := ct.DstNoEndpoint().ServiceName; got != "PassthroughCluster" {
		t.Errorf("destination service name %q, want the cluster's", got)
	}
	dst := netip.MustParseAddrPort("10.1.2.3:8080")
	e := ct.PickOriginal(dst)
	if e == nil || e.Addr() != "10.1.2.3:8080" || e.Conns() == nil {
		t.Fatalf("PickOriginal(%v) = %v", dst, e)
	}
	if ct.PickOriginal(netip.MustParseAddrPort("[::ffff:10.1.2.3]:8080")) != e {
		t.Errorf("a v4-mapped destination got another endpoint")
	}
	if other := ct.PickOriginal(netip.MustParseAddrPort("10.1.2.4:8080")); other == nil || other == e {
		t.Errorf("another destination got %v", other)
	}
	same, err := b.Build(proxytest.OriginalDstCluster("PassthroughCluster", "127.0.0.1"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(same.CloseIdle)
	c2 := proxytest.OriginalDstCluster("PassthroughCluster", "127.0.0.1")
	c2.CleanupInterval = durationpb.New(time.Hour)
	kept, err := b.Build(c2, nil, ct)
	if err != nil {
		t.Fatal(err)
	}
	if !kept.SharesState(ct) || kept.PickOriginal(dst) != e {
		t.Errorf("an unchanged update lost the original destinations")
	}
	kept.RetainConnections()

	// Cleanup: an interval that has passed drops every unused host.
	o := ct.cell.get().orig
	o.mu.Lock()
	for _, h := range o.hosts {
		h.used = h.used.Add(-2 * time.Hour)
	}
	o.nextSweep = time.Time{}
	o.mu.Unlock()
	if ct.PickOriginal(dst) == e {
		t.Errorf("an unused host survived its cleanup interval")
	}
	o.mu.Lock()
	n := len(o.hosts)
	o.mu.Unlock()
	if n != 1 {
		t.Errorf("%d hosts after cleanup, want 1 (the one just picked)", n)
	}

	// The bind address: the upstream sees connections from it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	bound, err := b.Build(proxytest.OriginalDstCluster("InboundPassthroughClusterIpv4", "127.0.0.6"), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bound.CloseIdle)
	uc, err := bound.PickOriginal(ln.Addr().(*net.TCPAddr).AddrPort()).Conns().DialStream(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if got := sc.RemoteAddr().(*net.TCPAddr).IP.String(); got != "127.0.0.6" {
		t.Errorf("upstream connection from %s, want 127.0.0.6 (upstream_bind_config)", got)
	}
}

// TestDstInbound: a cluster's inbound destination labels are the
// proxy's workload with the cluster's service (the cluster's own name
// for a passthrough cluster), and its labels for a request that found
// no endpoint the service with an unknown workload; each made once, at
// the first call.
func TestDstInbound(t *testing.T) {
	b := testBuilder(t)
	for _, tc := range []struct {
		c                   *clusterv3.Cluster
		host, name, service string
	}{
		{edsCluster(t, "inbound|9080||reviews.default.svc.cluster.local", false, "reviews.default.svc.cluster.local"), "reviews.default.svc.cluster.local", "reviews", "default"},
		{proxytest.OriginalDstCluster("InboundPassthroughCluster", "127.0.0.6"), "InboundPassthroughCluster", "InboundPassthroughCluster", "unknown"},
	} {
		ct, err := b.Build(tc.c, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(ct.CloseIdle)
		if ct.dstInbound.Load() != nil || ct.dstNoEndpoint.Load() != nil {
			t.Errorf("%s: labels made before they were asked for", ct.Name())
		}
		outHost := tc.host
		if tc.service == telemetry.Unknown {
			outHost = telemetry.Unknown // passthrough: destination_service unknown, the name the cluster
		}
		noEP := telemetry.DstLabels{Service: outHost, ServiceName: tc.name, ServiceNamespace: tc.service,
			Workload: telemetry.Unknown, WorkloadNamespace: telemetry.Unknown, App: telemetry.Unknown, Version: telemetry.Unknown}
		if d := ct.DstNoEndpoint(); d != b.Metrics.InternDst(noEP) || ct.DstNoEndpoint() != d {
			t.Errorf("%s: labels without an endpoint %+v, want %+v, made once", ct.Name(), d, noEP)
		}
		d := ct.DstInbound()
		want := telemetry.IdentityDst(b.Identity, tc.host, tc.name, tc.service)
		if d == nil || d.Service != want.Service || d.ServiceName != want.ServiceName || d.ServiceNamespace != want.ServiceNamespace ||
			d.Workload != want.Workload || d.WorkloadNamespace != want.WorkloadNamespace {
			t.Errorf("%s: inbound labels %+v, want %+v", ct.Name(), d, want)
		}
		if ct.DstInbound() != d || b.Metrics.InternDst(want) != d {
			t.Errorf("%s: inbound labels not made once, interned", ct.Name())
		}
	}
}

// TestEndpointDstLazy: an endpoint's destination labels are interned at
// its first Dst, not when its cluster is built, and name the cluster's
// service and the endpoint's workload as they did when built eagerly.
func TestEndpointDstLazy(t *testing.T) {
	b := testBuilder(t)
	const host = "reviews.default.svc.cluster.local"
	c := edsCluster(t, "outbound|9080||"+host, false, host)
	eps := map[string]*endpointv3.ClusterLoadAssignment{c.GetEdsClusterConfig().GetServiceName(): cla(c.GetEdsClusterConfig().GetServiceName(),
		ep{Addr: "10.0.0.1:9080", Workload: "reviews-v1;default;reviews;v1;Kubernetes"},
		ep{Addr: "10.0.0.2:9080"})}
	ct, err := b.Build(c, eps, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ct.CloseIdle)
	byAddr := map[string]*Endpoint{}
	for _, e := range ct.picker.endpoints {
		if e.dst.Load() != nil {
			t.Errorf("%s: destination labels made before they were asked for", e.Addr())
		}
		byAddr[e.Addr()] = e
	}
	for addr, want := range map[string]telemetry.DstLabels{
		"10.0.0.1:9080": {Service: host, ServiceName: "reviews", ServiceNamespace: "default",
			Workload: "reviews-v1", WorkloadNamespace: "default", App: "reviews", Version: "v1", Cluster: "Kubernetes"},
		"10.0.0.2:9080": {Service: host, ServiceName: "reviews", ServiceNamespace: "default",
			Workload: telemetry.Unknown, WorkloadNamespace: telemetry.Unknown, App: telemetry.Unknown, Version: telemetry.Unknown},
	} {
		e := byAddr[addr]
		if e == nil {
			t.Fatalf("no endpoint %s", addr)
		}
		d := e.Dst()
		if w := b.Metrics.InternDst(want); d != w {
			t.Errorf("%s: labels %+v, want %+v", addr, d, w)
		}
		if e.Dst() != d {
			t.Errorf("%s: labels not made once", addr)
		}
	}
}
