package xdsclient

import (
	"context"
	"errors"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	server "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

const testNode = "sidecar~127.0.0.1~test.default~default.svc.cluster.local"

// gcpServer is go-control-plane's ADS server and snapshot cache on
// loopback, recording the delta requests it receives.
type gcpServer struct {
	t     *testing.T
	addr  string
	snaps cache.SnapshotCache
	stop  func()

	mu   sync.Mutex
	reqs []*discovery.DeltaDiscoveryRequest
}

// startGCP serves on addr ("127.0.0.1:0" for any port) until stop or the
// end of the test.
func startGCP(t *testing.T, addr string) *gcpServer {
	t.Helper()
	g := &gcpServer{t: t, snaps: cache.NewSnapshotCache(true, cache.IDHash{}, nil)}
	cb := server.CallbackFuncs{StreamDeltaRequestFunc: func(_ int64, r *discovery.DeltaDiscoveryRequest) error {
		g.mu.Lock()
		g.reqs = append(g.reqs, proto.Clone(r).(*discovery.DeltaDiscoveryRequest))
		g.mu.Unlock()
		return nil
	}}
	sctx, cancel := context.WithCancel(context.Background())
	gs := grpc.NewServer()
	discovery.RegisterAggregatedDiscoveryServiceServer(gs, server.NewServer(sctx, g.snaps, cb))
	var lis net.Listener
	var err error
	for range 50 { // a restart on the same port may briefly find it taken
		if lis, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	g.addr = lis.Addr().String()
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(lis) }()
	var once sync.Once
	g.stop = func() { once.Do(func() { cancel(); gs.Stop(); <-done }) }
	t.Cleanup(g.stop)
	return g
}

// set gives the node a snapshot: listener l1 -> route r1, and an EDS
// cluster with an assignment of eps endpoints for each name.
func (g *gcpServer) set(ctx context.Context, version string, eps map[string]int, extra ...types.Resource) {
	g.t.Helper()
	res := map[resource.Type][]types.Resource{
		resource.ListenerType: {rdsListener(g.t, "l1", "r1")},
		resource.RouteType:    {routeConfig("r1")},
	}
	for _, c := range slices.Sorted(maps.Keys(eps)) {
		res[resource.ClusterType] = append(res[resource.ClusterType], edsCluster(c))
		res[resource.EndpointType] = append(res[resource.EndpointType], claN(c, eps[c]))
	}
	for _, r := range extra {
		res[resource.ClusterType] = append(res[resource.ClusterType], r)
	}
	s, err := cache.NewSnapshot(version, res)
	if err != nil {
		g.t.Fatal(err)
	}
	if err := g.snaps.SetSnapshot(ctx, testNode, s); err != nil {
		g.t.Fatal(err)
	}
}

// claN is an assignment of n endpoints.
func claN(name string, n int) *endpoint.ClusterLoadAssignment {
	a := cla(name)
	for i := range n {
		a.Endpoints[0].LbEndpoints = append(a.Endpoints[0].LbEndpoints, &endpoint.LbEndpoint{
			HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{Address: &core.Address{
				Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
					Address: "10.0.0." + strconv.Itoa(i+1), PortSpecifier: &core.SocketAddress_PortValue{PortValue: 80}}}}}},
		})
	}
	return a
}

// endpointsOf counts an applied assignment's endpoints.
func endpointsOf(r *Resources, name string) int {
	n := 0
	e, _ := r.Endpoint(name) // decoded again when unchanged
	for _, l := range e.GetEndpoints() {
		n += len(l.GetLbEndpoints())
	}
	return n
}

func nodeForTest() *core.Node { return &core.Node{Id: testNode} }

// requests returns the delta requests received so far.
func (g *gcpServer) requests() []*discovery.DeltaDiscoveryRequest {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.reqs)
}

