package xdsclient

import (
	"context"
	"net"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	server "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
)

// TestAgainstGoControlPlane runs the client against go-control-plane's ADS
// server and snapshot cache, what a Weft control plane builds on.
func TestAgainstGoControlPlane(t *testing.T) {
	ctx := testCtx(t)
	snaps := cache.NewSnapshotCache(true, cache.IDHash{}, nil)
	nodeID := "sidecar~127.0.0.1~test.default~default.svc.cluster.local"
	set := func(version string, clusters ...string) {
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
		if err := s.Consistent(); err != nil {
			t.Fatal(err)
		}
		if err := snaps.SetSnapshot(ctx, nodeID, s); err != nil {
			t.Fatal(err)
		}
	}
	set("1", "c1")

	sctx, cancel := context.WithCancel(context.Background())
	gs := grpc.NewServer()
	discovery.RegisterAggregatedDiscoveryServiceServer(gs, server.NewServer(sctx, snaps, nil))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(lis) }()
	t.Cleanup(func() { cancel(); gs.Stop(); <-done })

	c, rec := startClient(t, lis.Addr().String(), nil)
	res := rec.next(ctx, t)
	if !has(res.Routes, "r1") || !has(res.Endpoints, "c1") || res.Versions[TypeListener] != "1" {
		t.Fatalf("first apply incomplete: %+v", res)
	}

	set("2", "c1", "c2")
	for {
		res = rec.next(ctx, t)
		if has(res.Endpoints, "c2") && has(res.Clusters, "c2") {
			break
		}
	}
	// Every type of the applied batches is ACKed; wait for them to be sent.
	for c.Stats().ACKs < 6 {
		select {
		case <-ctx.Done():
			t.Fatalf("Stats = %+v", c.Stats())
		case <-time.After(5 * time.Millisecond):
		}
	}
	if s := c.Stats(); s.NACKs != 0 {
		t.Errorf("NACKs = %d", s.NACKs)
	}
}
