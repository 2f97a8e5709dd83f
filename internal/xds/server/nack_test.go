package server

import (
	"context"
	"maps"
	"slices"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/registry"
)

// ratingsMesh has reviews (one endpoint elsewhere) and ratings with one
// endpoint at addr:port. At the test client's address (127.0.0.1) that
// endpoint gives the client an inbound listener and cluster; moving its
// port changes LDS, CDS and EDS but not RDS.
func ratingsMesh(addr string, port uint32) *mesh.Snapshot {
	reviews := &registry.Service{Hostname: "reviews.default.svc.cluster.local", Namespace: "default",
		Ports: []registry.Port{{Name: "http", Number: 9080, Protocol: registry.HTTP}}}
	ratings := &registry.Service{Hostname: "ratings.default.svc.cluster.local", Namespace: "default",
		Ports: []registry.Port{{Name: "http", Number: 9090, Protocol: registry.HTTP}}}
	eps := []*registry.Endpoint{
		{ServiceHostname: reviews.Hostname, ServicePort: 9080, Address: "10.0.0.1", Port: 9080, Labels: map[string]string{"app": "reviews"}},
		{ServiceHostname: ratings.Hostname, ServicePort: 9090, Address: addr, Port: port, Labels: map[string]string{"app": "ratings"}},
	}
	return mesh.New(&config.Snapshot{Version: 1}, registry.NewSnapshot([]*registry.Service{reviews, ratings}, eps), "")
}

// peer is an ADS client that decides per response whether to ACK or NACK,
// NACKing as Weft's proxy does: the last ACKed version, the response's
// nonce and an error_detail.
type peer struct {
	*adsClient
	ctx   context.Context
	in    chan *discovery.DiscoveryResponse
	errc  chan error
	acked map[string]string // version last ACKed, by type
	nonce map[string]string // nonce last received, by type
}

// newPeer connects, syncs everything (ACKed) and starts receiving in the
// background.
func newPeer(t *testing.T, ctx context.Context, addr string) *peer {
	t.Helper()
	c := dial(t, ctx, addr, client.Node())
	p := &peer{adsClient: c, ctx: ctx, in: make(chan *discovery.DiscoveryResponse), errc: make(chan error, 1),
		acked: map[string]string{}, nonce: map[string]string{}}
	for typ, r := range c.sync() {
		p.acked[typ], p.nonce[typ] = r.GetVersionInfo(), r.GetNonce()
	}
	go func() {
		for {
			r, err := c.stream.Recv()
			if err != nil {
				p.errc <- err
				return
			}
			select {
			case p.in <- r:
			case <-ctx.Done():
				return
			}
		}
	}()
	return p
}

// next returns the next response, or nil if none arrives within d.
func (p *peer) next(d time.Duration) *discovery.DiscoveryResponse {
	p.t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case r := <-p.in:
		p.nonce[r.GetTypeUrl()] = r.GetNonce()
		return r
	case err := <-p.errc:
		p.t.Fatalf("stream: %v", err)
	case <-timer.C:
	}
	return nil
}

func (p *peer) send(typ, version, nonce string, names []string, detail *rpcstatus.Status) {
	p.t.Helper()
	p.subs[typ] = names
	req := &discovery.DiscoveryRequest{TypeUrl: typ, VersionInfo: version, ResponseNonce: nonce, ResourceNames: names, ErrorDetail: detail}
	if err := p.stream.Send(req); err != nil {
		p.t.Fatalf("send %s: %v", typ, err)
	}
}

// ack accepts r and, for CDS, subscribes EDS to its EDS clusters, as
// Envoy does.
func (p *peer) ack(r *discovery.DiscoveryResponse) {
	p.t.Helper()
	typ := r.GetTypeUrl()
	p.acked[typ] = r.GetVersionInfo()
	p.send(typ, r.GetVersionInfo(), r.GetNonce(), p.subs[typ], nil)
	if typ == resource.ClusterType {
		p.subscribeEDS(r)
	}
}

