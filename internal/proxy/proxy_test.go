package proxy

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	router "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	server "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"

	"weft.dev/weft/internal/xds/contract"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// controlPlane serves snap to every node over ADS on a loopback port.
func controlPlane(t *testing.T, snap map[resource.Type][]types.Resource) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	snaps := cache.NewSnapshotCache(true, cache.IDHash{}, nil)
	s, err := cache.NewSnapshot("1", snap)
	if err != nil {
		t.Fatal(err)
	}
	if err := snaps.SetSnapshot(ctx, testID.ID, s); err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	discovery.RegisterAggregatedDiscoveryServiceServer(gs, server.NewServer(ctx, snaps, nil))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(lis) }()
	t.Cleanup(func() { cancel(); gs.Stop(); <-done })
	return lis.Addr().String()
}

var testID = contract.Identity{
	ID: contract.DefaultNodeID("127.0.0.1", "productpage", "default"), Namespace: "default",
	WorkloadName: "productpage", Labels: map[string]string{"app": "productpage", "version": "v1"},
	IPs: []string{"127.0.0.1"}, OutboundAddress: "127.0.0.1:0",
}

func outboundListener(t *testing.T) *listener.Listener {
	rt, _ := anypb.New(&router.Router{})
	m, err := anypb.New(&hcm.HttpConnectionManager{
		StatPrefix: "outbound",
		CodecType:  hcm.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcm.HttpConnectionManager_Rds{Rds: &hcm.Rds{
			RouteConfigName: contract.RouteHTTPProxy,
			ConfigSource:    &core.ConfigSource{ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}}},
		}},
		HttpFilters: []*hcm.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: rt}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return &listener.Listener{
		Name: "outbound",
		Address: &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
			Address: "127.0.0.1", PortSpecifier: &core.SocketAddress_PortValue{PortValue: 0}}}},
		TrafficDirection: core.TrafficDirection_OUTBOUND,
		FilterChains: []*listener.FilterChain{{Filters: []*listener.Filter{{
			Name: "envoy.filters.network.http_connection_manager", ConfigType: &listener.Filter_TypedConfig{TypedConfig: m}}}}},
	}
}

func get(ctx context.Context, t *testing.T, url string) (int, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func post(ctx context.Context, t *testing.T, url string) (int, string) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestProxyGetsReadyServesAdminAndShutsDown(t *testing.T) {
	defer http.DefaultClient.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	xds := controlPlane(t, map[resource.Type][]types.Resource{
		resource.ListenerType: {outboundListener(t)},
		resource.RouteType:    {&route.RouteConfiguration{Name: contract.RouteHTTPProxy}},
		// Every type must have a version, even when empty, or a state of
		// the world client never hears about clusters and never gets ready.
		resource.ClusterType: {},
	})
	p, err := New(Options{Identity: testID, XDSAddress: xds, Plaintext: true, AdminAddress: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + p.AdminAddr().String()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(runCtx) }()

	if code, _ := get(ctx, t, base+"/healthz"); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
	for {
		code, body := get(ctx, t, base+"/ready")
		if code == 200 {
			if !strings.Contains(body, "LIVE") || !p.Ready() {
				t.Errorf("/ready = %d %q, Ready() = %v", code, body, p.Ready())
			}
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("never ready: last /ready = %d %q, xds stats %+v", code, body, p.XDSStats())
		case <-time.After(10 * time.Millisecond):
		}
	}
	if code, body := get(ctx, t, base+"/stats/prometheus"); code != 200 ||
		!strings.Contains(body, "weft_proxy_xds_connected 1") || !strings.Contains(body, "weft_proxy_xds_acks_total") ||
		!strings.Contains(body, "weft_proxy_xds_control_plane_info{address=") ||
		!strings.Contains(body, "go_goroutines") {
		t.Errorf("/stats/prometheus = %d\n%s", code, body)
	}
	if code, body := get(ctx, t, base+"/config_dump"); code != 200 || !strings.Contains(body, "outbound") {
		t.Errorf("/config_dump = %d %q", code, body)
	}
	if p.ListenerAddr("outbound") == nil {
		t.Error("outbound listener not bound")
	}

	if code, body := post(ctx, t, base+"/drain"); code != 200 {
		t.Errorf("POST /drain = %d %q", code, body)
	}
	if code, _ := get(ctx, t, base+"/ready"); code != 503 || p.Ready() {
		t.Errorf("/ready after drain = %d, Ready() = %v", code, p.Ready())
	}

	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run = %v", err)
		}
	case <-ctx.Done():
		t.Fatal("Run did not return after cancel")
	}
	if p.Ready() {
		t.Error("Ready() after shutdown")
	}
	if _, err := net.DialTimeout("tcp", p.AdminAddr().String(), time.Second); err == nil {
		t.Error("admin still accepting after shutdown")
	}
}

func TestNewValidatesAndCleansUp(t *testing.T) {
	if _, err := New(Options{XDSAddress: "x:1"}); err == nil {
		t.Error("New without an identity succeeded")
	}
	if _, err := New(Options{Identity: testID}); err == nil {
		t.Error("New without an xDS address succeeded")
	}
	if _, err := New(Options{Identity: testID, XDSAddress: "127.0.0.1:1", AdminAddress: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)}); err == nil ||
		!strings.Contains(err.Error(), "--root-cert") {
		t.Errorf("New on the secure port without a trust root = %v", err)
	}
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	_, err = New(Options{Identity: testID, XDSAddress: "127.0.0.1:1", AdminAddress: busy.Addr().String(), Logger: slog.New(slog.DiscardHandler)})
	if err == nil || !strings.Contains(err.Error(), "admin listener") {
		t.Errorf("New on a busy admin port = %v", err)
	}
}
