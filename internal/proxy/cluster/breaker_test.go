package cluster

import (
	"context"
	"errors"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
)

func TestBreakerHTTP1ConnectionsAndPending(t *testing.T) {
	st := testStats(t, "c")
	b, err := newBreaker(thresholds(1, 1, 100, 3), false, refOf(st))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	first, err := b.Admit(ctx)
	if err != nil {
		t.Fatalf("first: %v", err)
	}
	queued := make(chan error, 1)
	var second Admission
	go func() {
		var err error
		second, err = b.Admit(ctx)
		queued <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for b.pending.Load() != 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if _, err := b.Admit(ctx); !errors.Is(err, ErrOverflow) {
		t.Fatalf("third: got %v, want overflow", err)
	}
	if got := metricValue(&st.RqPendingOverflow); got != 1 {
		t.Errorf("upstream_rq_pending_overflow = %v, want 1", got)
	}
	if got := metricValue(&st.CxOverflow); got != 2 {
		t.Errorf("upstream_cx_overflow = %v, want 2", got)
	}
	first.Release()
	first.Release() // idempotent
	if err := <-queued; err != nil {
		t.Fatalf("queued: %v", err)
	}
	if got := metricValue(&st.RqActive); got != 1 {
		t.Errorf("upstream_rq_active = %v, want 1", got)
	}
	second.Release()
	if b.active.Load() != 0 || len(b.slots) != 0 || b.pending.Load() != 0 {
		t.Errorf("not back to zero: active %d slots %d pending %d", b.active.Load(), len(b.slots), b.pending.Load())
	}
}

func TestBreakerPendingHonoursContext(t *testing.T) {
	b, _ := newBreaker(thresholds(1, 5, 100, 3), false, refOf(testStats(t, "c")))
	first, _ := b.Admit(context.Background())
	defer first.Release()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := b.Admit(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want deadline exceeded", err)
	}
	if b.active.Load() != 1 || b.pending.Load() != 0 {
		t.Errorf("active %d pending %d, want 1 0", b.active.Load(), b.pending.Load())
	}
}

func TestBreakerLimits(t *testing.T) {
	tests := []struct {
		name     string
		c        *clusterv3.Cluster
		h2       bool
		admitted int // of 10 concurrent attempts that never finish
	}{
		{"h2 max_requests", thresholds(1, 1, 3, 3), true, 3},
		{"h1 max_requests below connections", thresholds(100, 100, 4, 3), false, 4},
		{"istio defaults are unlimited", thresholds(1<<32-1, 1<<32-1, 1<<32-1, 1<<32-1), false, 10},
		{"envoy defaults", &clusterv3.Cluster{}, false, 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := newBreaker(tc.c, tc.h2, refOf(testStats(t, "c")))
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			var held []Admission
			for range 10 {
				a, err := b.Admit(context.Background())
				if err == nil {
					n++
					held = append(held, a)
				}
			}
			for i := range held {
				held[i].Release()
			}
			if n != tc.admitted {
				t.Errorf("admitted %d, want %d", n, tc.admitted)
			}
		})
	}
}

func TestBreakerRetries(t *testing.T) {
	st := testStats(t, "c")
	b, _ := newBreaker(thresholds(10, 10, 10, 2), false, refOf(st))
	var a, c RetryTokens
	if !a.Take(b) || !a.Take(b) {
		t.Fatal("first two retries refused")
	}
	if c.Take(b) {
		t.Fatal("third concurrent retry admitted")
	}
	if got := metricValue(&st.RqRetryOverflow); got != 1 {
		t.Errorf("upstream_rq_retry_overflow = %v, want 1", got)
	}
	a.Release()
	if !c.Take(b) {
		t.Fatal("retry refused after release")
	}
	c.Release()
	if b.retries.Load() != 0 {
		t.Errorf("retries = %d, want 0", b.retries.Load())
	}
}
