package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry"
	"weft.dev/weft/internal/xds/contract"
	"weft.dev/weft/internal/xds/generate"
)

var client = contract.Identity{
	ID:              contract.DefaultNodeID("127.0.0.1", "productpage", "default"),
	Namespace:       "default",
	WorkloadName:    "productpage",
	Labels:          map[string]string{"app": "productpage"},
	IPs:             []string{"127.0.0.1"},
	OutboundAddress: contract.DefaultOutboundAddress,
}

// testMesh has reviews with n endpoints.
func testMesh(n int) *mesh.Snapshot {
	svc := &registry.Service{Hostname: "reviews.default.svc.cluster.local", Namespace: "default",
		Ports: []registry.Port{{Name: "http", Number: 9080, Protocol: registry.HTTP}}}
	var eps []*registry.Endpoint
	for i := range n {
		eps = append(eps, &registry.Endpoint{ServiceHostname: svc.Hostname, ServicePort: 9080,
			Address: net.IPv4(10, 0, byte(i/250), byte(i%250+1)).String(), Port: 9080, Labels: map[string]string{"app": "reviews"}})
	}
	return mesh.New(&config.Snapshot{Version: 1}, registry.NewSnapshot([]*registry.Service{svc}, eps), "")
}

// start runs a server on loopback until the test ends.
func start(t *testing.T, opts Options) (*Server, string) {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := New(opts)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s, lis.Addr().String()
}

// adsClient is a minimal state-of-the-world ADS client that ACKs everything.
type adsClient struct {
	t      *testing.T
	stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	node   *core.Node
	sent   bool
	subs   map[string][]string // resource names last requested, by type
}

func dial(t *testing.T, ctx context.Context, addr string, node *core.Node) *adsClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &adsClient{t: t, stream: stream, node: node}
}

func (c *adsClient) request(typeURL string, names []string, ack *discovery.DiscoveryResponse) {
	c.t.Helper()
	req := &discovery.DiscoveryRequest{TypeUrl: typeURL, ResourceNames: names}
	if c.subs == nil {
		c.subs = map[string][]string{}
	}
	c.subs[typeURL] = names
	if !c.sent {
		req.Node, c.sent = c.node, true
	}
	if ack != nil {
		req.VersionInfo, req.ResponseNonce = ack.GetVersionInfo(), ack.GetNonce()
	}
	if err := c.stream.Send(req); err != nil {
		c.t.Fatalf("send %s: %v", typeURL, err)
	}
}

func (c *adsClient) recv() *discovery.DiscoveryResponse {
	c.t.Helper()
	r, err := c.stream.Recv()
	if err != nil {
		c.t.Fatalf("recv: %v", err)
	}
	return r
}

// expect receives the next response and checks its type.
func (c *adsClient) expect(typeURL string) *discovery.DiscoveryResponse {
	c.t.Helper()
	r := c.recv()
	if r.GetTypeUrl() != typeURL {
		c.t.Fatalf("got %s response, want %s", r.GetTypeUrl(), typeURL)
	}
	return r
}

// sync subscribes to everything, as Envoy does (CDS, EDS, LDS, RDS), ACKs
// each response, and returns the last response of each type.
func (c *adsClient) sync() map[string]*discovery.DiscoveryResponse {
	c.t.Helper()
	got := map[string]*discovery.DiscoveryResponse{}
	c.request(resource.ClusterType, nil, nil)
	cds := c.expect(resource.ClusterType)
	got[resource.ClusterType] = cds
	var edsNames []string
	for _, a := range cds.GetResources() {
		var cl cluster.Cluster
		if err := a.UnmarshalTo(&cl); err != nil {
			c.t.Fatal(err)
		}
		if cl.GetEdsClusterConfig() != nil {
			edsNames = append(edsNames, cl.GetName())
		}
	}
	c.request(resource.EndpointType, edsNames, nil)
	c.request(resource.ClusterType, nil, cds)
	got[resource.EndpointType] = c.expect(resource.EndpointType)
	c.request(resource.EndpointType, edsNames, got[resource.EndpointType])
	c.request(resource.ListenerType, nil, nil)
	got[resource.ListenerType] = c.expect(resource.ListenerType)
	c.request(resource.RouteType, []string{contract.RouteHTTPProxy}, nil)
	c.request(resource.ListenerType, nil, got[resource.ListenerType])
	got[resource.RouteType] = c.expect(resource.RouteType)
	c.request(resource.RouteType, []string{contract.RouteHTTPProxy}, got[resource.RouteType])
	return got
}

