package server

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// typeStatus returns the proxy's status of one type.
func typeStatus(t *testing.T, ps ProxyStatus, typeURL string) TypeStatus {
	t.Helper()
	for _, ts := range ps.Types {
		if ts.TypeURL == typeURL {
			return ts
		}
	}
	t.Fatalf("proxy %s has no status for %s: %+v", ps.Node, typeURL, ps.Types)
	return TypeStatus{}
}

// onlyProxy returns the single connected proxy's status.
func onlyProxy(t *testing.T, s *Server) ProxyStatus {
	t.Helper()
	all := s.ProxyStatuses()
	if len(all) != 1 {
		t.Fatalf("ProxyStatuses() lists %d proxies, want 1: %+v", len(all), all)
	}
	return all[0]
}

// waitStates waits until the proxy's types are in the wanted states
// (types not named must be SYNCED) and returns its status.
func waitStates(t *testing.T, s *Server, want map[string]SyncState) ProxyStatus {
	t.Helper()
	ctx := withDeadline(t)
	var last ProxyStatus
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last status: %+v", last)
		}
	})
	waitFor(t, ctx, fmt.Sprintf("states %v", want), func() bool {
		all := s.ProxyStatuses()
		if len(all) != 1 {
			return false
		}
		last = all[0]
		for _, ts := range last.Types {
			w, ok := want[ts.TypeURL]
			if !ok {
				w = Synced
			}
			if ts.State != w {
				return false
			}
		}
		return true
	})
	return last
}

func TestProxyStatusesFollowSendsAndACKs(t *testing.T) {
	s, addr := start(t, Options{Debounce: time.Millisecond, DebounceMax: 10 * time.Millisecond})
	s.Update(testMesh(2))
	ctx := withDeadline(t)
	id := client
	id.AdminAddress = "127.0.0.1:15000"
	id.Locality = "eu/west-1"
	c := dial(t, ctx, addr, id.Node())
	before := c.sync()

	ps := waitStates(t, s, nil)
	if ps.Node != client.ID || ps.Workload != "productpage" || ps.Namespace != "default" || ps.AdminAddress != "127.0.0.1:15000" ||
		ps.Labels["app"] != "productpage" || len(ps.IPs) != 1 || ps.Locality != "eu/west-1" || ps.Streams != 1 || ps.ConnectedAt.IsZero() {
		t.Errorf("identity in ProxyStatus = %+v", ps)
	}
	if ps.MeshVersion == "" {
		t.Error("MeshVersion is empty after a push")
	}
	var order []string
	for _, ts := range ps.Types {
		order = append(order, ts.Type)
		want := before[ts.TypeURL].GetVersionInfo()
		if ts.Current != want || ts.Sent != want || ts.Acked != want || ts.SentAt.IsZero() || ts.AckedAt.IsZero() || ts.LastNACK != nil {
			t.Errorf("%s = %+v, want current, sent and ACKed %s", ts.Type, ts, want)
		}
	}
	if got := strings.Join(order, " "); got != "CDS LDS EDS RDS" {
		t.Errorf("types in order %q, want CDS LDS EDS RDS", got)
	}

	// An endpoint change: EDS is sent and, until the proxy ACKs it, STALE.
	s.Update(testMesh(3))
	eds := c.expect(resource.EndpointType)
	ps = onlyProxy(t, s)
	if ts := typeStatus(t, ps, resource.EndpointType); ts.State != Stale || ts.Sent != eds.GetVersionInfo() ||
		ts.Current != eds.GetVersionInfo() || ts.Acked != before[resource.EndpointType].GetVersionInfo() {
		t.Errorf("EDS before the ACK = %+v, want STALE: sent and current %s, ACKed %s", ts, eds.GetVersionInfo(), before[resource.EndpointType].GetVersionInfo())
	}
	c.request(resource.EndpointType, c.subs[resource.EndpointType], eds)
	ps = waitStates(t, s, nil)
	if ts := typeStatus(t, ps, resource.EndpointType); ts.Acked != eds.GetVersionInfo() {
		t.Errorf("EDS after the ACK = %+v, want ACKed %s", ts, eds.GetVersionInfo())
	}

	// The JSON carries the state and versions by name.
	b, err := json.Marshal(s.ProxyStatuses())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"state":"SYNCED"`, `"type":"EDS"`, `"adminAddress":"127.0.0.1:15000"`, `"acked":"` + eds.GetVersionInfo() + `"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("JSON lacks %s:\n%s", want, b)
		}
	}
}