// startDeltaClient runs a delta client against addr.
func startDeltaClient(t *testing.T, addr string) (*Client, *recorder) {
	t.Helper()
	return startClient(t, addr, func(o *Options) {
		o.Protocol = "" // the default: delta
		o.IncompleteTimeout = 200 * time.Millisecond
	})
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(ctx context.Context, t *testing.T, what string, cond func() bool) {
	t.Helper()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// nextWith returns the next applied set for which ok holds.
func nextWith(ctx context.Context, t *testing.T, rec *recorder, what string, ok func(*Resources) bool) *Resources {
	t.Helper()
	for {
		select {
		case res := <-rec.applied:
			if ok(res) {
				return res
			}
		case <-ctx.Done():
			t.Fatalf("no Apply with %s: %v", what, ctx.Err())
			return nil
		}
	}
}

// received returns the resources received so far by type.
func received(c *Client) map[string]uint64 { return c.Received().Resources }

// diff is after minus before, by type, leaving out zeros.
func diff(after, before map[string]uint64) map[string]uint64 {
	out := map[string]uint64{}
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			out[shortType(k)] = d
		}
	}
	return out
}

// TestDeltaSubscribesAppliesAndRemoves: against go-control-plane's delta
// server, the client subscribes to CDS and LDS by wildcard and to EDS and
// RDS by name, applies only a complete first set, is then sent only the
// assignment that changed, and applies removals.
func TestDeltaSubscribesAppliesAndRemoves(t *testing.T) {
	ctx := testCtx(t)
	g := startGCP(t, "127.0.0.1:0")
	g.set(ctx, "1", map[string]int{"c1": 1, "c2": 1})
	c, rec := startDeltaClient(t, g.addr)

	res := rec.next(ctx, t)
	if !has(res.Routes, "r1") || !has(res.Endpoints, "c1") || !has(res.Endpoints, "c2") || len(res.Clusters) != 2 || res.Versions[TypeListener] != "1" {
		t.Fatalf("first apply incomplete: %+v", res)
	}
	if c.Protocol() != ProtocolDelta {
		t.Errorf("Protocol = %q, want delta by default", c.Protocol())
	}
	waitFor(ctx, t, "4 ACKs", func() bool { return c.Stats().ACKs >= 4 })
	subs := map[string][]string{}
	for _, r := range g.requests() {
		subs[r.GetTypeUrl()] = append(subs[r.GetTypeUrl()], r.GetResourceNamesSubscribe()...)
	}
	want := map[string][]string{TypeCluster: {"*"}, TypeListener: {"*"}, TypeEndpoint: {"c1", "c2"}, TypeRoute: {"r1"}}
	for typ, names := range want {
		got := slices.Sorted(slices.Values(subs[typ]))
		if !slices.Equal(got, names) {
			t.Errorf("%s subscribed to %q, want %q", shortType(typ), got, names)
		}
	}

	// An endpoint change: only c1's assignment is sent.
	before := received(c)
	g.set(ctx, "2", map[string]int{"c1": 2, "c2": 1})
	res = nextWith(ctx, t, rec, "c1's two endpoints", func(r *Resources) bool { return endpointsOf(r, "c1") == 2 })
	if len(res.Clusters) != 2 || !has(res.Endpoints, "c2") || !has(res.Routes, "r1") || len(res.Listeners) != 1 {
		t.Errorf("apply after an endpoint change is not the full set: %+v", res)
	}
	if got := diff(received(c), before); len(got) != 1 || got["cluster load assignment"] != 1 {
		t.Errorf("resources received for one endpoint change = %v, want 1 cluster load assignment", got)
	}

	// c2 goes away: removed from clusters and assignments, unsubscribed.
	g.set(ctx, "3", map[string]int{"c1": 2})
	res = nextWith(ctx, t, rec, "c2 removed", func(r *Resources) bool { return !has(r.Clusters, "c2") })
	if has(res.Endpoints, "c2") || !has(res.Clusters, "c1") || !has(res.Endpoints, "c1") {
		t.Errorf("after removing c2: clusters %v, endpoints %v", keys(res.Clusters), keys(res.Endpoints))
	}
	waitFor(ctx, t, "EDS unsubscription from c2", func() bool {
		for _, r := range g.requests() {
			if r.GetTypeUrl() == TypeEndpoint && slices.Contains(r.GetResourceNamesUnsubscribe(), "c2") {
				return true
			}
		}
		return false
	})
	if s := c.Stats(); s.NACKs != 0 {
		t.Errorf("NACKs = %d (%s)", s.NACKs, s.LastNACKError)
	}
}

