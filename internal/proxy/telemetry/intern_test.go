package telemetry

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestInternedLabelsAreDroppedWhenUnused: labels interned for endpoints
// that went away are swept once nothing refers to them, while labels
// still referred to stay the one shared copy.
func TestInternedLabelsAreDroppedWhenUnused(t *testing.T) {
	m, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	kept := m.InternDst(DstLabels{Service: "reviews.default.svc.cluster.local", Workload: "reviews-v1"})
	churn := func(gen int) {
		for i := range 3000 {
			m.InternDst(DstLabels{Service: "reviews.default.svc.cluster.local", Workload: fmt.Sprintf("vm-%d-%d", gen, i)})
		}
	}
	churn(0)
	runtime.GC() // the first 3,000 are unreachable: their weak pointers are cleared
	churn(1)
	// The second batch swept the first: what is left is at most the
	// second batch, the labels still used and Unknown's.
	if got := m.dsts.len(); got > 3000+2 {
		t.Errorf("after replacing 3,000 workloads by 3,000 others, %d label sets interned, want at most %d", got, 3000+2)
	}
	if again := m.InternDst(DstLabels{Service: "reviews.default.svc.cluster.local", Workload: "reviews-v1"}); again != kept {
		t.Error("labels still in use were interned anew")
	}
	if m.UnknownDst() != m.InternDst(*m.UnknownDst()) {
		t.Error("Unknown's labels are not the shared copy")
	}
}
