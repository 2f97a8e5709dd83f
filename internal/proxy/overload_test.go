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

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"weft.dev/weft/internal/xds/contract"
)

// TestProxyOverloadGuard: with an overload memory limit the proxy's
// memory is over at once (1 byte), the guard runs with the proxy and
// its listeners close new connections, as the admin endpoint's
// envoy_overload_* and envoy_listener_downstream_cx_overload_reject
// report; MaxConnections reaches the data plane's
// envoy_server_total_connections.
func TestProxyOverloadGuard(t *testing.T) {
	defer http.DefaultClient.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	xds := controlPlane(t, map[resource.Type][]types.Resource{
		resource.ListenerType: {outboundListener(t)},
		resource.RouteType:    {&route.RouteConfiguration{Name: contract.RouteHTTPProxy}},
		resource.ClusterType:  {},
	})
	p, err := New(Options{Identity: testID, XDSAddress: xds, Plaintext: true, AdminAddress: "127.0.0.1:0",
		Logger: slog.New(slog.DiscardHandler), OverloadMemoryLimit: 1, MaxConnections: 10})
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + p.AdminAddr().String()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(runCtx) }()
	defer func() { stop(); <-done }()

	// Bounded waits: the listener is bound with the first config, the
	// guard samples every 250 ms.
	var body string
	for {
		_, body = get(ctx, t, base+"/stats/prometheus")
		if p.ListenerAddr("outbound") != nil && strings.Contains(body, "envoy_overload_envoy_overload_actions_reject_incoming_connections_active 1") {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the guard never rejected connections:\n%s", body)
		case <-time.After(20 * time.Millisecond):
		}
	}
	c, err := net.Dial("tcp", p.ListenerAddr("outbound").String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	if b, _ := io.ReadAll(c); len(b) != 0 {
		t.Errorf("a connection under overload was answered: %q", b)
	}
	for {
		_, body = get(ctx, t, base+"/stats/prometheus")
		if strings.Contains(body, `envoy_listener_downstream_cx_overload_reject{envoy_listener_address="outbound"} 1`) {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the rejected connection was not counted:\n%s", body)
		case <-time.After(20 * time.Millisecond):
		}
	}
	for _, want := range []string{
		"envoy_overload_envoy_overload_actions_disable_http_keepalive_active 1",
		"envoy_overload_envoy_resource_monitors_fixed_heap_pressure ",
		"envoy_server_total_connections 0",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/stats/prometheus lacks %q", want)
		}
	}
}
