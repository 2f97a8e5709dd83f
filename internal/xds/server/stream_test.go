package server

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"weft.dev/weft/internal/xds/contract"
)

// streamGoroutines counts the goroutines of ADS streams: handlers
// (runStream) and push goroutines (pushLoop).
func streamGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	c := 0
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "server.(*Server).runStream") || strings.Contains(g, "server.(*Server).pushLoop") {
			c++
		}
	}
	return c
}

// waitStreamGoroutines waits until there are want stream goroutines.
func waitStreamGoroutines(t *testing.T, ctx context.Context, want int, when string) {
	t.Helper()
	for {
		got := streamGoroutines()
		if got == want {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: %d stream goroutines, want %d (one per stream)", when, got, want)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// TestOneGoroutinePerIdleStream: an idle ADS stream is one goroutine of
// the server's (its handler, reading requests), not a handler plus a
// reader; a push starts one goroutine per stream that ends when the push
// is sent.
func TestOneGoroutinePerIdleStream(t *testing.T) {
	s, addr := start(t, Options{Debounce: time.Millisecond, DebounceMax: 5 * time.Millisecond})
	s.Update(deltaMesh(1, 0, time.Second))
	ctx := withDeadline(t)
	const n = 12
	var cs []*deltaClient
	for i := range n {
		id := contract.Identity{ID: contract.DefaultNodeID("127.0.1.1", "p"+string(rune('a'+i)), "default"), Namespace: "default",
			WorkloadName: "p", IPs: []string{"127.0.1.1"}, OutboundAddress: "127.0.1.1:15001"}
		c := dialDelta(t, ctx, addr, id.Node())
		c.sync()
		cs = append(cs, c)
	}
	waitStreamGoroutines(t, ctx, n, "after connecting")

	s.Update(deltaMesh(2, 1, time.Second)) // one more ratings endpoint
	for _, c := range cs {
		c.expect(resource.EndpointType, clusterName("ratings"))
	}
	waitStreamGoroutines(t, ctx, n, "after a push")
}
