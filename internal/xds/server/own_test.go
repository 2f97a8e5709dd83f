package server

import (
	"context"
	"testing"
	"time"

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