// TestDeltaNACKs: a resource that does not validate is NACKed with its
// name while the rest of the response is applied; a set the data plane
// rejects is NACKed and not applied, and — since the control plane counts
// it as sent — it is not rolled back: the next change is applied on top of
// it, without the control plane sending its resources again.
func TestDeltaNACKs(t *testing.T) {
	ctx := testCtx(t)
	g := startGCP(t, "127.0.0.1:0")
	g.set(ctx, "1", map[string]int{"c1": 1})
	c, rec := startDeltaClient(t, g.addr)
	rec.next(ctx, t)

	// A cluster that fails validation next to a good new one.
	bad := &cluster.Cluster{Name: "bad", ConnectTimeout: durationpb.New(-time.Second)}
	g.set(ctx, "2", map[string]int{"c1": 1, "c2": 1}, bad)
	res := nextWith(ctx, t, rec, "c2", func(r *Resources) bool { return has(r.Clusters, "c2") })
	if has(res.Clusters, "bad") {
		t.Errorf("invalid cluster applied")
	}
	waitFor(ctx, t, "a NACK", func() bool { return c.Stats().NACKs >= 1 })
	if msg := c.Stats().LastNACKError; !strings.Contains(msg, `"bad"`) {
		t.Errorf("NACK %q does not name the invalid cluster", msg)
	}
	waitFor(ctx, t, "the NACK at the server", func() bool {
		for _, r := range g.requests() {
			if r.GetTypeUrl() == TypeCluster && r.GetErrorDetail() != nil && r.GetResponseNonce() != "" {
				return true
			}
		}
		return false
	})

	// The data plane rejects any set with c3; c3 and c4 arrive together.
	rec.setFail(func(r *Resources) error {
		if has(r.Clusters, "c3") {
			return errors.New("c3 is not acceptable")
		}
		return nil
	})
	nacks := c.Stats().NACKs
	g.set(ctx, "3", map[string]int{"c1": 1, "c2": 1, "c3": 1, "c4": 1}, bad)
	waitFor(ctx, t, "NACKs of the rejected set", func() bool { return c.Stats().NACKs > nacks })
	if msg := c.Stats().LastNACKError; !strings.Contains(msg, "c3 is not acceptable") {
		t.Errorf("last NACK = %q", msg)
	}
	// While refused, other changes still apply, without what was refused.
	g.set(ctx, "3b", map[string]int{"c1": 2, "c2": 1, "c3": 1, "c4": 1}, bad)
	res = nextWith(ctx, t, rec, "c1's second endpoint", func(r *Resources) bool { return endpointsOf(r, "c1") == 2 })
	if has(res.Clusters, "c3") || has(res.Clusters, "c4") || !has(res.Clusters, "c2") {
		t.Errorf("applied during the refusal: clusters %v; want c1 and c2 only", keys(res.Clusters))
	}
	// c3 goes; c4 is not sent again, yet is in the next applied set.
	before := received(c)
	g.set(ctx, "4", map[string]int{"c1": 2, "c2": 1, "c4": 1}, bad)
	res = nextWith(ctx, t, rec, "c4 without c3", func(r *Resources) bool { return has(r.Clusters, "c4") })
	if has(res.Clusters, "c3") || !has(res.Endpoints, "c4") || !has(res.Clusters, "c1") {
		t.Errorf("applied clusters %v, endpoints %v; want c1, c2, c4", keys(res.Clusters), keys(res.Endpoints))
	}
	if got := diff(received(c), before); got["cluster"] != 0 || got["cluster load assignment"] != 0 {
		t.Errorf("resources resent after the NACK: %v, want none (only c3's removal)", got)
	}
	// The types NACKed with the refused set are ACKed now that it runs.
	waitFor(ctx, t, "ACKs of CDS and EDS after the NACKs", func() bool {
		last := map[string]*discovery.DeltaDiscoveryRequest{}
		for _, r := range g.requests() {
			if r.GetResponseNonce() != "" {
				last[r.GetTypeUrl()] = r
			}
		}
		return last[TypeCluster].GetErrorDetail() == nil && last[TypeEndpoint] != nil && last[TypeEndpoint].GetErrorDetail() == nil
	})
}

