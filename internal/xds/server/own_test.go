package server

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"weft.dev/weft/internal/mesh"
	"weft.dev/weft/internal/xds/contract"
	"weft.dev/weft/internal/xds/generate"
)

// TestOwnEncodingsCarriedOver: a proxy's own resources are encoded once
// and their encodings carried to the next snapshot when only endpoints
// elsewhere changed (no rebuild, no re-encoding) — the inbound part over
// a route change too —, and what the proxy is sent then equals what the
// generator gives it from scratch.
func TestOwnEncodingsCarriedOver(t *testing.T) {
	s, m, build := pushFixture(t, 6, 12)
	ctx := context.Background()
	s.push(ctx, time.Now())
	var p *proxy
	for _, q := range s.proxies {
		if q.id.Labels["app"] == "svc-0000" {
			p = q
			break
		}
	}
	ik := generate.IdentityKey(p.id)
	kept := func(m *mesh.Snapshot) (out, in any) {
		none := func() any { return nil }
		return m.Memo(outKey{generate.OutboundKey(m, p.id, ik)}, none), m.Memo(inKey{generate.InboundKey(m, p.id, ik)}, none)
	}
	first := s.current().m
	out0, in0 := kept(first)
	if out0 == nil || in0 == nil {
		t.Fatal("the first push kept no encodings of the proxy's own resources")
	}
	check := func(step string, next *mesh.Snapshot) {
		t.Helper()
		want, _, err := s.snapshotOf(next, generate.ForProxy(next, p.id))
		if err != nil {
			t.Fatal(err)
		}
		got := p.snapshot()
		for i, typ := range typeOrder {
			if got.sets[i].version != want.sets[i].version {
				t.Errorf("%s: %s: pushed version %s, from scratch %s", step, typ, got.sets[i].version, want.sets[i].version)
			}
		}
	}

	// Another service's spare endpoint moves: both parts carried over.
	if _, err := m.ChangeEndpoint(3, 0, nil); err != nil {
		t.Fatal(err)
	}
	s.Update(build())
	s.push(ctx, time.Now())
	next := s.current().m
	if out, in := kept(next); out != out0 || in != in0 {
		t.Errorf("an endpoint change elsewhere rebuilt the proxy's own encodings (outbound kept: %v, inbound kept: %v); want both carried over", out == out0, in == in0)
	}
	check("endpoint change", next)

	// A route changes: the outbound part (the routes) is rebuilt, the
	// inbound part carried over.
	if _, err := m.ChangeRoute(0, nil); err != nil {
		t.Fatal(err)
	}
	s.Update(build())
	s.push(ctx, time.Now())
	next = s.current().m
	if out, in := kept(next); out == out0 || in != in0 {
		t.Errorf("after a route change: outbound part rebuilt %v (want true), inbound part kept %v (want true)", out != out0, in == in0)
	}
	check("route change", next)
}

// TestOutboundPartsShared: the outbound part of the proxies' own
// resources — the virtual outbound listener and its route configurations
// — is built and encoded once per namespace (the proxies' OutboundKey),
// not once per proxy: proxies of one namespace are sent the very same
// encodings (namespaces whose parts are the same bytes share them too:
// encodings are interned), and each proxy's sets equal those made from
// what the generator gives it from scratch.
func TestOutboundPartsShared(t *testing.T) {
	s, m, build := pushFixture(t, 20, 40)
	ctx := context.Background()
	s.push(ctx, time.Now())
	if _, err := m.ChangeRoute(1, nil); err != nil {
		t.Fatal(err)
	}
	s.Update(build())
	s.push(ctx, time.Now())
	cur := s.current().m
	byNS := map[string]*encoded{}
	for _, p := range s.proxies {
		snap := p.snapshot()
		want, _, err := s.snapshotOf(cur, generate.ForProxy(cur, p.id))
		if err != nil {
			t.Fatal(err)
		}
		for i, typ := range typeOrder {
			if snap.sets[i].version != want.sets[i].version {
				t.Errorf("%s: %s: pushed version %s, from scratch %s", p.id.ID, typ, snap.sets[i].version, want.sets[i].version)
			}
		}
		l := snap.set(resource.ListenerType).get("virtualOutbound")
		rc := snap.set(resource.RouteType).get("8080")
		if l == nil || rc == nil {
			t.Fatalf("%s: no virtual outbound listener or route configuration 8080", p.id.ID)
		}
		ns := p.id.Namespace
		if prev, ok := byNS[ns]; ok && prev != l {
			t.Errorf("%s: two encodings of the virtual outbound listener in namespace %s", p.id.ID, ns)
		}
		byNS[ns] = l
		if w := want.set(resource.RouteType).get("8080"); string(w.any.GetValue()) != string(rc.any.GetValue()) {
			t.Errorf("%s: route configuration 8080 differs from the one built from scratch", p.id.ID)
		}
	}
	if len(byNS) < 2 {
		t.Fatalf("the fixture's proxies are in %d namespaces; want several", len(byNS))
	}

	// The push let go of the Go values behind the encodings; a proxy
	// with an outbound part no one had yet (explicit, not captured) is
	// built anew, and gets what it would from scratch.
	var id contract.Identity
	for _, p := range s.proxies {
		id = p.id
		break
	}
	id.ID += "-explicit"
	id.InterceptionMode, id.OutboundAddress = contract.InterceptionNone, "127.0.0.1:15001"
	p := newProxy(id)
	s.proxies[id.ID] = p
	s.write(p, s.current(), time.Time{})
	want, _, err := s.snapshotOf(cur, generate.ForProxy(cur, id))
	if err != nil {
		t.Fatal(err)
	}
	for i, typ := range typeOrder {
		if got := p.snapshot().sets[i].version; got != want.sets[i].version {
			t.Errorf("explicit proxy after the push: %s: version %s, from scratch %s", typ, got, want.sets[i].version)
		}
	}
}

