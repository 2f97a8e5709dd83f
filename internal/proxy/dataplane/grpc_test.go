package dataplane

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"weft.dev/weft/internal/xds/contract"
)

// grpcUpstream starts a real gRPC server with the health service; each call
// is counted and answered with an "x-upstream" trailer.
func grpcUpstream(t *testing.T, name string, calls *atomic.Int64) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		calls.Add(1)
		grpc.SetTrailer(ctx, metadata.Pairs("x-upstream", name))
		return h(ctx, req)
	}))
	healthpb.RegisterHealthServer(s, health.NewServer())
	var wg sync.WaitGroup
	wg.Go(func() { s.Serve(ln) })
	t.Cleanup(func() { s.Stop(); wg.Wait() })
	return ln.Addr().String()
}

func TestGRPCBalancedPerRequest(t *testing.T) {
	var calls [3]atomic.Int64
	var eps []ep
	for i, n := range []string{"g0", "g1", "g2"} {
		eps = append(eps, ep{Addr: grpcUpstream(t, n, &calls[i]), Workload: "grpc-" + n + ";default;grpc;v1;"})
	}
	reg := newRegistry()
	d := newDataplane(t, contract.Identity{WorkloadName: "client", Namespace: "default"}, reg)
	mustApply(t, d, resourcesAny(edsCluster(t, "grpc", true, "grpc.default.svc.cluster.local"), cla("grpc", eps...),
		routeConfig("r", vhost("v", []string{"*"}, toCluster("all", prefixMatch("/"), "grpc"))),
		httpListener(t, "out", core.TrafficDirection_OUTBOUND, "r", nil)))

	conn, err := grpc.NewClient("passthrough:///"+d.ListenerAddr("out").String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("grpc"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const n = 300
	seen := map[string]int{}
	for range n {
		var tr metadata.MD
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Trailer(&tr))
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("status %v", resp.GetStatus())
		}
		if len(tr.Get("x-upstream")) != 1 {
			t.Fatalf("trailer lost: %v", tr)
		}
		seen[tr.Get("x-upstream")[0]]++
	}
	for i := range calls {
		if got := calls[i].Load(); got < n/3*9/10 || got > n/3*11/10 {
			t.Errorf("upstream %d got %d calls, want %d±10%% (spread: %v)", i, got, n/3, seen)
		}
	}
	// An error status must arrive intact (trailers-only response).
	_, err = hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "nope"})
	if status.Code(err) != codes.NotFound {
		t.Errorf("unknown service: %v, want NotFound", err)
	}
	if got := counterValue(t, reg, map[string]string{"request_protocol": "grpc", "grpc_response_status": "0",
		"response_code": "200", "destination_service": "grpc.default.svc.cluster.local", "reporter": "source"}); got != n {
		t.Errorf("grpc OK series = %v, want %d", got, n)
	}
	if got := counterValue(t, reg, map[string]string{"request_protocol": "grpc", "grpc_response_status": "5"}); got != 1 {
		t.Errorf("grpc NotFound series = %v, want 1", got)
	}
}

func TestGRPCLocalReply(t *testing.T) {
	d := newDataplane(t, contract.Identity{}, nil)
	mustApply(t, d, resourcesAny(edsCluster(t, "grpc", true, ""), cla("grpc"),
		routeConfig("r", vhost("v", []string{"*"}, toCluster("all", prefixMatch("/"), "grpc"))),
		httpListener(t, "out", core.TrafficDirection_OUTBOUND, "r", nil)))
	conn, err := grpc.NewClient("passthrough:///"+d.ListenerAddr("out").String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if s := status.Convert(err); s.Code() != codes.Unavailable || s.Message() != "no healthy upstream" {
		t.Errorf("err = %v, want Unavailable: no healthy upstream", err)
	}
}
