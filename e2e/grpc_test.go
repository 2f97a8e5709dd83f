package e2e

import (
	"context"
	"math"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"weft.dev/weft/internal/echo"
)

// TestGRPCBalancedPerCall sends 3,000 unary calls over ONE client
// connection through the sidecar and requires each of three endpoints to
// get its third within ±10%: the sidecar balances calls, not connections.
func TestGRPCBalancedPerCall(t *testing.T) {
	m := NewMesh(t)
	backends := m.Service("greeter", "GRPC", "v1", "v1", "v1")
	front := m.Client("frontend")

	cc := GRPCClient(t, front, "greeter")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	WaitGRPCAnswerers(t, cc, 3)

	base := make([]uint64, len(backends))
	for i, b := range backends {
		base[i] = b.Echo.Requests()
	}
	const n = 3000
	for i := 0; i < n; i++ {
		if _, err := echo.Call(ctx, cc, &structpb.Struct{}); err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	for i, b := range backends {
		got := float64(b.Echo.Requests() - base[i])
		if math.Abs(got-n/3) > 0.1*n/3 {
			t.Errorf("%s served %v of %d calls, want %d ± 10%%", b.Opts.Name, got, n, n/3)
		}
	}

	// Status codes travel in trailers: they must arrive intact.
	req, _ := structpb.NewStruct(map[string]any{"status": float64(codes.NotFound)})
	_, err := echo.Call(ctx, cc, req)
	if status.Code(err) != codes.NotFound {
		t.Fatalf("requested NOT_FOUND through the sidecar, got %v", err)
	}
	// Server streaming passes through too.
	sreq, _ := structpb.NewStruct(map[string]any{"count": float64(5)})
	replies, err := echo.Stream(ctx, cc, sreq)
	if err != nil || len(replies) != 5 {
		t.Fatalf("stream of 5: got %d replies, err %v", len(replies), err)
	}
}
