package server

import (
	"context"
	"maps"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"weft.dev/weft/internal/xds/contract"
)

func TestFlightBudget(t *testing.T) {
	b := newFlightBudget(100)
	a, c := &adsStream{}, &adsStream{}
	if !b.take(a, resource.ClusterType, 1000) {
		t.Fatal("a response larger than the bound was refused with nothing in flight")
	}
	if b.take(c, resource.ClusterType, 10) {
		t.Fatal("a response went while the bound was exceeded")
	}
	if c.wokenForTest() {
		t.Fatal("woken before room freed")
	}
	b.give(a, resource.ClusterType)
	if !c.wokenForTest() {
		t.Fatal("the waiting stream was not woken when room freed")
	}
	if !b.take(c, resource.ClusterType, 10) || !b.take(a, resource.ListenerType, 90) {
		t.Fatal("responses that fit were refused")
	}
	d := &adsStream{}
	if b.take(d, resource.RouteType, 1) {
		t.Fatal("a new stream's response went past the bound")
	}
	// A stream with a response in flight completes its set.
	if !b.take(a, resource.EndpointType, 1000) {
		t.Fatal("the rest of an admitted stream's set was held back")
	}
	// An unanswered response stops counting after flightExpiry.
	b.expireForTest()
	if b.take(d, resource.RouteType, 1) {
		t.Fatal("a queued stream got in before its turn")
	}
	b.sweepOnce(time.Now())
	if !d.wokenForTest() {
		t.Fatal("the sweep did not wake the waiting stream")
	}
	if !b.take(d, resource.RouteType, 1) {
		t.Fatal("expired responses still held the room")
	}
	b.drop(a)
	b.drop(c)
	b.drop(d)
	checkPerStream(t, b)
	if b.used != 0 || len(b.held) != 0 {
		t.Fatalf("after both streams closed: used %d, held %v", b.used, b.held)
	}
}

// TestFlightBudgetNoStrandedWaiter: a stream queued once is woken once,
// a stream that got in meanwhile is not woken for nothing, and when room
// frees without an answer (an expired response) the sweep wakes the
// queue, so no waiting stream is left waiting for ever.
func TestFlightBudgetNoStrandedWaiter(t *testing.T) {
	b := newFlightBudget(100)
	newStream := func() *adsStream { return &adsStream{} }
	woken := (*adsStream).wokenForTest
	holder, w1, w2 := newStream(), newStream(), newStream()
	if !b.take(holder, resource.ClusterType, 100) {
		t.Fatal("the first response was refused")
	}
	for range 3 { // retried three times: queued once
		if b.take(w1, resource.ClusterType, 10) {
			t.Fatal("a response went past the bound")
		}
	}
	if b.take(w2, resource.ClusterType, 10) {
		t.Fatal("a response went past the bound")
	}
	if len(b.waiting) != 2 {
		t.Fatalf("waiting = %d streams, want 2 (each once)", len(b.waiting))
	}

	// The holder's response expires unanswered: no give announces it.
	b.expireForTest()
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { b.sweep(ctx); close(done) }()
	deadline := time.After(10 * time.Second)
	for !woken(w1) {
		select {
		case <-deadline:
			t.Fatal("the waiting stream was never woken after the room freed by expiry")
		case <-time.After(10 * time.Millisecond):
		}
	}
	cancel()
	<-done

	// A queued stream does not get in past the queue with a smaller
	// response of another type (its proxy's listeners may fit where its
	// clusters did not): its proxy would hold them unanswered until it had
	// its clusters, which would wait for their turn behind it.
	w3, w4 := newStream(), newStream()
	if !b.take(holder, resource.ListenerType, 100) || b.take(w3, resource.ClusterType, 10) || b.take(w4, resource.ClusterType, 10) {
		t.Fatal("unexpected admission")
	}
	b.mu.Lock()
	b.used = 0 // room frees unannounced
	b.mu.Unlock()
	if b.take(w3, resource.ListenerType, 1) {
		t.Error("a queued stream got in past the queue with another type")
	}
	b.give(holder, resource.ListenerType)
	if !woken(w3) {
		t.Fatal("the first waiting stream was not woken")
	}
	if !b.take(w3, resource.ClusterType, 10) || !b.take(w3, resource.ListenerType, 1) {
		t.Error("the woken stream could not send its set")
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

// TestFlightBudgetLooksForExpiredOnlyWhenDue: a stream that finds the
// room full does not look through the responses in flight while none of
// them can have expired, and once one has, it is forgotten and the next
// expiry is noted.
func TestFlightBudgetLooksForExpiredOnlyWhenDue(t *testing.T) {
	b := newFlightBudget(100)
	early, late, w := &adsStream{}, &adsStream{}, &adsStream{}
	if !b.take(early, resource.ClusterType, 60) {
		t.Fatal("the first response was refused")
	}
	if !b.take(early, resource.EndpointType, 40) {
		t.Fatal("the rest of an admitted stream's set was refused")
	}
	b.give(early, resource.EndpointType)
	time.Sleep(time.Millisecond) // late's response expires after early's
	if !b.take(late, resource.ClusterType, 30) {
		t.Fatal("a response that fits was refused")
	}
	first := b.held[flightKey{early, resource.ClusterType}].expires
	if !b.expiresFrom.Equal(first) {
		t.Fatalf("expiresFrom = %v, want the first response's expiry %v", b.expiresFrom, first)
	}

	// Before anything can have expired a full room is only refused.
	b.reclaimLocked(first)
	checkPerStream(t, b)
	if len(b.held) != 2 || b.used != 90 {
		t.Fatalf("reclaimed before any expiry: held %d, used %d", len(b.held), b.used)
	}
	// Past the first expiry, that one goes and the next is noted.
	b.reclaimLocked(first.Add(time.Nanosecond))
	checkPerStream(t, b)
	if _, ok := b.held[flightKey{early, resource.ClusterType}]; ok || b.used != 30 {
		t.Fatalf("the expired response is still held: used %d", b.used)
	}
	if want := b.held[flightKey{late, resource.ClusterType}].expires; !b.expiresFrom.Equal(want) {
		t.Fatalf("expiresFrom = %v, want the next expiry %v", b.expiresFrom, want)
	}
	if !b.take(w, resource.ClusterType, 70) {
		t.Fatal("a response that fits once the expired one was forgotten was refused")
	}
}

// expireForTest makes every response in flight expired.
func (b *flightBudget) expireForTest() {
	b.mu.Lock()
	defer b.mu.Unlock()
	past := time.Now().Add(-time.Second)
	for k, e := range b.held {
		e.expires = past
		b.held[k] = e
	}
	b.expiresFrom = past
}

// wokenForTest reports whether st was woken since the last call (a
// stream outside runStream starts no push goroutine).
func (st *adsStream) wokenForTest() bool { return st.takeWake(false) }

// checkPerStream fails unless the budget's count of each stream's
// responses in flight is what its held map says.
func checkPerStream(t *testing.T, b *flightBudget) {
	t.Helper()
	want := map[*adsStream]int{}
	for k := range b.held {
		want[k.st]++
	}
	if !maps.Equal(want, b.perStream) {
		t.Fatalf("per-stream counts %v, held says %v", b.perStream, want)
	}
}
