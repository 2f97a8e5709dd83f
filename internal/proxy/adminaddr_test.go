package proxy

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	server "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"

	"weft.dev/weft/internal/xds/contract"
)

// The node the proxy sends names its bound admin address, so operator
// commands can reach the proxy by name through the control plane.
func TestNodeCarriesAdminAddress(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nodes := make(chan *core.Node, 1)
	node := func(n *core.Node) {
		if n != nil {
			select {
			case nodes <- n:
			default:
			}
		}
	}
	cb := server.CallbackFuncs{
		StreamRequestFunc:      func(_ int64, r *discovery.DiscoveryRequest) error { node(r.GetNode()); return nil },
		StreamDeltaRequestFunc: func(_ int64, r *discovery.DeltaDiscoveryRequest) error { node(r.GetNode()); return nil },
	}
	gs := grpc.NewServer()
	discovery.RegisterAggregatedDiscoveryServiceServer(gs, server.NewServer(ctx, cache.NewSnapshotCache(true, cache.IDHash{}, nil), cb))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); _ = gs.Serve(lis) }()
	defer func() { gs.Stop(); <-served }()

	p, err := New(Options{Identity: testID, XDSAddress: lis.Addr().String(), Plaintext: true, AdminAddress: "127.0.0.1:0", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(runCtx) }()
	defer func() { stop(); <-done }()

	select {
	case n := <-nodes:
		id, err := contract.ParseNode(n)
		if err != nil {
			t.Fatal(err)
		}
		if want := p.AdminAddr().String(); id.AdminAddress != want {
			t.Errorf("node %s = %q, want the bound admin address %q", contract.MetaAdminAddress, id.AdminAddress, want)
		}
	case <-ctx.Done():
		t.Fatal("no request with a node within 10s")
	}
}

func TestAdvertisedAdmin(t *testing.T) {
	for _, tt := range []struct {
		bound string
		ips   []string
		want  string
	}{
		{"127.0.0.2:15000", []string{"10.0.0.1"}, "127.0.0.2:15000"},
		{"0.0.0.0:15000", []string{"10.0.0.1", "10.0.0.2"}, "10.0.0.1:15000"},
		{"[::]:15000", nil, "127.0.0.1:15000"},
		{"[fd00::1]:15000", nil, "[fd00::1]:15000"},
	} {
		a, err := net.ResolveTCPAddr("tcp", tt.bound)
		if err != nil {
			t.Fatal(err)
		}
		if got := advertisedAdmin(a, tt.ips); got != tt.want {
			t.Errorf("advertisedAdmin(%s, %v) = %q, want %q", tt.bound, tt.ips, got, tt.want)
		}
	}
}