// TestMergedSet: a set made of a shared set and a proxy's own resources
// lists them merged by name, the shared one where a name is in both,
// and diffs like a set of the same resources listed whole.
func TestMergedSet(t *testing.T) {
	enc := func(name, version string) *encoded {
		return &encoded{name: name, version: version, delta: &discovery.Resource{Name: name, Version: version}}
	}
	base := newTypeSet("t", "base", []*encoded{enc("a", "1"), enc("c", "1"), enc("e", "1")})
	merged := newMergedSet("t", "merged", base, []*encoded{enc("b", "2"), enc("c", "2"), enc("f", "2")})
	var got []string
	for e := range merged.all() {
		got = append(got, e.name+e.version)
	}
	if want := []string{"a1", "b2", "c1", "e1", "f2"}; !slices.Equal(got, want) || merged.n != len(want) || !slices.Equal(merged.names(), []string{"a", "b", "c", "e", "f"}) {
		t.Errorf("merged set lists %v (n %d, names %v), want %v", got, merged.n, merged.names(), want)
	}
	if e := merged.get("c"); e == nil || e.version != "1" {
		t.Errorf("get(c) = %v, want the shared set's", e)
	}
	if merged.get("b") == nil || merged.get("d") != nil {
		t.Error("get finds what is not there or misses its own")
	}
	whole := newTypeSet("t", "whole", []*encoded{enc("a", "1"), enc("b", "1"), enc("d", "1"), enc("f", "2")})
	d := merged.diffFrom(whole)
	var changed []string
	for _, r := range d.resources {
		changed = append(changed, r.Name)
	}
	if !slices.Equal(changed, []string{"b", "c", "e"}) || !slices.Equal(d.removed, []string{"d"}) {
		t.Errorf("diff from a whole set: changed %v, removed %v; want [b c e], [d]", changed, d.removed)
	}
}

// TestSetDiffs: a diff's wire body is encoded once while anyone holds
// it, held by the diff only weakly (once nothing refers to it a
// collection takes it, and the next proxy encodes the same bytes
// again), and a set forgets its diffs from sets no one holds any more.
func TestSetDiffs(t *testing.T) {
	enc := func(name, version string) *encoded {
		return &encoded{name: name, version: version, delta: &discovery.Resource{Name: name, Version: version}}
	}
	var c setCache
	older := c.put(newTypeSet("t", "v1", []*encoded{enc("a", "1"), enc("b", "1")}))
	old := c.put(newTypeSet("t", "v2", []*encoded{enc("a", "2"), enc("b", "1")}))
	set := c.put(newTypeSet("t", "v3", []*encoded{enc("a", "3"), enc("b", "3")}))

	d := set.diffFrom(old)
	if set.diffFrom(old) != d {
		t.Fatal("the same step was diffed twice")
	}
	body := d.encoded()
	if want := encodeResources(d.resources); !bytes.Equal(body, want) {
		t.Fatal("the body is not the resources' encoding")
	}
	if b := d.encoded(); &b[0] != &body[0] {
		t.Error("the body was encoded again while it was alive")
	}
	want := bytes.Clone(body)
	body = nil // sent: nothing refers to it any more
	runtime.GC()
	runtime.GC()
	if d.body.Value() != nil {
		t.Error("the body outlived a collection: a set's diffs hold their bodies")
	}
	if b := d.encoded(); !bytes.Equal(b, want) {
		t.Error("the body encoded again differs")
	}

	set.diffFrom(older)
	runtime.KeepAlive(old)
	old, older = nil, nil
	runtime.GC()
	runtime.GC()
	c.prune()
	n := 0
	set.diffs.Range(func(any, any) bool { n++; return true })
	if n != 0 || len(c.sets) != 1 {
		t.Errorf("after the older sets went: %d diffs kept, %d sets cached; want 0, 1", n, len(c.sets))
	}
	runtime.KeepAlive(set)
}

