package server

import (
	"context"
	"slices"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"weft.dev/weft/internal/xds/generate"
)

// TestOwnEncodingsCarriedOver: a proxy's own resources are encoded once
// and their encodings carried to the next snapshot when only endpoints
// elsewhere changed (no rebuild, no re-encoding), and what the proxy is
// sent then equals what the generator gives it from scratch.
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
	first := s.current().m
	key := ownKey{generate.OwnKey(first, p.id)}
	kept := first.Memo(key, func() any { t.Fatal("the first push kept no encodings of the proxy's own resources"); return nil })

	// Another service's spare endpoint moves: carried over.
	if _, err := m.ChangeEndpoint(3, 0, nil); err != nil {
		t.Fatal(err)
	}
	s.Update(build())
	s.push(ctx, time.Now())
	next := s.current().m
	if got := next.Memo(ownKey{generate.OwnKey(next, p.id)}, func() any { return nil }); got != kept {
		t.Error("an endpoint change elsewhere rebuilt the proxy's own encodings; want them carried over")
	}
	want, _, err := s.snapshotOf(next, generate.ForProxy(next, p.id))
	if err != nil {
		t.Fatal(err)
	}
	got := p.snapshot()
	for i, typ := range typeOrder {
		if got.sets[i].version != want.sets[i].version {
			t.Errorf("%s: pushed version %s, from scratch %s", typ, got.sets[i].version, want.sets[i].version)
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
