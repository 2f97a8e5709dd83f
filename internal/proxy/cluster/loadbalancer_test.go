package cluster

import (
	"fmt"
	"math"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// newPicker builds a round-robin picker over one priority of healthy
// endpoints.
func newPicker(eps []*Endpoint, next *atomic.Uint64) *picker {
	for _, e := range eps {
		e.healthy = true
	}
	return buildPicker([][]*Endpoint{eps}, lbConfig{}, next, defaultOverprovisioning)
}

func lbEndpoints(n int, healthy bool) []*Endpoint {
	eps := make([]*Endpoint, n)
	for i := range eps {
		eps[i] = &Endpoint{addr: fmt.Sprintf("10.0.0.%d:80", i+1), weight: 1, healthy: healthy}
	}
	return eps
}

func TestPriorityLoads(t *testing.T) {
	mk := func(healthy, total int) []*Endpoint {
		eps := lbEndpoints(total, false)
		for i := range healthy {
			eps[i].healthy = true
		}
		return eps
	}
	for _, tc := range []struct {
		name   string
		levels [][]*Endpoint
		want   []uint64
	}{
		{"all healthy stays in p0", [][]*Endpoint{mk(2, 2), mk(2, 2)}, []uint64{100, 0}},
		{"3 of 4 healthy: 1.4*75 >= 100", [][]*Endpoint{mk(3, 4), mk(2, 2)}, []uint64{100, 0}},
		{"half healthy spills 30", [][]*Endpoint{mk(1, 2), mk(2, 2)}, []uint64{70, 30}},
		{"none healthy: all to p1", [][]*Endpoint{mk(0, 2), mk(2, 2)}, []uint64{0, 100}},
		{"three levels", [][]*Endpoint{mk(0, 2), mk(1, 4), mk(2, 2)}, []uint64{0, 35, 65}},
		{"too little health is normalized", [][]*Endpoint{mk(1, 4), mk(1, 4)}, []uint64{50, 50}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := buildPicker(tc.levels, lbConfig{}, new(atomic.Uint64), defaultOverprovisioning)
			if got := p.priorityLoads(nil); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("priorityLoads = %v, want %v", got, tc.want)
			}
		})
	}
	p := buildPicker([][]*Endpoint{mk(0, 2), mk(2, 2)}, lbConfig{}, new(atomic.Uint64), defaultOverprovisioning)
	for range 100 {
		if e := p.pick(HashKey{}); e == nil || e.addr[len(e.addr)-4] == '1' && !e.healthy {
			t.Fatalf("picked %v, want a healthy p1 endpoint", e)
		}
	}
	if e := buildPicker([][]*Endpoint{mk(0, 2)}, lbConfig{}, new(atomic.Uint64), defaultOverprovisioning).pick(HashKey{}); e != nil {
		t.Errorf("no healthy endpoint: picked %s, want nil", e.addr)
	}
}