// TestInternedEncodings: resources of the same content built for
// different proxies share one encoding, and the interner forgets an
// encoding no one holds.
func TestInternedEncodings(t *testing.T) {
	s, _, _ := pushFixture(t, 6, 24)
	s.push(context.Background(), time.Now())
	var a, b *proxy
	for _, p := range s.proxies {
		if p.id.Labels["app"] != "svc-0001" {
			continue
		}
		if a == nil {
			a = p
		} else if b == nil {
			b = p
		}
	}
	la := a.snapshot().set(resource.ListenerType).get("virtualInbound")
	lb := b.snapshot().set(resource.ListenerType).get("virtualInbound")
	if la == nil || la != lb {
		t.Fatalf("two sidecars of one service: inbound listener encodings %p and %p, want one shared", la, lb)
	}
	in := &interner{}
	d := resourceDigest(nil, "t", &anypb.Any{TypeUrl: "x", Value: []byte("once")})
	if got := in.intern("t", d); got != d {
		t.Fatal("the first digests of a content are not the interned ones")
	}
	if got := in.intern("t", resourceDigest(nil, "t", &anypb.Any{TypeUrl: "x", Value: []byte("once")})); got != d {
		t.Error("equal content interned twice")
	}
	d = nil
	for i := 0; i < 20; i++ {
		runtime.GC()
		in.mu.Lock()
		n := len(in.m)
		in.mu.Unlock()
		if n == 0 {
			return
		}
		time.Sleep(10 * time.Millisecond) // cleanups run on their own goroutine
	}
	t.Error("the interner kept an entry whose digests were collected")
}

// TestLazySharedCarriedOver: the shared clusters and load assignments
// are built and encoded once; in the next snapshot, after an endpoint
// change, only the changed service's are built again, and each shared
// set equals the one made of the generator's built lists — whether the
// encodings are found by Key (a list without a LazyKey) or taken by
// position from the set made of the list under its LazyKey before.
func TestLazySharedCarriedOver(t *testing.T) {
	for _, byListKey := range []bool{false, true} {
		t.Run(fmt.Sprintf("byListKey=%v", byListKey), func(t *testing.T) {
			s, m, build := pushFixture(t, 6, 12)
			ctx := context.Background()
			s.push(ctx, time.Now())
			var p *proxy
			for _, q := range s.proxies {
				p = q
				break
			}
			if _, err := m.ChangeEndpoint(3, 0, nil); err != nil {
				t.Fatal(err)
			}
			next := build()
			changed := m.Host(3)
			parts, full := generate.SharedParts(next, p.id), generate.ForProxy(next, p.id)
			for _, c := range []struct {
				typ         string
				parts       generate.Parts
				fromScratch []types.Resource
			}{
				{resource.ClusterType, parts.ClusterParts, full.ClusterParts.Shared},
				{resource.EndpointType, parts.EndpointParts, full.EndpointParts.Shared},
			} {
				lazy := slices.Clone(c.parts.Lazy)
				if len(lazy) == 0 {
					t.Fatalf("%s: SharedParts gave no lazy resources", c.typ)
				}
				if c.parts.LazyKey == nil {
					t.Fatalf("%s: SharedParts gave no LazyKey", c.typ)
				}
				var built []string
				for i := range lazy {
					l := lazy[i]
					lazy[i].Build = func(m *mesh.Snapshot) types.Resource { built = append(built, l.Name); return l.Build(m) }
				}
				var listKey any
				if byListKey {
					listKey = c.parts.LazyKey
				}
				set, err := s.setOfLazy(next, c.typ, lazy, listKey)
				if err != nil {
					t.Fatal(err)
				}
				if len(built) == 0 {
					t.Errorf("%s: nothing of %s was built anew", c.typ, changed)
				}
				for _, n := range built {
					if !strings.HasSuffix(n, "|"+changed) {
						t.Errorf("%s: %s was built again, but its endpoints did not change (built: %q)", c.typ, n, built)
					}
				}
				want, err := s.setOf(next, c.typ, c.fromScratch)
				if err != nil {
					t.Fatal(err)
				}
				if set.version != want.version {
					t.Errorf("%s: lazy set version %s, from built values %s", c.typ, set.version, want.version)
				}
			}
		})
	}
}

// TestDeltaVersionIsShortDigest: a resource's delta version is 16 hex
// digits of its content's digest (every proxy keeps one per resource it
// holds), equal for equal content and different for different content.
func TestDeltaVersionIsShortDigest(t *testing.T) {
	a := resourceDigest(nil, "t", &anypb.Any{TypeUrl: "x", Value: []byte("version a")})
	again := resourceDigest(nil, "t", &anypb.Any{TypeUrl: "x", Value: []byte("version a")})
	b := resourceDigest(nil, "t", &anypb.Any{TypeUrl: "x", Value: []byte("version b")})
	v := a.enc.version
	if len(v) != 16 || strings.Trim(v, "0123456789abcdef") != "" {
		t.Fatalf("version %q: want 16 hex digits", v)
	}
	if again.enc.version != v || a.enc.delta.GetVersion() != v {
		t.Errorf("equal content: versions %q, %q (delta resource %q)", v, again.enc.version, a.enc.delta.GetVersion())
	}
	if b.enc.version == v {
		t.Errorf("different content, same version %q", v)
	}
}
