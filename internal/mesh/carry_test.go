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