func TestConsistentHashBalancers(t *testing.T) {
	for _, cfg := range []lbConfig{
		{policy: clusterv3.Cluster_RING_HASH, minRing: defaultMinRingSize, maxRing: defaultMaxRingSize},
		{policy: clusterv3.Cluster_MAGLEV, maglevTable: defaultMaglevSize},
	} {
		t.Run(cfg.policy.String(), func(t *testing.T) {
			three := lbEndpoints(3, true)
			four := append(append([]*Endpoint(nil), three...), &Endpoint{addr: "10.0.0.4:80", weight: 1, healthy: true})
			b3, b4 := cfg.newBalancer(three, nil), cfg.newBalancer(four, nil)
			all := func(*Endpoint) bool { return true }
			moved, counts := 0, map[string]int{}
			const keys = 2000
			for i := range keys {
				k := HashKey{Hash: hashOf(fmt.Sprint("user-", i)), OK: true}
				a := b3.pick(k, all)
				if again := b3.pick(k, all); again != a {
					t.Fatalf("key %d: %s then %s", i, a.addr, again.addr)
				}
				b := b4.pick(k, all)
				counts[b.addr]++
				if a.addr != b.addr {
					moved++
				}
			}
			// Ring hash, like Envoy's, re-spreads every host's points when the
			// host count changes (1024/3 -> 1024/4 points each): ~37%.
			// Maglev moves ~25%.
			t.Logf("adding a 4th endpoint moved %.1f%% of keys", float64(moved)*100/keys)
			if f := float64(moved) / keys; f < 0.15 || f > 0.40 {
				t.Errorf("adding a 4th endpoint moved %.0f%% of keys, want about 25%%", f*100)
			}
			for addr, n := range counts {
				if n < keys/8 {
					t.Errorf("%s got %d of %d keys: unbalanced", addr, n, keys)
				}
			}
			// An unavailable endpoint's keys go elsewhere; others stay.
			not1 := func(e *Endpoint) bool { return e != four[0] }
			for i := range 200 {
				k := HashKey{Hash: hashOf(fmt.Sprint("user-", i)), OK: true}
				a, b := b4.pick(k, all), b4.pick(k, not1)
				if b == four[0] || (a != four[0] && a != b) {
					t.Fatalf("key %d: %s -> %s with endpoint 1 unavailable", i, a.addr, b.addr)
				}
			}
		})
	}
}

func TestMaglevWeights(t *testing.T) {
	eps := lbEndpoints(2, true)
	eps[1].weight = 3
	m := newMaglev(eps, 65537)
	n := 0
	for _, o := range m.table {
		if o == 1 {
			n++
		}
	}
	if f := float64(n) / float64(len(m.table)); f < 0.72 || f > 0.78 {
		t.Errorf("weight 3 of 4 holds %.2f of the table, want 0.75", f)
	}
}

func TestLeastRequestAvoidsBusy(t *testing.T) {
	eps := lbEndpoints(4, true)
	eps[0].active.Store(50)
	b := lbConfig{policy: clusterv3.Cluster_LEAST_REQUEST, choices: 2}.newBalancer(eps, nil)
	n := 0
	for range 4000 {
		if b.pick(HashKey{}, (*Endpoint).available) == eps[0] {
			n++
		}
	}
	// Only when both choices are the busy one: 1/16.
	if n > 400 {
		t.Errorf("busy endpoint picked %d of 4000 times, want about 250", n)
	}
}

func TestPickExclude(t *testing.T) {
	eps := lbEndpoints(3, true)
	p := buildPicker([][]*Endpoint{eps}, lbConfig{}, new(atomic.Uint64), defaultOverprovisioning)
	for range 30 {
		if e := p.pick(HashKey{}, eps[0], eps[1]); e != eps[2] {
			t.Fatalf("pick excluding 0,1 = %s", e.addr)
		}
	}
	if e := p.pick(HashKey{}, eps...); e == nil {
		t.Errorf("all excluded: want any available endpoint, got nil")
	}
}

// hashOf is the hash a header hash policy gives the value s.
func hashOf(s string) uint64 { return xxhash.Sum64String(s) }

