package server

import (
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"weft.dev/weft/internal/xds/contract"
)

// TestControlPlaneSlowProxyDoesNotDelayOthers: a proxy that stops reading
// its stream (its HTTP/2 window full, the server's send to it blocked)
// while 20 endpoint changes are pushed holds up neither the pushes nor the
// other proxies, which reach the final version; when it reads again it
// gets the latest state, not every intermediate one.
func TestControlPlaneSlowProxyDoesNotDelayOthers(t *testing.T) {
	s, addr := start(t, Options{Debounce: time.Millisecond, DebounceMax: 5 * time.Millisecond})
	const n = 2000 // endpoints: an EDS response of ~100 KB, more than the slow client's 64 KB window
	s.Update(testMesh(n))
	ctx := withDeadline(t)

	// The slow proxy: fixed 64 KB windows (no BDP growth), so the server
	// fills them while it does not read.
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(65535), grpc.WithInitialConnWindowSize(65535))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	slowID := contract.Identity{ID: contract.DefaultNodeID("127.0.0.9", "slow", "default"), Namespace: "default", WorkloadName: "slow",
		IPs: []string{"127.0.0.9"}, OutboundAddress: "127.0.0.9:15001"}
	slow := &adsClient{t: t, stream: stream, node: slowID.Node()}
	slow.sync() // then it stops reading, its EDS watch open

	fast := dial(t, ctx, addr, client.Node())
	fast.sync()

	start := time.Now()
	final := testMesh(n + 20)
	for i := range 20 {
		s.Update(testMesh(n + i + 1))
		time.Sleep(5 * time.Millisecond) // separate pushes, not one debounced burst
	}
	want := wantVersion(t, final, resource.EndpointType)
	for {
		r := fast.recv()
		fast.request(r.GetTypeUrl(), fast.subs[r.GetTypeUrl()], r)
		if r.GetTypeUrl() == resource.EndpointType && r.GetVersionInfo() == want {
			break
		}
	}
	t.Logf("the reading proxy reached the final version %v after the first change, while the other did not read", time.Since(start).Round(time.Millisecond))

	// The slow proxy reads again: at most the response its window held
	// and the one after, then the latest.
	var eds int
	for {
		r := slow.recv()
		slow.request(r.GetTypeUrl(), slow.subs[r.GetTypeUrl()], r)
		if r.GetTypeUrl() != resource.EndpointType {
			continue
		}
		eds++
		if r.GetVersionInfo() == want {
			break
		}
	}
	t.Logf("the slow proxy received %d EDS responses for 20 changes", eds)
	if eds > 3 {
		t.Errorf("the slow proxy received %d EDS responses for 20 changes; want the latest state, not every intermediate one", eds)
	}
}