func withDeadline(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestProxyGetsAllTypes(t *testing.T) {
	reg := prometheus.NewRegistry()
	s, addr := start(t, Options{Metrics: reg})
	s.Update(testMesh(2))
	ctx := withDeadline(t)
	c := dial(t, ctx, addr, client.Node())
	got := c.sync()

	var rc route.RouteConfiguration
	if err := got[resource.RouteType].GetResources()[0].UnmarshalTo(&rc); err != nil {
		t.Fatal(err)
	}
	if n := len(rc.GetVirtualHosts()); n != 1 || rc.GetVirtualHosts()[0].GetName() != "reviews.default.svc.cluster.local:9080" {
		t.Errorf("virtual hosts = %v", rc.GetVirtualHosts())
	}
	if n := len(got[resource.ListenerType].GetResources()); n != 1 {
		t.Errorf("%d listeners, want the outbound one", n)
	}
	if got := s.ConnectedProxies(); got != 1 {
		t.Errorf("ConnectedProxies = %d, want 1", got)
	}
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, f := range families {
		if f.GetName() == "weft_xds_connected_proxies" {
			found = f.GetMetric()[0].GetGauge().GetValue() == 1
		}
	}
	if !found {
		t.Error("weft_xds_connected_proxies is not 1 in the registry")
	}

	// Closing the stream drops the proxy and its cache snapshot.
	if err := c.stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.stream.Recv(); err == nil {
		t.Fatal("stream still open after CloseSend")
	}
	waitFor(t, ctx, "proxy forgotten", func() bool {
		return s.ConnectedProxies() == 0 && s.nodeSnapshot(client.ID) == nil
	})
}

func TestEndpointOnlyChangeSendsOnlyEDS(t *testing.T) {
	s, addr := start(t, Options{Debounce: time.Millisecond, DebounceMax: 10 * time.Millisecond})
	s.Update(testMesh(2))
	ctx := withDeadline(t)
	c := dial(t, ctx, addr, client.Node())
	before := c.sync()

	s.Update(testMesh(3))
	eds := c.expect(resource.EndpointType) // the first response after the change is EDS
	if eds.GetVersionInfo() == before[resource.EndpointType].GetVersionInfo() {
		t.Fatal("EDS version did not change")
	}
	snap := s.nodeSnapshot(client.ID)
	if snap == nil {
		t.Fatal("no snapshot for the proxy")
	}
	for _, typ := range []string{resource.ListenerType, resource.RouteType, resource.ClusterType} {
		if got, want := snap.version(typ), before[typ].GetVersionInfo(); got != want {
			t.Errorf("%s version changed %s -> %s on an endpoint-only change", typ, want, got)
		}
	}
}

func TestUpdatesAreDebounced(t *testing.T) {
	s, addr := start(t, Options{Debounce: 20 * time.Millisecond, DebounceMax: 200 * time.Millisecond})
	s.Update(testMesh(1))
	ctx := withDeadline(t)
	c := dial(t, ctx, addr, client.Node())
	c.sync()
	pushes := s.Pushes()

	final := testMesh(101)
	for i := range 100 {
		s.Update(testMesh(i + 2))
	}
	want := wantVersion(t, final, resource.EndpointType)
	for {
		r := c.recv()
		c.request(r.GetTypeUrl(), c.subs[r.GetTypeUrl()], r)
		if r.GetTypeUrl() == resource.EndpointType && r.GetVersionInfo() == want {
			break
		}
	}
	if n := s.Pushes() - pushes; n > 5 {
		t.Errorf("100 rapid updates caused %d pushes, want at most 5", n)
	}
}

// TestLoneUpdateIsPushedAtOnce: an Update after a quiet spell is pushed
// without waiting for the debounce. The updates that follow it keep coming
// faster than the quiet period for as long as the test runs, and
// DebounceMax is an hour, so a trailing-edge debounce alone would never
// deliver the first of them.
func TestLoneUpdateIsPushedAtOnce(t *testing.T) {
	const quiet = 300 * time.Millisecond
	s, addr := start(t, Options{Debounce: quiet, DebounceMax: time.Hour})
	s.Update(testMesh(1))
	ctx := withDeadline(t)
	c := dial(t, ctx, addr, client.Node())
	c.sync()
	time.Sleep(quiet + 50*time.Millisecond) // a quiet spell after the first push

	lone := testMesh(2)
	want := wantVersion(t, lone, resource.EndpointType)
	s.Update(lone)
	done := make(chan struct{})
	defer close(done)
	go func() {
		tick := time.NewTicker(quiet / 10)
		defer tick.Stop()
		for i := 3; ; i++ {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
				s.Update(testMesh(i))
			}
		}
	}()
	for {
		r := c.recv()
		c.request(r.GetTypeUrl(), c.subs[r.GetTypeUrl()], r)
		if r.GetTypeUrl() == resource.EndpointType && r.GetVersionInfo() == want {
			return
		}
	}
}

