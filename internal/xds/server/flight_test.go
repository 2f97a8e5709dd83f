package server

import (
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"weft.dev/weft/internal/xds/contract"
)

func TestFlightBudget(t *testing.T) {
	b := newFlightBudget(100)
	a, c := &adsStream{wake: make(chan struct{}, 1)}, &adsStream{wake: make(chan struct{}, 1)}
	if !b.take(a, resource.ClusterType, 1000) {
		t.Fatal("a response larger than the bound was refused with nothing in flight")
	}
	if b.take(c, resource.ClusterType, 10) {
		t.Fatal("a response went while the bound was exceeded")
	}
	select {
	case <-c.wake:
		t.Fatal("woken before room freed")
	default:
	}
	b.give(a, resource.ClusterType)
	select {
	case <-c.wake:
	default:
		t.Fatal("the waiting stream was not woken when room freed")
	}
	if !b.take(c, resource.ClusterType, 10) || !b.take(a, resource.ListenerType, 90) {
		t.Fatal("responses that fit were refused")
	}
	d := &adsStream{wake: make(chan struct{}, 1)}
	if b.take(d, resource.RouteType, 1) {
		t.Fatal("a new stream's response went past the bound")
	}
	// A stream with a response in flight completes its set.
	if !b.take(a, resource.EndpointType, 1000) {
		t.Fatal("the rest of an admitted stream's set was held back")
	}
	// An unanswered response stops counting after flightExpiry.
	for k, e := range b.held {
		e.expires = time.Now().Add(-time.Second)
		b.held[k] = e
	}
	if !b.take(d, resource.RouteType, 1) {
		t.Fatal("expired responses still held the room")
	}
	b.drop(a)
	b.drop(c)
	b.drop(d)
	if b.used != 0 || len(b.held) != 0 {
		t.Fatalf("after both streams closed: used %d, held %v", b.used, b.held)
	}
}

// TestControlPlaneBytesInFlightBound: with room for one response, a second
// proxy's first response waits until the first proxy answers its own, then
// goes.
func TestControlPlaneBytesInFlightBound(t *testing.T) {
	s, addr := start(t, Options{Debounce: time.Millisecond, DebounceMax: 10 * time.Millisecond, MaxBytesInFlight: 1})
	s.Update(testMesh(2))
	ctx := withDeadline(t)
	a := dial(t, ctx, addr, client.Node())
	otherID := contract.Identity{ID: contract.DefaultNodeID("127.0.0.9", "other", "default"), Namespace: "default", WorkloadName: "other",
		IPs: []string{"127.0.0.9"}, OutboundAddress: "127.0.0.9:15001"}
	b := dial(t, ctx, addr, otherID.Node())

	a.request(resource.ClusterType, nil, nil)
	cds := a.expect(resource.ClusterType)
	b.request(resource.ClusterType, nil, nil)
	got := make(chan *discovery.DiscoveryResponse, 1)
	go func() {
		r, err := b.stream.Recv()
		if err != nil {
			close(got)
			return
		}
		got <- r
	}()
	select {
	case r := <-got:
		t.Fatalf("the second proxy got %s %s while the first had not answered", r.GetTypeUrl(), r.GetVersionInfo())
	case <-time.After(300 * time.Millisecond):
	}
	a.request(resource.ClusterType, nil, cds) // the ACK frees the room
	select {
	case r, ok := <-got:
		if !ok || r.GetTypeUrl() != resource.ClusterType {
			t.Fatalf("after the first proxy's ACK the second got %v", r)
		}
	case <-ctx.Done():
		t.Fatal("the second proxy got nothing after the first answered")
	}
}