// subscribeEDS subscribes EDS to the EDS clusters of cds if they changed.
func (p *peer) subscribeEDS(cds *discovery.DiscoveryResponse) {
	p.t.Helper()
	var eds []string
	for _, a := range cds.GetResources() {
		var cl cluster.Cluster
		if err := a.UnmarshalTo(&cl); err != nil {
			p.t.Fatal(err)
		}
		if cl.GetEdsClusterConfig() != nil {
			eds = append(eds, cl.GetName())
		}
	}
	slices.Sort(eds)
	if !slices.Equal(eds, p.subs[resource.EndpointType]) {
		p.send(resource.EndpointType, p.acked[resource.EndpointType], p.nonce[resource.EndpointType], eds, nil)
	}
}

// nack rejects r, subscribed to names.
func (p *peer) nack(r *discovery.DiscoveryResponse, names []string) {
	p.t.Helper()
	p.send(r.GetTypeUrl(), p.acked[r.GetTypeUrl()], r.GetNonce(), names,
		&rpcstatus.Status{Code: 3, Message: "listen tcp 127.0.0.1:9092: bind: address already in use"})
}

// answer ACKs or NACKs (when reject says so) every response until none
// arrives for quiet, and returns them.
func (p *peer) answer(quiet time.Duration, reject func(*discovery.DiscoveryResponse) bool) []*discovery.DiscoveryResponse {
	p.t.Helper()
	var got []*discovery.DiscoveryResponse
	for r := p.next(quiet); r != nil; r = p.next(quiet) {
		got = append(got, r)
		if reject(r) {
			p.nack(r, p.subs[r.GetTypeUrl()])
		} else {
			p.ack(r)
		}
		if len(got) > 100 {
			p.t.Fatalf("push storm: %d responses and counting; the last: %s %s", len(got), r.GetTypeUrl(), r.GetVersionInfo())
		}
	}
	return got
}

