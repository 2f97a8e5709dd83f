package cluster

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
)

func TestPickerSmooth(t *testing.T) {
	eps := []*Endpoint{{addr: "a", weight: 1}, {addr: "b", weight: 1}, {addr: "c", weight: 4}}
	p := newPicker(eps, new(atomic.Uint64))
	var seq strings.Builder
	for range 12 {
		seq.WriteString(p.pick(HashKey{}).addr)
	}
	// Smooth: the heavy endpoint never gets 4 picks in a row with weights
	// 1:1:4 (a naive schedule gives cccc; smooth WRR at most ccc across cycles).
	s := seq.String()
	if strings.Contains(s, "cccc") {
		t.Errorf("schedule not smooth: %s", s)
	}
	if strings.Count(s, "c") != 8 || strings.Count(s, "a") != 2 {
		t.Errorf("schedule %s: want a:2 b:2 c:8", s)
	}
}

// TestPrevPrioritiesUpdate follows Envoy's state machine: no change before
// update_frequency hosts, exclusions at every multiple, and a reset to the
// unmodified load when every available priority was attempted.
func TestPrevPrioritiesUpdate(t *testing.T) {
	p0, p1, p2 := lbEndpoints(2, true), lbEndpoints(1, true), lbEndpoints(1, true)
	p := buildPicker([][]*Endpoint{p0, p1, p2}, lbConfig{}, new(atomic.Uint64), defaultOverprovisioning)
	unknown := &Endpoint{addr: "10.9.9.9:80", healthy: true}
	cases := []struct {
		name  string
		freq  int
		tried []*Endpoint
		want  []uint64 // skip after each attempted host
	}{
		{"freq 1", 1, []*Endpoint{p0[0], p1[0], p2[0], p0[1], p1[0]}, []uint64{0b001, 0b011, 0, 0b001, 0b011}},
		{"freq 2", 2, []*Endpoint{p0[0], p0[1], p1[0], p2[0], p0[0]}, []uint64{0, 0b001, 0b001, 0, 0}},
		{"freq 2, second update", 2, []*Endpoint{p0[0], p1[0], p0[1], p2[0]}, []uint64{0, 0b011, 0b011, 0}},
		{"endpoint gone", 1, []*Endpoint{unknown, p0[0]}, []uint64{0, 0b001}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var pp PrevPriorities
			var got []uint64
			for i := range tc.tried {
				got = append(got, pp.update(p, tc.tried[:i+1], tc.freq))
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("skip after each host = %b, want %b", got, tc.want)
				}
			}
		})
	}
	t.Run("skipped levels get no load", func(t *testing.T) {
		for range 50 {
			if e := p.pickExcept(HashKey{}, 0b011, nil); e != p2[0] {
				t.Fatalf("picked %s, want the priority 2 endpoint", e.addr)
			}
		}
	})
}

func BenchmarkPickEndpoint(b *testing.B) {
	for _, weighted := range []bool{false, true} {
		b.Run(fmt.Sprintf("weighted=%v", weighted), func(b *testing.B) {
			var eps []*Endpoint
			for i := range 100 {
				w := uint32(1)
				if weighted {
					w = uint32(i%7 + 1)
				}
				eps = append(eps, &Endpoint{addr: fmt.Sprint(i), weight: w})
			}
			p := newPicker(eps, new(atomic.Uint64))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if p.pick(HashKey{}) == nil {
						b.Fatal("nil")
					}
				}
			})
		})
	}
}
