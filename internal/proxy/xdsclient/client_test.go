package xdsclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// --- resources ---------------------------------------------------------

func mustAny(t testing.TB, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func rdsListener(t testing.TB, name, routeName string) *listener.Listener {
	m := &hcm.HttpConnectionManager{
		StatPrefix: name,
		RouteSpecifier: &hcm.HttpConnectionManager_Rds{Rds: &hcm.Rds{
			RouteConfigName: routeName,
			ConfigSource:    &core.ConfigSource{ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}}},
		}},
	}
	return &listener.Listener{
		Name: name,
		Address: &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
			Address: "127.0.0.1", PortSpecifier: &core.SocketAddress_PortValue{PortValue: 15001}}}},
		FilterChains: []*listener.FilterChain{{Filters: []*listener.Filter{{
			Name:       hcmName,
			ConfigType: &listener.Filter_TypedConfig{TypedConfig: mustAny(t, m)},
		}}}},
	}
}

func inlineListener(t testing.TB, name string) *listener.Listener {
	m := &hcm.HttpConnectionManager{
		StatPrefix:     name,
		RouteSpecifier: &hcm.HttpConnectionManager_RouteConfig{RouteConfig: &route.RouteConfiguration{Name: "inbound|9080||"}},
	}
	l := rdsListener(t, name, "x")
	l.FilterChains[0].Filters[0].ConfigType = &listener.Filter_TypedConfig{TypedConfig: mustAny(t, m)}
	return l
}

func edsCluster(name string) *cluster.Cluster {
	return &cluster.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_EDS},
		EdsClusterConfig: &cluster.Cluster_EdsClusterConfig{
			ServiceName: name,
			EdsConfig:   &core.ConfigSource{ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}}},
		},
	}
}

func cla(name string) *endpoint.ClusterLoadAssignment {
	return &endpoint.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpoint.LocalityLbEndpoints{{}}}
}

func routeConfig(name string) *route.RouteConfiguration { return &route.RouteConfiguration{Name: name} }

// --- a scripted ADS server ---------------------------------------------

// fakeADS is an AggregatedDiscoveryService whose streams the test drives:
// each new stream is handed to the test, which reads its requests and
// writes its responses.
type fakeADS struct {
	discovery.UnimplementedAggregatedDiscoveryServiceServer
	streams chan *fakeStream
	nonce   int
	mu      sync.Mutex
}

type fakeStream struct {
	srv  *fakeADS
	reqs chan *discovery.DiscoveryRequest
	resp chan *discovery.DiscoveryResponse
}

func (f *fakeADS) StreamAggregatedResources(st discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	fs := &fakeStream{srv: f, reqs: make(chan *discovery.DiscoveryRequest, 100), resp: make(chan *discovery.DiscoveryResponse)}
	ctx := st.Context()
	select {
	case f.streams <- fs:
	case <-ctx.Done():
		return nil
	}
	errCh := make(chan error, 1)
	go func() {
		for {
			r, err := st.Recv()
			if err != nil {
				errCh <- err
				return
			}
			select {
			case fs.reqs <- r:
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		select {
		case r := <-fs.resp:
			if err := st.Send(r); err != nil {
				return err
			}
		case err := <-errCh:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-ctx.Done():
			return nil
		}
	}
}

type testServer struct {
	ads  *fakeADS
	grpc *grpc.Server
	addr string
	done chan struct{}
}

func startServer(t *testing.T, addr string) *testServer {
	t.Helper()
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen %s: %v", addr, err)
	}
	s := &testServer{
		ads: &fakeADS{streams: make(chan *fakeStream, 10)},
		grpc: grpc.NewServer(grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime: time.Second, PermitWithoutStream: true})),
		addr: lis.Addr().String(),
		done: make(chan struct{}),
	}
	discovery.RegisterAggregatedDiscoveryServiceServer(s.grpc, s.ads)
	go func() { defer close(s.done); _ = s.grpc.Serve(lis) }()
	t.Cleanup(s.stop)
	return s
}

