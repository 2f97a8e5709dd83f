package telemetry

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// TestInternedLabelsAreDroppedWhenUnused: labels interned for endpoints
// that went away are forgotten once nothing refers to them, while labels
// still referred to stay the one shared copy.
func TestInternedLabelsAreDroppedWhenUnused(t *testing.T) {
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	base := m.dsts.len() // Unknown's
	kept := m.InternDst(DstLabels{Service: "reviews.default.svc.cluster.local", Workload: "reviews-v1"})
	for i := range 1000 {
		m.InternDst(DstLabels{Service: "reviews.default.svc.cluster.local", Workload: fmt.Sprintf("vm-%d", i)})
	}
	if got := m.dsts.len(); got != base+1001 {
		t.Fatalf("interned %d, want %d", got, base+1001)
	}
	deadline := time.Now().Add(10 * time.Second)
	for m.dsts.len() > base+1 && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(10 * time.Millisecond) // cleanups run on their own goroutine
	}
	if got := m.dsts.len(); got != base+1 {
		t.Errorf("after collections %d interned, want %d (Unknown's and the one still used)", got, base+1)
	}
	if again := m.InternDst(DstLabels{Service: "reviews.default.svc.cluster.local", Workload: "reviews-v1"}); again != kept {
		t.Error("labels still in use were interned anew")
	}
	if m.UnknownDst() != m.InternDst(*m.UnknownDst()) {
		t.Error("Unknown's labels are not the shared copy")
	}
}