// A type the proxy never asked for is NOT SENT; a NACKed version is
// NACKED with the proxy's error until a new version is ACKed, and the
// last NACK stays visible after that.
func TestProxyStatusesShowNotSentAndNACKs(t *testing.T) {
	s, addr := start(t, Options{Debounce: time.Millisecond, DebounceMax: 10 * time.Millisecond})
	s.Update(ratingsMesh("127.0.0.1", 9091))
	ctx := withDeadline(t)

	// CDS only.
	c := dial(t, ctx, addr, client.Node())
	c.request(resource.ClusterType, nil, nil)
	cds := c.expect(resource.ClusterType)
	c.request(resource.ClusterType, nil, cds)
	waitStates(t, s, map[string]SyncState{resource.ListenerType: NotSent, resource.EndpointType: NotSent, resource.RouteType: NotSent})
	if err := c.stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, "proxy gone", func() bool { return len(s.ProxyStatuses()) == 0 })

	p := newPeer(t, ctx, addr)
	waitStates(t, s, nil)
	s.Update(ratingsMesh("127.0.0.1", 9092))
	isLDS := func(r *discovery.DiscoveryResponse) bool { return r.GetTypeUrl() == resource.ListenerType }
	bad := ofType(p.answer(time.Second, isLDS), resource.ListenerType)
	if len(bad) != 1 {
		t.Fatalf("%d LDS responses, want 1", len(bad))
	}
	ps := waitStates(t, s, map[string]SyncState{resource.ListenerType: NACKed})
	lds := typeStatus(t, ps, resource.ListenerType)
	if lds.Current != bad[0].GetVersionInfo() || lds.Sent != lds.Current || lds.Acked != p.acked[resource.ListenerType] ||
		lds.LastNACK == nil || lds.LastNACK.Version != lds.Current || !strings.Contains(lds.LastNACK.Error, "address already in use") {
		t.Errorf("LDS = %+v (last NACK %+v), want NACKED version %s with the proxy's error", lds, lds.LastNACK, bad[0].GetVersionInfo())
	}

	s.Update(ratingsMesh("127.0.0.1", 9093))
	p.answer(time.Second, func(*discovery.DiscoveryResponse) bool { return false })
	ps = waitStates(t, s, nil)
	if lds := typeStatus(t, ps, resource.ListenerType); lds.LastNACK == nil || lds.LastNACK.Version != bad[0].GetVersionInfo() {
		t.Errorf("LDS after the fix = %+v, want SYNCED and the last NACK (of %s) still shown", lds, bad[0].GetVersionInfo())
	}
}

// A rejected version sent again (the rest of its set changed) is STALE
// until the proxy answers, not NACKED.
func TestProxyStatusesResentNACKIsStale(t *testing.T) {
	s, addr := start(t, Options{Debounce: time.Millisecond, DebounceMax: 10 * time.Millisecond})
	s.Update(testMesh(1))
	ctx := withDeadline(t)
	p := newPeer(t, ctx, addr)
	goodEDS := p.subs[resource.EndpointType]

	s.Update(ratingsMesh("127.0.0.1", 9091))
	bad := map[string]*discovery.DiscoveryResponse{}
	for len(bad) < 4 {
		r := p.next(5 * time.Second)
		if r == nil {
			t.Fatalf("got %d types after the change, want 4", len(bad))
		}
		bad[r.GetTypeUrl()] = r
		if r.GetTypeUrl() == resource.ClusterType {
			p.subscribeEDS(r)
		}
	}
	for _, typ := range typeOrder {
		names := p.subs[typ]
		if typ == resource.EndpointType {
			names = goodEDS
		}
		p.nack(bad[typ], names)
	}
	waitStates(t, s, map[string]SyncState{resource.ListenerType: NACKed, resource.RouteType: NACKed,
		resource.ClusterType: NACKed, resource.EndpointType: NACKed})

	// RDS stays what was rejected and is sent again with the new set.
	s.Update(ratingsMesh("10.0.9.9", 9092))
	for {
		r := p.next(5 * time.Second)
		if r == nil {
			t.Fatal("the rejected RDS version was not sent again")
		}
		if r.GetTypeUrl() != resource.RouteType {
			p.ack(r)
			continue
		}
		if ts := typeStatus(t, onlyProxy(t, s), resource.RouteType); ts.State != Stale || ts.LastNACK == nil || ts.LastNACK.Version != r.GetVersionInfo() {
			t.Errorf("RDS sent again, not yet answered = %+v, want STALE with the last NACK of %s", ts, r.GetVersionInfo())
		}
		p.ack(r)
		break
	}
	p.answer(500*time.Millisecond, func(*discovery.DiscoveryResponse) bool { return false })
	waitStates(t, s, nil)
}