func TestSlowStart(t *testing.T) {
	cfg := &slowStartConfig{window: 60e9, aggression: 1, minFactor: 0.1}
	for _, tc := range []struct {
		name   string
		policy clusterv3.Cluster_LbPolicy
	}{{"round robin", clusterv3.Cluster_ROUND_ROBIN}, {"least request", clusterv3.Cluster_LEAST_REQUEST}} {
		t.Run(tc.name, func(t *testing.T) {
			eps := lbEndpoints(2, true)
			var tr warmTracker
			tr.attach(eps[:1], cfg) // the first endpoint is old…
			tr.added[eps[0].addr] = tr.added[eps[0].addr].Add(-time.Hour)
			eps[0].warm = nil
			tr.attach(eps, cfg) // …the second just arrived
			if eps[0].warm != nil || eps[1].warm == nil {
				t.Fatalf("warming: old %v, new %v", eps[0].warm != nil, eps[1].warm != nil)
			}
			b := lbConfig{policy: tc.policy, choices: 2, slowStart: cfg}.newBalancer(eps, new(atomic.Uint64))
			n := 0
			const picks = 20000
			for range picks {
				if b.pick(HashKey{}, (*Endpoint).available) == eps[1] {
					n++
				}
			}
			// 10% of its weight: 0.1/1.1 of round robin's picks; for least
			// request a little more (two draws, each accepted at 10%).
			if f := float64(n) / picks; f < 0.05 || f > 0.2 {
				t.Errorf("new endpoint got %.3f of picks, want about 0.1", f)
			}
		})
	}
	w := &warming{cfg: &slowStartConfig{window: 10e9, aggression: 1, minFactor: 0.1}, added: time.Unix(1000, 0)}
	for _, tc := range []struct {
		after time.Duration
		want  float64
	}{{0, 0.1}, {5e9, 0.5}, {9e9, 0.9}, {10e9, 1}} {
		if got := w.factor(time.Unix(1000, 0).Add(tc.after)); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("factor after %v = %v, want %v", tc.after, got, tc.want)
		}
	}
}

func BenchmarkPickPolicies(b *testing.B) {
	eps := lbEndpoints(100, true)
	for _, cfg := range []lbConfig{
		{policy: clusterv3.Cluster_ROUND_ROBIN},
		{policy: clusterv3.Cluster_LEAST_REQUEST, choices: 2},
		{policy: clusterv3.Cluster_RANDOM},
		{policy: clusterv3.Cluster_RING_HASH, minRing: defaultMinRingSize, maxRing: defaultMaxRingSize},
		{policy: clusterv3.Cluster_MAGLEV, maglevTable: defaultMaglevSize},
	} {
		b.Run(cfg.policy.String(), func(b *testing.B) {
			p := buildPicker([][]*Endpoint{eps}, cfg, new(atomic.Uint64), defaultOverprovisioning)
			b.ReportAllocs()
			var i uint64
			for b.Loop() {
				i++
				if p.pick(HashKey{Hash: i * 0x9e3779b97f4a7c15, OK: true}) == nil {
					b.Fatal("nil")
				}
			}
		})
	}
}

func TestTranslateLocalityWeights(t *testing.T) {
	b := testBuilder(t)
	c := cla("c", ep{Addr: "10.0.0.1:80"}, ep{Addr: "10.0.0.2:80"}, ep{Addr: "10.0.0.3:80", Priority: 1}, ep{Addr: "10.0.0.4:80", Priority: 1, Health: core.HealthStatus_UNHEALTHY})
	// One locality of two endpoints at weight 80, one of one at 20 (in
	// priority 1, with an unhealthy one), and one without a weight.
	c.Endpoints[0].LoadBalancingWeight = wrapperspb.UInt32(80)
	c.Endpoints[1].LoadBalancingWeight = wrapperspb.UInt32(20)
	c.Endpoints[1].Priority = 0
	c.Endpoints = append(c.Endpoints, &endpointv3.LocalityLbEndpoints{LbEndpoints: []*endpointv3.LbEndpoint{c.Endpoints[0].LbEndpoints[0]}})
	for _, weighted := range []bool{false, true} {
		levels, err := translateEndpoints(c, &dstLabels{m: b.Metrics, svc: unknownService}, weighted)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, l := range levels {
			for _, e := range l {
				got = append(got, fmt.Sprintf("%s=%d/%v", e.addr, e.weight, e.healthy))
			}
		}
		want := "[10.0.0.1:80=1/true 10.0.0.2:80=1/true 10.0.0.3:80=1/true 10.0.0.4:80=1/false 10.0.0.1:80=1/true]"
		if weighted {
			want = "[10.0.0.1:80=40000/true 10.0.0.2:80=40000/true 10.0.0.3:80=10000/true 10.0.0.4:80=10000/false]"
		}
		if fmt.Sprint(got) != want {
			t.Errorf("locality weighted %v:\n got %v\nwant %s", weighted, got, want)
		}
	}
}
