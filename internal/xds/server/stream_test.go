package server

import (
	"context"
	"maps"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"weft.dev/weft/internal/xds/contract"
)

// serverGoroutines counts the server's goroutines of ADS connections
// (h2rpc's reader, one per connection) and of streams (a stream's
// request goroutine, wireStream.serve, and push goroutines, pushLoop).
func serverGoroutines() (conns, streams int) {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		switch {
		case strings.Contains(g, "h2rpc.(*Server).serveConn"):
			conns++
		case strings.Contains(g, "server.(*wireStream).serve"), strings.Contains(g, "server.(*Server).pushLoop"):
			streams++
		}
	}
	return conns, streams
}

// waitGoroutines waits until the server has the goroutines wanted.
func waitGoroutines(t *testing.T, ctx context.Context, conns, streams int, when string) {
	t.Helper()
	for {
		c, s := serverGoroutines()
		if c == conns && s == streams {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: %d connection and %d stream goroutines, want %d and %d", when, c, s, conns, streams)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// TestNoGoroutinePerIdleStream: an idle ADS stream costs the server no
// goroutine, its connection one (the reader); a push starts a goroutine
// per stream that ends when the push is sent.
func TestNoGoroutinePerIdleStream(t *testing.T) {
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
	waitGoroutines(t, ctx, n, 0, "after connecting")

	s.Update(deltaMesh(2, 1, time.Second)) // one more ratings endpoint
	for _, c := range cs {
		c.expect(resource.EndpointType, clusterName("ratings"))
	}
	waitGoroutines(t, ctx, n, 0, "after a push")
}

// TestTakeInitialKeepsOnlyDifferences: a reconnecting proxy's
// initial_resource_versions are kept as "has the set" plus what differs,
// so an unchanged mesh costs no per-name state; what the proxy is then
// sent is the same as with the whole map.
func TestTakeInitialKeepsOnlyDifferences(t *testing.T) {
	enc := func(name, version string) *encoded {
		return &encoded{name: name, version: version, delta: &discovery.Resource{Name: name, Version: version}}
	}
	set := newTypeSet(resource.ClusterType, "v", []*encoded{enc("a", "1"), enc("b", "1"), enc("c", "1")})

	var same subscription
	same.takeInitial(map[string]string{"a": "1", "b": "1", "c": "1"}, set)
	if same.overrides != nil {
		t.Errorf("an unchanged set kept %v", same.overrides)
	}
	for _, n := range []string{"a", "b", "c"} {
		if v, ok := same.had(n); !ok || v != "1" {
			t.Errorf("had(%q) = %q, %v; want 1, true", n, v, ok)
		}
	}

	var changed subscription // b changed, c missing, d gone from the mesh
	changed.takeInitial(map[string]string{"a": "1", "b": "0", "d": "1"}, set)
	want := map[string]string{"b": "0", "c": "", "d": "1"}
	if !maps.Equal(changed.overrides, want) {
		t.Errorf("overrides %v, want %v", changed.overrides, want)
	}
	changed.wildcard = true
	res, removed := changed.diff(set)
	var names []string
	for _, r := range res {
		names = append(names, r.GetName())
	}
	if !slices.Equal(names, []string{"b", "c"}) || !slices.Equal(removed, []string{"d"}) {
		t.Errorf("sent %v, removed %v; want [b c], [d]", names, removed)
	}

	var early subscription // no snapshot yet: the map itself
	iv := map[string]string{"a": "1"}
	early.takeInitial(iv, nil)
	if !maps.Equal(early.overrides, iv) {
		t.Errorf("without a set: %v", early.overrides)
	}
}