func TestMalformedNodeIsRejected(t *testing.T) {
	_, addr := start(t, Options{})
	ctx := withDeadline(t)
	node := client.Node()
	node.Metadata.Fields[contract.MetaAppPorts] = structpb.NewStringValue("9080")
	c := dial(t, ctx, addr, node)
	c.request(resource.ClusterType, nil, nil)
	_, err := c.stream.Recv()
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), contract.MetaAppPorts) {
		t.Fatalf("got %v, want InvalidArgument naming %s", err, contract.MetaAppPorts)
	}

	c = dial(t, ctx, addr, &core.Node{})
	c.request(resource.ClusterType, nil, nil)
	if _, err := c.stream.Recv(); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("empty node id: got %v, want InvalidArgument", err)
	}
}

// serveOneSynced serves a one-service mesh on loopback and connects a
// client that has ACKed what it was sent. cancel stops the server, whose
// Serve's result then arrives on done.
func serveOneSynced(t *testing.T) (s *Server, c *adsClient, cancel context.CancelFunc, done <-chan error) {
	t.Helper()
	s = New(Options{Logger: slog.New(slog.DiscardHandler)})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, lis) }()
	s.Update(testMesh(1))
	c = dial(t, withDeadline(t), lis.Addr().String(), client.Node())
	c.sync()
	return s, c, cancel, served
}

func TestServeStopsWithContext(t *testing.T) {
	s, _, cancel, done := serveOneSynced(t)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its context was cancelled")
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	if err := s.Serve(context.Background(), lis); err == nil {
		t.Error("second Serve succeeded")
	}
}

func wantVersion(t *testing.T, m *mesh.Snapshot, typ string) string {
	t.Helper()
	snap, _, err := New(Options{}).snapshotOf(m, generate.ForProxy(m, client))
	if err != nil {
		t.Fatal(err)
	}
	return snap.version(typ)
}

// waitFor polls cond until it holds or ctx ends.
func waitFor(t *testing.T, ctx context.Context, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		case <-tick.C:
		}
	}
}

// TestShutdownEndsStreams: a control plane shutting down ends its ADS
// streams itself (a clean end of stream, not a connection reset after the
// grace period) and sends GOAWAY, so proxies move to another replica at
// once instead of when their connection dies.
func TestShutdownEndsStreams(t *testing.T) {
	_, c, cancel, done := serveOneSynced(t)
	cancel()
	start := time.Now()
	if _, err := c.stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("stream after shutdown: %v, want io.EOF (ended by the server)", err)
	}
	t.Logf("stream ended %v after the shutdown began", time.Since(start))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestShutdownWaitsForAStreamBusyHandling: a stream busy handling a
// request (or pushing) when the server stops is still ended cleanly once
// that is done, not CANCELLED.
func TestShutdownWaitsForAStreamBusyHandling(t *testing.T) {
	s, c, cancel, done := serveOneSynced(t)
	s.mu.Lock()
	p := s.proxies[client.ID]
	s.mu.Unlock()
	p.mu.Lock()
	var st *adsStream
	for st = range p.live {
	}
	p.mu.Unlock()
	if st == nil {
		t.Fatal("no live stream")
	}
	st.mu.Lock() // as handle or a push does
	cancel()
	time.Sleep(50 * time.Millisecond)
	st.mu.Unlock()
	if _, err := c.stream.Recv(); !errors.Is(err, io.EOF) {
		t.Fatalf("stream after shutdown: %v, want io.EOF (ended by the server)", err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// nodeSnapshot is what the connected proxy node is served, or nil.
func (s *Server) nodeSnapshot(node string) *nodeSnapshot {
	s.mu.Lock()
	p := s.proxies[node]
	s.mu.Unlock()
	if p == nil {
		return nil
	}
	return p.snapshot()
}

// TestActivityMovesWithWork: Activity (what `weft serve` watches to hand
// memory back when quiet) moves with a snapshot given and with responses
// sent, and stands still otherwise.
func TestActivityMovesWithWork(t *testing.T) {
	s, addr := start(t, Options{Debounce: time.Millisecond, DebounceMax: 10 * time.Millisecond})
	a0 := s.Activity()
	s.Update(testMesh(2))
	a1 := s.Activity()
	if a1 == a0 {
		t.Fatal("Activity did not move with a snapshot")
	}
	ctx := withDeadline(t)
	c := dial(t, ctx, addr, client.Node())
	c.sync()
	a2 := s.Activity()
	if a2 < a1+4 {
		t.Errorf("Activity moved %d with a proxy's four responses, want at least 4", a2-a1)
	}
	time.Sleep(50 * time.Millisecond)
	if a3 := s.Activity(); a3 != a2 {
		t.Errorf("Activity moved %d with nothing happening", a3-a2)
	}
}