func (s *testServer) stop() { s.grpc.Stop(); <-s.done }

func (s *testServer) nextStream(ctx context.Context, t *testing.T) *fakeStream {
	t.Helper()
	select {
	case fs := <-s.ads.streams:
		return fs
	case <-ctx.Done():
		t.Fatalf("no ADS stream: %v", ctx.Err())
		return nil
	}
}

// send writes a response of type typeURL with the given version.
func (fs *fakeStream) send(ctx context.Context, t *testing.T, typeURL, version string, msgs ...proto.Message) string {
	t.Helper()
	fs.srv.mu.Lock()
	fs.srv.nonce++
	nonce := fmt.Sprintf("n%d", fs.srv.nonce)
	fs.srv.mu.Unlock()
	r := &discovery.DiscoveryResponse{TypeUrl: typeURL, VersionInfo: version, Nonce: nonce}
	for _, m := range msgs {
		r.Resources = append(r.Resources, mustAny(t, m))
	}
	select {
	case fs.resp <- r:
	case <-ctx.Done():
		t.Fatalf("sending %s %s: %v", typeURL, version, ctx.Err())
	}
	return nonce
}

// expect returns the first request of typeURL satisfying ok, skipping others.
func (fs *fakeStream) expect(ctx context.Context, t *testing.T, typeURL string, what string, ok func(*discovery.DiscoveryRequest) bool) *discovery.DiscoveryRequest {
	t.Helper()
	for {
		select {
		case r := <-fs.reqs:
			if r.GetTypeUrl() == typeURL && ok(r) {
				return r
			}
		case <-ctx.Done():
			t.Fatalf("waiting for %s request (%s): %v", shortType(typeURL), what, ctx.Err())
			return nil
		}
	}
}

func isACK(version, nonce string) func(*discovery.DiscoveryRequest) bool {
	return func(r *discovery.DiscoveryRequest) bool {
		return r.GetVersionInfo() == version && r.GetResponseNonce() == nonce && r.GetErrorDetail() == nil
	}
}

func names(want ...string) func(*discovery.DiscoveryRequest) bool {
	return func(r *discovery.DiscoveryRequest) bool { return slices.Equal(r.GetResourceNames(), want) }
}

// --- the client under test -----------------------------------------------

type recorder struct {
	applied chan *Resources
	mu      sync.Mutex
	fail    func(*Resources) error
}

func (r *recorder) Apply(res *Resources) error {
	r.mu.Lock()
	fail := r.fail
	r.mu.Unlock()
	if fail != nil {
		if err := fail(res); err != nil {
			return err
		}
	}
	r.applied <- res
	return nil
}

func (r *recorder) setFail(f func(*Resources) error) {
	r.mu.Lock()
	r.fail = f
	r.mu.Unlock()
}

func (r *recorder) next(ctx context.Context, t *testing.T) *Resources {
	t.Helper()
	select {
	case res := <-r.applied:
		return res
	case <-ctx.Done():
		t.Fatalf("no Apply: %v", ctx.Err())
		return nil
	}
}