// TestDeltaReconnectResumes: after the control plane restarts, the client
// announces every resource it has in initial_resource_versions and is sent
// only what changed while it was away; its data plane keeps the full set.
func TestDeltaReconnectResumes(t *testing.T) {
	ctx := testCtx(t)
	g := startGCP(t, "127.0.0.1:0")
	eps := map[string]int{"c1": 1, "c2": 1, "c3": 1}
	g.set(ctx, "1", eps)
	c, rec := startDeltaClient(t, g.addr)
	rec.next(ctx, t)
	waitFor(ctx, t, "4 ACKs", func() bool { return c.Stats().ACKs >= 4 })

	g.stop()
	waitFor(ctx, t, "the client to notice", func() bool { return !c.Connected() })
	before := received(c)
	beforeBytes := Total(c.Received().Bytes)
	g2 := startGCP(t, g.addr)
	eps["c2"] = 3
	g2.set(ctx, "2", eps) // the same content but for c2's assignment
	res := nextWith(ctx, t, rec, "c2's three endpoints", func(r *Resources) bool { return endpointsOf(r, "c2") == 3 })
	if len(res.Clusters) != 3 || len(res.Endpoints) != 3 || !has(res.Routes, "r1") || len(res.Listeners) != 1 {
		t.Errorf("apply after reconnect is not the full set: %+v", res)
	}
	if got := diff(received(c), before); len(got) != 1 || got["cluster load assignment"] != 1 {
		t.Errorf("resources received after reconnect = %v, want only c2's assignment", got)
	}
	// Each response's bytes are what the codec read (xdswire.Sized).
	gotBytes := Total(c.Received().Bytes) - beforeBytes
	if gotBytes == 0 {
		t.Error("no bytes counted for the responses after reconnect")
	}
	t.Logf("bytes received after reconnect: %d", gotBytes)

	// The first requests of the new stream announce what the client holds
	// (the server may still be reading the last of them).
	want := map[string]int{TypeCluster: 3, TypeListener: 1, TypeEndpoint: 3, TypeRoute: 1}
	initial := map[string]int{}
	waitFor(ctx, t, "initial_resource_versions of every type", func() bool {
		initial = map[string]int{}
		for _, r := range g2.requests() {
			initial[r.GetTypeUrl()] += len(r.GetInitialResourceVersions())
		}
		for typ := range want {
			if _, ok := initial[typ]; !ok {
				return false
			}
		}
		return true
	})
	for typ, n := range want {
		if initial[typ] != n {
			t.Errorf("initial_resource_versions for %s: %d, want %d", shortType(typ), initial[typ], n)
		}
	}
	if s := c.Stats(); s.Reconnects != 1 || s.NACKs != 0 {
		t.Errorf("Stats = %+v", s)
	}
}

func TestProtocolOption(t *testing.T) {
	for _, p := range []Protocol{"", ProtocolDelta, ProtocolSotW} {
		if _, err := New(Options{Address: "x:1", Node: nodeForTest(), Applier: ApplierFunc(func(*Resources) error { return nil }), Protocol: p}); err != nil {
			t.Errorf("Protocol %q: %v", p, err)
		}
	}
	_, err := New(Options{Address: "x:1", Node: nodeForTest(), Applier: ApplierFunc(func(*Resources) error { return nil }), Protocol: "incremental"})
	if err == nil || !strings.Contains(err.Error(), `"incremental"`) {
		t.Errorf("unknown protocol: err = %v", err)
	}
}