func ofType(rs []*discovery.DiscoveryResponse, typ string) []*discovery.DiscoveryResponse {
	var out []*discovery.DiscoveryResponse
	for _, r := range rs {
		if r.GetTypeUrl() == typ {
			out = append(out, r)
		}
	}
	return out
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == name {
			return f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}

// A proxy that NACKs a version is not sent that version again (it used to
// be, at once and forever: a push storm); it gets the next different one.
func TestNACKedVersionIsNotResent(t *testing.T) {
	for _, typ := range []string{resource.ListenerType, resource.ClusterType} {
		t.Run(typ[len("type.googleapis.com/envoy.config."):], func(t *testing.T) {
			reg := prometheus.NewRegistry()
			s, addr := start(t, Options{Debounce: time.Millisecond, DebounceMax: 10 * time.Millisecond, Metrics: reg})
			s.Update(ratingsMesh("127.0.0.1", 9091))
			ctx := withDeadline(t)
			p := newPeer(t, ctx, addr)
			good := p.acked[typ]

			s.Update(ratingsMesh("127.0.0.1", 9092))
			isTyp := func(r *discovery.DiscoveryResponse) bool { return r.GetTypeUrl() == typ }
			got := ofType(p.answer(2*time.Second, isTyp), typ)
			if len(got) != 1 {
				t.Fatalf("got %d %s responses in the 2s after a NACK, want the 1 that was NACKed and no re-send", len(got), typ)
			}
			bad := got[0].GetVersionInfo()
			if bad == good {
				t.Fatalf("%s version did not change", typ)
			}
			if n := counterValue(t, reg, "weft_xds_nacks_total"); n != 1 {
				t.Errorf("weft_xds_nacks_total = %v, want 1", n)
			}
			rej := s.Rejections()
			if len(rej) != 1 || rej[0].TypeURL != typ || rej[0].Version != bad || rej[0].Count != 1 || rej[0].Node != client.ID || rej[0].Error == "" {
				t.Errorf("Rejections() = %+v, want one of %s version %s", rej, typ, bad)
			}

			// A change to the type is sent at once.
			start := time.Now()
			s.Update(ratingsMesh("127.0.0.1", 9093))
			var fixed *discovery.DiscoveryResponse
			for fixed == nil {
				r := p.next(5 * time.Second)
				if r == nil {
					t.Fatalf("no new %s version within 5s of a change", typ)
				}
				p.ack(r)
				if r.GetTypeUrl() == typ {
					fixed = r
				}
			}
			if v := fixed.GetVersionInfo(); v == bad || v == good {
				t.Fatalf("after the change got %s version %s again", typ, v)
			}
			t.Logf("new %s version %s %v after the change", typ, fixed.GetVersionInfo(), time.Since(start))
			waitFor(t, ctx, "the ACK to end the rejection", func() bool { return len(s.Rejections()) == 0 })
		})
	}
}

// A proxy NACKs every type of a set it could not apply. When the set
// changes, a version it rejected alongside the culprit is sent again even
// if that type did not change: the proxy needs it with the fixed set.
func TestNACKedVersionIsResentWhenTheSetChanges(t *testing.T) {
	s, addr := start(t, Options{Debounce: time.Millisecond, DebounceMax: 10 * time.Millisecond})
	s.Update(testMesh(1))
	ctx := withDeadline(t)
	p := newPeer(t, ctx, addr)
	goodEDS := p.subs[resource.EndpointType]

	// Ratings gets an endpoint on the proxy's address: every type changes.
	// Take them all in (EDS needs a new subscription), then reject them
	// all, EDS with the subscription rolled back, as Weft's proxy does.
	s.Update(ratingsMesh("127.0.0.1", 9091))
	bad := map[string]*discovery.DiscoveryResponse{}
	for len(bad) < 4 {
		r := p.next(5 * time.Second)
		if r == nil {
			t.Fatalf("got only %v after the change", slices.Collect(maps.Keys(bad)))
		}
		bad[r.GetTypeUrl()] = r
		if r.GetTypeUrl() == resource.ClusterType {
			p.subscribeEDS(r) // the new EDS cluster, before the set is complete
		}
	}
	for _, typ := range typeOrder {
		names := p.subs[typ]
		if typ == resource.EndpointType {
			names = goodEDS
		}
		p.nack(bad[typ], names)
	}
	if extra := p.answer(time.Second, func(*discovery.DiscoveryResponse) bool { return true }); len(extra) > 0 {
		t.Fatalf("%d responses re-sent after the NACKs, first %s %s", len(extra), extra[0].GetTypeUrl(), extra[0].GetVersionInfo())
	}

	// The endpoint leaves the proxy's address: LDS is back to what the
	// proxy has, RDS is what it rejected, CDS and EDS are new.
	s.Update(ratingsMesh("10.0.9.9", 9092))
	got := map[string]*discovery.DiscoveryResponse{}
	for r := p.next(2 * time.Second); r != nil; r = p.next(time.Second) {
		got[r.GetTypeUrl()] = r
		p.ack(r)
	}
	if r := got[resource.RouteType]; r == nil || r.GetVersionInfo() != bad[resource.RouteType].GetVersionInfo() {
		t.Errorf("RDS after the change: %v, want the rejected version %s again", r.GetVersionInfo(), bad[resource.RouteType].GetVersionInfo())
	}
	for _, typ := range []string{resource.ClusterType, resource.EndpointType} {
		if r := got[typ]; r == nil || r.GetVersionInfo() == bad[typ].GetVersionInfo() {
			t.Errorf("%s after the change: %v, want a new version", typ, r.GetVersionInfo())
		}
	}
	if r := got[resource.ListenerType]; r != nil {
		t.Errorf("LDS %s sent, but the proxy already has it", r.GetVersionInfo())
	}
}
