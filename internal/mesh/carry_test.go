package mesh

import (
	"testing"

	"weft.dev/weft/internal/config"
	"weft.dev/weft/internal/registry"
)

// TestReleaseCarry: a snapshot carries values over from the one it was
// built from until ReleaseCarry; after it, a value it had not taken is
// built anew, and the next snapshot still carries over what it took.
func TestReleaseCarry(t *testing.T) {
	cfg, reg := &config.Snapshot{Version: 1}, registry.NewSnapshot(nil, nil)
	type key struct{ n int }
	built := 0
	build := func() any { built++; v := built; return &v }
	first := Build(cfg, reg, Options{})
	a := first.MemoCarry(key{1}, nil, build)
	b := first.MemoCarry(key{2}, nil, build)

	second := BuildFrom(first, cfg, reg, Options{})
	if got := second.MemoCarry(key{1}, nil, build); got != a || built != 2 {
		t.Fatalf("before ReleaseCarry: value not carried over (built %d times)", built)
	}
	second.ReleaseCarry()
	if got := second.MemoCarry(key{2}, nil, build); got == b || built != 3 {
		t.Errorf("after ReleaseCarry: a value the snapshot had not taken was carried over (built %d times)", built)
	}
	third := BuildFrom(second, cfg, reg, Options{})
	if got := third.MemoCarry(key{1}, nil, build); got != a || built != 3 {
		t.Errorf("the next snapshot did not carry over what the released one had taken (built %d times)", built)
	}
}

// TestCarryKeptWhileGenerating: a snapshot generation started from (a
// push round serving it) keeps carrying from the one before when newer
// snapshots are built meanwhile — in a storm they come every few
// milliseconds, and losing the carry mid-round rebuilt, for every proxy
// not served yet, what would have been carried. A snapshot nothing was
// generated from is skipped, and keeps what it carries from when a
// snapshot built from it is dropped (a registry echo of the same
// version): it is what the next push serves.
func TestCarryKeptWhileGenerating(t *testing.T) {
	cfg, reg := &config.Snapshot{Version: 1}, registry.NewSnapshot(nil, nil)
	type key struct{ n int }
	built := 0
	build := func() any { built++; v := built; return &v }
	first := Build(cfg, reg, Options{})
	a := first.MemoCarry(key{1}, nil, build)
	b := first.MemoCarry(key{2}, nil, build)

	serving := BuildFrom(first, cfg, reg, Options{})
	if got := serving.MemoCarry(key{1}, nil, build); got != a {
		t.Fatal("not carried over")
	}
	skipped := BuildFrom(serving, cfg, reg, Options{}) // built while serving is pushed
	newest := BuildFrom(skipped, cfg, reg, Options{})  // skipped was never used
	if got := serving.MemoCarry(key{2}, nil, build); got != b || built != 2 {
		t.Errorf("the snapshot being served lost its carry when newer ones were built (built %d times)", built)
	}
	if got := newest.MemoCarry(key{1}, nil, build); got != a || built != 2 {
		t.Errorf("the newest snapshot does not carry from the one served (built %d times)", built)
	}
	_ = BuildFrom(newest, cfg, reg, Options{}) // an echo, dropped: newest stays current
	if got := newest.MemoCarry(key{2}, nil, build); got != b || built != 2 {
		t.Errorf("building from the newest snapshot cut what it carries from (built %d times)", built)
	}
}
