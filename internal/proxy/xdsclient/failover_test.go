package xdsclient

import (
	"context"
	"net"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	server "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
)

// replica is a go-control-plane ADS server on its own port; several share
// one snapshot cache, as control plane replicas share their sources.
type replica struct {
	addr   string
	cancel context.CancelFunc
	gs     *grpc.Server
	done   chan struct{}
}

func startReplica(t *testing.T, snaps cache.SnapshotCache) *replica {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	gs := grpc.NewServer()
	discovery.RegisterAggregatedDiscoveryServiceServer(gs, server.NewServer(ctx, snaps, nil))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &replica{addr: lis.Addr().String(), cancel: cancel, gs: gs, done: make(chan struct{})}
	go func() { defer close(r.done); _ = gs.Serve(lis) }()
	t.Cleanup(r.kill)
	return r
}

// shutdown is what weft serve does on SIGTERM: the streams end (their
// context is cancelled) and GracefulStop sends GOAWAY.
func (r *replica) shutdown() { r.cancel(); r.gs.GracefulStop(); <-r.done }

// kill closes every connection at once, like a crashed process.
func (r *replica) kill() { r.cancel(); r.gs.Stop(); <-r.done }

func setSnapshot(ctx context.Context, t *testing.T, snaps cache.SnapshotCache, nodeID, version string, clusters ...string) {
	t.Helper()
	res := map[resource.Type][]types.Resource{
		resource.ListenerType: {rdsListener(t, "l1", "r1")},
		resource.RouteType:    {routeConfig("r1")},
	}
	for _, c := range clusters {
		res[resource.ClusterType] = append(res[resource.ClusterType], edsCluster(c))
		res[resource.EndpointType] = append(res[resource.EndpointType], cla(c))
	}
	s, err := cache.NewSnapshot(version, res)
	if err != nil {
		t.Fatal(err)
	}
	if err := snaps.SetSnapshot(ctx, nodeID, s); err != nil {
		t.Fatal(err)
	}
}

// waitAddress waits until the client is connected to a replica other than
// not, and returns it and how long that took.
func waitAddress(ctx context.Context, t *testing.T, c *Client, not string) (string, time.Duration) {
	t.Helper()
	start := time.Now()
	for {
		if s := c.Stats(); c.Connected() && s.Address != "" && s.Address != not {
			return s.Address, time.Since(start)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("client did not move off %s: Stats %+v", not, c.Stats())
		case <-time.After(2 * time.Millisecond):
		}
	}
}

// TestFailoverBetweenReplicas: with two replicas listed, losing the one in
// use — shut down gracefully (GOAWAY, streams ended) or killed — moves
// the client to the other at once, without applying anything while it
// moves; a config change made then arrives through the other replica.
func TestFailoverBetweenReplicas(t *testing.T) {
	for _, how := range []string{"graceful", "killed"} {
		t.Run(how, func(t *testing.T) {
			ctx := testCtx(t)
			snaps := cache.NewSnapshotCache(true, cache.IDHash{}, nil)
			nodeID := "sidecar~127.0.0.1~test.default~default.svc.cluster.local"
			setSnapshot(ctx, t, snaps, nodeID, "1", "c1")
			a, b := startReplica(t, snaps), startReplica(t, snaps)
			byAddr := map[string]*replica{a.addr: a, b.addr: b}

			c, rec := startClient(t, a.addr+", "+b.addr, func(o *Options) {
				// Backoff that would show: the move must not wait for it.
				o.BackoffBase, o.BackoffMax = 100*time.Millisecond, 5*time.Second
			})
			if res := rec.next(ctx, t); res.Versions[TypeCluster] != "1" {
				t.Fatalf("first apply: %+v", res)
			}
			first, _ := waitAddress(ctx, t, c, "")
			applies := c.Stats().Applies

			if how == "graceful" {
				byAddr[first].shutdown()
			} else {
				byAddr[first].kill()
			}
			second, took := waitAddress(ctx, t, c, first)
			t.Logf("%s replica %s: connected to %s after %v", how, first, second, took)
			if byAddr[second] == nil {
				t.Fatalf("connected to %s, not a replica", second)
			}
			// The other replica re-sends the same versions: applied again, but
			// nothing was applied while there was no stream.
			setSnapshot(ctx, t, snaps, nodeID, "2", "c1", "c2")
			for {
				res := rec.next(ctx, t)
				if has(res.Clusters, "c2") && has(res.Endpoints, "c2") {
					break
				}
			}
			// The applier has seen the new set; the client counts the apply
			// once the applier has returned.
			for c.Stats().Applies <= applies && ctx.Err() == nil {
				time.Sleep(2 * time.Millisecond)
			}
			if s := c.Stats(); s.Reconnects != 1 || s.Applies <= applies {
				t.Errorf("Stats = %+v, want 1 reconnect and a new apply", s)
			}
		})
	}
}

// TestRetryDelay: no wait to speak of while a replica of the round is
// untried; exponential backoff only once all failed.
func TestRetryDelay(t *testing.T) {
	c, err := New(Options{Address: "x:1,y:1,z:1", Node: &core.Node{Id: "n"}, Applier: ApplierFunc(func(*Resources) error { return nil }),
		BackoffBase: 100 * time.Millisecond, BackoffMax: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		fails, n int
		lo, hi   time.Duration
	}{
		{1, 1, 0, 100 * time.Millisecond}, // one replica: first retry at once
		{2, 1, 50 * time.Millisecond, 100 * time.Millisecond},
		{3, 1, 100 * time.Millisecond, 200 * time.Millisecond},
		{1, 3, 0, 100 * time.Millisecond},
		{3, 3, 0, 100 * time.Millisecond},
		{4, 3, 50 * time.Millisecond, 100 * time.Millisecond},
		{7, 3, 100 * time.Millisecond, 200 * time.Millisecond},
		{1000, 3, 5 * time.Second, 10 * time.Second},
	} {
		for range 20 {
			if d := c.retryDelay(tc.fails, tc.n); d < tc.lo || d > tc.hi {
				t.Errorf("retryDelay(%d fails, %d replicas) = %v, want in [%v, %v]", tc.fails, tc.n, d, tc.lo, tc.hi)
				break
			}
		}
	}
}