func startClient(t *testing.T, addr string, mod func(*Options)) (*Client, *recorder) {
	t.Helper()
	rec := &recorder{applied: make(chan *Resources, 100)}
	opts := Options{
		Address:     addr,
		Node:        &core.Node{Id: "sidecar~127.0.0.1~test.default~default.svc.cluster.local"},
		Applier:     rec,
		Logger:      slog.New(slog.DiscardHandler),
		BackoffBase: 10 * time.Millisecond,
		BackoffMax:  100 * time.Millisecond,
		Protocol:    ProtocolSotW, // the fake server speaks state of the world; delta_test.go covers delta
	}
	if mod != nil {
		mod(&opts)
	}
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return c, rec
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// bootstrap drives a fresh stream to a first complete apply of version v:
// listener l1 -> route r1, cluster c1 -> assignment c1.
func bootstrap(ctx context.Context, t *testing.T, fs *fakeStream, rec *recorder, v string) *Resources {
	t.Helper()
	first := fs.expect(ctx, t, TypeCluster, "initial CDS", func(*discovery.DiscoveryRequest) bool { return true })
	if first.GetNode().GetId() == "" {
		t.Errorf("first request has no node")
	}
	fs.expect(ctx, t, TypeListener, "initial LDS", func(*discovery.DiscoveryRequest) bool { return true })
	nC := fs.send(ctx, t, TypeCluster, v, edsCluster("c1"))
	fs.expect(ctx, t, TypeEndpoint, "EDS for c1", names("c1"))
	nL := fs.send(ctx, t, TypeListener, v, rdsListener(t, "l1", "r1"), inlineListener(t, "l2"))
	fs.expect(ctx, t, TypeRoute, "RDS for r1", names("r1"))
	nE := fs.send(ctx, t, TypeEndpoint, v, cla("c1"))
	nR := fs.send(ctx, t, TypeRoute, v, routeConfig("r1"))

	res := rec.next(ctx, t)
	if len(res.Listeners) != 2 || !has(res.Routes, "r1") || !has(res.Clusters, "c1") || !has(res.Endpoints, "c1") {
		t.Fatalf("first apply is not the complete set: %+v", res)
	}
	// One ACK per type, in any order.
	want := map[string]string{TypeCluster: nC, TypeListener: nL, TypeEndpoint: nE, TypeRoute: nR}
	for typ := range want {
		if res.Versions[typ] != v {
			t.Errorf("Versions[%s] = %q, want %q", shortType(typ), res.Versions[typ], v)
		}
	}
	for len(want) > 0 {
		select {
		case r := <-fs.reqs:
			if n, ok := want[r.GetTypeUrl()]; ok && isACK(v, n)(r) {
				delete(want, r.GetTypeUrl())
			}
		case <-ctx.Done():
			t.Fatalf("ACKs missing for %v: %v", keys(want), ctx.Err())
		}
	}
	return res
}

// --- tests ----------------------------------------------------------------

func TestFirstApplyOnlyWhenCompleteThenACK(t *testing.T) {
	ctx := testCtx(t)
	srv := startServer(t, "127.0.0.1:0")
	// A tiny IncompleteTimeout must not matter before the first apply:
	// bootstrap fails if the first Apply is not the complete set.
	c, rec := startClient(t, srv.addr, func(o *Options) { o.IncompleteTimeout = time.Millisecond })
	fs := srv.nextStream(ctx, t)
	bootstrap(ctx, t, fs, rec, "1")
	if !c.Connected() {
		t.Error("Connected() = false on an open stream")
	}
	// The client counts an ACK just after sending it, so the server may
	// see the last ACK a moment before the counter does.
	deadline := time.Now().Add(5 * time.Second)
	for {
		s := c.Stats()
		if s.ACKs == 4 && s.NACKs == 0 && s.Applies == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Stats = %+v, want 4 ACKs, 0 NACKs, 1 apply", s)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestNACKKeepsLastGoodConfig(t *testing.T) {
	ctx := testCtx(t)
	srv := startServer(t, "127.0.0.1:0")
	c, rec := startClient(t, srv.addr, nil)
	fs := srv.nextStream(ctx, t)
	bootstrap(ctx, t, fs, rec, "1")

	rec.setFail(func(r *Resources) error {
		if _, bad := r.Clusters["bad"]; bad {
			return errors.New(`cluster "bad": no such thing`)
		}
		return nil
	})
	badCluster := &cluster.Cluster{Name: "bad", ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_STATIC}}
	n := fs.send(ctx, t, TypeCluster, "2", edsCluster("c1"), badCluster)
	nack := fs.expect(ctx, t, TypeCluster, "NACK", func(r *discovery.DiscoveryRequest) bool { return r.GetErrorDetail() != nil })
	if nack.GetVersionInfo() != "1" || nack.GetResponseNonce() != n {
		t.Errorf("NACK version/nonce = %q/%q, want 1/%s", nack.GetVersionInfo(), nack.GetResponseNonce(), n)
	}
	if msg := nack.GetErrorDetail().GetMessage(); !strings.Contains(msg, `cluster "bad": no such thing`) {
		t.Errorf("NACK message = %q", msg)
	}
	if code := nack.GetErrorDetail().GetCode(); code != 3 {
		t.Errorf("NACK code = %d, want INVALID_ARGUMENT (3)", code)
	}

	// A malformed resource is NACKed without reaching the Applier.
	bad := &discovery.DiscoveryResponse{TypeUrl: TypeListener, VersionInfo: "3", Nonce: "garbage",
		Resources: []*anypb.Any{{TypeUrl: TypeListener, Value: []byte{0xff, 0xff}}}}
	select {
	case fs.resp <- bad:
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	nack = fs.expect(ctx, t, TypeListener, "NACK of garbage", func(r *discovery.DiscoveryRequest) bool { return r.GetErrorDetail() != nil })
	if nack.GetVersionInfo() != "1" || !strings.Contains(nack.GetErrorDetail().GetMessage(), "listener") {
		t.Errorf("NACK = version %q message %q", nack.GetVersionInfo(), nack.GetErrorDetail().GetMessage())
	}

	// The next good update builds on version 1, not on the rejected 2.
	n = fs.send(ctx, t, TypeEndpoint, "4", cla("c1"))
	res := rec.next(ctx, t)
	if _, ok := res.Clusters["bad"]; ok || !has(res.Clusters, "c1") || res.Versions[TypeCluster] != "1" {
		t.Errorf("apply after NACK has clusters %v versions %v; want only the last good ones", keys(res.Clusters), res.Versions)
	}
	fs.expect(ctx, t, TypeEndpoint, "ACK", isACK("4", n))
	s := c.Stats()
	if s.NACKs != 2 || !strings.Contains(s.LastNACKError, "listener") {
		t.Errorf("Stats = %+v, want 2 NACKs and the listener error last", s)
	}
}

// has reports whether a set has the named resource: decoded, or only
// encoded when it was handed over decoded before.
func has[V any](m map[string]V, name string) bool {
	_, ok := m[name]
	return ok
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func TestSubscriptionsFollowListenersAndClusters(t *testing.T) {
	ctx := testCtx(t)
	srv := startServer(t, "127.0.0.1:0")
	_, rec := startClient(t, srv.addr, func(o *Options) { o.IncompleteTimeout = 50 * time.Millisecond })
	fs := srv.nextStream(ctx, t)
	bootstrap(ctx, t, fs, rec, "1")

	// l1 now uses r2: the client moves its RDS subscription and waits for r2.
	fs.send(ctx, t, TypeListener, "2", rdsListener(t, "l1", "r2"))
	fs.expect(ctx, t, TypeRoute, "RDS for r2", names("r2"))
	fs.send(ctx, t, TypeRoute, "2", routeConfig("r2"))
	res := rec.next(ctx, t)
	if keys(res.Routes)[0] != "r2" || len(res.Routes) != 1 {
		t.Errorf("routes = %v, want [r2]", keys(res.Routes))
	}

	// A new EDS cluster whose assignment never comes: applied after the
	// timeout with an empty assignment.
	fs.send(ctx, t, TypeCluster, "3", edsCluster("c1"), edsCluster("c2"))
	fs.expect(ctx, t, TypeEndpoint, "EDS for c1 c2", names("c1", "c2"))
	res = rec.next(ctx, t)
	if e := res.Endpoints["c2"]; e == nil || len(e.GetEndpoints()) != 0 || !has(res.Endpoints, "c1") {
		t.Errorf("endpoints after timeout = %v, want c1 and an empty c2", res.Endpoints)
	}

	// Removing a cluster shrinks the EDS subscription.
	fs.send(ctx, t, TypeCluster, "4", edsCluster("c2"))
	fs.expect(ctx, t, TypeEndpoint, "EDS for c2", names("c2"))
}

func TestReconnectsAfterServerRestart(t *testing.T) {
	ctx := testCtx(t)
	srv := startServer(t, "127.0.0.1:0")
	c, rec := startClient(t, srv.addr, nil)
	fs := srv.nextStream(ctx, t)
	bootstrap(ctx, t, fs, rec, "1")

	srv.stop()
	for c.Connected() {
		select {
		case <-ctx.Done():
			t.Fatal("client still connected after server stop")
		case <-time.After(5 * time.Millisecond):
		}
	}
	srv2 := startServer(t, srv.addr)
	fs = srv2.nextStream(ctx, t)
	// The new stream resumes: last versions, no stale nonces, known names.
	fs.expect(ctx, t, TypeCluster, "resume CDS", func(r *discovery.DiscoveryRequest) bool {
		return r.GetVersionInfo() == "1" && r.GetResponseNonce() == "" && r.GetNode().GetId() != ""
	})
	fs.expect(ctx, t, TypeListener, "resume LDS", isACK("1", ""))
	fs.expect(ctx, t, TypeEndpoint, "resume EDS", names("c1"))
	fs.expect(ctx, t, TypeRoute, "resume RDS", names("r1"))

	// An identical config sent again is applied again and ACKed.
	n := fs.send(ctx, t, TypeCluster, "1", edsCluster("c1"))
	if res := rec.next(ctx, t); !has(res.Clusters, "c1") || !has(res.Listeners, "l1") {
		t.Errorf("re-sent config applied as %v", res)
	}
	fs.expect(ctx, t, TypeCluster, "ACK", isACK("1", n))
	if s := c.Stats(); s.Reconnects != 1 {
		t.Errorf("Reconnects = %d, want 1", s.Reconnects)
	}
}

func TestRunEndsWithContext(t *testing.T) {
	// Nothing listens here: Run keeps retrying until cancelled, then returns.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	c, err := New(Options{Address: addr, Node: &core.Node{Id: "x"}, Applier: ApplierFunc(func(*Resources) error { return nil }),
		Logger: slog.New(slog.DiscardHandler), BackoffBase: time.Millisecond, BackoffMax: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := c.Run(ctx); err != nil {
		t.Errorf("Run = %v, want nil on cancellation", err)
	}
	if err := c.Run(context.Background()); err == nil {
		t.Error("second Run succeeded")
	}
}

func TestNewValidates(t *testing.T) {
	ok := Options{Address: "x:1", Node: &core.Node{Id: "n"}, Applier: ApplierFunc(func(*Resources) error { return nil })}
	for name, mod := range map[string]func(*Options){
		"no address": func(o *Options) { o.Address = "" },
		"no node":    func(o *Options) { o.Node = nil },
		"no applier": func(o *Options) { o.Applier = nil },
		"backoff":    func(o *Options) { o.BackoffBase, o.BackoffMax = time.Second, time.Millisecond },
	} {
		o := ok
		mod(&o)
		if _, err := New(o); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
	if _, err := New(ok); err != nil {
		t.Errorf("valid options: %v", err)
	}
}

func TestBackoffBoundedWithJitter(t *testing.T) {
	c, err := New(Options{Address: "x:1", Node: &core.Node{Id: "n"}, Applier: ApplierFunc(func(*Resources) error { return nil }),
		BackoffBase: 100 * time.Millisecond, BackoffMax: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for n := range 50 {
		d := c.backoff(n)
		want := min(100*time.Millisecond<<min(n, 20), time.Second)
		if d < want/2 || d > want {
			t.Errorf("backoff(%d) = %v, want in [%v, %v]", n, d, want/2, want)
		}
	}
}
